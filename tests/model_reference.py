"""An independent float64 reference of the full model: background, read noise, TV, edges.

Written with NumPy and ``scipy.ndimage`` only (the estimated-edge blur is the dense matrix of
``estimate_reference``). One iteration, with data ``g``, background ``b``, read-noise variance
``s = sigma**2``, normalisation ``v`` (1, or ``H^T m / sum(h)`` with masks and estimated edges):

    f <- f * H^T(m (g + s) / (H f + b + s)) / (v max(1 - lambda div(grad f / |grad f|_e), 1/2))

with forward differences over the voxel spacing (relative to the finest axis), backward
divergence, ``|x|_e = sqrt(|x|^2 + e^2)``, ``e = max(1e-3 max(g + s), 2 ndim lambda mean(g + s))``,
and voxels with
``v <= 1e-3`` left out of the estimate (0).
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from estimate_reference import UNOBSERVED, blur_matrix

GUARD = 0.5
SMOOTHING = 1e-3


def tv_divergence(f, spacing, smoothing, kept=None, periodic=False):
    """``div(grad f / sqrt(|grad f|^2 + smoothing^2))``, forward/backward differences.

    A difference involving a voxel outside ``kept`` (not estimated) is 0; past an axis' end it
    is 0 too, unless ``periodic`` (then it is to the axis' first voxel).
    """
    steps = np.asarray(spacing, np.float64) / min(spacing)
    kept = np.ones(f.shape, bool) if kept is None else kept
    grads = []
    for a, s in enumerate(steps):
        if periodic:
            both = kept & np.roll(kept, -1, axis=a)
            grads.append(np.where(both, np.roll(f, -1, axis=a) - f, 0) / s)
            continue
        both = kept & np.concatenate(
            [
                np.take(kept, range(1, f.shape[a]), axis=a),
                np.zeros_like(np.take(kept, [0], axis=a)),
            ],
            axis=a,
        )
        grads.append(np.where(both, np.diff(f, axis=a, append=np.take(f, [-1], axis=a)), 0) / s)
    norm = np.sqrt(sum(g * g for g in grads) + smoothing**2)
    out = np.zeros_like(f)
    for a, (grad, s) in enumerate(zip(grads, steps)):
        flux = grad / norm
        if periodic:
            out += (flux - np.roll(flux, 1, axis=a)) / s
        else:
            out += np.diff(flux, axis=a, prepend=np.zeros_like(np.take(flux, [0], axis=a))) / s
    return out


def model_rl(
    image,
    psf,
    iterations,
    boundary="reflect",
    margin=None,
    mask=None,
    background=0.0,
    read_noise=0.0,
    strength=0.0,
    spacing=None,
    init="observed",
    eps=1e-12,
):
    """Richardson-Lucy under the full model, float64; ``margin`` for ``boundary="estimate"``.

    ``init``: "observed" (the data, clipped at 0 and, with read noise, raised to 1% of its
    mean), "mean" (flat: mean of the data less background), or a number. Returns the estimate
    on the image's grid.
    """
    variance = read_noise**2
    g = np.maximum(np.asarray(image, np.float64) + variance, 0)
    h = np.asarray(psf, np.float64) / np.sum(psf)
    b = np.broadcast_to(np.asarray(background, np.float64), g.shape)
    m = np.ones(g.shape) if mask is None else np.asarray(mask, np.float64)
    spacing = (1.0,) * g.ndim if spacing is None else spacing
    smoothing = max(SMOOTHING * g.max(), 2 * g.ndim * strength * g.mean())
    guard = eps * g.max()
    if boundary == "estimate":
        H, work, inside = blur_matrix(g.shape, h, margin)

        def blur(x):
            return (H @ x.ravel()).reshape(g.shape)

        def adjoint(y):
            return (H.T @ y.ravel()).reshape(work)

    else:
        work, inside = g.shape, tuple(slice(None) for _ in g.shape)

        def blur(x):
            return ndi.convolve(x, h, mode=boundary)

        def adjoint(y):
            return ndi.correlate(y, h, mode=boundary)

    weighted = mask is not None or boundary == "estimate"
    v = adjoint(m) if weighted else np.ones(work)
    kept = v > UNOBSERVED
    if init == "observed":
        data = np.maximum(g - variance, 0)
        f = np.maximum(data, 0.01 * data.mean()) if variance else data
    elif init == "mean":
        mean = (g * m).sum() / m.sum() - variance
        light = mean - (b * m).sum() / m.sum()
        f = np.full(work, max(light, 0.01 * mean))
    else:
        f = np.full(work, float(init))
    f = np.where(kept, f, 0.0)
    for _ in range(iterations):
        model = blur(f) + b + variance
        ratio = np.zeros_like(g)
        np.divide(m * g, model, out=ratio, where=model > guard)
        denominator = v
        if strength:
            tv = 1 - strength * tv_divergence(f, spacing, smoothing, kept, boundary == "wrap")
            denominator = v * np.maximum(tv, GUARD)
        f = np.where(kept, f * adjoint(ratio) / np.where(kept, denominator, 1.0), 0.0)
    return f[inside]
