"""An independent float64 reference for ``boundary="estimate"`` and masks: dense matrices.

Written with ``scipy.ndimage`` and NumPy only (no gpu_deconv code): the blur from the work
domain W (the image grown by the margin) to the image is a dense matrix whose column j is the
zero-extended blur of a delta at j, cut to the image.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

UNOBSERVED = 1e-3  # voxels with H^T m <= 1e-3 * sum(psf) are not estimated (documented policy)


def blur_matrix(shape, psf, margin):
    """Dense H (image voxels x work voxels) and the work shape, margin = ((lo, hi), ...)."""
    work = tuple(n + lo + hi for n, (lo, hi) in zip(shape, margin))
    inside = tuple(slice(lo, lo + n) for n, (lo, _) in zip(shape, margin))
    columns = []
    for j in range(int(np.prod(work))):
        delta = np.zeros(work)
        delta.flat[j] = 1.0
        columns.append(ndi.convolve(delta, psf, mode="constant")[inside].ravel())
    return np.stack(columns, axis=1), work, inside


def estimate_rl(image, psf, iterations, margin, mask=None, eps=1e-12, init=None):
    """Richardson-Lucy with estimated edges (Bertero-Boccacci), flat start, float64.

    Returns the estimate cut to the image and the per-iteration sums of ``m * H f``.
    """
    g = np.asarray(image, np.float64).ravel()
    h = np.asarray(psf, np.float64) / np.sum(psf)
    m = np.ones_like(g) if mask is None else np.asarray(mask, np.float64).ravel()
    H, work, inside = blur_matrix(image.shape, h, margin)
    w = H.T @ m
    kept = w > UNOBSERVED
    inverse = np.where(kept, 1.0 / np.where(kept, w, 1.0), 0.0)
    start = (g * m).sum() / m.sum() if init is None else init
    f = np.where(kept, start, 0.0)
    sums = []
    for _ in range(iterations):
        blurred = H @ f
        ratio = np.zeros_like(g)
        np.divide(m * g, blurred, out=ratio, where=blurred > eps)
        f = f * (H.T @ ratio) * inverse
        sums.append(float((m * (H @ f)).sum()))
    return f.reshape(work)[inside], sums
