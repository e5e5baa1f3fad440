"""A volume larger than the memory it may use: zarr in, dask, zarr out, under a hard cap.

``python benchmarks/large_volume.py [--shape 256,1024,1024] [--cap 2G]`` writes a synthetic
float32 volume (sparse bright points blurred by the PSF, plus background) to zarr, then, in a
child process whose data segment is capped with ``RLIMIT_DATA``, deconvolves it through
:func:`gpu_deconv.dask.richardson_lucy` into another zarr store. It reports the child's peak
RSS (VmHWM), the wall time and voxels per second, and checks the result against an in-memory
whole-volume run on a cropped region (compared where it lies far from the crop's own edges).
The report goes to ``benchmarks/results/<host>-<date>-large-volume.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PSF_SHAPE, PSF_SIGMA = (15, 15, 15), (2.0, 1.5, 1.5)
RESULTS = Path(__file__).resolve().parent / "results"


def _lengths(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(","))


def _bytes(text: str) -> int:
    scale = {"M": 2**20, "G": 2**30}.get(text[-1].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def make_volume(path: Path, shape, chunks) -> None:
    """Write the synthetic observed volume, chunk by chunk (never whole in memory)."""
    import dask.array as da
    import scipy.ndimage as ndi

    points = da.random.default_rng(7).random(shape, chunks=chunks, dtype=np.float32) ** 40
    blurred = points.map_overlap(
        ndi.gaussian_filter, depth=tuple(3 * int(s + 1) for s in PSF_SIGMA), sigma=PSF_SIGMA
    )
    (blurred * np.float32(1000) + np.float32(10)).astype(np.float32).to_zarr(str(path))


def child(source: str, target: str, cap: int, chunks, iterations: int, backend: str) -> None:
    """Deconvolve under the cap; print a JSON report."""
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    import dask
    import dask.array as da

    import gpu_deconv.dask as gdd
    from gpu_deconv.psf import gaussian_psf

    image = da.from_zarr(source).rechunk(chunks)
    start = time.perf_counter()
    result = gdd.richardson_lucy(
        image, gaussian_psf(PSF_SHAPE, PSF_SIGMA), iterations, backend=backend, max_memory=cap // 4
    )
    with dask.config.set(scheduler="threads", num_workers=2):
        result.to_zarr(target)
    seconds = time.perf_counter() - start
    peak = next(
        int(line.split()[1]) * 1024
        for line in open("/proc/self/status")
        if line.startswith("VmHWM")
    )
    print(json.dumps({"seconds": seconds, "peak_rss": peak}))


def check_crop(source: Path, target: Path, iterations: int, backend: str) -> dict:
    """Compare the streamed result with a whole run on a crop, 30+ voxels inside its edges."""
    import dask.array as da

    import gpu_deconv as gd
    from gpu_deconv.psf import gaussian_psf

    image = da.from_zarr(str(source))
    z, y, x = image.shape
    crop = (slice(z // 8, 7 * z // 8), slice(y // 4, y // 2), slice(x // 4, x // 2))
    inner = tuple(slice(s.start + 30, s.stop - 30) for s in crop)
    local = tuple(slice(30, -30) for _ in crop)
    whole = gd.richardson_lucy(
        np.asarray(image[crop]), gaussian_psf(PSF_SHAPE, PSF_SIGMA), iterations, backend=backend
    )[local]
    streamed = np.asarray(da.from_zarr(str(target))[inner])
    diff = streamed.astype(np.float64) - whole
    return {
        "crop": [[s.start, s.stop] for s in inner],
        "rel_rms": float(np.sqrt(np.mean(diff**2) / np.mean(whole.astype(np.float64) ** 2))),
        "max_abs_rel": float(np.abs(diff).max() / np.abs(whole).max()),
    }


def main(argv=None) -> int:
    """Run the benchmark; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=_lengths, default=(256, 1024, 1024))
    parser.add_argument("--chunks", type=_lengths, default=(64, 256, 256))
    parser.add_argument("--cap", type=_bytes, default=2 * 2**30, help="RLIMIT_DATA, e.g. 2G")
    parser.add_argument("-n", "--iterations", type=int, default=10)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.cap, args.chunks, args.iterations, args.backend)
        return 0
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        source, target = work / "observed.zarr", work / "deconvolved.zarr"
        make_volume(source, args.shape, args.chunks)
        command = [sys.executable, __file__, "--child", str(source), str(target)]
        for flag in ("shape", "chunks"):
            command += [f"--{flag}", ",".join(map(str, getattr(args, flag)))]
        command += ["--cap", str(args.cap), "-n", str(args.iterations), "--backend", args.backend]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        report = json.loads(done.stdout.strip().splitlines()[-1])
        voxels = int(np.prod(args.shape))
        report.update(
            shape=list(args.shape),
            chunks=list(args.chunks),
            iterations=args.iterations,
            backend=args.backend,
            volume_bytes=voxels * 4,
            cap_bytes=args.cap,
            voxels_per_second=voxels * args.iterations / report["seconds"],
            crop_check=check_crop(source, target, args.iterations, args.backend),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = f"{socket.gethostname()}-{datetime.date.today()}-large-volume-{args.backend}.json"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
