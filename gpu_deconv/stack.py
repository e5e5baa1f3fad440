"""Channels and time series: every (time point, channel) volume deconvolved on its own.

A stack is an array with named axes from ``TCZYX`` (``S`` for the samples of an RGB/RGBA
image) ending in ``YX``: ``CZYX``, ``TZYX``, ``TCZYX``, ``ZCYX`` (ImageJ's order), their 2D
forms ``CYX``, ``TYX``, ``TCYX``, or one volume ``ZYX``/``YX``. The volumes are read, deconvolved
and written one at a time, so a long series never needs to fit in memory.
"""

from __future__ import annotations

import itertools
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
    if "S" in axes and not colours:
        raise ValueError(
            "the image is RGB/RGBA (axes "
            f"{axes!r}): deconvolving across colours is meaningless; convert it to one channel "
            "per colour, or ask for colour-by-colour deconvolution (colours=True, CLI: --colours)"
        )
    spatial = "".join(a for a in axes if a in SPATIAL)
    if spatial not in ("YX", "ZYX") or not axes.replace("S", "").endswith("YX"):
        raise ValueError(f"axes must end in YX, with Z (if any) before them, got {axes!r}")
    return axes


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
        default a new float32 array (float64 with ``dtype="float64"``).
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
        (a number), ``read_noise``, ``regularization``, ``spacing``, ...).

    Returns
    -------
    array_like
        ``out``, holding every deconvolved volume.

    Raises
    ------
    ValueError
        If ``iterations`` is ``"auto"`` (a stack takes one fixed count), if ``axes`` does not
        fit ``image`` (or names colours without ``colours``), the
        number of PSFs is neither 1 nor the number of channels, or ``out`` has another shape;
        and as :func:`gpu_deconv.richardson_lucy`.

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
    if out is None:
        dtype = np.float64 if options.get("dtype") in ("float64", np.float64) else np.float32
        out = np.empty(shape, dtype=dtype)
    if tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, the image {shape}")
    keys = list(volume_keys(shape, axes))
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
            out[key] = result
            done += iterations
            if not per_iteration:
                if bar is not None:
                    bar.update(iterations)
                if callback is not None:
                    callback(done, total)
    finally:
        if bar is not None:
            bar.close()
    return out
