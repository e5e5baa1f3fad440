"""The Backend protocol: the few primitives the one Richardson-Lucy loop is written against.

A backend owns its array type (a NumPy array, a device buffer, ...). Arrays cross between
host and backend only through :meth:`Backend.to_backend` and :meth:`Backend.to_numpy`, so a
caller can count every transfer. All other primitives take an ``out=`` argument so that the loop
allocates its buffers once, before the first iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

# The ratio over a model at or below the blur's round-off level (``noise``) is kept only up to
# this value: beyond it, the model is round-off where the exact blur is 0 (see _precision.py).
NOISE_RATIO_LIMIT = 10.0


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


@dataclass(frozen=True, eq=False)
class BlurSpec:
    """Everything that defines one blur ``H``: the PSF, the observed shape, boundary, method, dtype.

    One frozen value travels from validation to the backend instead of five loose arguments.

    Attributes
    ----------
    psf : ndarray
        Validated float64 PSF (origin at ``n // 2`` on each axis).
    shape : tuple of int
        Shape of the observed image (the domain ``H`` maps onto).
    boundary : str
        A ``scipy.ndimage`` mode (``"reflect"``, ``"nearest"``, ``"mirror"``, ``"wrap"``,
        ``"constant"``), where the estimate has the image's shape; or ``"estimate"``, where the
        estimate lives on the image grown by ``margin`` and ``H`` is the linear (zero-extended)
        blur followed by a crop to the image (Bertero-Boccacci).
    method : str
        ``"auto"``, ``"fft"``, ``"separable"`` or ``"spatial"``.
    dtype : numpy.dtype
        Compute dtype.
    margin : tuple of (int, int)
        ``"estimate"`` only: voxels of estimate before and after the image on each axis (at
        most the PSF's reach, ``(k - 1 - k // 2, k // 2)``); ``()`` for the other modes.
    """

    psf: np.ndarray
    shape: tuple[int, ...]
    boundary: str
    method: str
    dtype: np.dtype
    margin: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.boundary == "estimate" and not self.margin:  # the default: the full reach
            object.__setattr__(self, "margin", full_margin(self.psf.shape))

    @property
    def estimated_edges(self) -> bool:
        """Whether the estimate lives on a larger domain than the image (``"estimate"``)."""
        return self.boundary == "estimate"

    def with_shape(self, shape: tuple[int, ...], boundary: str | None = None) -> BlurSpec:
        """Return the same blur on images of another ``shape`` (a tile's window), or mode."""
        return BlurSpec(
            self.psf, tuple(shape), boundary or self.boundary, self.method, self.dtype, self.margin
        )


def full_margin(psf_shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Voxels before and after the image that reach it through the PSF, per axis.

    ``convolve(x)[i]`` reads ``x[i - k + n // 2]`` for ``k`` in ``[0, n)``: from ``n - 1 - n // 2``
    voxels before ``i`` to ``n // 2`` after it. Beyond these the scene cannot be seen at all.
    """
    return tuple((n - 1 - n // 2, n // 2) for n in psf_shape)


@dataclass(frozen=True)
class BlurPlan:
    """What a backend will build for a :class:`BlurSpec`, decided before allocating anything.

    Attributes
    ----------
    method : str
        The method used (never ``"auto"``).
    transform : str
        The fft method's transform (``"rfft"``, ``"dct1"``, ``"dct2"``), else ``""``.
    work_shape : tuple of int
        Shape of the estimate's domain (the image's shape, except with ``"estimate"``).
    observed : tuple of slice
        Where the image sits inside the work domain.
    support : tuple of slice
        The voxels of the work domain the estimate may occupy (the image grown by the margin;
        a fast FFT length may add voxels outside it, which stay zero).
    inplace : bool
        Whether ``correlate`` may write over its input (same-shape domains only).
    memory : MemoryNeed
        Backend memory of the operator itself: transform buffers, spectra, scratch; not the
        algorithm's image-sized buffers.
    profiles : list of ndarray or None
        The 1-D profiles of the ``"separable"`` method (found while choosing it), else None.
    """

    method: str
    transform: str
    work_shape: tuple[int, ...]
    observed: tuple[slice, ...]
    support: tuple[slice, ...]
    inplace: bool
    memory: MemoryNeed
    profiles: list[np.ndarray] | None = field(default=None, compare=False, repr=False)

    @property
    def observed_shape(self) -> tuple[int, ...]:
        """The image's shape."""
        return tuple(s.stop - s.start for s in self.observed)

    @property
    def same_domain(self) -> bool:
        """Whether the estimate has the image's shape (every mode but ``"estimate"``)."""
        return all(s.start == 0 and s.stop == n for s, n in zip(self.observed, self.work_shape))


@runtime_checkable
class BlurOperator(Protocol):
    """A prepared blur ``H`` from the estimate's work domain to the observed image.

    Attributes
    ----------
    plan : BlurPlan
        What was built: method, transform, work domain, where the image sits in it.
    method : str
        The convolution method actually used: ``"fft"``, ``"separable"`` or ``"spatial"``.
    inplace : bool
        Whether ``out`` may be the input array itself.
    """

    plan: BlurPlan
    method: str
    inplace: bool

    def convolve(self, x: Any, out: Any) -> Any:
        """Write ``H x`` into ``out``: ``x`` on the work domain, ``out`` of the image's shape.

        With a same-shape mode this is ``scipy.ndimage.convolve(x, psf, mode=boundary)``.
        """
        ...

    def correlate(self, x: Any, out: Any) -> Any:
        """Write ``H^T x`` into ``out``: ``x`` of the image's shape, ``out`` on the work domain.

        With a same-shape mode this is ``scipy.ndimage.correlate(x, psf, mode=boundary)``.
        """
        ...


@runtime_checkable
class Backend(Protocol):
    """Primitives of one compute backend, and what it can do.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"numpy"``.
    cost_model : CostModel
        Timing constants behind ``method="auto"`` on this backend.
    dtypes : tuple of str
        Compute dtypes it supports, e.g. ``("float32", "float64")``.
    transforms : tuple of str
        Spectral transforms it has: ``"rfft"``, ``"dct1"``, ``"dct2"`` (empty without an FFT
        library; then ``method="fft"`` and ``boundary="estimate"`` are unavailable).
    auto_priority : int
        Rank for ``backend="auto"``: the highest wins; 0 means "only when asked for".
    lock : context manager
        Held around one call's use of the backend: device backends serialise threads with it.
    uses_host_memory : bool
        Whether its working memory is host memory (so a tiled run's host-side results
        compete with it).
    device_name : str
        The device it computes on; empty for the host.
    reduction_scratch : int
        Bytes one float64 reduction (:meth:`momentum_update`, :meth:`change_update`, the
        stopping rules' terms) holds while it runs.
    """

    name: str
    cost_model: Any
    dtypes: tuple[str, ...]
    transforms: tuple[str, ...]
    auto_priority: int
    device_name: str
    reduction_scratch: int
    lock: Any  # a context manager (threading.RLock, contextlib.nullcontext)
    uses_host_memory: bool

    def to_backend(self, array: np.ndarray) -> Any:
        """Return a host array on the backend (one host-to-device transfer).

        A host backend may return ``array`` itself: callers never write to the result.
        """
        ...

    def to_numpy(self, array: Any, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """Copy a backend array (or its ``region``) to a new host array (one transfer)."""
        ...

    def full(self, shape: tuple[int, ...], value: float, dtype: np.dtype) -> Any:
        """Return a new backend array filled with ``value`` (no host transfer)."""
        ...

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """Return a new uninitialised backend array."""
        ...

    def copy(self, array: Any) -> Any:
        """Return a backend copy of a backend array (no host transfer)."""
        ...

    def plan_blur(self, spec: BlurSpec) -> BlurPlan:
        """Decide method, transform, work domain and operator memory; allocate nothing."""
        ...

    def blur_operator(self, spec: BlurSpec) -> BlurOperator:
        """Prepare the blur of ``spec`` (uploads the PSF, OTF or DCT gain once)."""
        ...

    def plan_filter(self, spec: FilterSpec) -> FilterPlan:
        """Decide transform, domain and memory of a direct filter; allocate nothing."""
        ...

    def spectral_filter(self, spec: FilterSpec) -> SpectralFilter:
        """Prepare the direct filter of ``spec`` (uploads its response or OTF once)."""
        ...

    def memory_limits(self) -> MemoryNeed:
        """Return the memory one call may use now: the device's, or the host's available."""
        ...

    def check_memory(self, need: MemoryNeed) -> None:
        """Raise ``MemoryError`` (with a hint) if ``need`` cannot be allocated here."""
        ...

    def ratio(
        self,
        observed: Any,
        blurred: Any,
        eps: float,
        out: Any,
        background: Any = None,
        offset: float = 0.0,
        noise: float = 0.0,
    ) -> Any:
        """Write ``observed / d`` where ``d > eps``, else 0, into ``out`` (may be ``blurred``).

        ``d = blurred + background + offset``: the model of the data, with an optional
        background array (observed domain) and a scalar offset. Where ``d <= noise`` (the
        blur's own round-off) the ratio is also 0 if it would exceed
        :data:`NOISE_RATIO_LIMIT`.
        """
        ...

    def multiply(self, a: Any, b: Any, out: Any) -> Any:
        """Write ``a * b`` into ``out`` (``out`` may be ``a`` or ``b``)."""
        ...

    def weighted_update(self, estimate: Any, correction: Any, weights: Any, out: Any) -> Any:
        """Write ``estimate * correction * weights`` into ``out`` (``out`` may alias any)."""
        ...

    def inverse_weights(self, weights: Any, threshold: float, out: Any) -> Any:
        """Write ``1 / weights`` where ``weights > threshold``, else 0, into ``out``."""
        ...

    def keep_where(self, x: Any, weights: Any, out: Any) -> Any:
        """Write ``x`` where ``weights > 0``, else 0, into ``out`` (``out`` may be ``x``)."""
        ...

    def extrapolate(
        self, estimate: Any, previous: Any, alpha: float, floor: float, out: Any
    ) -> Any:
        """Write ``max(estimate + alpha (estimate - previous), floor)`` into ``out``.

        Voxels where ``estimate`` is 0 get 0 (they stay out of the estimate); then
        ``previous`` is overwritten with ``estimate``. ``out`` is a third array.
        """
        ...

    def clamped_update(
        self, point: Any, correction: Any, weights: Any, floor: float, out: Any
    ) -> Any:
        """Write ``max(point * correction * weights, floor)`` into ``out`` (weights may be None).

        Voxels where ``point`` or ``weights`` is 0 get 0. ``out`` may alias any input.
        """
        ...

    def momentum_update(
        self,
        point: Any,
        correction: Any,
        weights: Any,
        floor: float,
        estimate: Any,
        alpha: float,
        out: Any,
    ) -> float:
        """Run the accelerated update, its restart test and the next extrapolation in one pass.

        With ``f`` the old ``estimate`` and ``f' = max(point * correction * weights, floor)``
        (0 where ``point`` or ``weights`` is 0): returns ``sum((f' - f) * (point - f))`` in
        float64, writes ``max(f' + alpha (f' - f), floor)`` (0 where ``f'`` is 0) into ``out``
        when ``alpha > 0`` (``out`` is undefined after ``alpha == 0``), then ``f'`` over
        ``estimate``. ``point`` may be ``out`` or ``estimate``; ``correction`` and ``point``
        may be overwritten.
        """
        ...

    def change_update(
        self,
        point: Any,
        correction: Any,
        weights: Any,
        floor: float,
        out: Any,
        change: Any,
        earlier: Any,
    ) -> tuple[float, float]:
        """Run Biggs' clamped update and record its change, in one pass.

        Writes ``f' = max(point * correction * weights, floor)`` (0 where ``point`` or
        ``weights`` is 0) into ``out`` and ``f' - point`` into ``change``; returns
        ``sum(change * earlier)`` and ``sum(change * change)`` in float64. ``correction`` may
        be overwritten.
        """
        ...

    def tv_factor(
        self,
        estimate: Any,
        weights: Any,
        spacing: tuple[float, float, float],
        strength: float,
        smoothing: float,
        floor: float,
        out: Any,
        periodic: bool = False,
    ) -> None:
        """Write the one-step-late total-variation factor into ``out`` (a third array).

        ``out = weights / max(1 - strength * div(grad f / sqrt(|grad f|^2 + smoothing^2)),
        floor)`` (``weights`` None: 1). Forward differences for the gradient (0 at the last
        index of an axis and to voxels whose weight is 0), backward for the divergence,
        ``spacing`` per (z, y, x) axis; with ``periodic`` (``boundary="wrap"``) the last
        index's difference is to the first, so that TV commutes with periodic shifts. Voxels
        where the guard applied are counted (:meth:`tv_guarded`).
        """
        ...

    def tv_guarded(self) -> int:
        """Return how many voxels :meth:`tv_factor` has guarded since the last call; reset."""
        ...

    def discrepancy_terms(
        self,
        observed: Any,
        blurred: Any,
        mask: Any,
        background: Any,
        offset: float,
        gain: float,
        scale: float,
        table: Any,
    ) -> tuple[float, float]:
        """Return ``(sum 2 KL(g | mu), sum E[2 KL](mu / scale) scale)`` over the kept voxels.

        ``mu = gain (blurred + background + offset)`` (``mask``/``background`` may be None);
        ``table`` is :data:`gpu_deconv._noise.EXPECTED_2KL` on the backend. Float64 sums.
        """
        ...

    def holdout_terms(
        self,
        validation: Any,
        blurred: Any,
        mask: Any,
        background: Any,
        offset: float,
        gain: float,
    ) -> float:
        """Return ``sum(v ln mu - mu)`` over the voxels ``mask`` keeps (``mu`` as above)."""
        ...

    def synchronize(self) -> None:
        """Block until all queued work has finished (for timing)."""
        ...

    def list_devices(self) -> list[Any]:
        """Return the devices this backend can run on (empty for host backends)."""
        ...


# -- direct filters (Wiener, Tikhonov) -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FilterSpec:
    """One direct (non-iterative) deconvolution filter: a blur and how it is regularised.

    The filter acts on the domain where the blur is diagonal (see
    :func:`~gpu_deconv.backends._filter_planning.filter_geometry`): with blur eigenvalues
    ``L`` and regulariser eigenvalues ``r`` it multiplies the image's spectrum ``G`` by

    * ``conj(L) / (|L|**2 + regularization * |r|**2)`` (Tikhonov; scikit-image's Wiener), or,
      when ``noise_variance`` is set,
    * ``conj(L) S / (|L|**2 S + noise_weight * P)`` with ``P`` the noise power per frequency
      and ``S = max(|G|**2 - P, 0)`` the signal power estimated from the data (Wiener).

    Attributes
    ----------
    blur : BlurSpec
        PSF, image shape, boundary (a ``scipy.ndimage`` mode) and compute dtype; the method
        is ignored (a filter is always spectral).
    regularizer : {"identity", "laplacian"}
        ``R`` of the penalty ``||R f||**2``: the identity, or the discrete Laplacian (centre
        ``2 * ndim``, neighbours ``-1``; scikit-image's default).
    regularization : float
        The penalty's weight (``> 0``); unused with ``noise_variance``.
    noise_variance : float or None
        Per-voxel variance of white noise, in the image's (scaled) units: ``P`` is it times
        the number of samples of the periodic domain the filter acts on.
    noise_weight : float
        Factor on ``P`` in the Wiener denominator (``2**-2p`` for a PSF scaled by ``2**-p``;
        1 otherwise).
    """

    blur: BlurSpec
    regularizer: str = "identity"
    regularization: float = 0.0
    noise_variance: float | None = None
    noise_weight: float = 1.0


@dataclass(frozen=True)
class FilterPlan:
    """What a backend builds for a :class:`FilterSpec`, decided before allocating anything.

    Attributes
    ----------
    transform : str
        ``"rfft"`` (on ``domain``), ``"dct2"`` or ``"dct1"`` (on the image itself).
    domain : tuple of int
        Shape of the transformed grid.
    memory : MemoryNeed
        Backend memory of the filter itself (transform buffers, response), not of the image
        and the result.
    """

    transform: str
    domain: tuple[int, ...]
    memory: MemoryNeed


@runtime_checkable
class SpectralFilter(Protocol):
    """A prepared direct filter (:class:`FilterSpec`) on a backend.

    Attributes
    ----------
    plan : FilterPlan
        Transform, domain and memory.
    """

    plan: FilterPlan

    def apply(self, x: Any, out: Any) -> Any:
        """Write the filtered ``x`` into ``out`` (both of the image's shape; may alias)."""
        ...
