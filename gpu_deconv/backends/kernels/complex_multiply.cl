// spectrum *= otf (convolution) or spectrum *= conj(otf) (correlation), in place.
// Complex numbers are interleaved (re, im) float pairs; scalar loads and stores (rather than
// float2) keep Oclgrind's uninitialised-value tracking exact.
__kernel void complex_multiply(__global float *spectrum, __global const float *otf,
                               const int conjugate)
{
    const size_t i = 2 * get_global_id(0);
    const float a_re = spectrum[i], a_im = spectrum[i + 1];
    const float b_re = otf[i], b_im = conjugate ? -otf[i + 1] : otf[i + 1];
    spectrum[i] = a_re * b_re - a_im * b_im;
    spectrum[i + 1] = a_re * b_im + a_im * b_re;
}
