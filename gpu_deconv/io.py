"""TIFF and zarr input and output: voxel-size metadata kept, outputs written atomically."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

OUTPUT_DTYPES = ("float32", "float64", "uint16", "uint8")


def convert_for_output(data: np.ndarray, dtype: str) -> tuple[np.ndarray, int]:
    """Convert a result to an output dtype; integers are rounded and clipped to their range.

    Parameters
    ----------
    data : ndarray
        Floating-point result.
    dtype : {"float32", "float64", "uint16", "uint8"}
        Output dtype.

    Returns
    -------
    ndarray
        The converted array.
    int
        How many values were clipped (always 0 for float outputs).

    Raises
    ------
    ValueError
        If ``dtype`` is not one of :data:`OUTPUT_DTYPES`.
    """
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"unknown output dtype {dtype!r}; allowed: {', '.join(OUTPUT_DTYPES)}")
    if dtype.startswith("float"):
        return data.astype(dtype), 0
    top = np.iinfo(dtype).max
    rounded = np.rint(data)
    clipped = int(np.count_nonzero((rounded < 0) | (rounded > top)))
    return np.clip(rounded, 0, top).astype(dtype), clipped


@dataclass(frozen=True)
class TiffImage:
    """An image read from a TIFF file.

    Attributes
    ----------
    data : ndarray
        Pixel data, squeezed of length-1 axes.
    voxel_size : tuple of float or None
        Voxel size per axis (z, y, x or y, x) in the file's unit, when the file records it.
    """

    data: np.ndarray
    voxel_size: tuple[float, ...] | None


def read_tiff(path: str | os.PathLike) -> TiffImage:
    """Read a 2D or 3D TIFF (ImageJ hyperstacks included) with its voxel size.

    Parameters
    ----------
    path : str or PathLike
        File to read.

    Returns
    -------
    TiffImage
        The data and voxel size.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable TIFF.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            page = tif.pages[0]
            voxel = _voxel_size(tif, page, np.squeeze(data).ndim)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable TIFF file ({exc})") from exc
    return TiffImage(np.squeeze(data), voxel)


def _voxel_size(tif, page, ndim: int) -> tuple[float, ...] | None:
    def resolution(tag: str) -> float | None:
        value = page.tags.get(tag)
        if value is None:
            return None
        num, den = value.value
        return den / num if num else None

    x, y = resolution("XResolution"), resolution("YResolution")
    if x is None or y is None or (x == 1.0 and y == 1.0):
        return None
    if ndim == 2:
        return (y, x)
    z = (tif.imagej_metadata or {}).get("spacing")
    return (float(z) if z else 1.0, y, x)


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Return ``path`` as a Path if an output may be written there, else raise.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If its directory does not exist.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}")
    return path


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` as an ImageJ-compatible TIFF, atomically.

    The data go to a temporary file in the target directory, which is renamed onto ``path`` only
    once complete: an interrupted write never leaves a truncated file.

    Parameters
    ----------
    path : str or PathLike
        Output file.
    data : ndarray
        2D or 3D array (float32, uint16, ...).
    voxel_size : tuple of float, optional
        (z,) y, x voxel size to record.
    overwrite : bool, optional
        Replace an existing file, by default False.

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the output directory does not exist.
    """
    path = check_output_path(path, overwrite)
    kwargs: dict = {"imagej": data.dtype != np.float64, "photometric": "minisblack"}
    if voxel_size is not None:
        kwargs["resolution"] = (1.0 / voxel_size[-1], 1.0 / voxel_size[-2])
        if data.ndim == 3 and len(voxel_size) == 3:
            kwargs["metadata"] = {"spacing": voxel_size[0], "axes": "ZYX"}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)  # tifffile opens the file by name
    try:
        tifffile.imwrite(tmp, data, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (a ``.zarr`` directory, existing or to be)."""
    path = Path(path)
    return path.suffix == ".zarr" or (path / "zarr.json").is_file() or (path / ".zarray").is_file()


def open_lazy(path: str | os.PathLike, chunks: Any = None) -> Any:
    """Open a zarr array or a TIFF as a lazy dask array (nothing is read yet).

    Parameters
    ----------
    path : str or PathLike
        A zarr array directory, or a TIFF file (each chunk of planes is read by its own task,
        which opens the file by path: the array pickles to any dask worker).
    chunks : optional
        Rechunk to these chunks; by default zarr chunks are kept and TIFF planes are grouped
        into chunks of about 64 MiB.

    Returns
    -------
    dask.array.Array

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is neither a zarr array nor a readable TIFF.
    """
    import dask.array as da

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    try:
        array = da.from_zarr(str(path)) if path.is_dir() else _lazy_tiff(path)
    except (tifffile.TiffFileError, ValueError, OSError, KeyError) as exc:
        raise ValueError(f"{path} is neither a zarr array nor a readable TIFF ({exc})") from exc
    if 1 in array.shape:  # TIFF stacks of one plane, singleton channels
        array = array.squeeze()
    return array if chunks is None else array.rechunk(chunks)


TIFF_CHUNK_BYTES = 64 * 2**20


def _lazy_tiff(path: Path) -> Any:
    import dask
    import dask.array as da

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, dtype, pages = tuple(series.shape), series.dtype, len(series.pages)
    if len(shape) < 3 or shape[0] != pages:  # one plane, or a layout not one page per plane
        read = dask.delayed(tifffile.imread)(str(path))
        return da.from_delayed(read, shape=shape, dtype=dtype)
    plane = math.prod(shape[1:]) * dtype.itemsize
    step = max(1, TIFF_CHUNK_BYTES // plane)
    parts = [
        da.from_delayed(
            dask.delayed(_read_planes)(str(path), start, min(start + step, pages)),
            shape=(min(start + step, pages) - start, *shape[1:]),
            dtype=dtype,
        )
        for start in range(0, pages, step)
    ]
    return da.concatenate(parts)


def _read_planes(path: str, start: int, stop: int) -> np.ndarray:
    planes = tifffile.imread(path, key=range(start, stop))
    return planes.reshape(stop - start, *planes.shape[-2:]) if planes.ndim >= 2 else planes


def read_tiff_voxel_size(path: str | os.PathLike) -> tuple[float, ...] | None:
    """Return the voxel size a TIFF records (as :func:`read_tiff` does), reading no pixels."""
    try:
        with tifffile.TiffFile(path) as tif:
            ndim = sum(n > 1 for n in tif.series[0].shape)
            return _voxel_size(tif, tif.pages[0], ndim)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable TIFF file ({exc})") from exc


def write_zarr(
    path: str | os.PathLike, array: Any, overwrite: bool = False, compute: Any = None
) -> Path:
    """Store a dask array as a zarr array, atomically.

    Chunks are written into a hidden sibling directory, which replaces ``path`` only once
    every chunk is stored.

    Parameters
    ----------
    path : str or PathLike
        Output zarr directory.
    array : dask.array.Array
        What to store (computed chunk by chunk while storing).
    overwrite : bool, optional
        Replace an existing store, by default False.
    compute : callable, optional
        ``compute(delayed)`` runs the store (to pick a scheduler or show progress); by
        default ``delayed.compute()``.

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the output directory does not exist.
    """
    path = check_output_path(path, overwrite)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        store = array.to_zarr(str(partial), overwrite=True, compute=False)
        (compute or (lambda task: task.compute()))(store)
        if path.exists():
            old = partial.with_suffix(".old")
            path.rename(old)
            partial.rename(path)
            shutil.rmtree(old)
        else:
            partial.rename(path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path
