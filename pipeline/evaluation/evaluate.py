"""Honest offline evaluation: the ranker against every baseline on the same held-out orders.

For the evaluated users (never trained on), each method ranks products for the window-0 target
order from the history before it. Reported side by side: global popularity, personal
top-frequency, TIFU-KNN, ALS alone, the LightGBM ranker and the XGBoost baseline — precision,
recall, F1, NDCG, hit rate and MAP at each K; the Kaggle F1 of F1-optimal baskets against
top-frequency baskets of the best fixed size; candidate recall (repeat / new); the repeat/new
split of the hits; and the calibration of the basket probabilities. ``write_report`` renders it
as JSON, a Markdown table and PNG plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.config import TrainConfig
from pipeline.data import schema as S
from pipeline.data.storage import write_json
from pipeline.evaluation import baselines
from pipeline.metrics import kaggle_f1, per_key_metrics, ranking_metrics, repeat_new_hits
from pipeline.model.basket import choose_baskets
from pipeline.model.training import Window, top_k

CURVE_KS = tuple(range(1, 21))
RANKER = "lightgbm"
RANKER_METHODS = {RANKER: "ranking", "xgboost": "xgboost"}
BASELINES = ("popularity", "top_frequency", "tifu_knn", "als")


def baseline_rankings(window: Window, users: pl.Series, k: int, config: TrainConfig) -> dict[str, pl.DataFrame]:
    """Top-k lists of every baseline for ``users`` from the window's visible history."""
    hist = window.history.lines.select(S.USER, S.ORDER_NUMBER, S.PRODUCT)
    als = window.als.top_items(users.sort().to_numpy(), k)
    als = als.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.UInt16).over(S.USER).alias(S.RANK))
    return {
        # History lines are distinct (ingest guarantees unique (order, product) lines).
        "popularity": baselines.global_popularity(hist, users, k, distinct=True),
        "top_frequency": baselines.top_frequency(hist, users, k, distinct=True),
        "tifu_knn": baselines.tifu_knn(hist, users, k, n_neighbors=config.evaluation.tifu_neighbors, distinct=True),
        "als": als,
    }


def candidate_recall(rows: pl.DataFrame, truth: pl.DataFrame, history_pairs: pl.DataFrame) -> dict[str, float]:
    """Share of true (user, product) pairs inside the candidate set, overall / repeat / new."""
    t = truth.join(history_pairs.with_columns(pl.lit(True).alias("_repeat")), on=[S.USER, S.PRODUCT], how="left")
    t = (
        t.with_columns(pl.col("_repeat").fill_null(False))
        .join(rows.select(S.USER, S.PRODUCT, pl.lit(True).alias("_cand")), on=[S.USER, S.PRODUCT], how="left")
        .with_columns(pl.col("_cand").fill_null(False))
    )

    def share(frame: pl.DataFrame) -> float:
        return float(frame["_cand"].mean()) if frame.height else math.nan  # type: ignore[arg-type]

    return {
        "all": share(t),
        "repeat": share(t.filter(pl.col("_repeat"))),
        "new": share(t.filter(~pl.col("_repeat"))),
        "repeat_truth_share": float(t["_repeat"].mean()) if t.height else math.nan,  # type: ignore[arg-type]
        "candidates_per_user": rows.height / max(rows[S.USER].n_unique(), 1),
    }


def calibration_bins(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Equal-count bins of predicted probability: mean prediction, observed rate, count."""
    order = np.argsort(prob, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if chunk.size:
            out.append(
                {
                    "predicted": float(prob[chunk].mean()),
                    "observed": float(label[chunk].mean()),
                    "count": int(chunk.size),
                }
            )
    return out


def _basket_f1(rows: pl.DataFrame, probs: np.ndarray, users: pl.Series, truth_reordered: pl.DataFrame) -> float:
    """Kaggle F1 of F1-optimal baskets over the repeat candidates' probabilities."""
    scored = rows.select(S.USER, S.PRODUCT, S.IS_REPEAT).with_columns(pl.Series(S.SCORE, probs))
    baskets = choose_baskets(scored.filter(pl.col(S.IS_REPEAT)), S.USER, keys=users)
    return kaggle_f1(baskets, truth_reordered, S.USER)


def _fixed_size_f1(ranking: pl.DataFrame, users: pl.Series, truth_reordered: pl.DataFrame) -> dict[str, float]:
    """Kaggle F1 of the top-k of a ranking for each fixed k; returns the best k and its F1."""
    best = {"k": 0.0, "f1": -1.0}
    for k in CURVE_KS:
        baskets = (
            ranking.filter(pl.col(S.RANK) <= k)
            .group_by(S.USER)
            .agg(pl.col(S.PRODUCT).alias("products"))
            .with_columns(pl.lit(False).alias("none"))
        )
        baskets = (
            pl.DataFrame({S.USER: users})
            .join(baskets, on=S.USER, how="left")
            .with_columns(
                pl.col("products").fill_null(pl.lit([], dtype=pl.List(pl.UInt32))),
                pl.col("none").fill_null(False),
            )
        )
        f1 = kaggle_f1(baskets, truth_reordered, S.USER)
        if f1 > best["f1"]:
            best = {"k": float(k), "f1": f1}
    return best


def evaluation_report(
    window: Window,
    users: pl.Series,
    rows: pl.DataFrame,
    scores: Mapping[str, np.ndarray],
    config: TrainConfig,
) -> dict[str, Any]:
    """Evaluate ``users`` at window 0.

    ``rows``: the window-0 candidate rows of those users (frame columns incl. LABEL, S.IS_REPEAT);
    ``scores``: per row, ``ranking`` (the ranker), ``basket`` (calibrated probability) and
    optionally ``xgboost``. Returns the report as a JSON-able dict.
    """
    users = users.sort()
    truth = window.truth.filter(pl.col(S.USER).is_in(users.implode()))
    users = users.filter(users.is_in(truth[S.USER].unique().implode()))
    truth_reordered = truth.filter(pl.col(S.REORDERED) == 1)
    history_pairs = window.history.user_products.select(S.USER, S.PRODUCT).filter(pl.col(S.USER).is_in(users.implode()))
    kmax = max(max(config.evaluation.ks), max(CURVE_KS))
    rankings = baseline_rankings(window, users, kmax, config)
    for method, score_name in RANKER_METHODS.items():
        if score_name in scores:
            rankings[method] = top_k(rows, scores[score_name], kmax)

    ks = config.evaluation.ks
    methods = {name: ranking_metrics(r, truth, ks) for name, r in rankings.items()}
    curves = {
        name: {k: v for k, v in per_key_metrics(r, truth, CURVE_KS).drop(S.USER).mean().row(0, named=True).items()}
        for name, r in rankings.items()
    }
    baskets = {"lightgbm_f1_optimal": _basket_f1(rows, scores["basket"], users, truth_reordered)}
    if "xgboost" in scores:
        baskets["xgboost_f1_optimal"] = _basket_f1(rows, scores["xgboost"], users, truth_reordered)
    fixed = _fixed_size_f1(rankings["top_frequency"], users, truth_reordered)
    baskets["top_frequency_best_fixed_size"] = fixed["f1"]
    baskets["top_frequency_best_k"] = fixed["k"]

    ranker = methods[RANKER]
    ratios = {
        f"{m}@10_vs_{b}": ranker[f"{m}@10"] / methods[b][f"{m}@10"] if methods[b][f"{m}@10"] else math.nan
        for m in ("ndcg", "recall")
        for b in BASELINES
    }
    beats_all = all(ranker["ndcg@10"] > methods[b]["ndcg@10"] for b in BASELINES)
    return {
        "users": users.len(),
        "candidate_rows": rows.height,
        "methods": methods,
        "curves": curves,
        "kaggle_f1": baskets,
        "candidate_recall": candidate_recall(rows, truth, history_pairs),
        "repeat_new_hits@10": repeat_new_hits(rankings[RANKER], truth, history_pairs, 10),
        "calibration": calibration_bins(scores["basket"], rows[S.LABEL].to_numpy()),
        "ratios": ratios,
        "ranker_beats_all_baselines": beats_all,
    }


def markdown(report: Mapping[str, Any], title: str = "Evaluation") -> str:
    """The report as a Markdown document (tables of metrics, baskets, candidate recall)."""
    ks = sorted({int(name.split("@")[1]) for name in next(iter(report["methods"].values()))})
    cols = [f"{m}@{k}" for k in ks for m in ("precision", "recall", "f1", "ndcg", "hit_rate", "map")]
    lines = [
        f"# {title}",
        "",
        f"Users evaluated: {report['users']} (held out; never trained on). Candidate rows: {report['candidate_rows']}.",
        "",
    ]
    lines.append("| method | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for name, metrics in report["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in cols) + " |")
    lines += ["", "## Kaggle F1 (mean F1 of the basket vs the reordered products, 'None' as a token)", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in report["kaggle_f1"].items()]
    lines += ["", "## Ranker vs baselines at 10", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in report["ratios"].items()]
    cr = report["candidate_recall"]
    lines += [
        "",
        "## Candidate recall",
        "",
        f"- all: {cr['all']:.4f}, repeat: {cr['repeat']:.4f}, new: {cr['new']:.4f} "
        f"(repeat share of truth {cr['repeat_truth_share']:.3f}; {cr['candidates_per_user']:.1f} candidates/user)",
    ]
    rn = report["repeat_new_hits@10"]
    lines += [
        "",
        "## Ranker hits@10: repeat vs new",
        "",
        f"- hits {rn['hits']}: repeat share {rn['repeat_share']:.3f}, new share {rn['new_share']:.3f}",
    ]
    return "\n".join(lines) + "\n"


def plot_report(report: Mapping[str, Any], out: Path, importance: Mapping[str, float] | None = None) -> list[Path]:
    """precision_recall_at_k.png, calibration.png and (with ``importance``) feature_importance.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in report["curves"].items():
        axes[0].plot(CURVE_KS, [curve[f"precision@{k}"] for k in CURVE_KS], marker=".", label=name)
        axes[1].plot(CURVE_KS, [curve[f"recall@{k}"] for k in CURVE_KS], marker=".", label=name)
    for ax, metric in zip(axes, ("precision", "recall"), strict=True):
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_title(f"{metric}@K on held-out users")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "precision_recall_at_k.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    cal = report["calibration"]
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
    ax.plot([c["predicted"] for c in cal], [c["observed"] for c in cal], marker="o", label="basket model")
    ax.set_xlabel("predicted probability (decile mean)")
    ax.set_ylabel("observed share in next order")
    ax.set_title("Calibration of basket probabilities")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / "calibration.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    if importance:
        top = sorted(importance.items(), key=lambda kv: kv[1])[-25:]
        fig, ax = plt.subplots(figsize=(6.5, 7))
        ax.barh([k for k, _ in top], [v for _, v in top])
        ax.set_xlabel("total gain")
        ax.set_title("Ranker feature importance (top 25)")
        fig.tight_layout()
        paths.append(out / "feature_importance.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def write_report(report: Mapping[str, Any], out: Path, title: str, importance: Mapping[str, float] | None) -> None:
    """report.json, report.md and the plots into folder ``out`` (which must exist)."""
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report, title))
    plot_report(report, out, importance)
