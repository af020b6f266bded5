"""Ablation of the sequence network (issue: deep learning in the ranker), k-fold, paired by user.

    .venv/bin/python benchmarks/bench_sequence.py --data DATA_DIR [--folds 5] [--config FILE.json]

Runs ``basketcast.pipeline.workflows.validation.cross_validate`` (what ``basketcast evaluate --folds`` runs)
twice in this process with the same config — the sequence network on (the default) and off —
MLflow and XGBoost off. Every user's last labelled order is predicted once per arm by rankers
that never saw the user. Prints, per arm and for the network alone and TIFU-KNN: NDCG@10,
Recall@10, P@5, Kaggle F1 (the product rule for P(None), and the network's None row), the
repeat / explore split; then paired bootstrap 95% intervals (10,000 resamples of the users) of
"ranker with − ranker without", "ranker with − TIFU-KNN", "network alone − TIFU-KNN". No assertion:
the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import polars as pl
from bootstrap_ci import capturing_evaluation

import basketcast.pipeline.workflows.validation as validation
from basketcast.features.history import order_lines
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.evaluation.bootstrap import paired_bootstrap
from basketcast.pipeline.evaluation.evaluate import baseline_rankings, network_ranking
from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.pipeline.metrics import per_key_metrics
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.ranking import top_k
from basketcast.pipeline.workflows.run_folder import Run

METRICS = ("ndcg@10", "recall@10", "precision@5")


def config_of(path: Path | None, network: bool) -> TrainConfig:
    given: dict[str, Any] = json.loads(path.read_text()) if path else {}
    given["mlflow"] = False
    given["xgboost"] = {**given.get("xgboost", {}), "enabled": False}
    given["sequence"] = {**given.get("sequence", {}), "enabled": network}
    return TrainConfig.model_validate(given)


def arm(
    data: Any, lines: pl.DataFrame, config: TrainConfig, folds: int
) -> tuple[EvaluationReport, dict[str, Any], float]:
    started = time.perf_counter()
    with capturing_evaluation() as evaluated:
        run = cast(Run, SimpleNamespace(config=config))
        report = validation.cross_validate(data, lines, run, folds, Timings())
    return report, dict(evaluated), time.perf_counter() - started


def per_user(evaluated: dict[str, Any], with_network: bool) -> dict[str, pl.DataFrame]:
    users, window, rows = evaluated["users"], evaluated["window"], evaluated["rows"]
    truth = window.truth.filter(pl.col(S.USER).is_in(users.implode()))
    ks = (5, 10)
    out = {"ranker": per_key_metrics(top_k(rows, evaluated["scores"]["ranking"], 10), truth, ks)}
    if with_network:
        net = network_ranking(rows, 10)
        assert net is not None
        out["network"] = per_key_metrics(net, truth, ks)
        out["tifu_knn"] = per_key_metrics(
            baseline_rankings(window, users, 10, evaluated["config"])["tifu_knn"], truth, ks
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    data = read_dataset(args.data)
    lines = order_lines(data)
    with_report, with_eval, t_with = arm(data, lines, config_of(args.config, True), args.folds)
    without_report, without_eval, t_without = arm(data, lines, config_of(args.config, False), args.folds)
    a = per_user(with_eval, True)
    b = per_user(without_eval, False)
    frames = {
        "ranker + network": a["ranker"],
        "ranker without network": b["ranker"],
        "network alone": a["network"],
        "tifu_knn": a["tifu_knn"],
    }
    users = frames["ranker + network"][S.USER]
    assert all(f[S.USER].equals(users) for f in frames.values()), "arms evaluated different users"
    print(
        f"{args.folds}-fold, {args.data}: {users.len()} users; with network {t_with:.0f} s, without {t_without:.0f} s"
    )
    print("| method | " + " | ".join(METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for name, f in frames.items():
        print(f"| {name} | " + " | ".join(f"{f[m].to_numpy().mean():.4f}" for m in METRICS) + " |")
    print("\nKaggle F1 (with network): " + json.dumps({k: round(v, 4) for k, v in with_report.kaggle_f1.items()}))
    print("Kaggle F1 (without network): " + json.dumps({k: round(v, 4) for k, v in without_report.kaggle_f1.items()}))
    print("\nrepeat / explore at 10 (with network):")
    for method, row in with_report.repeat_explore.items():
        print(f"  {method}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    rw = without_report.repeat_explore.get("lightgbm", {})
    print("  lightgbm without network: " + ", ".join(f"{k} {v:.4f}" for k, v in rw.items()))
    print("\npaired bootstrap, 95% interval of the mean per-user difference (10,000 resamples):")
    for left, right in (
        ("ranker + network", "ranker without network"),
        ("ranker + network", "tifu_knn"),
        ("ranker without network", "tifu_knn"),
        ("network alone", "tifu_knn"),
    ):
        for m in METRICS:
            x, y = frames[left][m].to_numpy(), frames[right][m].to_numpy()
            d = paired_bootstrap(x, y)
            print(f"  {left} − {right}, {m}: {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}] (×{x.mean() / y.mean():.3f})")


if __name__ == "__main__":
    main()
