"""The command line's estimated edges and masks, in process, checked against the Python API."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blob_image, make_psf

import gpu_deconv as gd
from gpu_deconv.cli import main
from gpu_deconv.io import read_tiff, write_tiff


@pytest.fixture()
def stack(tmp_path):
    image = (blob_image((12, 40, 36), seed=11) * 100).astype(np.float32)
    psf = make_psf((5, 7, 7), "gaussian").astype(np.float32)
    mask = np.random.default_rng(5).random(image.shape) > 0.05
    paths = {name: tmp_path / f"{name}.tif" for name in ("image", "psf", "mask")}
    write_tiff(paths["image"], image, voxel_size=(0.5, 0.1, 0.1))
    write_tiff(paths["psf"], psf)
    write_tiff(paths["mask"], mask.astype(np.uint8))
    return image, psf, mask, paths


def run(paths, out, *extra):
    return main(
        [
            "run",
            str(paths["image"]),
            "--psf",
            str(paths["psf"]),
            "-o",
            str(out),
            "-q",
            "--backend",
            "numpy",
            "-n",
            "6",
            *map(str, extra),
        ]
    )


@pytest.mark.parametrize("margin", ["full", "half", "2,3,3"])
def test_estimate_and_mask_match_the_api(stack, tmp_path, margin):
    image, psf, mask, paths = stack
    out = tmp_path / "out.tif"
    assert (
        run(paths, out, "--boundary", "estimate", "--margin", margin, "--mask", paths["mask"]) == 0
    )
    api_margin = [2, 3, 3] if "," in margin else margin
    expected = gd.richardson_lucy(
        image, psf, 6, backend="numpy", boundary="estimate", margin=api_margin, mask=mask
    )
    written = read_tiff(out)
    np.testing.assert_allclose(written.data, expected, rtol=1e-6, atol=1e-6 * expected.max())
    assert written.voxel_size == pytest.approx((0.5, 0.1, 0.1))


def test_estimate_on_the_dask_path_matches_the_api(stack, tmp_path):
    import dask.array as da

    image, psf, mask, paths = stack
    out = tmp_path / "out.zarr"
    assert (
        run(paths, out, "--boundary", "estimate", "--mask", paths["mask"], "--scheduler", "sync")
        == 0
    )
    expected = gd.richardson_lucy(image, psf, 6, backend="numpy", boundary="estimate", mask=mask)
    result = da.from_zarr(str(out)).compute()
    assert np.abs(result - expected).max() <= 1e-3 * expected.max()


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--boundary", "estimate", "--method", "spatial"), "--method fft"),
        (("--margin", "half"), "--boundary estimate only"),
        (("--boundary", "estimate", "--margin", "1,2"), "margin must hold 3"),
        (("--mask", "{psf}"), "mask must have the image's shape"),
        (("--mask", "{tmp}/missing.tif"), "no such file"),
    ],
)
def test_bad_estimate_options_exit_2_with_one_line(stack, tmp_path, capsys, extra, message):
    _, _, _, paths = stack
    out = tmp_path / "out.tif"
    extra = [e.format(psf=paths["psf"], tmp=tmp_path) for e in extra]
    assert run(paths, out, *extra) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("kind", ["shb", "biggs"])
def test_acceleration_through_the_cli_matches_the_api(stack, tmp_path, kind):
    image, psf, _, paths = stack
    out = tmp_path / "out.tif"
    assert run(paths, out, "--acceleration", kind) == 0
    expected = gd.richardson_lucy(image, psf, 6, backend="numpy", acceleration=kind)
    np.testing.assert_allclose(read_tiff(out).data, expected, rtol=1e-6, atol=1e-6 * expected.max())
