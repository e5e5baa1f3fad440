"""Image quality metrics: MSE, PSNR and SSIM, with the same values as scikit-image."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi


def _pair(reference: Any, image: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference)
    img = np.asarray(image)
    for name, arr in (("reference", ref), ("image", img)):
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
        if arr.size == 0:
            raise ValueError(f"{name} is empty")
    if ref.shape != img.shape:
        raise ValueError(f"reference and image shapes differ: {ref.shape} vs {img.shape}")
    return ref.astype(np.float64), img.astype(np.float64)


def _range(ref: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        data_range = float(ref.max() - ref.min())
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be positive; got {data_range} (constant reference?)")
    return float(data_range)


def mse(reference: Any, image: Any) -> float:
    """Mean squared error between two arrays of equal shape.

    Parameters
    ----------
    reference, image : array_like
        Real arrays of the same shape.

    Returns
    -------
    float
        ``mean((reference - image) ** 2)`` computed in float64; equals
        ``skimage.metrics.mean_squared_error``.

    Raises
    ------
    TypeError
        If an input is not real numeric.
    ValueError
        If the shapes differ or an input is empty.
    """
    ref, img = _pair(reference, image)
    return float(np.mean((ref - img) ** 2))


def psnr(reference: Any, image: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB.

    Parameters
    ----------
    reference, image : array_like
        Real arrays of the same shape.
    data_range : float, optional
        Span of possible values; by default ``reference.max() - reference.min()``.

    Returns
    -------
    float
        ``10 log10(data_range**2 / mse)``; ``inf`` for identical images. Equals
        ``skimage.metrics.peak_signal_noise_ratio`` with the same ``data_range``.

    Raises
    ------
    TypeError, ValueError
        As in :func:`mse`; ``ValueError`` also for a non-positive ``data_range``.
    """
    ref, img = _pair(reference, image)
    peak = _range(ref, data_range)
    err = float(np.mean((ref - img) ** 2))
    if err == 0:
        return float("inf")
    return float(10 * np.log10(peak**2 / err))


def ssim(reference: Any, image: Any, data_range: float | None = None, win_size: int = 7) -> float:
    """Mean structural similarity index.

    Uses a ``win_size``-wide uniform window, ``K1=0.01``, ``K2=0.03`` and sample covariances,
    the defaults of ``skimage.metrics.structural_similarity``, whose value this equals.

    Parameters
    ----------
    reference, image : array_like
        Real arrays of the same shape, each axis at least ``win_size`` long.
    data_range : float, optional
        Span of possible values; by default ``reference.max() - reference.min()``.
    win_size : int, optional
        Odd window side, by default 7.

    Returns
    -------
    float
        Mean SSIM over the image, window borders excluded; 1 for identical images.

    Raises
    ------
    TypeError, ValueError
        As in :func:`psnr`; ``ValueError`` also if ``win_size`` is even, < 3 or larger than
        an axis.
    """
    ref, img = _pair(reference, image)
    peak = _range(ref, data_range)
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
    if min(ref.shape) < win_size:
        raise ValueError(f"every axis must be >= win_size={win_size}, got shape {ref.shape}")
    n = win_size**ref.ndim
    cov_norm = n / (n - 1)  # sample covariance, as scikit-image

    def mean(a: np.ndarray) -> np.ndarray:
        return ndi.uniform_filter(a, size=win_size, mode="reflect")

    ux, uy = mean(ref), mean(img)
    vx = cov_norm * (mean(ref * ref) - ux * ux)
    vy = cov_norm * (mean(img * img) - uy * uy)
    vxy = cov_norm * (mean(ref * img) - ux * uy)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return float(s[tuple(slice(pad, -pad) for _ in range(s.ndim))].mean())
