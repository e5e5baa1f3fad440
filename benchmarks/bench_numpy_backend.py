"""NumPy backend vs scikit-image and SimpleITK, side by side in one run.

Case: 64x256x256 float32 volume, 17^3 anisotropic Gaussian PSF, ``boundary="reflect"``.
Every implementation runs in this process on the same data; runs are interleaved (round robin)
so that drifts of the machine hit all of them alike, and warm-up runs (FFT planning, first-call
overheads) are excluded. Reported: median seconds per iteration and ratios against each peer,
plus the "floor" (the transforms alone) for our backend.

Writes ``benchmarks/results/<host>-<date>-numpy.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import socket
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.ndimage as ndi

import gpu_deconv as gd
from gpu_deconv.backends.numpy_backend import NumpyBackend
from gpu_deconv.psf import gaussian_psf

RESULTS = Path(__file__).resolve().parent / "results"


def make_case(shape=(64, 256, 256), psf_shape=(17, 17, 17), sigma=(3.0, 2.0, 2.0)):
    rng = np.random.default_rng(0)
    truth = ndi.gaussian_filter(rng.random(shape).astype(np.float32) ** 8, 1.0) * 1000 + 10
    psf = gaussian_psf(psf_shape, sigma)
    image = ndi.convolve(truth, psf.astype(np.float32), mode="reflect")
    return image.astype(np.float32), psf


def runners(image, psf, iterations):
    psf32 = psf.astype(np.float32)

    def ours(boundary):
        return lambda: gd.richardson_lucy(
            image, psf, iterations, backend="numpy", method="fft", boundary=boundary
        )

    def skimage_rl():
        from skimage.restoration import richardson_lucy

        return richardson_lucy(image, psf32, iterations, clip=False)

    def simpleitk_rl():
        import SimpleITK as sitk

        result = sitk.RichardsonLucyDeconvolution(
            sitk.GetImageFromArray(image), sitk.GetImageFromArray(psf32), iterations
        )
        return sitk.GetArrayFromImage(result)

    def floor():
        """The transforms our fft method must do per iteration: two forward, two inverse."""
        op = NumpyBackend().blur_operator(psf, image.shape, "reflect", "fft", np.float32)
        axes = getattr(op, "_axes", None)
        for _ in range(iterations):
            for _ in range(2):
                spectrum = scipy.fft.dctn(image, type=2, axes=axes, workers=-1)
                scipy.fft.idctn(spectrum, type=2, axes=axes, workers=-1, overwrite_x=True)

    return {
        "gpu_deconv numpy fft reflect": ours("reflect"),
        "gpu_deconv numpy fft wrap": ours("wrap"),
        "gpu_deconv numpy fft nearest": ours("nearest"),
        "floor: 2 DCT-II + 2 inverse (scipy.fft)": floor,
        "scikit-image richardson_lucy": skimage_rl,
        "SimpleITK RichardsonLucyDeconvolution": simpleitk_rl,
    }


def measure(funcs: dict, iterations: dict, repeats: int) -> dict:
    times = {name: [] for name in funcs}
    for func in funcs.values():  # warm-up: planning and first-call costs excluded
        func()
    for _ in range(repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            func()
            times[name].append((time.perf_counter() - start) / iterations[name])
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--sitk-iterations", type=int, default=2, help="SimpleITK is slow")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    image, psf = make_case()
    fast = runners(image, psf, args.iterations)
    slow = runners(image, psf, args.sitk_iterations)
    sitk_name = "SimpleITK RichardsonLucyDeconvolution"
    funcs = {n: f for n, f in fast.items() if n != sitk_name}
    funcs[sitk_name] = slow[sitk_name]
    counts = {n: args.iterations for n in funcs}
    counts[sitk_name] = args.sitk_iterations
    per_iteration = measure(funcs, counts, args.repeats)

    ours = per_iteration["gpu_deconv numpy fft reflect"]
    floor = per_iteration["floor: 2 DCT-II + 2 inverse (scipy.fft)"]
    rows = []
    for name, seconds in per_iteration.items():
        rows.append(
            {
                "implementation": name,
                "ms_per_iteration": seconds * 1e3,
                "speed-up of gpu_deconv reflect vs this": seconds / ours,
                "x floor": seconds / floor,
            }
        )
    meta = {
        "host": socket.gethostname(),
        "date": datetime.date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cores": __import__("os").cpu_count(),
        "shape": list(image.shape),
        "psf_shape": list(psf.shape),
        "dtype": "float32",
        "iterations": args.iterations,
        "simpleitk_iterations": args.sitk_iterations,
        "repeats": args.repeats,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{meta['host']}-{meta['date']}-numpy"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"Case: {meta['shape']} float32, {meta['psf_shape']} Gaussian PSF, "
        f"{meta['cores']} cores, median of {args.repeats} interleaved runs.",
        "",
        "| implementation | ms / iteration | gpu_deconv (reflect) is faster by | x floor |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['implementation']} | {row['ms_per_iteration']:.1f} | "
            f"{row['speed-up of gpu_deconv reflect vs this']:.2f}x | {row['x floor']:.2f} |"
        )
    table = "\n".join(lines)
    stem.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
