// Richardson-Lucy ratio, fused: out = observed / d where d > eps, else 0, with the data's model
// d = blurred + background (when has_background) + offset; also 0 where d <= noise (a float32
// FFT's round-off) and the ratio would exceed limit. out may alias blurred.
__kernel void rl_ratio(__global float *out, __global const float *observed,
                       __global const float *blurred, __global const float *background,
                       const int has_background, const float offset, const float eps,
                       const float noise, const float limit)
{
    const size_t i = get_global_id(0);
    const float d = blurred[i] + (has_background ? background[i] : 0.0f) + offset;
    const float g = observed[i];
    out[i] = d > eps && (d > noise || g <= limit * d) ? g / d : 0.0f;
}
