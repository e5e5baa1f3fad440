"""Where float32 FFTs stop being trustworthy: dim-region error against dynamic range.

``python benchmarks/dynamic_range.py [--ndim 2|3] [--iterations 20]`` deconvolves an image
whose right half is ``R`` times dimmer than its left half (smooth random structure, so
the dim half is a region, not isolated voxels) for ``R`` from 1e2 to 1e10, with each method
and backend, and reports the relative RMS error of the dim half against float64
``method="spatial"`` on NumPy, and the fraction of zeros there. Writes
``benchmarks/results/<host>-<date>-dynamic-range.json``. docs/verification.md
and :mod:`gpu_deconv._precision` (the warning's threshold) quote its results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

import gpu_deconv as gd
from gpu_deconv.psf import gaussian_psf

RESULTS = Path(__file__).resolve().parent / "results"
RANGES = [1e2, 1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 1e7, 1e8, 1e10]
RUNS = [
    ("numpy", "fft", "float64"),
    ("numpy", "fft", "float32"),
    ("numpy", "spatial", "float32"),
    ("opencl", "fft", "float32"),
    ("opencl", "spatial", "float32"),
]


def two_level(shape: tuple[int, ...], dynamic_range: float) -> np.ndarray:
    """Smooth positive structure; the last axis' second half ``dynamic_range`` times dimmer."""
    image = ndi.gaussian_filter(np.random.default_rng(0).random(shape), 2.0)
    image = (image - image.min()) / (image.max() - image.min()) + 0.2
    image[..., shape[-1] // 2 :] /= dynamic_range
    return image


def rel_rms(result: np.ndarray, expected: np.ndarray) -> float:
    """Root mean square of the difference over that of ``expected``."""
    diff = np.asarray(result, np.float64) - expected
    return float(np.sqrt(np.mean(diff**2) / np.mean(expected**2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ndim", type=int, default=2, choices=[2, 3])
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    if args.ndim == 2:
        shape, psf = (96, 192), gaussian_psf((13, 13), 2.0)
    else:
        shape, psf = (24, 64, 96), gaussian_psf((7, 9, 9), 1.5)
    dim = (Ellipsis, slice(shape[-1] // 2, None))
    backends = ["numpy", *(["opencl"] if _has_opencl() else [])]
    runs = [r for r in RUNS if r[0] in backends]
    rows = []
    print(f"{args.ndim}D {shape}, PSF {psf.shape}, {args.iterations} iterations")
    print("dim-region relative RMS error (fraction of zeros) against float64 spatial on NumPy")
    print("R      " + "".join(f"{'-'.join(r):>24}" for r in runs))
    for dynamic_range in RANGES:
        image = two_level(shape, dynamic_range)
        reference = gd.richardson_lucy(
            image, psf, args.iterations, backend="numpy", method="spatial"
        )[dim]
        row = {"dynamic_range": dynamic_range}
        for backend, method, dtype in runs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", gd.PrecisionWarning)
                result = gd.richardson_lucy(
                    image, psf, args.iterations, backend=backend, method=method, dtype=dtype
                )[dim]
            row[f"{backend}-{method}-{dtype}"] = {
                "rel_rms": rel_rms(result, reference),
                "zeros": float(np.mean(result == 0)),
            }
        rows.append(row)
        cells = [
            f"{row[k]['rel_rms']:12.1e} ({row[k]['zeros']:4.0%})"
            for k in row
            if k != "dynamic_range"
        ]
        print(f"{dynamic_range:6.0e} " + "".join(f"{c:>24}" for c in cells), flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.date.today().isoformat()
    out = RESULTS / f"{socket.gethostname()}-{stamp}-dynamic-range-{args.ndim}d.json"
    out.write_text(
        json.dumps(
            dict(shape=shape, psf=psf.shape, iterations=args.iterations, rows=rows), indent=1
        )
    )
    print(f"wrote {out}")


def _has_opencl() -> bool:
    try:
        gd.get_backend("opencl")
    except gd.BackendUnavailableError:
        return False
    return True


if __name__ == "__main__":
    main()
