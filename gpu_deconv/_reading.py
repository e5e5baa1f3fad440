"""Reading inputs without a silent wrong answer: units, damaged TIFFs, damaged zarr arrays.

* Voxel sizes come out in micrometres from every length unit the formats name (ImageJ's
  ``unit``/``yunit``/``zunit``, OME's ``PhysicalSize*Unit``, OME-Zarr's axis ``unit``, a TIFF's
  ``ResolutionUnit``); an unknown unit is refused (:class:`UnitError`).
* A TIFF is read inside :func:`reading`: tifffile's log lines are not printed, and each of its
  complaints about the file (a truncated file, a bad page offset), as any failure to decode it,
  becomes one ``ValueError`` naming the file.
* A zarr array's absent chunks are refused (:func:`check_chunks`) unless asked for, and its
  chunks are read through :class:`CheckedZarr`, whose failures name the store and the voxels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tifffile


class UnitError(ValueError):
    """A voxel size in a unit that is not a known length (the message names file and unit)."""


_PREFIXES = [  # SI prefixes: symbol, name, power of ten (large first: "mm" beats "Mm" below)
    ("Y", "yotta", 24), ("Z", "zetta", 21), ("E", "exa", 18), ("P", "peta", 15),
    ("T", "tera", 12), ("G", "giga", 9), ("M", "mega", 6), ("k", "kilo", 3), ("h", "hecto", 2),
    ("da", "deca", 1), ("", "", 0), ("d", "deci", -1), ("c", "centi", -2), ("m", "milli", -3),
    ("µ", "micro", -6), ("n", "nano", -9), ("p", "pico", -12), ("f", "femto", -15),
    ("a", "atto", -18), ("z", "zepto", -21), ("y", "yocto", -24),
]  # fmt: skip
_INCH = 25400.0  # micrometres


def _unit_tables() -> tuple[dict[str, float], dict[str, float]]:
    """Return micrometres per unit: by symbol (case matters: Mm, mm) and by lower-case name."""
    symbols: dict[str, float] = {}
    names: dict[str, float] = {}
    for symbol, name, power in _PREFIXES:
        scale = 10.0 ** (power + 6) if power >= -6 else 1 / 10.0 ** -(power + 6)
        symbols[symbol + "m"] = scale
        for word in ("meter", "metre"):
            names[name + word] = names[name + word + "s"] = scale
    names["dekameter"] = names["dekametre"] = 1e7
    # micrometres as ImageJ (a literal "\u00B5m" in its TIFFs), Greek mu and ASCII spell them
    for spelling in ("μm", "um", "\\u00B5m", "\\u03BCm"):
        symbols[spelling] = 1.0
    names |= {"micron": 1.0, "microns": 1.0}
    symbols |= {"Å": 1e-4, "\u212b": 1e-4, "in": _INCH, "ft": 12 * _INCH, "yd": 36 * _INCH}
    symbols |= {"mi": 63360 * _INCH, "thou": _INCH / 1000, "li": _INCH / 12, "pt": _INCH / 72}
    symbols |= {"ua": 1.495978707e17, "ly": 9.4607304725808e21, "pc": 3.0856775814913673e22}
    for word, scale in {
        "angstrom": 1e-4,
        "inch": _INCH,
        "foot": 12 * _INCH,
        "yard": 36 * _INCH,
        "mile": 63360 * _INCH,
        "parsec": symbols["pc"],
    }.items():
        names[word] = names[word + "s"] = scale
    names |= {"inches": _INCH, "feet": 12 * _INCH}
    return symbols, names


_SYMBOLS, _NAMES = _unit_tables()
# ImageJ compares units in lower case ("NM" is nm, "Mm" mm): its table keeps the smaller unit.
_LOWER = {**{s.lower(): v for s, v in _SYMBOLS.items()}, **_NAMES}
# Units that say "no physical size" (ImageJ's uncalibrated "pixel", OME's "reference frame").
NO_SIZE = frozenset({"pixel", "pixels", "px", "reference frame"})
KNOWN = "nm, µm (um, micron, \\u00B5m), mm, cm, m, Å, inch, ... (SI or OME/NGFF names)"


def micrometres(
    value: float, unit: str | None, path: Any, where: str, *, ignore_case: bool = False
) -> float | None:
    """Return ``value`` in ``unit`` as micrometres; None for a unit meaning "no size" (pixel).

    ``unit`` None or blank is taken as micrometres (what gpu_deconv writes and OME's default).
    ``ignore_case`` compares as ImageJ does (``NM`` is nm). Raise :class:`UnitError`, naming
    ``path`` and ``where`` the unit was found, for a unit that is not a known length.
    """
    text = "" if unit is None else str(unit).strip()
    if not text:
        return float(value)
    if text.lower() in NO_SIZE:
        return None
    scale = (_LOWER if ignore_case else _SYMBOLS).get(text.lower() if ignore_case else text)
    if scale is None:
        scale = _NAMES.get(text.lower())
    if scale is None:
        raise UnitError(f"{path}: unknown length unit {text!r} ({where}); known units: {KNOWN}")
    return float(value) * scale if scale >= 1 else float(value) / (1 / scale)


# ---- voxel sizes of TIFFs -------------------------------------------------------------------

# ResolutionUnit: micrometres per unit. NONE and INCH (TIFF's and tifffile's default, which
# gpu_deconv's plain TIFFs carry) read as pixels per micrometre, as gpu_deconv writes them.
_RESOLUTION_UNITS = {3: 1e4, 4: 1e3, 5: 1.0}  # centimetre, millimetre (DNG), micrometre (DNG)


def tiff_voxel_size(tif: tifffile.TiffFile, ndim: int, path: Any) -> tuple[float, ...] | None:
    """Return the voxel size in micrometres of a TIFF's last ``ndim`` axes (Z, Y, X or Y, X).

    OME-TIFF: ``PhysicalSizeX/Y/Z`` in their ``Unit`` (default µm). ImageJ: the resolution
    tags and ``spacing`` in ``unit`` (``yunit``, ``zunit``), else in ``ResolutionUnit``. Other
    TIFFs: the resolution tags in ``ResolutionUnit`` (none or inch: pixels per micrometre) and
    a ``spacing`` in the shaped metadata. None without an X and Y size (or below 2 axes); a
    missing Z size is 1.
    """
    if ndim < 2:
        return None
    if tif.is_ome and tif.ome_metadata:
        sizes = _ome_sizes(tif.ome_metadata, path)
    else:
        sizes = _resolution_sizes(tif, path)
    if sizes.get("X") is None or sizes.get("Y") is None:
        return None
    yx = (float(sizes["Y"]), float(sizes["X"]))  # type: ignore[arg-type]
    return yx if ndim == 2 else (sizes.get("Z") or 1.0, *yx)


def _ome_sizes(xml: str, path: Any) -> dict[str, float | None]:
    root = ET.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.endswith("Pixels")), None)
    sizes: dict[str, float | None] = {}
    for axis in "XYZ":
        size = None if pixels is None else pixels.get(f"PhysicalSize{axis}")
        if size is not None:
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")  # type: ignore[union-attr]
            sizes[axis] = micrometres(float(size), unit, path, f"OME PhysicalSize{axis}Unit")
    return sizes


def _resolution_sizes(tif: tifffile.TiffFile, path: Any) -> dict[str, float | None]:
    page = tif.pages[0]

    def per_pixel(tag: str) -> float | None:
        value = page.tags.get(tag)  # type: ignore[union-attr]
        if value is None:
            return None
        num, den = value.value
        return den / num if num else None

    x, y = per_pixel("XResolution"), per_pixel("YResolution")
    imagej = tif.imagej_metadata or {}
    unit = str(imagej.get("unit", "")).strip()
    # 1 pixel per unit is tifffile's default: no size, unless ImageJ names the unit
    if x is None or y is None or (x == 1.0 and y == 1.0 and not unit):
        return {}
    shaped = tif.shaped_metadata[0] if tif.shaped_metadata else {}
    z = (imagej or shaped or {}).get("spacing")
    raw = {"X": x, "Y": y, "Z": float(z) if z else None}
    if unit:  # ImageJ's own unit, per axis where it has one
        units = {"X": unit, "Y": imagej.get("yunit", unit), "Z": imagej.get("zunit", unit)}
        key = {"X": "unit", "Y": "yunit", "Z": "zunit"}
        return {
            a: None
            if v is None
            else micrometres(v, units[a], path, f"ImageJ {key[a]}", ignore_case=True)
            for a, v in raw.items()
        }
    tag = page.tags.get("ResolutionUnit")  # type: ignore[union-attr]
    scale = _RESOLUTION_UNITS.get(int(tag.value) if tag is not None else 2, 1.0)
    return {a: None if v is None else v * scale for a, v in raw.items()}


def zarr_spacing(
    axes: Sequence[Mapping[str, Any]], scale: Sequence[float], path: Any, spatial: str
) -> tuple[float, ...]:
    """Return an OME-Zarr's voxel size in micrometres for its axes named in ``spatial``.

    ``scale`` is the level's whole scale (dataset and multiscale transformations); each axis's
    ``unit`` is a UDUNITS-2 length name (``nanometer``, ...; none: micrometres).
    """
    sizes = []
    for value, axis in zip(scale, axes):
        name = str(axis["name"]).upper()
        if name in spatial:
            where = f"OME-Zarr axis {axis['name']!r} unit"
            size = micrometres(float(value), axis.get("unit"), path, where)
            if size is None:
                raise UnitError(f"{path}: {where} {axis.get('unit')!r} is not a length")
            sizes.append(size)
    return tuple(sizes)


# ---- TIFF reads: tifffile's complaints become the error -------------------------------------

_local = threading.local()
_active: list[list[str]] = []  # the complaints of every read in progress, in any thread
_active_lock = threading.Lock()
_PREFIX = re.compile(r"^(<tifffile\.[^>]*>\s*)+")


class _Complaints(logging.Filter):
    """Take tifffile's warnings during our reads off its log, into the read's complaints.

    A record from a thread inside a read goes to that read; one from another thread (tifffile's
    decoding workers) to every read in progress. Outside our reads tifffile logs as usual.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        own = getattr(_local, "reads", None)
        with _active_lock:
            targets = [own[-1]] if own else list(_active)
        for complaints in targets:
            complaints.append(_PREFIX.sub("", " ".join(record.getMessage().split())))
        return not targets


_filter = _Complaints()


@contextlib.contextmanager
def reading(path: Any, what: str = "TIFF file") -> Iterator[None]:
    """Read ``path`` inside, tifffile's log lines silenced; raise one ``ValueError`` for it.

    The error names ``path`` and says what is wrong: reading failed (a strip that does not
    decompress), or tifffile complained about the file (a truncated file, a damaged page).
    :class:`UnitError`, ``MemoryError`` and ``KeyboardInterrupt`` pass as they are.
    """
    logger = logging.getLogger("tifffile")
    complaints: list[str] = []
    reads = _local.__dict__.setdefault("reads", [])
    reads.append(complaints)
    with _active_lock:
        if _filter not in logger.filters:
            logger.addFilter(_filter)
        _active.append(complaints)
    try:
        yield
    except (UnitError, MemoryError):
        raise
    except Exception as exc:
        raise ValueError(_unreadable(path, what, complaints, _reason(exc))) from exc
    finally:
        reads.pop()
        with _active_lock:
            _active.remove(complaints)
    if complaints:
        raise ValueError(_unreadable(path, what, complaints, None))


def _unreadable(path: Any, what: str, complaints: list[str], reason: str | None) -> str:
    told = list(dict.fromkeys(complaints))  # each once, in order
    if told:
        said = "; ".join(told[:3]) + ("; ..." if len(told) > 3 else "")
        reason = f"damaged or truncated: tifffile reports {said}"
    return f"{path} is not a readable {what} ({reason})"


def _reason(exc: BaseException) -> str:
    """``exc`` on one line, with its type where the message alone does not say what it is."""
    message = " ".join(str(exc).split()) or "no reason given"
    kind = type(exc)
    if kind in (ValueError, OSError, tifffile.TiffFileError) or isinstance(exc, OSError):
        return message
    module = "" if kind.__module__ == "builtins" else kind.__module__.split(".")[0] + "."
    return f"{module}{kind.__name__}: {message}"


# ---- zarr arrays: absent chunks, damaged chunks ---------------------------------------------


def check_chunks(array: Any, path: Any, allow_missing: bool) -> None:
    """Raise ``ValueError`` if chunks of the zarr ``array`` are absent from its store.

    zarr reads an absent chunk as the fill value: an incomplete copy or an interrupted write
    would be deconvolved as zeros. zarr also leaves out chunks holding only the fill value
    (``write_empty_chunks=False``, zarr-python 3's default): ``allow_missing`` accepts them.
    """
    if allow_missing:
        return
    total, stored = int(array.nchunks), int(array.nchunks_initialized)
    if stored < total:
        fill = getattr(array, "fill_value", None)
        fill = 0 if fill is None else fill
        raise ValueError(
            f"{path}: {total - stored} of the zarr array's {total} chunks are missing (an "
            f"incomplete copy or write?); if the store leaves out chunks that hold only the "
            f"fill value, pass allow_missing_chunks=True (CLI: --allow-missing-chunks) to "
            f"read them as {fill}"
        )


class CheckedZarr:
    """A zarr array whose reads raise ``ValueError`` naming the store and voxels on failure.

    A damaged chunk (truncated, not decompressing) fails with the codec's own error type; this
    says which file and where. It has ``shape``, ``dtype``, ``ndim``, ``chunks`` and indexing,
    which is what :func:`dask.array.from_array` and the stack readers use.
    """

    def __init__(self, array: Any, path: str | os.PathLike) -> None:
        self.array, self.path = array, str(path)
        self.shape, self.dtype = tuple(array.shape), array.dtype
        self.ndim, self.chunks = len(self.shape), array.chunks

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.array[key]
        except (MemoryError, IndexError, TypeError):
            raise
        except Exception as exc:
            raise ValueError(
                f"{self.path} is a damaged zarr array: voxels [{_region(key)}] do not read "
                f"({_reason(exc)})"
            ) from exc

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return ("gpu_deconv.CheckedZarr", tokenize(self.array), self.path)


def _region(key: Any) -> str:
    key = key if isinstance(key, tuple) else (key,)
    parts = []
    for k in key:
        if isinstance(k, slice):
            parts.append(f"{'' if k.start is None else k.start}:{'' if k.stop is None else k.stop}")
        else:
            parts.append("..." if k is Ellipsis else str(k))
    return ", ".join(parts)
