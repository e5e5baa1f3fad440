// One 1-D pass of a separable convolution (sign = -1) or correlation (sign = +1) along
// `axis` (0, 1 or 2 of the 3D shape), with a boundary mode.
__kernel void convolve_separable(__global float *out, __global const float *x,
                                 __global const float *profile, const int length,
                                 const int n0, const int n1, const int n2,
                                 const int axis, const int sign, const int mode)
{
    const int i2 = get_global_id(0), i1 = get_global_id(1), i0 = get_global_id(2);
    const int size = axis == 0 ? n0 : (axis == 1 ? n1 : n2);
    const int here = axis == 0 ? i0 : (axis == 1 ? i1 : i2);
    const size_t stride = axis == 0 ? (size_t)n1 * n2 : (axis == 1 ? (size_t)n2 : 1);
    const size_t base = ((size_t)i0 * n1 + i1) * n2 + i2 - (size_t)here * stride;
    float acc = 0.0f;
    for (int k = 0; k < length; ++k) {
        const int p = boundary_index(here + sign * (k - length / 2), size, mode);
        if (p >= 0) {
            acc += profile[k] * x[base + (size_t)p * stride];
        }
    }
    out[((size_t)i0 * n1 + i1) * n2 + i2] = acc;
}
