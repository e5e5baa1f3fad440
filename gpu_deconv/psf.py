"""PSF tools: Gaussian and optical models (widefield, confocal), measured bead PSFs.

The optical models (:func:`widefield_psf`, :func:`confocal_psf`) come from the ``psf``
package; :func:`bead_psf` (with :func:`remove_background`, :func:`center_psf`,
:func:`crop_psf`, :func:`resample_psf`) turns a bead image into a deconvolution PSF.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _validation as v
from ._psf_measured import bead_psf, center_psf, crop_psf, remove_background, resample_psf
from ._psf_optics import confocal_psf, grid_spacing, widefield_psf

__all__ = [
    "axis_moments",
    "bead_psf",
    "center_psf",
    "confocal_psf",
    "crop_psf",
    "gaussian_psf",
    "grid_spacing",
    "normalize_psf",
    "remove_background",
    "resample_psf",
    "rms_width",
    "widefield_psf",
]


def gaussian_psf(shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """Return a sampled Gaussian PSF, centred at index ``n // 2`` and normalised to sum 1.

    Parameters
    ----------
    shape : sequence of int
        PSF shape, 1 to 3 axes; odd lengths put the peak exactly in the middle.
    sigma : float or sequence of float
        Standard deviation in pixels, one for all axes or one per axis (anisotropic PSFs,
        e.g. a longer z axis).

    Returns
    -------
    ndarray
        float64 PSF of ``shape``; it is separable (an outer product of 1-D Gaussians).

    Raises
    ------
    ValueError
        If a length is not positive, or a sigma is not positive and finite, or the numbers of
        sigmas and axes differ.

    Examples
    --------
    >>> import numpy as np
    >>> from gpu_deconv.psf import gaussian_psf
    >>> psf = gaussian_psf((25, 25), sigma=2)
    >>> peak = tuple(map(int, np.unravel_index(psf.argmax(), psf.shape)))
    >>> psf.shape, round(float(psf.sum()), 12), peak
    ((25, 25), 1.0, (12, 12))
    """
    shape = tuple(int(n) for n in shape)
    if not 1 <= len(shape) <= v.MAX_NDIM or any(n < 1 for n in shape):
        raise ValueError(f"shape must have 1 to 3 positive lengths, got {shape}")
    sigmas = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if sigmas.size == 1:
        sigmas = np.repeat(sigmas, len(shape))
    if sigmas.shape != (len(shape),):
        raise ValueError(f"sigma must be one number or one per axis ({len(shape)}), got {sigma}")
    if not (np.isfinite(sigmas).all() and (sigmas > 0).all()):
        raise ValueError(f"sigma must be positive and finite, got {sigma}")
    psf = np.ones((), dtype=np.float64)
    for n, s in zip(shape, sigmas):
        x = np.arange(n) - n // 2
        profile = np.exp(-0.5 * (x / s) ** 2)
        psf = np.multiply.outer(psf, profile / profile.sum())
    return psf


def normalize_psf(psf: np.ndarray) -> np.ndarray:
    """Return ``psf`` as float64 scaled to sum 1.

    Parameters
    ----------
    psf : array_like
        Non-negative, finite PSF, 1 to 3 axes.

    Returns
    -------
    ndarray
        float64 copy that sums to 1.

    Raises
    ------
    TypeError
        If ``psf`` is not a real numeric array.
    ValueError
        If ``psf`` is empty, holds NaN/inf or negative values, or is all zero.
    """
    arr = np.asarray(psf)
    return v.check_psf(arr, arr.ndim, normalize=True)


def rms_width(psf: np.ndarray) -> tuple[float, ...]:
    """Return the root-mean-square width of a PSF along each axis, in voxels.

    The standard deviation of the PSF, seen as a distribution of intensity, about its
    centroid: ``sigma`` for a Gaussian that its array does not truncate.

    Parameters
    ----------
    psf : array_like
        Non-negative PSF, 1D to 3D.

    Returns
    -------
    tuple of float
        One width per axis.

    Examples
    --------
    >>> [round(w, 3) for w in rms_width(gaussian_psf((31, 31), (2.0, 3.0)))]
    [2.0, 3.0]
    """
    return tuple(width for _, width in axis_moments(psf))


def axis_moments(psf: np.ndarray) -> list[tuple[float, float]]:
    """Return, per axis, the PSF centroid's offset from its origin (``n // 2``) and its width.

    Parameters
    ----------
    psf : array_like
        Non-negative PSF, 1D to 3D.

    Returns
    -------
    list of (float, float)
        ``(centroid - n // 2, rms_width)`` per axis, in voxels.

    Examples
    --------
    >>> psf = np.zeros((1, 9)); psf[0, 6] = 1.0  # a point 2 voxels right of the origin
    >>> axis_moments(psf)
    [(0.0, 0.0), (2.0, 0.0)]
    """
    h = v.check_psf(psf, np.ndim(psf), normalize=True)
    moments = []
    for axis in range(h.ndim):
        profile = h.sum(axis=tuple(a for a in range(h.ndim) if a != axis))
        x = np.arange(profile.size)
        mean = float(profile @ x)
        width = float(np.sqrt(max(profile @ (x - mean) ** 2, 0.0)))
        moments.append((mean - profile.size // 2, width))
    return moments
