"""The noise model: background and read noise, and the expected discrepancy of a Poisson count.

Richardson-Lucy is the EM algorithm for ``g ~ Poisson(H f + b)``: the background ``b`` stays in
the denominator of the ratio, ``g / (H f + b)``, and is never subtracted from the data (which
would clip every voxel at or below it to 0, where a multiplicative update keeps it forever).
Gaussian read noise of ``sigma`` photons is handled to first order by adding ``sigma**2`` to both
data and model (Snyder et al. 1994): ``(g + sigma^2) / (H f + b + sigma^2)``.

For ``g ~ Poisson(mu)`` the discrepancy ``2 KL(g | mu) = 2 (g ln(g / mu) - g + mu)`` has the
mean ``phi(mu) = 2 (E[g ln g] - mu ln mu)``: ``1 + 1/(6 mu) + 1/(6 mu^2)`` for large ``mu``
but far below 1 where the image is dark (0.47 at ``mu = 0.1``), so the discrepancy principle's
target is ``mean_i phi(mu_i)`` rather than 1 (Bertero et al., Inverse Problems 26, 2010).
Backends evaluate ``phi`` from :data:`EXPECTED_2KL`, a table on a logarithmic grid of ``mu``
(linear interpolation in ``ln mu``; the asymptotic series above the table, ``-2 mu ln mu``
below it), so a device never needs more than one lookup per voxel.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

LOG_MIN = math.log(1e-3)  # the table's range of mu: 1e-3 ... 1e3 photons
LOG_MAX = math.log(1e3)
POINTS = 1024
LOG_STEP = (LOG_MAX - LOG_MIN) / (POINTS - 1)


def expected_2kl(mean: float) -> float:
    """Return ``E[2 KL(g | mean)]`` for ``g ~ Poisson(mean)``, summed exactly (float64).

    Examples
    --------
    >>> round(expected_2kl(10.0), 3), round(expected_2kl(1.0), 2), round(expected_2kl(0.1), 2)
    (1.019, 1.15, 0.47)
    """
    from scipy.stats import poisson

    if mean <= 0:
        return 0.0
    low = max(0, int(math.floor(mean - 15 * math.sqrt(mean))))
    counts = np.arange(low, int(math.ceil(mean + 15 * math.sqrt(mean) + 30)) + 1, dtype=float)
    mass = poisson.pmf(counts, mean)
    # The KL of each count, not E[g ln g] - mean ln mean: no cancellation at large means.
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(counts > 0, counts * np.log(counts / mean), 0.0) - counts + mean
    return 2.0 * float(np.sum(mass * kl) / np.sum(mass))


@functools.cache
def table() -> np.ndarray:
    """Return ``phi`` on the grid ``exp(LOG_MIN + i * LOG_STEP)``, float32 (computed once)."""
    grid = np.exp(LOG_MIN + LOG_STEP * np.arange(POINTS))
    return np.array([expected_2kl(float(m)) for m in grid], dtype=np.float32)


def expected_2kl_approx(mean: np.ndarray) -> np.ndarray:
    """Return ``phi(mean)`` element-wise, the way the backends evaluate it (float64).

    Within 1e-4 of :func:`expected_2kl` for every mean (tested).
    """
    mean = np.asarray(mean, dtype=np.float64)
    out = np.empty_like(mean)
    log = np.log(np.maximum(mean, 1e-300))
    low, high = log < LOG_MIN, log > LOG_MAX
    middle = ~(low | high)
    out[middle] = np.interp(log[middle], LOG_MIN + LOG_STEP * np.arange(POINTS), table())
    big = mean[high]
    out[high] = 1.0 + 1.0 / (6.0 * big) + 1.0 / (6.0 * big * big)
    small = mean[low]
    out[low] = np.where(small > 0, -2.0 * small * log[low], 0.0)
    return out


def check_background(background: Any, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """Return the background as a float (0 for None) or a private array of ``shape``, ``dtype``.

    Raises
    ------
    TypeError
        If it is neither a number nor an array.
    ValueError
        If it is negative, not finite, or an array of another shape.
    """
    if background is None:
        return 0.0
    if isinstance(background, numbers.Real) and not isinstance(background, bool):
        value = float(background)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"background must be a finite number >= 0, got {background}")
        return value
    if not isinstance(background, (np.ndarray, list, tuple)):
        raise TypeError(f"background must be a number or an array, got {type(background).__name__}")
    arr = np.asarray(background)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"background must be real-valued, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"background must have the image's shape {tuple(shape)}, got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("background must be finite and >= 0 everywhere")
    return np.array(arr, dtype=dtype, order="C", copy=True)


# Set (in the thread that runs it) for a call on one piece of a larger image (a dask chunk, a
# stack's volume): a piece may be dark where the whole image is not.
_PIECE = contextvars.ContextVar("gpu_deconv_piece", default=False)


@contextlib.contextmanager
def piece_of_a_larger_image() -> Iterator[None]:
    """Inside, :func:`warn_without_light` is silent: the call deconvolves one piece."""
    token = _PIECE.set(True)
    try:
        yield
    finally:
        _PIECE.reset(token)


def warn_without_light(image: np.ndarray, background: Any, shift: float, stacklevel: int) -> None:
    """Warn if ``background`` is at or above every value of ``image`` (which holds ``shift``).

    The model ``H f + b`` then leaves no light for the estimate, which goes to about 0: most
    often a background in other units (ADU with the offset, for data in photons). Silent for
    a piece of a larger image (see :func:`piece_of_a_larger_image`).
    """
    if _PIECE.get():
        return
    from ._device_io import array_max, is_device_array, statistics

    if isinstance(background, float):
        if background == 0 or image.size == 0:
            return
        peak = array_max(image) - shift
        if peak > background:
            return
        given = f"the background ({background:g}) is at or above every value of the image"
        given += f" (at most {peak:g})"
    else:
        if is_device_array(image):
            if statistics(image, other=background, shift=shift).above:
                return
        elif (image > (background + image.dtype.type(shift) if shift else background)).any():
            return
        given = "the background map is at or above the image everywhere"
    warnings.warn(
        f"{given}: no light is left for the estimate, which will be about 0; is the background"
        " in the image's units?",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def check_read_noise(read_noise: Any) -> float:
    """Return the read noise's standard deviation (photons) as a float >= 0."""
    if isinstance(read_noise, bool) or not isinstance(read_noise, numbers.Real):
        raise TypeError(f"read_noise must be a number of photons, got {type(read_noise).__name__}")
    value = float(read_noise)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"read_noise must be a finite number >= 0, got {read_noise}")
    return value
