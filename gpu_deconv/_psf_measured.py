"""Measured (bead) PSFs: background removal, centring, cropping, resampling to the image grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.ndimage as ndi

from . import _validation as v
from ._psf_optics import grid_spacing

CENTROID_LEVEL = 0.25  # of the peak: the voxels whose centroid is the PSF's centre


def remove_background(psf: np.ndarray, level: float | None = None) -> np.ndarray:
    """Return a measured PSF less its background, clipped at 0.

    Parameters
    ----------
    psf : array_like
        Measured PSF (a bead image), 1 to 3 axes, finite.
    level : float, optional
        Background to subtract; by default the median of the voxels on the array's faces
        (far from the bead, where only background and noise remain).

    Returns
    -------
    ndarray
        float64 array of the same shape, >= 0.

    Raises
    ------
    TypeError
        If ``psf`` is not a real numeric array.
    ValueError
        If it is empty or holds NaN/inf, or nothing is left above the background.

    Examples
    --------
    >>> from gpu_deconv.psf import remove_background
    >>> bead = np.full((5, 5), 10.0); bead[2, 2] = 110.0
    >>> float(remove_background(bead).max()), float(remove_background(bead).min())
    (100.0, 0.0)
    """
    data = _measured(psf)
    if level is None:
        faces = np.concatenate(
            [np.take(data, index, axis=a).ravel() for a in range(data.ndim) for index in (0, -1)]
        )
        level = float(np.median(faces))
    out = np.maximum(data - float(level), 0.0)
    if not out.max() > 0:
        raise ValueError(f"nothing is left of the PSF above the background {level:g}")
    return out


def center_psf(psf: np.ndarray) -> np.ndarray:
    """Return a measured PSF shifted so that its centre lies exactly at index ``n // 2``.

    The centre is the intensity centroid of the connected voxels around the peak that reach
    ``CENTROID_LEVEL`` of it, on a lightly smoothed copy (single hot voxels do not win); the
    shift is a cubic-spline interpolation (sub-voxel), its round-off
    negatives clipped to 0. Remove the background first (:func:`remove_background`).

    Parameters
    ----------
    psf : array_like
        Non-negative PSF, 1 to 3 axes.

    Returns
    -------
    ndarray
        float64 array of the same shape.

    Raises
    ------
    TypeError, ValueError
        As :func:`remove_background`, or if ``psf`` is all zeros or negative.

    Examples
    --------
    >>> from gpu_deconv.psf import center_psf, gaussian_psf
    >>> off = np.roll(gaussian_psf((15, 15), 1.5), (2, -3), axis=(0, 1))
    >>> tuple(map(int, np.unravel_index(center_psf(off).argmax(), off.shape)))
    (7, 7)
    """
    data = v.check_psf(_measured(psf), np.ndim(psf), normalize=False)
    smooth = ndi.gaussian_filter(data, 1.0)
    peak = np.unravel_index(np.argmax(smooth), data.shape)
    # The level set of a symmetric PSF is symmetric about its centre: its centroid is the
    # centre, wherever the voxel grid falls. Only the bright blob around the peak counts.
    labels, _ = ndi.label(smooth >= CENTROID_LEVEL * smooth[peak])
    centre = np.array(ndi.center_of_mass(data, labels, labels[peak]))
    shift = np.array([n // 2 for n in data.shape]) - centre
    return np.maximum(ndi.shift(data, shift, order=3, mode="constant", cval=0.0), 0.0)


def crop_psf(psf: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Return the ``shape`` window of a PSF about its origin ``n // 2`` (kept at ``m // 2``).

    Parameters
    ----------
    psf : array_like
        PSF, 1 to 3 axes.
    shape : sequence of int
        Window shape, one positive length per axis, none longer than the PSF's.

    Returns
    -------
    ndarray
        A copy of the window.

    Raises
    ------
    ValueError
        If ``shape`` has another number of axes, or a length not in ``1..psf.shape``.

    Examples
    --------
    >>> from gpu_deconv.psf import crop_psf, gaussian_psf
    >>> crop_psf(gaussian_psf((15, 21), 2.0), (9, 9)).shape
    (9, 9)
    """
    data = np.asarray(psf)
    shape = tuple(int(n) for n in shape)
    if len(shape) != data.ndim or any(not 1 <= m <= n for m, n in zip(shape, data.shape)):
        raise ValueError(f"shape must have 1 to {data.shape} voxels per axis, got {shape}")
    return data[
        tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m) for m, n in zip(shape, data.shape))
    ].copy()


def resample_psf(
    psf: np.ndarray,
    spacing: float | Sequence[float],
    target_spacing: float | Sequence[float],
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Return a PSF sampled at ``spacing`` resampled to the image's ``target_spacing``.

    The origin ``n // 2`` maps onto the output's ``m // 2``. Axes made coarser are first
    smoothed by a Gaussian of variance ``(f**2 - 1) / 12`` input voxels (``f`` the ratio of
    spacings), so that the result has the second moment a voxel of the target size records
    (box widths add in variance); values in between are interpolated linearly.

    Parameters
    ----------
    psf : array_like
        Non-negative PSF, 1 to 3 axes, centred at ``n // 2`` (see :func:`center_psf`).
    spacing : float or sequence of float
        Its voxel size, one for all axes or one per axis (any unit, as ``target_spacing``).
    target_spacing : float or sequence of float
        The image's voxel size.
    shape : sequence of int, optional
        Output shape; by default the odd shape covering the same extent.

    Returns
    -------
    ndarray
        float64 PSF, normalised to sum 1.

    Raises
    ------
    TypeError, ValueError
        If ``psf`` is not a valid PSF, or a spacing is not positive and finite, or their
        numbers and the PSF's axes differ.

    Examples
    --------
    >>> from gpu_deconv.psf import gaussian_psf, resample_psf, rms_width
    >>> fine = gaussian_psf((61, 61), 6.0)  # sigma 0.3 um at 0.05 um
    >>> coarse = resample_psf(fine, 0.05, 0.1)
    >>> coarse.shape, [round(w * 0.1, 2) for w in rms_width(coarse)]
    ((31, 31), [0.3, 0.3])
    """
    data = v.check_psf(psf, np.ndim(psf), normalize=True)
    source = np.asarray(grid_spacing(data.shape, spacing))
    target = np.asarray(grid_spacing(data.shape, target_spacing))
    factor = target / source
    if shape is None:
        shape = tuple(
            2 * int(math.floor((n // 2) / f + 1e-9)) + 1 for n, f in zip(data.shape, factor)
        )
    shape = tuple(int(n) for n in shape)
    if len(shape) != data.ndim or any(n < 1 for n in shape):
        raise ValueError(f"shape must have {data.ndim} positive lengths, got {shape}")
    sigma = np.sqrt(np.maximum(factor**2 - 1.0, 0.0) / 12.0)
    smooth = ndi.gaussian_filter(data, sigma, mode="constant") if sigma.any() else data
    coordinates = np.meshgrid(
        *(n // 2 + (np.arange(m) - m // 2) * f for n, m, f in zip(data.shape, shape, factor)),
        indexing="ij",
    )
    out = ndi.map_coordinates(smooth, coordinates, order=1, mode="constant", cval=0.0)
    return v.check_psf(out, out.ndim, normalize=True)


def bead_psf(
    measured: np.ndarray,
    *,
    shape: Sequence[int] | None = None,
    background: float | None = None,
    spacing: float | Sequence[float] | None = None,
    target_spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Return a deconvolution PSF from a bead image: background removed, centred, cropped.

    :func:`remove_background`, :func:`center_psf`, then (with both spacings)
    :func:`resample_psf` to the image's voxel size, then :func:`crop_psf` to ``shape``;
    normalised to sum 1.

    Parameters
    ----------
    measured : array_like
        The bead image, 1 to 3 axes.
    shape : sequence of int, optional
        Crop to this shape (after resampling); by default the whole array.
    background : float, optional
        As ``level`` of :func:`remove_background`.
    spacing, target_spacing : float or sequence of float, optional
        The bead image's and the image's voxel sizes; give both to resample, or neither.

    Returns
    -------
    ndarray
        The PSF (float64, sum 1), of ``shape`` if given, else of the bead image's (or the
        resampled) shape.

    Raises
    ------
    TypeError, ValueError
        As the steps, or if only one of the spacings is given.

    Examples
    --------
    >>> from gpu_deconv.psf import bead_psf, gaussian_psf
    >>> bead = 100 * np.roll(gaussian_psf((31, 31), 2.0), 3, axis=1) + 5.0
    >>> h = bead_psf(bead, shape=(15, 15))
    >>> h.shape, tuple(map(int, np.unravel_index(h.argmax(), h.shape)))
    ((15, 15), (7, 7))
    """
    if (spacing is None) != (target_spacing is None):
        raise ValueError("give both spacing and target_spacing to resample, or neither")
    psf = center_psf(remove_background(measured, background))
    if spacing is not None and target_spacing is not None:
        psf = resample_psf(psf, spacing, target_spacing)
    if shape is not None:
        psf = crop_psf(psf, shape)
    return v.check_psf(psf, psf.ndim, normalize=True)


def _measured(psf: np.ndarray) -> np.ndarray:
    data = np.asarray(psf)
    if data.dtype.kind not in "uif" or np.ma.isMaskedArray(psf):
        raise TypeError(f"psf must be a real numeric array, got dtype {data.dtype}")
    if data.size == 0 or not 1 <= data.ndim <= v.MAX_NDIM:
        raise ValueError(f"psf must be a non-empty 1D to 3D array, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("psf holds NaN or inf")
    return data.astype(np.float64)
