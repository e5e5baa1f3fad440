// The FFT blur's crop fused with the Richardson-Lucy ratio (rl_ratio): reads the blurred image
// out of the padded domain (offset b0, b1, b2; rows `row_stride` floats) and writes
// out = observed / d where d > eps, else 0, with d = blurred + background + offset (and the
// round-off guard of rl_ratio: 0 where d <= noise and the ratio would exceed limit).
__kernel void crop_ratio(__global float *out, __global const float *padded,
                         __global const float *observed, __global const float *background,
                         const int has_background, const float offset, const float eps,
                         const float noise, const float limit, const int n1, const int n2, const int m1, const int row_stride,
                         const int b0, const int b1, const int b2)
{
    const int i2 = get_global_id(0), i1 = get_global_id(1), i0 = get_global_id(2);
    const size_t i = ((size_t)i0 * n1 + i1) * n2 + i2;
    const float blurred = padded[padded_index(i0, i1, i2, m1, row_stride, b0, b1, b2)];
    const float d = blurred + (has_background ? background[i] : 0.0f) + offset;
    const float g = observed[i];
    out[i] = d > eps && (d > noise || g <= limit * d) ? g / d : 0.0f;
}
