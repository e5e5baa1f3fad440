"""`gpu-deconv calibrate`: measured cost models stored per device and used by method='auto'."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict

import numpy as np
import pytest
from conftest import require_backend

import gpu_deconv as gd
from gpu_deconv.backends._base import BlurSpec
from gpu_deconv.backends._calibration import FILE_NAME, device_key
from gpu_deconv.cli import main
from gpu_deconv.psf import gaussian_psf

pytestmark = pytest.mark.opencl
SHAPE = (16, 16, 16)  # the smallest 3D volume calibrate accepts, for seconds on PoCL


@pytest.fixture
def cache(tmp_path, monkeypatch):
    require_backend("opencl")
    monkeypatch.setenv("GPU_DECONV_CACHE_DIR", str(tmp_path))
    shared = gd.get_backend("opencl")
    built_in = shared.cost_model
    yield tmp_path
    shared.cost_model = built_in  # calibrate() set the cached backend's: later tests plan as before


def _fresh_backend():
    from gpu_deconv.backends.opencl_backend import OpenCLBackend

    return OpenCLBackend()  # reads the file now (get_backend's instance is cached)


def _write(cache, device, **constants):
    (cache / FILE_NAME).write_text(json.dumps({device_key(device): constants}))


def _costs(backend, **changes):
    return {**asdict(backend.cost_model), **changes}


def test_calibrate_stores_finite_positive_constants_that_backends_use(cache):
    other = {"other | device | 1": {"call_overhead": 1.0}}
    (cache / FILE_NAME).write_text(json.dumps(other))
    result = gd.calibrate(shape=SHAPE)
    stored = json.loads((cache / FILE_NAME).read_text())
    assert sorted(stored) == sorted([result["device"], *other])  # other devices' entries kept
    constants = stored[result["device"]]
    assert constants == result["constants"]
    assert set(constants) == {
        "spatial_per_mac",
        "separable_per_mac",
        "fft_per_nlogn",
        "fft_per_sample",
        "call_overhead",
        "dct_factor",
    }
    assert all(math.isfinite(v) and v > 0 for v in constants.values())
    assert [p.name for p in cache.iterdir()] == [FILE_NAME]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert (cache / FILE_NAME).stat().st_mode & 0o777 == 0o666 & ~umask
    assert asdict(_fresh_backend().cost_model) == constants
    assert asdict(gd.get_backend("opencl").cost_model) == constants  # the calibrated instance


def test_stored_constants_decide_the_method_and_the_transform(cache):
    backend = _fresh_backend()
    psf = gaussian_psf((9, 9, 9), sigma=[2.0, 1.0, 3.0])
    random_psf = np.random.default_rng(0).random((5, 5, 5))  # not separable, not symmetric
    shape = (32, 48, 48)
    _write(cache, backend.device, **_costs(backend, spatial_per_mac=1e-15, fft_per_nlogn=1.0))
    assert gd.choose_method(shape, random_psf, backend=_fresh_backend()) == "spatial"
    _write(cache, backend.device, **_costs(backend, spatial_per_mac=1.0, fft_per_nlogn=1e-15))
    assert gd.choose_method(shape, random_psf, backend=_fresh_backend()) == "fft"

    def transform(dct_factor):
        _write(cache, backend.device, **_costs(backend, dct_factor=dct_factor))
        spec = BlurSpec(psf, shape, "reflect", "fft", np.dtype(np.float32))
        return _fresh_backend().plan_blur(spec).transform

    assert transform(1e-3) == "dct2"
    assert transform(1e3) == "rfft"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        "entry",  # the device's entry replaced below
    ],
)
def test_a_corrupt_file_is_ignored_with_a_warning(cache, content):
    backend = _fresh_backend()
    default = backend.cost_model
    if content == "entry":
        _write(cache, backend.device, **_costs(backend, fft_per_nlogn=-1.0))
    else:
        (cache / FILE_NAME).write_text(content)
    with pytest.warns(RuntimeWarning, match="ignoring the calibration"):
        assert _fresh_backend().cost_model == default


@pytest.mark.parametrize(
    "constant", [float("nan"), float("inf"), 0.0, "fast", True, None], ids=repr
)
def test_a_constant_that_is_not_finite_and_positive_is_refused(cache, constant):
    backend = _fresh_backend()
    (cache / FILE_NAME).write_text(
        json.dumps({device_key(backend.device): _costs(backend, call_overhead=constant)})
    )
    with pytest.warns(RuntimeWarning, match="call_overhead"):
        assert _fresh_backend().cost_model == backend.cost_model


def test_a_file_of_another_device_keeps_the_defaults(cache):
    backend = _fresh_backend()
    (cache / FILE_NAME).write_text(json.dumps({"other | device | 1": _costs(backend)}))
    assert _fresh_backend().cost_model == backend.cost_model


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shape", "8,8,8"], "every axis >= 14"),
        (["--shape", "16"], "2D or 3D"),
        (["--shape", "a,b"], "comma-separated integers"),
        (["--device", "no-such-device"], "no-such-device"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(cache, capsys, args, message):
    assert main(["calibrate", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (cache / FILE_NAME).exists()


def test_cli_calibrates(cache, capsys):
    assert main(["calibrate", "--shape", "16,16,16"]) == 0
    out = capsys.readouterr().out
    assert str(cache / FILE_NAME) in out and "fft_per_nlogn" in out
    assert (cache / FILE_NAME).exists()
