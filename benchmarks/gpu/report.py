"""Write OUT/gpu_check.json and OUT/gpu_check.md from what check.sh left in OUT (stdlib only).

python report.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    out = Path(sys.argv[1])
    steps = []
    for line in (out / "steps.tsv").read_text().splitlines():
        name, status, seconds, detail = (line.split("\t") + [""] * 4)[:4]
        steps.append({"step": name, "status": status, "seconds": float(seconds), "detail": detail})
    failed = [s["step"] for s in steps if s["status"] == "failed"]
    report = {
        "passed": not failed and bool(steps),
        "failed_step": failed[0] if failed else None,
        "steps": steps,
        "devices": read_json(out / "devices.json"),
        # As `gpu-deconv devices` printed it: '*' the default, UNUSABLE with the driver's reason.
        "devices_listing": (out / "devices.txt").read_text().rstrip()
        if (out / "devices.txt").exists()
        else None,
        "tests": (out / "tests_summary.txt").read_text().strip()
        if (out / "tests_summary.txt").exists()
        else None,
        "benchmark": read_json(out / "bench.json"),
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    lines = ["# GPU check", ""]
    verdict = "passed" if report["passed"] else f"FAILED at step '{report['failed_step']}'"
    lines += [
        f"Result: **{verdict}**",
        "",
        "| step | status | seconds | detail |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s['step']} | {s['status']} | {s['seconds']:.1f} | {s['detail']} |" for s in steps
    ]
    if report["devices"]:
        lines += ["", "Devices: " + "; ".join(
            f"{d['name']} ({d['type']}, {d['global_memory'] / 2**30:.0f} GiB"
            + (", measured" if d.get("is_default") else "")
            + ("" if d.get("usable", True) else f", UNUSABLE: {d.get('problem')}") + ")"
            for d in report["devices"])]  # fmt: skip
    if report["devices_listing"]:
        lines += ["", "`gpu-deconv devices`:", "", "```", report["devices_listing"], "```"]
    if report["tests"]:
        lines += ["", f"Tests: {report['tests']}"]
    bench = report["benchmark"]
    if bench:
        lines += ["", f"Benchmark on {bench['device']} (driver {bench['driver']}), PSF "
                  f"{bench['psf']}^3, {bench['iterations']} iterations, end to end and per "
                  "iteration (seconds):", "",
                  "| size | algorithm | backend | method | end to end | per iteration |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {r['size']} | {r['algorithm']} | {r['backend']} | {r['method']} | "
            f"{r['end_to_end_s']:.3f} | {r['per_iteration_s']:.4f} |"
            for r in bench["rows"]
        ]
        if bench["skipped_for_time"]:
            lines += ["", "Not run (time): " + ", ".join(bench["skipped_for_time"])]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
