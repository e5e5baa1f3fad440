// The Wiener filter with the signal power estimated from the data, in place:
// G *= conj(L) S / (|L|^2 S + noise_weight * noise), S = max(|G|^2 - noise, 0).
// `complex_values` 1: G and L are interleaved (re, im) pairs (real FFT half spectra);
// 0: real DCT coefficients and gains. Scalar loads as in complex_multiply.cl.
__kernel void wiener_spectrum(__global float *spectrum, __global const float *otf,
                              const float noise, const float noise_weight,
                              const int complex_values)
{
    const size_t i = get_global_id(0);
    const size_t j = complex_values ? 2 * i : i;
    const float g_re = spectrum[j], l_re = otf[j];
    const float g_im = complex_values ? spectrum[j + 1] : 0.0f;
    const float l_im = complex_values ? otf[j + 1] : 0.0f;
    const float signal = fmax(g_re * g_re + g_im * g_im - noise, 0.0f);
    const float gain = signal / ((l_re * l_re + l_im * l_im) * signal + noise_weight * noise);
    spectrum[j] = (g_re * l_re + g_im * l_im) * gain;
    if (complex_values) {
        spectrum[j + 1] = (g_im * l_re - g_re * l_im) * gain;
    }
}
