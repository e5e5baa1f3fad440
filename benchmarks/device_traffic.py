"""Device traffic per iteration: kernel launches and bytes each reads and writes, vs the FFT floor.

What decides GPU speed is how many times an iteration streams its volumes through device
memory. This counts, on the OpenCL backend, every launch of our kernels and every VkFFT
transform of one iteration (the difference between runs of 3 and 2 iterations, so the set-up
and the accelerations' first step are left out), per method and algorithm, and the bytes each moves:

- our kernels: work items times the bytes each item reads and writes in device memory (table
  ``PER_ITEM``; PSF taps and profiles are cached and not counted);
- a device-to-device copy (``device_copy``): the buffer read and written;
- a VkFFT transform: one pass per transformed axis, each reading and writing the whole buffer
  (the library's own floor: it cannot move fewer bytes without fusing with our kernels).

The floor of an iteration is its transforms' bytes alone; the ratio says how many bytes our
element-wise passes add. ``method="spatial"``/``"separable"`` have no transforms: their floor
is one read and one write of the volume per blur.

Per-iteration time on the same device, fused against unfused (crop, ratio and update as
separate kernels, as before the fusion), interleaved in one run: ``--repeats`` pairs (in
ABBA order), the median.

    python benchmarks/device_traffic.py [--shape 48x96x96] [--psf 11] [--repeats 6]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np

import gpu_deconv as gd
from gpu_deconv.psf import gaussian_psf

# Kernel name: (bytes read, bytes written) per work item in device memory.
PER_ITEM = {
    "rl_ratio": (8, 4),
    "multiply": (8, 4),
    "weighted_update": (12, 4),
    "inverse_weights": (4, 4),
    "keep_where": (8, 4),
    "extrapolate": (8, 8),  # point written; previous read and written; estimate read
    "complex_multiply": (16, 8),  # spectrum and OTF in, spectrum out (float2)
    "clamped_update": (12, 4),  # 8 without weights
    "pad_boundary": (4, 4),
    "crop": (4, 4),
    "crop_ratio": (8, 4),  # padded blur and observed in (background: +4), ratio out
    "crop_update": (8, 4),  # padded correction and point in (weights: +4), estimate out
    "convolve_spatial": (4, 4),
    "convolve_separable": (4, 4),
}
RESULTS = Path(__file__).parent / "results"


class Counter:
    """Launches and bytes by kernel, counted on one backend instance."""

    def __init__(self, backend):
        self.launches: collections.Counter = collections.Counter()
        self.bytes: collections.Counter = collections.Counter()
        self.fft_bytes = 0
        launch, fft_plan, reduce = backend.launch, backend.fft_plan, backend._reduce
        device_copy = backend.device_copy

        def counting_launch(name, global_size, *args):
            items = math.prod(global_size)
            read, written = PER_ITEM[name]
            if name == "clamped_update" and not int(args[4]):
                read = 8  # no weights: the correction is passed twice, read once
            if name in ("crop_ratio", "crop_update") and int(args[4]):
                read += 4  # the per-voxel background, or the weights
            self.launches[name] += 1
            self.bytes[name] += items * (read + written)
            return launch(name, global_size, *args)

        def counting_plan(shape, **options):
            return _CountingPlan(fft_plan(shape, **options), shape, options, self)

        def counting_reduce(name, first, *args, **options):
            self.launches[name] += 1
            if name == "accelerated_update_partial":
                # x, correction (+ weights) in, f out; SHB: f in (+ p out); Biggs: G_{k-1} in,
                # G_k out.
                has_weights, mode = int(args[4]), int(args[7])
                read = 8 + 4 * has_weights + 4
                written = 4 + (4 if mode else 0)
                self.bytes[name] += first.size * (read + written)
            else:
                self.bytes[name] += sum(a.nbytes for a in (first, *args))
            return reduce(name, first, *args, **options)

        def counting_copy(source, out):
            self.launches["copy"] += 1
            self.bytes["copy"] += 2 * out.nbytes
            return device_copy(source, out)

        backend.launch, backend.fft_plan, backend._reduce = (
            counting_launch,
            counting_plan,
            counting_reduce,
        )
        backend.device_copy = counting_copy


class _CountingPlan:
    def __init__(self, plan, shape, options, counter):
        self._plan, self._counter = plan, counter
        axes = options.get("axes") or range(options.get("ndim") or len(shape))
        self._passes = len(tuple(axes))
        self._bytes = math.prod(shape) * 4  # the in-place float32 buffer

    def _count(self):
        self._counter.launches["vkfft pass"] += self._passes
        self._counter.bytes["vkfft pass"] += 2 * self._passes * self._bytes
        self._counter.fft_bytes += 2 * self._passes * self._bytes

    def fft(self, buffer):
        self._count()
        return self._plan.fft(buffer)

    def ifft(self, buffer):
        self._count()
        return self._plan.ifft(buffer)


@contextlib.contextmanager
def unfused():
    """Run the operators without their fused crops (the loop falls back to separate kernels)."""
    from gpu_deconv.backends import opencl_backend as ob

    owners = [(cls, "convolve_ratio") for cls in (ob._FFTOperator, ob._PaddedDCTOperator)]
    owners += [
        (ob._FusedUpdates, name)
        for name in ("correlate_update", "correlate_momentum_update", "correlate_change_update")
    ]
    fused = [(cls, name, cls.__dict__[name]) for cls, name in owners]
    for cls, name, _ in fused:
        delattr(cls, name)
    try:
        yield
    finally:
        for cls, name, method in fused:
            setattr(cls, name, method)


def _backend(dct):
    from dataclasses import replace

    from gpu_deconv.backends.opencl_backend import OpenCLBackend

    backend = OpenCLBackend()
    if dct:  # the unpadded DCT a GPU's cost model may choose (PoCL's prefers the rfft)
        backend.cost_model = replace(backend.cost_model, dct_factor=0.1)
    return backend


def seconds_per_iteration(shape, psf, method, boundary, acceleration, dct, repeats) -> dict:
    """Median seconds per iteration, fused and unfused, measured in alternation."""
    image = np.random.default_rng(0).random(shape, dtype=np.float32) + np.float32(0.1)
    backend = _backend(dct)

    def run(iterations):
        start = time.perf_counter()
        gd.richardson_lucy(
            image, psf, iterations, backend=backend, method=method, boundary=boundary,
            acceleration=acceleration,
        )  # fmt: skip
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"fused": [], "unfused": []}
    run(2)  # compile kernels and plans
    for repeat in range(repeats):  # ABBA order: neither variant always runs second
        for variant in ("unfused", "fused")[:: 1 if repeat % 2 else -1]:
            with unfused() if variant == "unfused" else contextlib.nullcontext():
                times[variant].append((run(8) - run(2)) / 6)
    return {k: float(np.median(v)) for k, v in times.items()}


def kernel_seconds(shape, psf, calls=30) -> dict:
    """Milliseconds per call of the fused kernels against the pairs they replace (padded rfft)."""
    from gpu_deconv.backends._opencl_operators import crop_of
    from gpu_deconv.backends._planning import fft_geometry

    backend = _backend(False)
    geometry = fft_geometry(shape, psf.shape, "reflect")
    padded = geometry.padded_shape
    row = 2 * (padded[-1] // 2 + 1)
    rng = np.random.default_rng(0)
    buffer = backend.to_backend(rng.random((*padded[:-1], row), dtype=np.float32) + 1)
    observed, estimate = (backend.to_backend(rng.random(shape, dtype=np.float32)) for _ in "ab")
    out = backend.empty(shape, np.float32)
    crop, where = crop_of(shape, geometry.pad_before, padded, row)
    # background (none), offset, eps, round-off level (none), ratio limit
    no_background = (
        observed.data, np.int32(0), np.float32(0), np.float32(1e-12), np.float32(0), np.float32(10)
    )  # fmt: skip

    def launch(name, *args):
        backend.launch(name, where, *args, *crop)

    variants = {
        "crop + rl_ratio": lambda: (
            launch("crop", out.data, buffer.data),
            backend.ratio(observed, out, 1e-12, out),
        ),
        "crop_ratio": lambda: launch(
            "crop_ratio", out.data, buffer.data, observed.data, *no_background
        ),
        "crop + multiply": lambda: (
            launch("crop", out.data, buffer.data),
            backend.multiply(estimate, out, estimate),
        ),
        "crop_update": lambda: launch(
            "crop_update",
            estimate.data,
            buffer.data,
            estimate.data,
            estimate.data,
            np.int32(0),
            np.int32(0),
            np.float32(0),
        ),  # fmt: skip
    }
    result = {}
    for name, run in variants.items():
        run()
        backend.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            run()
        backend.synchronize()
        result[name] = (time.perf_counter() - start) / calls * 1e3
    return result


def per_iteration(shape, psf, method, boundary, acceleration, dct) -> dict:
    image = np.random.default_rng(0).random(shape, dtype=np.float32) + np.float32(0.1)
    counts = []
    for iterations in (2, 3):
        backend = _backend(dct)
        counter = Counter(backend)
        gd.richardson_lucy(
            image, psf, iterations, backend=backend, method=method, boundary=boundary,
            acceleration=acceleration,
        )  # fmt: skip
        counts.append(counter)
    one, two = counts
    launches = {k: two.launches[k] - one.launches[k] for k in two.launches}
    moved = {k: two.bytes[k] - one.bytes[k] for k in two.bytes}
    volume = math.prod(shape) * 4
    floor = two.fft_bytes - one.fft_bytes or 2 * 2 * volume  # no transforms: 2 blurs, r+w
    total = sum(moved.values())
    return {
        "launches": {k: v for k, v in launches.items() if v},
        "bytes_per_iteration": total,
        "floor_bytes": floor,
        "ratio_to_floor": total / floor,
        "volumes_per_iteration": total / volume,
        "bytes_by_kernel": {k: v for k, v in moved.items() if v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="48x96x96")
    parser.add_argument("--psf", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--out", default=str(RESULTS / "device_traffic"))
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split("x"))
    psf = gaussian_psf((args.psf,) * len(shape), sigma=[2.0] * len(shape))
    cases = [
        ("fft", "reflect", None, False),
        ("fft", "reflect", None, True),
        ("fft", "nearest", None, False),
        ("fft", "estimate", None, False),
        ("separable", "reflect", None, False),
        ("fft", "reflect", "shb", False),
        ("fft", "reflect", "biggs", False),
    ]
    rows = []
    for method, boundary, acceleration, dct in cases:
        transform = "dct" if dct else ("rfft" if method == "fft" else "-")
        row = {"method": method, "transform": transform, "boundary": boundary}
        row["acceleration"] = acceleration
        case = (shape, psf, method, boundary, acceleration, dct)
        with unfused():
            before = per_iteration(*case)
        row.update(per_iteration(*case))
        row["before"] = {
            k: before[k] for k in ("launches", "bytes_per_iteration", "ratio_to_floor")
        }
        row["seconds_per_iteration"] = seconds_per_iteration(*case, args.repeats)
        rows.append(row)
        print(json.dumps(row))
    report = {"shape": args.shape, "psf": args.psf, "device": gd.get_backend("opencl").device_name}
    report["rows"] = rows
    report["kernel_ms"] = kernel_seconds(shape, psf)
    print(json.dumps(report["kernel_ms"]))
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    lines = [
        f"# Device traffic per iteration, {args.shape} float32, {args.psf}^3 PSF",
        "",
        f"Device: {report['device']}. Before = crop, ratio and update as separate kernels; "
        "after = `crop_ratio` and `crop_update` (SHB and Biggs: `crop_ratio` and one pass "
        "for the accelerated update, `accelerated_update_partial`). Times: median of "
        f"{args.repeats} "
        "ABBA-interleaved pairs, seconds per iteration.",
        "",
        "| method | transform | boundary | acceleration | launches before / after | "
        "MiB before / after | floor MiB | ratio before / after | s/iter before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, t = r["before"], r["seconds_per_iteration"]
        lines.append(
            f"| {r['method']} | {r['transform']} | {r['boundary']} | {r['acceleration'] or '-'} | "
            f"{sum(b['launches'].values())} / {sum(r['launches'].values())} | "
            f"{b['bytes_per_iteration'] / 2**20:.0f} / {r['bytes_per_iteration'] / 2**20:.0f} | "
            f"{r['floor_bytes'] / 2**20:.0f} | "
            f"{b['ratio_to_floor']:.2f} / {r['ratio_to_floor']:.2f} | "
            f"{t['unfused']:.4f} / {t['fused']:.4f} |"
        )
    lines += ["", "Milliseconds per call, the fused kernels and the pairs they replace:", ""]
    lines += [f"- {name}: {ms:.3f}" for name, ms in report["kernel_ms"].items()]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
