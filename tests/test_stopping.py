"""Stopping rules and the per-iteration record: iterations="auto", stop=, return_info."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import blob_image, make_psf
from test_properties import CountingBackend

import gpu_deconv as gd
from gpu_deconv import _noise, _stopping


def _photons(shape, photons=150.0, background=4.0, seed=0):
    truth = blob_image(shape, seed=seed) * photons
    psf = make_psf((5,) * len(shape), "gaussian")
    mean = gd.convolve(truth, psf, backend="numpy") + background
    return np.random.default_rng(seed).poisson(mean).astype(np.float64), psf


def _kl_per_voxel(image, estimate, psf, background, mask=None):
    mean = gd.convolve(estimate.astype(np.float64), psf, backend="numpy") + background
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = mean - image + np.where(image > 0, image * np.log(image / mean), 0.0)
    return float(terms.mean() if mask is None else terms[mask].mean())


@pytest.mark.parametrize("mean", [0.05, 0.1, 1.0, 10.0, 100.0])
def test_expected_discrepancy_of_a_poisson_count(mean):
    # Exact sum against a Monte-Carlo estimate, and the backends' table against the sum.
    draws = np.random.default_rng(1).poisson(mean, 2_000_000).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl2 = 2 * (mean - draws + np.where(draws > 0, draws * np.log(draws / mean), 0.0))
    assert _noise.expected_2kl(mean) == pytest.approx(kl2.mean(), abs=4 * kl2.std() / 1414)
    assert _noise.expected_2kl_approx(np.array([mean]))[0] == pytest.approx(
        _noise.expected_2kl(mean), abs=1e-4
    )


def test_expected_discrepancy_values_quoted_in_the_docs():
    assert _noise.expected_2kl(10.0) == pytest.approx(1.019, abs=1e-3)
    assert _noise.expected_2kl(1.0) == pytest.approx(1.15, abs=5e-3)
    assert _noise.expected_2kl(0.1) == pytest.approx(0.47, abs=5e-3)
    assert _noise.expected_2kl(1e4) == pytest.approx(1 + 1 / 6e4, rel=1e-6)


@pytest.mark.parametrize("acceleration", [None, "shb"])
def test_history_is_the_objective_at_each_true_iterate(backend, acceleration):
    image, psf = _photons((30, 34))
    mask = image < np.quantile(image, 0.98)
    kwargs = dict(backend=backend, background=4.0, mask=mask, acceleration=acceleration)
    steps, info = gd.richardson_lucy(image, psf, 6, snapshots=range(7), return_info=True, **kwargs)
    assert info.iterations == 6 and info.stop is None and len(info.history) == 7
    rtol = 1e-10 if backend == "numpy" else 2e-5
    for k, record in enumerate(info.history):
        expected = _kl_per_voxel(image, steps[k], psf, 4.0, mask)
        assert record["iteration"] == k and isinstance(record["iteration"], int)
        assert record["objective"] == pytest.approx(expected, rel=rtol)
        assert record["discrepancy"] == pytest.approx(2 * expected, rel=rtol)
        assert 0.9 < record["target"] < 1.2  # about 1 + 1/(6 mu) at these counts


def test_discrepancy_rule_stops_at_the_first_count_under_the_target(backend):
    image, psf = _photons((32, 36), seed=2)
    result, info = gd.richardson_lucy(
        image, psf, "auto", backend=backend, background=4.0, return_info=True
    )
    history = info.history
    k = info.iterations
    assert info.stop == "discrepancy" and len(history) == k + 1
    assert history[k]["discrepancy"] <= history[k]["target"]
    assert all(r["discrepancy"] > r["target"] for r in history[:k])
    fixed = gd.richardson_lucy(image, psf, k, backend=backend, background=4.0)
    np.testing.assert_array_equal(result, fixed)  # the estimate at the stop, not one later


def test_relative_rule_and_its_tolerance(backend):
    image, psf = _photons((28, 30), seed=3)
    kwargs = dict(backend=backend, background=4.0, stop="relative", return_info=True)
    _, info = gd.richardson_lucy(image, psf, "auto", tolerance=0.01, **kwargs)
    objective = [r["objective"] for r in info.history]
    k = info.iterations

    def change(i):
        return abs(objective[i - 1] - objective[i]) / objective[i]

    assert change(k) <= 0.01 and all(change(i) > 0.01 for i in range(1, k))
    _, loose = gd.richardson_lucy(image, psf, "auto", **kwargs)  # deconwolf's 0.02
    assert loose.iterations <= k


def test_a_rule_met_before_any_iteration_warns():
    # Camera data with their offset left in are under-dispersed for Poisson counts: from the
    # observed start the discrepancy is below its target before any iteration.
    image, psf = _photons((32, 32), seed=3)
    raw = image * 2.1 + 100.0
    with pytest.warns(gd.StoppingWarning, match="chose 0 iterations") as caught:
        result, info = gd.richardson_lucy(raw, psf, "auto", backend="numpy", return_info=True)
    assert caught[0].filename == __file__
    assert info.iterations == 0 and info.rule_met
    np.testing.assert_array_equal(result, raw)  # the start, as the warning says
    _, converted = gd.richardson_lucy(
        image, psf, "auto", backend="numpy", init="mean", background=4.0, return_info=True
    )
    assert converted.iterations > 0  # photons, a flat start: a count, and no warning


def test_max_iterations_bounds_a_rule_that_never_stops():
    image, psf = _photons((24, 24), seed=4)
    # Data far from Poisson (scaled by 1e3): the discrepancy cannot reach its target.
    with pytest.warns(gd.StoppingWarning, match="was not met in max_iterations=7") as caught:
        _, info = gd.richardson_lucy(
            image * 1e3, psf, "auto", backend="numpy", max_iterations=7, return_info=True
        )
    assert caught[0].filename == __file__
    assert info.iterations == 7 and len(info.history) == 8 and not info.rule_met
    from gpu_deconv.dask import richardson_lucy as dask_rl

    with pytest.warns(gd.StoppingWarning, match="max_iterations=7") as caught:
        dask_rl(image * 1e3, psf, "auto", backend="numpy", max_iterations=7, chunks=(12, 24))
    assert [w.filename for w in caught] == [__file__]  # the user's line, on the central chunk


def test_holdout_splits_counts_and_transfers_the_count(backend):
    image, psf = _photons((40, 40), photons=60.0, seed=5)
    first, second = _stopping.split_counts(image)
    np.testing.assert_array_equal(first + second, image)
    assert (first >= 0).all() and (second >= 0).all() and np.array_equal(first, np.round(first))
    assert abs(first.sum() / image.sum() - 0.5) < 0.01
    result, info = gd.richardson_lucy(
        image, psf, "auto", stop="holdout", backend=backend, background=4.0, return_info=True
    )
    halves = info.holdout_iterations
    assert len(halves) == 2 and all(h >= 1 for h in halves)
    expected = max(1, round(_stopping.HOLDOUT_TRANSFER * sum(halves) / 2))
    assert info.iterations == expected and len(info.history) == expected + 1
    fixed = gd.richardson_lucy(image, psf, expected, backend=backend, background=4.0)
    np.testing.assert_array_equal(result, fixed)


def test_auto_with_tiles_runs_every_tile_for_the_central_count(backend):
    image, psf = _photons((48, 50), seed=6)
    kwargs = dict(backend=backend, background=4.0, tile_shape=(24, 25), overlap=8)
    result, info = gd.richardson_lucy(image, psf, "auto", return_info=True, **kwargs)
    assert info.iterations > 0 and len(info.history) == info.iterations + 1
    fixed = gd.richardson_lucy(image, psf, info.iterations, **kwargs)
    np.testing.assert_array_equal(result, fixed)
    pytest.importorskip("dask")  # the GPU check's environment has no dask
    from gpu_deconv.dask import richardson_lucy as dask_rl

    lazy, central = dask_rl(
        image, psf, "auto", backend=backend, background=4.0, chunks=(24, 25), overlap=8,
        stop="holdout", return_info=True,
    )  # fmt: skip
    chunked, fixed = dask_rl(
        image, psf, central.iterations, backend=backend, background=4.0, chunks=(24, 25),
        overlap=8, return_info=True,
    )  # fmt: skip
    np.testing.assert_array_equal(lazy.compute(), chunked.compute())
    assert central.stop == "holdout" and len(central.holdout_iterations) == 2
    assert len(central.history) == central.iterations + 1  # the central chunk's records
    assert fixed.iterations == central.iterations and fixed.stop is None and not fixed.history


def test_monitoring_pulls_no_image(backend):
    # The records are device reductions: only the result comes back.
    image, psf = _photons((30, 30), seed=7)
    counting = CountingBackend(gd.get_backend(backend))
    _, info = gd.richardson_lucy(
        image, psf, "auto", backend=counting, background=4.0, return_info=True
    )
    assert counting.pulls == 1 and info.iterations > 0
    assert counting.pushes == 2  # the image and the expected-discrepancy table


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((5,), dict(stop="relative"), "needs iterations='auto'"),
        ((5,), dict(max_iterations=9), "max_iterations needs iterations='auto'"),
        (("auto",), dict(stop="never"), "stop must be one of"),
        (("auto",), dict(max_iterations=0), "max_iterations must be an int >= 1"),
        (("auto",), dict(snapshots=[1]), "snapshots need a fixed iteration count"),
        (("auto",), dict(tolerance=0.1), "tolerance applies to stop='relative' only"),
        (("auto",), dict(stop="relative", tolerance=2.0), r"tolerance must lie in \(0, 1\)"),
        (("forever",), dict(), "iterations must be an int >= 0 or 'auto'"),
        (("auto",), dict(stop="holdout", read_noise=1.0), "read noise does not split"),
        # Not "not integer-valued": the shifted image (1 + 1.6^2) is, but that is not why.
        (("auto",), dict(stop="holdout", read_noise=1.6), "with read_noise use stop="),
        ((5,), dict(return_info="yes"), "return_info must be True or False"),
    ],
)
def test_bad_stopping_arguments_are_refused(args, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        gd.richardson_lucy(np.ones((16, 16)), np.ones((3, 3)), *args, backend="numpy", **kwargs)


def test_holdout_needs_integer_counts():
    with pytest.raises(ValueError, match="integer photon counts"):
        gd.richardson_lucy(
            np.full((16, 16), 2.5), np.ones((3, 3)), "auto", stop="holdout", backend="numpy"
        )


def test_discrepancy_target_is_in_photons_whatever_the_scale():
    # The driver scales data by powers of two; the record is in photons per voxel.
    image, psf = _photons((24, 26), seed=8)
    _, info = gd.richardson_lucy(image, psf, 3, backend="numpy", return_info=True)
    # The same counts scaled by 8 are not Poisson counts: the discrepancy is 8 times larger.
    _, scaled = gd.richardson_lucy(image * 8, psf, 3, backend="numpy", return_info=True)
    assert scaled.history[3]["discrepancy"] == pytest.approx(
        8 * info.history[3]["discrepancy"], rel=1e-9
    )
    assert math.isfinite(scaled.history[3]["target"])


def test_holdout_halves_are_symmetric():
    # Each half trains once and validates the other, and each count is the argmax of the
    # held-out log-likelihood computed here on the host (a run must not alter the other half).
    image, psf = _photons((40, 44), photons=80.0, seed=9)
    first, second = _stopping.split_counts(image)
    _, info = gd.richardson_lucy(
        image, psf, "auto", stop="holdout", backend="numpy", background=4.0, return_info=True
    )
    counts = []
    for train, held_out in ((first, second), (second, first)):
        steps = gd.richardson_lucy(
            train, psf, 60, backend="numpy", background=2.0, snapshots=range(61)
        )
        likelihood = [
            float(
                np.sum(
                    held_out * np.log(gd.convolve(f, psf, backend="numpy") + 2.0)
                    - (gd.convolve(f, psf, backend="numpy") + 2.0)
                )
            )
            for f in steps.values()
        ]
        counts.append(int(np.argmax(likelihood)))
    assert list(info.holdout_iterations) == counts
