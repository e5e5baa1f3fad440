"""Scale normalisation: the numerical code runs on data whose maximum lies in ``[1, 2)``.

Richardson-Lucy is scale-equivariant, ``RL(c * g) = c * RL(g)``, and so are convolution and
correlation, but floating point has a range: images of ``1e-15`` fall under the ratio's guard
``eps`` and come back as zeros, and float32 data near ``1e36`` overflow inside an FFT, whose
sums reach the number of samples times the maximum. Every computation therefore runs on the
data multiplied by ``2**-k``, with ``2**k`` the largest power of two not above the image's
maximum, and the result is multiplied by ``2**k`` again. A power of two changes only the
binary exponent of every intermediate value, never a digit of its mantissa, so the scaled
computation is exact: results are bit-identical to the unscaled computation wherever that
one neither underflows nor overflows, and equivariant for every scale the dtype can hold.

The ratio's guard is relative to the image's maximum, so it scales with the data too: the
ratio is set to 0 where the blurred estimate is at most ``eps * max(image)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ._device_io import all_finite, array_max, is_array


def exponent(peak: float) -> int:
    """Return ``k`` with ``2**k <= peak < 2**(k + 1)``, or 0 if ``peak`` is not positive finite.

    Examples
    --------
    >>> exponent(1.0), exponent(1.9), exponent(2.0), exponent(1e-15), exponent(0.0)
    (0, 0, 1, -50, 0)
    """
    if not (peak > 0 and math.isfinite(peak)):
        return 0
    return math.frexp(peak)[1] - 1


def sum_exponent(array: np.ndarray) -> int:
    """Return :func:`exponent` of a non-negative array's sum, also where the sum overflows.

    Examples
    --------
    >>> sum_exponent(np.full(81, 1e307))  # the sum, 8.1e308 = 1.1 * 2**1026, overflows
    1026
    """
    k = exponent(float(array.max()))
    return k + exponent(float(np.ldexp(array, -k).sum()))


def _times_power_of_two(array: np.ndarray, k: int) -> None:
    """Multiply ``array`` by ``2**k`` in place: exact unless a result underflows or overflows.

    A multiplication by a normal power of two (20x faster than ``np.ldexp``); exponents
    beyond the dtype's normal range take several steps, each moving every value the same way.
    """
    limit = np.finfo(array.dtype).maxexp - 2  # 2**±limit is a normal number of the dtype
    while k:
        part = max(-limit, min(limit, k))
        array *= np.dtype(array.dtype).type(2.0**part)  # in place, also on a device array
        k -= part


def scale_in_place(array: np.ndarray, k: int) -> np.ndarray:
    """Multiply ``array`` by ``2**-k`` in place (exact unless it underflows); return it."""
    _times_power_of_two(array, -k)
    return array


def unscale_in_place(array: np.ndarray, k: int) -> np.ndarray:
    """Multiply a result by ``2**k`` in place; raise if it leaves the dtype's range.

    Raises
    ------
    ValueError
        If a value overflows the array's dtype (deconvolution sharpens peaks above the
        image's maximum, so an image near the top of the float32 range can overflow).
    """
    with np.errstate(over="ignore"):
        _times_power_of_two(array, k)
    if not all_finite(array):
        top = np.finfo(array.dtype).max
        raise ValueError(
            f"the result exceeds the {array.dtype} range (largest value {top:.3g}): "
            "deconvolution sharpens peaks above the image's maximum; rescale the image "
            "or compute in float64 (dtype='float64', NumPy backend)"
        )
    return array


def init_limit(dtype: np.dtype) -> float:
    """Largest starting estimate, in units of the scaled image (maximum in ``[1, 2)``).

    The square root of the dtype's largest value: the blurred start and the first ratio
    (image over blurred start) then both stay well inside the dtype's normal range.
    """
    return math.sqrt(float(np.finfo(dtype).max))


class Scaled(NamedTuple):
    """A Richardson-Lucy problem in scaled units.

    Attributes
    ----------
    image : ndarray
        The image times ``2**-exponent`` (the validated copy, scaled in place).
    start : ndarray or float
        The starting estimate in the same units (``image`` itself for ``init="observed"``).
    psf : ndarray
        The PSF, times a power of two when it was not normalised (Richardson-Lucy does not
        depend on the PSF's scale, only the guard does, and it is scaled alike).
    eps : float
        The guard in scaled units: the ratio is 0 where the blurred estimate is ``<= eps``.
    exponent : int
        Estimates are multiplied by ``2**exponent`` to return to the image's units.
    peak : float
        The image's maximum in the guard's scaled units (``eps`` is relative to it).
    """

    image: np.ndarray
    start: np.ndarray | float
    psf: np.ndarray
    eps: float
    exponent: int
    peak: float


def scale_problem(image: Any, start: Any, psf: np.ndarray, eps: float) -> Scaled:
    """Scale a validated problem (see the module docstring); ``eps`` is relative to the maximum.

    ``image`` and an array ``start`` must be private copies: they are scaled in place.

    Raises
    ------
    ValueError
        If the starting estimate is so large against the image that the first iteration
        would overflow the compute dtype, or so small that every ratio would be zero.
    """
    peak = array_max(image)
    k = exponent(peak)
    psf_k = sum_exponent(psf)
    if psf_k:
        psf = np.ldexp(psf, -psf_k)
    # Guard in scaled units: H f <= eps * max(image) becomes H' f' <= eps * max(image')
    # with H' = 2**-psf_k H and f' = 2**-k f.
    reference = math.ldexp(peak, -k - psf_k)  # the maximum in the guard's scaled units
    threshold = eps * reference
    psf_sum = float(psf.sum())
    limit = init_limit(image.dtype)
    scaled_start: np.ndarray | float
    if start is image:
        scaled_start = start
    elif is_array(start):
        top = array_max(start)
        _check_start(math.ldexp(top, -k), top, peak, limit, threshold, psf_sum, image.dtype)
        scaled_start = scale_in_place(start, k)
    else:
        value = math.ldexp(float(start), -k)
        _check_start(value, float(start), peak, limit, threshold, psf_sum, image.dtype)
        scaled_start = value
    scale_in_place(image, k)
    return Scaled(image, scaled_start, psf, threshold, k, reference)


def _check_start(scaled, value, peak, limit, threshold, psf_sum, dtype) -> None:
    if scaled > limit:
        raise ValueError(
            f"init reaches {value:.3g}, more than {limit:.2g} times the image's maximum "
            f"({peak:.3g}): the first iteration would overflow {np.dtype(dtype).name}; give "
            "init in the image's units (e.g. init='mean')"
        )
    if scaled * psf_sum <= threshold:
        raise ValueError(
            f"init reaches only {value:.3g}, so the blurred start is at most eps times the "
            f"image's maximum ({peak:.3g}) everywhere: every ratio would be 0 and the result "
            "all zeros; give init in the image's units (e.g. init='mean')"
        )


def scale_blur(image: np.ndarray, psf: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Scale an image (in place) and a PSF for a blur; return them and the result's exponent.

    The blurred result is multiplied back by ``2**exponent`` with :func:`unscale_in_place`.
    """
    k = exponent(array_max(image))
    psf_k = sum_exponent(psf)
    if psf_k:
        psf = np.ldexp(psf, -psf_k)
    return scale_in_place(image, k), psf, k + psf_k
