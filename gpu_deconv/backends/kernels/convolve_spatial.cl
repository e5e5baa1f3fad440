// Direct 3D convolution (sign = -1) or correlation (sign = +1) with a boundary mode:
// out[i] = sum_k psf[k] * x[i + sign * (k - k_len / 2)], as scipy.ndimage with origin 0.
__kernel void convolve_spatial(__global float *out, __global const float *x,
                               __global const float *psf,
                               const int n0, const int n1, const int n2,
                               const int k0, const int k1, const int k2,
                               const int sign, const int mode)
{
    const int i2 = get_global_id(0), i1 = get_global_id(1), i0 = get_global_id(2);
    float acc = 0.0f;
    for (int a = 0; a < k0; ++a) {
        const int p0 = boundary_index(i0 + sign * (a - k0 / 2), n0, mode);
        if (p0 < 0) {
            continue;
        }
        for (int b = 0; b < k1; ++b) {
            const int p1 = boundary_index(i1 + sign * (b - k1 / 2), n1, mode);
            if (p1 < 0) {
                continue;
            }
            const size_t row = ((size_t)p0 * n1 + p1) * n2;
            const int w = (a * k1 + b) * k2;
            for (int c = 0; c < k2; ++c) {
                const int p2 = boundary_index(i2 + sign * (c - k2 / 2), n2, mode);
                if (p2 >= 0) {
                    acc += psf[w + c] * x[row + p2];
                }
            }
        }
    }
    out[((size_t)i0 * n1 + i1) * n2 + i2] = acc;
}
