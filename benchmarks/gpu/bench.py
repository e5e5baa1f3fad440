"""GPU benchmark of benchmarks/gpu/check.sh: end to end and per iteration, each algorithm.

For each volume size: a Gaussian PSF, ``--iterations`` iterations of plain Richardson-Lucy,
SHB and Biggs-Andrews on the OpenCL backend, reflect edges, for each of ``--methods``
(``auto``: the cost model's choice; ``fft``: the DCT/FFT path). Each case is
run once at three iterations to compile kernels and plans (not timed), then timed at one and at
``--iterations`` iterations, end to end (host array in, host array out, the device
synchronised by the pull); the per-iteration time is the difference over the extra
iterations. The NumPy backend runs the same cases on sizes up to ``--numpy-max-voxels``, so the
ratios are measured in the same run. Stops starting new cases at ``--deadline`` seconds.

    python benchmarks/gpu/bench.py --sizes 256x256x256,512x1024x1024 --out bench.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import time

import numpy as np

import gpu_deconv as gd
from gpu_deconv.psf import gaussian_psf

ALGORITHMS = {"rl": None, "shb": "shb", "biggs": "biggs"}


def parse_size(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.lower().split("x"))


def volume(shape: tuple[int, ...]) -> np.ndarray:
    """Positive test data without a full-size float64 temporary: blobs over a background."""
    rng = np.random.default_rng(0)
    image = np.full(shape, 0.05, np.float32)
    for _ in range(64):
        centre = tuple(int(rng.integers(4, n - 4)) if n > 8 else n // 2 for n in shape)
        region = tuple(slice(max(c - 4, 0), c + 4) for c in centre)
        image[region] += np.float32(rng.uniform(0.5, 1.0))
    return image


def timed(image, psf, iterations, **options) -> float:
    start = time.perf_counter()
    gd.richardson_lucy(image, psf, iterations, **options)
    return time.perf_counter() - start


def case(image, psf, iterations, **options) -> dict:
    # Compiles kernels, FFT plans and (from the second iteration on) the reductions.
    timed(image, psf, min(3, iterations), **options)
    one = timed(image, psf, 1, **options)
    full = timed(image, psf, iterations, **options)
    return {
        "end_to_end_s": full,
        "one_iteration_run_s": one,
        "per_iteration_s": (full - one) / (iterations - 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256x256x256,512x1024x1024")
    parser.add_argument("--psf", type=int, default=17, help="PSF edge length (voxels)")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--methods", default="auto,fft", help="comma-separated")
    parser.add_argument("--numpy-max-voxels", type=int, default=256**3)
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    begin = time.perf_counter()
    opencl = gd.get_backend("opencl")
    rows, skipped = [], []
    sizes = [parse_size(size) for size in args.sizes.split(",")]
    # Every OpenCL case first, then NumPy's, so that a short deadline cuts the peer first.
    backends = [("opencl", opencl), ("numpy", "numpy")]
    for (label, backend), shape in itertools.product(backends, sizes):
        if label == "numpy" and math.prod(shape) > args.numpy_max_voxels:
            continue
        size = "x".join(map(str, shape))
        psf = gaussian_psf((args.psf,) * len(shape), sigma=[2.0] * len(shape))
        image = volume(shape)
        for method, (name, acceleration) in itertools.product(
            args.methods.split(","), ALGORITHMS.items()
        ):
            if time.perf_counter() - begin > args.deadline:
                skipped.append(f"{size} {method} {name} {label}")
                continue
            chosen = gd.choose_method(shape, psf, backend=backend) if method == "auto" else method
            row = {"size": size, "algorithm": name, "backend": label, "method": chosen}
            options = dict(backend=backend, method=method, acceleration=acceleration)
            row.update(case(image, psf, args.iterations, **options))
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "device": opencl.device_name,
        "driver": opencl.device.driver_version,
        "platform": opencl.device.platform.name.strip(),
        "host": platform.processor() or platform.machine(),
        "psf": args.psf,
        "iterations": args.iterations,
        "rows": rows,
        "skipped_for_time": skipped,
    }
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
