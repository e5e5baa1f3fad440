"""Device arrays in, device arrays out: an image on an OpenCL queue is deconvolved where it is.

An image that pyclesperanto-prototype's ``push`` (or pyopencl) put on a device is a
``pyopencl.array.Array``. The driver runs it on an :class:`OpenCLBackend` built around that
array's own context and queue, validates it with one reduction pass on the device
(:meth:`OpenCLBackend.statistics`), and returns the result as a device array of the image's
own class: a clesperanto pipeline (push, deconvolve, threshold, label, pull) brings no image to
the host. The PSF comes over once: planning reads its profiles on the host (a kernel's bytes).

The direct filters (:func:`gpu_deconv.wiener`, :func:`gpu_deconv.tikhonov`) and the blurs
take device arrays the same way. What needs the whole image on the host is refused with the
reason, or not done: tiles (a device image is deconvolved whole), ``stop="holdout"`` (it
splits counts at random on the host), and an array start with ``boundary="estimate"`` (its
growth into the margin is host code).
"""

from __future__ import annotations

import numbers
import sys
import warnings
from typing import Any

import numpy as np

from . import _validation as v

# One backend per (context, queue): its kernels compile once per context.
_BACKENDS: dict[tuple[int, int], Any] = {}


def is_device_array(array: Any) -> bool:
    """Whether ``array`` is a pyopencl array (what ``pyclesperanto_prototype.push`` returns)."""
    module = sys.modules.get("pyopencl.array")  # never imports pyopencl for host arrays
    return module is not None and isinstance(array, module.Array)


def backend_for(image: Any, backend: Any, device: Any) -> Any:
    """Return the OpenCL backend on ``image``'s own queue (``backend`` must allow it).

    Raises
    ------
    ValueError
        If ``backend`` is ``"numpy"`` or an OpenCL backend on another context, or a
        ``device`` is named: a device array runs where it is.
    """
    from .backends._base import Backend
    from .backends.opencl_backend import OpenCLBackend

    if device is not None:
        raise ValueError(
            "device cannot be chosen for a device array: it runs on its own queue's device "
            f"({image.queue.device.name.strip()!r}); leave device=None"
        )
    if isinstance(backend, Backend) and not isinstance(backend, str):
        if getattr(backend, "context", None) == image.context:
            return backend
        raise ValueError(
            f"backend {backend!r} does not run on the device array's OpenCL context; pass "
            "backend='auto' to run on the array's own queue"
        )
    if backend not in ("auto", "opencl"):
        raise ValueError(
            f"a device array runs on its own OpenCL queue: backend must be 'auto' or 'opencl', "
            f"got {backend!r}; pass image.get() to compute with NumPy"
        )
    key = (image.context.int_ptr, image.queue.int_ptr)
    if key not in _BACKENDS:
        _BACKENDS[key] = OpenCLBackend(queue=image.queue)
    return _BACKENDS[key]


def check_same_context(be: Any, array: Any, name: str) -> None:
    """Raise unless the device array ``array`` lives on ``be``'s context."""
    if array.context != be.context:
        raise ValueError(f"{name} is a device array on another OpenCL context than the image")


def _float32(
    be: Any, array: Any, name: str, shape: tuple[int, ...] | None = None, flags: bool = False
) -> Any:
    """Return a private float32 copy of a device array (validated) and its statistics.

    ``flags`` accepts booleans (a mask).
    """
    check_same_context(be, array, name)
    if array.queue != be.queue:  # made on another queue: finished, then used on the backend's
        array.queue.finish()
        array = array.with_queue(be.queue)
    dtype = np.dtype(array.dtype)
    if dtype.kind not in ("iufb" if flags else "iuf"):
        raise TypeError(f"{name} must have a real numeric dtype, got {dtype}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if shape is None and (array.ndim == 0 or array.ndim > v.MAX_NDIM):
        raise ValueError(f"{name} must be 1D, 2D or 3D, got {array.ndim} dimensions")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise ValueError(f"{name} must have the image's shape {tuple(shape)}, got {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous device array")
    if dtype == np.bool_:  # pyopencl's kernels have no bool: the same bytes as uint8
        array = array.view(np.uint8)
    copy = array.astype(np.float32) if dtype != np.float32 else array.copy()  # offsets too
    found = be.statistics(copy)
    if found.nonfinite:
        raise ValueError(f"{name} contains NaN or infinite values (in float32)")
    return copy, found


def check_image(
    be: Any, image: Any, dtype: Any, stacklevel: int, shift: float = 0.0, nonnegative: bool = True
) -> Any:
    """Validate a device image; return a private float32 copy (+ ``shift``, negatives clipped).

    As :func:`gpu_deconv._validation.check_image`, on the device; ``nonnegative=False`` keeps
    negative values (linear filters).
    """
    v.resolve_dtype(dtype, np.dtype(np.float32), be.dtypes)  # float64 is refused there
    out, found = _float32(be, image, "image")
    v.check_magnitude(found.max, found.min, shift, np.float32, "image")
    lowest = float(np.float32(found.min) + np.float32(shift))  # as the shifted float32 data
    if shift:
        out += np.float32(shift)
    if nonnegative and lowest < 0:
        below = f" below -read_noise**2 = {-shift:g}" if shift else ""
        warnings.warn(
            f"image has negative values{below} (min {lowest - shift:g}); they are clipped to 0",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
        _maximum(out, 0.0)
    return out


def _maximum(array: Any, floor: float) -> Any:
    """``max(array, floor)`` in place."""
    import pyopencl.array as cla

    return cla.maximum(array, np.float32(floor), out=array)


def host_psf(psf: Any) -> Any:
    """Return the PSF on the host: planning reads its profiles there (a kernel's bytes)."""
    return psf.get() if is_device_array(psf) else psf


def check_mask(be: Any, mask: Any, shape: tuple[int, ...]) -> Any:
    """Return a mask as a device float32 array of 1 (kept) and 0, or None."""
    if mask is None:
        return None
    if not is_device_array(mask):
        host = v.check_mask(mask, shape)
        return None if host is None else be.to_backend(host.astype(np.float32))
    values = _float32(be, mask, "mask", shape, flags=True)[0]
    if be.statistics(((values != 0) & (values != 1)).astype(np.float32)).max > 0:
        raise TypeError(f"mask must be boolean (or 0/1), got dtype {np.dtype(mask.dtype)}")
    if be.statistics(values).max <= 0:
        raise ValueError("mask excludes every voxel; at least one must be observed (True)")
    return values


def check_background(be: Any, background: Any, shape: tuple[int, ...]) -> Any:
    """Return a device background map (float32, the image's shape), validated on the device."""
    level, found = _float32(be, background, "background", shape)
    if found.min < 0:
        raise ValueError("background must be finite and >= 0 everywhere")
    return level


def is_array(value: Any) -> bool:
    """Whether ``value`` is an array (host or device), not a number."""
    return isinstance(value, np.ndarray) or is_device_array(value)


def statistics(
    array: Any, mask: Any = None, other: Any = None, shift: float = 0.0, below: float = 0.0
) -> Any:
    """One pass over a device array on its own backend (:meth:`OpenCLBackend.statistics`)."""
    return backend_for(array, "opencl", None).statistics(array, mask, other, shift, below)


def array_max(array: Any) -> float:
    """Return the largest value of a host or device array."""
    return statistics(array).max if is_device_array(array) else float(array.max())


def array_abs_max(array: Any) -> float:
    """Return the largest magnitude of a host or device array."""
    if not is_device_array(array):
        return float(np.abs(array).max())
    found = statistics(array)
    return max(found.max, -found.min)


def array_mean(array: Any) -> float:
    """Return the mean of a host or device array."""
    if not is_device_array(array):
        return float(array.mean())
    return mean(backend_for(array, "opencl", None), array)


def mean(be: Any, array: Any, mask: Any = None) -> float:
    """Return the mean of a device array over the voxels ``mask`` keeps (all by default)."""
    found = be.statistics(array, mask)
    return found.sum / max(found.kept, 1)


def kept_voxels(mask: Any) -> int:
    """Return how many voxels a mask (host bool, or device 0/1) keeps."""
    return statistics(mask, mask).kept if is_device_array(mask) else int(mask.sum())


def all_finite(array: Any) -> bool:
    """Whether a host or device array holds no NaN or infinity."""
    if is_device_array(array):
        return statistics(array).nonfinite == 0
    return bool(np.isfinite(array).all())


def initial_estimate(
    be: Any, init: Any, image: Any, mask: Any, background: Any, shift: float, boundary: str
) -> Any:
    """As :func:`gpu_deconv._validation.initial_estimate`, for a device image."""
    if init is None:
        init = v.default_init(boundary)
    estimated = boundary in v.ESTIMATED_BOUNDARIES
    if isinstance(init, str) and v._choice(init, "init", v.INIT_MODES) == "mean":
        level = mean(be, image, mask) - shift
        if level <= 0:
            raise ValueError("init='mean' needs an image with a positive mean")
        light = level - (
            background if isinstance(background, float) else mean(be, background, mask)
        )
        return light if light > 0.01 * level else 0.01 * level
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return v.check_init_number(init)
    if estimated:
        raise ValueError(
            "boundary='estimate' grows an array start into its margin on the host: with a "
            "device image pass init='mean' or a number"
        )
    if isinstance(init, str):  # "observed"
        if not shift:
            return image
        start = _maximum(image - np.float32(shift), 0.0)
        return _maximum(start, v.OBSERVED_FLOOR * mean(be, start))
    if not is_device_array(init):
        shaped = np.broadcast_to(np.float32(0), image.shape)  # validated against its shape
        return be.to_backend(v.initial_estimate(init, shaped))
    start, found = _float32(be, init, "init", image.shape)
    if found.min < 0:
        raise ValueError("init has negative values; the starting estimate must be >= 0")
    if found.max <= 0:
        raise ValueError("init is all zeros; the estimate would stay 0 (give positive values)")
    return start


def like(template: Any, result: Any) -> Any:
    """Return ``result`` as an array of ``template``'s class (clesperanto's own type)."""
    if type(result) is type(template):
        return result
    return type(template)(
        result.queue, result.shape, result.dtype, data=result.base_data, offset=result.offset
    )
