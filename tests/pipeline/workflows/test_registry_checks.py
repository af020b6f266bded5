"""Promotion's checks (basketcast.pipeline.workflows.registry) on made-up evidence, and where the store lives."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.workflows.registry import _checks, _Evidence, registered_name
from basketcast.pipeline.workflows.tracking import tracking_uri
from basketcast.serving.bundle import Parity

REPORT = {
    "methods": {
        "lightgbm": {"ndcg@10": 0.40},
        "popularity": {"ndcg@10": 0.10},
        "top_frequency": {"ndcg@10": 0.30},
        "tifu_knn": {"ndcg@10": 0.35},
    },
    "ranker_beats_all_baselines": True,
}


def per_user(users: range, ndcg: np.ndarray, target: int = 7) -> pl.DataFrame:
    return pl.DataFrame(
        {
            S.USER: list(users),
            S.TARGET_ORDER_NUMBER: [target] * len(users),
            "ndcg@10": ndcg,
            "recall@10": ndcg,
        }
    )


def evidence(frame: pl.DataFrame | None, diff: float = 0.0, report: dict[str, object] | None = None) -> _Evidence:
    parity = Parity(
        rows=100,
        rows_with_nan=0,
        max_abs_diff_ranking=diff,
        max_abs_diff_basket=0.0,
        users_with_different_top10=0,
    )
    return _Evidence(REPORT if report is None else report, frame, parity)


def by_name(checks: list) -> dict[str, tuple[bool, str]]:  # type: ignore[type-arg]
    return {c.name: (c.passed, c.detail) for c in checks}


RNG = np.random.default_rng(0)
BASE = RNG.uniform(0.2, 0.6, 200)


def test_a_first_candidate_needs_parity_users_and_baselines() -> None:
    ok = by_name(_checks(evidence(per_user(range(200), BASE)), None, min_users=50, margin=0.0))
    assert set(ok) == {"parity", "enough users", "beats the baselines"} and all(p for p, _ in ok.values())
    few = by_name(_checks(evidence(per_user(range(2), BASE[:2])), None, min_users=50, margin=0.0))
    assert few["enough users"] == (False, "2 validation users (minimum 50)")
    broken = by_name(_checks(evidence(per_user(range(200), BASE), diff=3e-3), None, min_users=50, margin=0.0))
    assert not broken["parity"][0]
    below = by_name(
        _checks(
            evidence(per_user(range(200), BASE), report={**REPORT, "ranker_beats_all_baselines": False}),
            None,
            min_users=50,
            margin=0.0,
        )
    )
    assert not below["beats the baselines"][0] and "tifu_knn 0.3500" in below["beats the baselines"][1]


def test_the_champion_is_compared_on_the_same_users_and_orders() -> None:
    champion = evidence(per_user(range(200), BASE))
    better = evidence(per_user(range(200), BASE + 0.01))
    worse = evidence(per_user(range(200), BASE - 0.01))
    assert by_name(_checks(better, champion, 50, 0.0))["not worse than the champion"][0]
    assert not by_name(_checks(worse, champion, 50, 0.0))["not worse than the champion"][0]
    # A margin asks for more than "not worse".
    assert not by_name(_checks(better, champion, 50, 0.02))["not worse than the champion"][0]
    # Equal models are not worse (a retrain with the same seed can replace its twin).
    assert by_name(_checks(champion, champion, 50, 0.0))["not worse than the champion"][0]
    # Only rows keyed by the same (user, target order) are compared: the extra users of the
    # candidate, however good, do not count.
    wider = per_user(range(400), np.concatenate([BASE - 0.01, np.ones(200)]))
    assert not by_name(_checks(evidence(wider), champion, 50, 0.0))["not worse than the champion"][0]


def test_runs_on_other_users_or_other_target_orders_are_not_comparable() -> None:
    champion = evidence(per_user(range(200), BASE))
    other_users = evidence(per_user(range(1000, 1200), BASE + 0.2))
    passed, detail = by_name(_checks(other_users, champion, 50, 0.0))["not worse than the champion"]
    assert not passed and "0 validation (user, order) pairs in common" in detail
    later_orders = evidence(per_user(range(200), BASE + 0.2, target=8))
    assert not by_name(_checks(later_orders, champion, 50, 0.0))["not worse than the champion"][0]


def test_names_follow_the_data_and_the_store_does_not_follow_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert registered_name("8e7cf738c5604927") == "basketcast-8e7cf738c5604927"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    seen = set()
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        monkeypatch.chdir(folder)
        seen.add(tracking_uri())
    assert seen == {f"sqlite:///{tmp_path / 'data-home' / 'basketcast' / 'mlflow' / 'mlflow.db'}"}
    assert not any(p.name in ("mlruns", "artifacts") for p in tmp_path.glob("*/*"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert os.environ["XDG_DATA_HOME"].endswith("data-home")
