"""basketcast.serving.drift on known answers: the PSI, the bins, the user/row levels and the three outputs.

The snapshots here are hand-made bundle folders (manifest + base/users/offsets arrays, no ONNX):
drift reads nothing else of a bundle, and the reference's score part is given directly.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.errors import OutputError
from basketcast.serving.batch import OUT_SCHEMA
from basketcast.serving.bundle import DRIFT_REFERENCE, MANIFEST, BundleManifest
from basketcast.serving.drift import (
    DRIFTED_FROM,
    STABLE_BELOW,
    Bins,
    DriftSummary,
    compare,
    drift_of_scores,
    drift_paths,
    fit_bins,
    profile,
    psi,
    status_of,
    write_reference,
)

# A user-level feature, a categorical row feature, a continuous row feature.
FEATURES = ["u_basket_mean", "p_department", "up_order_rate"]


def fake_bundle(folder: Path, per_user: list[np.ndarray], version: str = "v1") -> Path:
    """A bundle folder whose user i (id 10 + i) has the rows ``per_user[i]`` (rows × FEATURES)."""
    folder.mkdir(parents=True)
    base = np.concatenate(per_user).astype(np.float32)
    users = np.arange(10, 10 + len(per_user), dtype=np.uint32)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in per_user])]).astype(np.int64)
    arrays: dict[str, np.ndarray] = {"base": base, "users": users, "offsets": offsets}
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    manifest = BundleManifest(
        version=version,
        created="2026-01-01T00:00:00Z",
        features=FEATURES,
        base_features=FEATURES,
        shapes={"base": list(base.shape), "users": list(users.shape), "offsets": list(offsets.shape)},
        users=int(users.size),
        rows=int(base.shape[0]),
        ranking_objective="binary",
        onnx_bytes={},
        snapshot_bytes=0,
    )
    (folder / MANIFEST).write_text(manifest.model_dump_json())
    return folder


def population(rng: np.random.Generator, n_users: int, basket: float = 10.0, dept_1: float = 0.1) -> list[np.ndarray]:
    """Users with 5..30 rows: a per-user basket mean, departments 1..5 (1 with share ``dept_1``), a rate."""
    out = []
    for _ in range(n_users):
        n = int(rng.integers(5, 31))
        rows = np.empty((n, 3), np.float32)
        rows[:, 0] = rng.lognormal(np.log(basket), 0.4)
        rows[:, 1] = np.where(rng.random(n) < dept_1, 1, rng.integers(2, 6, n))
        rows[:, 2] = rng.beta(2, 5, n)
        out.append(rows)
    return out


def write_scores(path: Path, users: np.ndarray, scores: np.ndarray, k: int) -> Path:
    """A scores file: ``k`` rows per user with the given scores (users × k)."""
    table = pa.table(
        {
            S.USER: pa.array(np.repeat(users, k), pa.uint32()),
            S.PRODUCT: pa.array(np.tile(np.arange(1, k + 1), users.size), pa.uint32()),
            S.SCORE: pa.array(scores.reshape(-1), pa.float32()),
            S.RANK: pa.array(np.tile(np.arange(1, k + 1), users.size), pa.uint16()),
        },
        schema=OUT_SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def top_scores(rng: np.random.Generator, n_users: int, k: int = 20, shift: float = 0.0) -> np.ndarray:
    """users × k scores, descending per user."""
    return -np.sort(-(rng.normal(shift, 1.0, (n_users, k))), axis=1)


# --- the PSI and the bins --------------------------------------------------------------------
def test_psi_known_answers() -> None:
    assert psi(np.array([50, 50]), np.array([50, 50])) == pytest.approx(0.0, abs=1e-12)
    # r = (0.8, 0.2), c = (0.2, 0.8): 2 · 0.6 · ln 4
    assert psi(np.array([80, 20]), np.array([20, 80])) == pytest.approx(1.2 * math.log(4), rel=1e-3)
    assert psi(np.array([80, 20]), np.array([20, 80])) == pytest.approx(psi(np.array([20, 80]), np.array([80, 20])))
    assert math.isnan(psi(np.array([0, 0]), np.array([1, 2])))
    # an empty reference bin is smoothed, not infinite
    assert 0 < psi(np.array([100, 0]), np.array([99, 1])) < 0.1


def test_psi_of_a_normal_mean_shift_is_about_its_square() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 200_000)
    bins = fit_bins(ref)
    same = psi(bins.counts(ref), bins.counts(rng.normal(0, 1, 200_000)))
    half = psi(bins.counts(ref), bins.counts(rng.normal(0.5, 1, 200_000)))
    assert same < 0.001
    assert 0.2 < half < 0.3  # PSI ≈ d² for a shift of d standard deviations (binned: a little less)


def test_status_thresholds() -> None:
    assert (STABLE_BELOW, DRIFTED_FROM) == (0.1, 0.25)
    assert [status_of(v) for v in (0.0, 0.099, 0.1, 0.2499, 0.25, 3.0, math.nan)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "drifted",
        "drifted",
        "stable",
    ]


def test_quantile_bins_of_a_continuous_feature() -> None:
    x = np.arange(1000, dtype=np.float64) / 1000
    bins = fit_bins(np.append(x, np.nan))
    assert bins.kind == "quantile" and len(bins.edges) == 9 and bins.size == 11  # 10 bins + missing
    np.testing.assert_allclose(bins.edges, np.linspace(0.1, 0.9, 9), atol=2e-3)
    counts = bins.counts(np.append(x, [np.nan, np.nan, -5.0, 7.0]))
    assert counts[-1] == 2  # missing
    assert counts[0] == 101 and counts[9] == 101  # out-of-range values fall in the end bins
    assert counts.sum() == 1004


def test_tied_quantiles_merge() -> None:
    x = np.r_[np.zeros(900), np.linspace(1, 2, 100) + 0.5]  # 90 % zeros, then 100 distinct values
    bins = fit_bins(x)
    assert bins.kind == "quantile" and bins.edges[0] == 0.0 and len(bins.edges) < 9
    assert bins.counts(x)[1] == 900


def test_whole_numbers_with_few_values_get_a_bin_each() -> None:
    x = np.r_[np.repeat([0.0, 1.0, 2.0, 3.0], 250), [9.0]]  # 9 is under 0.5 %: "other"
    bins = fit_bins(x)
    assert bins.kind == "categorical" and bins.values == [0.0, 1.0, 2.0, 3.0]
    assert bins.labels() == ["0", "1", "2", "3", "other", "missing"]
    assert bins.counts(np.array([0, 1, 1, 4, 9, np.nan, 2.5])).tolist() == [1, 2, 0, 0, 3, 1]
    assert fit_bins(np.array([0.5, 1.5, 2.5] * 10)).kind == "quantile"  # not whole numbers
    assert fit_bins(np.arange(100.0)).kind == "quantile"  # too many values
    assert fit_bins(np.array([np.nan, np.nan])) == Bins(kind="quantile")  # only missing: one bin + missing


# --- levels and the comparison ---------------------------------------------------------------
def test_user_level_features_count_users_not_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref_users = population(rng, 300)
    # The same users, but the users with a big basket now have 10 times the rows: per row their
    # basket mean would look shifted, per user it is not.
    cur_users = [np.repeat(r, 10, axis=0) if r[0, 0] > 10 else r for r in ref_users]
    ref = profile(fake_bundle(tmp_path / "ref", ref_users))
    cur = fake_bundle(tmp_path / "cur", cur_users)
    summary, _ = compare(ref, cur, np.arange(10, 310))
    assert summary.features["u_basket_mean"].level == "user"
    assert summary.features["u_basket_mean"].psi == pytest.approx(0.0, abs=1e-9)
    assert summary.features["p_department"].level == "row"
    assert summary.scored_users == 300 and summary.scored_rows == sum(len(r) for r in cur_users)


def test_a_shift_is_flagged_and_the_rest_is_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ref = profile(fake_bundle(tmp_path / "ref", population(rng, 400)))
    same = fake_bundle(tmp_path / "same", population(rng, 400))
    shifted = fake_bundle(tmp_path / "shifted", population(rng, 400, basket=20.0, dept_1=0.5))
    control, _ = compare(ref, same, np.arange(10, 410))
    assert control.flagged == [] and max(f.psi or 0 for f in control.features.values()) < STABLE_BELOW
    summary, shares = compare(ref, shifted, np.arange(10, 410))
    assert set(summary.flagged) == {"u_basket_mean", "p_department"}
    assert summary.features["up_order_rate"].status == "stable"
    dept = shares["p_department"]
    assert dept.labels[0] == "1" and dept.current[0] / dept.current.sum() > 0.45  # department 1's bin
    # only the users asked for (and known) are compared: unknown ids are counted and left out
    part, _ = compare(ref, shifted, np.array([10, 11, 12, 99_999]))
    assert (part.scored_users, part.unknown_users) == (3, 1)
    assert any("only 3 scored users" in n for n in part.notes)


# --- the outputs -----------------------------------------------------------------------------
@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A bundle with its drift reference (features and top-20 scores of its 300 users)."""
    rng = np.random.default_rng(3)
    folder = fake_bundle(tmp_path / "run" / "serving", population(rng, 300), version="v1-abc")
    scores = top_scores(rng, 300)
    ranks = np.tile(np.arange(1, 21), (300, 1))
    write_reference(folder / DRIFT_REFERENCE, profile(folder, scores.reshape(-1), ranks.reshape(-1)))
    return folder


def test_drift_of_scores_writes_json_html_and_prom(bundle: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    users = np.r_[np.arange(10, 310), [5_000_000]].astype(np.uint32)  # + one cold-start user
    scores = write_scores(tmp_path / "out" / "X.parquet", users, top_scores(rng, users.size, k=10, shift=1.0), k=10)
    result = drift_of_scores(bundle.parent, scores)
    paths = drift_paths(scores)
    assert [p.name for p in (paths.json, paths.html, paths.prom)] == ["X.drift.json", "X.drift.html", "X.drift.prom"]
    assert result.paths == paths
    summary = DriftSummary.model_validate_json(paths.json.read_bytes())
    assert summary.model_version == "v1-abc" and summary.reference_model_version == "v1-abc"
    assert (summary.scored_users, summary.unknown_users, summary.score_ranks) == (300, 1, 10)
    assert summary.score is not None and summary.score.status == "drifted"  # scores moved by one sd
    assert summary.flagged == []
    raw = json.loads(paths.json.read_text())
    assert set(raw["features"]["p_department"]) >= {"psi", "status", "reference_mean", "current_mean"}
    assert raw["thresholds"]["drifted_from"] == 0.25
    assert result.message == (
        f"drift: 0 of 3 features drifted (PSI ≥ 0.25); scores PSI {summary.score.psi:.3f}; report {paths.html}"
    )

    page = paths.html.read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<svg" in page and "u_basket_mean" in page  # the scores' bars, every feature's row

    families = {f.name: f for f in text_string_to_metric_families(paths.prom.read_text())}
    assert set(families) == {
        "basketcast_drift_psi",
        "basketcast_drift_score_psi",
        "basketcast_drift_flagged_features",
        "basketcast_drift_scored_users",
        "basketcast_drift_last_run_timestamp_seconds",
    }
    psi_samples = {s.labels["feature"]: s for s in families["basketcast_drift_psi"].samples}
    assert set(psi_samples) == set(FEATURES)
    assert all(s.labels["model_version"] == "v1-abc" for f in families.values() for s in f.samples)
    assert families["basketcast_drift_scored_users"].samples[0].value == 300
    assert families["basketcast_drift_score_psi"].samples[0].value == pytest.approx(summary.score.psi)


def test_flagged_features_get_bars_and_are_named(bundle: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    shifted = fake_bundle(tmp_path / "other" / "serving", population(rng, 300, basket=25.0), version="v2")
    (shifted / DRIFT_REFERENCE).write_bytes((bundle / DRIFT_REFERENCE).read_bytes())  # carried over
    scores = write_scores(tmp_path / "s.parquet", np.arange(10, 310), top_scores(rng, 300), k=20)
    result = drift_of_scores(shifted, scores)
    assert result.summary is not None and result.summary.flagged == ["u_basket_mean"]
    assert result.message.startswith("drift: 1 of 3 features drifted (PSI ≥ 0.25): u_basket_mean; scores PSI ")
    assert result.summary.reference_model_version == "v1-abc" and result.summary.model_version == "v2"
    page = drift_paths(scores).html.read_text()
    assert page.count("<svg") == 2  # the scores and the flagged feature
    prom = drift_paths(scores).prom.read_text()
    assert 'basketcast_drift_flagged_features{model_version="v2"} 1.0' in prom


def test_outputs_are_replaced_atomically_and_foreign_files_refused(bundle: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    scores = write_scores(tmp_path / "s.parquet", np.arange(10, 110), top_scores(rng, 100), k=20)
    drift_of_scores(bundle, scores)
    paths = drift_paths(scores)
    before = {p: os.stat(p).st_ino for p in (paths.json, paths.html, paths.prom)}
    drift_of_scores(bundle, scores)  # our own outputs: replaced without force
    assert all(os.stat(p).st_ino != ino for p, ino in before.items())  # a new file renamed into place
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run",
        "s.drift.html",
        "s.drift.json",
        "s.drift.prom",
        "s.parquet",
    ]
    paths.html.write_text("my notes")
    with pytest.raises(OutputError, match="not a basketcast drift report"):
        drift_of_scores(bundle, scores)
    assert paths.html.read_text() == "my notes"
    drift_of_scores(bundle, scores, force=True)
    assert "basketcast drift report" in paths.html.read_text()


def test_a_bundle_without_reference_or_known_users_is_skipped(bundle: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    unknown = write_scores(tmp_path / "cold.parquet", np.array([1, 2], np.uint32), top_scores(rng, 2), k=20)
    result = drift_of_scores(bundle, unknown)
    assert result.summary is None and "no scored user is in the snapshot" in result.message
    (bundle / DRIFT_REFERENCE).unlink()
    scores = write_scores(tmp_path / "s.parquet", np.arange(10, 20), top_scores(rng, 10), k=20)
    result = drift_of_scores(bundle, scores)
    assert result.summary is None and result.message.startswith("drift: skipped — ")
    assert "no drift reference" in result.message and "\n" not in result.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cold.parquet", "run", "s.parquet"]


def test_a_folder_of_parts_gets_its_outputs_inside(bundle: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    out = tmp_path / "scores"
    out.mkdir()
    write_scores(out / "part-00000.parquet", np.arange(10, 60), top_scores(rng, 50), k=20)
    write_scores(out / "part-00001.parquet", np.arange(60, 110), top_scores(rng, 50), k=20)
    result = drift_of_scores(bundle, out)
    assert result.summary is not None and result.summary.scored_users == 100
    assert {p.name for p in out.iterdir()} >= {"drift.json", "drift.html", "drift.prom"}
