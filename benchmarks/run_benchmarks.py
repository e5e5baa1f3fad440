"""Side-by-side Richardson-Lucy benchmarks: gpu_deconv against its peers, in one run.

``python benchmarks/run_benchmarks.py [--suite numpy|opencl|all]`` runs each implementation in
its own process (``peer_runner.py``) on the same data and iterations, excludes the first call
(compilation, planning), and writes ``benchmarks/results/<host>-<date>-<suite>.json`` and
``.md``. Each row gives the median time per iteration, the ratio to gpu_deconv's reference row,
the distance from the transform floor, and the agreement (relative RMS over the interior,
one PSF radius from the border) with the float64 NumPy reference under that
implementation's own boundary convention. A peer that fails is reported as failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from peer_runner import make_case  # noqa: E402

SHAPE, PSF_SHAPE = (64, 256, 256), (17, 17, 17)
# implementation -> (boundary convention of its result ["boundary[:init]"], iterations to time)
SUITES = {
    "numpy": {
        "reference": "gpu_deconv-numpy-fft-reflect",
        "floor": "floor-numpy",
        "rows": {
            "gpu_deconv-numpy-fft-reflect": ("reflect", 10),
            "gpu_deconv-numpy-fft-wrap": ("wrap", 10),
            "gpu_deconv-numpy-fft-nearest": ("nearest", 10),
            "floor-numpy": (None, 10),
            "skimage": ("constant:0.5", 10),
            "simpleitk": ("nearest", 2),
        },
    },
    "opencl": {
        "reference": "gpu_deconv-opencl-fft-reflect",
        "floor": "floor-opencl",
        "rows": {
            "gpu_deconv-opencl-fft-reflect": ("reflect", 10),
            "gpu_deconv-opencl-fft-wrap": ("wrap", 10),
            "gpu_deconv-opencl-fft-nearest": ("nearest", 10),
            "floor-opencl": (None, 10),
            "gpu_deconv-numpy-fft-reflect": ("reflect", 10),
            "gpu_deconv-numpy-fft-wrap": ("wrap", 10),
            "clij2fft-rl": ("wrap", 10),
            "clij2fft-rl-nc": ("constant", 10),
            "redlionfish-opencl": ("constant", 5),
        },
    },
}
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


def run_one(name: str, iterations: int, repeats: int) -> dict:
    cmd = [
        sys.executable,
        str(HERE / "peer_runner.py"),
        name,
        ",".join(map(str, SHAPE)),
        ",".join(map(str, PSF_SHAPE)),
        str(iterations),
        str(repeats),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=peer_env(), timeout=1800)
    # Peers print progress without newlines: take the JSON object wherever the line starts it.
    found = [
        ln[ln.index('{"implementation"') :]
        for ln in proc.stdout.splitlines()
        if '{"implementation"' in ln
    ]
    if not found:
        tail = (proc.stderr or proc.stdout)[-300:]
        return {"implementation": name, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(found[-1])


_REFERENCES: dict = {}


def agreement(result_path: str | None, convention: str | None, iterations: int) -> float | None:
    """Relative RMS against the float64 NumPy reference, one PSF radius from the border.

    ``convention`` is ``"boundary"`` or ``"boundary:init"`` (scikit-image starts from 0.5).
    """
    if result_path is None:
        return None
    result = np.load(result_path).astype(np.float64)
    Path(result_path).unlink(missing_ok=True)
    if convention is None:
        return None
    key = (convention, iterations)
    if key not in _REFERENCES:
        import gpu_deconv as gd

        boundary, _, init = convention.partition(":")
        image, psf = make_case(SHAPE, PSF_SHAPE)
        _REFERENCES[key] = gd.richardson_lucy(
            image.astype(np.float64),
            psf.astype(np.float64),
            iterations,
            backend="numpy",
            boundary=boundary,
            init=float(init) if init else "observed",
        )
    expected = _REFERENCES[key]
    if result.shape != expected.shape:
        return None
    inner = tuple(slice(k // 2, -(k // 2)) for k in PSF_SHAPE)
    diff = result[inner] - expected[inner]
    return float(np.sqrt(np.mean(diff**2) / np.mean(expected[inner] ** 2)))


def run_suite(suite: str, repeats: int) -> list[dict]:
    spec = SUITES[suite]
    rows = []
    for name, (convention, iterations) in spec["rows"].items():
        print(f"[{suite}] {name} ...", file=sys.stderr, flush=True)
        row = run_one(name, iterations, repeats)
        row.update(iterations=iterations, boundary=convention)
        path = row.pop("result_path", None)
        if "error" not in row:
            row["rel_rms_vs_float64_reference"] = agreement(path, convention, iterations)
        rows.append(row)
    reference = next(r for r in rows if r["implementation"] == spec["reference"])
    floor = next((r for r in rows if r["implementation"] == spec["floor"]), {})
    for row in rows:
        if "error" in row or "error" in reference:
            continue
        row["ratio_vs_reference"] = (
            row["seconds_per_iteration"] / reference["seconds_per_iteration"]
        )
        if "seconds_per_iteration" in floor:
            row["x_floor"] = row["seconds_per_iteration"] / floor["seconds_per_iteration"]
    return rows


def markdown(suite: str, rows: list[dict], meta: dict) -> str:
    spec = SUITES[suite]
    lines = [
        f"Suite `{suite}`: {meta['shape']} float32, {meta['psf_shape']} anisotropic Gaussian PSF, "
        f"{meta['cores']} cores, OpenCL device: {meta['opencl_device']}; median of "
        f"{meta['repeats']} runs after a warm-up call. Ratio = time / `{spec['reference']}`.",
        "",
        "| implementation | boundary | ms / iteration | ratio | x floor | first call (s) "
        "| rel. RMS vs float64 ref. |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = FLOOR_NOTE.get(row["implementation"], row["implementation"])
        if "error" in row:
            lines.append(f"| {name} | | failed: {row['error'][:80]} | | | | |")
            continue
        agree = row.get("rel_rms_vs_float64_reference")
        lines.append(
            f"| {name} | {row['boundary'] or '-'} | {row['seconds_per_iteration'] * 1e3:.1f} | "
            f"{row.get('ratio_vs_reference', float('nan')):.2f} | "
            f"{row.get('x_floor', float('nan')):.2f} | {row['first_call_seconds']:.1f} | "
            f"{'-' if agree is None else f'{agree:.1e}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import gpu_deconv as gd

        devices = [d for d in gd.list_devices() if d.is_default]
        device = f"{devices[0].name} ({devices[0].type})" if devices else "none"
    except ImportError:
        device = "unknown"
    RESULTS.mkdir(exist_ok=True)
    for suite in SUITES if args.suite == "all" else [args.suite]:
        rows = run_suite(suite, args.repeats)
        meta = {
            "suite": suite,
            "host": socket.gethostname(),
            "date": datetime.date.today().isoformat(),
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "shape": list(SHAPE),
            "psf_shape": list(PSF_SHAPE),
            "dtype": "float32",
            "repeats": args.repeats,
            "opencl_device": device,
            "numpy": np.__version__,
        }
        stem = RESULTS / f"{meta['host']}-{meta['date']}-{suite}"
        stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        table = markdown(suite, rows, meta)
        stem.with_suffix(".md").write_text(table)
        print(table)


if __name__ == "__main__":
    main()
