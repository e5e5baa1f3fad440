"""Side-by-side Richardson-Lucy benchmarks: gpu_deconv against its peers, in one run.

``python benchmarks/run_benchmarks.py [--case NAME ...]`` (or ``gpu-deconv bench``) runs each
implementation in its own process (``peer_runner.py``) on the same data, excludes the first call
(compilation, planning), and writes ``benchmarks/results/<host>-<date>-<case>.json`` and
``.md`` per case, plus ``<host>-<date>.md`` (all tables and the run's wall time) and
``<host>-<date>.png`` (bars). Each row gives the iterations it timed (slow peers time fewer),
the number of timed runs (fewer where they would pass ``--row-budget`` seconds) and their
median time per iteration, the ratio to gpu_deconv's reference row, the distance from the
transform floor, the first call, the row's wall time (process start to end), the peak resident
memory of its process, the device memory the OpenCL backend plans (gpu_deconv OpenCL rows),
and the agreement (relative RMS over the interior, one PSF radius from the border) with the
float64 NumPy reference under that implementation's own boundary convention. A peer that fails
is reported as failed.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from peer_runner import make_case  # noqa: E402


def rows(*specs):
    """``(implementation, convention, iterations)`` triples as an ordered dict."""
    return {name: (convention, iterations) for name, convention, iterations in specs}


# Per case: the reference row (ratio 1), the floor row, and the implementations with the
# boundary convention of their result ("boundary[:init]") and the iterations to time. Rows
# whose iteration takes seconds time fewer iterations: the report is per iteration.
CASES = {
    "tutorial": {
        "title": "70x70 nucleus, 25x25 Gaussian PSF (the tutorial)",
        "reference": "gpu_deconv-numpy-fft-reflect",
        "floor": "floor-numpy",
        "rows": rows(
            ("gpu_deconv-numpy-fft-reflect", "reflect", 80),
            ("gpu_deconv-numpy-separable-reflect", "reflect", 80),
            ("gpu_deconv-numpy-spatial-reflect", "reflect", 80),
            ("gpu_deconv-opencl-fft-reflect", "reflect", 80),
            ("gpu_deconv-opencl-separable-reflect", "reflect", 80),
            ("gpu_deconv-opencl-spatial-reflect", "reflect", 80),
            ("floor-numpy", None, 80),
            ("skimage", "constant:0.5", 80),
            ("simpleitk", "nearest", 80),
            ("clesperanto-naive", "nearest", 80),
        ),
    },
    "2d-large": {
        "title": "2048x2048, 25x25 Gaussian PSF",
        "reference": "gpu_deconv-numpy-fft-reflect",
        "floor": "floor-numpy",
        "rows": rows(
            ("gpu_deconv-numpy-fft-reflect", "reflect", 20),
            ("gpu_deconv-numpy-separable-reflect", "reflect", 10),
            ("gpu_deconv-opencl-fft-reflect", "reflect", 10),
            ("floor-numpy", None, 20),
            ("skimage", "constant:0.5", 10),
            ("simpleitk", "nearest", 3),
        ),
    },
    "3d": {
        "title": "64x256x256, 17^3 anisotropic Gaussian PSF",
        "reference": "gpu_deconv-numpy-fft-reflect",
        "floor": "floor-numpy",
        "rows": rows(
            ("gpu_deconv-numpy-fft-reflect", "reflect", 20),
            ("gpu_deconv-numpy-fft-wrap", "wrap", 20),
            ("gpu_deconv-numpy-fft-nearest", "nearest", 20),
            ("floor-numpy", None, 20),
            ("gpu_deconv-opencl-fft-reflect", "reflect", 10),
            ("gpu_deconv-opencl-fft-wrap", "wrap", 10),
            ("gpu_deconv-opencl-fft-nearest", "nearest", 10),
            ("floor-opencl", None, 10),
            ("skimage", "constant:0.5", 10),
            ("simpleitk", "nearest", 2),
            ("clij2fft-rl", "wrap", 10),
            ("clij2fft-rl-nc", "constant", 10),
            ("redlionfish-opencl", "constant", 3),
        ),
    },
    "3d-large": {
        "title": "128x512x512, 17^3 anisotropic Gaussian PSF (fast implementations)",
        "reference": "gpu_deconv-numpy-fft-reflect",
        "floor": "floor-numpy",
        "rows": rows(
            ("gpu_deconv-numpy-fft-reflect", "reflect", 5),
            ("floor-numpy", None, 5),
            ("gpu_deconv-opencl-fft-reflect", "reflect", 3),
            ("clij2fft-rl", "wrap", 5),
        ),
    },
    "confocal": {
        "title": "confocal grid 21x150x150, measured 45^3 PSF",
        "reference": "gpu_deconv-numpy-fft-reflect",
        "floor": "floor-numpy",
        "rows": rows(
            ("gpu_deconv-numpy-fft-reflect", "reflect", 20),
            ("floor-numpy", None, 20),
            ("gpu_deconv-opencl-fft-reflect", "reflect", 20),
            ("skimage", "constant:0.5", 20),
            ("simpleitk", "nearest", 5),
            ("clij2fft-rl", "wrap", 20),
        ),
    },
}
# A row that hangs is reported as failed after this many seconds, within the run's budget.
ROW_TIMEOUT = 600
FLOOR_NOTE = {
    "floor-numpy": "floor: the fft method's 4 transforms per iteration (scipy.fft)",
    "floor-opencl": "floor: the fft method's 4 transforms per iteration (VkFFT)",
}


def peer_env() -> dict:
    """Environment for the peers: clij2-fft loads the system ICD loader and its own library."""
    env = dict(os.environ)
    paths = [str(Path(sys.prefix) / "lib")]
    try:
        import pyopencl

        # PoCL from pocl-binary-distribution sits beside pyopencl's own loader; the system
        # loader that clij2-fft uses finds it through OCL_ICD_VENDORS and LD_LIBRARY_PATH.
        icd_dir = Path(pyopencl.__file__).parent / ".libs"
        if list(icd_dir.glob("*.icd")):
            env.setdefault("OCL_ICD_VENDORS", str(icd_dir))
            paths.append(str(icd_dir))
    except ImportError:
        pass
    env["LD_LIBRARY_PATH"] = ":".join([*paths, env.get("LD_LIBRARY_PATH", "")])
    return env


def run_one(name: str, case: str, iterations: int, repeats: int, budget: float) -> dict:
    """Run one row in its own process; add its wall time (process start to end)."""
    cmd = [sys.executable, str(HERE / "peer_runner.py"), name, case, str(iterations)]
    cmd += [str(repeats), "--budget", str(budget)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=peer_env(), timeout=ROW_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        row = {"implementation": name, "error": f"timed out after {ROW_TIMEOUT} s"}
    else:
        # Peers print progress without newlines: take the JSON object wherever a line starts it.
        found = [
            ln[ln.index('{"implementation"') :]
            for ln in proc.stdout.splitlines()
            if '{"implementation"' in ln
        ]
        tail = (proc.stderr or proc.stdout)[-300:]
        row = (
            json.loads(found[-1])
            if found
            else {"implementation": name, "error": f"exit {proc.returncode}: {tail}"}
        )
    return row | {"wall_seconds": time.perf_counter() - start}


@functools.lru_cache(maxsize=1)
def cached_case(case: str):
    """The case's data, built once per case rather than once per row (3d-large takes seconds)."""
    return make_case(case)


@functools.cache
def float64_reference(case: str, convention: str) -> dict[int, np.ndarray]:
    """Float64 NumPy estimates under ``convention`` (``"boundary"`` or ``"boundary:init"``;
    scikit-image starts from 0.5) after each iteration count the case's rows with it time.

    One run with snapshots serves every count (3d-large takes seconds per iteration).
    """
    import gpu_deconv as gd

    counts = sorted({n for conv, n in CASES[case]["rows"].values() if conv == convention})
    image, psf = cached_case(case)
    boundary, _, init = convention.partition(":")
    return gd.richardson_lucy(
        image.astype(np.float64),
        psf.astype(np.float64),
        counts[-1],
        backend="numpy",
        boundary=boundary,
        init=float(init) if init else "observed",
        snapshots=counts,
    )


def agreement(
    result_path: str | None, case: str, convention: str | None, iterations: int
) -> float | None:
    """Relative RMS against the float64 NumPy reference, one PSF radius from the border."""
    if result_path is None:
        return None
    result = np.load(result_path).astype(np.float64)
    Path(result_path).unlink(missing_ok=True)
    if convention is None:
        return None
    image, psf = cached_case(case)
    expected = float64_reference(case, convention)[iterations]
    if result.shape != expected.shape:
        return None
    # One PSF radius from the border (at most a third of the axis for PSFs larger than it).
    inner = tuple(
        slice(min(k // 2, n // 3), n - min(k // 2, n // 3)) for k, n in zip(psf.shape, image.shape)
    )
    diff = result[inner] - expected[inner]
    return float(np.sqrt(np.mean(diff**2) / np.mean(expected[inner] ** 2)))


def run_case(case: str, repeats: int, budget: float) -> list[dict]:
    spec = CASES[case]
    results = []
    for name, (convention, iterations) in spec["rows"].items():
        print(f"[{case}] {name} ...", end=" ", file=sys.stderr, flush=True)
        row = run_one(name, case, iterations, repeats, budget)
        print(f"{row['wall_seconds']:.1f} s", file=sys.stderr, flush=True)
        row.update(iterations=iterations, boundary=convention)
        path = row.pop("result_path", None)
        if "error" not in row:
            row["rel_rms_vs_float64_reference"] = agreement(path, case, convention, iterations)
        results.append(row)
    float64_reference.cache_clear()  # 3d-large's float64 references take a GiB
    reference = next(r for r in results if r["implementation"] == spec["reference"])
    floor = next((r for r in results if r["implementation"] == spec["floor"]), {})
    for row in results:
        if "error" in row or "error" in reference:
            continue
        row["ratio_vs_reference"] = (
            row["seconds_per_iteration"] / reference["seconds_per_iteration"]
        )
        if "seconds_per_iteration" in floor:
            row["x_floor"] = row["seconds_per_iteration"] / floor["seconds_per_iteration"]
    return results


def mib(nbytes: int | None) -> str:
    """Mebibytes to two significant digits below 10 (the tutorial's 0.075 MiB), else whole."""
    if nbytes is None:
        return ""
    value = nbytes / 2**20
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"


def markdown(case: str, results: list[dict], meta: dict) -> str:
    spec = CASES[case]
    rows_wall = sum(row["wall_seconds"] for row in results)
    lines = [
        f"### {case}: {spec['title']}",
        "",
        f"{meta['cores']} cores, OpenCL device {meta['opencl_device']}, float32; after a warm-up "
        f"call, the median of up to {meta['max_repeats']} timed runs (fewer where they would "
        f"pass {meta['row_budget_seconds']:g} s); ratio = time / `{spec['reference']}`; wall = "
        "the row's process from start to end, first call included; device = the OpenCL "
        "backend's planned device memory; agreement = relative RMS against the float64 NumPy "
        "reference under the row's own convention, one PSF radius from the border. Case wall "
        f"time {meta['wall_seconds']:.0f} s: rows {rows_wall:.0f} s, case data and float64 "
        f"references {meta['wall_seconds'] - rows_wall:.0f} s.",
        "",
        "| implementation | convention | iterations | runs | ms / iteration | ratio | x floor "
        "| first call (s) | wall (s) | peak RSS (MiB) | device (MiB) | agreement |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        name = FLOOR_NOTE.get(row["implementation"], row["implementation"])
        wall, peak = f"{row['wall_seconds']:.1f}", mib(row.get("peak_rss_bytes"))
        if "error" in row:
            lines.append(
                f"| {name} | | {row['iterations']} | | failed: {row['error'][:80]} | | | | "
                f"{wall} | {peak} | | |"
            )
            continue
        agree = row.get("rel_rms_vs_float64_reference")
        lines.append(
            f"| {name} | {row['boundary'] or '-'} | {row['iterations']} | {row['repeats']} | "
            f"{row['seconds_per_iteration'] * 1e3:.1f} | "
            f"{row.get('ratio_vs_reference', float('nan')):.2f} | "
            f"{row.get('x_floor', float('nan')):.2f} | {row['first_call_seconds']:.1f} | "
            f"{wall} | {peak} | {mib(row.get('device_bytes'))} | "
            f"{'' if agree is None else f'{agree:.1e}'} |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(all_results: dict, path: Path) -> None:
    """One panel per case: milliseconds per iteration (log scale), gpu_deconv rows highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c, r in all_results.items() if any("error" not in row for row in r)]
    fig, axes = plt.subplots(
        len(cases),
        1,
        figsize=(8, 1.2 + 0.32 * sum(len(all_results[c]) for c in cases)),
        squeeze=False,
    )
    for ax, case in zip(axes[:, 0], cases):
        ok = [r for r in all_results[case] if "error" not in r]
        names = [FLOOR_NOTE.get(r["implementation"], r["implementation"]) for r in ok]
        values = [r["seconds_per_iteration"] * 1e3 for r in ok]
        colors = [
            "tab:blue"
            if n.startswith("gpu_deconv")
            else "tab:gray"
            if n.startswith("floor")
            else "tab:orange"
            for n in names
        ]
        ax.barh(names, values, color=colors)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"{case}: {CASES[case]['title']}", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("milliseconds per iteration (log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case",
        choices=list(CASES),
        action="append",
        help="case to run (repeatable); by default all",
    )
    parser.add_argument("--repeats", type=int, default=3, help="most timed runs per row")
    parser.add_argument(
        "--row-budget",
        type=float,
        default=10.0,
        help="seconds of timed runs per row: fewer runs where more would pass it (default 10)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the summary table and chart from today's JSON results",
    )
    args = parser.parse_args()
    try:
        import gpu_deconv as gd

        devices = [d for d in gd.list_devices() if d.is_default]
        device = f"{devices[0].name} ({devices[0].type})" if devices else "none"
    except ImportError:
        device = "unknown"
    RESULTS.mkdir(exist_ok=True)
    host, date = socket.gethostname(), datetime.date.today().isoformat()
    meta = {
        "host": host,
        "date": date,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "dtype": "float32",
        "max_repeats": args.repeats,
        "row_budget_seconds": args.row_budget,
        "opencl_device": device,
        "numpy": np.__version__,
    }
    all_results, tables, walls = {}, [], {}
    for case in args.case or list(CASES):
        stem = RESULTS / f"{host}-{date}-{case}"
        if args.report_only:
            if stem.with_suffix(".json").exists():
                saved = json.loads(stem.with_suffix(".json").read_text())
                all_results[case], walls[case] = saved["rows"], saved["meta"]["wall_seconds"]
                tables.append(markdown(case, saved["rows"], saved["meta"]))
            continue
        start = time.perf_counter()
        results = run_case(case, args.repeats, args.row_budget)
        walls[case] = time.perf_counter() - start
        all_results[case] = results
        case_meta = meta | {"case": case, "wall_seconds": walls[case]}
        stem.with_suffix(".json").write_text(
            json.dumps({"meta": case_meta, "rows": results}, indent=2)
        )
        table = markdown(case, results, case_meta)
        stem.with_suffix(".md").write_text(table)
        tables.append(table)
        print(table, flush=True)
    total = sum(walls.values())
    per_case = ", ".join(f"{case} {wall:.0f} s" for case, wall in walls.items())
    line = f"Wall time of the cases: {total / 60:.1f} min ({per_case})."
    print(line, file=sys.stderr)
    summary = RESULTS / f"{host}-{date}"
    summary.with_suffix(".md").write_text("\n".join([line, "", *tables]))
    bar_chart(all_results, summary.with_suffix(".png"))


if __name__ == "__main__":
    main()
