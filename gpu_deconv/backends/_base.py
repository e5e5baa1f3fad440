"""The Backend protocol: the few primitives the one Richardson-Lucy loop is written against.

A backend owns its array type (a NumPy array, a device buffer, ...). Arrays cross between
host and backend only through :meth:`Backend.to_backend` and :meth:`Backend.to_numpy`, so a
caller can count every transfer. All other primitives take an ``out=`` argument so that the loop
allocates its buffers once, before the first iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


class BackendUnavailableError(RuntimeError):
    """A backend cannot run on this machine (missing package or device); the message says how."""


@dataclass(frozen=True)
class MemoryNeed:
    """Backend memory one Richardson-Lucy call uses, or the most a backend offers.

    Attributes
    ----------
    total : int
        Bytes in all (the call's peak; or what the backend can give one call).
    largest : int
        Bytes of the largest single buffer (or the largest the backend can allocate).
    """

    total: int
    largest: int

    def fits(self, limits: MemoryNeed) -> bool:
        """Whether this need fits within ``limits``."""
        return self.total <= limits.total and self.largest <= limits.largest


@runtime_checkable
class BlurOperator(Protocol):
    """A prepared blur ``H`` for one PSF, image shape, boundary mode, method and dtype.

    Attributes
    ----------
    method : str
        The convolution method actually used: ``"fft"``, ``"separable"`` or ``"spatial"``
        (never ``"auto"``).
    inplace : bool
        Whether ``out`` may be the input array itself.
    """

    method: str
    inplace: bool

    def convolve(self, x: Any, out: Any) -> Any:
        """Write ``H x`` (``scipy.ndimage.convolve(x, psf, mode=boundary)``) into ``out``."""
        ...

    def correlate(self, x: Any, out: Any) -> Any:
        """Write ``H^T x`` (``scipy.ndimage.correlate(x, psf, mode=boundary)``) into ``out``."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Primitives of one compute backend.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"numpy"``.
    cost_model : CostModel
        Timing constants behind ``method="auto"`` on this backend.
    dtypes : tuple of str
        Compute dtypes it supports, e.g. ``("float32", "float64")``.
    lock : context manager
        Held around one call's use of the backend: device backends serialise threads with it.
    uses_host_memory : bool
        Whether its working memory is host memory (so a tiled run's host-side results
        compete with it).
    """

    name: str
    cost_model: Any
    dtypes: tuple[str, ...]
    lock: Any  # a context manager (threading.RLock, contextlib.nullcontext)
    uses_host_memory: bool

    def to_backend(self, array: np.ndarray) -> Any:
        """Return a host array on the backend (one host-to-device transfer).

        A host backend may return ``array`` itself: callers never write to the result.
        """
        ...

    def to_numpy(self, array: Any) -> np.ndarray:
        """Copy a backend array to a new host array (one device-to-host transfer)."""
        ...

    def full(self, shape: tuple[int, ...], value: float, dtype: np.dtype) -> Any:
        """Return a new backend array filled with ``value`` (no host transfer)."""
        ...

    def empty_like(self, array: Any) -> Any:
        """Return a new uninitialised backend array of the same shape and dtype."""
        ...

    def copy(self, array: Any) -> Any:
        """Return a backend copy of a backend array (no host transfer)."""
        ...

    def blur_operator(
        self, psf: np.ndarray, shape: tuple[int, ...], boundary: str, method: str, dtype: np.dtype
    ) -> BlurOperator:
        """Prepare the blur for ``psf`` (host float64) on images of ``shape``."""
        ...

    def memory_need(
        self, psf: np.ndarray, shape: tuple[int, ...], boundary: str, method: str, dtype: np.dtype
    ) -> MemoryNeed:
        """Memory one Richardson-Lucy call on ``shape`` with this blur would use here."""
        ...

    def memory_limits(self) -> MemoryNeed:
        """Return the memory one call may use now: the device's, or the host's available."""
        ...

    def ratio(self, observed: Any, blurred: Any, eps: float, out: Any) -> Any:
        """Write ``observed / blurred`` where ``blurred > eps``, else 0, into ``out``."""
        ...

    def multiply(self, a: Any, b: Any, out: Any) -> Any:
        """Write ``a * b`` into ``out`` (``out`` may be ``a`` or ``b``)."""
        ...

    def synchronize(self) -> None:
        """Block until all queued work has finished (for timing)."""
        ...
