"""Honest offline evaluation: the ranker against every baseline on the same held-out orders.

For the evaluated users (never trained on), each method ranks products for the window-0 target
order from the history before it. Reported side by side: global popularity, personal
top-frequency, TIFU-KNN, ALS alone, the LightGBM ranker and the XGBoost baseline — precision,
recall, F1, NDCG, hit rate and MAP at each K; the Kaggle F1 of F1-optimal baskets against
top-frequency baskets of the best fixed size; candidate recall (repeat / new); the repeat/new
split of the hits; and the calibration of the basket probabilities. The report's shape and its
files: ``basketcast.pipeline.evaluation.report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import polars as pl

from basketcast.features.sequence import SEQ_LOGIT, SEQ_NONE
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.evaluation import baselines
from basketcast.pipeline.evaluation.report import (
    BASELINES,
    CURVE_KS,
    RANKER,
    SEQUENCE,
    XGBOOST,
    CalibrationBin,
    CandidateRecall,
    EvaluationReport,
    RepeatNewHits,
)
from basketcast.pipeline.metrics import kaggle_f1, per_key_metrics, ranking_metrics, repeat_new_hits
from basketcast.pipeline.model.basket import NONE_SOURCES, choose_baskets
from basketcast.pipeline.model.windows import Window
from basketcast.pipeline.ranking import rank_within, top_k

RANKER_METHODS = {RANKER: "ranking", XGBOOST: "xgboost"}  # method → its entry in the rankers' scores


def baseline_rankings(window: Window, users: pl.Series, k: int, config: TrainConfig) -> dict[str, pl.DataFrame]:
    """Top-k lists of every baseline for ``users`` from the window's visible history."""
    hist = window.history.lines.select(S.USER, S.ORDER_NUMBER, S.PRODUCT)
    als = window.als.top_items(users.sort().to_numpy(), k)
    als = als.with_columns(rank_within(S.USER))
    return {
        # History lines are distinct (ingest guarantees unique (order, product) lines).
        "popularity": baselines.global_popularity(hist, users, k, distinct=True),
        "top_frequency": baselines.top_frequency(hist, users, k, distinct=True),
        "tifu_knn": baselines.tifu_knn(hist, users, k, n_neighbors=config.evaluation.tifu_neighbors, distinct=True),
        "als": als,
    }


def candidate_recall(rows: pl.DataFrame, truth: pl.DataFrame, history_pairs: pl.DataFrame) -> CandidateRecall:
    """Share of true (user, product) pairs inside the candidate set, overall / repeat / new."""
    t = truth.join(history_pairs.with_columns(pl.lit(True).alias("_repeat")), on=[S.USER, S.PRODUCT], how="left")
    t = (
        t.with_columns(pl.col("_repeat").fill_null(False))
        .join(rows.select(S.USER, S.PRODUCT, pl.lit(True).alias("_cand")), on=[S.USER, S.PRODUCT], how="left")
        .with_columns(pl.col("_cand").fill_null(False))
    )

    def share(frame: pl.DataFrame) -> float:
        return float(frame["_cand"].mean()) if frame.height else math.nan  # type: ignore[arg-type]

    return CandidateRecall(
        all=share(t),
        repeat=share(t.filter(pl.col("_repeat"))),
        new=share(t.filter(~pl.col("_repeat"))),
        repeat_truth_share=float(t["_repeat"].mean()) if t.height else math.nan,  # type: ignore[arg-type]
        candidates_per_user=rows.height / max(rows[S.USER].n_unique(), 1),
    )


def calibration_bins(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> list[CalibrationBin]:
    """Equal-count bins of predicted probability: mean prediction, observed rate, count."""
    order = np.argsort(prob, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if chunk.size:
            out.append(
                CalibrationBin(
                    predicted=float(prob[chunk].mean()), observed=float(label[chunk].mean()), count=int(chunk.size)
                )
            )
    return out


def _basket_f1(
    rows: pl.DataFrame,
    probs: np.ndarray,
    users: pl.Series,
    truth_reordered: pl.DataFrame,
    p_none: pl.DataFrame | None = None,
    none_weight: float = 1.0,
) -> float:
    """Kaggle F1 of F1-optimal baskets over the repeat candidates' probabilities (``p_none``: each
    user's P(None) from the sequence network, mixed with Π(1 - p) by ``none_weight``)."""
    scored = rows.select(S.USER, S.PRODUCT, S.IS_REPEAT).with_columns(pl.Series(S.SCORE, probs))
    baskets = choose_baskets(
        scored.filter(pl.col(S.IS_REPEAT)), S.USER, keys=users, p_none=p_none, none_weight=none_weight
    )
    return kaggle_f1(baskets, truth_reordered, S.USER)


def network_none(rows: pl.DataFrame) -> pl.DataFrame | None:
    """Each user's ``seq_none`` (USER, SCORE), or None when the rows carry no network output."""
    if SEQ_NONE not in rows.columns or rows[SEQ_NONE].is_nan().all():
        return None
    return rows.group_by(S.USER).agg(pl.col(SEQ_NONE).first().alias(S.SCORE))


def choose_none_source(window: Window, rows: pl.DataFrame, probs: np.ndarray, users: pl.Series) -> str:
    """The P(None) source (``NONE_SOURCES``) with the best Kaggle F1 on ``users`` (the stop users);
    the product rule when the rows carry no network output or on a tie."""
    p_none = network_none(rows)
    if p_none is None:
        return "product"
    truth = window.truth.filter((pl.col(S.REORDERED) == 1) & pl.col(S.USER).is_in(users.implode()))
    f1 = {
        source: _basket_f1(rows, probs, users, truth, None if w == 0 else p_none, w)
        for source, w in NONE_SOURCES.items()
    }
    return max(f1, key=lambda s: (f1[s], -NONE_SOURCES[s]))


def network_ranking(rows: pl.DataFrame, k: int) -> pl.DataFrame | None:
    """The sequence network alone: the user's past products by ``seq_logit`` (None without it)."""
    if SEQ_LOGIT not in rows.columns or rows[SEQ_LOGIT].is_nan().all():
        return None
    logit = rows[SEQ_LOGIT].to_numpy().astype(np.float64)
    repeat = rows.filter(~np.isnan(logit))
    return top_k(repeat, logit[~np.isnan(logit)], k)


def repeat_explore(
    rankings: Mapping[str, pl.DataFrame], truth: pl.DataFrame, history_pairs: pl.DataFrame, k: int = 10
) -> dict[str, dict[str, float]]:
    """Per method, NDCG@k and Recall@k against the repeat part of the truth (products the user
    bought before; users with such truth) and against the explore part (new to the user)."""
    flagged = truth.join(
        history_pairs.select(S.USER, S.PRODUCT).unique().with_columns(pl.lit(True).alias("_r")),
        on=[S.USER, S.PRODUCT],
        how="left",
    ).with_columns(pl.col("_r").fill_null(False))
    parts = {"repeat": flagged.filter(pl.col("_r")), "explore": flagged.filter(~pl.col("_r"))}
    out: dict[str, dict[str, float]] = {}
    for name, ranking in rankings.items():
        row: dict[str, float] = {}
        for part, t in parts.items():
            m = ranking_metrics(ranking, t.select(S.USER, S.PRODUCT), (k,)) if t.height else {}
            row[f"{part}_ndcg@{k}"] = m.get(f"ndcg@{k}", math.nan)
            row[f"{part}_recall@{k}"] = m.get(f"recall@{k}", math.nan)
            row[f"{part}_users"] = float(t[S.USER].n_unique())
        out[name] = row
    return out


def _fixed_size_f1(ranking: pl.DataFrame, users: pl.Series, truth_reordered: pl.DataFrame) -> dict[str, float]:
    """Kaggle F1 of the top-k of a ranking for each fixed k; returns the best k and its F1."""
    best = {"k": 0.0, "f1": -1.0}
    for k in CURVE_KS:
        baskets = (
            ranking.filter(pl.col(S.RANK) <= k)
            .group_by(S.USER)
            .agg(pl.col(S.PRODUCT).alias(S.BASKET_PRODUCTS))
            .with_columns(pl.lit(False).alias(S.BASKET_NONE))
        )
        baskets = (
            pl.DataFrame({S.USER: users})
            .join(baskets, on=S.USER, how="left")
            .with_columns(
                pl.col(S.BASKET_PRODUCTS).fill_null(pl.lit([], dtype=pl.List(pl.UInt32))),
                pl.col(S.BASKET_NONE).fill_null(False),
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
) -> EvaluationReport:
    """Evaluate ``users`` at window 0.

    ``rows``: the window-0 candidate rows of those users (frame columns incl. LABEL, S.IS_REPEAT);
    ``scores``: per row, ``ranking`` (the ranker), ``basket`` (calibrated probability) and
    optionally ``xgboost``.
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
    network = network_ranking(rows, kmax)
    if network is not None:
        rankings[SEQUENCE] = network

    ks = config.evaluation.ks
    methods = {name: ranking_metrics(r, truth, ks) for name, r in rankings.items()}
    curves = {
        name: {k: v for k, v in per_key_metrics(r, truth, CURVE_KS).drop(S.USER).mean().row(0, named=True).items()}
        for name, r in rankings.items()
    }
    baskets = {"lightgbm_f1_optimal": _basket_f1(rows, scores["basket"], users, truth_reordered)}
    p_none = network_none(rows)
    if p_none is not None:
        # P(None) from the network's None row instead of Π(1 - p) (whose independence assumption
        # the None row does not make), and the mean of the two.
        for source in ("network", "mean"):
            baskets[f"lightgbm_f1_optimal_{source}_none"] = _basket_f1(
                rows, scores["basket"], users, truth_reordered, p_none, NONE_SOURCES[source]
            )
    if XGBOOST in scores:
        baskets["xgboost_f1_optimal"] = _basket_f1(rows, scores[XGBOOST], users, truth_reordered)
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
    return EvaluationReport(
        users=users.len(),
        candidate_rows=rows.height,
        methods=methods,
        curves=curves,
        kaggle_f1=baskets,
        candidate_recall=candidate_recall(rows, truth, history_pairs),
        repeat_new_hits_at_10=RepeatNewHits(**repeat_new_hits(rankings[RANKER], truth, history_pairs, 10)),
        calibration=calibration_bins(scores["basket"], rows[S.LABEL].to_numpy()),
        ratios=ratios,
        ranker_beats_all_baselines=beats_all,
        repeat_explore=repeat_explore(rankings, truth, history_pairs),
    )


PER_USER_METRICS = ("ndcg@10", "recall@10")


def per_user_metrics(window: Window, users: pl.Series, rows: pl.DataFrame, ranking: np.ndarray) -> pl.DataFrame:
    """The ranker's NDCG@10 and Recall@10 of each evaluated user, keyed by the order it predicts.

    One row per user of ``users`` with a target order at window 0 (the users of the report):
    ``user_id``, ``target_order_number``, ``ndcg@10``, ``recall@10``. Promotion compares two
    models on the (user, target order) pairs both were evaluated on
    (``basketcast.pipeline.workflows.registry``), so the pair is part of the key.
    """
    users = users.sort()
    truth = window.truth.filter(pl.col(S.USER).is_in(users.implode()))
    metrics = per_key_metrics(top_k(rows, ranking, 10), truth, [10]).select(S.USER, *PER_USER_METRICS)
    targets = window.history.cutoffs.select(S.USER, S.TARGET_ORDER_NUMBER)
    return metrics.join(targets, on=S.USER, how="left").select(S.USER, S.TARGET_ORDER_NUMBER, *PER_USER_METRICS)
