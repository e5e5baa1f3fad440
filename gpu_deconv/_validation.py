"""Input validation at the public boundary.

Every public entry point funnels its arguments through these helpers, so that bad input raises
one specific ``ValueError`` or ``TypeError`` naming the argument, and the numerical code below
can assume clean, finite, correctly typed arrays.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

BOUNDARIES = ("reflect", "nearest", "mirror", "wrap", "constant")
# Modes where the estimate lives on a larger domain than the image (deconvolution only).
ESTIMATED_BOUNDARIES = ("estimate",)
MARGINS = ("full", "half")
ACCELERATIONS = ("shb", "biggs")
REGULARIZERS = ("identity", "laplacian")
METHODS = ("auto", "fft", "separable", "spatial")
INIT_MODES = ("observed", "mean")
DTYPES = ("float32", "float64")
MAX_NDIM = 3
PSF_NEGATIVE_RTOL = 1e-6  # negatives down to -1e-6 * max(psf) count as round-off


def _choice(value: Any, name: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
    return value


def check_boundary(boundary: Any, estimate: bool = False) -> str:
    """Return ``boundary`` if it is one of :data:`BOUNDARIES`, else raise ``ValueError``.

    With ``estimate=True`` (deconvolution) :data:`ESTIMATED_BOUNDARIES` are allowed too.
    """
    return _choice(boundary, "boundary", BOUNDARIES + (ESTIMATED_BOUNDARIES if estimate else ()))


def check_method(method: Any) -> str:
    """Return ``method`` if it is one of :data:`METHODS`, else raise ``ValueError``."""
    return _choice(method, "method", METHODS)


def resolve_dtype(
    dtype: Any, image_dtype: np.dtype, supported: tuple[str, ...] = DTYPES
) -> np.dtype:
    """Return the floating dtype the computation runs in.

    ``None`` picks float64 for float64 images where the backend ``supported`` it, and float32
    otherwise (integer microscopy data is at most 16 bit, so float32 holds it exactly).
    """
    if dtype is None:
        wide = image_dtype == np.float64 and "float64" in supported
        return np.dtype(np.float64) if wide else np.dtype(np.float32)
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if resolved.name not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {resolved.name}")
    if resolved.name not in supported:
        raise ValueError(
            f"dtype {resolved.name} is not supported by this backend; use {', '.join(supported)}"
        )
    return resolved


def _as_real_array(array: Any, name: str) -> np.ndarray:
    if isinstance(array, np.ma.MaskedArray):
        # np.isfinite ignores masked entries and the raw data would be used: refuse.
        raise TypeError(
            f"{name} is a numpy masked array, whose mask Richardson-Lucy cannot honour; pass "
            f"{name}.filled(value) to choose the masked voxels' values, or {name}.data"
        )
    if isinstance(array, np.ndarray):
        arr = array
    else:
        try:
            arr = np.asarray(array)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array, got {type(array).__name__}") from exc
    if arr.dtype == np.bool_:
        raise TypeError(f"{name} must have a real numeric dtype, got bool")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real-valued, got complex dtype {arr.dtype}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.ndim == 0 or arr.ndim > MAX_NDIM:
        raise ValueError(f"{name} must be 1D, 2D or 3D, got {arr.ndim} dimensions")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _cast(arr: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """Return a C-contiguous copy of ``arr`` in ``dtype``; raise if values leave its range.

    The finite check runs before the cast: float64 values beyond float32 would become inf,
    and a float64 array whose largest magnitude is below float32's normal range would become
    (nearly) all zeros.
    """
    if arr.dtype.kind == "f" and np.dtype(dtype).itemsize < arr.dtype.itemsize:
        info = np.finfo(dtype)
        # Compared as Python floats: numpy 2 would cast the peak to info.max's float32.
        largest, tiny = float(info.max), float(info.tiny)
        peak = max(float(arr.max()), -float(arr.min()))  # no |arr| temporary
        if peak > largest:
            raise ValueError(
                f"{name} has values up to {peak:.3g}, beyond the {info.dtype} range "
                f"(largest {largest:.3g}); compute in float64 (dtype='float64', NumPy "
                f"backend) or rescale {name}"
            )
        if 0 < peak < tiny:
            raise ValueError(
                f"{name} has values only up to {peak:.3g}, below the {info.dtype} range "
                f"(smallest normal {tiny:.3g}); compute in float64 (dtype='float64', "
                f"NumPy backend) or rescale {name}"
            )
    return np.array(arr, dtype=dtype, order="C", copy=True)


def check_image(
    image: Any,
    dtype: Any,
    stacklevel: int,
    name: str = "image",
    supported: tuple[str, ...] = DTYPES,
    shift: float = 0.0,
    nonnegative: bool = True,
) -> np.ndarray:
    """Validate an image and return a C-contiguous copy in the compute dtype.

    ``dtype`` is resolved by :func:`resolve_dtype` against the backend's ``supported`` dtypes.
    ``shift`` is added first (the read noise's variance). Negative values are then clipped to
    0 with a ``UserWarning`` (Richardson-Lucy assumes non-negative photon counts), unless
    ``nonnegative=False`` (linear filters keep them);
    ``stacklevel`` makes the warning point at the user's call.
    """
    arr = _as_real_array(image, name)
    out = _cast(arr, resolve_dtype(dtype, arr.dtype, supported), name)
    check_magnitude(float(out.max()), float(out.min()), shift, out.dtype, name)
    if shift:
        out += out.dtype.type(shift)
    if nonnegative and (out < 0).any():
        below = f" below -read_noise**2 = {-shift:g}" if shift else ""
        warnings.warn(
            f"{name} has negative values{below} (min {out.min() - shift:g}); they are clipped to 0",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
        np.maximum(out, 0, out=out)
    return out


def check_magnitude(top: float, bottom: float, shift: float, dtype: Any, name: str) -> None:
    """Raise if an image's values are subnormal, or if the read noise's variance swamps them.

    ``top`` and ``bottom`` are the image's largest and smallest values before ``shift`` (the
    read noise's variance) is added in ``dtype``.
    """
    peak, tiny = max(top, -bottom), float(np.finfo(dtype).tiny)
    if 0 < peak < tiny:
        raise ValueError(
            f"{name} has values only up to {peak:.3g}, below the {np.dtype(dtype).name} normal "
            f"range (smallest normal {tiny:.3g}): rescale {name}"
        )
    kind = np.dtype(dtype).type
    with np.errstate(over="ignore"):
        shifted = float(kind(top) + kind(shift)) if shift else top
    if shift and top > 0 and not (math.isfinite(shifted) and shifted - shift > 0):
        raise ValueError(
            f"read_noise**2 = {shift:g} swamps {name} (largest value {top:g}) in "
            f"{np.dtype(dtype).name}: give read_noise in the image's photons"
        )


def check_psf(psf: Any, ndim: int, normalize: bool) -> np.ndarray:
    """Validate a PSF for an image of ``ndim`` axes; return it as float64 (normalised if asked).

    The PSF may be larger than the image (a measured PSF often has more planes than a thin
    stack). It stays float64 on the host: operators cast it (or its OTF) to the compute dtype.
    Its sum may exceed float64 (normalisation divides by a power of two first; the callers
    scale an unnormalised PSF, see :mod:`gpu_deconv._scaling`).
    """
    arr = _as_real_array(psf, "psf")
    if arr.ndim != ndim:
        raise ValueError(
            f"psf must have the same number of dimensions as image: "
            f"psf.ndim={arr.ndim}, image.ndim={ndim}"
        )
    out = np.array(arr, dtype=np.float64, order="C", copy=True)
    peak = out.max()
    # Measured PSFs carry round-off negatives from background subtraction (about -1e-20):
    # those are zeroed; anything larger is a broken PSF.
    if out.min() < -PSF_NEGATIVE_RTOL * max(peak, 0.0) or (peak <= 0 and out.min() < 0):
        raise ValueError(f"psf has negative values (min {out.min():g}); a PSF must be >= 0")
    np.maximum(out, 0, out=out)
    if peak <= 0:
        raise ValueError("psf is all zeros; a PSF must have a positive sum")
    if normalize:
        # Divided by its largest power of two first (exact), the sum cannot overflow.
        k = math.frexp(float(peak))[1] - 1
        np.ldexp(out, -k, out=out)
        out /= out.sum()
    return out


def check_iterations(iterations: Any) -> int:
    """Return ``iterations`` as an ``int`` >= 0."""
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral):
        raise TypeError(f"iterations must be an integer, got {type(iterations).__name__}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    return int(iterations)


def check_eps(eps: Any) -> float:
    """Return ``eps`` as a finite float >= 0."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    value = float(eps)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return value


def check_snapshots(snapshots: Any, iterations: int) -> tuple[int, ...]:
    """Return the sorted, unique snapshot iteration counts, each in ``[0, iterations]``."""
    if snapshots is None:
        return ()
    if isinstance(snapshots, (str, bytes)) or not isinstance(snapshots, Iterable):
        raise TypeError("snapshots must be a sequence of iteration counts, e.g. [10, 20, 40]")
    values = list(snapshots)
    if not values:
        raise ValueError("snapshots is empty; pass None for no snapshots")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"snapshots must hold integers, got {value!r}")
        if not 0 <= int(value) <= iterations:
            raise ValueError(f"snapshots must lie in [0, iterations={iterations}], got {value}")
    return tuple(sorted({int(v) for v in values}))


def check_init_number(init: numbers.Real) -> float:
    """Return a constant starting estimate as a float if it is positive and finite."""
    value = float(init)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"init must be a positive finite number, got {init}")
    return value


def default_init(boundary: str) -> str:
    """Return the start ``init=None`` means: the observed image, or flat if edges are estimated.

    The observed image says nothing about the margin ``boundary="estimate"`` adds, so that
    mode starts flat (as deconwolf and clij2-fft do).
    """
    return "mean" if boundary in ESTIMATED_BOUNDARIES else "observed"


# The observed start with read noise is raised to this fraction of the data's mean where lower.
OBSERVED_FLOOR = 0.01


def raised_observed(data: np.ndarray, mean: float | None = None) -> np.ndarray:
    """Raise ``data`` (>= 0, written in place) to ``OBSERVED_FLOOR`` of ``mean`` where lower.

    ``mean`` is the data's own by default; a piece of a larger image takes the whole's.
    """
    mean = float(data.mean()) if mean is None else mean
    return np.maximum(data, data.dtype.type(OBSERVED_FLOOR * mean), out=data)


def initial_estimate(
    init: Any,
    image: np.ndarray,
    mask: np.ndarray | None = None,
    background: Any = 0.0,
    shift: float = 0.0,
) -> np.ndarray | float:
    """Return the starting estimate: an array of the image's shape and dtype, or a scalar.

    ``"observed"`` gives the (already clipped) image itself, ``"mean"`` (over the voxels
    ``mask`` keeps, if given) and numbers give a scalar that the backend broadcasts on the
    device, so no extra transfer is needed. With a background ``b``, ``"mean"`` is the mean of
    ``image - b`` (the object's share of the light), or 1% of the image's mean where the
    background accounts for all of it. ``shift`` is what the image holds beyond the data (the
    read noise's variance): both starts leave it out. Then ``"observed"`` is a new array,
    raised to 1% of its mean where it is lower: the shift keeps slightly negative data, which
    would otherwise start, and so stay, at 0.
    """
    if isinstance(init, str):
        _choice(init, "init", INIT_MODES)
        if init == "observed":
            if not shift:
                return image
            return raised_observed(np.maximum(image - image.dtype.type(shift), 0))
        mean = float(image.mean() if mask is None else image[mask].mean()) - shift
        if mean <= 0:
            raise ValueError(
                "init='mean' (also the default start of boundary='estimate') needs an image "
                "with a positive mean; this one has no light"
            )
        if isinstance(background, np.ndarray):
            light = mean - float(background.mean() if mask is None else background[mask].mean())
        else:
            light = mean - float(background)
        return light if light > 0.01 * mean else 0.01 * mean
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return check_init_number(init)
    if isinstance(init, np.ndarray) or isinstance(init, (list, tuple)):
        arr = _as_real_array(init, "init")
        if arr.shape != image.shape:
            raise ValueError(f"init must have the image's shape {image.shape}, got {arr.shape}")
        if (arr < 0).any():
            raise ValueError("init has negative values; the starting estimate must be >= 0")
        if not arr.any():
            raise ValueError("init is all zeros; the estimate would stay 0 (give positive values)")
        return _cast(arr, image.dtype, "init")
    raise TypeError(f"init must be 'observed', 'mean', a positive number or an array, got {init!r}")


def check_device(device: Any) -> str | None:
    """Return ``device`` if it is None or a device name (str), else raise ``TypeError``."""
    if device is None or isinstance(device, str):
        return device
    hint = f"; for the k-th device pass device='#{device}'" if isinstance(device, int) else ""
    raise TypeError(
        f"device must be a device name substring (str) or None, got "
        f"{type(device).__name__} {device!r}{hint}"
    )


def check_threads(threads: Any) -> int | None:
    """Return ``threads`` if it is None or a positive int, else raise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads must be a positive int or None, got {threads!r}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return int(threads)


def format_bytes(count: float) -> str:
    """Return a byte count for messages, in the largest binary unit that keeps it >= 1.

    Examples
    --------
    >>> format_bytes(1), format_bytes(1536), format_bytes(3 * 2**30)
    ('1 byte', '1.5 KiB', '3 GiB')
    """
    if count < 1024:
        return f"{count:.0f} byte" + ("" if count == 1 else "s")
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024 or unit == "TiB":
            break
    return f"{count:.3g} {unit}"


def check_max_memory(max_memory: Any) -> int | None:
    """Return ``max_memory`` (bytes) if it is None or a positive int, else raise."""
    if max_memory is None:
        return None
    if isinstance(max_memory, bool) or not isinstance(max_memory, numbers.Integral):
        raise TypeError(f"max_memory must be an int number of bytes, got {max_memory!r}")
    if max_memory <= 0:
        raise ValueError(f"max_memory must be positive, got {max_memory}")
    return int(max_memory)


def check_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """Return ``mask`` as a C-contiguous bool array of ``shape`` (True: observed), or None.

    Integer or float masks must hold only 0 and 1; a mask must keep at least one voxel.
    """
    if mask is None:
        return None
    try:
        arr = np.asarray(mask)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"mask must be a boolean array, got {type(mask).__name__}") from exc
    if arr.dtype != np.bool_:
        numeric = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        if not numeric or not np.isin(arr, (0, 1)).all():
            raise TypeError(f"mask must be boolean (or 0/1), got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"mask must have the image's shape {tuple(shape)}, got {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=bool)
    if not out.any():
        raise ValueError("mask excludes every voxel; at least one must be observed (True)")
    return out


def margins_for(
    boundary: str, margin: Any, psf_shape: tuple[int, ...]
) -> tuple[tuple[int, int], ...]:
    """Return :func:`check_margin` for ``boundary="estimate"``; ``()`` for the other modes.

    Raises ``ValueError`` if another mode is given a margin other than the default.
    """
    if boundary in ESTIMATED_BOUNDARIES:
        return check_margin(margin, psf_shape)
    if not (isinstance(margin, str) and margin == "full"):
        raise ValueError(f"margin applies to boundary='estimate' only, not {boundary!r}")
    return ()


def check_margin(margin: Any, psf_shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Return the estimate's margin (voxels before, after) per axis for ``boundary="estimate"``.

    ``"full"``: every voxel the PSF carries onto the image (``k - 1`` per axis in all, as
    deconwolf's default); ``"half"``: half of that on each side; an int or one int per axis:
    that many voxels on each side, capped at the full reach (beyond it nothing is observable).
    """
    from .backends._base import full_margin

    full = full_margin(tuple(psf_shape))
    if isinstance(margin, str):
        _choice(margin, "margin", MARGINS)
        if margin == "full":
            return full
        return tuple(((lo + 1) // 2, (hi + 1) // 2) for lo, hi in full)
    values = (margin,) * len(psf_shape) if isinstance(margin, numbers.Integral) else margin
    try:
        lengths = tuple(values)
    except TypeError as exc:
        raise TypeError(
            f"margin must be 'full', 'half', an int or {len(psf_shape)} ints, got {margin!r}"
        ) from exc
    if len(lengths) != len(psf_shape) or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in lengths
    ):
        raise ValueError(f"margin must hold {len(psf_shape)} integers, got {margin!r}")
    if any(n < 0 for n in lengths):
        raise ValueError(f"margin values must be >= 0, got {lengths}")
    return tuple((min(int(n), lo), min(int(n), hi)) for n, (lo, hi) in zip(lengths, full))


def check_acceleration(acceleration: Any) -> str | None:
    """Return ``acceleration`` if it is None or one of :data:`ACCELERATIONS`, else raise."""
    if acceleration is None or acceleration in ACCELERATIONS:
        return acceleration
    allowed = ", ".join(ACCELERATIONS)
    raise ValueError(f"unknown acceleration {acceleration!r}; allowed: None (plain RL), {allowed}")


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a positive finite real number, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return number


def check_regularizer(regularizer: Any) -> str:
    """Return ``regularizer`` if it is one of :data:`REGULARIZERS`, else raise ``ValueError``."""
    return _choice(regularizer, "regularizer", REGULARIZERS)
