// out = x where weights > 0, else 0: restricts a starting estimate to the observable voxels.
// out may alias x.
__kernel void keep_where(__global float *out, __global const float *x,
                         __global const float *weights)
{
    const size_t i = get_global_id(0);
    out[i] = weights[i] > 0.0f ? x[i] : 0.0f;
}
