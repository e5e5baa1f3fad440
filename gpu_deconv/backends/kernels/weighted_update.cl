// Weighted Richardson-Lucy update, fused: out = estimate * correction * weights, where
// weights = 1 / (H^T mask) (0 where a voxel is not observable). out may alias any input.
__kernel void weighted_update(__global float *out, __global const float *estimate,
                              __global const float *correction, __global const float *weights)
{
    const size_t i = get_global_id(0);
    out[i] = estimate[i] * correction[i] * weights[i];
}
