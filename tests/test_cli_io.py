"""The command line on real files, checked numerically against the Python API; TIFF I/O."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import gpu_deconv as gd
from gpu_deconv.io import read_tiff, write_tiff
from gpu_deconv.psf import gaussian_psf
from gpu_deconv.samples import nucleus


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "gpu_deconv.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture()
def files(tmp_path):
    image = tmp_path / "nucleus.tif"
    write_tiff(image, nucleus(), voxel_size=(0.26, 0.26))
    psf = tmp_path / "psf.tif"
    result = cli("psf", "gaussian", "--shape", "25,25", "--sigma", "2", "-o", psf)
    assert result.returncode == 0, result.stderr
    return image, psf


def test_run_matches_python_api_and_keeps_voxel_size(files, tmp_path):
    image, psf = files
    out = tmp_path / "out.tif"
    result = cli("run", image, "--psf", psf, "-n", "15", "-o", out, "--snapshots", "5", "-q")
    assert result.returncode == 0, result.stderr
    expected = gd.richardson_lucy(
        nucleus(),
        gaussian_psf((25, 25), 2.0),
        15,
        backend="numpy",
        dtype="float32",
        snapshots=[5, 15],
    )
    written = read_tiff(out)
    assert written.data.dtype == np.float32
    np.testing.assert_allclose(written.data, expected[15], rtol=1e-5)
    np.testing.assert_allclose(read_tiff(tmp_path / "out_iter5.tif").data, expected[5], rtol=1e-5)
    assert written.voxel_size == pytest.approx((0.26, 0.26), rel=1e-6)


def test_output_dtype_rounds_and_warns_when_clipping(files, tmp_path):
    image, psf = files
    args = ("run", image, "--psf", psf, "-n", "5", "-q")
    assert cli(*args, "-o", tmp_path / "f32.tif").returncode == 0
    result = cli(*args, "-o", tmp_path / "u16.tif", "--output-dtype", "uint16")
    assert result.returncode == 0, result.stderr
    reference = read_tiff(tmp_path / "f32.tif").data
    written = read_tiff(tmp_path / "u16.tif").data
    assert written.dtype == np.uint16
    np.testing.assert_array_equal(written, np.clip(np.rint(reference), 0, 65535))
    assert "clipped" not in result.stderr
    result = cli(*args, "-o", tmp_path / "u8.tif", "--output-dtype", "uint8")
    assert result.returncode == 0
    assert "were outside the uint8 range and were clipped" in result.stderr
    small = read_tiff(tmp_path / "u8.tif").data
    np.testing.assert_array_equal(small, np.clip(np.rint(reference), 0, 255))


def test_cli_on_confocal_grid_matches_api(tmp_path):
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    grid = data / "bian_DeconvolutionSampleVerticalGrid1AU-crop.tif"
    psf = data / "bian_psf_measured_45cube.tif"
    if not grid.exists():
        pytest.skip("../shared/data not beside the checkout")
    out = tmp_path / "grid.tif"
    result = cli("run", grid, "--psf", psf, "-n", "20", "-o", out, "--backend", "numpy", "-q")
    assert result.returncode == 0, result.stderr
    expected = gd.richardson_lucy(
        read_tiff(grid).data, read_tiff(psf).data, 20, backend="numpy", dtype="float32"
    )
    written = read_tiff(out)
    np.testing.assert_allclose(written.data, expected, rtol=1e-5, atol=1e-6)
    assert written.voxel_size == read_tiff(grid).voxel_size


def test_run_progress_bar_on_stderr(files, tmp_path):
    image, psf = files
    result = cli("run", image, "--psf", psf, "-n", "3", "-o", tmp_path / "o.tif")
    assert result.returncode == 0 and "3/3" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.tif", "--psf", "{psf}", "-o", "{tmp}/a.tif"], "no such file"),
        (["{notiff}", "--psf", "{psf}", "-o", "{tmp}/a.tif"], "not a readable TIFF"),
        (["{image}", "--psf", "{psf3d}", "-o", "{tmp}/a.tif"], "same number of dimensions"),
        (["{nan}", "--psf", "{psf}", "-o", "{tmp}/a.tif"], "contains NaN"),
        (["{image}", "--psf", "{psf}", "-o", "{image}"], "is the input image; write the result"),
        (
            ["{image}", "--psf", "{psf}", "-o", "{tmp}/a.tif", "--info", "{tmp}/a.tif"],
            "named twice",
        ),
        (
            ["{image}", "--psf", "{psf}", "-o", "{tmp}/a.tif", "-n", "3", "--snapshots", "2"]
            + ["--info", "{tmp}/a_iter2.tif"],
            "a_iter2.tif is named twice among the outputs",
        ),
        (
            ["{image}", "--psf", "{psf}", "-o", "{tmp}/nodir/a.tif"],
            "output directory does not exist",
        ),
        (["{image}", "--psf", "{psf}", "-o", "{tmp}/a.tif", "-n", "-3"], "iterations must be >= 0"),
        # issue 23: as root, "-o /dev/null --overwrite" made /dev/null a regular file; here a
        # device like it (1, 3) made in the test's folder, never the machine's own
        (
            ["{image}", "--psf", "{psf}", "-o", "{null}", "--overwrite"],
            "null is a character device, not a regular file; not replacing it",
        ),
        (
            ["{image}", "--psf", "{psf}", "-o", "{group}", "--overwrite"],
            "group.zarr is a zarr group, not a zarr array; not replacing it",
        ),
        # tifffile logs 4 lines about it on stderr, then read the first plane as the image
        (
            ["{cut}", "--psf", "{psf}", "-o", "{tmp}/a.tif"],
            "cut.tif is not a readable TIFF file (damaged or truncated: tifffile reports",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(files, tmp_path, args, message):
    image, psf = files
    null, group = tmp_path / "null", tmp_path / "group.zarr"
    if "{null}" in args:
        try:
            os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, AttributeError) as exc:
            pytest.skip(f"cannot make a character device here ({exc})")
    if "{group}" in args:
        zarr = pytest.importorskip("zarr")
        pytest.importorskip("dask")
        zarr.open_group(str(group), mode="w").create_array("a", shape=(4,), dtype="f4")[:] = 1
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, np.ones((4, 25, 25), np.float32), imagej=True)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    notiff = tmp_path / "fake.tif"
    notiff.write_text("not an image")
    psf3d = tmp_path / "psf3d.tif"
    tifffile.imwrite(psf3d, np.ones((3, 3, 3), np.float32), photometric="minisblack")
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((8, 8), np.nan, np.float32))
    names = dict(image=image, psf=psf, tmp=tmp_path, notiff=notiff, psf3d=psf3d, nan=nan, cut=cut)
    names |= dict(null=null, group=group)
    before = image.read_bytes()
    targets = {p.name: os.lstat(p) for p in (null, group) if os.path.lexists(p)}
    in_group = sorted(group.rglob("*")) if group.exists() else []
    result = cli("run", *[a.format(**names) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert image.read_bytes() == before  # the input is never touched
    assert not (tmp_path / "a.tif").exists()
    assert not list(tmp_path.glob(".*"))  # no hidden temporary file or store
    for name, status in targets.items():  # the device and the group are as they were
        now = os.lstat(tmp_path / name)
        assert (now.st_mode, now.st_rdev, now.st_mtime_ns) == (
            status.st_mode,
            status.st_rdev,
            status.st_mtime_ns,
        )
    assert (sorted(group.rglob("*")) if group.exists() else []) == in_group  # arrays kept


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.tif"
    write_tiff(target, np.ones((4, 4), np.float32))
    original = target.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", boom)
    with pytest.raises(KeyboardInterrupt):
        write_tiff(target, np.zeros((4, 4), np.float32), overwrite=True)
    assert target.read_bytes() == original
    assert not list(tmp_path.glob(".*.tmp"))


def test_read_3d_voxel_size_round_trip(tmp_path):
    data = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    path = write_tiff(tmp_path / "v.tif", data, voxel_size=(0.5, 0.1, 0.2))
    back = read_tiff(path)
    np.testing.assert_array_equal(back.data, data)
    assert back.voxel_size == pytest.approx((0.5, 0.1, 0.2), rel=1e-6)


# ---- voxel sizes in micrometres, whatever unit the file records (issue 23, item 3) ----------

# (ImageJ unit, Z spacing and pixel size in that unit, (z, y, x) in micrometres; None: no size)
IMAGEJ_UNITS = [
    ("nm", 200.0, 100.0, (0.2, 0.1, 0.1)),  # was read as 100 um pixels
    ("mm", 2e-4, 1e-4, (0.2, 0.1, 0.1)),  # was kept in mm
    ("cm", 2e-5, 1e-5, (0.2, 0.1, 0.1)),
    ("m", 2e-7, 1e-7, (0.2, 0.1, 0.1)),
    ("um", 0.2, 0.1, (0.2, 0.1, 0.1)),
    ("micron", 0.2, 0.1, (0.2, 0.1, 0.1)),
    ("micron", 1.0, 1.0, (1.0, 1.0, 1.0)),  # 1 pixel per unit: a size where a unit is named
    ("\\u00B5m", 0.2, 0.1, (0.2, 0.1, 0.1)),  # as ImageJ writes it: a literal \u00B5m
    ("NM", 200.0, 100.0, (0.2, 0.1, 0.1)),  # ImageJ compares units in lower case
    ("inch", 2e-4 / 25.4, 1e-4 / 25.4, (0.2, 0.1, 0.1)),
    ("pixel", 2.0, 1.0, None),  # ImageJ's "uncalibrated"
]


def imagej_file(path, unit, spacing, size, **extra):
    metadata = {"axes": "ZYX", "unit": unit, "spacing": spacing, **extra}
    data = np.ones((3, 8, 8), np.float32)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / size, 1 / size), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "unit, spacing, size, expected", IMAGEJ_UNITS, ids=[f"{u[0]}-{u[2]}" for u in IMAGEJ_UNITS]
)
def test_imagej_voxel_sizes_are_read_in_micrometres(tmp_path, unit, spacing, size, expected):
    from gpu_deconv.io import open_lazy, read_tiff_voxel_size
    from gpu_deconv.stack_io import read_stack

    path = imagej_file(tmp_path / "u.tif", unit, spacing, size)
    for voxel in (read_tiff(path).voxel_size, read_tiff_voxel_size(path), read_stack(path).spacing):
        assert voxel == (None if expected is None else pytest.approx(expected, rel=1e-6))
    assert open_lazy(path).shape == (3, 8, 8)


# (how the file records its voxel size, (z, y, x) in micrometres; a str: the error's words)
OTHER_UNITS = [
    ("ImageJ yunit, zunit", dict(unit="um", yunit="nm", zunit="mm"), (1.0, 1e-4, 0.1)),
    ("OME nm", dict(ome="nm", size=100.0), (0.2, 0.1, 0.1)),
    ("OME Å", dict(ome="Å", size=1000.0), (0.2, 0.1, 0.1)),
    ("OME mm", dict(ome="mm", size=1e-4), (0.2, 0.1, 0.1)),
    ("OME default (um)", dict(ome=None, size=0.1), (0.2, 0.1, 0.1)),
    ("OME reference frame", dict(ome="reference frame", size=1.0), None),
    ("ResolutionUnit cm", dict(resolutionunit="CENTIMETER"), (1.0, 0.1, 0.1)),
    ("ResolutionUnit none", dict(resolutionunit="NONE"), (1.0, 1e-5, 1e-5)),
    ("ImageJ furlong", dict(unit="furlong"), "u.tif: unknown length unit 'furlong' (ImageJ unit)"),
    ("ImageJ zunit sec", dict(unit="um", zunit="sec"), "unknown length unit 'sec' (ImageJ zunit)"),
    ("OME furlong", dict(ome="furlong", size=1.0), "unit 'furlong' (OME PhysicalSizeXUnit)"),
]


def unit_file(path, how):
    data = np.ones((3, 8, 8), np.float32)
    if "ome" in how:  # an .ome.tif name: OME-TIFF
        metadata: dict = {"axes": "ZYX"}
        for axis, size in {"X": how["size"], "Y": how["size"], "Z": 2 * how["size"]}.items():
            metadata[f"PhysicalSize{axis}"] = size
            if how["ome"] is not None:
                metadata[f"PhysicalSize{axis}Unit"] = how["ome"]
        tifffile.imwrite(path, data, metadata=metadata)
    elif "resolutionunit" in how:  # 1e5 pixels per unit
        unit = how["resolutionunit"]
        kwargs = dict(resolution=(1e5, 1e5), resolutionunit=unit, photometric="minisblack")
        tifffile.imwrite(path, data, **kwargs)
    else:  # ImageJ: 10 pixels per unit, planes 0.001 zunit apart
        metadata = {"axes": "ZYX", "spacing": 0.001, **how}
        tifffile.imwrite(path, data, imagej=True, resolution=(10, 10), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "how, expected", [c[1:] for c in OTHER_UNITS], ids=[c[0] for c in OTHER_UNITS]
)
def test_ome_and_tiff_units_are_read_in_micrometres(tmp_path, capsys, how, expected):
    from gpu_deconv.cli import main
    from gpu_deconv.stack_io import read_stack

    name = "u.ome.tif" if "ome" in how else "u.tif"
    path = unit_file(tmp_path / name, how)
    if isinstance(expected, str):
        for read in (read_tiff, read_stack):
            with pytest.raises(ValueError, match=re.escape(expected)):
                read(path)
        write_tiff(tmp_path / "psf.tif", gaussian_psf((3, 5, 5), 1.0).astype(np.float32))
        argv = ["run", path, "--psf", tmp_path / "psf.tif", "-n", 1, "-o", tmp_path / "o.tif"]
        assert main([str(a) for a in argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and str(path.parent) in lines[0], lines
        assert not (tmp_path / "o.tif").exists()
        return
    for voxel in (read_tiff(path).voxel_size, read_stack(path).spacing):
        assert voxel == (None if expected is None else pytest.approx(expected, rel=1e-6))


def test_cli_writes_micrometres_from_a_nanometre_input(tmp_path, capsys):
    from gpu_deconv.cli import main

    image = tmp_path / "nm.tif"
    tifffile.imwrite(
        image,
        (np.random.default_rng(0).random((4, 16, 16)) + 1).astype(np.float32),
        imagej=True,
        resolution=(1 / 65, 1 / 65),
        metadata={"axes": "ZYX", "unit": "nm", "spacing": 200},
    )
    write_tiff(tmp_path / "psf.tif", gaussian_psf((3, 5, 5), 1.0).astype(np.float32))
    for out, extra in (("o.tif", []), ("lazy.tif", ["--scheduler", "sync"])):
        argv = ["run", image, "--psf", tmp_path / "psf.tif", "-n", 2, "-q", "-o", tmp_path / out]
        assert main([str(a) for a in argv + extra]) == 0, capsys.readouterr().err
        assert read_tiff(tmp_path / out).voxel_size == pytest.approx((0.2, 0.065, 0.065), rel=1e-6)


def test_demo_writes_figures_and_tables(tmp_path):
    pytest.importorskip("matplotlib")
    result = cli("demo", "--out", tmp_path / "demo", "--backend", "numpy", "-q")
    assert result.returncode == 0, result.stderr
    names = ["tutorial_grid.png", "tutorial_metrics.csv", "tutorial_mse.png", "model_psf.png"]
    if "3D section skipped" not in result.stdout:
        names += ["nuclei3d_mip.png", "nuclei3d_timing.csv"]
    for name in names:
        assert (tmp_path / "demo" / name).stat().st_size > 0
    rows = [r.split(",") for r in (tmp_path / "demo" / "tutorial_metrics.csv").read_text().split()]
    ours = [r for r in rows[1:] if r[0] == "gpu_deconv-numpy"]
    assert [int(r[1]) for r in ours] == list(range(1, 101))
    mse = [float(r[2]) for r in ours]
    assert mse[79] < mse[9] < mse[0]  # deconvolution brings the estimate closer to the original
    for other in {r[0] for r in rows[1:]} - {"gpu_deconv-numpy", "SimpleITK"}:
        # every other backend reproduces the reference MSE curve
        theirs = [float(r[2]) for r in rows[1:] if r[0] == other]
        np.testing.assert_allclose(theirs, mse, rtol=1e-4)
    assert "lowest MSE after" in result.stdout
    model = re.search(r"model PSF.*MSE blurred (\S+), after 40 iterations (\S+)", result.stdout)
    assert float(model[2]) < 0.8 * float(model[1])  # the model PSF deconvolves its own blur


def test_shared_confocal_grid_if_present():
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    grid_file = data / "bian_DeconvolutionSampleVerticalGrid1AU-crop.tif"
    if not grid_file.exists():
        pytest.skip("../shared/data not beside the checkout")
    grid = read_tiff(grid_file).data.astype(np.float32)
    # The measured 45^3 PSF is larger than the 21-plane stack along z, and carries round-off
    # negatives (-1e-20): both are accepted.
    psf = read_tiff(data / "bian_psf_measured_45cube.tif").data
    result = gd.richardson_lucy(grid, psf, 20, backend="numpy")

    def modulation(vol):
        profile = vol.mean(axis=(0, 1))
        return (profile.max() - profile.min()) / (profile.max() + profile.min())

    before, after = modulation(grid), modulation(result)
    assert after > 1.8 * before, (before, after)  # measured 0.33 -> 0.69


def test_devices_lists_default_and_auto_choice():
    result = cli("devices")
    assert result.returncode == 0, result.stderr
    names = [d.name for d in gd.list_devices()]
    assert all(name in result.stdout for name in names)
    assert "backend='auto' uses: " in result.stdout


def test_bench_help_and_missing_checkout_exits_2(tmp_path):
    result = cli("bench", "--help")
    assert result.returncode == 0 and "--case NAME" in result.stdout
    result = cli("bench", "--source", tmp_path)  # an empty directory: no checkout there
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ship with the gpu_deconv source repository" in lines[0]


def test_bench_passes_case_to_the_checkout_driver():
    if not (Path(gd.__file__).resolve().parents[1] / "benchmarks").is_dir():
        pytest.skip("gpu_deconv is not installed from a source checkout (pip install -e)")
    # The driver's own parser rejects an unknown case (exit 2) before running anything.
    result = cli("bench", "--case", "no-such-case")
    assert result.returncode == 2
    assert "run_benchmarks.py: error: argument --case: invalid choice" in result.stderr


@pytest.fixture()
def volume_files(tmp_path):
    rng = np.random.default_rng(3)
    volume = (rng.random((20, 48, 40)) * 100 + 10).astype(np.float32)
    image = tmp_path / "volume.tif"
    write_tiff(image, volume)
    psf = tmp_path / "psf3d.tif"
    write_tiff(psf, gaussian_psf((5, 7, 7), (1.0, 1.2, 1.2)).astype(np.float32))
    return volume, image, psf


def test_run_tiled_tiff_and_zarr_paths_match_api(volume_files, tmp_path):
    import dask.array as da

    volume, image, psf = volume_files
    kernel = read_tiff(psf).data
    tiled = gd.richardson_lucy(volume, kernel, 8, backend="numpy", tile_shape=(10, 24, 40))
    out = tmp_path / "tiled.tif"
    args = ("run", image, "--psf", psf, "-n", 8, "--backend", "numpy", "-q")
    done = cli(*args, "-o", out, "--tile-shape", "10,24,40")
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(read_tiff(out).data, tiled, rtol=1e-5)

    # TIFF in (read lazily), zarr out, on dask with a progress bar.
    zarr_out = tmp_path / "out.zarr"
    done = cli(*args[:-1], "-o", zarr_out, "--tile-shape", "10,24,20", "--scheduler", "sync")
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr
    lazy = da.from_zarr(str(zarr_out))
    assert lazy.chunks == ((10, 10), (24, 24), (20, 20))
    whole = gd.richardson_lucy(volume, kernel, 8, backend="numpy")
    assert np.abs(lazy.compute() - whole).max() <= 1e-3 * whole.max()

    # zarr in, zarr out; an existing output is refused, then replaced with --overwrite.
    again = tmp_path / "again.zarr"
    assert cli(*args, "-o", again).returncode == 0
    np.testing.assert_allclose(da.from_zarr(str(again)).compute(), whole, rtol=1e-4, atol=1e-3)
    refused = cli(*args, "-o", again)
    assert refused.returncode == 2 and "exists" in refused.stderr
    from_zarr = cli("run", zarr_out, "--psf", psf, "-n", 1, "-o", again, "--overwrite", "-q")
    assert from_zarr.returncode == 0, from_zarr.stderr
    assert not list(tmp_path.glob(".again.zarr*"))  # no partial store left behind


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--scheduler", "tcp://127.0.0.1:9"), "cannot reach the dask scheduler"),
        (("--snapshots", "2", "--scheduler", "sync"), "--snapshots needs a TIFF to TIFF run"),
        (("--max-memory", "1K"), "fits the memory available"),
    ],
)
def test_lazy_run_errors_exit_2(volume_files, tmp_path, extra, message):
    _, image, psf = volume_files
    done = cli("run", image, "--psf", psf, "-n", 2, "-o", tmp_path / "x.zarr", "-q", *extra)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_api_names_in_messages_are_written_as_flags():
    from gpu_deconv.cli import _in_flags

    flags = {"stop": "--stop", "iterations": "--iterations", "read_noise": "--read-noise"}
    flags |= {"overwrite": "--overwrite", "margin": "--margin", "boundary": "--boundary"}
    cases = {
        "stop='holdout' needs iterations='auto'": "--stop holdout needs --iterations auto",
        "with read_noise use stop='discrepancy'": "with --read-noise use --stop discrepancy",
        "margin applies to boundary='wrap'": "--margin applies to --boundary wrap",
        "a.tif exists; pass overwrite=True (CLI: --overwrite)": "a.tif exists; pass --overwrite",
        # plain words that are also option names stay words
        "chose 0 iterations; the stop rule": "chose 0 iterations; the stop rule",
        "estimated edges and the margin": "estimated edges and the margin",
    }
    cases |= {
        "output directory does not exist: nodir": "output directory does not exist: nodir",
        "dtype float64 is not supported": "--dtype float64 is not supported",
        "pass tile_shape=None to run whole": "pass --tile-shape none to run whole",
        "say so (colours=True, CLI: --colours)": "say so (--colours)",
    }
    flags |= {"dtype": "--dtype", "tile_shape": "--tile-shape", "output": "--output"}
    for message, expected in cases.items():
        assert _in_flags(message, flags) == expected
    # the command's file names stay as given
    message = "read_noise/o.tif exists; pass overwrite=True (CLI: --overwrite)"
    expected = "read_noise/o.tif exists; pass --overwrite"
    assert _in_flags(message, flags, ["read_noise/o.tif", "read_noise"]) == expected


def test_psf_errors_name_the_psf_kinds_flags(tmp_path, capsys):
    from gpu_deconv.cli import main

    argv = ["psf", "widefield", "--shape", "5,9,9", "--spacing", "0.3,0.1", "--wavelength"]
    assert main([*argv, "0.52", "--na", "1.0", "-o", str(tmp_path / "h.tif")]) == 2
    assert capsys.readouterr().err.startswith("gpu-deconv: error: --spacing must be one number")
    assert main([*argv[:5], "0.1", "--wavelength", "520", "--na", "1.0", "-o", "h.tif"]) == 2
    assert "--wavelength is in micrometres: 520.0" in capsys.readouterr().err


def test_outputs_and_info_record_how_they_were_made(tmp_path):
    # Issue 22, item 3: the version, date, command, inputs and what actually ran (never "auto").
    import json

    from gpu_deconv import cli

    rng = np.random.default_rng(0)
    write_tiff(tmp_path / "im.tif", (rng.random((24, 30)) * 100 + 5).astype(np.float32))
    write_tiff(tmp_path / "psf.tif", gd.psf.gaussian_psf((7, 7), 1.2).astype(np.float32))
    argv = [
        "run", str(tmp_path / "im.tif"), "--psf", str(tmp_path / "psf.tif"), "-n", "4",
        "--snapshots", "2", "-o", str(tmp_path / "out.tif"), "--info",
        str(tmp_path / "info.json"), "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    for name, count in (("out.tif", 4), ("out_iter2.tif", 2)):
        with tifffile.TiffFile(tmp_path / name) as tif:
            made = json.loads(tif.imagej_metadata["Info"])
        assert made["iterations"] == count and made["version"] == gd.__version__
        assert made["backend"] in ("numpy", "opencl") and made["method"] in ("fft", "spatial")
        assert made["command"] == "gpu-deconv " + " ".join(argv)
        assert made["inputs"] == {"image": argv[1], "psf": argv[3]}
        assert made["date"].endswith("+00:00") and made["options"]["boundary"] == "reflect"
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["backend"] == info["provenance"]["backend"] != "auto"
    assert info["iterations"] == 4 and info["provenance"]["inputs"]["psf"] == argv[3]
