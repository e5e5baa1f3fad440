// Richardson-Lucy ratio, fused: out = observed / d where d > eps, else 0, with the data's model
// d = blurred + background (when has_background) + offset. out may alias blurred.
__kernel void rl_ratio(__global float *out, __global const float *observed,
                       __global const float *blurred, __global const float *background,
                       const int has_background, const float offset, const float eps)
{
    const size_t i = get_global_id(0);
    const float d = blurred[i] + (has_background ? background[i] : 0.0f) + offset;
    out[i] = d > eps ? observed[i] / d : 0.0f;
}
