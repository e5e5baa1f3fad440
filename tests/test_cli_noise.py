"""The command line's noise model, TV and stopping rules, in process, against the Python API."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import blob_image, make_psf

import gpu_deconv as gd
from gpu_deconv.cli import main
from gpu_deconv.io import read_tiff, write_tiff

OFFSET, GAIN = 100.0, 2.0


@pytest.fixture()
def camera(tmp_path):
    # Integer photon counts seen through a camera: ADU = gain * photons + offset (uint16).
    truth = blob_image((10, 36, 40), seed=12) * 120
    psf = make_psf((5, 7, 7), "gaussian").astype(np.float32)
    counts = np.random.default_rng(9).poisson(gd.convolve(truth, psf, backend="numpy") + 3)
    adu = (counts * GAIN + OFFSET).astype(np.uint16)
    paths = {name: tmp_path / f"{name}.tif" for name in ("image", "psf", "background")}
    write_tiff(paths["image"], adu, voxel_size=(0.6, 0.2, 0.2))
    write_tiff(paths["psf"], psf)
    level = np.full(adu.shape, OFFSET + 3 * GAIN, np.float32)
    write_tiff(paths["background"], level)
    return counts.astype(np.float64), psf, paths


def run(paths, out, *extra):
    argv = ["run", str(paths["image"]), "--psf", str(paths["psf"]), "-o", str(out), "-q"]
    return main([*argv, "--backend", "numpy", "--dtype", "float64", *map(str, extra)])


def test_camera_units_background_and_auto_match_the_api(camera, tmp_path):
    photons, psf, paths = camera
    out, record = tmp_path / "out.tif", tmp_path / "run.json"
    camera_args = ("--offset", OFFSET, "--gain", GAIN, "--background", OFFSET + 3 * GAIN)
    assert run(paths, out, "-n", "auto", *camera_args, "--info", record) == 0
    expected, info = gd.richardson_lucy(
        photons, psf, "auto", backend="numpy", background=3.0, return_info=True
    )
    saved = json.loads(record.read_text())
    assert saved["iterations"] == info.iterations and saved["stop"] == "discrepancy"
    assert len(saved["history"]) == info.iterations + 1
    # The result goes back to the input's units: photons times the gain.
    np.testing.assert_allclose(read_tiff(out).data, expected * GAIN, rtol=1e-6)
    assert read_tiff(out).voxel_size == pytest.approx((0.6, 0.2, 0.2))
    # In photons, and with the background as a map file: the same estimate.
    assert (
        run(
            paths,
            out,
            "-n",
            5,
            *camera_args[:4],
            "--background",
            paths["background"],
            "--photons",
            "--overwrite",
        )
        == 0
    )
    fixed = gd.richardson_lucy(photons, psf, 5, backend="numpy", background=3.0)
    np.testing.assert_allclose(read_tiff(out).data, fixed, rtol=1e-6)


def test_read_noise_tv_and_spacing_from_the_file(camera, tmp_path):
    photons, psf, paths = camera
    out = tmp_path / "out.tif"
    extra = ("--offset", OFFSET, "--gain", GAIN, "--read-noise", 1.5, "--regularization", 2e-3)
    assert run(paths, out, "-n", 6, *extra, "--photons") == 0
    expected = gd.richardson_lucy(
        photons,
        psf,
        6,
        backend="numpy",
        read_noise=1.5,
        regularization=2e-3,
        spacing=(0.6, 0.2, 0.2),
    )
    np.testing.assert_allclose(read_tiff(out).data, expected, rtol=1e-6)
    assert run(paths, out, "-n", 6, *extra, "--photons", "--spacing", "1,1,1", "--overwrite") == 0
    isotropic = gd.richardson_lucy(
        photons, psf, 6, backend="numpy", read_noise=1.5, regularization=2e-3
    )
    np.testing.assert_allclose(read_tiff(out).data, isotropic, rtol=1e-6)
    assert not np.allclose(expected, isotropic, rtol=1e-4)


def test_holdout_rounds_converted_photons(camera, tmp_path):
    photons, psf, paths = camera
    out, record = tmp_path / "out.tif", tmp_path / "run.json"
    args = ("-n", "auto", "--stop", "holdout", "--offset", OFFSET, "--gain", GAIN)
    assert run(paths, out, *args, "--info", record, "--photons") == 0
    expected, info = gd.richardson_lucy(
        photons, psf, "auto", stop="holdout", backend="numpy", return_info=True
    )
    assert json.loads(record.read_text())["holdout_iterations"] == list(info.holdout_iterations)
    np.testing.assert_allclose(read_tiff(out).data, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("-n", 5, "--gain", 0), "--gain must be a positive number"),
        (("-n", 5, "--stop", "relative"), "needs --iterations auto"),
        (("-n", "auto", "--snapshots", "2"), "--snapshots need a fixed iteration count"),
        (("-n", 5, "--regularization", -1), "--regularization must be a finite number >= 0"),
        # API names written as the CLI's flags
        (("-n", "auto", "--stop", "holdout", "--read-noise", 2), "with --read-noise use --stop"),
        (("-n", 5, "--offset", 1e9), "--offset 1e+09 is at or above every value of the image"),
        (("-n", 5, "--offset", OFFSET, "--background", 10), "--background 10 is below --offset"),
    ],
)
def test_bad_options_exit_2_with_one_line(camera, tmp_path, capsys, extra, message):
    _, _, paths = camera
    out = tmp_path / "out.tif"
    assert run(paths, out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_info_of_a_lazy_run_and_an_existing_file(camera, tmp_path, capsys):
    photons, psf, paths = camera
    record = tmp_path / "run.json"
    record.write_text("{}")
    for out in (tmp_path / "out.tif", tmp_path / "out.zarr"):  # in memory, and lazy
        assert run(paths, out, "-n", 3, "--info", record) == 2
        assert "exists" in capsys.readouterr().err and not out.exists()
    # The lazy (zarr) run writes the central chunk's records, as the dask API returns them.
    lazy = tmp_path / "lazy.json"
    camera_args = ("--offset", OFFSET, "--gain", GAIN, "--background", OFFSET + 3 * GAIN)
    assert run(paths, tmp_path / "out.zarr", "-n", "auto", *camera_args, "--info", lazy) == 0
    from gpu_deconv.dask import richardson_lucy as dask_rl

    _, info = dask_rl(photons, psf, "auto", backend="numpy", background=3.0, return_info=True)
    saved = json.loads(lazy.read_text())
    assert saved["iterations"] == info.iterations and saved["stop"] == "discrepancy"
    assert len(saved["history"]) == info.iterations + 1


def test_warnings_are_one_line_each(camera, tmp_path):
    # Raw ADU with the offset left in: the discrepancy rule warns (chose 0 iterations). The
    # CLI shows it as its own line, not Python's file, line number and source. A separate
    # process: this suite turns warnings into errors.
    _, _, paths = camera
    argv = ["run", str(paths["image"]), "--psf", str(paths["psf"]), "-n", "auto", "-q"]
    argv += ["-o", str(tmp_path / "out.tif"), "--backend", "numpy"]
    code = f"from gpu_deconv.cli import main; raise SystemExit(main({argv!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-deconv: warning: --stop discrepancy")
    assert "convert them: --offset, --gain" in lines[0]


def test_a_background_map_all_below_the_offset_is_refused():
    import argparse

    from gpu_deconv.cli import _Camera

    camera = _Camera(argparse.Namespace(offset=OFFSET, gain=GAIN, photons=False, stop=None))
    with pytest.raises(ValueError, match=r"--background \(map\) is below --offset 100"):
        camera.level(np.full((4, 4), OFFSET - 5))
    camera.level(np.full((4, 4), OFFSET))  # at the offset: no background, accepted
    # a dark map's noise may dip below the offset: those voxels are clipped to 0 photons
    dark = np.array([[OFFSET - 2, OFFSET + 4]])
    np.testing.assert_array_equal(camera.level(dark), [[0.0, 2.0]])
