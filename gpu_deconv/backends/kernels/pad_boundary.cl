// Write the image and its boundary extension into the padded FFT domain.
// Work item (j2, j1, j0) is a padded position; the image sits at offset (b0, b1, b2).
// Rows of the padded buffer are `row_stride` floats long (in-place real FFTs pad rows).
__kernel void pad_boundary(__global float *padded, __global const float *image,
                           const int n0, const int n1, const int n2,
                           const int m1, const int row_stride,
                           const int b0, const int b1, const int b2, const int mode)
{
    const int j2 = get_global_id(0), j1 = get_global_id(1), j0 = get_global_id(2);
    const int p0 = boundary_index(j0 - b0, n0, mode);
    const int p1 = boundary_index(j1 - b1, n1, mode);
    const int p2 = boundary_index(j2 - b2, n2, mode);
    float value = 0.0f;
    if (p0 >= 0 && p1 >= 0 && p2 >= 0) {
        value = image[((size_t)p0 * n1 + p1) * n2 + p2];
    }
    padded[((size_t)j0 * m1 + j1) * row_stride + j2] = value;
}
