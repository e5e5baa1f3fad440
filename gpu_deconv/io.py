"""TIFF and zarr input and output: voxel-size metadata kept, outputs written atomically.

Outputs are first written to hidden temporary files (or directories) next to their target,
created with the usual permissions (``0o666`` for files, ``0o777`` for directories, less the
umask, as any other new file), and renamed onto the target only once complete; several
outputs of one run are renamed only once all of them are complete. What an output replaces
is only ever a regular file, a zarr array or an OME-Zarr image (see
:func:`check_output_path`), never a link, a device, a named pipe or a zarr group.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import shutil
import stat
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
    and that it is none of the ``inputs`` and holds none of them. Only a regular file, a zarr
    array or an OME-Zarr image (a group holding nothing but its resolution levels, as
    :func:`gpu_deconv.stack_io.create_stack` writes) may be replaced: never a symbolic link, a
    device, a named pipe, a socket, a zarr group or another directory, even with
    ``overwrite``. A TIFF output may not replace a directory and a zarr output (a ``.zarr``
    path) only a zarr array or OME-Zarr image, whose every folder must then be writable (its
    files are removed once the new store is in place).

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
        If ``path`` exists and ``overwrite`` is False, or it is something no output replaces
        (a symbolic link, device, named pipe, socket, zarr group, other directory).
    FileNotFoundError
        If its directory does not exist.
    IsADirectoryError
        If ``path`` is a directory and not a ``.zarr`` path.
    PermissionError, OSError
        If its directory does not take new files (read-only, not writable, ...), an existing
        zarr store there could not be removed (a read-only folder in it), or another user
        owns what is there in a shared (sticky) folder such as ``/tmp``.
    ValueError
        If ``path`` is one of the ``inputs`` or holds one of them.
    """
    path = Path(path)
    status = _lstat(path)
    if status is not None:
        # What --overwrite cannot change is said first: no hint to pass it in vain.
        for role, source in (inputs or {}).items():
            if path.exists() and Path(source).exists() and os.path.samefile(path, source):
                raise ValueError(f"{path} is the input {role}; write the result to another file")
            if stat.S_ISDIR(status.st_mode) and Path(source).resolve().is_relative_to(
                path.resolve()
            ):
                raise ValueError(
                    f"{path} holds the input {role} ({source}); write the result elsewhere"
                )
        _check_replaceable(path, status)
        if not overwrite:
            raise FileExistsError(
                f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it"
            )
        _check_removable(path, status)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}")
    try:
        _temporary(path, ".probe").unlink()
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"cannot write to the output directory {path.parent} ({exc.strerror})"
        ) from exc
    return path


_REPLACES = (
    "overwrite=True (CLI: --overwrite) replaces only regular files, zarr arrays and OME-Zarr images"
)
_SPECIAL = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
# Files a zarr array or group holds besides its chunks; macOS adds .DS_Store to any folder.
_ZARR_METADATA = frozenset({".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"})
_CHUNK_KEY = re.compile(r"(c|\d+)(\.\d+)*")  # v2 "0.1" or "0/", v3 "c/" or "c.0.1"


def _lstat(path: Path) -> os.stat_result | None:
    """Return the status of ``path`` itself (a link's own), or None if nothing is there."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _check_replaceable(path: Path, status: os.stat_result) -> None:
    """Raise unless what is at ``path`` is of a kind an output may replace (see above)."""
    mode = status.st_mode
    if stat.S_ISLNK(mode):
        raise FileExistsError(
            f"{path} is a symbolic link (to {os.readlink(path)}); not replacing it nor what it "
            f"points to: {_REPLACES} (name the target itself to replace that)"
        )
    if stat.S_ISREG(mode):
        if path.suffix == ".zarr":
            raise FileExistsError(f"{path} exists and is not a zarr array; not replacing it")
        return
    if not stat.S_ISDIR(mode):
        kind = _SPECIAL.get(stat.S_IFMT(mode), "not a regular file")
        raise FileExistsError(
            f"{path} is {kind}, not a regular file; not replacing it: {_REPLACES}"
        )
    if path.suffix != ".zarr":
        raise IsADirectoryError(f"{path} is a directory; give an output file name")
    reason = _not_an_image(path)
    if reason is not None:
        raise FileExistsError(f"{path} {reason}; not replacing it: {_REPLACES}")


def _zarr_metadata(path: Path) -> tuple[str | None, dict]:
    """Return the zarr node at ``path`` (``"array"``, ``"group"`` or None) and its attributes.

    Raises ``ValueError`` for metadata that is not JSON.
    """
    if (path / "zarr.json").is_file():
        meta = json.loads((path / "zarr.json").read_text())
        kind = meta.get("node_type") if isinstance(meta, dict) else None
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        return (kind if kind in ("array", "group") else None), (attrs or {})
    has_array, has_group = (path / ".zarray").is_file(), (path / ".zgroup").is_file()
    attrs = json.loads((path / ".zattrs").read_text()) if (path / ".zattrs").is_file() else {}
    if has_array == has_group:  # neither, or both (not a valid store)
        return None, {}
    return ("array" if has_array else "group"), (attrs if isinstance(attrs, dict) else {})


def _not_an_image(path: Path) -> str | None:
    """Return why the directory ``path`` is no zarr array or OME-Zarr image, or None.

    An array may hold its metadata and chunks only; an OME-Zarr image, its metadata and the
    arrays its ``multiscales`` name. Anything else is refused: replacing it would delete it.
    """
    try:
        kind, attrs = _zarr_metadata(path)
        entries = {entry.name for entry in os.scandir(path)} - _ZARR_METADATA - {".DS_Store"}
        if kind == "array":
            others = sorted(e for e in entries if not _CHUNK_KEY.fullmatch(e))
            return f"holds more than a zarr array ({', '.join(others)})" if others else None
        if kind is None:
            return "exists and is not a zarr array"
        multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
        levels = {str(d["path"]) for m in (multiscales or []) for d in m["datasets"]}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return "exists and is not a zarr array"
    if not levels or not all(_zarr_node(path / level) == "array" for level in levels):
        return "is a zarr group, not a zarr array"
    others = sorted(entries - {level.split("/")[0] for level in levels})
    if others:
        return f"is an OME-Zarr image holding more than its levels ({', '.join(others)})"
    return None


def _zarr_node(path: Path) -> str | None:
    try:
        return _zarr_metadata(path)[0] if path.is_dir() and not path.is_symlink() else None
    except (OSError, ValueError):
        return None


_EFFECTIVE = os.access in os.supports_effective_ids


def _folder_writable(folder: Path) -> bool:
    """Whether files can be listed, removed and added in ``folder`` (this process's rights)."""
    return os.access(folder, os.R_OK | os.W_OK | os.X_OK, effective_ids=_EFFECTIVE)


def _check_removable(path: Path, status: os.stat_result) -> None:
    """Raise ``PermissionError`` if what is at ``path`` could not be replaced and removed.

    A file or store in a sticky folder (``/tmp``) that another user owns cannot be renamed; a
    store's files cannot be removed from a folder in it that is read-only (or on a read-only
    file system). Checked before computing, so that a store is replaced whole or not at all.
    """
    parent = os.stat(path.parent)
    user = os.geteuid()
    if parent.st_mode & stat.S_ISVTX and user not in (0, status.st_uid, parent.st_uid):
        raise PermissionError(
            errno.EPERM,
            f"cannot replace {path}: another user owns it in the shared folder {path.parent}",
        )
    if not stat.S_ISDIR(status.st_mode):
        return
    folders = [path]
    while folders:
        folder = folders.pop()
        if not _folder_writable(folder):
            read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
            where = "is on a read-only file system" if read_only else "is not writable"
            raise PermissionError(
                errno.EROFS if read_only else errno.EACCES,
                f"cannot replace {path}: {'it' if folder == path else folder} {where}, "
                "so the files in it could not be removed",
            )
        with os.scandir(folder) as entries:
            folders += [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]


def _check_still_replaceable(path: Path) -> None:
    """Check ``path`` once more just before a rename onto it: it may have changed meanwhile."""
    status = _lstat(path)
    if status is not None:
        _check_replaceable(path, status)
        _check_removable(path, status)


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


def _check_tiff_data(data: Any, voxel_size: Any) -> None:
    """Raise a ValueError or TypeError naming what a TIFF output cannot hold."""
    if not isinstance(data, np.ndarray):
        raise TypeError(f"data must be a numpy array, got {type(data).__name__}")
    if data.dtype.kind not in "biuf":
        raise TypeError(f"data must be boolean, integer or real, got dtype {data.dtype}")
    if data.size == 0 or not 1 <= data.ndim <= 3:
        raise ValueError(f"data must be a non-empty 1D, 2D or 3D array, got shape {data.shape}")
    if voxel_size is None:
        return
    try:
        sizes = [float(s) for s in voxel_size]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"voxel_size must be numbers (z,) y, x, got {voxel_size!r}") from exc
    if not min(data.ndim, 2) <= len(sizes) <= 3 or not all(
        math.isfinite(s) and s > 0 for s in sizes
    ):
        raise ValueError(
            f"voxel_size must be positive numbers ((z,) y, x) for data of shape {data.shape}, "
            f"got {voxel_size!r}"
        )


def _tiff_options(
    data: np.ndarray, voxel_size: tuple[float, ...] | None, parameters: dict | None = None
) -> dict:
    """Tifffile's options for ``data``; ``parameters`` go in as JSON (ImageJ ``Info``)."""
    _check_tiff_data(data, voxel_size)
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
    if parameters is not None:  # ImageJ's Info, as stacks record them; else tifffile's JSON
        text = json.dumps(parameters, sort_keys=True, default=str)
        kwargs.setdefault("metadata", {})["Info" if imagej else "gpu_deconv"] = text
    return kwargs


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
    parameters: dict | None = None,
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
    parameters : dict, optional
        How the data were made (provenance), recorded as JSON: ImageJ's ``Info`` field (or
        tifffile's metadata ``gpu_deconv`` where the file is not an ImageJ one).

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False, or is not a regular file (a symbolic
        link, a device, a named pipe, ...: never replaced, see :func:`check_output_path`).
    FileNotFoundError
        If the output directory does not exist.
    OSError
        If the directory does not take the file (see :func:`check_output_path`) or the disk
        is full; nothing is left behind.
    """
    return write_tiffs([(path, data)], voxel_size, overwrite, parameters)[0]


def write_tiffs(
    outputs: Sequence[tuple[str | os.PathLike, np.ndarray]],
    voxel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
    parameters: dict | Sequence[dict] | None = None,
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
    parameters : dict or sequence of dict, optional
        Provenance recorded as :func:`write_tiff` records it: one dict for every file, or one
        per output.

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
    records = [parameters] * len(outputs) if not isinstance(parameters, Sequence) else parameters
    try:
        for path, (_, data), record in zip(paths, outputs, records):
            temporaries.append(_temporary(path, ".tmp"))
            try:
                options = _tiff_options(data, voxel_size, record)
                tifffile.imwrite(temporaries[-1], data, **options)
            except OSError as exc:  # tifffile reports a full disk as "N requested, M written"
                reason = exc.strerror or str(exc)
                if shutil.disk_usage(path.parent).free < data.nbytes:
                    reason += "; the disk is full"
                raise OSError(exc.errno, f"could not write {path}: {reason}") from exc
        for path in paths:
            _check_still_replaceable(path)
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
        _check_still_replaceable(target)
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
        If ``path`` exists and ``overwrite`` is False, or is no zarr array or OME-Zarr image
        (a zarr group, a symbolic link, ...: see :func:`check_output_path`).
    FileNotFoundError
        If the output directory does not exist.
    IsADirectoryError, PermissionError, OSError
        As :func:`check_output_path`: ``path`` is a directory but not a ``.zarr`` path, its
        directory does not take new files, or a folder of the store it would replace is
        read-only (checked before computing: nothing is written then).
    """
    path = check_output_path(path, overwrite)
    partial = _temporary(path, ".partial", directory=True)
    try:
        # Every chunk written, also all-zero ones: a missing chunk reads as damage (_reading).
        store = array.to_zarr(
            str(partial), overwrite=True, compute=False, config={"write_empty_chunks": True}
        )
        (compute or (lambda task: task.compute()))(store)
        replace_directory(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return path


def replace_directory(partial: Path, path: Path) -> None:
    """Move the complete directory ``partial`` onto ``path``, replacing what is there.

    What is there is checked once more (a zarr array or OME-Zarr image, every folder of it
    writable: see :func:`check_output_path`), moved aside, and removed once ``partial`` is in
    its place; if ``partial`` cannot be moved, it is put back.

    Raises
    ------
    FileExistsError, PermissionError
        If ``path`` has become something no output replaces; nothing is changed.
    OSError
        If the replaced store could not be removed after all: the new one is in place, and
        the message names the folder ``NAME.old-XXXXXXXX`` where what is left of the old one
        is.
    """
    if _lstat(path) is None:
        partial.rename(path)
        return
    _check_still_replaceable(path)
    old = partial.with_suffix(".old")
    path.rename(old)
    try:
        partial.rename(path)
    except BaseException:
        old.rename(path)
        raise
    try:
        shutil.rmtree(old)
    except OSError as exc:
        # Not hidden: what is left of the old store gets a name the user sees and is told.
        left = old
        with contextlib.suppress(OSError):
            left = old.rename(path.with_name(f"{path.name}.old-{old.name.split('.')[-2]}"))
        raise OSError(
            exc.errno,
            f"wrote {path}, but could not remove all of the store it replaced "
            f"({exc.strerror or exc}); what is left of it is in {left}: remove it",
        ) from exc
    except BaseException:  # Ctrl-C: the new store is in place, the old one goes
        shutil.rmtree(old, ignore_errors=True)
        raise
