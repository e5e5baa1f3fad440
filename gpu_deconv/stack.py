"""Channels and time series: every (time point, channel) volume deconvolved on its own.

A stack is an array with named axes from ``TCZYX`` (``S`` for the samples of an RGB/RGBA
image) ending in ``YX``: ``CZYX``, ``TZYX``, ``TCZYX``, ``ZCYX`` (ImageJ's order), their 2D
forms ``CYX``, ``TYX``, ``TCYX``, or one volume ``ZYX``/``YX``. The volumes are read, deconvolved
and written one at a time, so a long series never needs to fit in memory.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ._noise import piece_of_a_larger_image
from ._rl import richardson_lucy

SPATIAL = "ZYX"
LOOPED = "TCS"


def check_axes(axes: str, ndim: int, *, colours: bool = False) -> str:
    """Return ``axes`` (upper case) if it names every axis of an ``ndim``-axis stack.

    Parameters
    ----------
    axes : str
        One letter per axis from ``TCZYXS``, each once; ``Z``, ``Y``, ``X`` in that order,
        ending in ``YX`` (or ``YXS``: RGB samples).
    ndim : int
        The stack's number of axes.
    colours : bool, optional
        Whether an ``S`` (RGB/RGBA samples) axis may be deconvolved colour by colour, by
        default False.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If the letters do not fit ``ndim`` or the rules above, or ``S`` is there without
        ``colours``.

    Examples
    --------
    >>> check_axes("tczyx", 5)
    'TCZYX'
    """
    axes = str(axes).upper()
    if len(axes) != ndim:
        raise ValueError(f"axes {axes!r} name {len(axes)} axes, the image has {ndim}")
    if len(set(axes)) != len(axes) or set(axes) - set(SPATIAL + LOOPED):
        raise ValueError(f"axes must be distinct letters from TCZYXS, got {axes!r}")
    check_colours(axes, colours=colours)
    spatial = "".join(a for a in axes if a in SPATIAL)
    if spatial not in ("YX", "ZYX") or not axes.replace("S", "").endswith("YX"):
        raise ValueError(f"axes must end in YX, with Z (if any) before them, got {axes!r}")
    return axes


# What the API and ``gpu-deconv run`` offer instead of deconvolving across colours.
COLOUR_BY_COLOUR = (
    "convert it to one channel per colour, or ask for colour-by-colour deconvolution "
    "(colours=True, CLI: --colours)"
)


def check_colours(axes: str, *, colours: bool = False, remedy: str = COLOUR_BY_COLOUR) -> None:
    """Refuse an image with an ``S`` axis (RGB/RGBA samples) unless ``colours``: the one rule.

    Every front end applies it to the axes the image declares: :func:`check_axes` (the API's
    stacks, ``gpu-deconv run``), the ``wiener`` and ``tikhonov`` commands (a file's axes)
    and the napari widget (an RGB layer). Deconvolving across colours mixes them.

    Parameters
    ----------
    axes : str
        The image's axes, e.g. ``"YXS"`` (upper or lower case).
    colours : bool, optional
        Whether the caller deconvolves colour by colour, by default False.
    remedy : str, optional
        What the message tells the user to do instead, by default what the API and
        ``gpu-deconv run`` offer.

    Raises
    ------
    ValueError
        If ``axes`` has an ``S`` and not ``colours``.
    """
    axes = str(axes).upper()
    if "S" in axes and not colours:
        raise ValueError(
            f"the image is RGB/RGBA (axes {axes!r}): deconvolving across colours is "
            f"meaningless; {remedy}"
        )


def volume_keys(shape: Sequence[int], axes: str) -> Iterator[tuple[tuple, int]]:
    """Yield ``(index, channel)`` for every volume of a stack, time point by time point.

    ``index`` selects one volume (integers on the looped axes, ``slice(None)`` on Z, Y, X);
    ``channel`` is its channel (or colour) number, 0 without one.
    """
    looped = [i for i, a in enumerate(axes) if a in LOOPED]
    for values in itertools.product(*(range(shape[i]) for i in looped)):
        key: list[Any] = [slice(None)] * len(axes)
        channel = 0
        for i, value in zip(looped, values):
            key[i] = value
            if axes[i] in "CS":
                channel = value
        yield tuple(key), channel


def channel_count(shape: Sequence[int], axes: str) -> int:
    """Return the number of channels (or colours) of a stack, 1 without a C or S axis."""
    return next((shape[i] for i, a in enumerate(axes) if a in "CS"), 1)


def deconvolve_stack(
    image: Any,
    psf: np.ndarray | Sequence[np.ndarray],
    iterations: int = 10,
    *,
    axes: str,
    out: Any = None,
    colours: bool = False,
    progress: bool = False,
    callback: Callable[[int, int], Any] | None = None,
    **options: Any,
) -> Any:
    """Deconvolve every time point and channel of a stack independently, one at a time.

    Parameters
    ----------
    image : array_like
        The stack: an ndarray, or anything indexable volume by volume (a ``numpy.memmap``, a
        zarr array, ...), of the shape ``axes`` names.
    psf : ndarray or sequence of ndarray
        One PSF for every channel, or one per channel in channel order; each has the
        volume's spatial axes (Z, Y, X or Y, X).
    iterations : int, optional
        Iterations per volume, by default 10.
    axes : str
        The stack's axes (see :func:`check_axes`), e.g. ``"TCZYX"`` or ImageJ's ``"TZCYX"``.
    out : array_like, optional
        Where to write the results (same shape; e.g. a memory-mapped output file); by
        default a new float32 array (float64 with ``dtype="float64"``). An integer ``out``
        gets the results rounded to the nearest integer and clipped to its range (a
        warning says how many voxels were clipped), as the CLI's ``--output-dtype uint16``
        does; a float one narrower than the result is refused where a value would overflow.
    colours : bool, optional
        Deconvolve an RGB/RGBA (``S``) axis colour by colour, by default False (refused).
    progress : bool, optional
        One progress bar on stderr over the whole stack, by default False.
    callback : callable, optional
        Called as ``callback(done, total)`` with the iterations done over the whole stack,
        after every iteration with ``tile_shape=None``, else after every volume. An
        exception raised there stops the run (how the napari widget cancels).
    **options
        Passed to :func:`gpu_deconv.richardson_lucy` for every volume (``backend``,
        ``boundary``, ``method``, ``acceleration``, ``init``, ``tile_shape``, ``background``
        (a number), ``read_noise``, ``regularization``, ``spacing``, ...), except
        ``snapshots`` and ``return_info``: a stack returns one array (call
        :func:`gpu_deconv.richardson_lucy` on a volume for those).

    Returns
    -------
    array_like
        ``out``, holding every deconvolved volume.

    Raises
    ------
    ValueError
        If ``iterations`` is ``"auto"`` (a stack takes one fixed count), if ``axes`` does not
        fit ``image`` (or names colours without ``colours``), the
        number of PSFs is neither 1 nor the number of channels, ``out`` has another shape,
        ``snapshots`` or ``return_info`` is given, or a volume holds NaN or infinite values;
        all of these before any volume is computed. And as
        :func:`gpu_deconv.richardson_lucy`.
    TypeError
        If ``out`` holds neither integers nor floats.

    Examples
    --------
    >>> import numpy as np
    >>> from gpu_deconv.psf import gaussian_psf
    >>> from gpu_deconv.stack import deconvolve_stack
    >>> stack = np.random.default_rng(0).random((3, 2, 8, 16, 16)) + 0.1  # T, C, Z, Y, X
    >>> psfs = [gaussian_psf((5, 5, 5), 1.0), gaussian_psf((5, 5, 5), 1.5)]
    >>> deconvolve_stack(stack, psfs, 5, axes="TCZYX", backend="numpy").shape
    (3, 2, 8, 16, 16)
    """
    if isinstance(iterations, str):
        raise ValueError(
            "a stack needs one fixed iteration count for all its volumes: pick it on one "
            "volume with richardson_lucy(..., iterations='auto', return_info=True) and pass "
            "info.iterations"
        )
    shape = tuple(image.shape)
    axes = check_axes(axes, len(shape), colours=colours)
    channels = channel_count(shape, axes)
    psfs = [psf] if isinstance(psf, np.ndarray) else list(psf)
    if len(psfs) not in (1, channels):
        raise ValueError(
            f"give one PSF for all channels or one per channel ({channels}), got {len(psfs)}"
        )
    for name in ("snapshots", "return_info"):
        if options.get(name) not in (None, False):
            raise ValueError(
                f"{name}= is not available for stacks, which return one array of results: "
                "call gpu_deconv.richardson_lucy on a volume for its snapshots or info"
            )
    if out is None:
        dtype = np.float64 if options.get("dtype") in ("float64", np.float64) else np.float32
        out = np.empty(shape, dtype=dtype)
    if tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, the image {shape}")
    store = _Store(out)
    keys = list(volume_keys(shape, axes))
    for key, _ in keys:  # all volumes before any is computed: none is left half done
        _check_finite(image[key], key, axes)
    total = len(keys) * iterations
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="it", desc="deconvolving stack")
    per_iteration = options.get("tile_shape", "auto") is None
    done = 0

    def step(k: int) -> None:
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(done + k, total)

    try:
        for key, channel in keys:
            volume = np.asarray(image[key])
            with piece_of_a_larger_image():  # a dark time point is no sign of a wrong background
                result = richardson_lucy(
                    volume,
                    psfs[channel if len(psfs) > 1 else 0],
                    iterations,
                    callback=step if per_iteration else None,
                    **options,
                )
            store.write(key, result)
            done += iterations
            if not per_iteration:
                if bar is not None:
                    bar.update(iterations)
                if callback is not None:
                    callback(done, total)
    finally:
        if bar is not None:
            bar.close()
    if store.clipped:
        warnings.warn(
            f"{store.clipped} voxels were outside the {store.dtype} range of out and were "
            "clipped to it (write a float out to keep them)",
            UserWarning,
            stacklevel=2,
        )
    return out


def _check_finite(volume: Any, key: tuple, axes: str) -> None:
    """Raise ``ValueError`` naming the volume if it holds NaN or infinite values."""
    volume = np.asarray(volume)
    if np.issubdtype(volume.dtype, np.inexact) and not np.isfinite(volume).all():
        where = ", ".join(f"{a}={k}" for a, k in zip(axes, key) if not isinstance(k, slice))
        raise ValueError(
            f"image contains NaN or infinite values (in the volume at {where or 'the whole'}); "
            "nothing was computed"
        )


class _Store:
    """Writes results into ``out``: integers rounded and clipped (counted), floats checked.

    An ``out`` without a dtype (a writer that converts for itself) takes the results as
    they are.
    """

    def __init__(self, out: Any):
        self.out, self.clipped = out, 0
        self.dtype = np.dtype(out.dtype) if hasattr(out, "dtype") else None
        if self.dtype is not None and self.dtype.kind not in "iuf":
            raise TypeError(f"out must hold integers or floats, got dtype {self.dtype}")

    def write(self, key: tuple, result: np.ndarray) -> None:
        dtype = self.dtype
        if dtype is not None and dtype.kind in "iu":
            # As the CLI's integer --output-dtype: rounded, clipped to the range, counted.
            info = np.iinfo(dtype)
            rounded = np.rint(result)
            self.clipped += int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
            result = np.clip(rounded, info.min, info.max).astype(dtype)
        elif dtype is not None and dtype.itemsize < result.dtype.itemsize:
            largest = float(np.finfo(dtype).max)
            peak = float(np.abs(result).max()) if result.size else 0.0
            if peak > largest:
                raise ValueError(
                    f"a result reaches {peak:.3g}, beyond the range of out's {dtype} (largest "
                    f"{largest:.3g}): give a float32 or float64 out"
                )
        self.out[key] = result
