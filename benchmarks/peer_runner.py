"""Time one Richardson-Lucy implementation on one case; run in its own process by the drivers.

Usage: ``python peer_runner.py IMPLEMENTATION CASE ITERATIONS REPEATS [--budget SECONDS]``,
e.g. ``python peer_runner.py clij2fft-rl 3d 10 3`` (cases: see :data:`CASES`). Prints one JSON
line: ``{"implementation", "seconds_per_iteration" (median), "all_seconds_per_iteration",
"repeats", "first_call_seconds", "peak_rss_bytes", "device_bytes", "result_path"}`` or
``{"implementation", "error", "peak_rss_bytes"}``. The first call (kernel compilation, FFT
planning) is timed separately and excluded; device work is synchronised inside the timed region
(every implementation returns a host array, which waits for the device). Up to REPEATS timed
runs follow, fewer where one more run would take the timed runs past ``--budget`` seconds (at
least one always runs): a row whose single run takes many seconds is timed once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np


def synthetic_case(shape, psf_shape, sigmas):
    """Deterministic sparse bright structures blurred by an anisotropic Gaussian PSF."""
    import scipy.ndimage as ndi

    rng = np.random.default_rng(0)
    truth = ndi.gaussian_filter(rng.random(shape).astype(np.float32) ** 8, 1.0) * 1000 + 10
    psf = np.ones((), dtype=np.float64)
    for n, s in zip(psf_shape, sigmas):
        x = np.arange(n) - n // 2
        psf = np.multiply.outer(psf, np.exp(-0.5 * (x / s) ** 2))
    psf /= psf.sum()
    # gpu_deconv's fft convolve equals ndi.convolve (tests/test_convolution.py) and takes
    # seconds where the direct 17^3 convolution of 128x512x512 takes minutes.
    import gpu_deconv as gd

    image = gd.convolve(truth, psf.astype(np.float32), backend="numpy", method="fft")
    return image.astype(np.float32), psf.astype(np.float32)


def tutorial_case():
    """The tutorial: the bundled 70x70 nucleus blurred by the 25x25 sigma-2 PSF."""
    import scipy.ndimage as ndi

    from gpu_deconv.demo import tutorial_psf
    from gpu_deconv.samples import nucleus

    psf = tutorial_psf()
    image = ndi.convolve(nucleus().astype(np.float64), psf)
    return image.astype(np.float32), psf.astype(np.float32)


def confocal_case():
    """The real confocal grid (21x150x150) and its measured 45^3 PSF from ../shared/data."""
    from pathlib import Path

    from gpu_deconv.io import read_tiff

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    image = read_tiff(data / "bian_DeconvolutionSampleVerticalGrid1AU-crop.tif").data
    psf = read_tiff(data / "bian_psf_measured_45cube.tif").data
    return image.astype(np.float32), np.maximum(psf, 0).astype(np.float32)


CASES = {
    "tutorial": tutorial_case,
    "2d-large": lambda: synthetic_case((2048, 2048), (25, 25), (2.0, 2.0)),
    "3d": lambda: synthetic_case((64, 256, 256), (17, 17, 17), (3.0, 2.0, 2.0)),
    "3d-large": lambda: synthetic_case((128, 512, 512), (17, 17, 17), (3.0, 2.0, 2.0)),
    "confocal": confocal_case,
}


def make_case(case):
    """Return ``(image, psf)`` float32 arrays of a named case."""
    return CASES[case]()


def implementation(name, image, psf):
    """Return ``run(iterations) -> ndarray`` for ``name``."""
    if name.startswith("gpu_deconv-"):
        import gpu_deconv as gd

        _, backend, method, boundary = name.split("-")
        # tile_shape=None: always the whole-volume path (tiles are benchmarked separately).
        return lambda n: gd.richardson_lucy(
            image,
            psf,
            n,
            backend=backend,
            method=method,
            boundary=boundary,
            dtype="float32",
            tile_shape=None,
        )
    if name == "skimage":
        from skimage.restoration import richardson_lucy

        return lambda n: richardson_lucy(image, psf, n, clip=False)
    if name == "simpleitk":
        import SimpleITK as sitk

        def run(n):
            result = sitk.RichardsonLucyDeconvolution(
                sitk.GetImageFromArray(image), sitk.GetImageFromArray(psf), n
            )
            return sitk.GetArrayFromImage(result)

        return run
    if name in ("clij2fft-rl", "clij2fft-rl-nc"):
        from clij2fft.richardson_lucy import richardson_lucy, richardson_lucy_nc

        func = richardson_lucy if name == "clij2fft-rl" else richardson_lucy_nc
        return lambda n: func(image, psf, n)
    if name == "redlionfish-opencl":
        from RedLionfishDeconv.RLDeconv3DReiknaOCL import nonBlock_RLDeconvolutionReiknaOCL

        return lambda n: nonBlock_RLDeconvolutionReiknaOCL(image, psf, niter=n)
    if name in ("floor-numpy", "floor-opencl"):
        return transform_floor(name, image, psf)
    if name == "clesperanto-naive":
        return clesperanto_naive(image, psf)
    raise ValueError(f"unknown implementation {name!r}")


def clesperanto_naive(image, psf):
    """The "obvious" design: RL from pyclesperanto-prototype's spatial filters.

    ``cle.convolve`` correlates (no kernel flip) with clamp-to-edge borders, so the forward blur
    passes the flipped PSF and the back-projection the PSF itself.
    """
    import pyclesperanto_prototype as cle

    flipped = cle.push(np.ascontiguousarray(psf[(slice(None, None, -1),) * psf.ndim]))
    kernel = cle.push(psf)

    def run(n):
        observed = cle.push(image)
        estimate = cle.copy(observed)
        blurred = cle.create_like(observed)
        ratio = cle.create_like(observed)
        correction = cle.create_like(observed)
        for _ in range(n):
            cle.convolve(estimate, flipped, blurred)
            cle.divide_images(observed, blurred, ratio)
            cle.convolve(ratio, kernel, correction)
            cle.multiply_images(estimate, correction, blurred)
            estimate, blurred = blurred, estimate
        return cle.pull(estimate)

    return run


def transform_floor(name, image, psf):
    """Per iteration, the transforms the fft method must do on this backend for ``reflect``,
    nothing else: two forward and two inverse DCT-II of the image, or of real FFTs of the
    padded domain, whichever the backend's cost model picks."""
    import gpu_deconv as gd
    from gpu_deconv.backends._base import BlurSpec
    from gpu_deconv.backends._planning import fft_geometry

    backend = gd.get_backend(name.split("-")[1])
    spec = BlurSpec(psf / psf.sum(), image.shape, "reflect", "fft", np.float32)
    op = backend.blur_operator(spec)
    padded = fft_geometry(image.shape, psf.shape, "reflect").padded_shape
    if backend.name == "numpy":
        import scipy.fft

        # The thread count blur_operator gives its transforms: decided on the image's shape.
        workers = backend.fft_workers(image.shape)

        def pair(x):
            if op.transform == "dct2":
                spectrum = scipy.fft.dctn(x, type=2, workers=workers)
                return scipy.fft.idctn(spectrum, type=2, workers=workers)
            spectrum = scipy.fft.rfftn(x, workers=workers)
            return scipy.fft.irfftn(spectrum, s=x.shape, workers=workers)

        buffer = np.zeros(padded if op.transform == "rfft" else image.shape, np.float32)

        def run(n):
            for _ in range(2 * n):
                pair(buffer)
            return image

        return run
    import pyopencl.array as cla

    if op.transform == "rfft":
        shape = (*padded[:-1], 2 * (padded[-1] // 2 + 1))
        plan = backend.fft_plan(shape, r2c=True, r2c_odd=bool(padded[-1] % 2), ndim=len(shape))
    else:
        shape = image.shape
        plan = backend.fft_plan(shape, dct=2, axes=tuple(range(-len(shape), 0)))
    buffer = cla.zeros(backend.queue, shape, np.float32)

    def run(n):
        for _ in range(2 * n):
            plan.fft(buffer)
            plan.ifft(buffer)
        return buffer.get()[tuple(slice(0, k) for k in image.shape)]  # waits for the queue

    return run


def planned_device_bytes(name, image, psf):
    """Device bytes the OpenCL backend plans for a ``gpu_deconv-opencl-*`` row, else ``None``.

    The backend's own accounting, which it checks before allocating, for the whole image (the
    benchmark cases fit the device untiled).
    """
    if not name.startswith("gpu_deconv-opencl-"):
        return None
    import gpu_deconv as gd
    from gpu_deconv._model import memory_need
    from gpu_deconv.algorithms import RichardsonLucy
    from gpu_deconv.backends._base import BlurSpec

    _, backend, method, boundary = name.split("-")
    # The PSF as richardson_lucy hands it to the backend: float64, normalised.
    psf64 = psf.astype(np.float64) / psf.sum(dtype=np.float64)
    spec = BlurSpec(psf64, image.shape, boundary, method, np.float32)
    return memory_need(gd.get_backend(backend), spec, RichardsonLucy, weighted=False).total


def timed_runs(run, iterations, repeats, budget):
    """Seconds per iteration of up to ``repeats`` runs, stopping where one more would pass
    ``budget`` seconds of timed work (at least one run); also the last run's result."""
    times, spent, last = [], 0.0, 0.0
    result = None
    while len(times) < repeats and (not times or spent + last <= budget):
        start = time.perf_counter()
        result = np.asarray(run(iterations))
        last = time.perf_counter() - start
        spent += last
        times.append(last / iterations)
    return times, result


def peak_rss() -> int:
    """Peak resident memory of this process, in bytes (VmHWM).

    Not ``getrusage``: Linux carries ``ru_maxrss`` over from the parent through fork and exec,
    so a child would report at least the driver's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="implementation, e.g. gpu_deconv-numpy-fft-reflect")
    parser.add_argument("case", choices=list(CASES))
    parser.add_argument("iterations", type=int)
    parser.add_argument("repeats", type=int, help="most timed runs")
    parser.add_argument(
        "--budget", type=float, default=float("inf"), help="seconds of timed runs (default: none)"
    )
    args = parser.parse_args(argv)
    name = args.name
    try:
        image, psf = make_case(args.case)
        run = implementation(name, image, psf)
        start = time.perf_counter()
        run(1)
        first = time.perf_counter() - start
        times, result = timed_runs(run, args.iterations, args.repeats, args.budget)
        fd, path = tempfile.mkstemp(suffix=".npy", prefix=f"{name}-")
        os.close(fd)
        np.save(path, result.astype(np.float32))
        print(
            json.dumps(
                {
                    "implementation": name,
                    "seconds_per_iteration": statistics.median(times),
                    "all_seconds_per_iteration": times,
                    "repeats": len(times),
                    "first_call_seconds": first,
                    "peak_rss_bytes": peak_rss(),
                    "device_bytes": planned_device_bytes(name, image, psf),
                    "result_path": path,
                }
            )
        )
    except Exception as exc:  # reported as a failed row, never silently dropped
        print(
            json.dumps(
                {
                    "implementation": name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=3),
                    "peak_rss_bytes": peak_rss(),
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
