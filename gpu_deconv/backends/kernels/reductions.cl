// Float64 partial sums for the accelerated loop's reductions. Work item j sums elements
// j, j + G, j + 2G, ... (G = global size, coalesced reads) into partial[j]; the host adds the
// G partial sums. Built on first use, apart from the other kernels: it needs cl_khr_fp64.
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

__kernel void dot_partial(__global double *partial, __global const float *a,
                          __global const float *b, const unsigned long n)
{
    const size_t j = get_global_id(0), stride = get_global_size(0);
    double acc = 0.0;
    for (size_t i = j; i < n; i += stride) {
        acc += (double)a[i] * (double)b[i];
    }
    partial[j] = acc;
}

// sum((f - q) * (p - q)): whether the last step agreed with the momentum.
__kernel void agreement_partial(__global double *partial, __global const float *f,
                                __global const float *q, __global const float *p,
                                const unsigned long n)
{
    const size_t j = get_global_id(0), stride = get_global_size(0);
    double acc = 0.0;
    for (size_t i = j; i < n; i += stride) {
        const double base = (double)q[i];
        acc += ((double)f[i] - base) * ((double)p[i] - base);
    }
    partial[j] = acc;
}

// The Poisson model mean of a voxel in the data's units: gain (blurred + background + offset),
// kept off 0 (ln mu).
inline double model_mean(__global const float *blurred, __global const float *background,
                         const int has_background, const double offset, const double gain,
                         const size_t i)
{
    const double b = has_background ? (double)background[i] : 0.0;
    return fmax(gain * ((double)blurred[i] + b + offset), 1e-30);
}

// E[2 KL] of a Poisson count of mean mu (photons): the table on a ln-mu grid, the asymptotic
// series above it, -2 mu ln mu below it (gpu_deconv/_noise.py).
inline double expected_2kl(const double mu, __global const float *table, const int points,
                           const double log_min, const double log_step)
{
    const double l = log(mu);
    const double t = (l - log_min) / log_step;
    if (t < 0.0) {
        return -2.0 * mu * l;
    }
    if (t >= (double)(points - 1)) {
        return 1.0 + 1.0 / (6.0 * mu) + 1.0 / (6.0 * mu * mu);
    }
    const int k = (int)t;
    const double frac = t - (double)k;
    return (1.0 - frac) * (double)table[k] + frac * (double)table[k + 1];
}

// partial[j]: sum 2 KL(g | mu); partial[G + j]: sum E[2 KL](mu / scale) * scale, over mask.
__kernel void discrepancy_partial(__global double *partial, __global const float *observed,
                                  __global const float *blurred, __global const float *mask,
                                  const int has_mask, __global const float *background,
                                  const int has_background, const double offset,
                                  const double gain, const double scale, __global const float *table,
                                  const int points, const double log_min, const double log_step,
                                  const unsigned long n)
{
    const size_t j = get_global_id(0), stride = get_global_size(0);
    double kl = 0.0, expected = 0.0;
    for (size_t i = j; i < n; i += stride) {
        if (has_mask && mask[i] <= 0.0f) {
            continue;
        }
        const double mu = model_mean(blurred, background, has_background, offset, gain, i);
        const double g = (double)observed[i];
        kl += 2.0 * (mu - g + (g > 0.0 ? g * log(g / mu) : 0.0));
        expected += expected_2kl(mu / scale, table, points, log_min, log_step) * scale;
    }
    partial[j] = kl;
    partial[stride + j] = expected;
}

// sum v ln mu - mu over mask: the hold-out half's Poisson log-likelihood (up to a constant).
__kernel void holdout_partial(__global double *partial, __global const float *validation,
                              __global const float *blurred, __global const float *mask,
                              const int has_mask, __global const float *background,
                              const int has_background, const double offset,
                              const double gain, const unsigned long n)
{
    const size_t j = get_global_id(0), stride = get_global_size(0);
    double acc = 0.0;
    for (size_t i = j; i < n; i += stride) {
        if (has_mask && mask[i] <= 0.0f) {
            continue;
        }
        const double mu = model_mean(blurred, background, has_background, offset, gain, i);
        acc += (double)validation[i] * log(mu) - mu;
    }
    partial[j] = acc;
}
