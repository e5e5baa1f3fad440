"""Files a shared cluster can trust (issue 15, items 3-8): the CLI in-process, then real processes.

Bad input and unwritable outputs exit with 2 and one stderr line, before computing where that
can be known, and leave nothing behind; a run writes all its outputs or none; TIFF axes are
kept; outputs follow the umask; SIGTERM and Ctrl-C clean up and end with one line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import blob_image, make_psf, rel_rms

import gpu_deconv as gd
import gpu_deconv.io as gio
from gpu_deconv.cli import main
from gpu_deconv.io import read_tiff, write_tiff
from gpu_deconv.stack_io import create_stack

IMAGE = (blob_image((37, 44), seed=1) * 100).astype(np.float32)
PSF = make_psf((5, 7), "gaussian").astype(np.float32)


@pytest.fixture()
def files(tmp_path):
    paths = dict(tmp=tmp_path)
    for name, data in {
        "image": IMAGE,
        "psf": PSF,
        "huge64": IMAGE.astype(np.float64) * 1e37,  # beyond float32 after the cast
        "tiny64": IMAGE.astype(np.float64) * 1e-52,  # below float32's normal range
        "point": np.pad(np.ones((3, 3), np.float32), 6) * np.float32(3e38),
    }.items():
        paths[name] = tmp_path / f"{name}.tif"
        tifffile.imwrite(paths[name], data)
    paths["folder"] = tmp_path / "folder"
    paths["folder"].mkdir()
    (paths["folder"] / "keep.txt").write_text("not a zarr array")
    paths["notzarr"] = tmp_path / "plain.zarr"
    paths["notzarr"].mkdir()
    return paths


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines()


def leftovers(folder: Path, before: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - before


def tree(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (links not followed): kind, size, time, link target."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        status = os.lstat(path)
        target = os.readlink(path) if path.is_symlink() else None
        entries[str(path.relative_to(folder))] = (
            status.st_mode,
            status.st_size,
            status.st_mtime_ns,
            status.st_rdev,
            target,
        )
    return entries


def make_target(tmp: Path, name: str) -> Path:
    """Create the existing output ``name`` a case writes onto (skip where it cannot be made).

    Special files are made only here, in the test's own folder: never the machine's devices.
    """
    if name == "null":  # a character device like /dev/null (1, 3): needs root (CAP_MKNOD)
        path = tmp / "null"
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, AttributeError) as exc:
            pytest.skip(f"cannot make a character device here ({exc})")
        return path
    if name == "fifo":
        os.mkfifo(tmp / "fifo")
        return tmp / "fifo"
    if name == "sock":
        with socket.socket(socket.AF_UNIX) as server:  # the file stays once closed
            server.bind(str(tmp / "sock"))
        return tmp / "sock"
    if name == "link":
        (tmp / "other.tif").write_bytes(b"a regular file")
        (tmp / "link.tif").symlink_to("other.tif")
        return tmp / "link.tif"
    if name == "dangling":
        (tmp / "dangling.tif").symlink_to("missing.tif")
        return tmp / "dangling.tif"
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    if name in ("array", "arrayextra", "linkzarr"):
        path = tmp / ("array.zarr" if name != "arrayextra" else "extra.zarr")
        zarr.open_array(str(path), mode="w", shape=IMAGE.shape, dtype="f4", chunks=(20, 20))[:] = 1
        if name == "arrayextra":
            (path / "notes.txt").write_text("not part of the array")
        if name == "linkzarr":
            (tmp / "link.zarr").symlink_to("array.zarr")
            return tmp / "link.zarr"
        return path
    if name == "group":
        group = zarr.open_group(str(tmp / "group.zarr"), mode="w")
        for array in ("a", "b"):
            group.create_array(array, shape=(4,), dtype="f4")[:] = 1
        return tmp / "group.zarr"
    # an OME-Zarr image, as a stack run writes it: its level 0 holds the PSF
    path = tmp / ("image.ome.zarr" if name == "ome" else "labelled.ome.zarr")
    with create_stack(path, PSF.shape, "float32", "YX") as out:
        out[...] = PSF
    if name == "omelabels":
        zarr.open_group(str(path / "labels"), mode="w")
    return path


def deny_new_files(monkeypatch, tmp):
    def refuse(path, suffix, directory=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(path.parent))

    monkeypatch.setattr(gio, "_temporary", refuse)


def no_free_space(monkeypatch, tmp):
    usage = shutil.disk_usage(".")._replace(free=0)
    monkeypatch.setattr(gio.shutil, "disk_usage", lambda path: usage)


def read_only_store(monkeypatch, tmp):
    """The zarr store array.zarr does not let its files be removed (as root, chmod would not)."""
    real = gio._folder_writable
    monkeypatch.setattr(
        gio, "_folder_writable", lambda folder: folder.name != "array.zarr" and real(folder)
    )


# (description, arguments after "run", expected fragment of the one stderr line, set-up):
# {name}s not in the files fixture are made by make_target; set-up(monkeypatch, tmp_path).
CLI_BAD = [
    ("float64 beyond float32", "{huge64} --psf {psf} -o {tmp}/a.tif", "beyond the float32 range"),
    ("float64 below float32", "{tiny64} --psf {psf} -o {tmp}/a.tif", "below the float32 range"),
    ("result beyond float32", "{point} --psf {psf} -o {tmp}/a.tif", "result exceeds the float32"),
    ("huge init", "{image} --psf {psf} -o {tmp}/a.tif --init 1e300", "init reaches 1e+300"),
    ("tiny init", "{image} --psf {psf} -o {tmp}/a.tif --init 1e-30", "init reaches only 1e-30"),
    (
        "existing directory, --overwrite",
        "{image} --psf {psf} -o {folder} --overwrite",
        "folder is a directory; give an output file name",
    ),
    (
        "zarr output over a plain directory",
        "{image} --psf {psf} -o {notzarr} --overwrite",
        "plain.zarr exists and is not a zarr array; not replacing it",
    ),
    (
        "output is the input",
        "{image} --psf {psf} -o {image} --overwrite",
        "image.tif is the input image; write the result to another file",
    ),
    (
        "output is the PSF",
        "{image} --psf {psf} -o {psf} --overwrite",
        "psf.tif is the input psf",
    ),
    (
        "a snapshot is the input",
        "{tmp}/o_iter2.tif --psf {psf} -o {tmp}/o.tif --snapshots 2 --overwrite",
        "o_iter2.tif is the input image",
    ),
    ("directory as input", "{folder} --psf {psf} -o {tmp}/a.tif", "is a directory, not a TIFF"),
    ("directory as PSF", "{image} --psf {folder} -o {tmp}/a.tif", "is a directory, not a TIFF"),
    (
        "max memory of one byte",
        "{image} --psf {psf} -o {tmp}/a.tif --max-memory 1 --tile-shape none",
        "over --max-memory 1 (1 byte; --max-memory is in bytes)",
    ),
    (
        "unwritable directory",
        "{image} --psf {psf} -o {tmp}/a.tif",
        "cannot write to the output directory",
        deny_new_files,
    ),
    ("full disk", "{image} --psf {psf} -o {tmp}/a.tif", "not enough free space", no_free_space),
    # Only regular files and zarr arrays (and OME-Zarr images) are ever replaced (issue 23).
    *[
        (
            f"{kind}{', --overwrite' if flag else ''}",
            f"{{image}} --psf {{psf}} -o {{{name}}}{flag}",
            f"{name} is {kind}, not a regular file; not replacing it: --overwrite replaces only "
            "regular files, zarr arrays and OME-Zarr images",
        )
        for name, kind in [
            ("fifo", "a named pipe (FIFO)"),
            ("null", "a character device"),
            ("sock", "a socket"),
        ]
        for flag in (" --overwrite", "")
    ],
    (
        "--info onto a FIFO",
        "{image} --psf {psf} -o {tmp}/a.tif --info {fifo} --overwrite",
        "fifo is a named pipe (FIFO), not a regular file; not replacing it",
    ),
    (
        "a snapshot onto a character device",
        "{image} --psf {psf} -o {tmp}/null -n 2 --snapshots 1 --overwrite",
        "null_iter1 is a character device, not a regular file",
        lambda monkeypatch, tmp: make_target(tmp, "null").rename(tmp / "null_iter1"),
    ),
    (
        "symbolic link to a file, --overwrite",
        "{image} --psf {psf} -o {link} --overwrite",
        "link.tif is a symbolic link (to other.tif); not replacing it nor what it points to: "
        "--overwrite replaces only regular files, zarr arrays and OME-Zarr images (name the "
        "target itself to replace that)",
    ),
    (
        "dangling symbolic link",
        "{image} --psf {psf} -o {dangling}",
        "dangling.tif is a symbolic link (to missing.tif); not replacing it",
    ),
    (
        "zarr group, --overwrite",
        "{image} --psf {psf} -o {group} --overwrite",
        "group.zarr is a zarr group, not a zarr array; not replacing it: --overwrite replaces",
    ),
    (
        "zarr group",
        "{image} --psf {psf} -o {group}",
        "group.zarr is a zarr group, not a zarr array; not replacing it",
    ),
    (
        "OME-Zarr image with labels, --overwrite",
        "{image} --psf {psf} -o {omelabels} --overwrite",
        "labelled.ome.zarr is an OME-Zarr image holding more than its levels (labels); not "
        "replacing it",
    ),
    (
        "zarr array holding another file, --overwrite",
        "{image} --psf {psf} -o {arrayextra} --overwrite",
        "extra.zarr holds more than a zarr array (notes.txt); not replacing it",
    ),
    (
        "symbolic link to a zarr array, --overwrite",
        "{image} --psf {psf} -o {linkzarr} --overwrite",
        "link.zarr is a symbolic link (to array.zarr); not replacing it nor what it points to",
    ),
    (
        "read-only zarr array, --overwrite",
        "{image} --psf {psf} -o {array} --overwrite",
        "cannot replace {tmp}/array.zarr: it is not writable, so the files in it could not be "
        "removed",
        read_only_store,
    ),
    (
        "output store holds the input PSF",
        "{image} --psf {ome}/0 -o {ome} --overwrite",
        "image.ome.zarr holds the input psf 1",
    ),
    (
        "argparse: bad int",
        "{image} --psf {psf} -o {tmp}/a.tif -n abc",
        "expected an integer or 'auto'",
    ),
    ("argparse: no PSF", "{image} -o {tmp}/a.tif", "the following arguments are required: --psf"),
]


@pytest.mark.parametrize(
    "args, fragment, setup",
    [pytest.param(c[1], c[2], c[3] if len(c) > 3 else None, id=c[0]) for c in CLI_BAD],
)
def test_cli_bad_input_exits_2_with_one_line(
    backend, files, capsys, monkeypatch, args, fragment, setup
):
    if "o_iter2" in args:
        (files["tmp"] / "o_iter2.tif").write_bytes(files["image"].read_bytes())
    for name in set(re.findall(r"{(\w+)}", args)) - set(files):
        files[name] = make_target(files["tmp"], name)
    if setup is not None:
        setup(monkeypatch, files["tmp"])
    inputs = {p: p.read_bytes() for p in files["tmp"].glob("*.tif") if p.is_file()}
    before = {p.name for p in files["tmp"].iterdir()}
    everything = tree(files["tmp"])
    code, lines = run_cli(capsys, "run", *args.format(**files).split(), "-q", "--backend", backend)
    assert code == 2 and len(lines) == 1 and fragment.format(**files) in lines[0], lines
    assert lines[0].startswith("gpu-deconv")
    assert not leftovers(files["tmp"], before)  # no output, no temporary file
    assert all(p.read_bytes() == data for p, data in inputs.items())  # inputs untouched
    assert [p.name for p in files["folder"].iterdir()] == ["keep.txt"]
    assert tree(files["tmp"]) == everything  # nothing changed: no device, link, store, ...


def test_argparse_errors_are_one_line(capsys):
    for argv in ([], ["run"], ["nosuchcommand"], ["psf", "gaussian", "--shape", "x"]):
        code, lines = run_cli(capsys, *argv)
        assert code == 2 and len(lines) == 1 and "(see gpu-deconv" in lines[0], (argv, lines)


def test_version_and_run_help_defaults(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gpu-deconv {gd.__version__}"
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    entries = re.split(r"\n(?=  -)", text[text.index("options:") :])  # one per option
    documented = {
        option: " ".join(entry.split())
        for entry in entries
        for option in re.findall(r"--[a-z-]+", entry.strip().splitlines()[0].split("  ")[0])
    }
    with_defaults = ["--iterations", "--backend", "--method", "--boundary", "--init", "--eps"]
    with_defaults += ["--dtype", "--output-dtype", "--snapshots", "--device", "--tile-shape"]
    with_defaults += ["--overlap", "--max-memory", "--scheduler"]
    for option in with_defaults:
        assert "(default: " in documented[option], documented[option]


def test_repeated_snapshots_write_every_output(backend, files, capsys):
    out = files["tmp"] / "o.tif"
    code, lines = run_cli(
        capsys,
        *f"run {files['image']} --psf {files['psf']} -n 3 -o {out} --snapshots 0,3,3,1 -q".split(),
        "--backend",
        backend,
    )
    assert code == 0, lines
    expected = gd.richardson_lucy(IMAGE, PSF, 3, backend=backend, snapshots=[0, 1, 3])
    for k, name in [(0, "o_iter0.tif"), (1, "o_iter1.tif"), (3, "o_iter3.tif"), (3, "o.tif")]:
        np.testing.assert_allclose(read_tiff(files["tmp"] / name).data, expected[k], rtol=1e-6)


def test_disk_full_mid_set_leaves_no_output(files, capsys, monkeypatch):
    real = tifffile.imwrite
    calls = []

    def fill_up(path, data, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the disk fills while the second output is written
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", fill_up)
    out = files["tmp"] / "o.tif"
    before = {p.name for p in files["tmp"].iterdir()}
    code, lines = run_cli(
        capsys,
        *f"run {files['image']} --psf {files['psf']} -n 2 -o {out} --snapshots 1 -q".split(),
    )
    assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert len(calls) == 2 and not leftovers(files["tmp"], before)


def test_replacing_a_set_keeps_the_old_set_on_failure(files, capsys, monkeypatch):
    out = files["tmp"] / "o.tif"
    args = f"run {files['image']} --psf {files['psf']} -n 2 -o {out} --snapshots 1 -q".split()
    assert run_cli(capsys, *args)[0] == 0
    old = {p: p.read_bytes() for p in (out, files["tmp"] / "o_iter1.tif")}
    real = tifffile.imwrite

    def second_fails(path, data, **kwargs):
        if "o_iter1" in str(path):
            raise KeyboardInterrupt  # Ctrl-C while the second output is written
        return real(path, data, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", second_fails)
    code, lines = run_cli(capsys, *args, "-n", "4", "--overwrite")
    assert code == 130 and len(lines) == 1 and "interrupted" in lines[0]
    assert all(p.read_bytes() == data for p, data in old.items())
    assert not list(files["tmp"].glob(".*"))


def _write_tiff(path):
    write_tiff(path, IMAGE, overwrite=True)


def _write_text(path):
    gio.write_text(path, "{}", overwrite=True)


def _create_stack(path):
    with create_stack(path, IMAGE.shape, "float32", "YX", overwrite=True) as out:
        out[...] = IMAGE


def _write_zarr(path):
    da = pytest.importorskip("dask.array")
    gio.write_zarr(path, da.from_array(IMAGE), overwrite=True)


@pytest.mark.parametrize("writer", [_write_tiff, _write_text, _create_stack, _write_zarr])
@pytest.mark.parametrize(
    "name",
    ["fifo", "null", "sock", "link", "dangling", "group", "omelabels", "arrayextra", "linkzarr"],
)
def test_api_writers_refuse_what_overwrite_never_replaces(tmp_path, writer, name):
    target = make_target(tmp_path, name)
    before = tree(tmp_path)
    with pytest.raises(FileExistsError, match="; not replacing it"):
        writer(target)
    assert tree(tmp_path) == before


def test_a_target_that_becomes_a_fifo_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    target = tmp_path / "x.tif"
    target.write_bytes(b"old")
    real = tifffile.imwrite

    def swap(path, data, **kwargs):  # while the result is written, x.tif becomes a FIFO
        real(path, data, **kwargs)
        target.unlink()
        os.mkfifo(target)

    monkeypatch.setattr(tifffile, "imwrite", swap)
    with pytest.raises(FileExistsError, match="x.tif is a named pipe"):
        write_tiff(target, IMAGE, overwrite=True)
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


def test_overwrite_replaces_a_zarr_array_and_an_ome_zarr_image(files, capsys):
    from gpu_deconv.stack_io import read_stack

    tmp = files["tmp"]
    array, image = make_target(tmp, "array"), make_target(tmp, "ome")
    run = ["run", files["image"], "--psf", files["psf"], "-n", 2, "-q", "--backend", "numpy"]
    expected = gd.richardson_lucy(IMAGE, PSF, 2, backend="numpy")
    for out in (array, image, image):  # the second run replaces the first run's image
        code, lines = run_cli(capsys, *run, "-o", out, "--overwrite")
        assert code == 0, lines
    for written in (gio.read_image(array).data, np.asarray(read_stack(image).data[...])):
        assert np.abs(written - expected).max() <= 1e-3 * expected.max()
    assert not list(tmp.glob(".*"))  # no hidden .NAME.XXXX.partial or .old


def test_a_store_that_cannot_be_removed_after_all_is_reported(files, capsys, monkeypatch):
    """A folder turns read-only between the check and the removal: the truth, not hidden."""
    tmp = files["tmp"]
    array = make_target(tmp, "array")
    real = shutil.rmtree

    def fail_on_the_old_store(path, *args, **kwargs):
        if str(path).endswith(".old"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(gio.shutil, "rmtree", fail_on_the_old_store)
    run = ["run", files["image"], "--psf", files["psf"], "-n", 2, "-q", "--backend", "numpy"]
    code, lines = run_cli(capsys, *run, "-o", array, "--overwrite")
    left = list(tmp.glob("array.zarr.old-*"))
    assert code == 2 and len(lines) == 1 and len(left) == 1, lines
    assert lines[0] == (
        f"gpu-deconv: error: wrote {array}, but could not remove all of the store it replaced "
        f"(Permission denied); what is left of it is in {left[0]}: remove it"
    )
    assert not list(tmp.glob(".*"))  # nothing hidden
    assert gio.read_image(array).data.max() != 1  # the new result is in place
    assert gio.read_image(left[0]).data.max() == 1  # the old array, named


def test_a_failed_swap_puts_the_old_store_back(tmp_path, monkeypatch):
    da = pytest.importorskip("dask.array")
    array = make_target(tmp_path, "array")
    real = Path.rename

    def fail_for_the_new_store(self, target):
        if self.name.endswith(".partial"):
            raise OSError(errno.EIO, "Input/output error", str(self))
        return real(self, target)

    monkeypatch.setattr(Path, "rename", fail_for_the_new_store)
    with pytest.raises(OSError, match="Input/output error"):
        gio.write_zarr(array, da.zeros(IMAGE.shape, chunks=20), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["array.zarr"]
    assert (gio.read_image(array).data == 1).all()


def test_tiff_axes_are_kept(backend, tmp_path, capsys):
    """A (1, 9, 9) PSF for a stack, a 1x1x1 PSF, a (1, N) image: as the API takes them."""
    stack = (blob_image((6, 20, 20), seed=3) * 100).astype(np.float32)
    line = (np.arange(30, dtype=np.float32) + 1)[None, :]
    cases = [
        (stack, make_psf((1, 9, 9), "gaussian")),
        (stack, np.ones((1, 1, 1))),
        (line, make_psf((1, 5), "gaussian")),
    ]
    for i, (image, psf) in enumerate(cases):
        tifffile.imwrite(tmp_path / f"i{i}.tif", image)
        tifffile.imwrite(tmp_path / f"p{i}.tif", psf.astype(np.float32))
        out = tmp_path / f"o{i}.tif"
        run = ["run", tmp_path / f"i{i}.tif", "--psf", tmp_path / f"p{i}.tif", "-n", 3]
        code, lines = run_cli(capsys, *run, "-o", out, "-q", "--backend", backend)
        assert code == 0, lines
        written = read_tiff(out).data
        expected = gd.richardson_lucy(image, psf.astype(np.float32), 3, backend=backend)
        assert written.shape == image.shape
        np.testing.assert_allclose(written, expected, rtol=1e-6)


def test_small_values_through_the_cli(backend, files, capsys):
    small = files["tmp"] / "small.tif"
    tifffile.imwrite(small, IMAGE * np.float32(1e-15))
    out = files["tmp"] / "o.tif"
    code, lines = run_cli(
        capsys, "run", small, "--psf", files["psf"], "-n", 10, "-o", out, "-q", "--backend", backend
    )
    assert code == 0, lines
    expected = gd.richardson_lucy(IMAGE, PSF, 10, backend=backend)
    assert rel_rms(read_tiff(out).data / 1e-15, expected) <= 1e-6


def test_zarr_psf(files, capsys):
    zarr = pytest.importorskip("zarr")
    store = files["tmp"] / "psf.zarr"
    zarr.open_array(str(store), mode="w", shape=PSF.shape, dtype=PSF.dtype)[:] = PSF
    outputs = []
    for name, psf in (("a.tif", store), ("b.tif", files["psf"])):
        outputs.append(files["tmp"] / name)
        code, lines = run_cli(
            capsys, "run", files["image"], "--psf", psf, "-n", 3, "-o", outputs[-1], "-q"
        )
        assert code == 0, lines
    np.testing.assert_array_equal(read_tiff(outputs[0]).data, read_tiff(outputs[1]).data)


@pytest.mark.parametrize(
    "shape", [(1, 9, 9), (1, 30), (1, 1, 1), (30,), (4, 9, 9), (9, 9), (1, 1, 4, 9, 9)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_tiff_round_trip_keeps_the_shape(tmp_path, shape, dtype):
    data = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    path = write_tiff(tmp_path / "x.tif", data.reshape(shape[-3:]) if len(shape) > 3 else data)
    back = read_tiff(path)
    assert back.data.shape == shape[-3:] if len(shape) > 3 else shape
    if len(shape) > 3:  # a hyperstack with singleton time and channel axes reads as Z, Y, X
        tifffile.imwrite(path, data, photometric="minisblack")
        assert read_tiff(path).data.shape == shape[-3:]
        assert gio.open_lazy(path).shape == shape[-3:]
    else:
        assert gio.open_lazy(path).shape == shape


def test_imagej_single_channel_hyperstack_reads_as_volume(tmp_path):
    data = np.ones((5, 1, 9, 9), np.float32)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    assert read_tiff(tmp_path / "h.tif").data.shape == (5, 9, 9)


# ---- real processes: file modes and signals -------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys, time
    import tifffile
    import gpu_deconv.cli as cli

    os.umask(int(sys.argv[1], 8))
    real = tifffile.imwrite
    if os.environ.get("HOLD_IN_WRITE"):
        def hold(path, data, **kwargs):  # the temporary file exists, half-written
            real(path, data, **kwargs)
            print("writing", flush=True)
            time.sleep(60)
        tifffile.imwrite = hold
    sys.exit(cli.main(sys.argv[2:]))
    """
)


def child(umask: str, *args, hold: bool = False, **kwargs):
    env = dict(os.environ, HOLD_IN_WRITE="1" if hold else "")
    command = [sys.executable, "-c", CHILD, umask, *map(str, args)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs
    )


def test_outputs_follow_the_umask(files):
    tmp = files["tmp"]
    run = ["run", files["image"], "--psf", files["psf"], "-n", 2, "-q", "--backend", "numpy"]
    stale = tmp / "old.tif"
    stale.write_bytes(b"old")
    os.chmod(stale, 0o600)
    for umask, mode, extra in [
        ("022", 0o644, ["-o", tmp / "new.tif", "--snapshots", 1]),
        ("022", 0o644, ["-o", stale, "--overwrite"]),  # replacing a 0600 file
        ("077", 0o600, ["-o", tmp / "private.tif"]),
    ]:
        process = child(umask, *run, *extra)
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        written = Path(extra[1])
        outputs = [written] + ([tmp / "new_iter1.tif"] if "--snapshots" in extra else [])
        for path in outputs:
            assert path.stat().st_mode & 0o777 == mode, (path, oct(path.stat().st_mode))
    zarr_out = tmp / "out.zarr"
    process = child("022", *run, "-o", zarr_out)
    assert process.communicate(timeout=300) and process.returncode == 0
    assert zarr_out.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    "sig, code, message",
    [
        (signal.SIGTERM, 143, "gpu-deconv: terminated (SIGTERM); unfinished outputs removed"),
        (signal.SIGINT, 130, "gpu-deconv: interrupted (Ctrl-C); unfinished outputs removed"),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_signal_during_the_write_cleans_up(files, sig, code, message):
    tmp = files["tmp"]
    before = {p.name for p in tmp.iterdir()}
    process = child(
        "022",
        *["run", files["image"], "--psf", files["psf"], "-n", 2, "-q", "--backend", "numpy"],
        *["-o", tmp / "o.tif", "--snapshots", 1],
        hold=True,
    )
    assert process.stdout.readline().strip() == "writing"  # inside the first TIFF write
    assert [name for name in leftovers(tmp, before) if name.endswith(".tmp")]
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code
    assert err.strip().splitlines() == [message]
    assert not leftovers(tmp, before)  # no hidden .o.tif.XXXX.tmp, no partial set


def as_a_user(argv) -> tuple[int, list[str]]:
    """Run ``main(argv)`` in a forked child as an ordinary user (``nobody`` when we are root).

    Forked, not a new interpreter: the interpreter may sit where ``nobody`` cannot read it.
    The child imports nothing new where it can (run the command here first) and gives up
    after 4 minutes.
    """
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ frowns on forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report the code and stderr through the pipe, never return
        try:
            os.close(read)
            signal.alarm(240)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main([str(a) for a in argv])
            os.write(write, f"{code}\n{err.getvalue()}".encode())
        except BaseException as exc:
            os.write(write, f"99\n{exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    code, _, err = report.partition("\n")
    return int(code or -1), err.strip().splitlines()


def test_read_only_store_and_others_files_as_a_user(files, capsys):
    """What an ordinary user sees (root ignores permissions): refused before computing."""
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    root = os.geteuid() == 0
    # A shared folder like /tmp (sticky, anyone writes); tmp_path's parents are root's only.
    shared = Path(tempfile.mkdtemp(prefix="gpu-deconv-test-"))
    try:
        os.chmod(shared, 0o1777)
        for name in ("image", "psf"):
            shutil.copy(files[name], shared / f"{name}.tif")
            os.chmod(shared / f"{name}.tif", 0o644)
        mine = shared / "mine"
        mine.mkdir()
        store = mine / "out.zarr"
        zarr.open_array(str(store), mode="w", shape=IMAGE.shape, dtype="f4", chunks=(20, 20))[:] = 1
        run = ["run", shared / "image.tif", "--psf", shared / "psf.tif", "-n", 2, "-q"]
        run += ["--backend", "numpy", "--scheduler", "sync", "--overwrite"]  # no threads
        assert run_cli(capsys, *run, "-o", shared / "first.zarr")[0] == 0  # imports it all
        shutil.rmtree(shared / "first.zarr")
        if root:
            for path in [mine, *mine.rglob("*")]:
                os.chown(path, 65534, 65534)
        chunks = store / "c"  # zarr v3's chunk folder; v2 has none: the array's own folder
        read_only = chunks if chunks.is_dir() else store
        os.chmod(read_only, 0o555)
        before = tree(shared)

        code, lines = as_a_user([*run, "-o", store])
        assert code == 2, lines
        assert lines == [
            f"gpu-deconv: error: cannot replace {store}: "
            + ("it" if read_only == store else str(read_only))
            + " is not writable, so the files in it could not be removed"
        ]
        assert tree(shared) == before  # nothing written, nothing hidden left

        os.chmod(read_only, 0o755)
        code, lines = as_a_user([*run, "-o", store])
        assert code == 0, lines
        assert gio.read_image(store).data.max() != 1  # replaced
        assert sorted(p.name for p in mine.iterdir()) == ["out.zarr"]  # nothing hidden left

        if root:  # another user's file in the shared folder: rename would fail after the work
            theirs = shared / "theirs.tif"
            theirs.write_bytes(b"root's")
            code, lines = as_a_user([*run, "-o", theirs])
            assert code == 2, lines
            assert lines == [
                f"gpu-deconv: error: cannot replace {theirs}: another user owns it in the "
                f"shared folder {shared}"
            ]
            assert theirs.read_bytes() == b"root's"
    finally:
        for path in [shared, *shared.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                os.chmod(path, 0o755)
        shutil.rmtree(shared)


# ---- damaged inputs: one line naming the file and what is wrong, exit 2 (issue 23, item 8) ----

VOLUME = (blob_image((4, 24, 24), seed=2) * 100 + 1).astype(np.float32)
PSF3 = make_psf((3, 5, 5), "gaussian").astype(np.float32)


def _cut(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _chunk_files(store: Path) -> list[Path]:
    """A zarr store's chunk files in order (v2 ``1.0.0``, v3 ``c/1/0/0``, OME-Zarr ``0/...``)."""
    metadata = {".zarray", ".zattrs", ".zgroup", "zarr.json"}
    return sorted(p for p in store.rglob("*") if p.is_file() and p.name not in metadata)


def _everything(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def zlib_strip_overwritten(tmp: Path) -> Path:
    path = tmp / "zlib.tif"
    tifffile.imwrite(path, IMAGE, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        start, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[start + 2 : start + count] = bytes(b ^ 0x5A for b in data[start + 2 : start + count])
    path.write_bytes(bytes(data))
    return path


def imagej_stack_cut_short(tmp: Path) -> Path:
    tifffile.imwrite(tmp / "cut.tif", VOLUME, imagej=True, metadata={"axes": "ZYX"})
    return _cut(tmp / "cut.tif")  # was read as its first plane: a 2D image


def first_page_beyond_the_end(tmp: Path) -> Path:
    tifffile.imwrite(tmp / "ifd.tif", IMAGE)
    data = bytearray((tmp / "ifd.tif").read_bytes())
    data[4:8] = (10**6).to_bytes(4, "little")  # the offset of the first page
    (tmp / "ifd.tif").write_bytes(bytes(data))
    return tmp / "ifd.tif"


def zlib_stack_cut_short(tmp: Path) -> Path:
    tifffile.imwrite(tmp / "stack.tif", VOLUME, compression="zlib", photometric="minisblack")
    return _cut(tmp / "stack.tif", 0.6)


def zarr_store(tmp: Path, name: str = "v.zarr", data=VOLUME, zarr_format: int = 2) -> Path:
    zarr = pytest.importorskip("zarr")
    chunks = (1, *data.shape[1:])
    array = zarr.open_array(
        str(tmp / name), mode="w", shape=data.shape, chunks=chunks, dtype="f4",
        zarr_format=zarr_format,
    )  # fmt: skip
    array[:] = data
    return tmp / name


def zarr_chunk_cut_short(tmp: Path) -> Path:
    store = zarr_store(tmp)
    _cut(_chunk_files(store)[1])
    return store


def zarr_chunk_missing(tmp: Path, zarr_format: int = 2, data=VOLUME, name="v.zarr") -> Path:
    store = zarr_store(tmp, name, data, zarr_format)
    _chunk_files(store)[2].unlink()
    return store


def ome_zarr_image(tmp: Path) -> Path:
    from gpu_deconv.stack_io import create_stack

    pytest.importorskip("zarr")
    path = tmp / "in.ome.zarr"
    with create_stack(path, (2, *VOLUME.shape), "float32", "CZYX", (0.3, 0.1, 0.1)) as out:
        out[0], out[1] = VOLUME, VOLUME[::-1]
    return path


# (description, builder of the damaged file, arguments, fragment of the one line after its name)
DAMAGED = [
    (
        "zlib strip overwritten",  # was a 34-line traceback, exit 1
        zlib_strip_overwritten,
        "run {bad} --psf {psf2}",
        " is not a readable TIFF file (",
    ),
    (
        "ImageJ stack cut short",  # was tifffile's log lines, then a run on the first plane
        imagej_stack_cut_short,
        "run {bad} --psf {psf2}",
        " is not a readable TIFF file (damaged or truncated: tifffile reports ",
    ),
    (
        "first page offset beyond the end",  # was an IndexError traceback
        first_page_beyond_the_end,
        "run {bad} --psf {psf2}",
        " is not a readable TIFF file (damaged or truncated: tifffile reports invalid offset",
    ),
    (
        "zlib stack cut short, read by dask",
        zlib_stack_cut_short,
        "run {bad} --psf {psf3} --scheduler sync",
        " is not a readable TIFF file (",
    ),
    (
        "zarr chunk cut short",  # was an 87-line traceback
        zarr_chunk_cut_short,
        "run {bad} --psf {psf3}",
        " is a damaged zarr array: voxels [1:2, 0:24, 0:24] do not read (",
    ),
    (
        "zarr chunk missing",  # was deconvolved as zeros without a word
        zarr_chunk_missing,
        "run {bad} --psf {psf3}",
        ": 1 of the zarr array's 4 chunks are missing (an incomplete copy or write?); if the "
        "store leaves out chunks that hold only the fill value, pass --allow-missing-chunks",
    ),
    (
        "zarr v3 chunk missing",
        lambda tmp: zarr_chunk_missing(tmp, zarr_format=3),
        "run {bad} --psf {psf3} -o {tmp}/out.zarr",
        ": 1 of the zarr array's 4 chunks are missing",
    ),
    (
        "zarr PSF chunk missing",
        lambda tmp: zarr_chunk_missing(tmp, data=PSF3, name="psf.zarr"),
        "run {volume} --psf {bad}",
        ": 1 of the zarr array's 3 chunks are missing",
    ),
    (
        "zarr mask chunk missing",
        lambda tmp: zarr_chunk_missing(tmp, data=np.ones_like(VOLUME), name="mask.zarr"),
        "run {volume} --psf {psf3} --mask {bad}",
        ": 1 of the zarr array's 4 chunks are missing",
    ),
    (
        "OME-Zarr chunk cut short",  # found when its volume is read, mid-run
        lambda tmp: (_cut(_chunk_files(ome_zarr_image(tmp))[1]), tmp / "in.ome.zarr")[1],
        "run {bad} --psf {psf3}",
        " is a damaged zarr array: voxels [1, :, :, :] do not read (",
    ),
    (
        "OME-Zarr chunk missing",
        lambda tmp: (_chunk_files(ome_zarr_image(tmp))[1].unlink(), tmp / "in.ome.zarr")[1],
        "run {bad} --psf {psf3}",
        ": 1 of the zarr array's 2 chunks are missing",
    ),
    (
        "tikhonov: zarr chunk cut short",
        zarr_chunk_cut_short,
        "tikhonov {bad} --psf {psf3} --regularization 0.01",
        " is a damaged zarr array: voxels [1:2, 0:24, 0:24] do not read (",
    ),
    (
        "tikhonov: zarr chunk missing",
        zarr_chunk_missing,
        "tikhonov {bad} --psf {psf3} --regularization 0.01",
        ": 1 of the zarr array's 4 chunks are missing",
    ),
]


@pytest.mark.parametrize("build, args, fragment", [pytest.param(*c[1:], id=c[0]) for c in DAMAGED])
def test_damaged_input_exits_2_with_one_line(tmp_path, capsys, caplog, build, args, fragment):
    caplog.set_level(logging.DEBUG, logger="tifffile")
    paths = {"tmp": tmp_path, "bad": build(tmp_path)}
    for name, data in {"psf2": PSF, "psf3": PSF3, "volume": VOLUME}.items():
        paths[name] = tmp_path / f"{name}.tif"
        tifffile.imwrite(paths[name], data, photometric="minisblack")
    argv = args.format(**paths).split()
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "out.tif")]
    before = _everything(tmp_path)
    quiet = ["-q"] if argv[0] == "run" else []
    code, lines = run_cli(capsys, *argv, *quiet, "--backend", "numpy")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"gpu-deconv: error: {paths['bad']}{fragment}"), lines
    assert not [r for r in caplog.records if r.name == "tifffile" and r.levelno >= 30]
    assert _everything(tmp_path) == before  # no output, no temporary left


def test_missing_zarr_chunks_read_as_the_fill_value_when_allowed(tmp_path, capsys):
    from gpu_deconv.stack_io import read_stack

    store = zarr_chunk_missing(tmp_path)
    zeroed = VOLUME.copy()
    zeroed[2] = 0
    np.testing.assert_array_equal(gio.read_image(store, allow_missing_chunks=True).data, zeroed)
    np.testing.assert_array_equal(gio.open_lazy(store, allow_missing_chunks=True), zeroed)
    tifffile.imwrite(tmp_path / "psf.tif", PSF3, photometric="minisblack")
    for out in ("o.tif", "o.zarr"):
        argv = f"run {store} --psf {tmp_path}/psf.tif -n 2 -q -o {tmp_path}/{out}".split()
        code, lines = run_cli(capsys, *argv, "--allow-missing-chunks")
        assert code == 0, lines
    assert gio.read_image(tmp_path / "o.tif").data.shape == VOLUME.shape
    ome = ome_zarr_image(tmp_path)
    _chunk_files(ome)[0].unlink()
    with pytest.raises(ValueError, match="1 of the zarr array's 2 chunks are missing"):
        read_stack(ome)
    stack = read_stack(ome, allow_missing_chunks=True)
    np.testing.assert_array_equal(stack.data[0], 0)
    np.testing.assert_array_equal(stack.data[1], VOLUME[::-1])
