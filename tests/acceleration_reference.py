"""Float64 references of accelerated Richardson-Lucy (SHB with restart, Biggs-Andrews).

Written from ALGORITHMS.md section 1 with scipy.ndimage only, independently of the backends:
same boundary convention as ``conftest.oracle_rl``, same floor and restart rule as documented
in :mod:`gpu_deconv.algorithms.accelerated`.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

FLOOR = 1e-30


def accelerated_rl(image, psf, iterations, kind, boundary="reflect", eps=1e-12):
    """Return the estimates after 1..iterations (a list) and the momentum of each step."""
    g = np.asarray(image, np.float64)
    h = np.asarray(psf, np.float64) / np.sum(psf)
    threshold = eps * g.max()
    f = g.copy()
    previous = f.copy()
    changes = []
    since_restart = 0
    estimates, momenta = [], []
    for _ in range(iterations):
        if kind == "shb":
            alpha = max(0.0, (since_restart - 1) / (since_restart + 2))
        elif len(changes) < 2:
            alpha = 0.0
        else:
            ratio = np.vdot(changes[-1], changes[-2]) / (np.vdot(changes[-2], changes[-2]) + 1e-300)
            alpha = min(max(ratio, 0.0), 1.0)
        point = np.where(f > 0, np.maximum(f + alpha * (f - previous), FLOOR), 0.0)
        previous = f
        blurred = ndi.convolve(point, h, mode=boundary)
        ratio_image = np.zeros_like(g)
        np.divide(g, blurred, out=ratio_image, where=blurred > threshold)
        update = point * ndi.correlate(ratio_image, h, mode=boundary)
        f = np.where(point > 0, np.maximum(update, FLOOR), 0.0)
        changes = [*changes[-1:], f - point]
        since_restart += 1
        if kind == "shb" and alpha > 0 and np.vdot(f - previous, point - previous) < 0:
            since_restart = 0
        estimates.append(f)
        momenta.append(alpha)
    return estimates, momenta
