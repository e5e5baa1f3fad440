"""When float32 FFTs cannot be trusted: a warning for images with a high dynamic range.

An FFT mixes every voxel with every other, so its round-off error is absolute: about
``5e-8`` times the image's maximum in every voxel of a float32 Richardson-Lucy result
(measured, docs/verification.md: relative RMS error in a region ``R`` times dimmer
than the maximum of 5e-4 at ``R = 1e4``, 5e-3 at ``1e5``, 2e-2 at ``3e5``, 7e-2 at ``1e6``,
about 1 from ``1e7``, where dim regions become zeros). The spatial and separable methods
add positive terms only, so their error stays relative to each voxel's own value (2e-7),
and float64 FFTs have the same absolute error times ``2**-29``.

:func:`check_dynamic_range` warns when a float32 FFT run would leave a relative error above
about 0.5% in a noticeable part of the image: at least :data:`DIM_FRACTION` of its voxels
are positive but below ``1 / DYNAMIC_RANGE_LIMIT`` of its maximum. Integer images never
warn below that range (16-bit data span at most 65535). The result is computed anyway;
warning (not switching to float64 silently) keeps the dtype, memory and time the caller
asked for, and the OpenCL backend has no float64 to switch to.
"""

from __future__ import annotations

import warnings

import numpy as np

# Ratio of the maximum to a dim voxel beyond which float32 FFT errors exceed about 0.5%.
DYNAMIC_RANGE_LIMIT = 1e5
# Fraction of the voxels that must be that dim for the warning (a few isolated voxels are
# not a region).
DIM_FRACTION = 0.01
# Relative round-off of a float32 FFT Richardson-Lucy result, times the image's maximum.
FLOAT32_FFT_ERROR = 5e-8


class PrecisionWarning(UserWarning):
    """The result is computed, but float32 round-off makes part of it inaccurate."""


# Below this fraction of the image's maximum a float32 FFT blur is round-off (about 1e-7 of
# the maximum, with margin), and a ratio above NOISE_RATIO_LIMIT (backends/_base.py) there is
# set to 0.
FLOAT32_FFT_NOISE = 1e-6


def round_off_level(method: str, dtype: np.dtype) -> float:
    """Return the blur's round-off level relative to the image's maximum (0: exact enough).

    Where the exact blurred estimate is 0 and the data are not (a PSF whose mass lies off
    its centre, a ring, with zero edges or sparse data), a float32 FFT leaves its round-off
    as the denominator and the ratio explodes (54x the float64 result's RMS in 10
    iterations), where float64 sets it to 0 with ``eps``. A ratio above
    :data:`~gpu_deconv.backends._base.NOISE_RATIO_LIMIT` over a model below this level is
    set to 0 too; dim regions, whose ratio is near 1, keep theirs.
    """
    if method != "fft" or np.dtype(dtype) != np.float32:
        return 0.0
    return FLOAT32_FFT_NOISE


def dim_fraction(image: np.ndarray, limit: float = DYNAMIC_RANGE_LIMIT) -> float:
    """Return the fraction of voxels that are positive but below ``image.max() / limit``."""
    from ._device_io import array_max, is_device_array, statistics

    peak = array_max(image)
    if not peak > 0:
        return 0.0
    if is_device_array(image):
        return statistics(image, below=peak / limit).dim / image.size
    below = np.count_nonzero(image < peak / limit) - np.count_nonzero(image <= 0)
    return below / image.size


def check_dynamic_range(image: np.ndarray, method: str, stacklevel: int) -> None:
    """Warn if a float32 FFT of ``image`` would leave dim regions inaccurate (module docstring).

    ``method`` is the method the blur operator actually uses; ``stacklevel`` counts the
    frames between the user's call and the caller of this function.
    """
    if method != "fft" or image.dtype != np.float32:
        return
    fraction = dim_fraction(image)
    if fraction < DIM_FRACTION:
        return
    warnings.warn(
        f"{fraction:.0%} of the image's voxels are positive but below "
        f"1/{DYNAMIC_RANGE_LIMIT:.0e} of its maximum: float32 FFTs leave errors of about "
        f"{FLOAT32_FFT_ERROR:.0e} of the maximum in every voxel, over 0.5% of those voxels' "
        "values (all of it from 1e8); use method='spatial' or 'separable', or "
        "dtype='float64' on the NumPy backend",
        PrecisionWarning,
        stacklevel=stacklevel + 1,
    )
