// Richardson-Lucy ratio, fused: out = observed / blurred where blurred > eps, else 0.
// out may alias blurred.
__kernel void rl_ratio(__global float *out, __global const float *observed,
                       __global const float *blurred, const float eps)
{
    const size_t i = get_global_id(0);
    const float b = blurred[i];
    out[i] = b > eps ? observed[i] / b : 0.0f;
}
