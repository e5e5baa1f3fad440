// Map a position on an axis of length `size` to the index it reads, following scipy.ndimage's
// filter modes: 0 reflect (dcba|abcd|dcba), 1 nearest, 2 mirror (dcb|abcd|cba), 3 wrap,
// 4 constant. Returns -1 where the constant mode reads the zero outside the image.
// Not a kernel: the loader prepends this file (with padded_index) to the kernels.
inline int boundary_index(int pos, int size, int mode)
{
    if (pos >= 0 && pos < size) {
        return pos;
    }
    if (mode == 0) {
        int period = 2 * size;
        int m = pos % period;
        m = m < 0 ? m + period : m;
        return m < size ? m : period - 1 - m;
    }
    if (mode == 1) {
        return pos < 0 ? 0 : size - 1;
    }
    if (mode == 2) {
        if (size == 1) {
            return 0;
        }
        int period = 2 * size - 2;
        int m = pos % period;
        m = m < 0 ? m + period : m;
        return m < size ? m : period - m;
    }
    if (mode == 3) {
        int m = pos % size;
        return m < 0 ? m + size : m;
    }
    return -1;
}

// Index of image voxel (i0, i1, i2) in a padded buffer where the image sits at offset
// (b0, b1, b2), rows `row_stride` floats long and `m1` rows per plane.
inline size_t padded_index(int i0, int i1, int i2, int m1, int row_stride, int b0, int b1,
                           int b2)
{
    return ((size_t)(i0 + b0) * m1 + (i1 + b1)) * row_stride + (i2 + b2);
}

// max(v, floor_value) for the clamps: PoCL's fmax is a library call that stops vectorisation
// (a clamped update measured 4x slower with it); the operands are never NaN here.
inline float at_least(const float v, const float floor_value)
{
    return v > floor_value ? v : floor_value;
}
