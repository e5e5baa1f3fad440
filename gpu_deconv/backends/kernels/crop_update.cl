// The blur's crop fused with the Richardson-Lucy update: the correction c is read out of the
// padded domain (offset b0, b1, b2; rows `row_stride` floats). Without `clamp`, as
// multiply / weighted_update: out = point * c [* weights]; with it, as clamped_update:
// out = max(point * c [* weights], floor_value) where point > 0 (and weights > 0), else 0.
// out may alias point.
__kernel void crop_update(__global float *out, __global const float *padded,
                          __global const float *point, __global const float *weights,
                          const int has_weights, const int clamp, const float floor_value,
                          const int n1, const int n2, const int m1, const int row_stride,
                          const int b0, const int b1, const int b2)
{
    const int i2 = get_global_id(0), i1 = get_global_id(1), i0 = get_global_id(2);
    const size_t i = ((size_t)i0 * n1 + i1) * n2 + i2;
    const float c = padded[padded_index(i0, i1, i2, m1, row_stride, b0, b1, b2)];
    const float p = point[i];
    if (!clamp) {
        out[i] = has_weights ? p * c * weights[i] : p * c;
        return;
    }
    const float w = has_weights ? weights[i] : 1.0f;
    out[i] = (p > 0.0f && w > 0.0f) ? at_least(p * c * w, floor_value) : 0.0f;
}
