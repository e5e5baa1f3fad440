"""Direct filters against the truth: gpu_deconv's Wiener and Tikhonov beside the peers'.

``python benchmarks/filter_quality.py [--quick] [--out DIR]`` writes ``filter_quality.json`` and
``filter_quality.md`` to ``DIR`` (default ``benchmarks/results``).

The cases are :mod:`edge_quality`'s (the real nuclei volume as the truth, the whole plane or
volume blurred, a crop with real content beyond its edges, Poisson noise), at a low and a high
photon count. A filter has one parameter and no iteration count, so every method is scored
at its own best parameter on a log grid (the oracle choice, as the iterative rows get their
best count); ``wiener, noise_variance = mean`` takes the Poisson variance from the data
instead (no truth seen). MSE against the truth: whole crop, interior and border band
(``edge_quality.regions_for``). Time: median of 3 calls at the best parameter after a
warm-up, in this process, float64 on the CPU. Plain Richardson-Lucy (flat start, best count
1..100) is the reference row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import edge_quality as eq  # noqa: E402  (the cases, regions, scoring and report writer)

PEAKS = (200.0, 2000.0)
GRID = np.logspace(-6, 1, 22)  # weights: Tikhonov lambda, Wiener balance
NOISE_GRID = np.logspace(-1.5, 2.5, 17)  # noise_variance in units of the crop's mean count
REGIONS = ["whole", "interior", "border"]


def methods(image, psf):
    """(label, convention, parameter grid, call(parameter) -> estimate) for every row."""
    import SimpleITK as sitk
    from skimage.restoration import wiener as sk_wiener

    import gpu_deconv as gd
    from gpu_deconv.backends._filter_planning import filter_geometry

    mean = float(image.mean())
    domain = filter_geometry(image.shape, psf.shape, "nearest")
    samples = float(np.prod(domain.padded_shape))

    def ours(function, **kw):
        return lambda p: function(image, psf, p, backend="numpy", tile_shape=None, **kw)

    def ours_noise(boundary):
        return lambda p: gd.wiener(
            image, psf, noise_variance=p * mean, boundary=boundary, backend="numpy",
            tile_shape=None,
        )  # fmt: skip

    def itk(name, setter, scale=1.0):
        def call(p):
            flt = getattr(sitk, name)()
            getattr(flt, setter)(p * scale)
            out = flt.Execute(sitk.GetImageFromArray(image), sitk.GetImageFromArray(psf))
            return sitk.GetArrayFromImage(out)

        return call

    return [
        ("gpu_deconv tikhonov", "reflect, identity", GRID, ours(gd.tikhonov)),
        ("gpu_deconv tikhonov", "nearest, identity (= SimpleITK's)", GRID,
         ours(gd.tikhonov, boundary="nearest")),
        ("gpu_deconv wiener, balance", "reflect, Laplacian", GRID, ours(gd.wiener)),
        ("gpu_deconv wiener, balance", "wrap, Laplacian (= scikit-image's)", GRID,
         ours(gd.wiener, boundary="wrap")),
        ("gpu_deconv wiener, noise_variance", "reflect, x mean count", NOISE_GRID,
         ours_noise("reflect")),
        ("gpu_deconv wiener, noise_variance = mean", "reflect, no tuning", [1.0],
         ours_noise("reflect")),
        ("scikit-image wiener", "circular, Laplacian, clip=False", GRID,
         lambda p: sk_wiener(image, psf, p, clip=False)),
        ("SimpleITK Tikhonov", "zero-flux Neumann, identity", GRID,
         itk("TikhonovDeconvolutionImageFilter", "SetRegularizationConstant")),
        ("SimpleITK Wiener", "zero-flux Neumann, NoiseVariance = M x mean x p", NOISE_GRID,
         itk("WienerDeconvolutionImageFilter", "SetNoiseVariance", samples * mean)),
    ]  # fmt: skip


def timed(call, parameter) -> float:
    call(parameter)  # warm-up: FFT plans, imports
    times = []
    for _ in range(3):
        start = time.perf_counter()
        call(parameter)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_case(case: dict, log) -> list[dict]:
    image, psf, truth = case["noisy"], case["psf"], case["truth"]
    regions = {name: case["regions"][name] for name in REGIONS}
    rows = []
    for label, convention, grid, call in methods(image, psf):
        estimates = {i: call(p) for i, p in enumerate(grid)}
        scored = eq.score(truth, estimates, regions, with_ssim=False)
        best = scored["best"]["whole"]["k"]
        rows.append(
            {
                "method": label,
                "convention": convention,
                "parameter": float(grid[best]),
                "at_grid_end": best in (0, len(grid) - 1) and len(grid) > 1,
                "mse": scored["at_whole_best"],
                "best": {r: scored["best"][r]["mse"] for r in REGIONS},
                "seconds": timed(call, grid[best]),
            }
        )
        log(f"  {label} ({convention}): MSE {rows[-1]['mse']['whole']:.4g}")
    rl = eq.run_ours(image, psf, 100, "reflect", "mean")
    scored = eq.score(truth, rl, regions, with_ssim=False)
    k = scored["best"]["whole"]["k"]
    rows.append(
        {
            "method": "gpu_deconv richardson_lucy",
            "convention": "reflect, flat start, best of 1..100 iterations",
            "parameter": k,
            "at_grid_end": k == 100,
            "mse": scored["at_whole_best"],
            "best": {r: scored["best"][r]["mse"] for r in REGIONS},
            "seconds": timed(lambda n: eq.run_ours(image, psf, n, "reflect", "mean"), k),
        }
    )
    return rows


def table(rows: list[dict]) -> list[str]:
    ref = rows[-1]["mse"]["whole"]
    head = "| method | convention | best parameter | whole MSE | interior | border band "
    head += "| / RL's best | seconds |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        flag = " (grid end)" if r["at_grid_end"] else ""
        mse = r["mse"]
        lines.append(
            f"| {r['method']} | {r['convention']} | {r['parameter']:.3g}{flag} | "
            f"{mse['whole']:.4g} | {mse['interior']:.4g} | {mse['border']:.4g} | "
            f"{mse['whole'] / ref:.3f} | {r['seconds']:.3g} |"
        )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller 3D crop")
    parser.add_argument("--out", type=Path, default=eq.RESULTS)
    args = parser.parse_args(argv)
    volume = eq.nuclei()
    report, text = {"cases": {}}, ["# Direct filters against the truth", ""]
    text += [__doc__.split("\n\n", 1)[1].strip(), ""]
    for peak in PEAKS:
        eq.PEAK = peak  # edge_quality's cases scale the blurred crop to this many photons
        for name, case in eq.make_cases(volume, args.quick).items():
            key = f"{name}, {peak:.0f} photons"
            print(key, flush=True)
            rows = run_case(case, print)
            report["cases"][key] = {"title": case["title"], "rows": rows}
            text += [f"## {key}", "", case["title"], "", *table(rows), ""]
    report["versions"] = eq.versions(__import__("gpu_deconv"))
    report["provenance"] = eq.provenance()
    eq.write_report(args.out, "filter_quality", report, "\n".join(text) + "\n")


if __name__ == "__main__":
    main()
