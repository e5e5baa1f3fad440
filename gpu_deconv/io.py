"""TIFF and zarr input and output: voxel-size metadata kept, outputs written atomically.

Outputs are first written to hidden temporary files (or directories) next to their target,
created with the usual permissions (``0o666`` for files, ``0o777`` for directories, less the
umask, as any other new file), and renamed onto the target only once complete; several
outputs of one run are renamed only once all of them are complete.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ._reading import CheckedZarr, check_chunks, reading, tiff_voxel_size

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
        If ``dtype`` is not one of :data:`OUTPUT_DTYPES`, or a float result exceeds the range
        of a narrower float ``dtype``.
    """
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"unknown output dtype {dtype!r}; allowed: {', '.join(OUTPUT_DTYPES)}")
    if dtype.startswith("float"):
        largest = float(np.finfo(dtype).max)
        if data.dtype.itemsize > np.dtype(dtype).itemsize and np.abs(data).max() > largest:
            raise ValueError(
                f"the result reaches {float(np.abs(data).max()):.3g}, beyond the {dtype} "
                f"range (largest {largest:.3g}); write float64 (CLI: --output-dtype float64)"
            )
        return data.astype(dtype, copy=False), 0
    top = np.iinfo(dtype).max
    rounded = np.rint(data)
    clipped = int(np.count_nonzero((rounded < 0) | (rounded > top)))
    return np.clip(rounded, 0, top).astype(dtype), clipped


@dataclass(frozen=True)
class TiffImage:
    """An image read from a TIFF file (or a zarr array).

    Attributes
    ----------
    data : ndarray
        Pixel data with the file's own axes (see :func:`read_tiff`).
    voxel_size : tuple of float or None
        Voxel size per axis (z, y, x or y, x) in micrometres, when the file records it (in
        any length unit its format allows: nm, µm, mm, ...; see :func:`read_tiff`).
    """

    data: np.ndarray
    voxel_size: tuple[float, ...] | None


def read_tiff(path: str | os.PathLike) -> TiffImage:
    r"""Read a 1D, 2D or 3D TIFF (ImageJ hyperstacks included) with its voxel size.

    The array keeps the shape the file declares: a ``(1, 9, 9)`` PSF stays 3D and a
    ``(1, N)`` image 2D (ImageJ files declare only their axes longer than one, as ImageJ
    itself reads them). Only length-1 axes in front of the last three are dropped, so that
    a single-channel or single-time-point hyperstack reads as its Z, Y, X volume.

    The voxel size is converted to micrometres from the unit the file records: OME-TIFF's
    ``PhysicalSize*Unit``, ImageJ's ``unit`` (``micron``, ``um``, ``\u00B5m``, ``nm``,
    ``mm``, ``cm``, ``m``, ``inch``, ...; ``pixel``: no size), else the ``ResolutionUnit``
    tag (centimetre; none or inch: pixels per micrometre, as gpu_deconv writes them).

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
    IsADirectoryError
        If ``path`` is a directory (a zarr array: use :func:`read_image`).
    ValueError
        If the file is not a readable TIFF: not a TIFF, damaged or truncated (a strip that
        does not decompress, a page tifffile cannot find; tifffile's complaints are the
        message, never printed), or its voxel size is in an unknown unit.
    """
    path = _existing_file(path)
    with reading(path), tifffile.TiffFile(path) as tif:
        data = tif.series[0].asarray()
        data = data.reshape(tiff_shape(tif))
        voxel = tiff_voxel_size(tif, data.ndim, path)
    return TiffImage(data, voxel)


def read_image(path: str | os.PathLike, allow_missing_chunks: bool = False) -> TiffImage:
    """Read a TIFF file (:func:`read_tiff`) or a whole zarr array into memory.

    Parameters
    ----------
    path : str or PathLike
        TIFF file or zarr array directory.
    allow_missing_chunks : bool, optional
        Read the chunks a zarr array's store lacks as its fill value (see
        :func:`open_lazy`); by default they are refused.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory but not a zarr array.
    ValueError
        If the file is not a readable TIFF or zarr array (damaged, chunks missing), or
        zarr/dask are not installed.
    """
    path = Path(path)
    if path.is_dir() and is_zarr(path):
        try:
            lazy = open_lazy(path, allow_missing_chunks=allow_missing_chunks)
            return TiffImage(np.asarray(lazy.compute()), None)
        except ImportError as exc:
            raise ValueError(
                f"reading the zarr array {path} needs dask and zarr: pip install 'gpu_deconv[dask]'"
            ) from exc
    return read_tiff(path)


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        kind = "a zarr array" if is_zarr(path) else "a directory"
        raise IsADirectoryError(f"{path} is {kind}, not a TIFF file")
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return path


def tiff_shape(tif: tifffile.TiffFile) -> tuple[int, ...]:
    """Return the shape :func:`read_tiff` gives a TIFF's first series (see there)."""
    shape = tuple(tif.series[0].shape)
    while len(shape) > 3 and 1 in shape[:-3]:
        lead = list(shape[:-3])
        lead.remove(1)
        shape = (*lead, *shape[-3:])
    return shape


def check_output_path(
    path: str | os.PathLike,
    overwrite: bool = False,
    *,
    inputs: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Return ``path`` as a Path if an output may be written there, else raise.

    Everything that can be known before computing is checked: the target, its directory
    (which must exist and take a new file: a temporary file is created and removed there),
    and that it is none of the ``inputs``. A TIFF output may not replace a directory and a
    zarr output (a ``.zarr`` path) may replace only a zarr array.

    Parameters
    ----------
    path : str or PathLike
        Output file or zarr directory.
    overwrite : bool, optional
        Whether an existing output may be replaced, by default False.
    inputs : mapping of str to path, optional
        Files the run reads, by role (e.g. ``{"image": ..., "psf": ...}``): never replaced.

    Returns
    -------
    Path

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If its directory does not exist.
    IsADirectoryError
        If ``path`` is a directory and not a ``.zarr`` path.
    PermissionError, OSError
        If its directory does not take new files (read-only, not writable, ...).
    ValueError
        If ``path`` is one of the ``inputs``.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        # What --overwrite cannot change is said first: no hint to pass it in vain.
        for role, source in (inputs or {}).items():
            if path.exists() and Path(source).exists() and os.path.samefile(path, source):
                raise ValueError(f"{path} is the input {role}; write the result to another file")
        if path.suffix == ".zarr":
            if not _is_zarr_store(path):
                raise FileExistsError(f"{path} exists and is not a zarr array; not replacing it")
        elif path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; give an output file name")
        if not overwrite:
            raise FileExistsError(
                f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it"
            )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}")
    try:
        _temporary(path, ".probe").unlink()
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"cannot write to the output directory {path.parent} ({exc.strerror})"
        ) from exc
    return path


def check_free_space(directory: str | os.PathLike, nbytes: int) -> None:
    """Raise ``OSError`` (``ENOSPC``) if ``directory``'s filesystem has under ``nbytes`` free."""
    from ._validation import format_bytes

    free = shutil.disk_usage(directory).free
    if nbytes > free:
        raise OSError(
            errno.ENOSPC,
            f"not enough free space in {directory}: the outputs need about "
            f"{format_bytes(nbytes)}, {format_bytes(free)} are free",
        )


def _temporary(path: Path, suffix: str, directory: bool = False) -> Path:
    """Create a new hidden file (or directory) beside ``path``, with the umask's permissions.

    Unlike ``tempfile.mkstemp`` (mode 0600, kept by the rename), the mode is the one any
    other new file gets: ``0o666`` (``0o777`` for directories) less the umask.
    """
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            if directory:
                os.mkdir(candidate, 0o777)
            else:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _tiff_options(data: np.ndarray, voxel_size: tuple[float, ...] | None) -> dict:
    # ImageJ hyperstacks where ImageJ reads the shape back as written (no float64, no 1D,
    # no single-plane volume, which ImageJ reads as 2D); tifffile's shaped TIFF otherwise.
    single_plane_volume = data.ndim == 3 and data.shape[0] == 1
    imagej = data.dtype != np.float64 and data.ndim >= 2 and not single_plane_volume
    kwargs: dict = {"imagej": imagej}
    if data.ndim >= 2:  # tifffile takes no photometric for 1D data
        kwargs["photometric"] = "minisblack"
    if data.ndim == 3:  # else tifffile declares the planes ImageJ channels
        kwargs["metadata"] = {"axes": "ZYX"}
    if voxel_size is not None and data.ndim >= 2:
        kwargs["resolution"] = (1.0 / voxel_size[-1], 1.0 / voxel_size[-2])
        if data.ndim == 3 and len(voxel_size) == 3:
            kwargs["metadata"]["spacing"] = voxel_size[0]
    return kwargs


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` as an ImageJ-compatible TIFF, atomically.

    The data go to a temporary file in the target directory, which is renamed onto ``path`` only
    once complete: an interrupted write never leaves a truncated file. The file gets the
    permissions of any new file (``0o666`` less the umask), also when it replaces one.

    Parameters
    ----------
    path : str or PathLike
        Output file.
    data : ndarray
        1D, 2D or 3D array (float32, uint16, ...); :func:`read_tiff` reads its shape back.
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
    OSError
        If the directory does not take the file (see :func:`check_output_path`) or the disk
        is full; nothing is left behind.
    """
    return write_tiffs([(path, data)], voxel_size, overwrite)[0]


def write_tiffs(
    outputs: Sequence[tuple[str | os.PathLike, np.ndarray]],
    voxel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write several TIFFs all or nothing, as :func:`write_tiff` writes one.

    Every output is written to its temporary file first; only once all are complete are they
    renamed onto their targets. A failure (a full disk, an interrupt) removes the temporary
    files and leaves every target as it was.

    Parameters
    ----------
    outputs : sequence of (path, ndarray)
        Target paths (all different) and their data.
    voxel_size : tuple of float, optional
        (z,) y, x voxel size to record in every file.
    overwrite : bool, optional
        Replace existing files, by default False.

    Returns
    -------
    list of Path
        The written paths.

    Raises
    ------
    ValueError
        If two outputs have the same path.
    FileExistsError, FileNotFoundError, OSError
        As :func:`write_tiff`.
    """
    paths = [check_output_path(path, overwrite) for path, _ in outputs]
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError(f"outputs must be different files, got {[str(p) for p in paths]}")
    by_directory: dict[Path, int] = {}
    for path, (_, data) in zip(paths, outputs):
        by_directory[path.parent] = by_directory.get(path.parent, 0) + data.nbytes
    for directory, nbytes in by_directory.items():
        check_free_space(directory, nbytes)
    temporaries: list[Path] = []
    try:
        for path, (_, data) in zip(paths, outputs):
            temporaries.append(_temporary(path, ".tmp"))
            try:
                tifffile.imwrite(temporaries[-1], data, **_tiff_options(data, voxel_size))
            except OSError as exc:  # tifffile reports a full disk as "N requested, M written"
                reason = exc.strerror or str(exc)
                if shutil.disk_usage(path.parent).free < data.nbytes:
                    reason += "; the disk is full"
                raise OSError(exc.errno, f"could not write {path}: {reason}") from exc
        for temporary, path in zip(temporaries, paths):
            os.replace(temporary, path)
    except BaseException:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        raise
    return paths


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Write a text file (a run's JSON record) atomically, as :func:`write_tiff` writes.

    Raises
    ------
    FileExistsError, FileNotFoundError, OSError
        As :func:`write_tiff`.
    """
    target = check_output_path(path, overwrite)
    temporary = _temporary(target, ".tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (a ``.zarr`` directory, existing or to be)."""
    path = Path(path)
    return path.suffix == ".zarr" or _is_zarr_store(path)


def _is_zarr_store(path: Path) -> bool:
    """Whether ``path`` is an existing zarr array or group (v2 or v3 metadata)."""
    return any((path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup"))


def open_lazy(
    path: str | os.PathLike, chunks: Any = None, allow_missing_chunks: bool = False
) -> Any:
    """Open a zarr array or a TIFF as a lazy dask array (nothing is read yet).

    A zarr array keeps its shape; a TIFF gets the shape :func:`read_tiff` gives it. A chunk
    or plane that turns out damaged when read raises ``ValueError`` naming the file.

    Parameters
    ----------
    path : str or PathLike
        A zarr array directory, or a TIFF file (each chunk of planes is read by its own task,
        which opens the file by path: the array pickles to any dask worker).
    chunks : optional
        Rechunk to these chunks; by default zarr chunks are kept and TIFF planes are grouped
        into chunks of about 64 MiB.
    allow_missing_chunks : bool, optional
        Read the chunks a zarr array's store lacks as its fill value, by default False: they
        are refused, as an incomplete copy or write would be read as zeros. zarr leaves out
        chunks that hold only the fill value when written with ``write_empty_chunks=False``
        (zarr-python 3's default): such stores need True.

    Returns
    -------
    dask.array.Array

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is neither a zarr array nor a readable TIFF, or chunks of a zarr array are
        missing (see ``allow_missing_chunks``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_dir() and not is_zarr(path):
        raise IsADirectoryError(f"{path} is a directory, but not a zarr array")
    if path.is_dir():
        array = _lazy_zarr(path, allow_missing_chunks)
    else:
        with reading(path):
            array = _lazy_tiff(path)
    return array if chunks is None else array.rechunk(chunks)


def _lazy_zarr(path: Path, allow_missing_chunks: bool) -> Any:
    import dask.array as da
    import zarr
    from dask.base import tokenize

    try:
        stored = zarr.open_array(str(path), mode="r")
    except (ValueError, OSError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"{path} is neither a zarr array nor a readable TIFF ({reason})") from exc
    check_chunks(stored, path, allow_missing_chunks)
    name = "from-zarr-" + tokenize(stored, str(path))
    return da.from_array(CheckedZarr(stored, path), chunks=stored.chunks, name=name)


TIFF_CHUNK_BYTES = 64 * 2**20


def _lazy_tiff(path: Path) -> Any:
    import dask
    import dask.array as da

    with tifffile.TiffFile(path) as tif:  # inside reading(path)
        series = tif.series[0]
        shape, dtype, pages = tiff_shape(tif), series.dtype, len(series.pages)
    if len(shape) < 3 or shape[0] != pages:  # one plane, or a layout not one page per plane
        read = dask.delayed(_read_whole)(str(path), shape)
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


def _read_whole(path: str, shape: tuple[int, ...]) -> np.ndarray:
    with reading(path):
        return tifffile.imread(path).reshape(shape)


def _read_planes(path: str, start: int, stop: int) -> np.ndarray:
    with reading(path):
        planes = tifffile.imread(path, key=range(start, stop))
    return planes.reshape(stop - start, *planes.shape[-2:]) if planes.ndim >= 2 else planes


def read_tiff_voxel_size(path: str | os.PathLike) -> tuple[float, ...] | None:
    """Return the voxel size a TIFF records (as :func:`read_tiff` does), reading no pixels."""
    with reading(path), tifffile.TiffFile(path) as tif:
        return tiff_voxel_size(tif, len(tiff_shape(tif)), path)


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
    IsADirectoryError, OSError
        As :func:`check_output_path`: ``path`` is a directory but not a zarr array, or its
        directory does not take new files.
    """
    path = check_output_path(path, overwrite)
    partial = _temporary(path, ".partial", directory=True)
    try:
        store = array.to_zarr(str(partial), overwrite=True, compute=False)
        (compute or (lambda task: task.compute()))(store)
        replace_directory(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def replace_directory(partial: Path, path: Path) -> None:
    """Move the complete directory ``partial`` onto ``path``, replacing what is there."""
    if path.exists():
        old = partial.with_suffix(".old")
        path.rename(old)
        partial.rename(path)
        shutil.rmtree(old)
    else:
        partial.rename(path)
