// out = a - b, elementwise; out may alias a or b.
__kernel void subtract(__global float *out, __global const float *a, __global const float *b)
{
    const size_t i = get_global_id(0);
    out[i] = a[i] - b[i];
}
