"""The driver every algorithm runs through: validation, planning, tiling, snapshots, progress.

Algorithms (:mod:`gpu_deconv.algorithms`) only set themselves up on a model and step; the
public :func:`richardson_lucy` is plain Richardson-Lucy through :func:`deconvolve`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, overload

import numpy as np

from . import _precision, _scaling, tiling
from . import _validation as v
from ._model import build_model, is_weighted, memory_need
from .algorithms import ALGORITHMS, Algorithm, RichardsonLucy
from .backends import Backend, get_backend
from .backends._base import BlurSpec

logger = logging.getLogger("gpu_deconv")


def _validate(
    image, psf, backend, method, boundary, dtype, normalize_psf, device, stacklevel, estimate=False
):
    """Validate the shared arguments; return (image, psf, backend, boundary, method).

    ``stacklevel`` counts the frames between the user's call and this function; ``estimate``
    allows ``boundary="estimate"`` (deconvolution only).
    """
    boundary = v.check_boundary(boundary, estimate)
    method = v.check_method(method)
    be = get_backend(backend, device=device)
    image = v.check_image(image, dtype, stacklevel=stacklevel + 1, supported=be.dtypes)
    psf = v.check_psf(psf, image.ndim, normalize_psf)
    return image, psf, be, boundary, method


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
    snapshots: None = ...,
    callback: Callable[[int], Any] | None = ...,
    progress: bool = ...,
    dtype: Any = ...,
    device: str | None = ...,
    tile_shape: str | Sequence[int] | None = ...,
    overlap: int | Sequence[int] | None = ...,
    max_memory: int | None = ...,
    mask: np.ndarray | None = ...,
    margin: str | int | Sequence[int] = ...,
    acceleration: str | None = ...,
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
    tile_shape: str | Sequence[int] | None = ...,
    overlap: int | Sequence[int] | None = ...,
    max_memory: int | None = ...,
    mask: np.ndarray | None = ...,
    margin: str | int | Sequence[int] = ...,
    acceleration: str | None = ...,
) -> dict[int, np.ndarray]: ...


def richardson_lucy(
    image: np.ndarray,
    psf: np.ndarray,
    iterations: int = 10,
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
    tile_shape: str | Sequence[int] | None = "auto",
    overlap: int | Sequence[int] | None = None,
    max_memory: int | None = None,
    mask: np.ndarray | None = None,
    margin: str | int | Sequence[int] = "full",
    acceleration: str | None = None,
) -> np.ndarray | dict[int, np.ndarray]:
    r"""Deconvolve an image with the Richardson-Lucy algorithm.

    Parameters
    ----------
    image : (M, N[, P]) array_like
        Observed image, 1D, 2D or 3D, real and finite. Integer images are converted; negative
        values are clipped to 0 with a warning.
    psf : array_like
        Point spread function with the same number of dimensions as ``image``, non-negative
        (it may be larger than the image). Its origin is index ``n // 2`` on each axis.
    iterations : int, optional
        Number of iterations, by default 10. ``0`` returns the initial estimate.
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
        the margin by reflection with ``"estimate"``). By default (``None``) the observed
        image, or ``"mean"`` with ``boundary="estimate"``. In the image's units; arrays must
        be non-negative.
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
        Device name substring for device backends (see :func:`list_devices`).
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

    Returns
    -------
    ndarray or dict of int to ndarray
        The estimate after ``iterations`` iterations, with the image's shape and ``dtype``;
        if ``snapshots`` is given, a dict mapping each requested iteration count to its
        estimate instead.

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
    the README, "Verified agreement"). ``method="fft"`` in float32 therefore warns
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
        tile_shape=tile_shape,
        overlap=overlap,
        max_memory=max_memory,
        mask=mask,
        margin=margin,
        stacklevel=3,
    )


def deconvolve(
    algorithm: type[Algorithm],
    image: np.ndarray,
    psf: np.ndarray,
    iterations: int,
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
    stacklevel: int = 2,
) -> np.ndarray | dict[int, np.ndarray]:
    """Run ``algorithm`` with everything :func:`richardson_lucy` does around the loop.

    The arguments are :func:`richardson_lucy`'s; ``stacklevel`` counts the frames from the
    user's call (for warnings).
    """
    iterations = v.check_iterations(iterations)
    eps = v.check_eps(eps)
    wanted = v.check_snapshots(snapshots, iterations)
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None")
    image, psf, be, boundary, method = _validate(
        image, psf, backend, method, boundary, dtype, normalize_psf, device, stacklevel, True
    )
    mask = v.check_mask(mask, image.shape)
    margins = v.margins_for(boundary, margin, psf.shape)
    start = v.initial_estimate(v.default_init(boundary) if init is None else init, image, mask)
    image, start, psf, eps, exponent = _scaling.scale_problem(image, start, psf, eps)
    spec = BlurSpec(psf, image.shape, boundary, method, image.dtype, margins)
    weighted = is_weighted(spec, mask)
    keep = sorted({*wanted, iterations})
    plan = tiling.plan_for_backend(
        be,
        spec,
        lambda piece: memory_need(be, piece, algorithm, weighted),
        tile_shape,
        overlap,
        max_memory,
        outputs=len(keep),
    )
    if plan is not None and callback is not None:
        raise ValueError("callback cannot follow tiled runs; pass tile_shape=None or progress=True")
    piece = spec if plan is None else spec.with_shape(plan.window_shape, plan.window_boundary)
    be.check_memory(memory_need(be, piece, algorithm, weighted))
    with be.lock:
        operator = be.blur_operator(piece)
        logger.debug("backend=%s method=%s (asked %s)", be.name, operator.method, method)
        _precision.check_dynamic_range(image, operator.method, stacklevel=stacklevel)
        pieces = 1 if plan is None else len(plan.tiles)
        bar = (
            _progress_bar(iterations * pieces, be.name, operator.method, pieces)
            if progress
            else None
        )

        def run(region, region_start, region_mask) -> dict[int, np.ndarray]:
            model = build_model(be, operator, piece, region, region_start, region_mask, eps)
            return _iterate(algorithm(model), model, iterations, keep, callback, bar)

        try:
            if plan is None:
                kept = run(image, start, mask)
            else:
                logger.info(
                    "%d tiles of up to %s voxels, overlap %s", pieces, plan.core_shape, plan.overlap
                )
                kept = tiling.deconvolve_tiles(plan, image, start, keep, run, mask)
        finally:
            if bar is not None:
                bar.close()
    for estimate in kept.values():
        _scaling.unscale_in_place(estimate, exponent)
    if wanted:
        return {k: kept[k] for k in wanted}
    return kept[iterations]


def _iterate(algorithm, model, iterations, keep, callback, bar) -> dict[int, np.ndarray]:
    """Step ``algorithm`` ``iterations`` times; return ``{count: estimate}`` for ``keep``."""
    be, plan = model.backend, model.operator.plan
    region = None if plan.same_domain else plan.observed
    kept = {0: be.to_numpy(algorithm.estimate, region)} if 0 in keep else {}
    for k in range(1, iterations + 1):
        algorithm.step()
        if k in keep:
            kept[k] = be.to_numpy(algorithm.estimate, region)
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(k)
    return kept


def _progress_bar(total: int, backend: str, method: str, pieces: int):
    from tqdm.auto import tqdm

    tiles = f", {pieces} tiles" if pieces > 1 else ""
    return tqdm(total=total, desc=f"Richardson-Lucy ({backend}, {method}{tiles})", unit="it")


def _blur(direction, image, psf, backend, method, boundary, dtype, normalize_psf, device):
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
