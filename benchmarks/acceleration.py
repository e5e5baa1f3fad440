"""Acceleration (SHB, Biggs-Andrews) against plain Richardson-Lucy on the edge-quality cases.

The 2D and 3D cases of ``edge_quality.py`` (nuclei crops with real content beyond the edges,
200 photons, Poisson noise), flat starts, ``boundary="estimate"`` and ``"reflect"``: best MSE
against the truth and its count over 1..100, the first count that comes within 0.5% of plain
RL's best, and the time per iteration measured side by side (float32, NumPy and OpenCL,
warm-up excluded). Writes ``acceleration.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import edge_quality as eq
import numpy as np

KINDS = (None, "shb", "biggs")
COUNTS = list(range(1, 101))


def quality(cases) -> list[dict]:
    import gpu_deconv as gd

    rows = []
    for key, case in cases.items():
        for boundary in ("estimate", "reflect"):
            errors = {}
            for kind in KINDS:
                steps = gd.richardson_lucy(
                    case["noisy"],
                    case["psf"],
                    COUNTS[-1],
                    backend="numpy",
                    boundary=boundary,
                    init="mean",
                    acceleration=kind,
                    snapshots=COUNTS,
                )
                errors[kind] = {
                    k: float(np.mean((v - case["truth"]) ** 2)) for k, v in steps.items()
                }
            plain = errors[None]
            best_plain = min(plain, key=plain.get)
            for kind in KINDS:
                err = errors[kind]
                best = min(err, key=err.get)
                reached = [k for k, e in err.items() if e <= 1.005 * plain[best_plain]]
                rows.append(
                    {
                        "case": key,
                        "boundary": boundary,
                        "acceleration": kind or "none",
                        "best_mse": err[best],
                        "best_count": best,
                        "reaches_plain_best_at": reached[0] if reached else None,
                        "plain_best_count": best_plain,
                    }
                )
    return rows


def timing(cases, repeats=3) -> list[dict]:
    import gpu_deconv as gd

    rows = []
    image = cases["3d"]["noisy"].astype(np.float32)
    psf = cases["3d"]["psf"]
    for backend in ("numpy", "opencl"):
        n = 10 if backend == "numpy" else 4
        best = {}
        for kind in KINDS:
            gd.richardson_lucy(
                image, psf, 2, backend=backend, boundary="estimate", acceleration=kind
            )
            best[kind] = float("inf")
        for _ in range(repeats):  # interleaved rounds: the modes see the same load
            for kind in KINDS:
                start = time.perf_counter()
                gd.richardson_lucy(
                    image, psf, n, backend=backend, boundary="estimate", acceleration=kind
                )
                best[kind] = min(best[kind], (time.perf_counter() - start) / n)
        for kind in KINDS:
            rows.append(
                {
                    "backend": backend,
                    "acceleration": kind or "none",
                    "seconds_per_iteration": best[kind],
                    "ratio_to_plain": best[kind] / best[None],
                }
            )
    return rows


def markdown(report) -> str:
    lines = [
        "# Acceleration vs plain Richardson-Lucy (edge-quality cases, flat start)",
        "",
        "| case | boundary | acceleration | best MSE @count | within 0.5% of plain RL's best at "
        "| iterations vs plain |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in report["quality"]:
        reached = r["reaches_plain_best_at"]
        share = f"{reached / r['plain_best_count']:.2f}" if reached else "never"
        lines.append(
            f"| {r['case']} | {r['boundary']} | {r['acceleration']} | "
            f"{r['best_mse']:.1f} @{r['best_count']} | {reached or '-'} | {share} |"
        )
    lines += [
        "",
        "Time per iteration, 3D case (30x96x96, estimate), float32, fastest of 3 interleaved "
        "rounds:",
        "",
        "| backend | acceleration | ms per iteration | vs plain |",
        "|---|---|---:|---:|",
    ]
    for r in report["timing"]:
        lines.append(
            f"| {r['backend']} | {r['acceleration']} | {1e3 * r['seconds_per_iteration']:.1f} | "
            f"{r['ratio_to_plain']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    cases = eq.make_cases(eq.nuclei(), quick=False)
    report = {"quality": quality(cases), "timing": timing(cases)}
    eq.write_report(args.out, "acceleration", report, markdown(report))


if __name__ == "__main__":
    main()
