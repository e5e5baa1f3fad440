"""Time and peak memory of a 10-time-point, 2-channel hyperstack against one of its volumes.

Each case runs ``gpu-deconv run`` (in-process, NumPy backend, 10 iterations, reflect) in its
own Python process, which samples its own /proc/self/status every 5 ms: the peak of RssAnon
(memory the process allocated) and of VmRSS (which also counts the memory-mapped input and
output pages it touched; the kernel reclaims those). Writes results/stack_streaming.{json,md}.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = (10, 32, 2, 256, 256)  # T, Z, C, Y, X: ImageJ's order

CHILD = r"""
import re, sys, threading, time
from gpu_deconv.cli import main
peaks = {"RssAnon": 0, "VmRSS": 0}
def sample():
    while True:
        text = open("/proc/self/status").read()
        for key in peaks:
            peaks[key] = max(peaks[key], int(re.search(key + r":\s+(\d+)", text)[1]))
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - start
time.sleep(0.02)
print(code, seconds, peaks["RssAnon"] * 1024, peaks["VmRSS"] * 1024)
"""


def run(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "run", *args], capture_output=True, text=True, check=True
    )
    code, seconds, anon, rss = done.stdout.split()
    assert code == "0", done.stderr
    return {"seconds": float(seconds), "peak_anon_bytes": int(anon), "peak_rss_bytes": int(rss)}


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        stack = (rng.random(SHAPE, dtype=np.float32) * 100 + 10).astype(np.float32)
        tifffile.imwrite(
            work / "stack.tif",
            stack,
            imagej=True,
            resolution=(10, 10),
            metadata={"axes": "TZCYX", "spacing": 0.3, "unit": "um"},
        )
        tifffile.imwrite(
            work / "volume.tif",
            stack[0, :, 0],
            imagej=True,
            resolution=(10, 10),
            metadata={"axes": "ZYX", "spacing": 0.3, "unit": "um"},
        )
        del stack
        from gpu_deconv.io import write_tiff
        from gpu_deconv.psf import gaussian_psf

        write_tiff(work / "psf.tif", gaussian_psf((9, 13, 13), (2.0, 1.5, 1.5)).astype("f4"))
        common = ("--psf", str(work / "psf.tif"), "-n", "10", "--backend", "numpy", "-q")
        run(str(work / "volume.tif"), *common, "-o", str(work / "warm.tif"))  # caches warm
        results = {
            "volume": run(str(work / "volume.tif"), *common, "-o", str(work / "v.tif")),
            "stack": run(str(work / "stack.tif"), *common, "-o", str(work / "s.tif")),
        }
    volumes = SHAPE[0] * SHAPE[2]
    results["shape"] = list(SHAPE)
    results["time_ratio"] = results["stack"]["seconds"] / results["volume"]["seconds"]
    results["time_ratio_per_volume"] = results["time_ratio"] / volumes
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stack_streaming.json").write_text(json.dumps(results, indent=2))
    mib = 2**20
    lines = [
        f"Hyperstack {SHAPE} (T, Z, C, Y, X) float32 "
        f"({np.prod(SHAPE) * 4 / mib:.0f} MiB) against one volume {SHAPE[1], SHAPE[3], SHAPE[4]}, "
        "gpu-deconv run, NumPy, 10 iterations, 9x13x13 PSF:",
        "",
        "| run | seconds | peak allocated (RssAnon) | peak RSS (with mapped file pages) |",
        "|---|---:|---:|---:|",
    ]
    for name in ("volume", "stack"):
        r = results[name]
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['peak_anon_bytes'] / mib:.0f} MiB | "
            f"{r['peak_rss_bytes'] / mib:.0f} MiB |"
        )
    lines += [
        "",
        f"Stack / volume time: {results['time_ratio']:.1f}x for {volumes} volumes "
        f"({results['time_ratio_per_volume']:.2f}x per volume).",
    ]
    (RESULTS / "stack_streaming.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
