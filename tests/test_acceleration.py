"""SHB and Biggs-Andrews acceleration against the float64 reference, on both backends."""

from __future__ import annotations

import numpy as np
import pytest
from acceleration_reference import accelerated_rl
from conftest import RL_RTOL, blob_image, make_psf, oracle_rl, rel_rms, require_backend

import gpu_deconv as gd


def noisy(shape, seed, photons=200):
    """A Poisson-noisy blurred test image (acceleration matters on noisy data)."""
    rng = np.random.default_rng(seed)
    truth = blob_image(shape, seed=seed) * photons
    blurred = gd.convolve(truth, make_psf((7,) * len(shape), "gaussian"), backend="numpy")
    return rng.poisson(blurred).astype(np.float64) + 1.0, truth


@pytest.mark.parametrize("kind", ["shb", "biggs"])
@pytest.mark.parametrize("shape, boundary", [((40, 44), "reflect"), ((12, 20, 18), "wrap")])
def test_acceleration_matches_the_float64_reference(backend_dtype, kind, shape, boundary):
    name, dtype = backend_dtype
    image, _ = noisy(shape, seed=1)
    psf = make_psf((7,) * len(shape), "gaussian")
    expected, _ = accelerated_rl(image, psf, 12, kind, boundary)
    steps = gd.richardson_lucy(
        image.astype(dtype),
        psf,
        12,
        backend=name,
        boundary=boundary,
        acceleration=kind,
        snapshots=[4, 12],
    )
    # Momentum amplifies round-off a little over the iterations: float32 gets 10x its RL bound.
    tolerance = RL_RTOL[dtype] * (1 if dtype == np.float64 else 10)
    for k in (4, 12):
        assert rel_rms(steps[k], expected[k - 1]) <= tolerance, k


def test_first_two_steps_are_plain_rl_and_momentum_then_grows():
    image, _ = noisy((30, 32), seed=2)
    psf = make_psf((7, 7), "gaussian")
    _, momenta = accelerated_rl(image, psf, 6, "shb")
    assert momenta[:3] == [0.0, 0.0, 0.25]
    for kind in ("shb", "biggs"):
        two = gd.richardson_lucy(image, psf, 2, backend="numpy", acceleration=kind)
        assert rel_rms(two, oracle_rl(image, psf, 2)) <= 1e-12


@pytest.mark.parametrize("kind", ["shb", "biggs"])
def test_accelerated_estimates_are_non_negative_and_keep_zeros(backend, kind):
    image, _ = noisy((24, 26), seed=3)
    image[:, :3] = 0  # a dark stripe: plain RL keeps zeros at zero, so must momentum
    psf = make_psf((5, 5), "gaussian")
    start = image.copy()
    start[10, 10] = 0
    result = gd.richardson_lucy(image, psf, 15, backend=backend, acceleration=kind, init=start)
    assert np.isfinite(result).all() and (result >= 0).all() and result[10, 10] == 0


@pytest.mark.parametrize("kind", ["shb", "biggs"])
def test_acceleration_reaches_plain_rl_quality_in_fewer_iterations(kind):
    """The tutorial's nucleus, a sigma-3 PSF, Poisson noise at 150 photons, flat starts."""
    from gpu_deconv.psf import gaussian_psf
    from gpu_deconv.samples import nucleus

    truth = nucleus() / nucleus().max() * 150.0
    psf = gaussian_psf((25, 25), 3.0)
    image = np.random.default_rng(0).poisson(gd.convolve(truth, psf, backend="numpy")) * 1.0
    counts = list(range(1, 41))
    kwargs = dict(backend="numpy", snapshots=counts, init="mean")
    plain = gd.richardson_lucy(image, psf, 40, **kwargs)
    fast = gd.richardson_lucy(image, psf, 40, acceleration=kind, **kwargs)
    plain_err = {k: float(np.mean((v - truth) ** 2)) for k, v in plain.items()}
    fast_err = {k: float(np.mean((v - truth) ** 2)) for k, v in fast.items()}
    best_plain = min(plain_err, key=plain_err.get)
    # Within 0.5% of plain RL's best error (momentum's own best is that close or better).
    target = 1.005 * plain_err[best_plain]
    reached = min(k for k, e in fast_err.items() if e <= target)
    assert reached <= 0.6 * best_plain, (reached, best_plain)


@pytest.mark.parametrize("kind", ["shb", "biggs"])
def test_acceleration_with_estimated_edges_masks_tiles_and_dask(backend, kind):
    import dask
    import dask.array as da

    from gpu_deconv.dask import richardson_lucy as dask_rl

    image = blob_image((48, 56), seed=5).astype(np.float32) * 100
    psf = make_psf((7, 7), "gaussian")
    mask = np.random.default_rng(6).random(image.shape) > 0.05
    kwargs = dict(backend=backend, boundary="estimate", mask=mask, acceleration=kind)
    whole = gd.richardson_lucy(image, psf, 10, tile_shape=None, **kwargs)
    assert np.isfinite(whole).all() and whole.shape == image.shape
    tiled = gd.richardson_lucy(image, psf, 10, tile_shape=(24, 28), **kwargs)
    with dask.config.set(scheduler="sync"):
        lazy = dask_rl(da.from_array(image, chunks=(24, 28)), psf, 10, **kwargs).compute()
    # Each tile keeps its own momentum. SHB's follows the iteration count (restarts aside):
    # measured 2e-6 tiled, 3e-5 on dask. Biggs' comes from sums over the tile, so every tile
    # takes its own path: measured 1.6e-3 tiled, 2.1e-3 on dask.
    tolerance = 1e-4 if kind == "shb" else 5e-3
    assert rel_rms(tiled, whole) <= tolerance and rel_rms(lazy, whole) <= tolerance


def test_bad_acceleration_is_refused():
    with pytest.raises(
        ValueError, match=r"unknown acceleration 'nesterov'; allowed: None \(plain RL\), shb, biggs"
    ):
        gd.richardson_lucy(np.ones((8, 8)), np.ones((3, 3)), 2, acceleration="nesterov")


def _momentum_reference(point, correction, weights, floor, estimate, alpha):
    """``Backend.momentum_update`` in float64 on the host: (agreement, next point, estimate)."""
    p, f = point.astype(np.float64), estimate.astype(np.float64)
    fresh = np.where((p > 0) & (weights > 0), np.maximum(p * correction * weights, floor), 0.0)
    agreement = float(np.sum((fresh - f) * (p - f)))
    following = np.where(fresh > 0, np.maximum(fresh + alpha * (fresh - f), floor), 0.0)
    return agreement, following, fresh


@pytest.mark.parametrize("variant", ["numpy", "opencl-contiguous", "opencl-strided"])
@pytest.mark.parametrize("at_estimate, shape", [(False, (9, 13, 17)), (True, (9, 13, 17)),
                                                (False, (40, 50, 70))])  # fmt: skip
def test_momentum_update_matches_its_definition(variant, at_estimate, shape):
    """The fused SHB pass: update, restart-test sum and next point, with dead voxels.

    OpenCL runs both ways reduction items share the voxels (a CPU's contiguous runs, a
    GPU's column of every R-th row, here with 58 rows a step on the larger shape).
    """
    backend, _, share = variant.partition("-")
    require_backend(backend)
    rng = np.random.default_rng(7)
    estimate = rng.random(shape).astype(np.float32) + 0.1
    point = (estimate + 0.3 * (rng.random(shape) - 0.5)).clip(1e-30).astype(np.float32)
    correction = (rng.random(shape) + 0.5).astype(np.float32)
    weights = (rng.random(shape) + 0.5).astype(np.float32)
    estimate[0] = point[0] = 0  # voxels out of the estimate stay 0
    weights[:, 0] = 0  # unobservable voxels become 0
    correction[1, 1] = 0  # a row of zero correction: clamped at the floor, not killed
    if at_estimate:
        point = estimate.copy()
    alpha, floor = 0.4, 1e-30
    expected = _momentum_reference(point, correction, weights, floor, estimate, alpha)
    be = gd.get_backend(backend)
    if backend == "opencl":
        from gpu_deconv.backends.opencl_backend import OpenCLBackend

        be = OpenCLBackend()
        be._contiguous_shares = np.int32(share == "contiguous")
    est = be.to_backend(estimate)
    pt = est if at_estimate else be.to_backend(point)
    out = be.empty(shape, np.float32) if at_estimate else pt
    corr, w = be.to_backend(correction), be.to_backend(weights)
    agreement = be.momentum_update(pt, corr, w, floor, est, alpha, out)
    np.testing.assert_allclose(agreement, expected[0], rtol=1e-6, atol=1e-9)
    # float32: the extrapolation's difference is exact to a few ulps of the values (~1).
    np.testing.assert_allclose(be.to_numpy(out), expected[1], rtol=0, atol=5e-7)
    np.testing.assert_allclose(be.to_numpy(est), expected[2], rtol=2e-7)
    result = be.to_numpy(est)
    assert (result[1, 1] == np.float32(floor)).all() and (result[0] == 0).all()
    if at_estimate:
        assert agreement == 0.0


@pytest.mark.parametrize("variant", ["numpy", "opencl-contiguous", "opencl-strided"])
@pytest.mark.parametrize("shape", [(9, 13, 17), (40, 50, 70)])
def test_change_update_matches_its_definition(variant, shape):
    """Biggs' fused pass: the clamped update, its change and both momentum sums."""
    backend, _, share = variant.partition("-")
    require_backend(backend)
    rng = np.random.default_rng(8)
    point = rng.random(shape).astype(np.float32) + 0.1
    correction = (rng.random(shape) + 0.5).astype(np.float32)
    weights = (rng.random(shape) + 0.5).astype(np.float32)
    earlier = (rng.random(shape) - 0.5).astype(np.float32)
    point[0] = 0  # voxels out of the estimate stay 0
    weights[:, 0] = 0  # unobservable voxels become 0
    correction[1, 1] = 0  # a row of zero correction: lifted to the floor
    floor = 1e-30
    p = point.astype(np.float64)
    fresh = np.where((p > 0) & (weights > 0), np.maximum(p * correction * weights, floor), 0.0)
    change = fresh - p
    be = gd.get_backend(backend)
    if backend == "opencl":
        from gpu_deconv.backends.opencl_backend import OpenCLBackend

        be = OpenCLBackend()
        be._contiguous_shares = np.int32(share == "contiguous")
    est, chg = be.empty(shape, np.float32), be.empty(shape, np.float32)
    sums = be.change_update(
        be.to_backend(point), be.to_backend(correction), be.to_backend(weights), floor, est,
        chg, be.to_backend(earlier),
    )  # fmt: skip
    np.testing.assert_allclose(be.to_numpy(est), fresh, rtol=2e-7)
    got = be.to_numpy(chg).astype(np.float64)
    np.testing.assert_allclose(got, change, rtol=0, atol=2.5e-7)  # 2 ulps of values below 2
    expected = (float(np.sum(got * earlier)), float(np.sum(got * got)))  # its float64 sums
    np.testing.assert_allclose(sums, expected, rtol=1e-12)
