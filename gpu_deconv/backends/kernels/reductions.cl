// Float64 partial sums for the accelerated loop's and the stopping rules' reductions. Work
// item j sums its share of the elements (share()) into partial[j]; the host adds the G
// partial sums (G = global size). Built on first use, apart from the other kernels: it needs
// cl_khr_fp64.
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

// Work item j's share of n elements: elements first, first + step, ... below end. On a GPU
// (contiguous = 0) every G-th element from j, so neighbouring items read neighbouring
// elements; on a CPU one contiguous run, so each core streams its own cache lines (the GPU
// order measured 25x slower than a plain pass on PoCL).
inline void share(const unsigned long n, const int contiguous, size_t *first, size_t *end,
                  size_t *step)
{
    const size_t j = get_global_id(0), g = get_global_size(0);
    if (contiguous) {
        const size_t span = (n + g - 1) / g;
        *first = min((size_t)n, j * span);
        *end = min((size_t)n, *first + span);
        *step = 1;
    } else {
        *first = j;
        *end = n;
        *step = g;
    }
}

// The accelerated update of voxel i, its correction at padded[k], over the estimate f:
//   f' = max(x c w, floor) where x > 0 and w > 0, else 0        (as clamped_update)
// then by mode. SHB (0, 1): sum1 += (f' - f)(x - f), the restart test's term, and in mode 1
// the next point aux = f' > 0 ? max(f' + alpha (f' - f), floor) : 0. Biggs (2): the change
// aux = f' - x, sum1 += aux * earlier, sum2 += aux * aux (its momentum's sums).
// x may alias aux (SHB) or the estimate: each voxel is read before it is written.
inline void accelerated_voxel(const size_t i, const size_t k, __global float *estimate,
                              __global float *aux, __global const float *x,
                              __global const float *padded, __global const float *weights,
                              const int has_weights, const float floor_value,
                              const float alpha, const int mode,
                              __global const float *earlier, double *sum1, double *sum2)
{
    const float p = x[i];
    const float w = has_weights ? weights[i] : 1.0f;
    const float fresh = (p > 0.0f && w > 0.0f) ? at_least(p * padded[k] * w, floor_value) : 0.0f;
    if (mode == 2) {
        const float change = fresh - p;
        aux[i] = change;
        *sum1 += (double)change * (double)earlier[i];
        *sum2 += (double)change * (double)change;
    } else {
        const float f = estimate[i];
        *sum1 += ((double)fresh - (double)f) * ((double)p - (double)f);
        if (mode == 1) {
            aux[i] = fresh > 0.0f ? at_least(fresh + alpha * (fresh - f), floor_value) : 0.0f;
        }
    }
    estimate[i] = fresh;
}

// accelerated_voxel over the estimate (planes of n1 rows of n2), the correction read out of
// the padded domain (offset b0, b1, b2; planes of m1 rows of `row_stride` floats); partial[j]
// and partial[G + j] hold item j's sum1 and sum2. A CPU's items take runs of whole rows (the
// crop offset is found once per row). A GPU's item j takes column j % n2 of every R-th row
// from j / n2 (R = G / n2, G >= n2), so neighbouring items read neighbouring voxels. Row
// coordinates advance with carries: no division per voxel.
__kernel void accelerated_update_partial(__global double *partial, __global float *estimate,
                                         __global float *aux, __global const float *x,
                                         __global const float *padded,
                                         __global const float *weights, const int has_weights,
                                         const float floor_value, const float alpha,
                                         const int mode, __global const float *earlier,
                                         const int n1, const int n2, const int m1,
                                         const int row_stride, const int b0, const int b1,
                                         const int b2, const unsigned long n,
                                         const int contiguous)
{
    const size_t rows = n / n2;
    size_t r, r_end, r_step;
    int c_first, c_end;
    if (contiguous) {
        share(rows, 1, &r, &r_end, &r_step);
        c_first = 0;
        c_end = n2;
    } else {
        const size_t j = get_global_id(0), per_row = get_global_size(0) / n2;
        r = j / n2;
        r_end = r < per_row ? rows : 0;
        r_step = per_row;
        c_first = (int)(j % n2);
        c_end = c_first + 1;
    }
    int i1 = (int)(r % n1), i0 = (int)(r / n1);
    const int d1 = (int)(r_step % n1), d0 = (int)(r_step / n1);
    double sum1 = 0.0, sum2 = 0.0;
    for (; r < r_end; r += r_step) {
        const size_t row = padded_index(i0, i1, 0, m1, row_stride, b0, b1, b2);
        for (int c = c_first; c < c_end; c++) {
            accelerated_voxel(r * n2 + c, row + c, estimate, aux, x, padded, weights,
                              has_weights, floor_value, alpha, mode, earlier, &sum1, &sum2);
        }
        i1 += d1;
        i0 += d0;
        if (i1 >= n1) {
            i1 -= n1;
            i0 += 1;
        }
    }
    partial[get_global_id(0)] = sum1;
    partial[get_global_size(0) + get_global_id(0)] = sum2;
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
                                  const unsigned long n,
                                 const int contiguous)
{
    const size_t j = get_global_id(0);
    size_t first, end, step;
    share(n, contiguous, &first, &end, &step);
    double kl = 0.0, expected = 0.0;
    for (size_t i = first; i < end; i += step) {
        if (has_mask && mask[i] <= 0.0f) {
            continue;
        }
        const double mu = model_mean(blurred, background, has_background, offset, gain, i);
        const double g = (double)observed[i];
        kl += 2.0 * (mu - g + (g > 0.0 ? g * log(g / mu) : 0.0));
        expected += expected_2kl(mu / scale, table, points, log_min, log_step) * scale;
    }
    partial[j] = kl;
    partial[get_global_size(0) + j] = expected;
}

// sum v ln mu - mu over mask: the hold-out half's Poisson log-likelihood (up to a constant).
__kernel void holdout_partial(__global double *partial, __global const float *validation,
                              __global const float *blurred, __global const float *mask,
                              const int has_mask, __global const float *background,
                              const int has_background, const double offset,
                              const double gain, const unsigned long n,
                                 const int contiguous)
{
    const size_t j = get_global_id(0);
    size_t first, end, step;
    share(n, contiguous, &first, &end, &step);
    double acc = 0.0;
    for (size_t i = first; i < end; i += step) {
        if (has_mask && mask[i] <= 0.0f) {
            continue;
        }
        const double mu = model_mean(blurred, background, has_background, offset, gain, i);
        acc += (double)validation[i] * log(mu) - mu;
    }
    partial[j] = acc;
}

// What the driver needs to know of a device image without bringing it over (device arrays in,
// device arrays out): per work item, rows of G partials (G = global size)
//   0 non-finite voxels, 1 voxels the mask keeps (all without one), 2 their sum,
//   3 the smallest and 4 the largest finite value (the host takes the min / max of the row),
//   5 voxels in (0, below), 6 voxels above other + shift (0 without other).
__kernel void statistics_partial(__global double *partial, __global const float *x,
                                 __global const float *mask, const int has_mask,
                                 __global const float *other, const int has_other,
                                 const float shift, const float below,
                                 const unsigned long n, const int contiguous)
{
    const size_t j = get_global_id(0), g = get_global_size(0);
    size_t first, end, step;
    share(n, contiguous, &first, &end, &step);
    double nonfinite = 0.0, kept = 0.0, sum = 0.0, dim = 0.0, above = 0.0;
    double lowest = INFINITY, highest = -INFINITY;
    for (size_t i = first; i < end; i += step) {
        const float v = x[i];
        if (!isfinite(v)) {
            nonfinite += 1.0;
            continue;
        }
        lowest = fmin(lowest, (double)v);
        highest = fmax(highest, (double)v);
        dim += (v > 0.0f && v < below) ? 1.0 : 0.0;
        above += (has_other && v > other[i] + shift) ? 1.0 : 0.0;
        if (!has_mask || mask[i] > 0.0f) {
            kept += 1.0;
            sum += (double)v;
        }
    }
    partial[j] = nonfinite;
    partial[g + j] = kept;
    partial[2 * g + j] = sum;
    partial[3 * g + j] = lowest;
    partial[4 * g + j] = highest;
    partial[5 * g + j] = dim;
    partial[6 * g + j] = above;
}

// Second stage of every reduction above, on the device: work group r (of COMBINE_ITEMS items)
// combines row r of the partials by op r of ops (2 bits each: 0 sum, 1 min, 2 max) into
// out[r], so a reduction brings back one double per output whatever the number of items.
inline double combine(const unsigned int op, const double a, const double b)
{
    return op == 0 ? a + b : (op == 1 ? fmin(a, b) : fmax(a, b));
}

__kernel void combine_partials(__global double *out, __global const double *partial,
                               const unsigned int items, const unsigned int ops,
                               __local double *scratch)
{
    const size_t j = get_local_id(0), g = get_local_size(0), r = get_group_id(1);
    const unsigned int op = (ops >> (2 * r)) & 3u;
    double acc = op == 0 ? 0.0 : (op == 1 ? INFINITY : -INFINITY);
    for (size_t i = j; i < items; i += g) {
        acc = combine(op, acc, partial[r * items + i]);
    }
    scratch[j] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t width = g / 2; width > 0; width /= 2) {
        if (j < width) {
            scratch[j] = combine(op, scratch[j], scratch[j + width]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (j == 0) {
        out[r] = scratch[0];
    }
}
