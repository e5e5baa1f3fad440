// Edge weights: out = 1 / weights where weights > threshold, else 0 (voxels the data barely
// see leave the estimate). out may alias weights.
__kernel void inverse_weights(__global float *out, __global const float *weights,
                              const float threshold)
{
    const size_t i = get_global_id(0);
    const float w = weights[i];
    out[i] = w > threshold ? 1.0f / w : 0.0f;
}
