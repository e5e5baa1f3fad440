"""Time one Richardson-Lucy implementation on one case; run in its own process by the drivers.

Usage: ``python peer_runner.py IMPLEMENTATION SHAPE PSF_SHAPE ITERATIONS REPEATS``, e.g.
``python peer_runner.py clij2fft-rl 64,256,256 17,17,17 10 3``. Prints one JSON line:
``{"implementation", "seconds_per_iteration" (median), "first_call_seconds", "result_path"}``
or ``{"implementation", "error"}``. The first call (kernel compilation, FFT planning) is timed
separately and excluded; device work is synchronised inside the timed region (every
implementation returns a host array, which waits for the device).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np


def make_case(shape, psf_shape):
    """Deterministic test volume (sparse bright structures) and anisotropic Gaussian PSF."""
    import scipy.ndimage as ndi

    rng = np.random.default_rng(0)
    truth = ndi.gaussian_filter(rng.random(shape).astype(np.float32) ** 8, 1.0) * 1000 + 10
    sigmas = [3.0, 2.0, 2.0][-len(psf_shape) :]
    psf = np.ones((), dtype=np.float64)
    for n, s in zip(psf_shape, sigmas):
        x = np.arange(n) - n // 2
        psf = np.multiply.outer(psf, np.exp(-0.5 * (x / s) ** 2))
    psf /= psf.sum()
    image = ndi.convolve(truth, psf.astype(np.float32), mode="reflect")
    return image.astype(np.float32), psf.astype(np.float32)


def implementation(name, image, psf):
    """Return ``run(iterations) -> ndarray`` for ``name``."""
    if name.startswith("gpu_deconv-"):
        import gpu_deconv as gd

        _, backend, method, boundary = name.split("-")
        return lambda n: gd.richardson_lucy(
            image, psf, n, backend=backend, method=method, boundary=boundary, dtype="float32"
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
    raise ValueError(f"unknown implementation {name!r}")


def transform_floor(name, image, psf):
    """Per iteration, the transforms the fft method must do on this backend for ``reflect``,
    nothing else: two forward and two inverse DCT-II of the image, or of real FFTs of the
    padded domain, whichever the backend's cost model picks."""
    import gpu_deconv as gd
    from gpu_deconv.backends._planning import fft_geometry

    backend = gd.get_backend(name.split("-")[1])
    op = backend.blur_operator(psf / psf.sum(), image.shape, "reflect", "fft", np.dtype(np.float32))
    padded = fft_geometry(image.shape, psf.shape, "reflect").padded_shape
    if backend.name == "numpy":
        import scipy.fft

        def pair(x):
            if op.transform == "dct2":
                return scipy.fft.idctn(scipy.fft.dctn(x, type=2, workers=-1), type=2, workers=-1)
            spectrum = scipy.fft.rfftn(x, workers=-1)
            return scipy.fft.irfftn(spectrum, s=x.shape, workers=-1)

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


def main(argv):
    name, shape, psf_shape, iterations, repeats = argv
    shape = tuple(int(v) for v in shape.split(","))
    psf_shape = tuple(int(v) for v in psf_shape.split(","))
    iterations, repeats = int(iterations), int(repeats)
    try:
        image, psf = make_case(shape, psf_shape)
        run = implementation(name, image, psf)
        start = time.perf_counter()
        run(1)
        first = time.perf_counter() - start
        times = []
        result = None
        for _ in range(repeats):
            start = time.perf_counter()
            result = np.asarray(run(iterations))
            times.append((time.perf_counter() - start) / iterations)
        fd, path = tempfile.mkstemp(suffix=".npy", prefix=f"{name}-")
        os.close(fd)
        np.save(path, result.astype(np.float32))
        print(
            json.dumps(
                {
                    "implementation": name,
                    "seconds_per_iteration": statistics.median(times),
                    "all_seconds_per_iteration": times,
                    "first_call_seconds": first,
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
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
