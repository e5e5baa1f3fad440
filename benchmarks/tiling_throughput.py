"""Throughput of tiled against whole-volume Richardson-Lucy, per backend, side by side.

``python benchmarks/tiling_throughput.py [--shape 128,256,256] [--tile 64,128,128]`` times
each backend whole and tiled (first call excluded, median of 3) and reports voxels per
second, the tiled/whole ratio and the seam error (relative RMS and max |difference| / max of
the tiled result against the whole one). Writes
``benchmarks/results/<host>-<date>-tiling.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

import gpu_deconv as gd
from gpu_deconv.psf import gaussian_psf
from gpu_deconv.tiling import default_overlap

RESULTS = Path(__file__).resolve().parent / "results"


def _lengths(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(","))


def timed(run, repeats: int = 3) -> tuple[float, np.ndarray]:
    """Median seconds of ``run()`` after one untimed call, and its result."""
    result = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None) -> int:
    """Run the comparison; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=_lengths, default=(128, 256, 256))
    parser.add_argument("--tile", type=_lengths, default=(64, 128, 128))
    parser.add_argument("-n", "--iterations", type=int, default=10)
    parser.add_argument("--backends", default="numpy,opencl")
    args = parser.parse_args(argv)
    psf = gaussian_psf((15, 15, 15), (2.0, 1.5, 1.5))
    rng = np.random.default_rng(0)
    points = rng.random(args.shape, dtype=np.float32) ** 40
    image = (ndi.gaussian_filter(points, (2.0, 1.5, 1.5)) * 1000 + 10).astype(np.float32)
    voxels = image.size * args.iterations
    rows = []
    for backend in args.backends.split(","):

        def run(tile_shape, backend=backend):
            return gd.richardson_lucy(
                image, psf, args.iterations, backend=backend, tile_shape=tile_shape
            )

        whole_s, whole = timed(lambda: run(None))
        tiled_s, tiled = timed(lambda: run(args.tile))
        diff = tiled.astype(np.float64) - whole
        rows.append(
            {
                "backend": backend,
                "whole_voxels_per_s": voxels / whole_s,
                "tiled_voxels_per_s": voxels / tiled_s,
                "tiled_over_whole_time": tiled_s / whole_s,
                "seam_rel_rms": float(np.sqrt(np.mean(diff**2) / np.mean(whole**2.0))),
                "seam_max_abs_rel": float(np.abs(diff).max() / np.abs(whole).max()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "shape": list(args.shape),
        "tile": list(args.tile),
        "overlap": list(default_overlap(psf)),
        "iterations": args.iterations,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    name = f"{socket.gethostname()}-{datetime.date.today()}-tiling.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
