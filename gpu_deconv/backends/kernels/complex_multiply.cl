// spectrum *= otf (convolution) or spectrum *= conj(otf) (correlation), in place.
__kernel void complex_multiply(__global float2 *spectrum, __global const float2 *otf,
                               const int conjugate)
{
    const size_t i = get_global_id(0);
    const float2 a = spectrum[i];
    float2 b = otf[i];
    if (conjugate) {
        b.y = -b.y;
    }
    spectrum[i] = (float2)(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}
