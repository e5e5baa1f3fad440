"""The driver every algorithm runs through: validation, planning, tiling, snapshots, progress.

Algorithms (:mod:`gpu_deconv.algorithms`) only set themselves up on a model and step; the
public :func:`richardson_lucy` is plain Richardson-Lucy through :func:`deconvolve`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Literal, NamedTuple, cast, overload

import numpy as np

from . import _device_io as dio
from . import _noise, _precision, _regularization, _scaling, _stopping, tiling
from . import _validation as v
from ._model import build_model, is_weighted, memory_need
from ._stopping import Info, StoppingWarning
from .algorithms import ALGORITHMS, OBSERVED, WORK, Algorithm, RichardsonLucy
from .backends import Backend, get_backend
from .backends._base import BlurSpec, MemoryNeed

# Host bytes per observed voxel the NumPy monitor's float64 temporaries take at their peak.
MONITOR_HOST_SCRATCH = 6 * 8

logger = logging.getLogger("gpu_deconv")

# Called after every iteration of every run (and tile) in the context that set it; it stops
# the run by raising. gpu_deconv.dask's chunks stop so when their run is interrupted.
_interrupt_check: ContextVar[Callable[[], None] | None] = ContextVar(
    "gpu_deconv_interrupt_check", default=None
)


@contextlib.contextmanager
def interrupt_check(check: Callable[[], None]) -> Iterator[None]:
    """Call ``check()`` after every iteration of the runs inside (tiled ones too).

    ``check`` stops a run by raising; unlike ``callback`` it also follows tiled runs, and it
    is called once the iteration has run on the device, not only been queued there.
    """
    token = _interrupt_check.set(check)
    try:
        yield
    finally:
        _interrupt_check.reset(token)


def _validate(
    image,
    psf,
    backend,
    method,
    boundary,
    dtype,
    normalize_psf,
    device,
    stacklevel,
    estimate=False,
    shift=0.0,
    threads=None,
):
    """Validate the shared arguments; return (image, psf, backend, boundary, method).

    ``stacklevel`` counts the frames between the user's call and this function; ``estimate``
    allows ``boundary="estimate"`` (deconvolution only); ``shift`` is added to the image
    before negative values are clipped (the read noise's variance).
    """
    boundary = v.check_boundary(boundary, estimate)
    method = v.check_method(method)
    if dio.is_device_array(image):  # it runs on its own queue, and stays there
        be = dio.backend_for(image, backend, device)
        image = dio.check_image(be, image, dtype, stacklevel + 1, shift=shift)
        psf = dio.host_psf(psf)
    else:
        be = get_backend(backend, device=device, threads=threads)
        image = v.check_image(
            image, dtype, stacklevel=stacklevel + 1, supported=be.dtypes, shift=shift
        )
    psf = v.check_psf(psf, image.ndim, normalize_psf)
    return image, psf, be, boundary, method


@overload
def richardson_lucy(
    image: np.ndarray,
    psf: np.ndarray,
    iterations: int | str = ...,
    *,
    backend: str | Backend = ...,
    method: str = ...,
    boundary: str = ...,
    init: str | float | np.ndarray | None = ...,
    eps: float = ...,
    normalize_psf: bool = ...,
    snapshots: None = ...,
    callback: Callable[[int], Any] | None = ...,
    progress: bool = ...,
    dtype: Any = ...,
    device: str | None = ...,
    threads: int | None = ...,
    tile_shape: str | Sequence[int] | None = ...,
    overlap: int | Sequence[int] | None = ...,
    max_memory: int | None = ...,
    mask: np.ndarray | None = ...,
    margin: str | int | Sequence[int] = ...,
    acceleration: str | None = ...,
    background: Any = ...,
    read_noise: float = ...,
    regularization: float | None = ...,
    spacing: Any = ...,
    stop: str | None = ...,
    max_iterations: int | None = ...,
    tolerance: float | None = ...,
    return_info: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def richardson_lucy(
    image: np.ndarray,
    psf: np.ndarray,
    iterations: int = ...,
    *,
    backend: str | Backend = ...,
    method: str = ...,
    boundary: str = ...,
    init: str | float | np.ndarray | None = ...,
    eps: float = ...,
    normalize_psf: bool = ...,
    snapshots: Iterable[int],
    callback: Callable[[int], Any] | None = ...,
    progress: bool = ...,
    dtype: Any = ...,
    device: str | None = ...,
    threads: int | None = ...,
    tile_shape: str | Sequence[int] | None = ...,
    overlap: int | Sequence[int] | None = ...,
    max_memory: int | None = ...,
    mask: np.ndarray | None = ...,
    margin: str | int | Sequence[int] = ...,
    acceleration: str | None = ...,
    background: Any = ...,
    read_noise: float = ...,
    regularization: float | None = ...,
    spacing: Any = ...,
    stop: str | None = ...,
    max_iterations: int | None = ...,
    tolerance: float | None = ...,
    return_info: Literal[False] = ...,
) -> dict[int, np.ndarray]: ...


@overload
def richardson_lucy(
    image: np.ndarray,
    psf: np.ndarray,
    iterations: int | str = ...,
    *,
    backend: str | Backend = ...,
    method: str = ...,
    boundary: str = ...,
    init: str | float | np.ndarray | None = ...,
    eps: float = ...,
    normalize_psf: bool = ...,
    snapshots: Iterable[int] | None = ...,
    callback: Callable[[int], Any] | None = ...,
    progress: bool = ...,
    dtype: Any = ...,
    device: str | None = ...,
    threads: int | None = ...,
    tile_shape: str | Sequence[int] | None = ...,
    overlap: int | Sequence[int] | None = ...,
    max_memory: int | None = ...,
    mask: np.ndarray | None = ...,
    margin: str | int | Sequence[int] = ...,
    acceleration: str | None = ...,
    background: Any = ...,
    read_noise: float = ...,
    regularization: float | None = ...,
    spacing: Any = ...,
    stop: str | None = ...,
    max_iterations: int | None = ...,
    tolerance: float | None = ...,
    return_info: Literal[True],
) -> tuple[Any, Info]: ...


def richardson_lucy(
    image: np.ndarray,
    psf: np.ndarray,
    iterations: int | str = 10,
    *,
    backend: str | Backend = "auto",
    method: str = "auto",
    boundary: str = "reflect",
    init: str | float | np.ndarray | None = None,
    eps: float = 1e-12,
    normalize_psf: bool = True,
    snapshots: Iterable[int] | None = None,
    callback: Callable[[int], Any] | None = None,
    progress: bool = False,
    dtype: Any = None,
    device: str | None = None,
    threads: int | None = None,
    tile_shape: str | Sequence[int] | None = "auto",
    overlap: int | Sequence[int] | None = None,
    max_memory: int | None = None,
    mask: np.ndarray | None = None,
    margin: str | int | Sequence[int] = "full",
    acceleration: str | None = None,
    background: Any = None,
    read_noise: float = 0.0,
    regularization: float | None = None,
    spacing: Any = None,
    stop: str | None = None,
    max_iterations: int | None = None,
    tolerance: float | None = None,
    return_info: bool = False,
) -> Any:
    r"""Deconvolve an image with the Richardson-Lucy algorithm.

    Parameters
    ----------
    image : (M, N[, P]) array_like
        Observed image, 1D, 2D or 3D, real and finite. Integer images are converted; negative
        values are clipped to 0 with a warning.
    psf : array_like
        Point spread function with the same number of dimensions as ``image``, non-negative
        (it may be larger than the image). Its origin is index ``n // 2`` on each axis.
    iterations : int or "auto", optional
        Number of iterations, by default 10. ``0`` returns the initial estimate. ``"auto"``
        stops by the rule ``stop`` (at most ``max_iterations``); a tiled run picks the count
        on its central tile's window and runs every tile for that count.
    backend : {"auto", "numpy", "opencl"} or Backend, optional
        Compute backend, by default ``"auto"``.
    method : {"auto", "fft", "separable", "spatial"}, optional
        Convolution method, by default ``"auto"`` (cheapest by the backend's cost model; see
        :func:`choose_method`). All methods give the same result to rounding.
    boundary : {"reflect", "nearest", "mirror", "wrap", "constant", "estimate"}, optional
        How the blur treats the scene beyond the image's edges; by default ``"reflect"``.
        The ``scipy.ndimage`` modes invent it from the image. ``"estimate"`` (Bertero &
        Boccacci) estimates it: the estimate covers the image grown by ``margin``, the blur
        is linear, and only observed voxels enter the data term; the result is cut exactly
        to the image's shape. It runs with ``method="fft"`` (``"auto"`` picks it).
    init : {None, "observed", "mean"}, float or array_like, optional
        Starting estimate: the observed image, a constant equal to its mean (over the voxels
        ``mask`` keeps), a positive constant, or an array of the image's shape (grown into
        the margin by its edge values with ``"estimate"``). By default (``None``) the
        observed image, or ``"mean"`` with ``boundary="estimate"``. In the image's units;
        arrays must be non-negative.
    eps : float, optional
        Guard of the ratio, relative to the image's maximum: where the blurred estimate is
        ``<= eps * image.max()`` the ratio is set to 0, by default 1e-12. Relative, so that
        the result scales with the image: ``RL(c * image) == c * RL(image)`` for every ``c``
        the dtype holds (the computation runs on the image scaled by a power of two, which
        is exact; see :mod:`gpu_deconv._scaling`).
    normalize_psf : bool, optional
        Scale the PSF to sum 1, by default True.
    snapshots : sequence of int, optional
        Iteration counts (each in ``[0, iterations]``) at which to keep a copy of the estimate.
        One run of ``iterations`` iterations returns all of them.
    callback : callable, optional
        Called as ``callback(k)`` after iteration ``k`` (1-based). Use ``snapshots`` to get
        estimates; a callback gets none, so device backends need no transfer per iteration.
        Tiled runs (``tile_shape``) take no callback: pass ``tile_shape=None`` with one.
    progress : bool, optional
        Show a tqdm progress bar on stderr, by default False.
    dtype : {None, "float32", "float64"}, optional
        Compute and output dtype; by default float64 for float64 images (where the backend
        supports it; OpenCL computes in float32), else float32.
    device : str, optional
        Device backends' device: ``"gpu"``, ``"cpu"`` or a name substring (see
        :func:`list_devices`).
    threads : int, optional
        Threads of the NumPy backend's FFTs (as deconwolf's ``--threads``); by default all
        cores. Device backends ignore it.
    tile_shape : "auto", sequence of int or None, optional
        Deconvolve in overlapping tiles of at most this many voxels per axis (see
        :mod:`gpu_deconv.tiling`). By default ``"auto"``: the whole image in one piece if it
        fits the backend's memory (device memory on OpenCL, available host memory on NumPy,
        both capped by ``max_memory``), else the largest tiles that fit. ``None``: never tile
        (OpenCL raises ``InsufficientDeviceMemoryError`` if the image does not fit).
    overlap : int or sequence of int, optional
        Neighbouring voxels deconvolved with each tile on each side; by default 10 RMS widths
        of the PSF per axis (:func:`gpu_deconv.tiling.default_overlap`), which kept tiled
        results within a relative RMS of 3e-4 of whole-image ones up to 100 iterations.
    max_memory : int, optional
        Bytes of backend memory (device memory on OpenCL, host memory on NumPy) one piece, the
        whole image or one tile, may use. Image-sized host arrays come on top: the
        validated copy of ``image`` and the result (one per snapshot). For volumes larger
        than host memory, use :func:`gpu_deconv.dask.richardson_lucy`.
    mask : array_like of bool, optional
        True where a voxel is observed and trustworthy; False for saturated or dead pixels
        and missing planes, which then do not enter the data term (their values are
        estimated from their neighbours). The update is normalised by ``w = H^T mask``;
        voxels with ``w <= 1e-3`` (a large hole) are not estimated and come back as 0. With
        ``boundary="estimate"`` the mask replaces the image's indicator; with the other
        modes it works the same way on the image's grid.
    margin : {"full", "half"}, int or sequence of int, optional
        ``boundary="estimate"`` only: voxels of scene estimated beyond each edge. ``"full"``
        (default): all that the PSF carries onto the image, ``k - 1`` per axis in all;
        ``"half"``: half of that; a number: that many on each side (per axis if a sequence).
    acceleration : {None, "shb", "biggs"}, optional
        Momentum (:mod:`gpu_deconv.algorithms.accelerated`): ``"shb"``, the scaled heavy ball
        (deconwolf's) with a restart when a step goes against the momentum, or ``"biggs"``
        (Biggs-Andrews, pycudadecon's); by default None, plain Richardson-Lucy. Accelerated
        runs reach a given quality in fewer iterations; snapshots and the result are the
        true iterates. Tiled and dask runs keep each tile's own momentum.
    background : float or array_like, optional
        Background ``b`` in the image's units (a number, or an array of the image's shape),
        kept in the model ``g ~ Poisson(H f + b)``: the ratio is ``g / (H f + b)``. The data
        are never background-subtracted and clipped, and the result excludes it. By default 0.
    read_noise : float, optional
        Standard deviation of Gaussian camera read noise, in photons (the image must be in
        photons): ``sigma**2`` is added to data and model (Snyder et al.). By default 0.
    regularization : float, optional
        Total-variation strength ``lambda`` (Dey et al.'s one-step-late form; see
        :mod:`gpu_deconv._regularization`), typically 1e-4 to 1e-2; by default None (none).
    spacing : float or sequence of float, optional
        Voxel size per axis (any unit; only ratios matter) for the TV gradient; by default
        1 per axis.
    stop : {"discrepancy", "relative", "holdout"}, optional
        Stopping rule of ``iterations="auto"`` (see :mod:`gpu_deconv._stopping`), by default
        ``"discrepancy"``: the Poisson discrepancy principle with its low-count target, which,
        like ``"holdout"`` (binomial splitting of integer counts), needs the image in photons.
        ``"relative"``: the objective's relative change falls to ``tolerance``.
    max_iterations : int, optional
        Most iterations ``"auto"`` runs, by default 250.
    tolerance : float, optional
        ``stop="relative"``'s threshold, by default 0.02 (deconwolf's).
    return_info : bool, optional
        Also return an :class:`Info` (count run, per-iteration objective and discrepancy,
        computed on the backend at each true iterate: one extra blur per iteration).

    Returns
    -------
    ndarray or dict of int to ndarray
        The estimate after ``iterations`` iterations, with the image's shape and ``dtype``;
        if ``snapshots`` is given, a dict mapping each requested iteration count to its
        estimate instead. With ``return_info``, the pair ``(result, info)``.

    Raises
    ------
    TypeError
        If an array has a non-numeric or complex dtype or is a masked array, or an argument
        has the wrong type.
    ValueError
        If an array is empty, holds NaN or inf or values beyond the compute dtype's range,
        the PSF is negative, all zero or of another ndim than the image, or a name (backend,
        method, boundary, init) is unknown, or ``iterations < 0``; if ``init`` is so large
        (over about ``1.8e19`` times the image's maximum in float32) or so small (its blur at
        most ``eps`` times the maximum) that the result would overflow or be all zeros; or
        if the result itself leaves the dtype's range.
    BackendUnavailableError
        If the requested backend cannot run on this machine.
    MemoryError
        If the image, or with tiling one tile, needs more memory than ``max_memory`` or the
        backend offers.

    Notes
    -----
    With observed image :math:`g`, PSF :math:`h` and :math:`H x` = ``convolve(x, h)``,
    :math:`H^T y` = ``correlate(y, h)`` under the chosen boundary mode, each iteration is

    .. math:: f_{k+1} = f_k \cdot H^T\left(\frac{g}{H f_k}\right),

    where the ratio is set to 0 wherever :math:`H f_k \le \varepsilon \max g`. With
    ``boundary="estimate"`` or a ``mask`` :math:`m` it is
    :math:`f_{k+1} = f_k / w \cdot H^T(m g / H f_k)` with :math:`w = H^T m / \sum h`, which keeps
    :math:`\sum_m H f_k = \sum_m g`. The image and the working buffers are moved to the
    backend once, before the first iteration; only the result and the requested snapshots
    come back.

    float32 FFTs leave round-off errors of about ``5e-8`` times the image's maximum in
    every voxel, which is a relative error of about ``5e-8 * R`` in a region ``R`` times
    dimmer than the maximum (0.5% at ``R = 1e5``, all of it from ``R = 1e8``: measured in
    docs/verification.md). ``method="fft"`` in float32 therefore warns
    (:class:`~gpu_deconv.PrecisionWarning`) when at least 1% of the voxels are positive but
    below ``1e-5`` of the maximum; the spatial and separable methods, and float64, stay
    accurate there.

    Examples
    --------
    >>> import numpy as np
    >>> from gpu_deconv import richardson_lucy
    >>> from gpu_deconv.psf import gaussian_psf
    >>> image = np.zeros((32, 32)); image[16, 16] = 1.0; image += 0.01
    >>> psf = gaussian_psf((9, 9), sigma=1.5)
    >>> result = richardson_lucy(image, psf, 20, backend="numpy")
    >>> result.shape, result.dtype
    ((32, 32), dtype('float64'))
    >>> steps = richardson_lucy(image, psf, 20, backend="numpy", snapshots=[5, 20])
    >>> sorted(steps)
    [5, 20]
    """
    acceleration = v.check_acceleration(acceleration)
    return deconvolve(
        RichardsonLucy if acceleration is None else ALGORITHMS[acceleration],
        image,
        psf,
        iterations,
        backend=backend,
        method=method,
        boundary=boundary,
        init=init,
        eps=eps,
        normalize_psf=normalize_psf,
        snapshots=snapshots,
        callback=callback,
        progress=progress,
        dtype=dtype,
        device=device,
        threads=threads,
        tile_shape=tile_shape,
        overlap=overlap,
        max_memory=max_memory,
        mask=mask,
        margin=margin,
        background=background,
        read_noise=read_noise,
        regularization=regularization,
        spacing=spacing,
        stop=stop,
        max_iterations=max_iterations,
        tolerance=tolerance,
        return_info=return_info,
        stacklevel=3,
    )


class Problem(NamedTuple):
    """A validated problem in the image's units (before scaling).

    ``image`` holds the data plus the read noise's variance (``read_noise**2``).
    """

    image: np.ndarray
    psf: np.ndarray
    backend: Backend
    boundary: str
    method: str
    mask: np.ndarray | None
    margins: tuple[tuple[int, int], ...]
    init: Any
    eps: float
    background: np.ndarray | float
    read_noise: float
    strength: float
    spacing: tuple[float, ...]

    @property
    def spec(self) -> BlurSpec:
        """The blur of the whole image (the dtype is the image's), for planning.

        Its PSF is scaled by a power of two to a sum in ``[1, 2)``: planning only looks at the
        PSF's shape and profiles, and a PSF of 1e307s would overflow their sums.
        """
        psf = np.ldexp(self.psf, -_scaling.sum_exponent(self.psf))
        return BlurSpec(
            psf, self.image.shape, self.boundary, self.method, self.image.dtype, self.margins
        )


def deconvolve(
    algorithm: type[Algorithm],
    image: np.ndarray,
    psf: np.ndarray,
    iterations: int | str,
    *,
    backend: str | Backend,
    method: str,
    boundary: str,
    init: str | float | np.ndarray | None,
    eps: float,
    normalize_psf: bool,
    snapshots: Iterable[int] | None,
    callback: Callable[[int], Any] | None,
    progress: bool,
    dtype: Any,
    device: str | None,
    tile_shape: str | Sequence[int] | None,
    overlap: int | Sequence[int] | None,
    max_memory: int | None,
    mask: np.ndarray | None,
    margin: str | int | Sequence[int],
    background: Any = None,
    read_noise: float = 0.0,
    regularization: float | None = None,
    spacing: Any = None,
    stop: str | None = None,
    max_iterations: int | None = None,
    tolerance: float | None = None,
    return_info: bool = False,
    threads: int | None = None,
    stacklevel: int = 2,
) -> Any:
    """Run ``algorithm`` with everything :func:`richardson_lucy` does around the loop.

    The arguments are :func:`richardson_lucy`'s; ``stacklevel`` counts the frames from the
    user's call (for warnings).
    """
    count, rule, limit, tolerance = _stopping.check_stop(
        iterations, stop, max_iterations, tolerance
    )
    if count is not None:
        count = v.check_iterations(count)
    elif snapshots is not None:
        raise ValueError("snapshots need a fixed iteration count, not iterations='auto'")
    eps = v.check_eps(eps)
    wanted = () if count is None else v.check_snapshots(snapshots, count)
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None")
    if not isinstance(return_info, bool):
        raise TypeError(f"return_info must be True or False, got {return_info!r}")
    read_noise = _noise.check_read_noise(read_noise)
    template = image if dio.is_device_array(image) else None
    if template is not None and rule == "holdout":
        raise ValueError(
            "stop='holdout' splits the counts on the host: with a device image use "
            "stop='discrepancy'"
        )
    image, psf, be, boundary, method = _validate(
        image,
        psf,
        backend,
        method,
        boundary,
        dtype,
        normalize_psf,
        device,
        stacklevel,
        estimate=True,
        shift=read_noise**2,
        threads=threads,
    )
    if template is not None:
        mask = dio.check_mask(be, mask, image.shape)
        if dio.is_device_array(background):
            background = dio.check_background(be, background, image.shape)
        else:  # a number, or a host map uploaded once
            background = _noise.check_background(background, image.shape, image.dtype)
            background = be.to_backend(background) if dio.is_array(background) else background
        tile_shape = None  # a device image is deconvolved whole, where it is
    else:
        mask = v.check_mask(mask, image.shape)
        background = _noise.check_background(background, image.shape, image.dtype)
    problem = Problem(
        image,
        psf,
        be,
        boundary,
        method,
        mask,
        v.margins_for(boundary, margin, psf.shape),
        init,
        eps,
        background,
        read_noise,
        _regularization.check_regularization(regularization),
        _regularization.check_spacing(spacing, image.ndim),
    )
    _noise.warn_without_light(problem.image, problem.background, read_noise**2, stacklevel)
    if rule == "holdout":
        if problem.read_noise:  # checked first: the shifted image is not integer-valued
            raise ValueError(
                "stop='holdout' splits Poisson counts and Gaussian read noise does not split: "
                "with read_noise use stop='discrepancy'"
            )
        _stopping.check_counts(image)
    keep = sorted({*wanted, count}) if count is not None else []
    options = _Options(algorithm, problem, monitored=return_info or rule is not None)
    plan = tiling.plan_for_backend(
        be, problem.spec, options.need, tile_shape, overlap, max_memory, outputs=max(len(keep), 1)
    )
    if plan is not None and callback is not None:
        raise ValueError("callback cannot follow tiled runs; pass tile_shape=None or progress=True")
    info = _stopping.Info(0 if count is None else count, rule)
    schedule = Schedule(count, rule, limit, tolerance)
    if rule is not None and (plan is not None or rule == "holdout"):
        # The count is chosen on one untiled piece (the central tile's window), then fixed.
        probe = problem if plan is None else _window_problem(problem, plan)
        count = _choose_count(algorithm, probe, schedule, info, progress, stacklevel + 1)
        schedule, keep, info.iterations = Schedule(count), [count], count
    kept = _solve(
        algorithm,
        problem,
        plan,
        schedule,
        keep,
        info,
        callback=callback,
        progress=progress,
        record=return_info,
        stacklevel=stacklevel + 1,
    )
    if template is not None:  # the caller's own array class (clesperanto's)
        kept = {k: dio.like(template, array) for k, array in kept.items()}
    estimate = {k: kept[k] for k in wanted} if wanted else kept[info.iterations]
    return (estimate, info) if return_info else estimate


class _Options:
    """What a run carries beyond the plain problem, and the memory it needs."""

    def __init__(self, algorithm, problem: Problem, monitored: bool, holdout: bool = False):
        self.algorithm = algorithm
        self.backend = problem.backend
        self.weighted = is_weighted(problem.spec, problem.mask)
        self.extra: dict[str, str] = {}
        if dio.is_array(problem.background):
            self.extra["background"] = OBSERVED
        if problem.strength:
            self.extra["tv_factor"] = WORK
        self.host_scratch = 0
        if monitored:
            self.extra["monitor"] = OBSERVED
            if problem.mask is not None:
                self.extra["monitor_mask"] = OBSERVED
            if holdout:
                self.extra["validation"] = OBSERVED
            self.host_scratch = MONITOR_HOST_SCRATCH

    def need(self, spec: BlurSpec) -> MemoryNeed:
        """Backend memory of one piece with blur ``spec``."""
        return memory_need(
            self.backend, spec, self.algorithm, self.weighted, self.extra, self.host_scratch
        )


def _window_problem(problem: Problem, plan: tiling.TilePlan) -> Problem:
    """Return the problem on the central tile's window (where a tiled run picks its count)."""
    tile = tiling.central_tile(plan, problem.image.shape)
    parts = tiling.window_fields(
        plan,
        tile,
        {
            "image": problem.image,
            "mask": problem.mask,
            "background": problem.background
            if isinstance(problem.background, np.ndarray)
            else None,
            "init": problem.init if isinstance(problem.init, np.ndarray) else None,
        },
    )
    return problem._replace(
        image=parts["image"],
        boundary=plan.window_boundary,
        mask=parts["mask"],
        background=problem.background if parts["background"] is None else parts["background"],
        init=problem.init if parts["init"] is None else parts["init"],
    )


class Schedule(NamedTuple):
    """How long a run goes: ``iterations``, or until ``rule`` (at most ``limit``)."""

    iterations: int | None
    rule: str | None = None
    limit: int = 0
    tolerance: float = _stopping.RELATIVE_TOLERANCE


def _choose_count(algorithm, problem, schedule, info, progress, stacklevel) -> int:
    """Run the stopping rule on an untiled ``problem``; record in ``info``; return the count."""
    if schedule.rule != "holdout":
        _solve(
            algorithm,
            problem,
            None,
            schedule,
            [],
            info,
            progress=progress,
            record=True,
            stacklevel=stacklevel + 1,
        )
        return info.iterations
    counts = []
    first, second = _stopping.split_counts(problem.image)
    half = problem.background
    half = half * 0.5 if isinstance(half, np.ndarray) else 0.5 * half
    for train, held_out in ((first, second), (second, first)):
        trial = _stopping.Info(0, schedule.rule)
        # A copy: the run scales its image in place, and this half validates the next run.
        part = problem._replace(image=train.copy(), background=half)
        _solve(
            algorithm,
            part,
            None,
            schedule,
            [],
            trial,
            progress=progress,
            record=True,
            validation=held_out,
            stacklevel=stacklevel + 1,
        )
        counts.append(trial.iterations)
    info.holdout_iterations = tuple(counts)
    return max(1, round(_stopping.HOLDOUT_TRANSFER * sum(counts) / len(counts)))


def _solve(
    algorithm,
    problem: Problem,
    plan: tiling.TilePlan | None,
    schedule: Schedule,
    keep: Sequence[int],
    info: _stopping.Info,
    *,
    callback=None,
    progress: bool = False,
    record: bool = False,
    validation: np.ndarray | None = None,
    stacklevel: int = 2,
) -> dict[int, np.ndarray]:
    """Deconvolve ``problem`` (tiled by ``plan``): ``count`` iterations, or until ``rule``.

    Returns the estimates at the counts in ``keep`` (and at the stop, under a rule other than
    the hold-out's, whose runs only pick a count), in the image's units. Fills ``info``: the
    count run, the guard's count, and with ``record`` or a rule the history. ``stacklevel``
    counts the frames from the user's call.
    """
    p, be = problem, problem.backend
    image = p.image
    # The image holds the data plus the read noise's variance (see deconvolve).
    variance = p.read_noise**2
    on_device = dio.is_device_array(image)
    if on_device:
        start = dio.initial_estimate(be, p.init, image, p.mask, p.background, variance, p.boundary)
    else:
        start = v.initial_estimate(
            v.default_init(p.boundary) if p.init is None else p.init,
            image,
            p.mask,
            p.background,
            shift=variance,
        )
    image, start, psf, eps, exponent, peak = _scaling.scale_problem(image, start, p.psf, p.eps)
    scale = math.ldexp(1.0, -exponent)  # data units per photon
    # The model is H f + b with H the PSF normalised to sum 1 (its scale never matters, as in
    # plain Richardson-Lucy): with the blur H' of the scaled PSF, of sum S, the ratio is
    # g / (H' f / S + b), and S g / (H' f + S b) times H'^T / S is the same update.
    psf_sum = float(psf.sum())
    model_scale = scale * psf_sum
    dtype = image.dtype
    tv = None
    if p.strength:
        tv = _regularization.total_variation(
            p.strength, p.spacing, dio.array_max(image), dio.array_mean(image)
        )
    background_map = None
    offset = variance * model_scale
    if dio.is_array(p.background):
        background_map = p.background * dtype.type(model_scale)  # a power of two: exact
    else:
        offset += float(p.background) * model_scale
    held_out = None if validation is None else validation * dtype.type(scale)
    count, rule, limit = schedule.iterations, schedule.rule, schedule.limit
    monitored = record or rule is not None
    options = _Options(algorithm, p, monitored, holdout=held_out is not None)
    spec = BlurSpec(psf, image.shape, p.boundary, p.method, dtype, p.margins)
    piece = spec if plan is None else spec.with_shape(plan.window_shape, plan.window_boundary)
    if tv is not None:  # a periodic scene has periodic differences (shift equivariance)
        tv = dataclasses.replace(tv, periodic=piece.boundary == "wrap")
    be.check_memory(options.need(piece))
    stopper = None if rule is None else _stopping.Rule(rule, schedule.tolerance)
    histories: list[list[dict[str, float]]] = []
    with be.lock:
        operator = be.blur_operator(piece)
        logger.debug("backend=%s method=%s (asked %s)", be.name, operator.method, p.method)
        info.backend, info.method, info.device = be.name, operator.method, be.device_name
        _precision.check_dynamic_range(image, operator.method, stacklevel=stacklevel)
        # Where a float32 FFT's round-off stands in for a blur that should be 0.
        noise = _precision.round_off_level(operator.method, dtype) * peak
        pieces = 1 if plan is None else len(plan.tiles)
        total = (limit if count is None else count) * pieces
        bar = _progress_bar(total, be.name, operator.method, pieces) if progress else None
        if tv is not None:
            be.tv_guarded()  # reset the guard's count (a read: only where TV runs)

        def run(region, region_start, fields) -> dict[int, np.ndarray]:
            model = build_model(
                be,
                operator,
                piece,
                region,
                region_start,
                fields["mask"],
                eps,
                fields["background"],
                offset,
                tv,
                noise,
            )
            monitor = None
            if monitored:
                monitor = _stopping.Monitor(
                    model, fields["mask"], scale, 1.0 / psf_sum, fields["validation"]
                )
            kept, history = _iterate(
                algorithm(model), model, count, limit, keep, callback, bar, monitor, stopper, take
            )
            histories.append(history)
            return kept

        # Results stay where the image came from: on its device, or on the host.
        take = cast(Any, be).region_copy if on_device else be.to_numpy
        fields = {"mask": p.mask, "background": background_map, "validation": held_out}
        try:
            if plan is None:
                kept = run(image, start, fields)
            else:
                logger.info(
                    "%d tiles of up to %s voxels, overlap %s", pieces, plan.core_shape, plan.overlap
                )
                kept = tiling.deconvolve_tiles(plan, image, start, keep, run, fields)
        finally:
            if bar is not None:
                bar.close()
        if tv is not None:
            info.tv_guarded += be.tv_guarded()
    if monitored:
        central = 0 if plan is None else plan.tiles.index(tiling.central_tile(plan, image.shape))
        info.history = histories[central]
    if stopper is not None:
        info.iterations = stopper.best if rule == "holdout" else len(info.history) - 1
        info.rule_met = rule == "holdout" or stopper.done(info.history)
        if not info.rule_met:
            warnings.warn(
                f"stop={rule!r} was not met in max_iterations={limit}: the model does not fit "
                "the data (a background or read noise left out, invented edges: try "
                "boundary='estimate', background=, read_noise=; data not in photons for "
                "'discrepancy'); the result is the last iterate",
                StoppingWarning,
                stacklevel=stacklevel,
            )
        elif rule == "discrepancy" and _stopping.under_dispersed(info.history[0]):
            warnings.warn(
                "stop='discrepancy' chose 0 iterations: the start fits the data far better "
                "than Poisson noise allows. Camera data with their offset left in, or not in "
                "photons, do that (convert them: offset=, gain=); so can an observed start with "
                "a PSF of about one pixel. The result is the start",
                StoppingWarning,
                stacklevel=stacklevel,
            )
    if info.tv_guarded:
        logger.info(
            "total variation: the guard raised %d voxel updates' denominators "
            "(regularization=%g is strong for these data)",
            info.tv_guarded,
            p.strength,
        )
    for estimate in kept.values():
        _scaling.unscale_in_place(estimate, exponent)
    return kept


def _iterate(
    algorithm, model, count, limit, keep, callback, bar, monitor, rule, take
) -> tuple[dict[int, np.ndarray], list[dict[str, float]]]:
    """Step ``algorithm`` ``count`` times, or until ``rule`` says stop (at most ``limit``).

    Returns ``{k: estimate}`` for ``keep`` (and the stop, unless the rule is the hold-out's),
    and the monitor's records (empty without a monitor). ``take(estimate, region)`` copies an
    estimate out (``to_numpy``, or ``region_copy`` to keep it on the device).
    """
    be, plan = model.backend, model.operator.plan
    region = None if plan.same_domain else plan.observed
    kept = {0: take(algorithm.estimate, region)} if 0 in keep else {}
    history = [] if monitor is None else [monitor.record(0, algorithm.estimate)]
    last = count if rule is None else limit
    interrupted = _interrupt_check.get()
    k = 0
    stopped = rule is not None and rule.done(history)
    while not stopped and k < last:
        k += 1
        algorithm.step()
        if interrupted is not None:
            be.synchronize()  # a device runs queued steps long after they were queued
            interrupted()
        if monitor is not None:
            history.append(monitor.record(k, algorithm.estimate))
        if k in keep:
            kept[k] = take(algorithm.estimate, region)
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(k)
        stopped = rule is not None and rule.done(history)
    if rule is not None and rule.name != "holdout" and k not in kept:
        kept[k] = take(algorithm.estimate, region)
    return kept, history


def _progress_bar(total: int, backend: str, method: str, pieces: int):
    from tqdm.auto import tqdm

    tiles = f", {pieces} tiles" if pieces > 1 else ""
    return tqdm(total=total, desc=f"Richardson-Lucy ({backend}, {method}{tiles})", unit="it")


def _blur(direction, image, psf, backend, method, boundary, dtype, normalize_psf, device):
    template = image if dio.is_device_array(image) else None
    image, psf, be, boundary, method = _validate(
        image, psf, backend, method, boundary, dtype, normalize_psf, device, stacklevel=3
    )
    image, psf, exponent = _scaling.scale_blur(image, psf)
    with be.lock:
        operator = be.blur_operator(BlurSpec(psf, image.shape, boundary, method, image.dtype))
        source = be.to_backend(image)
        out = be.empty(image.shape, image.dtype)
        apply = operator.convolve if direction == "convolve" else operator.correlate
        apply(source, out=out)
        if template is not None:  # stays on the device, as the caller's array class
            return dio.like(template, _scaling.unscale_in_place(out, exponent))
        return _scaling.unscale_in_place(be.to_numpy(out), exponent)


def convolve(
    image: np.ndarray,
    psf: np.ndarray,
    *,
    backend: str | Backend = "auto",
    method: str = "auto",
    boundary: str = "reflect",
    dtype: Any = None,
    normalize_psf: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """Convolve an image with a PSF, equal to ``scipy.ndimage.convolve(image, psf, mode=...)``.

    Parameters
    ----------
    image : array_like
        1D, 2D or 3D real, finite image (negative values are clipped to 0 with a warning).
    psf : array_like
        Non-negative kernel with the image's ndim, origin at ``n // 2`` on each axis.
    backend, method, boundary, dtype, device
        As in :func:`richardson_lucy`.
    normalize_psf : bool, optional
        Scale the PSF to sum 1 first, by default False.

    Returns
    -------
    ndarray
        The blurred image, same shape as ``image``, in ``dtype``.

    Raises
    ------
    TypeError, ValueError, BackendUnavailableError
        As in :func:`richardson_lucy`.

    Examples
    --------
    >>> import numpy as np, scipy.ndimage as ndi
    >>> from gpu_deconv import convolve
    >>> x = np.arange(25.0).reshape(5, 5); h = np.ones((3, 3)) / 9
    >>> bool(np.allclose(convolve(x, h, backend="numpy", method="fft"), ndi.convolve(x, h)))
    True
    """
    return _blur("convolve", image, psf, backend, method, boundary, dtype, normalize_psf, device)


def correlate(
    image: np.ndarray,
    psf: np.ndarray,
    *,
    backend: str | Backend = "auto",
    method: str = "auto",
    boundary: str = "reflect",
    dtype: Any = None,
    normalize_psf: bool = False,
    device: str | None = None,
) -> np.ndarray:
    """Correlate an image with a PSF, equal to ``scipy.ndimage.correlate(image, psf, mode=...)``.

    This is the adjoint of :func:`convolve` for ``boundary="wrap"``.

    Parameters
    ----------
    image : array_like
        1D, 2D or 3D real, finite image (negative values are clipped to 0 with a warning).
    psf : array_like
        Non-negative kernel with the image's ndim, origin at ``n // 2`` on each axis.
    backend, method, boundary, dtype, device
        As in :func:`richardson_lucy`.
    normalize_psf : bool, optional
        Scale the PSF to sum 1 first, by default False.

    Returns
    -------
    ndarray
        The correlated image, same shape as ``image``, in ``dtype``.

    Raises
    ------
    TypeError, ValueError, BackendUnavailableError
        As in :func:`richardson_lucy`.
    """
    return _blur("correlate", image, psf, backend, method, boundary, dtype, normalize_psf, device)


def choose_method(
    shape: Sequence[int],
    psf: np.ndarray,
    *,
    backend: str | Backend = "auto",
    boundary: str = "reflect",
    dtype: Any = "float32",
    device: str | None = None,
) -> str:
    """Return the method that ``method="auto"`` picks for this case on this backend.

    Parameters
    ----------
    shape : sequence of int
        Image shape.
    psf : array_like
        The PSF.
    backend, boundary, device
        As in :func:`richardson_lucy`.
    dtype : {"float32", "float64"}, optional
        Compute dtype, by default float32.

    Returns
    -------
    str
        ``"fft"``, ``"separable"`` or ``"spatial"``.

    Raises
    ------
    TypeError, ValueError, BackendUnavailableError
        As in :func:`richardson_lucy`.
    """
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"shape must hold positive lengths, got {shape}")
    psf = v.check_psf(psf, len(shape), normalize=True)
    boundary = v.check_boundary(boundary, estimate=True)
    be = get_backend(backend, device=device)
    dtype = v.resolve_dtype(dtype, np.dtype(np.float32), be.dtypes)
    return be.plan_blur(BlurSpec(psf, shape, boundary, "auto", dtype)).method
