"""The ``gpu-deconv wiener`` and ``gpu-deconv tikhonov`` subcommands (direct filters).

TIFF to TIFF in memory; a zarr input or output runs chunk by chunk on dask (``tikhonov``
and ``wiener --balance``). Errors and outputs follow :mod:`gpu_deconv.cli`: exit code 2 and
one line, atomic writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ._cli_common import compute, int_list, report_clipping, size, tile_shape
from ._validation import BOUNDARIES, REGULARIZERS
from .backends import available_backends
from .io import OUTPUT_DTYPES

# What gpu_deconv._cli_common.compute reads: dask's local threads, no progress bar.
LOCAL = argparse.Namespace(scheduler=None, quiet=True)


def add_parsers(sub: Any) -> None:
    """Add the two subcommands to ``sub``."""
    wiener = sub.add_parser(
        "wiener",
        help="deconvolve with a Wiener filter (one pass)",
        description="Exactly one of --balance (scikit-image's constant noise-to-signal ratio) "
        "or --noise-variance (the signal's power estimated from the data, SimpleITK's).",
    )
    weight = wiener.add_mutually_exclusive_group(required=True)
    weight.add_argument("--balance", type=float, help="noise-to-signal ratio (> 0)")
    weight.add_argument(
        "--noise-variance",
        type=float,
        help="white-noise variance per voxel, in the image's units squared (> 0)",
    )
    wiener.add_argument(
        "--regularizer",
        choices=REGULARIZERS,
        default=None,
        help="with --balance: the penalised operator (default: laplacian)",
    )
    tikhonov = sub.add_parser(
        "tikhonov", help="deconvolve by Tikhonov-regularised least squares (one pass)"
    )
    tikhonov.add_argument(
        "--regularization", type=float, required=True, help="the penalty's weight (> 0)"
    )
    tikhonov.add_argument(
        "--regularizer",
        choices=REGULARIZERS,
        default="identity",
        help="the penalised operator (default: %(default)s)",
    )
    for parser in (wiener, tikhonov):
        parser.add_argument("image", type=Path, help="input TIFF or zarr array (1D to 3D)")
        parser.add_argument("--psf", type=Path, required=True, help="PSF with the image's ndim")
        parser.add_argument("-o", "--output", type=Path, required=True, help="output TIFF or .zarr")
        parser.add_argument("--backend", default="auto", choices=available_backends())
        parser.add_argument(
            "--boundary",
            default="reflect",
            choices=BOUNDARIES,
            help="edge handling, scipy.ndimage names (default: %(default)s)",
        )
        parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
        parser.add_argument(
            "--output-dtype",
            default="float32",
            choices=list(OUTPUT_DTYPES),
            help="dtype written (default: %(default)s); the result may be negative, which "
            "integer types clip with a warning",
        )
        parser.add_argument("--device", default=None, help="OpenCL device name substring")
        parser.add_argument(
            "--tile-shape", type=tile_shape, default="auto", metavar="auto|none|Z,Y,X"
        )
        parser.add_argument("--overlap", type=int_list, default=None, metavar="N[,N,N]")
        parser.add_argument("--max-memory", type=size, default=None, metavar="SIZE")
        parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        parser.add_argument(
            "--allow-missing-chunks",
            action="store_true",
            help="zarr inputs: read chunks absent from the store as the fill value (default: "
            "refused, as an incomplete copy would be)",
        )


def run(args: argparse.Namespace) -> None:
    """Filter ``args.image`` and write ``args.output`` (all or nothing)."""
    from . import _filters
    from . import dask as gdd
    from .io import (
        check_free_space,
        check_output_path,
        convert_for_output,
        is_zarr,
        open_lazy,
        read_image,
        read_tiff,
        write_tiff,
        write_zarr,
    )

    check_output_path(args.output, args.overwrite, inputs={"image": args.image, "psf": args.psf})
    _check_one_image(args.image, args.command)
    psf = read_image(args.psf, args.allow_missing_chunks).data
    weights, options = _weights(args), _options(args)
    if is_zarr(args.image) or is_zarr(args.output):
        if args.command == "wiener" and args.noise_variance is not None:
            raise ValueError("--noise-variance needs the whole image: use TIFF input and output")
        chunks = None if args.tile_shape in (None, "auto") else tuple(args.tile_shape)
        image = open_lazy(args.image, allow_missing_chunks=args.allow_missing_chunks)
        lazy = getattr(gdd, args.command)(image, psf, chunks=chunks, **weights, **options)
        if is_zarr(args.output):
            write_zarr(args.output, lazy.astype(args.output_dtype), args.overwrite,
                       compute=lambda task: compute(LOCAL, task))  # fmt: skip
            return
        result, voxel = compute(LOCAL, lazy), None
    else:
        image = read_tiff(args.image)
        check_free_space(args.output.parent, image.data.size * np.dtype(args.output_dtype).itemsize)
        function = getattr(_filters, args.command)
        result = function(image.data, psf, tile_shape=args.tile_shape, **weights, **options)
        voxel = image.voxel_size
    data, clipped = convert_for_output(result, args.output_dtype)
    report_clipping(args.output, clipped, args.output_dtype)
    write_tiff(args.output, data, voxel, overwrite=args.overwrite)


def _check_one_image(path: Path, command: str) -> None:
    """Refuse colours, channels and time points the file declares, as ``gpu-deconv run`` sees them.

    A filter takes one 1D-3D image: read as one, an RGB TIFF or a ``CYX`` hyperstack would be
    filtered across its colours or channels, as if they were planes. Colours follow the rule
    of :func:`gpu_deconv.stack.check_colours`.
    """
    from .stack import check_colours
    from .stack_io import file_axes

    try:
        axes = file_axes(path)  # what run reads, without the pixels
    except (OSError, ValueError):  # not a TIFF or OME-Zarr (a plain zarr array): no axes
        return
    check_colours(axes, remedy="convert it to one channel per colour")
    if set(axes) & set("TC"):
        raise ValueError(
            f"{path} holds channels or time points (axes {axes!r}): {command} filters one image;"
            " split them into one file each (gpu-deconv run deconvolves them one by one)"
        )


def _weights(args: argparse.Namespace) -> dict:
    if args.command == "tikhonov":
        return dict(regularization=args.regularization, regularizer=args.regularizer)
    if args.noise_variance is not None:
        if args.regularizer is not None:
            raise ValueError("--regularizer applies with --balance, not with --noise-variance")
        return dict(noise_variance=args.noise_variance)
    return dict(balance=args.balance, regularizer=args.regularizer or "laplacian")


def _options(args: argparse.Namespace) -> dict:
    names = ("backend", "boundary", "dtype", "device", "overlap", "max_memory")
    options = {name: getattr(args, name) for name in names}
    if args.overlap is not None and len(args.overlap) == 1:  # one value for every axis
        options["overlap"] = args.overlap[0]
    return options
