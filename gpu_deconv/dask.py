"""Richardson-Lucy on dask arrays: volumes larger than memory, on one machine or a cluster.

:func:`richardson_lucy` builds a lazy graph with :func:`dask.array.map_overlap`: each chunk is
deconvolved together with ``overlap`` voxels of its neighbours on each side (the tiling of
:mod:`gpu_deconv.tiling`, with dask's chunks as the tile cores), and the overlap is cropped
away. Nothing is read or computed until the result is stored or computed, so a chunked input
(zarr, or TIFF through ``tifffile``/``dask_image``) streams through: read a chunk and its halo,
deconvolve, write (``result.to_zarr(...)``).

Any dask scheduler runs it: the synchronous and threaded ones, or ``dask.distributed`` on a
workstation or a cluster. On a cluster, zarr inputs and outputs must sit on a filesystem
every worker sees under the same path (a worker without it reads or writes nothing there).
With OpenCL, give each worker process its own device: start one single-threaded worker per
GPU and call :func:`assign_devices` (a worker plugin: a worker its nanny restarts keeps its
device), or set ``GPU_DECONV_DEVICE`` in each worker's environment (``"#0"``, ``"#1"``: the
first, second device).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import numbers
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import numpy as np

from . import _validation as v
from ._noise import check_background, check_read_noise, piece_of_a_larger_image
from ._regularization import check_regularization, check_spacing
from ._rl import interrupt_check
from ._rl import richardson_lucy as _richardson_lucy
from ._stopping import Info, check_stop
from .backends import available_backends, backend_dtypes
from .backends._opencl_devices import distinct_selectors
from .tiling import resolve_overlap, window_boundary

logger = logging.getLogger("gpu_deconv")

# The stop flag of the compute_stoppable call a chunk runs for (its threads carry the
# caller's context): once set, running chunks raise at their next iteration, queued ones at
# their start.
_stop_flag: ContextVar[threading.Event | None] = ContextVar("gpu_deconv_stop", default=None)


class ChunkStopped(RuntimeError):
    """Raised in a chunk whose computation was interrupted (see :func:`compute_stoppable`)."""


def _check_stop() -> None:
    """Raise :class:`ChunkStopped` if this chunk's computation was interrupted or cancelled."""
    flag = _stop_flag.get()
    if (flag is not None and flag.is_set()) or _cancelled_on_worker():
        raise ChunkStopped("the computation was interrupted")


def _cancelled_on_worker() -> bool:
    """Whether this thread runs a ``dask.distributed`` task its client cancelled (best effort).

    A worker cannot stop a running task itself: the chunk looks up its own task's state.
    """
    if "distributed.worker" not in sys.modules:  # not on a worker
        return False
    try:
        from distributed.worker import get_worker, thread_state

        task = get_worker().state.tasks.get(thread_state.key)
    except Exception:  # not in a task, or a distributed without these: run on
        return False
    return task is None or task.state in ("cancelled", "released", "forgotten")


# map_overlap's boundary per mode: windows stop at the volume border ("none") where the mode
# itself is exact there; "wrap" reads the periodic continuation, "constant" reads zeros.
_DASK_BOUNDARY = {
    "reflect": "none",
    "mirror": "none",
    "nearest": "none",
    "estimate": "none",
    "wrap": "periodic",
}


def richardson_lucy(
    image: Any,
    psf: np.ndarray,
    iterations: int = 10,
    *,
    backend: str = "auto",
    method: str = "auto",
    boundary: str = "reflect",
    init: str | float | None = None,
    eps: float = 1e-12,
    normalize_psf: bool = True,
    dtype: Any = None,
    device: str | None = None,
    threads: int | None = None,
    overlap: int | Sequence[int] | None = None,
    chunks: Any = None,
    max_memory: int | None = None,
    mask: Any = None,
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
    """Deconvolve a dask array chunk by chunk, lazily (see the module docstring).

    Parameters
    ----------
    image : dask.array.Array or array_like
        Observed image, 1D to 3D; a NumPy array is wrapped with ``chunks``.
    psf : array_like
        Point spread function, as in :func:`gpu_deconv.richardson_lucy`.
    iterations : int or "auto", optional
        Number of iterations, by default 10. ``"auto"`` (with ``stop``, ``max_iterations``,
        ``tolerance`` as in :func:`gpu_deconv.richardson_lucy`) picks the count now, on the
        chunk that holds the image's centre with its overlap (computed eagerly), and runs
        every chunk for that count (logged at INFO level; so all chunks match at the seams).
    backend, method, boundary, eps, normalize_psf, device, threads, margin
        As in :func:`gpu_deconv.richardson_lucy`; each chunk runs there (backend names only,
        so that workers build their own backend), so ``eps`` is relative to the maximum of
        each chunk with its overlap. With ``boundary="estimate"`` every chunk's window
        estimates its own edges.
    init : {None, "observed", "mean"} or float, optional
        Starting estimate, as in :func:`gpu_deconv.richardson_lucy`; ``"mean"`` reads the
        whole image once to compute its mean.
    mask : dask.array.Array or array_like of bool, optional
        Observed voxels, as in :func:`gpu_deconv.richardson_lucy`; rechunked like ``image``.
    acceleration : {None, "shb", "biggs"}, optional
        As in :func:`gpu_deconv.richardson_lucy`; each chunk keeps its own momentum.
    background : float or dask.array.Array or array_like, optional
        As in :func:`gpu_deconv.richardson_lucy`; an array is rechunked like ``image``.
    read_noise, regularization, spacing
        As in :func:`gpu_deconv.richardson_lucy`.
    dtype : {None, "float32", "float64"}, optional
        Compute and output dtype; by default float64 for float64 images on NumPy, else float32.
    overlap : int or sequence of int, optional
        Neighbouring voxels each chunk is deconvolved with on each side; by default
        :func:`gpu_deconv.tiling.default_overlap` (10 RMS widths of the PSF).
    chunks : optional
        Rechunk to these chunks first (any form ``dask.array.rechunk`` takes); by default the
        image's own chunks (``"auto"`` for a NumPy array).
    max_memory : int, optional
        Backend bytes one chunk's run may use; a chunk (with its overlap) that needs more, or
        more than its worker's backend offers, is deconvolved in tiles
        (``tile_shape="auto"`` of :func:`gpu_deconv.richardson_lucy`).

    return_info : bool, optional
        Also return a :class:`gpu_deconv.Info`: with ``"auto"``, the central chunk's (its
        count, history and rule), to fix the count for other data; with a fixed count, that
        count and no history (the chunks have not run yet).

    Returns
    -------
    dask.array.Array or (dask.array.Array, Info)
        The lazy estimate after ``iterations`` iterations, chunked like the (rechunked)
        input, except that dask merges chunks thinner than the overlap with a neighbour; with
        ``return_info``, the pair.

    Raises
    ------
    TypeError, ValueError, BackendUnavailableError
        As in :func:`gpu_deconv.richardson_lucy`, when the graph is built for arguments, and
        when a chunk is computed for its values (NaN, inf).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from gpu_deconv.dask import richardson_lucy
    >>> from gpu_deconv.psf import gaussian_psf
    >>> image = da.from_array(np.ones((64, 64)), chunks=32)
    >>> result = richardson_lucy(image, gaussian_psf((9, 9), 1.5), 5, backend="numpy")
    >>> result.chunks, float(result.sum().compute())
    (((32, 32), (32, 32)), 4096.0)
    """
    import dask.array as da

    count, rule, limit, tolerance = check_stop(iterations, stop, max_iterations, tolerance)
    if count is not None:
        count = v.check_iterations(count)
    eps = v.check_eps(eps)
    read_noise = check_read_noise(read_noise)
    check_regularization(regularization)
    boundary = v.check_boundary(boundary, estimate=True)
    method = v.check_method(method)
    device = v.check_device(device)
    threads = v.check_threads(threads)
    acceleration = v.check_acceleration(acceleration)
    image, psf, compute_dtype, depth = _lazy_input(
        image, psf, backend, dtype, normalize_psf, overlap, chunks
    )
    max_memory = v.check_max_memory(max_memory)
    v.margins_for(boundary, margin, psf.shape)  # each chunk gets the margin, checked once here
    check_spacing(spacing, image.ndim)
    fields: dict[str, Any] = {}
    if mask is not None:
        fields["mask"] = _dask_mask(mask, image)
    if background is not None and not isinstance(background, numbers.Real):
        fields["background"] = level = _dask_field(background, image, compute_dtype)
    else:
        level = check_background(background, image.shape, compute_dtype)
    start = _initial_value(
        v.default_init(boundary) if init is None else init, image, fields.get("mask"), level
    )
    observed_mean = _observed_mean(image, start, read_noise)
    options: dict[str, Any] = dict(
        psf=psf,
        iterations=count,
        backend=backend,
        method=method,
        eps=eps,
        normalize_psf=False,  # normalised once above
        dtype=compute_dtype.name,
        device=device,
        threads=threads,
        boundary=boundary,
        start=start,
        observed_mean=observed_mean,
        depth=depth,
        max_memory=max_memory,
        margin=margin,
        acceleration=acceleration,
        read_noise=read_noise,
        regularization=regularization,
        spacing=spacing,
    )
    if not isinstance(return_info, bool):
        raise TypeError(f"return_info must be True or False, got {return_info!r}")
    if count is None:
        info = _central_info(
            image,
            fields,
            depth,
            options,
            background,
            stop=rule,
            max_iterations=limit,
            tolerance=tolerance if rule == "relative" else None,
        )
        options["iterations"] = info.iterations
    else:
        info = Info(count)  # no history: the chunks have not run
    if "background" not in fields:
        options["background"] = background
    result = da.map_overlap(
        functools.partial(_deconvolve_block, names=tuple(fields), **options),
        image,
        *fields.values(),
        depth=dict(enumerate(depth)),
        boundary=_DASK_BOUNDARY.get(boundary, 0),
        dtype=compute_dtype,
        meta=np.empty((0,) * image.ndim, compute_dtype),
    )
    return (result, info) if return_info else result


def _lazy_input(image, psf, backend, dtype, normalize_psf, overlap, chunks, nonnegative=True):
    """Validate what every lazy front end shares; return (image, psf, dtype, depth).

    ``image`` comes back as a dask array (a NumPy one validated first), rechunked to
    ``chunks`` if given; ``depth`` is the overlap per axis.
    """
    import dask.array as da

    if not isinstance(backend, str):
        raise TypeError("backend must be a name here, so that each worker builds its own")
    if backend not in available_backends():
        raise ValueError(f"unknown backend {backend!r}; allowed: {', '.join(available_backends())}")
    # The workers build the backend, maybe on machines the client is not (no GPU here is
    # fine): the dtypes come from the backend's class, and "auto" promises only the common ones.
    supported = backend_dtypes(backend)
    if not isinstance(image, da.Array):
        checked = v.check_image(image, dtype, 3, supported=supported, nonnegative=nonnegative)
        image = da.from_array(checked)
    if not 1 <= image.ndim <= v.MAX_NDIM or image.size == 0:
        raise ValueError(f"image must be a non-empty 1D, 2D or 3D array, got shape {image.shape}")
    compute_dtype = v.resolve_dtype(dtype, np.dtype(image.dtype), supported)
    psf = v.check_psf(psf, image.ndim, normalize_psf)
    # dask cannot overlap by more than an axis holds; the whole axis is all there is.
    depth = tuple(min(d, n) for d, n in zip(resolve_overlap(overlap, psf), image.shape))
    if chunks is not None:
        image = image.rechunk(chunks)
    return image, psf, compute_dtype, depth


def tikhonov(
    image: Any,
    psf: np.ndarray,
    regularization: float,
    *,
    regularizer: str = "identity",
    backend: str = "auto",
    boundary: str = "reflect",
    normalize_psf: bool = True,
    dtype: Any = None,
    device: str | None = None,
    overlap: int | Sequence[int] | None = None,
    chunks: Any = None,
    max_memory: int | None = None,
) -> Any:
    """Filter a dask array chunk by chunk with :func:`gpu_deconv.tikhonov`, lazily.

    Parameters
    ----------
    image : dask.array.Array or array_like
        Observed image, 1D to 3D (negative values are kept); a NumPy array is wrapped.
    psf : array_like
        Point spread function, as in :func:`gpu_deconv.tikhonov`.
    regularization : float
        The penalty's weight (``> 0``), as in :func:`gpu_deconv.tikhonov`.
    regularizer, backend, boundary, normalize_psf, dtype, device
        As in :func:`gpu_deconv.tikhonov` (backend names only: each worker builds its own).
    overlap, chunks, max_memory
        As in :func:`richardson_lucy`: each chunk is filtered with ``overlap`` voxels of its
        neighbours (default 10 RMS widths of the PSF), tiled inside the worker if it does
        not fit.

    Returns
    -------
    dask.array.Array
        The lazy estimate, chunked like the (rechunked) input.

    Raises
    ------
    TypeError, ValueError, BackendUnavailableError
        As in :func:`gpu_deconv.tikhonov`, when the graph is built for arguments, and when a
        chunk is computed for its values.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from gpu_deconv.dask import tikhonov
    >>> from gpu_deconv.psf import gaussian_psf
    >>> image = da.from_array(np.ones((64, 64)), chunks=32)
    >>> result = tikhonov(image, gaussian_psf((9, 9), 1.5), 1e-3, backend="numpy")
    >>> result.chunks, bool(np.allclose(result.compute(), 1 / (1 + 1e-3)))
    (((32, 32), (32, 32)), True)
    """
    return _filter_graph(
        "tikhonov",
        image,
        psf,
        dict(
            regularization=v.check_positive(regularization, "regularization"),
            regularizer=v.check_regularizer(regularizer),
        ),
        (backend, boundary, normalize_psf, dtype, device, overlap, chunks, max_memory),
    )


def wiener(
    image: Any,
    psf: np.ndarray,
    balance: float | None = None,
    *,
    noise_variance: Any = None,
    regularizer: str = "laplacian",
    backend: str = "auto",
    boundary: str = "reflect",
    normalize_psf: bool = True,
    dtype: Any = None,
    device: str | None = None,
    overlap: int | Sequence[int] | None = None,
    chunks: Any = None,
    max_memory: int | None = None,
) -> Any:
    """Filter a dask array chunk by chunk with :func:`gpu_deconv.wiener` (``balance``), lazily.

    ``noise_variance`` is not offered: it estimates the signal's power from the whole image,
    which no chunk sees.

    Parameters
    ----------
    image : dask.array.Array or array_like
        Observed image, 1D to 3D (negative values are kept); a NumPy array is wrapped.
    psf : array_like
        Point spread function, as in :func:`gpu_deconv.wiener`.
    balance : float
        Noise-to-signal ratio (``> 0``), as in :func:`gpu_deconv.wiener`; required.
    noise_variance : None
        Refused with the reason (see above).
    regularizer : {"laplacian", "identity"}, optional
        As in :func:`gpu_deconv.wiener`, by default ``"laplacian"``.
    backend, boundary, normalize_psf, dtype, device, overlap, chunks, max_memory
        As in :func:`tikhonov`.

    Returns
    -------
    dask.array.Array
        The lazy estimate, chunked like the (rechunked) input.

    Raises
    ------
    TypeError, ValueError, BackendUnavailableError
        As in :func:`tikhonov`.
    """
    if noise_variance is not None:
        raise ValueError(
            "noise_variance is not offered chunk by chunk: it estimates the signal's power from "
            "the whole image, which no chunk sees; give balance= (or use gpu_deconv.wiener in "
            "memory)"
        )
    if balance is None:
        raise TypeError("wiener() needs balance=, the noise-to-signal ratio (> 0)")
    return _filter_graph(
        "wiener",
        image,
        psf,
        dict(
            balance=v.check_positive(balance, "balance"),
            regularizer=v.check_regularizer(regularizer),
        ),
        (backend, boundary, normalize_psf, dtype, device, overlap, chunks, max_memory),
    )


def _filter_graph(name: str, image: Any, psf: Any, weights: dict, settings: tuple) -> Any:
    """Return the map_overlap graph of one direct filter (the lazy front ends' shared body)."""
    import dask.array as da

    from ._filters import check_filter_boundary

    backend, boundary, normalize_psf, dtype, device, overlap, chunks, max_memory = settings
    boundary = check_filter_boundary(boundary)
    device = v.check_device(device)
    image, psf, compute_dtype, depth = _lazy_input(
        image, psf, backend, dtype, normalize_psf, overlap, chunks, nonnegative=False
    )
    options: dict[str, Any] = dict(
        name=name,
        psf=psf,
        backend=backend,
        normalize_psf=False,  # normalised once above
        dtype=compute_dtype.name,
        device=device,
        boundary=window_boundary(boundary),
        max_memory=v.check_max_memory(max_memory),
        **weights,
    )
    return da.map_overlap(
        functools.partial(_filter_block, **options),
        image,
        depth=dict(enumerate(depth)),
        boundary=_DASK_BOUNDARY.get(boundary, 0),
        dtype=compute_dtype,
        meta=np.empty((0,) * image.ndim, compute_dtype),
    )


def _filter_block(block: np.ndarray, *, name: str, **options: Any) -> np.ndarray:
    """Filter one chunk with its overlap (map_overlap crops the overlap afterwards)."""
    from . import _filters

    if block.size == 0:  # dask's meta probe
        return np.zeros(block.shape, options["dtype"])
    _check_stop()  # one pass: an interrupted computation stops before it
    return getattr(_filters, name)(block, **options)


def _dask_mask(mask: Any, image: Any) -> Any:
    """Return the mask as a bool dask array chunked like ``image`` (NumPy masks: validated)."""
    import dask.array as da

    if not isinstance(mask, da.Array):
        return da.from_array(v.check_mask(mask, image.shape), chunks=image.chunks)
    if mask.shape != image.shape:
        raise ValueError(f"mask must have the image's shape {image.shape}, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"a dask mask must be boolean, got dtype {mask.dtype}")
    return mask.rechunk(image.chunks)


def _dask_field(values: Any, image: Any, dtype: np.dtype) -> Any:
    """Return a per-voxel array (a background map) as a dask array chunked like ``image``."""
    import dask.array as da

    if not isinstance(values, da.Array):
        return da.from_array(check_background(values, image.shape, dtype), chunks=image.chunks)
    if values.shape != image.shape:
        raise ValueError(f"background must have the image's shape {image.shape}")
    return values.astype(dtype).rechunk(image.chunks)


def _central_info(image, fields, depth, options, background, **rule) -> Info:
    """Run the stopping rule on the chunk holding the centre, with its overlap; return its info.

    The window is deconvolved as a tile would be (``window_boundary``), in memory.
    """
    window = []
    for axis, n in enumerate(image.shape):
        edges = np.cumsum((0, *image.chunks[axis]))
        k = int(np.searchsorted(edges, n // 2, side="right")) - 1
        window.append(slice(max(edges[k] - depth[axis], 0), min(edges[k + 1] + depth[axis], n)))
    region = tuple(window)
    parts = {name: np.asarray(array[region].compute()) for name, array in fields.items()}
    # Every block option but those map_overlap's blocks need for themselves.
    block_only = ("iterations", "boundary", "start", "observed_mean", "depth", "margin")
    keywords = {key: value for key, value in options.items() if key not in block_only}
    mode = window_boundary(options["boundary"])
    extra = {"margin": options["margin"]} if mode in v.ESTIMATED_BOUNDARIES else {}
    block = np.asarray(image[region].compute())
    start = _block_start(block, options["start"], options["observed_mean"])
    # Recorded under the filters in force (what they hide stays hidden) and issued again at
    # the user's call, also when the run raises.
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            _, info = _richardson_lucy(
                block,
                iterations="auto",
                boundary=mode,
                init=start,
                mask=parts.get("mask"),
                background=parts.get("background", background),
                return_info=True,
                **keywords,
                **extra,
                **rule,
            )
    finally:
        for warning in caught:
            warnings.warn(warning.message, warning.category, stacklevel=3)
    logger.info(
        "iterations='auto' (%s): %d, chosen on the central chunk", rule["stop"], info.iterations
    )
    return info


def _initial_value(init: Any, image: Any, mask: Any, background: Any = 0.0) -> str | float:
    import dask.array as da

    if isinstance(init, str) and init == "mean":
        # The mean of the image as validated (negatives clipped), as in memory.
        clipped = da.maximum(image, 0)
        kept = (lambda x: x) if mask is None else (lambda x: x[da.asarray(mask)])
        mean = float(kept(clipped).mean().compute())
        if not mean > 0:
            raise ValueError("init='mean' needs an image with a positive mean")
        level = background
        if isinstance(background, da.Array):
            level = float(kept(background).mean().compute())
        light = mean - float(level)
        return light if light > 0.01 * mean else 0.01 * mean
    if isinstance(init, str) and init == "observed":
        return init
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return v.check_init_number(init)
    raise TypeError(f"init must be 'observed', 'mean' or a positive number here, got {init!r}")


def _observed_mean(image: Any, start: str | float, read_noise: float) -> float | None:
    """Return the mean the observed start with read noise is raised by: the whole image's.

    As in memory (``v.initial_estimate``), where the image is the whole; left to each chunk,
    it would be the chunk's own. None where the start is not raised.
    """
    import dask.array as da

    if start != "observed" or not read_noise:
        return None
    return float(da.maximum(image, 0).mean().compute())


def _block_start(block: np.ndarray, start: str | float, mean: float | None) -> Any:
    """Return the start for a block's call: ``start``, or the observed one raised by ``mean``."""
    if mean is None:
        return start
    # The data without the read noise's shift, as in memory.
    return v.raised_observed(np.maximum(block, 0), mean)


def _deconvolve_block(
    block: np.ndarray,
    *parts: np.ndarray,
    names: tuple[str, ...],
    boundary: str,
    start: str | float,
    observed_mean: float | None,
    depth: tuple[int, ...],
    margin: Any,
    block_info: dict | None = None,
    **options: Any,
) -> np.ndarray:
    """Deconvolve one chunk with its overlap (map_overlap crops the overlap afterwards).

    ``parts`` are the chunk's parts of the per-voxel arrays ``names`` (mask, background).
    """
    fields = dict(zip(names, parts))
    mask = fields.get("mask")
    if "background" in fields:
        options["background"] = fields["background"]
    init: Any = _block_start(block, start, observed_mean)
    if boundary == "constant" and not isinstance(start, str):
        init = _zero_outside(block.shape, start, depth, block_info)
    if mask is not None and not mask.any():  # dask's meta probe, or a chunk nobody observed
        return np.zeros(block.shape, options["dtype"])
    mode = window_boundary(boundary)
    if mode in v.ESTIMATED_BOUNDARIES:
        options["margin"] = margin
    _check_stop()
    # A dark chunk is no sign of a wrong background; an interrupted computation stops the
    # chunk at its next iteration.
    with piece_of_a_larger_image(), interrupt_check(_check_stop):
        return _richardson_lucy(block, boundary=mode, init=init, mask=mask, **options)


def _zero_outside(shape, value: float, depth, block_info) -> np.ndarray:
    """Return a constant start that is zero in the padding map_overlap added past the border."""
    init = np.full(shape, value)
    if block_info is None:  # dask's meta probe
        return init
    info = block_info[0]
    for axis, (index, count) in enumerate(zip(info["chunk-location"], info["num-chunks"])):
        pad = depth[axis]
        if pad == 0:
            continue
        lead = [slice(None)] * len(shape)
        if index == 0:
            lead[axis] = slice(0, pad)
            init[tuple(lead)] = 0
        if index == count - 1:
            lead[axis] = slice(shape[axis] - pad, None)
            init[tuple(lead)] = 0
    return init


def compute_stoppable(collection: Any, scheduler: str = "threads") -> Any:
    """Compute a dask collection on a local scheduler so that an interruption stops it.

    Interrupted (Ctrl-C, or any exception in the calling thread while it waits), the chunks
    of this module being deconvolved stop at their next iteration, queued tasks are dropped,
    and the call returns (raising the interruption) only once no task runs any more: a
    store's output can then be removed without a late chunk writing into it. Plain
    ``compute()`` raises at once but leaves its threads computing until their chunks end.
    A second Ctrl-C or SIGTERM while the running chunks stop waits for them too.

    Parameters
    ----------
    collection : dask collection
        What to compute, e.g. ``result`` or ``result.to_zarr(path, compute=False)``.
    scheduler : {"threads", "sync", "processes"}, optional
        dask's local schedulers, by default ``"threads"`` (a new pool of dask's
        ``num_workers`` threads, by default one per core); ``"processes"`` terminates its
        worker processes when interrupted.

    Returns
    -------
    object
        What ``collection.compute()`` returns.

    Raises
    ------
    ValueError
        If ``scheduler`` is none of the above (a ``dask.distributed`` client cancels its own
        futures: ``client.cancel``).
    """
    from dask import config
    from dask.system import CPU_COUNT

    if scheduler == "sync":  # runs in this thread: the interruption stops it where it is
        return collection.compute(scheduler="sync")
    workers = config.get("num_workers", None) or CPU_COUNT
    if scheduler == "processes":
        import multiprocessing

        context = multiprocessing.get_context(config.get("multiprocessing.context", "spawn"))
        processes = context.Pool(workers, initializer=_pool_worker)
        try:
            result = collection.compute(scheduler="processes", pool=processes)
        except BaseException:
            with _signals_held():
                processes.terminate()  # their chunks cannot see this process's flag
                processes.join()
            raise
        processes.close()
        processes.join()
        return result
    if scheduler != "threads":
        raise ValueError(f"scheduler must be 'threads', 'sync' or 'processes', got {scheduler!r}")
    stop = threading.Event()
    pool = _ContextPool(workers)
    token = _stop_flag.set(stop)  # the pool's tasks run in this context: they see ``stop``
    try:
        return collection.compute(scheduler="threads", pool=pool)
    except BaseException:
        with _signals_held():
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        _stop_flag.reset(token)
        pool.shutdown(wait=False)


class _ContextPool(ThreadPoolExecutor):
    """A thread pool whose tasks run in the context of the thread that submitted them.

    As dask's own pool of recent versions: warning filters, and ``compute_stoppable``'s flag.
    """

    def submit(self, fn, /, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` in a copy of the caller's context."""
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def _pool_worker() -> None:
    """Start a worker process of ``compute_stoppable``: Ctrl-C is its parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent terminates it
    try:
        from dask.multiprocessing import default_initializer
    except ImportError:
        return
    default_initializer()  # dask's own: a fresh NumPy random state


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Let Ctrl-C and SIGTERM do nothing while inside (main thread only): cleanup finishes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: None) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def assign_devices(client: Any, devices: Sequence[str] | None = None) -> dict[str, str]:
    """Give each worker of a ``dask.distributed`` client its own OpenCL device.

    Workers on the same host get devices in turn: by default ``"#0"``, ``"#1"``, ... over the
    host's usable devices of the default kind (its GPUs if it has any), in
    :func:`gpu_deconv.list_devices` order; a device that failed its check is never handed out,
    and a CPU that two platforms expose counts once. Each worker checks its selector against its own
    devices first; then a worker plugin records the choice by worker name, so that a worker
    restarted by its nanny selects the same device again. Worker processes only: threads of
    one process share one device. Workers that join later keep their default device (call
    this again to include them).

    Parameters
    ----------
    client : distributed.Client
        Client of the cluster.
    devices : sequence of str, optional
        Device selectors to hand out per host (name substrings, optionally ``"name#k"``); by
        default every device of the default kind on the host.

    Returns
    -------
    dict of str to str
        Worker address to the name of the device it got.

    Raises
    ------
    BackendUnavailableError
        If a worker has no device matching its selector.
    """
    from ._worker_devices import DevicePlugin

    workers = client.scheduler_info()["workers"]
    by_host: dict[str, list[str]] = {}
    for address, info in sorted(workers.items()):
        by_host.setdefault(info["host"], []).append(address)
    assigned, selectors = {}, {}
    for addresses in by_host.values():
        if devices:
            choices = list(devices)
        else:
            found = next(iter(client.run(distinct_selectors, workers=addresses[:1]).values()))
            choices = found or ["#0"]  # no usable device: the worker's check says why
        for i, address in enumerate(addresses):
            selector = choices[i % len(choices)]
            assigned.update(client.run(_device_name, selector, workers=[address]))
            selectors[workers[address]["name"]] = selector
    client.register_plugin(DevicePlugin(selectors))
    return assigned


def _device_name(selector: str) -> str:
    """Name of the device ``selector`` picks on this worker (raises if none matches)."""
    from .backends._opencl_devices import pick_device

    return pick_device(selector).name.strip()
