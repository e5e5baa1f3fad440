"""The one Richardson-Lucy loop equals the float64 SciPy oracle for every method and boundary."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import BOUNDARIES, RL_RTOL, blob_image, make_psf, oracle_rl, rel_rms

import gpu_deconv as gd
from gpu_deconv.backends._base import BlurSpec
from gpu_deconv.backends.numpy_backend import NumpyBackend

ITERATIONS = 20
CASES = {
    "2d-odd": ((5, 7), "gaussian"),
    "2d-even": ((6, 4), "random"),
    "3d-odd": ((5, 3, 5), "gaussian"),
    "3d-even": ((4, 4, 3), "random"),
    "3d-prime-sizes": ((3, 5, 5), "gaussian"),
}
IMAGE_SHAPES = {"2d": (37, 44), "3d": (14, 19, 23), "3d-prime-sizes": (31, 67, 53)}


METHOD_CASES = [
    (case, method)
    for case in sorted(CASES)
    for method in ("spatial", "separable", "fft")
    if method != "separable" or CASES[case][1] == "gaussian"  # separable needs rank one
]


@pytest.fixture(scope="module")
def oracle_cache():
    return {}


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("case, method", METHOD_CASES)
def test_matches_oracle(case, method, boundary, backend_dtype, oracle_cache):
    backend, dtype = backend_dtype
    psf_shape, kind = CASES[case]
    image = blob_image(IMAGE_SHAPES.get(case, IMAGE_SHAPES[case[:2]]), seed=len(case))
    psf = make_psf(psf_shape, kind)
    key = (case, boundary)
    if key not in oracle_cache:
        oracle_cache[key] = oracle_rl(image, psf, ITERATIONS, boundary)
    result = gd.richardson_lucy(
        image, psf, ITERATIONS, backend=backend, method=method, boundary=boundary, dtype=dtype
    )
    assert result.dtype == dtype and result.shape == image.shape
    assert rel_rms(result, oracle_cache[key]) <= RL_RTOL[dtype]


@pytest.mark.parametrize("init", ["mean", 0.5, "array"])
def test_init_modes(init, image2d):
    psf = make_psf((5, 5), "random")
    start = {"mean": image2d.mean(), 0.5: 0.5, "array": image2d[::-1].copy()}[init]
    result = gd.richardson_lucy(
        image2d, psf, 5, backend="numpy", init=start if init == "array" else init
    )
    np.testing.assert_allclose(result, oracle_rl(image2d, psf, 5, init=start), rtol=1e-10)


def test_zero_iterations_returns_initial_estimate(image2d):
    psf = make_psf((3, 3), "gaussian")
    np.testing.assert_array_equal(gd.richardson_lucy(image2d, psf, 0, backend="numpy"), image2d)
    const = gd.richardson_lucy(image2d, psf, 0, backend="numpy", init="mean")
    np.testing.assert_allclose(const, np.full(image2d.shape, image2d.mean()))


def test_eps_zeroes_the_ratio_where_blur_is_small():
    image = np.zeros((20, 20))
    image[8:12, 8:12] = 1.0
    psf = make_psf((3, 3), "gaussian")
    result = gd.richardson_lucy(image, psf, 5, backend="numpy", boundary="constant", eps=1e-3)
    expected = oracle_rl(image, psf, 5, "constant", eps=1e-3)
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-300)
    assert np.isfinite(result).all() and result[0, 0] == 0


def test_integer_image_runs_in_float32():
    image = (np.arange(400).reshape(20, 20) % 17 + 1).astype(np.uint16)
    psf = make_psf((5, 5), "gaussian")
    result = gd.richardson_lucy(image, psf, 4, backend="numpy")
    assert result.dtype == np.float32
    assert rel_rms(result, oracle_rl(image, psf, 4)) <= RL_RTOL[np.dtype(np.float32)]


def test_normalize_psf_false_uses_psf_as_given(image2d):
    psf = make_psf((5, 5), "random") * 2.0
    result = gd.richardson_lucy(
        image2d, psf, 3, backend="numpy", normalize_psf=False, method="spatial"
    )
    # With H = 2 H1: f1 = f0 * 2 H1^T(g / (2 H1 f0)) = the normalised first step; the second
    # step differs, so compare a hand-written loop without normalisation.
    import scipy.ndimage as ndi

    f = image2d.copy()
    for _ in range(3):
        f = f * ndi.correlate(image2d / ndi.convolve(f, psf), psf)
    np.testing.assert_allclose(result, f, rtol=1e-12)


def test_auto_method_is_recorded_and_equivalent(image3d):
    psf = make_psf((5, 5, 5), "gaussian")
    chosen = gd.choose_method(image3d.shape, psf, backend="numpy")
    assert chosen in {"fft", "separable", "spatial"}
    auto = gd.richardson_lucy(image3d, psf, 5, backend="numpy", method="auto")
    explicit = gd.richardson_lucy(image3d, psf, 5, backend="numpy", method=chosen)
    np.testing.assert_array_equal(auto, explicit)


def test_cost_model_picks_fft_for_big_3d_psf_and_spatial_for_tiny_psf():
    big = make_psf((17, 17, 17), "random")
    assert gd.choose_method((64, 256, 256), big, backend="numpy") == "fft"
    assert (
        gd.choose_method((64, 256, 256), make_psf((17, 17, 17), "gaussian"), backend="numpy")
        == "fft"
    )
    tiny = make_psf((1, 3, 1), "random")
    assert gd.choose_method((8, 16, 16), tiny, backend="numpy") in {"spatial", "separable"}


@pytest.mark.parametrize(
    "boundary, psf_kind, transform",
    [
        ("reflect", "gaussian", "dct2"),
        ("mirror", "gaussian", "dct1"),
        ("reflect", "random", "rfft"),
        ("nearest", "gaussian", "rfft"),
        ("wrap", "gaussian", "rfft"),
    ],
)
def test_numpy_fft_dispatches_to_exact_transform(boundary, psf_kind, transform):
    op = NumpyBackend().blur_operator(
        BlurSpec(make_psf((5, 5), psf_kind), (20, 20), boundary, "fft", np.float64)
    )
    assert op.method == "fft" and op.transform == transform


def test_progress_bar_and_callback(image2d, capsys):
    seen = []
    gd.richardson_lucy(
        image2d,
        make_psf((3, 3), "gaussian"),
        4,
        backend="numpy",
        progress=True,
        callback=seen.append,
    )
    assert seen == [1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "Richardson-Lucy" in err and "4/4" in err


@pytest.mark.parametrize("boundary", ["nearest", "constant"])
@pytest.mark.parametrize(
    "shape, psf_shape", [((37, 44), (5, 7)), ((14, 19, 23), (5, 1, 5)), ((20,), (7,))]
)
def test_numpy_padded_dct_matches_reference(boundary, shape, psf_shape):
    """The DCT-II of the image padded with the mode's values, forced by a DCT-preferring model."""
    import scipy.ndimage as ndi

    backend = NumpyBackend()
    backend.cost_model = replace(backend.cost_model, dct_factor=0.1)
    image = blob_image(shape, seed=2)
    psf = make_psf(psf_shape, "gaussian")
    op = backend.blur_operator(BlurSpec(psf, shape, boundary, "fft", np.float64))
    assert op.transform == "dct2-padded"
    for ours, theirs in ((gd.convolve, ndi.convolve), (gd.correlate, ndi.correlate)):
        result = ours(image, psf, backend=backend, method="fft", boundary=boundary)
        assert rel_rms(result, theirs(image, psf, mode=boundary)) <= 1e-13
    result = gd.richardson_lucy(image, psf, 20, backend=backend, method="fft", boundary=boundary)
    assert rel_rms(result, oracle_rl(image, psf, 20, boundary)) <= 1e-12
