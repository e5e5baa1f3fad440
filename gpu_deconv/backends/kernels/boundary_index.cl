// Map a position on an axis of length `size` to the index it reads, following scipy.ndimage's
// filter modes: 0 reflect (dcba|abcd|dcba), 1 nearest, 2 mirror (dcb|abcd|cba), 3 wrap,
// 4 constant. Returns -1 where the constant mode reads the zero outside the image.
// Not a kernel: the loader prepends this file to the kernels that need it.
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
