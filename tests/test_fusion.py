"""OpenCL's fused loop (crop + ratio, crop + update, crop + the accelerated updates) equals the
separate kernels, bit for bit."""

from __future__ import annotations

import collections
from dataclasses import replace

import numpy as np
import pytest
from conftest import blob_image, make_psf

import gpu_deconv as gd
from gpu_deconv.backends._base import BlurSpec

pytestmark = pytest.mark.opencl


def _run(transform, boundary, acceleration, background, weights):
    from gpu_deconv.backends.opencl_backend import OpenCLBackend

    backend = OpenCLBackend()
    if transform != "rfft":  # a DCT-loving cost model, as a GPU's may be
        backend.cost_model = replace(backend.cost_model, dct_factor=1e-3)
    launches: collections.Counter = collections.Counter()
    launch = backend.launch

    def counting(name, *args):
        launches[name] += 1
        return launch(name, *args)

    backend.launch = counting
    reduce = backend._reduce

    def counting_reduce(name, *args, **kwargs):  # SHB's update is a reduction
        launches[name] += 1
        return reduce(name, *args, **kwargs)

    backend._reduce = counting_reduce
    image = blob_image((10, 18, 20), seed=4).astype(np.float32)
    psf = make_psf((3, 5, 5), "gaussian" if transform != "rfft" else "random")
    spec = BlurSpec(psf, image.shape, boundary, "fft", np.dtype(np.float32))
    assert backend.plan_blur(spec).transform == transform
    mask = None
    if weights:  # a mask makes the update weighted (and TV's clamped one has weights too)
        mask = np.ones(image.shape, bool)
        mask[:, :3] = False
    result = gd.richardson_lucy(
        image,
        psf,
        4,
        backend=backend,
        method="fft",
        boundary=boundary,
        acceleration=acceleration,
        background=(0.02 * image + 0.01) if background else None,
        mask=mask,
    )
    return result, launches


@pytest.mark.parametrize(
    "transform, boundary, acceleration, background, weights",
    [
        ("rfft", "reflect", None, False, False),
        ("rfft", "nearest", None, True, True),
        ("rfft", "estimate", None, False, False),
        ("rfft", "reflect", "shb", True, False),
        ("rfft", "wrap", "biggs", False, True),
        ("dct2", "reflect", None, True, False),
        ("dct2-padded", "nearest", "shb", False, True),
    ],
)
def test_fused_kernels_give_the_separate_kernels_result(
    monkeypatch, transform, boundary, acceleration, background, weights
):
    from gpu_deconv.backends import _opencl_operators as ob

    try:
        gd.get_backend("opencl")
    except gd.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    case = (transform, boundary, acceleration, background, weights)
    fused, launches = _run(*case)
    expected = 0 if transform == "dct2" else 4  # one each per iteration; nothing to crop
    accelerated = acceleration is not None
    assert launches["crop_ratio"] == expected
    assert launches["crop_update"] == (0 if accelerated else expected)
    # The accelerated updates are one reduction kernel each step, padded or not.
    assert launches["accelerated_update_partial"] == (4 if accelerated else 0)
    assert launches["rl_ratio"] == 4 - expected
    crops = launches["crop"]  # the weights' set-up crops too
    for name in ("correlate_update", "correlate_momentum_update", "correlate_change_update"):
        monkeypatch.delattr(ob.FusedUpdates, name)
    for cls in (ob.FFTOperator, ob.PaddedDCTOperator):
        monkeypatch.delattr(cls, "convolve_ratio")
    separate, launches = _run(*case)
    assert launches["crop_ratio"] == launches["crop_update"] == 0
    assert launches["crop"] == crops + 2 * expected  # the crops the fused kernels did
    np.testing.assert_array_equal(fused, separate)
