// One-step-late total variation (Dey et al. 2006): out = w / max(1 - strength * div p, floor)
// with p = grad f / sqrt(|grad f|^2 + smoothing^2), forward differences for the gradient (0 at
// an axis' last index), backward for the divergence, and w the weights (1 without; out = 0
// where w is 0, and differences to such voxels are 0). Work item (x, y, z) is one voxel of the (nz, ny, nx) estimate;
// each guarded voxel increments *guarded (rare: an atomic costs nothing in the common case).

// Whether the pair (i, j) is a difference of the estimate: both voxels estimated (weight > 0).
inline int tv_pair(__global const float *weights, const int has_weights, const int i, const int j)
{
    return !has_weights || (weights[i] > 0.0f && weights[j] > 0.0f);
}

// The flux p at (z, y, x), one component per axis, each divided by its spacing. A difference
// past an axis' end (unless periodic: then to the axis' first voxel) or to a voxel out of the
// estimate is 0 (Neumann at the estimate's edge).
inline void tv_flux(__global const float *f, __global const float *weights, const int has_weights,
                    const int periodic, const int z, const int y, const int x, const int nz,
                    const int ny, const int nx, const float sz, const float sy, const float sx,
                    const float smoothing2, float *pz, float *py, float *px)
{
    const int i = (z * ny + y) * nx + x;
    const float c = f[i];
    const int z1 = z + 1 < nz ? z + 1 : (periodic ? 0 : -1);
    const int y1 = y + 1 < ny ? y + 1 : (periodic ? 0 : -1);
    const int x1 = x + 1 < nx ? x + 1 : (periodic ? 0 : -1);
    const int iz = (z1 * ny + y) * nx + x, iy = (z * ny + y1) * nx + x, ix = (z * ny + y) * nx + x1;
    const float gz = z1 >= 0 && tv_pair(weights, has_weights, i, iz) ? (f[iz] - c) / sz : 0.0f;
    const float gy = y1 >= 0 && tv_pair(weights, has_weights, i, iy) ? (f[iy] - c) / sy : 0.0f;
    const float gx = x1 >= 0 && tv_pair(weights, has_weights, i, ix) ? (f[ix] - c) / sx : 0.0f;
    const float inv = 1.0f / sqrt(gz * gz + gy * gy + gx * gx + smoothing2);
    *pz = gz * inv / sz;
    *py = gy * inv / sy;
    *px = gx * inv / sx;
}

__kernel void tv_factor(__global float *out, __global const float *f,
                        __global const float *weights, const int has_weights,
                        const int nz, const int ny, const int nx,
                        const float sz, const float sy, const float sx,
                        const float strength, const float smoothing, const float floor_value,
                        const int periodic, __global int *guarded)
{
    const int x = get_global_id(0), y = get_global_id(1), z = get_global_id(2);
    const int i = (z * ny + y) * nx + x;
    const float w = has_weights ? weights[i] : 1.0f;
    if (w <= 0.0f) {
        out[i] = 0.0f;
        return;
    }
    const float s2 = smoothing * smoothing;
    float pz, py, px, qz, qy, qx;
    tv_flux(f, weights, has_weights, periodic, z, y, x, nz, ny, nx, sz, sy, sx, s2, &pz, &py, &px);
    float divergence = pz + py + px;
    // The flux into this voxel from its predecessor on each axis (periodic: the last voxel's
    // into the first; an axis of length 1 has no difference to take).
    const int z0 = z > 0 ? z - 1 : (periodic && nz > 1 ? nz - 1 : -1);
    const int y0 = y > 0 ? y - 1 : (periodic && ny > 1 ? ny - 1 : -1);
    const int x0 = x > 0 ? x - 1 : (periodic && nx > 1 ? nx - 1 : -1);
    if (z0 >= 0) {
        tv_flux(f, weights, has_weights, periodic, z0, y, x, nz, ny, nx, sz, sy, sx, s2, &qz, &qy, &qx);
        divergence -= qz;
    }
    if (y0 >= 0) {
        tv_flux(f, weights, has_weights, periodic, z, y0, x, nz, ny, nx, sz, sy, sx, s2, &qz, &qy, &qx);
        divergence -= qy;
    }
    if (x0 >= 0) {
        tv_flux(f, weights, has_weights, periodic, z, y, x0, nz, ny, nx, sz, sy, sx, s2, &qz, &qy, &qx);
        divergence -= qx;
    }
    float d = 1.0f - strength * divergence;
    if (d < floor_value) {
        d = floor_value;
        atomic_inc(guarded);
    }
    out[i] = w / d;
}
