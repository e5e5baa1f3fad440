"""Stacks in files: axes, physical voxel sizes, channel names and the run's parameters.

Read from ImageJ hyperstacks, OME-TIFF and OME-Zarr; written as OME-TIFF (a name ending in
``.ome.tif``/``.ome.tiff``), OME-Zarr (``.ome.zarr``, one multiscale level) or an ImageJ
hyperstack (any other TIFF name). Outputs are memory-mapped temporary files (or directories)
beside the target, filled volume by volume and renamed only once complete. Voxel sizes are
in micrometres, one per spatial axis in the stack's axis order (``spacing``).
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ._reading import CheckedZarr, check_chunks, reading, tiff_voxel_size, zarr_spacing
from .io import (
    _check_still_replaceable,
    _temporary,
    check_output_path,
    replace_directory,
)
from .stack import SPATIAL, check_axes

IMAGEJ_ORDER = "TZCYXS"
OME_ORDER = "TCZYXS"


@dataclass(frozen=True)
class Stack:
    """A stack read from a file.

    Attributes
    ----------
    data : array_like
        The pixels, indexable volume by volume (a memory map where the file allows one).
    axes : str
        One letter per axis (see :func:`gpu_deconv.stack.check_axes`).
    spacing : tuple of float or None
        Voxel size in micrometres per spatial axis (Z, Y, X or Y, X), if recorded.
    channel_names : tuple of str or None
        Channel names, if recorded.
    parameters : dict or None
        The deconvolution parameters a gpu_deconv output records.
    """

    data: Any
    axes: str
    spacing: tuple[float, ...] | None
    channel_names: tuple[str, ...] | None = None
    parameters: dict | None = None


def is_ome_tiff(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an OME-TIFF (``.ome.tif`` or ``.ome.tiff``)."""
    return str(path).lower().endswith((".ome.tif", ".ome.tiff"))


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an OME-Zarr output (``.ome.zarr``)."""
    return str(path).lower().rstrip("/").endswith(".ome.zarr")


def file_axes(path: str | os.PathLike) -> str:
    """Return the axes a TIFF or OME-Zarr declares (as :func:`read_stack`), reading no pixels."""
    path = Path(path)
    if path.is_dir():
        return _ome_zarr_meta(path)[1]
    with reading(path), tifffile.TiffFile(path) as tif:
        return _tiff_axes(tif.series[0])


def read_stack(
    path: str | os.PathLike, axes: str | None = None, allow_missing_chunks: bool = False
) -> Stack:
    """Read a stack with its axes and voxel size, memory-mapped where the file allows.

    Voxel sizes are converted to micrometres from the unit the file records (see
    :func:`gpu_deconv.io.read_tiff`; OME-Zarr: each spatial axis's ``unit``, ``nanometer``,
    ``micrometer``, ``millimeter``, ...). A damaged file is refused with a ``ValueError``
    naming it, at once (a TIFF) or when the damaged volume is read (an OME-Zarr).

    Parameters
    ----------
    path : str or PathLike
        An ImageJ hyperstack or other TIFF, an OME-TIFF, or an OME-Zarr (first level).
    axes : str, optional
        The axes, overriding what the file declares (needed for plain TIFFs of more than 3
        axes, whose axes tifffile calls ``Q``/``I``).
    allow_missing_chunks : bool, optional
        Read the chunks an OME-Zarr's store lacks as the fill value instead of refusing
        them (see :func:`gpu_deconv.io.open_lazy`).

    Returns
    -------
    Stack

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a readable TIFF or OME-Zarr (damaged, truncated, chunks missing), its
        voxel size is in an unknown unit, or ``axes`` does not fit.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        array, declared, spacing, parameters = _ome_zarr_meta(path)
        check_chunks(array, path, allow_missing_chunks)
        checked = CheckedZarr(array, path)
        return Stack(checked, _override(declared, axes), spacing, None, parameters)
    with reading(path):
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            declared = _tiff_axes(series)
            spacing, names = _tiff_spacing(tif, declared, path)
            parameters = _tiff_parameters(tif)
        data: Any
        try:
            data = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous: read it whole
            data = tifffile.imread(path)
        data = data.reshape(series.shape)
    return Stack(data, _override(declared, axes), spacing, names, parameters)


def _override(declared: str, axes: str | None) -> str:
    if axes is None:
        return declared
    if len(axes) != len(declared):
        raise ValueError(f"axes {axes!r} name {len(axes)} axes, the file has {len(declared)}")
    return axes.upper()


def _tiff_axes(series) -> str:
    axes = series.axes.upper()
    # tifffile names an unknown sequence I or Q: a single one in a 3-axis file is Z
    if len(axes) == 3 and axes[0] in "IQ" and "Z" not in axes:
        axes = "Z" + axes[1:]
    return axes


def _tiff_spacing(
    tif, axes: str, path: Path
) -> tuple[tuple[float, ...] | None, tuple[str, ...] | None]:
    spatial = "".join(a for a in axes if a in SPATIAL)
    spacing = tiff_voxel_size(tif, len(spatial), path)  # in micrometres, from any unit
    if tif.is_ome and tif.ome_metadata:
        root = ET.fromstring(tif.ome_metadata)
        pixels = next(e for e in root.iter() if e.tag.endswith("Pixels"))
        names = tuple(
            e.get("Name", f"C{i}")
            for i, e in enumerate(c for c in pixels if c.tag.endswith("Channel"))
        )
        return spacing, (names or None)
    return spacing, None


def _tiff_parameters(tif) -> dict | None:
    text = None
    if tif.is_ome and tif.ome_metadata:
        root = ET.fromstring(tif.ome_metadata)
        text = next((e.text for e in root.iter() if e.tag.endswith("Description")), None)
    elif tif.imagej_metadata:
        text = tif.imagej_metadata.get("Info")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _ome_zarr_meta(path: Path):
    try:
        import zarr
    except ImportError:  # a directory is only an image as OME-Zarr
        raise ValueError(
            f"{path} is a directory; reading it as OME-Zarr needs zarr: "
            'pip install "gpu_deconv[dask]"'
        ) from None

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs: Any = dict(group.attrs)
        multiscale = attrs.get("ome", attrs)["multiscales"][0]  # NGFF 0.5 nests under "ome"
        # NGFF 0.4 names axes in dicts, 0.3 in strings, 0.1-0.2 always have T, C, Z, Y, X
        declared = multiscale.get("axes", list("tczyx"))
        named = [{"name": a} if isinstance(a, str) else dict(a) for a in declared]
        axes = "".join(str(a["name"]) for a in named).upper()
        level = multiscale["datasets"][0]
        scale = _scale(level, len(axes))
        if scale is not None:
            overall = _scale(multiscale, len(axes))  # a scale applied to every level
            scale = scale if overall is None else [s * o for s, o in zip(scale, overall)]
        array = group[str(level["path"])]
    except (KeyError, ValueError, OSError, TypeError, IndexError) as exc:
        raise ValueError(f"{path} is not an OME-Zarr image ({exc!r})") from exc
    spatial = "".join(a for a in axes if a in SPATIAL)
    spacing = None if scale is None else zarr_spacing(named, scale, path, spatial)
    parameters = attrs.get("gpu_deconv")
    return array, axes, spacing, parameters


def _scale(node: dict, ndim: int) -> list[float] | None:
    """Return the ``scale`` of a dataset's (or multiscale's) ``coordinateTransformations``."""
    for transformation in node.get("coordinateTransformations", []):
        if transformation["type"] == "scale":
            scale = [float(s) for s in transformation["scale"]]
            if len(scale) != ndim:
                raise ValueError(f"a scale of {len(scale)} values for {ndim} axes")
            return scale
    return None


def _check_stack_layout(shape, dtype, axes, spacing, channel_names) -> str:
    """Return ``axes`` checked against the other arguments of :func:`create_stack`."""
    shape = tuple(shape)
    if not shape or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
        raise ValueError(f"shape must be positive lengths, got {shape}")
    if not isinstance(axes, str):
        raise TypeError(f"axes must be a string such as 'TCZYX', got {axes!r}")
    axes = check_axes(axes, len(shape), colours=True)
    kind = np.dtype(dtype)
    if kind.kind not in "biuf":
        raise TypeError(f"dtype must be boolean, integer or real, got {kind}")
    spatial = [a for a in axes if a in SPATIAL]
    if spacing is not None:
        try:
            sizes = [float(s) for s in spacing]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"spacing must be numbers, one per axis of {spatial}") from exc
        if len(sizes) != len(spatial) or not all(np.isfinite(s) and s > 0 for s in sizes):
            raise ValueError(
                f"spacing must be {len(spatial)} positive numbers ({''.join(spatial)}), got "
                f"{tuple(spacing)}"
            )
    channels = shape[axes.index("C")] if "C" in axes else 1
    if channel_names is not None and len(channel_names) != channels:
        raise ValueError(f"channel_names must name {channels} channels, got {len(channel_names)}")
    return axes


@contextmanager
def create_stack(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    axes: str,
    spacing: Sequence[float] | None = None,
    channel_names: Sequence[str] | None = None,
    parameters: dict | None = None,
    overwrite: bool = False,
) -> Iterator[Any]:
    """Create an output stack and yield it, writable in ``axes`` order; rename it when done.

    The file (or OME-Zarr directory) is a temporary one beside ``path``, memory-mapped (or
    chunked one volume per chunk), which replaces ``path`` only if the block completes; an
    exception inside removes it. OME outputs store the axes in OME's order (``TCZYX``),
    ImageJ ones in ImageJ's (``TZCYX``): the yielded array is a transposed view.

    Parameters
    ----------
    path : str or PathLike
        ``.ome.tif``/``.ome.tiff`` (OME-TIFF), ``.ome.zarr`` (OME-Zarr), else an ImageJ TIFF
        (float64 data: a plain tifffile TIFF, which ImageJ cannot read).
    shape, dtype, axes
        Of the stack, in the caller's axis order.
    spacing : sequence of float, optional
        Voxel size in micrometres per spatial axis.
    channel_names : sequence of str, optional
        Recorded in OME outputs.
    parameters : dict, optional
        Recorded as JSON (OME ``Description``, ImageJ ``Info``, OME-Zarr attribute
        ``gpu_deconv``).
    overwrite : bool, optional
        Replace an existing output, by default False.

    Yields
    ------
    array_like
        The writable stack.

    Raises
    ------
    FileExistsError, FileNotFoundError, IsADirectoryError, OSError
        As :func:`gpu_deconv.io.check_output_path`.
    """
    axes = _check_stack_layout(shape, dtype, axes, spacing, channel_names)
    path = check_output_path(path, overwrite)
    order = OME_ORDER if is_ome_tiff(path) or is_ome_zarr(path) else IMAGEJ_ORDER
    stored = "".join(a for a in order if a in axes)
    stored_shape = tuple(shape[axes.index(a)] for a in stored)
    to_caller = [stored.index(a) for a in axes]
    info = json.dumps(parameters or {}, sort_keys=True)
    if is_ome_zarr(path):
        temporary = _temporary(path, ".partial", directory=True)
        try:
            array = _create_ome_zarr(temporary, stored_shape, dtype, stored, spacing, info)
            yield array.transpose(to_caller) if hasattr(array, "transpose") else array
            replace_directory(temporary, path)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        return
    temporary = _temporary(path, ".tmp")
    try:
        kwargs = _tiff_metadata(path, stored, dtype, spacing, channel_names, info)
        array = tifffile.memmap(temporary, shape=stored_shape, dtype=dtype, **kwargs)
        yield np.transpose(array, to_caller)
        array.flush()
        del array
        _check_still_replaceable(path)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _tiff_metadata(path, axes, dtype, spacing, channel_names, info) -> dict:
    spatial = [a for a in axes if a in SPATIAL]
    sizes = dict(zip(spatial, spacing)) if spacing is not None else {}
    kwargs: dict = {"photometric": "minisblack"}
    if sizes:
        kwargs["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])
    if is_ome_tiff(path):
        metadata: dict = {"axes": axes, "Description": info}
        for a, size in sizes.items():
            metadata[f"PhysicalSize{a}"] = size
            metadata[f"PhysicalSize{a}Unit"] = "µm"
        if channel_names and "C" in axes:
            metadata["Channel"] = {"Name": list(channel_names)}
        kwargs.update(ome=True, metadata=metadata)
        kwargs.pop("resolution", None)
        return kwargs
    metadata = {"axes": axes, "unit": "um", "Info": info}
    if "Z" in sizes:
        metadata["spacing"] = sizes["Z"]
    kwargs.update(imagej=np.dtype(dtype) != np.float64, metadata=metadata)
    return kwargs


def _create_ome_zarr(directory: Path, shape, dtype, axes, spacing, info):
    import zarr

    group = zarr.open_group(str(directory), mode="w", zarr_format=2)
    chunks = tuple(n if a in SPATIAL else 1 for n, a in zip(shape, axes))
    # Every chunk written, also all-zero ones: a missing chunk reads as damage (_reading).
    array = group.create_array(
        "0", shape=shape, chunks=chunks, dtype=dtype, config={"write_empty_chunks": True}
    )
    spatial = iter(spacing or ())
    scale = [next(spatial) if spacing is not None and a in SPATIAL else 1.0 for a in axes]
    kinds = {"T": "time", "C": "channel", "S": "channel"}
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": a.lower(), "type": kinds.get(a, "space")}
                | ({"unit": "micrometer"} if a in SPATIAL else {})
                for a in axes
            ],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            ],
        }
    ]
    group.attrs["gpu_deconv"] = json.loads(info)
    return _Transposable(array)


class _Transposable:
    """A zarr array written through an axis permutation (zarr arrays have no views).

    Only for volume-wise writes: integers on the looped axes and slices on Z, Y, X, whose
    relative order both axis orders share, so the value needs no transposition.
    """

    def __init__(self, array, order: Sequence[int] | None = None):
        self.array = array
        self.order = list(order) if order is not None else list(range(array.ndim))
        self.shape = tuple(array.shape[i] for i in self.order)

    def transpose(self, order: Sequence[int]) -> _Transposable:
        return _Transposable(self.array, [self.order[i] for i in order])

    def _stored(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (len(self.order) - len(key))
        stored: list[Any] = [slice(None)] * len(self.order)
        for axis, index in zip(self.order, key):
            stored[axis] = index
        return tuple(stored)

    def __setitem__(self, key, value) -> None:
        self.array[self._stored(key)] = np.asarray(value)

    def __getitem__(self, key):
        return self.array[self._stored(key)]
