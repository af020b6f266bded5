"""Paired bootstrap: a known difference is covered, no difference gives [0, 0], seeds fix the result."""

from __future__ import annotations

import numpy as np
import pytest

import basketcast.pipeline.evaluation.bootstrap as bootstrap
from basketcast.pipeline.evaluation.bootstrap import Difference, paired_bootstrap


def test_known_difference_lies_in_the_interval() -> None:
    rng = np.random.default_rng(0)
    b = rng.uniform(0.0, 1.0, size=2_000)
    a = b + 0.1 + rng.normal(0.0, 0.05, size=b.size)  # a beats b by 0.1 per user, with noise
    d = paired_bootstrap(a, b, resamples=2_000, seed=1)
    assert d.mean == pytest.approx(float((a - b).mean()))
    assert d.low < 0.1 < d.high
    assert d.high - d.low < 0.01  # the paired noise is small: 0.05/√2000 ≈ 0.0011 standard error
    assert d.excludes_zero()
    assert (d.resamples, d.level) == (2_000, 0.95)


def test_identical_inputs_give_a_zero_width_interval() -> None:
    a = np.array([0.2, 0.9, 0.0, 0.5])
    d = paired_bootstrap(a, a.copy(), resamples=500)
    assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0)
    assert not d.excludes_zero()


def test_seeded_and_equal_to_the_benchmark_method(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.uniform(size=37), rng.uniform(size=37)
    d = paired_bootstrap(a, b, resamples=1_000, seed=3)
    assert paired_bootstrap(a, b, resamples=1_000, seed=3) == d
    assert paired_bootstrap(a, b, resamples=1_000, seed=4) != d
    # benchmarks/bootstrap_ci.py draws every (resample, user) index at once; blocks draw the same stream.
    diff = a - b
    means = diff[np.random.default_rng(3).integers(0, diff.size, size=(1_000, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert (d.low, d.high) == (pytest.approx(low, abs=1e-15), pytest.approx(high, abs=1e-15))
    monkeypatch.setattr(bootstrap, "_BLOCK", 37 * 3)  # blocks of 3 resamples
    assert paired_bootstrap(a, b, resamples=1_000, seed=3) == d


def test_level_widens_the_interval() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=200), rng.uniform(size=200)
    narrow = paired_bootstrap(a, b, resamples=2_000, level=0.5)
    wide = paired_bootstrap(a, b, resamples=2_000, level=0.99)
    assert wide.low < narrow.low < narrow.mean < narrow.high < wide.high


def test_json_round_trip_and_checks() -> None:
    d = paired_bootstrap(np.array([1.0, 0.0]), np.array([0.0, 0.0]), resamples=10)
    assert Difference.model_validate_json(d.model_dump_json()) == d
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(np.ones(0), np.ones(0))
