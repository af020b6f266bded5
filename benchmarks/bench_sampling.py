"""Does sampling negatives (and a faster learning rate) hurt the ranker? Measured on one set of windows.

Builds the label windows once (default config, ``--budget`` training groups) on a synthetic data
folder, then fits the LightGBM rankers (XGBoost off) for every ``RATE:LEARNING_RATE`` variant and
prints fit time, chosen objective, best iterations, validation NDCG@10 of the ranking and of the
basket (binary) model, and the basket model's log loss and mean probability against the observed
positive rate (calibration). The first variant is the baseline the ratios refer to. No assertions.

    .venv/bin/basketcast generate --users 20621 --out /tmp/data20k
    .venv/bin/python benchmarks/bench_sampling.py --data /tmp/data20k --budget 15000 1.0:0.05 0.3:0.05 0.3:0.1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl

from basketcast.features.history import order_lines
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.model.training import fit_rankers, ndcg_at_10
from basketcast.pipeline.model.windows import build_windows, evaluation_users, roles_of, rows_of
from basketcast.pipeline.progress import Timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--budget", type=int, default=15_000, help="max_training_groups")
    parser.add_argument("variants", nargs="+", help="NEGATIVE_RATE:LEARNING_RATE, e.g. 1.0:0.05")
    args = parser.parse_args()
    data = read_dataset(args.data)
    lines = order_lines(data)
    base = {"max_training_groups": args.budget, "mlflow": False, "xgboost": {"enabled": False}}
    config = TrainConfig.model_validate(base)
    roles = roles_of(data, config)
    windows = build_windows(data, lines, config, Timings(), roles)
    valid = evaluation_users(roles, config)
    rows = rows_of(windows, valid, window0_only=True)
    truth = windows[0].truth.filter(pl.col(S.USER).is_in(valid.implode()))
    y = rows[S.LABEL].to_numpy()
    print(f"{args.data}: {valid.len():,} validation users, {rows.height:,} rows, positive rate {y.mean():.4f}")
    heads = ("rate:lr", "fit s", "objective", "iters", "NDCG@10", "basket", "logloss", "mean p")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (9, 7, 10, 9, 8, 8, 8, 7), strict=True)))
    first = None
    for spec in args.variants:
        rate, lr = (float(x) for x in spec.split(":"))
        cfg = TrainConfig.model_validate({**base, "negative_sample_rate": rate, "lightgbm": {"learning_rate": lr}})
        start = time.perf_counter()
        rankers = fit_rankers(windows, roles, cfg)
        seconds = time.perf_counter() - start
        scores = rankers.score(rows)
        p = np.clip(scores["basket"], 1e-6, 1 - 1e-6)
        logloss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
        ndcg = ndcg_at_10(rows, scores["ranking"], truth)
        first = first or (seconds, ndcg)
        iters = f"{rankers.ranking.best_iteration}/{rankers.basket.best_iteration}"
        print(
            f"{spec:>9} {seconds:7.1f} {rankers.ranking_objective:>10} {iters:>9} {ndcg:8.4f} "
            f"{ndcg_at_10(rows, scores['basket'], truth):8.4f} {logloss:8.4f} {p.mean():7.4f}"
            f"   time ×{seconds / first[0]:.2f}, NDCG@10 ×{ndcg / first[1]:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
