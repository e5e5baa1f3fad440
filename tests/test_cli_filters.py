"""``gpu-deconv wiener`` / ``tikhonov`` on real files, against the Python API."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import rel_rms

import gpu_deconv as gd
from gpu_deconv.cli import main
from gpu_deconv.io import read_tiff, write_tiff
from gpu_deconv.psf import gaussian_psf
from gpu_deconv.samples import nucleus

PSF = gaussian_psf((15, 15), 2.0)


@pytest.fixture()
def files(tmp_path):
    image = tmp_path / "nucleus.tif"
    blurred = gd.convolve(nucleus().astype(np.float32), PSF, backend="numpy")
    centred = blurred - blurred.mean()  # negative values are kept
    write_tiff(image, centred, voxel_size=(0.26, 0.26))
    psf = tmp_path / "psf.tif"
    write_tiff(psf, PSF.astype(np.float32))
    return image, psf, centred


@pytest.mark.parametrize(
    "arguments, function, kwargs",
    [
        (["tikhonov", "--regularization", "1e-3"], gd.tikhonov, dict(regularization=1e-3)),
        (
            ["tikhonov", "--regularization", "1e-2", "--regularizer", "laplacian",
             "--boundary", "wrap"],
            gd.tikhonov,
            dict(regularization=1e-2, regularizer="laplacian", boundary="wrap"),
        ),
        (["wiener", "--balance", "0.01"], gd.wiener, dict(balance=0.01)),
        (["wiener", "--noise-variance", "4"], gd.wiener, dict(noise_variance=4.0)),
    ],
)  # fmt: skip
def test_filters_match_python_api(files, tmp_path, arguments, function, kwargs):
    image, psf, data = files
    out = tmp_path / "out.tif"
    assert main([*arguments, str(image), "--psf", str(psf), "-o", str(out)]) == 0
    expected = function(data, PSF, dtype="float32", backend="numpy", **kwargs)
    written = read_tiff(out)
    assert written.data.dtype == np.float32 and written.data.min() < 0
    assert rel_rms(written.data, expected) <= 1e-6
    assert written.voxel_size == pytest.approx((0.26, 0.26), rel=1e-6)


def test_zarr_output_runs_on_dask(files, tmp_path):
    pytest.importorskip("zarr")
    import zarr

    image, psf, data = files
    out = tmp_path / "out.zarr"
    arguments = ["tikhonov", "--regularization", "1e-2", str(image), "--psf", str(psf)]
    assert main([*arguments, "-o", str(out), "--tile-shape", "40,40"]) == 0
    expected = gd.tikhonov(data, PSF, 1e-2, dtype="float32", backend="numpy")
    # Chunks of 40 and 30 voxels with the default 20-voxel overlap: measured 7.8e-5.
    assert rel_rms(np.asarray(zarr.open(str(out), mode="r")), expected) <= 2e-4


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["tikhonov", "--regularization", "0"], "regularization must be a positive"),
        (["tikhonov", "--regularization", "1", "--boundary", "estimate"], "invalid choice"),
        (["wiener", "--balance", "1", "--noise-variance", "1"], "not allowed with argument"),
        (["wiener"], "one of the arguments --balance --noise-variance is required"),
        (["wiener", "--noise-variance", "1", "--regularizer", "identity"], "applies with"),
        (["wiener", "--noise-variance", "1", "-o", "x.zarr"], "needs the whole image"),
        (["wiener", "--balance", "1", "--tile-shape", "a,b"], "expected comma-separated"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, arguments, message):
    image, psf, _ = files
    out = ["-o", str(tmp_path / "out.tif")] if "-o" not in arguments else []
    code = main([*arguments, str(image), "--psf", str(psf), *out])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out.tif").exists() and not (tmp_path / "x.zarr").exists()


def test_existing_output_is_kept(files, tmp_path, capsys):
    image, psf, _ = files
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep")
    arguments = ["wiener", "--balance", "0.1", str(image), "--psf", str(psf), "-o", str(out)]
    assert main(arguments) == 2
    assert out.read_bytes() == b"keep"
    assert main([*arguments, "--overwrite"]) == 0
    assert read_tiff(out).data.shape == (70, 70)


# ---- colours and channels, as gpu-deconv run sees them (issue 23, item 7) ---------------------


def test_colours_and_channels_are_refused_as_run_refuses_them(tmp_path, capsys):
    rgb = (np.random.default_rng(1).random((24, 24, 3)) * 200).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    channels = rgb.transpose(2, 0, 1).astype(np.float32)
    tifffile.imwrite(tmp_path / "cyx.tif", channels, imagej=True, metadata={"axes": "CYX"})
    # One channel of an ImageJ hyperstack is one volume, as run reads it: still filtered.
    tifffile.imwrite(
        tmp_path / "zcyx.tif", channels[:, None] + 1, imagej=True, metadata={"axes": "ZCYX"}
    )
    psf = tmp_path / "psf.tif"  # 3D: the colours (channels) read as 3 planes fitted it
    write_tiff(psf, gaussian_psf((3, 7, 7), 1.0).astype(np.float32))
    out = tmp_path / "out.tif"
    rule = (
        "gpu-deconv: error: the image is RGB/RGBA (axes 'YXS'): deconvolving across colours is "
        "meaningless; convert it to one channel per colour"
    )
    commands = {
        "run": (["run", "-n", "2", "-q"], rule + ", or ask for colour-by-colour deconvolution "
                "(--colours)"),
        "wiener": (["wiener", "--balance", "0.01"], rule),  # was: exit 0, colours mixed
        "tikhonov": (["tikhonov", "--regularization", "0.01"], rule),  # was: the same
    }  # fmt: skip

    def run(command, image):
        argv = [*command, str(tmp_path / image), "--psf", str(psf), "-o", str(out)]
        return main([*argv, "--backend", "numpy"]), capsys.readouterr().err.splitlines()

    for name, (command, message) in commands.items():
        out.unlink(missing_ok=True)
        assert run(command, "rgb.tif") == (2, [message]), name
        assert not out.exists()
        if name == "run":
            continue
        assert run(command, "cyx.tif") == (  # was: exit 0, channels mixed
            2,
            [
                f"gpu-deconv: error: {tmp_path / 'cyx.tif'} holds channels or time points (axes "
                f"'CYX'): {name} filters one image; split them into one file each (gpu-deconv "
                "run deconvolves them one by one)"
            ],
        )
        assert not out.exists()
        assert run(command, "zcyx.tif") == (0, [])
        assert read_tiff(out).data.shape == (3, 24, 24)
