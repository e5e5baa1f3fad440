// Momentum step of accelerated Richardson-Lucy, fused with the history update:
// point = max(estimate + alpha * (estimate - previous), floor_value) where estimate > 0, else 0
// (voxels at zero, unobservable or outside a constant border, stay zero); previous = estimate.
__kernel void extrapolate(__global float *point, __global float *previous,
                          __global const float *estimate, const float alpha,
                          const float floor_value)
{
    const size_t i = get_global_id(0);
    const float f = estimate[i];
    const float p = f + alpha * (f - previous[i]);
    point[i] = f > 0.0f ? at_least(p, floor_value) : 0.0f;
    previous[i] = f;
}
