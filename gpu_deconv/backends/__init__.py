"""Backend registry: ``get_backend("numpy" | "opencl" | "auto")``.

Backends register a factory by name; optional ones are imported lazily, so a machine without
OpenCL never imports pyopencl unless asked to.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from .._validation import check_device, check_threads
from ._base import Backend, BackendUnavailableError, BlurOperator

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "BlurOperator",
    "available_backends",
    "backend_dtypes",
    "get_backend",
    "register_backend",
]

_FACTORIES: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Register ``factory(device=None, threads=None) -> Backend`` under ``name``.

    An earlier factory of that name is replaced.
    """
    _FACTORIES[name] = factory


def available_backends() -> tuple[str, ...]:
    """Names accepted by :func:`get_backend`, ``"auto"`` included."""
    return ("auto", *_FACTORIES)


def backend_dtypes(name: str) -> tuple[str, ...]:
    """Compute dtypes the backend ``name`` supports, without building it (no device needed).

    ``"auto"`` promises only what every backend offers. Used where the backend is built
    elsewhere (dask workers) but the dtype must be known now.
    """
    if name != "auto" and name not in _CLASSES:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(available_backends())}")
    dtypes = [_CLASSES[n]().dtypes for n in (_CLASSES if name == "auto" else (name,))]
    common = set(dtypes[0]).intersection(*dtypes)
    return tuple(d for d in dtypes[0] if d in common)


def _numpy_factory(device: Any = None, threads: int | None = None) -> Backend:
    from .numpy_backend import NumpyBackend

    if device is not None:
        raise ValueError("device is only meaningful for the opencl backend, not numpy")
    return NumpyBackend(workers=threads)


_OPENCL_INSTANCES: dict[str | None, Backend] = {}


def _opencl_factory(device: str | None = None, threads: int | None = None) -> Backend:
    """One OpenCLBackend per device selector, so kernels compile once per device.

    ``threads`` (the NumPy backend's FFT threads) does not apply to a device.
    """
    from ._opencl_devices import check_not_forked, default_selector

    check_not_forked()  # an inherited backend would hang in a forked child
    key = device if device is not None else default_selector()
    if key not in _OPENCL_INSTANCES:
        from .opencl_backend import OpenCLBackend

        _OPENCL_INSTANCES[key] = OpenCLBackend(device)
    return _OPENCL_INSTANCES[key]


@functools.cache
def _probe_opencl(selector: str | None) -> bool | BackendUnavailableError:
    """Whether the device ``selector`` picks beats NumPy (a GPU), or why OpenCL cannot run.

    Lists devices and checks the default one (a probe kernel, :func:`device_problem`), but
    builds no backend and none of the package's kernels. Cached, so that a machine without
    usable OpenCL finds out once per process (not once per dask chunk or tile).
    """
    from ._opencl_devices import is_fast_device, pick_device

    try:
        return is_fast_device(pick_device(selector))
    except BackendUnavailableError as exc:
        return exc


def _numpy_class() -> Any:
    from .numpy_backend import NumpyBackend

    return NumpyBackend


def _opencl_class() -> Any:
    # The class only (its module imports no OpenCL package at import time).
    from .opencl_backend import OpenCLBackend

    return OpenCLBackend


# Backend classes by name, imported lazily: their class attributes are the capabilities.
_CLASSES: dict[str, Callable[[], Any]] = {"numpy": _numpy_class, "opencl": _opencl_class}
register_backend("numpy", _numpy_factory)
register_backend("opencl", _opencl_factory)
_warned_fallback = False


def get_backend(
    backend: str | Backend = "auto", device: str | None = None, threads: int | None = None
) -> Backend:
    """Return a backend instance by name (or pass an instance through).

    Parameters
    ----------
    backend : str or Backend, optional
        ``"numpy"``, ``"opencl"`` or ``"auto"``, by default ``"auto"``. ``"auto"`` picks
        OpenCL on a GPU (or on the device named by ``device`` / ``$GPU_DECONV_DEVICE``) and
        NumPy on CPU-only machines, where it is faster; with no OpenCL at all it warns once
        and uses NumPy.
    device : str, optional
        OpenCL device: ``"gpu"``, ``"cpu"`` or a name substring (``"auto"`` and ``"opencl"``
        only).
    threads : int, optional
        Threads of the NumPy backend's FFTs; by default all cores. A device ignores it.

    Returns
    -------
    Backend
        A ready backend.

    Raises
    ------
    ValueError
        If ``backend`` is not a known name.
    TypeError
        If ``device`` is neither None nor a str.
    BackendUnavailableError
        If the named backend cannot run on this machine.
    """
    device = check_device(device)
    threads = check_threads(threads)
    if not isinstance(backend, str):
        if isinstance(backend, Backend):
            if backend.name == "opencl":
                from ._opencl_devices import check_not_forked

                check_not_forked()  # its context belongs to the parent process
            return backend
        raise TypeError(f"backend must be a name or a Backend, got {type(backend).__name__}")
    if backend == "auto":
        return _auto_backend(device, threads)
    if backend not in _FACTORIES:
        raise ValueError(
            f"unknown backend {backend!r}; available: {', '.join(available_backends())}"
        )
    return _FACTORIES[backend](device=device, threads=threads)


def _auto_backend(device: str | None, threads: int | None) -> Backend:
    """Return OpenCL where it beats NumPy (a GPU, or a device asked for), else NumPy.

    A CPU-only machine gets NumPy without an OpenCL backend being built. On a machine with no
    usable OpenCL at all, warn once per process and use NumPy.
    """
    from ._opencl_devices import default_selector

    if device is None:
        probe = _probe_opencl(default_selector())
        if probe is False:
            return _FACTORIES["numpy"](device=None, threads=threads)
        if isinstance(probe, BackendUnavailableError):
            return _fall_back(probe, named=False, threads=threads)
    try:
        return _FACTORIES["opencl"](device=device)
    except BackendUnavailableError as exc:
        return _fall_back(exc, named=device is not None, threads=threads)


def _fall_back(reason: BackendUnavailableError, named: bool, threads: int | None) -> Backend:
    """NumPy instead of an unavailable OpenCL: warn once per process (every time if named)."""
    global _warned_fallback
    if named or not _warned_fallback:
        _warned_fallback = True
        one_line = str(reason).replace("\n", "; ")
        warnings.warn(
            f"backend='auto': OpenCL unavailable ({one_line}); using the NumPy backend",
            RuntimeWarning,
            stacklevel=5,
        )
    return _FACTORIES["numpy"](device=None, threads=threads)
