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
        return transform_floor(name, image)
    raise ValueError(f"unknown implementation {name!r}")


def transform_floor(name, image):
    """Per iteration, the unavoidable work of the fft method with a symmetric PSF and
    ``reflect``: two DCT-II and two inverse DCT-II of the image, nothing else."""
    if name == "floor-numpy":
        import scipy.fft

        def run(n):
            x = image
            for _ in range(2 * n):
                x = scipy.fft.idctn(scipy.fft.dctn(x, type=2, workers=-1), type=2, workers=-1)
            return x

        return run
    import pyopencl.array as cla
    import pyvkfft.opencl

    import gpu_deconv as gd

    queue = gd.get_backend("opencl").queue
    plan = pyvkfft.opencl.VkFFTApp(image.shape, np.float32, queue, dct=2, inplace=True, norm=1)
    buffer = cla.to_device(queue, image)

    def run(n):
        for _ in range(2 * n):
            plan.fft(buffer)
            plan.ifft(buffer)
        return buffer.get()  # waits for the queue

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
