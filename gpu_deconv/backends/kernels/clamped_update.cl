// Accelerated Richardson-Lucy update: out = max(point * correction [* weights], floor_value)
// where point > 0 (and weights > 0 when has_weights), else 0. out may alias any input.
__kernel void clamped_update(__global float *out, __global const float *point,
                             __global const float *correction, __global const float *weights,
                             const int has_weights, const float floor_value)
{
    const size_t i = get_global_id(0);
    const float w = has_weights ? weights[i] : 1.0f;
    const float p = point[i];
    out[i] = (p > 0.0f && w > 0.0f) ? at_least(p * correction[i] * w, floor_value) : 0.0f;
}
