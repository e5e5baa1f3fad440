// Copy the image region (offset b0, b1, b2) out of the padded FFT domain.
__kernel void crop(__global float *out, __global const float *padded,
                   const int n1, const int n2, const int m1, const int row_stride,
                   const int b0, const int b1, const int b2)
{
    const int i2 = get_global_id(0), i1 = get_global_id(1), i0 = get_global_id(2);
    out[((size_t)i0 * n1 + i1) * n2 + i2] =
        padded[padded_index(i0, i1, i2, m1, row_stride, b0, b1, b2)];
}
