"""Channels and time series: each volume equals its own run; files keep axes and voxel sizes."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import tifffile
from test_cli_io import cli

import gpu_deconv as gd
from gpu_deconv._reading import KNOWN
from gpu_deconv.io import write_tiff
from gpu_deconv.psf import gaussian_psf
from gpu_deconv.stack import check_axes, deconvolve_stack
from gpu_deconv.stack_io import create_stack, read_stack

PSFS = [gaussian_psf((5, 7, 7), (1.0, 1.2, 1.2)), gaussian_psf((5, 7, 7), (1.5, 2.0, 2.0))]


def stack(shape, seed=0):
    return (np.random.default_rng(seed).random(shape) * 100 + 5).astype(np.float32)


@pytest.mark.parametrize(
    "axes, shape, psfs",
    [
        ("TCZYX", (2, 2, 6, 20, 24), PSFS),
        ("TZCYX", (2, 6, 2, 20, 24), PSFS),  # ImageJ's order
        ("CZYX", (2, 6, 20, 24), PSFS[:1]),  # one PSF for every channel
        ("TCYX", (3, 2, 20, 24), [p[2] for p in PSFS]),
    ],
)
def test_every_volume_equals_its_own_run(axes, shape, psfs, backend):
    image = stack(shape)
    calls = []
    result = deconvolve_stack(
        image,
        psfs,
        4,
        axes=axes,
        backend=backend,
        tile_shape=None,
        callback=lambda done, total: calls.append((done, total)),
    )
    volumes = np.prod([n for n, a in zip(shape, axes) if a in "TC"])
    assert calls == [(k, volumes * 4) for k in range(1, volumes * 4 + 1)]
    channel_axis = axes.index("C")
    for index in np.ndindex(*[n for n, a in zip(shape, axes) if a in "TC"]):
        key = [slice(None)] * len(axes)
        for i, value in zip([i for i, a in enumerate(axes) if a in "TC"], index):
            key[i] = value
        channel = key[channel_axis]
        expected = gd.richardson_lucy(
            image[tuple(key)], psfs[channel % len(psfs)], 4, backend=backend, tile_shape=None
        )
        np.testing.assert_array_equal(result[tuple(key)], expected)


@pytest.mark.parametrize(
    "axes, shape, kwargs, message",
    [
        ("CZYX", (2, 4, 8, 8), {}, "name 4 axes, the image has 5"),
        ("TCXY", (2, 2, 8, 8), {}, "must end in YX"),
        ("YXS", (8, 8, 3), {}, "is RGB/RGBA"),
        ("CCYX", (2, 2, 8, 8), {}, "distinct letters"),
    ],
)
def test_bad_axes(axes, shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_axes(axes, len(shape) + (message.startswith("name")), **kwargs)


def test_psf_count_and_colours():
    image = stack((3, 2, 16, 16))
    with pytest.raises(ValueError, match=r"one per channel \(2\), got 4"):
        deconvolve_stack(image, [p[2] for p in PSFS] * 2, 2, axes="TCYX", backend="numpy")
    rgb = stack((16, 16, 3))
    psf = PSFS[0][2]
    with pytest.raises(ValueError, match="colours=True"):
        deconvolve_stack(rgb, psf, 2, axes="YXS", backend="numpy")
    result = deconvolve_stack(rgb, psf, 2, axes="YXS", backend="numpy", colours=True)
    np.testing.assert_array_equal(
        result[..., 1], gd.richardson_lucy(rgb[..., 1], psf, 2, backend="numpy")
    )


@pytest.mark.parametrize("name", ["out.tif", "out.ome.tif", "out.ome.zarr"])
def test_files_round_trip_axes_spacing_names_parameters(tmp_path, name):
    data = stack((2, 3, 4, 10, 12))  # T, C, Z, Y, X
    with create_stack(
        tmp_path / name,
        data.shape,
        "float32",
        "TCZYX",
        (0.4, 0.11, 0.12),
        ("DAPI", "GFP", "RFP"),
        {"iterations": 7},
    ) as out:
        for t in range(2):
            for c in range(3):
                out[t, c] = data[t, c]
    back = read_stack(tmp_path / name)
    expected_axes = "TZCYX" if name == "out.tif" else "TCZYX"
    assert back.axes == expected_axes
    order = ["TCZYX".index(a) for a in expected_axes]
    np.testing.assert_array_equal(np.asarray(back.data[...]), data.transpose(order))
    assert back.spacing == pytest.approx((0.4, 0.11, 0.12), rel=1e-6)
    assert back.parameters == {"iterations": 7}
    if name == "out.ome.tif":
        assert back.channel_names == ("DAPI", "GFP", "RFP")
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with create_stack(tmp_path / "x.ome.tif", (2, 8, 8), "float32", "CYX") as out:
            out[0] = 1.0
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_cli_imagej_hyperstack_two_psfs_matches_api(tmp_path):
    data = stack((2, 6, 2, 24, 20))  # T, Z, C, Y, X: an ImageJ hyperstack
    tifffile.imwrite(
        tmp_path / "in.tif",
        data,
        imagej=True,
        resolution=(1 / 0.1, 1 / 0.12),
        metadata={"axes": "TZCYX", "spacing": 0.3, "unit": "um"},
    )
    for i, psf in enumerate(PSFS):
        write_tiff(tmp_path / f"psf{i}.tif", psf.astype(np.float32))
    done = cli(
        *f"run {tmp_path}/in.tif --psf {tmp_path}/psf0.tif --psf {tmp_path}/psf1.tif "
        f"-n 5 --backend numpy -q -o {tmp_path}/out.tif".split()
    )
    assert done.returncode == 0, done.stderr
    out = read_stack(tmp_path / "out.tif")
    assert out.axes == "TZCYX" and out.data.shape == data.shape
    assert out.spacing == pytest.approx((0.3, 0.12, 0.1), rel=1e-6)
    assert out.parameters["iterations"] == 5 and len(out.parameters["psf"]) == 2
    # Provenance: the version, the command, the inputs and the backend actually used.
    made = out.parameters
    assert made["version"] == gd.__version__ and made["command"].startswith("gpu-deconv run ")
    assert made["backend"] == "numpy" and made["inputs"]["image"] == f"{tmp_path}/in.tif"
    for t in range(2):
        for c in range(2):
            psf = PSFS[c].astype(np.float32)
            expected = gd.richardson_lucy(data[t, :, c], psf, 5, backend="numpy")
            np.testing.assert_allclose(out.data[t, :, c], expected, rtol=1e-6)


def test_cli_ome_tiff_in_ome_tiff_out(tmp_path):
    data = stack((2, 5, 16, 16))  # C, Z, Y, X
    tifffile.imwrite(
        tmp_path / "in.ome.tif",
        data,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 0.065,
            "PhysicalSizeY": 0.065,
            "PhysicalSizeZ": 0.2,
            "Channel": {"Name": ["a", "b"]},
        },
    )
    write_tiff(tmp_path / "psf.tif", PSFS[0].astype(np.float32))
    done = cli(
        *f"run {tmp_path}/in.ome.tif --psf {tmp_path}/psf.tif -n 3 --backend numpy "
        f"-q -o {tmp_path}/out.ome.tif".split()
    )
    assert done.returncode == 0, done.stderr
    out = read_stack(tmp_path / "out.ome.tif")
    assert out.axes == "CZYX" and out.spacing == pytest.approx((0.2, 0.065, 0.065))
    assert out.channel_names == ("a", "b")
    np.testing.assert_allclose(
        out.data[1],
        gd.richardson_lucy(data[1], PSFS[0].astype(np.float32), 3, backend="numpy"),
        rtol=1e-6,
    )


def test_cli_refuses_rgb_unless_asked(tmp_path):
    rgb = (np.random.default_rng(1).random((16, 16, 3)) * 200).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    write_tiff(tmp_path / "psf.tif", PSFS[0][2].astype(np.float32))
    args = [
        "run",
        tmp_path / "rgb.tif",
        "--psf",
        tmp_path / "psf.tif",
        "-n",
        "2",
        "-q",
        "--backend",
        "numpy",
        "-o",
    ]
    refused = cli(*args, tmp_path / "out.tif")
    assert (
        refused.returncode == 2 and "RGB/RGBA" in refused.stderr and "--colours" in refused.stderr
    )
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.tif").exists()
    done = cli(*args, tmp_path / "out.tif", "--colours")
    assert done.returncode == 0, done.stderr
    out = read_stack(tmp_path / "out.tif")
    np.testing.assert_allclose(
        np.asarray(out.data)[..., 2],
        gd.richardson_lucy(
            rgb[..., 2].astype(np.float32), PSFS[0][2].astype(np.float32), 2, backend="numpy"
        ),
        rtol=1e-6,
    )


def test_streams_one_volume_at_a_time():
    data = stack((3, 2, 4, 12, 12))

    class Volumes:  # records every read: each must be one volume
        shape, reads = data.shape, []

        def __getitem__(self, key):
            self.reads.append(key)
            return data[key]

    source = Volumes()
    result = deconvolve_stack(source, PSFS[0][2:3], 2, axes="TCZYX", backend="numpy")
    assert len(source.reads) == 12  # each volume: its finiteness checked first, then computed
    assert all(isinstance(k[0], int) and isinstance(k[1], int) for k in source.reads)
    assert {(k[0], k[1]) for k in source.reads} == {(t, c) for t in range(3) for c in range(2)}
    np.testing.assert_array_equal(
        result[2, 1], gd.richardson_lucy(data[2, 1], PSFS[0][2:3], 2, backend="numpy")
    )


# ---- what a stack refuses, and integer outputs (issue 23, item 6) ----------------------------


@pytest.mark.parametrize("dtype", ["int16", "uint8"])
def test_integer_out_is_rounded_and_clipped_as_the_cli_does(backend, dtype):
    image = stack((3, 16, 16)) * np.float32(2.5)  # peaks beyond uint8's 255 after sharpening
    psf = PSFS[1][2]
    floats = deconvolve_stack(image, psf, 4, axes="TYX", backend=backend, tile_shape=None)
    out = np.zeros(image.shape, dtype)
    top = np.iinfo(dtype).max
    clipped = int(np.count_nonzero(np.rint(floats) > top))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returned = deconvolve_stack(
            image, psf, 4, axes="TYX", backend=backend, tile_shape=None, out=out
        )
    assert returned is out
    # Was: truncated toward zero by the cast (2.9 became 2), with no word of clipping.
    np.testing.assert_array_equal(out, np.clip(np.rint(floats), 0, top).astype(dtype))
    messages = [str(w.message) for w in caught]
    if clipped:
        assert messages == [
            f"{clipped} voxels were outside the {dtype} range of out and were clipped to it "
            "(write a float out to keep them)"
        ]
    else:
        assert messages == []
    assert (clipped > 0) == (dtype == "uint8")


def test_refusals_come_before_any_volume_is_written():
    image = stack((6, 12, 12))
    psf = PSFS[0][2]
    calls = []

    def run(data=image, **options):
        out = np.zeros(data.shape, np.float32)
        with pytest.raises((ValueError, TypeError)) as error:
            deconvolve_stack(
                data, psf, 2, axes="TYX", backend="numpy", tile_shape=None, out=out,
                callback=lambda done, total: calls.append(done), **options,
            )  # fmt: skip
        assert not out.any() and not calls  # nothing computed, nothing written
        return str(error.value)

    for name, value in [("snapshots", [1, 2]), ("return_info", True)]:
        # Was: NumPy's "float() argument must be ... not 'dict'" / "inhomogeneous shape".
        assert run(**{name: value}).startswith(f"{name}= is not available for stacks")
    for bad in (np.nan, np.inf):
        last = image.copy()
        last[5, 3, 4] = bad  # the last volume: was found after five were written
        assert run(last) == (
            "image contains NaN or infinite values (in the volume at T=5); nothing was computed"
        )
    for dtype in (bool, np.complex64):
        with pytest.raises(TypeError, match="out must hold integers or floats"):
            deconvolve_stack(
                image, psf, 2, axes="TYX", backend="numpy", out=np.zeros((6, 12, 12), dtype)
            )
    # A narrower float out: refused where a value would overflow to inf (was: inf written).
    with pytest.raises(ValueError, match=r"beyond the range of out's float16"):
        deconvolve_stack(
            image * np.float32(1e4), psf, 2, axes="TYX", backend="numpy",
            out=np.zeros(image.shape, np.float16),
        )  # fmt: skip


# ---- OME-Zarr and OME-TIFF voxel sizes in micrometres (issue 23, item 3) ---------------------


def ome_zarr(path, units, scale=(0.2, 0.1, 0.1), overall=None, nest=False, zarr_format=2):
    """An OME-Zarr C, Z, Y, X image: ``units`` per spatial axis (None: no unit recorded)."""
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.create_array("0", shape=(1, 3, 8, 8), chunks=(1, 3, 8, 8), dtype="f4")[:] = 1
    axes = [{"name": "c", "type": "channel"}]
    for name, unit in zip("zyx", units):
        axes.append({"name": name, "type": "space"} | ({} if unit is None else {"unit": unit}))
    level = {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, *scale]}]}
    multiscale: dict = {"version": "0.4", "axes": axes, "datasets": [level]}
    if overall is not None:
        multiscale["coordinateTransformations"] = [{"type": "scale", "scale": [1, *overall]}]
    if nest:  # NGFF 0.5
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [multiscale]
    return path


# (description, ome_zarr's arguments, spacing in micrometres; a str: the error's words)
ZARR_UNITS = [
    ("nanometer", dict(units=["nanometer"] * 3, scale=(200, 100, 100)), (0.2, 0.1, 0.1)),
    ("millimeter", dict(units=["millimeter"] * 3, scale=(2e-4, 1e-4, 1e-4)), (0.2, 0.1, 0.1)),
    ("micrometer", dict(units=["micrometer"] * 3), (0.2, 0.1, 0.1)),
    ("angstrom", dict(units=["angstrom"] * 3, scale=(2000, 1000, 1000)), (0.2, 0.1, 0.1)),
    ("no unit: um", dict(units=[None] * 3), (0.2, 0.1, 0.1)),
    ("mixed", dict(units=["micrometer", "nanometer", "nanometer"], scale=(0.2, 100, 100)),
     (0.2, 0.1, 0.1)),
    ("multiscale scale", dict(units=["micrometer"] * 3, overall=(2, 2, 2)), (0.4, 0.2, 0.2)),
    ("NGFF 0.5", dict(units=["nanometer"] * 3, scale=(200, 100, 100), nest=True,
                      zarr_format=3), (0.2, 0.1, 0.1)),
    ("furlong", dict(units=["furlong"] * 3),
     "unknown length unit 'furlong' (OME-Zarr axis 'z' unit)"),
    ("second", dict(units=["micrometer", "second", "micrometer"]),
     "unknown length unit 'second' (OME-Zarr axis 'y' unit)"),
]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, expected", [c[1:] for c in ZARR_UNITS], ids=[c[0] for c in ZARR_UNITS]
)
def test_ome_zarr_voxel_sizes_in_micrometres(tmp_path, capsys, kwargs, expected):
    from gpu_deconv.cli import main

    path = ome_zarr(tmp_path / "in.ome.zarr", **kwargs)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re.escape(f"{path}: {expected}")):
            read_stack(path)
        write_tiff(tmp_path / "psf.tif", PSFS[0].astype(np.float32))
        argv = f"run {path} --psf {tmp_path}/psf.tif -n 1 -q -o {tmp_path}/o.ome.tif".split()
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [f"gpu-deconv: error: {path}: {expected}; known units: {KNOWN}"]
        assert not (tmp_path / "o.ome.tif").exists()
        return
    assert read_stack(path).spacing == pytest.approx(expected, rel=1e-9)


def test_cli_nanometre_ome_zarr_in_micrometre_ome_tiff_out(tmp_path, capsys):
    from gpu_deconv.cli import main

    path = ome_zarr(tmp_path / "in.ome.zarr", ["nanometer"] * 3, (200, 65, 65))
    write_tiff(tmp_path / "psf.tif", PSFS[0].astype(np.float32))
    argv = f"run {path} --psf {tmp_path}/psf.tif -n 1 -q -o {tmp_path}/o.ome.tif".split()
    assert main(argv) == 0, capsys.readouterr().err
    out = read_stack(tmp_path / "o.ome.tif")
    assert out.axes.endswith("ZYX") and out.spacing == pytest.approx((0.2, 0.065, 0.065), rel=1e-6)
