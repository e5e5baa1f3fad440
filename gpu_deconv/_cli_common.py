"""What the ``gpu-deconv`` commands share: argument types, computing dask graphs, messages.

:mod:`gpu_deconv.cli` and :mod:`gpu_deconv._cli_filters` both import it; neither imports
the other's helpers.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def tile_shape(text: str) -> str | list[int] | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    return int_list(text)


def size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    try:
        scale = units.get(text[-1:].upper(), 1)
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(f"expected a size like 2G or 512M, got {text!r}") from exc


def report_clipping(path: Path, clipped: int, dtype: str) -> None:
    if clipped:
        print(
            f"gpu-deconv: warning: {clipped} voxels of {path.name} were outside the "
            f"{dtype} range and were clipped",
            file=sys.stderr,
        )


def compute(args: argparse.Namespace, task):
    """Compute a dask collection on the chosen scheduler, with progress on stderr."""
    import contextlib

    address = args.scheduler
    if address is not None and address not in ("threads", "sync", "processes"):
        try:
            from distributed import Client, progress
        except ImportError as exc:
            raise ValueError("--scheduler ADDRESS needs dask.distributed installed") from exc
        try:
            client = Client(address, timeout="10s")
        except OSError as exc:
            raise ValueError(f"cannot reach the dask scheduler at {address}: {exc}") from exc
        with client:
            try:  # a scheduler without workers would wait forever
                client.wait_for_workers(1, timeout=60)
            except TimeoutError as exc:
                raise ValueError(f"the dask scheduler at {address} has no workers") from exc
            future = client.compute(task)
            try:
                if not args.quiet:
                    with contextlib.redirect_stdout(sys.stderr):
                        progress(future)
                return future.result()
            except BaseException:  # Ctrl-C, SIGTERM: the cluster drops the run's tasks
                client.cancel(future, force=True)
                raise
    from dask.diagnostics import ProgressBar

    from .dask import compute_stoppable

    bar = contextlib.nullcontext() if args.quiet else ProgressBar(out=sys.stderr)
    with bar:  # interrupted, the running chunks stop before the output is removed
        return compute_stoppable(task, address or "threads")


def provenance(
    args: argparse.Namespace, inputs: Mapping[str, Any], info: Any = None, backend: Any = None
) -> dict:
    """Return how an output was made: version, date, command, inputs, and what actually ran.

    ``info`` (a run's :class:`~gpu_deconv.Info`) gives the backend, method, device and
    iterations used; without it, ``backend`` (a built backend) gives its name and device.
    """
    from . import __version__

    record: dict[str, Any] = {
        "software": "gpu_deconv",
        "version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["gpu-deconv", *getattr(args, "argv", sys.argv[1:])]),
        "inputs": {name: str(path) for name, path in inputs.items()},
    }
    if info is not None:
        record.update(
            backend=info.backend, method=info.method, device=info.device, iterations=info.iterations
        )
    elif backend is not None:
        record.update(backend=backend.name, device=backend.device_name)
    return record
