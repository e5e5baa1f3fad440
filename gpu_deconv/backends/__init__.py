"""Backend registry: ``get_backend("numpy" | "opencl" | "auto")``.

Backends register a factory by name; optional ones are imported lazily, so a machine without
OpenCL never imports pyopencl unless asked to.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from ._base import Backend, BackendUnavailableError, BlurOperator

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "BlurOperator",
    "available_backends",
    "get_backend",
    "register_backend",
]

_FACTORIES: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Register ``factory(device=None) -> Backend`` under ``name`` (replacing any earlier one)."""
    _FACTORIES[name] = factory


def available_backends() -> tuple[str, ...]:
    """Names accepted by :func:`get_backend`, ``"auto"`` included."""
    return ("auto", *_FACTORIES)


def _numpy_factory(device: Any = None) -> Backend:
    from .numpy_backend import NumpyBackend

    if device is not None:
        raise ValueError("device is only meaningful for the opencl backend, not numpy")
    return NumpyBackend()


register_backend("numpy", _numpy_factory)


def get_backend(backend: str | Backend = "auto", device: str | None = None) -> Backend:
    """Return a backend instance by name (or pass an instance through).

    Parameters
    ----------
    backend : str or Backend, optional
        ``"numpy"``, ``"opencl"`` or ``"auto"``, by default ``"auto"``. ``"auto"`` picks the
        fastest backend that can run here and falls back to NumPy with a warning when an
        accelerated backend was expected but is unavailable.
    device : str, optional
        Device name substring, for device backends.

    Returns
    -------
    Backend
        A ready backend.

    Raises
    ------
    ValueError
        If ``backend`` is not a known name.
    BackendUnavailableError
        If the named backend cannot run on this machine.
    """
    if not isinstance(backend, str):
        if isinstance(backend, Backend):
            return backend
        raise TypeError(f"backend must be a name or a Backend, got {type(backend).__name__}")
    if backend == "auto":
        return _auto_backend(device)
    if backend not in _FACTORIES:
        raise ValueError(
            f"unknown backend {backend!r}; available: {', '.join(available_backends())}"
        )
    return _FACTORIES[backend](device=device)


def _auto_backend(device: str | None) -> Backend:
    """Return NumPy unless a registered accelerator backend says it is faster here."""
    for name, factory in _FACTORIES.items():
        if name == "numpy":
            continue
        try:
            candidate = factory(device=device)
        except BackendUnavailableError as exc:
            if device is not None:
                warnings.warn(
                    f"backend='auto': {name} unavailable ({exc}); using numpy",
                    RuntimeWarning,
                    stacklevel=3,
                )
            continue
        if getattr(candidate, "preferred_over_numpy", False):
            return candidate
    return _FACTORIES["numpy"](device=None)
