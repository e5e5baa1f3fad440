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
