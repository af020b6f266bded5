"""How sure is "the ranker beats TIFU-KNN"? A paired bootstrap over users of a k-fold run.

    .venv/bin/python benchmarks/bootstrap_ci.py --data DATA_DIR [--config FILE.json] [--folds 5]

Runs ``basketcast.pipeline.workflows.validation.cross_validate`` (what ``basketcast evaluate --folds`` runs)
with the given training config — MLflow and XGBoost off: XGBoost is fitted after, and
independently of, the LightGBM ranker — and keeps what it evaluates: every user's last labelled
order, predicted once by rankers that never saw the user. Then, per user, NDCG@10 and Recall@10
(``basketcast.pipeline.metrics.per_key_metrics``) of the ranker, TIFU-KNN and personal top-frequency, and
for each baseline the mean difference with a 95% percentile interval from 10,000 paired
resamples of the users. Prints one line per metric and baseline; no assertion.

``tests/integration/test_heldout.py`` uses the same functions on the committed excerpt; the
figures of BENCHMARKS.md ("What the users support") are this script on the real sample
(``make sample``, then ``--data data/instacart_sample --config configs/instacart_sample.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import polars as pl

import basketcast.pipeline.workflows.validation as validation
from basketcast.features.history import order_lines
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.evaluation.evaluate import baseline_rankings
from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.pipeline.metrics import per_key_metrics
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.ranking import top_k
from basketcast.pipeline.workflows.run_folder import Run

RESAMPLES = 10_000
BASELINES = ("tifu_knn", "top_frequency")
METRICS = ("ndcg@10", "recall@10")


def config_of(path: Path | None) -> TrainConfig:
    """The training config of ``path`` (default: the defaults), MLflow and XGBoost off."""
    given: dict[str, Any] = json.loads(path.read_text()) if path else {}
    given["mlflow"] = False
    given["xgboost"] = {**given.get("xgboost", {}), "enabled": False}
    return TrainConfig.model_validate(given)


@contextmanager
def capturing_evaluation() -> Iterator[dict[str, Any]]:
    """Within the block, ``cross_validate``'s call to ``evaluation_report`` leaves its arguments
    (window, users, rows, scores, config) in the yielded dict."""
    captured: dict[str, Any] = {}
    real = validation.evaluation_report

    def spy(window: Any, users: pl.Series, rows: pl.DataFrame, scores: Any, config: TrainConfig) -> EvaluationReport:
        captured.update(window=window, users=users, rows=rows, scores=scores, config=config)
        return real(window, users, rows, scores, config)

    validation.evaluation_report = spy  # type: ignore[assignment]
    try:
        yield captured
    finally:
        validation.evaluation_report = real


def per_user(evaluated: dict[str, Any]) -> dict[str, pl.DataFrame]:
    """Per-user metrics at 10 (one row per evaluated user, sorted by user) of the ranker and BASELINES."""
    users, window = evaluated["users"], evaluated["window"]
    truth = window.truth.filter(pl.col(S.USER).is_in(users.implode()))
    rankings = baseline_rankings(window, users, 10, evaluated["config"])
    out = {"lightgbm": per_key_metrics(top_k(evaluated["rows"], evaluated["scores"]["ranking"], 10), truth, (10,))}
    out.update({b: per_key_metrics(rankings[b], truth, (10,)) for b in BASELINES})
    return out


def paired_bootstrap(diff: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``diff`` (one value per user), users resampled."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="An ingested data folder.")
    parser.add_argument("--config", type=Path, default=None, help="Training config (JSON); default: the defaults.")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    config = config_of(args.config)
    data = read_dataset(args.data)
    started = time.perf_counter()
    with capturing_evaluation() as evaluated:
        run = cast(Run, SimpleNamespace(config=config))  # cross_validate reads the run's config only
        report = validation.cross_validate(data, order_lines(data), run, args.folds, Timings())
    frames = per_user(evaluated)
    print(
        f"{args.folds}-fold cross-validation of {args.data} ({report.users} users, config "
        f"{args.config or 'defaults'}): {time.perf_counter() - started:.0f} s"
    )
    for metric in METRICS:
        values = {m: f[metric].to_numpy() for m, f in frames.items()}
        print(f"{metric}: " + ", ".join(f"{m} {v.mean():.4f}" for m, v in values.items()))
        for b in BASELINES:
            diff = values["lightgbm"] - values[b]
            lo, hi = paired_bootstrap(diff)
            ratio = values["lightgbm"].mean() / values[b].mean()
            print(f"  ranker - {b}: {diff.mean():+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] (ratio ×{ratio:.3f})")


if __name__ == "__main__":
    main()
