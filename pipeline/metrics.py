"""Offline evaluation metrics: top-K ranking metrics, Kaggle's F1 with "None", repeat/new hits.

Conventions shared by the functions below:

* a *ranking* (``pred``) has columns ``key``, ``S.PRODUCT`` and ``S.RANK`` (1 = best). The rank
  value is the position: a product at rank r counts for every K ≥ r. A (key, product) listed
  twice keeps its best rank. There may be more than max(K) rows per key.
* a *truth* frame has columns ``key`` and ``S.PRODUCT`` (duplicates are ignored): the products
  of the order to predict.
* metric names are ``f"{metric}@{K}"`` (see ``metric_name``), e.g. ``"ndcg@10"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from basketcast.pipeline.data import schema as S

# Metric families (a column/dict name is ``metric_name(family, K)``).
PRECISION: Final = "precision"
RECALL: Final = "recall"
F1: Final = "f1"
NDCG: Final = "ndcg"
HIT_RATE: Final = "hit_rate"
MAP: Final = "map"
METRICS: Final = (PRECISION, RECALL, F1, NDCG, HIT_RATE, MAP)

# Keys of the ``repeat_new_hits`` result.
HITS: Final = "hits"
REPEAT_HITS: Final = "repeat_hits"
NEW_HITS: Final = "new_hits"
REPEAT_SHARE: Final = "repeat_share"
NEW_SHARE: Final = "new_share"
REPEAT_TRUTH: Final = "repeat_truth"
NEW_TRUTH: Final = "new_truth"
REPEAT_RECALL: Final = "repeat_recall"
NEW_RECALL: Final = "new_recall"

# Internal column names (never leave this module).
_N_TRUTH: Final = "_n_truth"
_HIT: Final = "_hit"
_CUM_HITS: Final = "_cum_hits"
_IS_REPEAT: Final = "_is_repeat"
_N_PRED: Final = "_n_pred"
_N_HITS: Final = "_n_hits"


def metric_name(metric: str, k: int) -> str:
    """The name of a metric at cut-off ``k``, e.g. ``metric_name(NDCG, 10) == "ndcg@10"``."""
    return f"{metric}@{k}"


def _truth_sets(truth: pl.DataFrame, key: str) -> pl.DataFrame:
    return truth.select(pl.col(key), pl.col(S.PRODUCT)).unique()


def _hits(pred: pl.DataFrame, truth: pl.DataFrame, key: str, max_rank: int) -> pl.DataFrame:
    """(key, product, rank) of the predicted products (rank ≤ max_rank) that are in the truth."""
    best = (
        pred.select(
            pl.col(key).cast(truth.schema[key]),
            pl.col(S.PRODUCT).cast(truth.schema[S.PRODUCT]),
            pl.col(S.RANK).cast(pl.Int64),
        )
        .filter(pl.col(S.RANK) <= max_rank)
        .group_by(key, S.PRODUCT)
        .agg(pl.col(S.RANK).min())
    )
    return best.join(truth, on=[key, S.PRODUCT], how="inner")


def per_key_metrics(
    pred: pl.DataFrame, truth: pl.DataFrame, ks: Sequence[int] = (5, 10, 20), key: str = S.USER
) -> pl.DataFrame:
    """Ranking metrics of every key of ``truth``.

    Args:
        pred: ranking, columns ``key``, ``S.PRODUCT``, ``S.RANK`` (see module doc). Keys of
            ``truth`` missing here have zero hits; keys absent from ``truth`` are ignored.
        truth: columns ``key``, ``S.PRODUCT``; every key has at least one product.
        ks: cut-offs K (positive integers).
        key: the key column (``S.USER`` by default, or e.g. ``S.ORDER``).

    Returns:
        One row per key of ``truth`` (sorted by key): ``key``, then for each K (in the order of
        ``ks``) the Float64 columns ``precision@K`` (hits/K), ``recall@K`` (hits/|truth|),
        ``f1@K`` (harmonic mean of the two, 0 without a hit), ``ndcg@K`` (binary gains, 1/log2(1+r)
        discount, ideal DCG over min(|truth|, K) positions), ``hit_rate@K`` (1 if any hit) and
        ``map@K`` (Σ over hit ranks r ≤ K of precision@r, divided by min(|truth|, K)).
    """
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    max_k = max(ks)
    t = _truth_sets(truth, key)
    n_truth = t.group_by(key).agg(pl.len().cast(pl.Int64).alias(_N_TRUTH))

    # Hits with their running hit count (for MAP); a hit at rank r adds 1/log2(1+r) to DCG.
    hits = (
        _hits(pred, t, key, max_k)
        .sort(key, S.RANK)
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(key).alias(_CUM_HITS))
    )
    # Ideal DCG of n relevant items: cumulative sum of the discounts, indexed by n (0..max_k).
    idcg_table = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, max_k + 2)))])

    aggs: list[pl.Expr] = []
    for k in ks:
        in_k = pl.col(S.RANK) <= k
        aggs += [
            in_k.sum().cast(pl.Float64).alias(metric_name(_HIT, k)),
            (1.0 / (pl.col(S.RANK).cast(pl.Float64) + 1.0).log(2.0)).filter(in_k).sum().alias(f"_dcg@{k}"),
            (pl.col(_CUM_HITS) / pl.col(S.RANK)).filter(in_k).sum().alias(f"_ap@{k}"),
        ]
    per_key = n_truth.join(hits.group_by(key).agg(aggs), on=key, how="left").with_columns(
        pl.exclude(key, _N_TRUTH).fill_null(0.0)
    )

    cols: list[pl.Expr] = []
    n = pl.col(_N_TRUTH).cast(pl.Float64)
    for k in ks:
        h = pl.col(metric_name(_HIT, k))
        prec = h / k
        rec = h / n
        ideal_n = pl.min_horizontal(pl.col(_N_TRUTH), pl.lit(k, dtype=pl.Int64))
        idcg = pl.lit(pl.Series(idcg_table)).gather(ideal_n)
        cols += [
            prec.alias(metric_name(PRECISION, k)),
            rec.alias(metric_name(RECALL, k)),
            pl.when(h > 0).then(2.0 * prec * rec / (prec + rec)).otherwise(0.0).alias(metric_name(F1, k)),
            (pl.col(f"_dcg@{k}") / idcg).alias(metric_name(NDCG, k)),
            (h > 0).cast(pl.Float64).alias(metric_name(HIT_RATE, k)),
            (pl.col(f"_ap@{k}") / ideal_n.cast(pl.Float64)).alias(metric_name(MAP, k)),
        ]
    return per_key.select(pl.col(key), *cols).sort(key)


def ranking_metrics(
    pred: pl.DataFrame, truth: pl.DataFrame, ks: Sequence[int] = (5, 10, 20), key: str = S.USER
) -> dict[str, float]:
    """Mean over the keys of ``truth`` of ``per_key_metrics`` (same arguments).

    Returns:
        ``{"precision@K": ..., "recall@K": ..., "f1@K": ..., "ndcg@K": ..., "hit_rate@K": ...,
        "map@K": ...}`` for every K of ``ks``; NaN values when ``truth`` is empty.
    """
    per_key = per_key_metrics(pred, truth, ks, key)
    means = per_key.drop(key).mean()
    return {name: (float(means[name][0]) if per_key.height else math.nan) for name in means.columns}


def kaggle_f1(baskets: pl.DataFrame, truth_reordered: pl.DataFrame, key: str) -> float:
    """Mean F1 of the Instacart Kaggle competition, "None" being a token.

    Args:
        baskets: one row per key as produced by ``basketcast.pipeline.model.basket.choose_baskets``: ``key``,
            ``S.BASKET_PRODUCTS`` (List of product ids) and ``S.BASKET_NONE`` (Boolean). The
            predicted set is the products plus the token None when ``none`` is true; an empty
            prediction counts as {None}.
        truth_reordered: ``key`` and ``S.PRODUCT`` of the reordered products only. Evaluated
            over the keys of ``baskets``: a key without truth rows has the true set {None};
            rows of other keys are ignored.
        key: the key column (typically ``S.ORDER``).

    Returns:
        The mean over the keys of ``baskets`` of 2·|pred ∩ truth| / (|pred| + |truth|); NaN when
        ``baskets`` is empty.
    """
    if baskets.height == 0:
        return math.nan
    pred = baskets.select(
        pl.col(key),
        pl.col(S.BASKET_PRODUCTS).list.unique().alias(S.BASKET_PRODUCTS),
        pl.col(S.BASKET_NONE).fill_null(False),
    ).with_columns(
        # An empty prediction is {None}.
        (pl.col(S.BASKET_NONE) | (pl.col(S.BASKET_PRODUCTS).list.len() == 0)).alias(S.BASKET_NONE)
    )
    t = (
        _truth_sets(truth_reordered, key)
        .with_columns(pl.col(key).cast(pred.schema[key]))
        .join(pred.select(key), on=key, how="semi")
    )
    n_truth = t.group_by(key).agg(pl.len().cast(pl.Int64).alias(_N_TRUTH))
    hits = (
        pred.select(pl.col(key), pl.col(S.BASKET_PRODUCTS).alias(S.PRODUCT))
        .explode(S.PRODUCT)
        .drop_nulls()
        .with_columns(pl.col(S.PRODUCT).cast(t.schema[S.PRODUCT]))
        .join(t, on=[key, S.PRODUCT], how="inner")
        .group_by(key)
        .agg(pl.len().cast(pl.Int64).alias(_N_HITS))
    )
    scored = (
        pred.join(n_truth, on=key, how="left")
        .join(hits, on=key, how="left")
        .with_columns(pl.col(_N_TRUTH).fill_null(0), pl.col(_N_HITS).fill_null(0))
        .with_columns(
            (pl.col(S.BASKET_PRODUCTS).list.len().cast(pl.Int64) + pl.col(S.BASKET_NONE).cast(pl.Int64)).alias(_N_PRED),
            # None matches None when nothing was reordered.
            (pl.col(_N_HITS) + (pl.col(S.BASKET_NONE) & (pl.col(_N_TRUTH) == 0)).cast(pl.Int64)).alias(_N_HITS),
            pl.max_horizontal(pl.col(_N_TRUTH), pl.lit(1, dtype=pl.Int64)).alias(_N_TRUTH),
        )
    )
    f1 = scored.select((2.0 * pl.col(_N_HITS) / (pl.col(_N_PRED) + pl.col(_N_TRUTH))).mean()).item()
    return float(f1)


def repeat_new_hits(
    pred: pl.DataFrame, truth: pl.DataFrame, history_pairs: pl.DataFrame, k: int, key: str = S.USER
) -> dict[str, float]:
    """Split the hits@k into repeat products (bought by the key before) and new products.

    Args:
        pred: ranking, columns ``key``, ``S.PRODUCT``, ``S.RANK`` (see module doc).
        truth: columns ``key``, ``S.PRODUCT`` (the target orders); defines the evaluated keys.
        history_pairs: columns ``key``, ``S.PRODUCT``: the products each key bought before the
            target (duplicates ignored).
        k: the cut-off.
        key: the key column.

    Returns:
        ``HITS`` (total hits@k over all keys), ``REPEAT_HITS``, ``NEW_HITS``, ``REPEAT_SHARE``
        and ``NEW_SHARE`` (shares of the hits, NaN without hits), ``REPEAT_TRUTH`` and
        ``NEW_TRUTH`` (number of true (key, product) pairs of each kind), ``REPEAT_RECALL`` and
        ``NEW_RECALL`` (pooled hits / truth pairs of that kind, NaN when there are none).
    """
    t = _truth_sets(truth, key)
    seen = history_pairs.select(pl.col(key), pl.col(S.PRODUCT)).unique().with_columns(pl.lit(True).alias(_IS_REPEAT))
    t = t.join(seen, on=[key, S.PRODUCT], how="left").with_columns(pl.col(_IS_REPEAT).fill_null(False))
    hits = _hits(pred, t, key, k)
    n_hits = hits.height
    n_repeat_hits = int(hits[_IS_REPEAT].sum())
    n_repeat_truth = int(t[_IS_REPEAT].sum())
    n_new_truth = t.height - n_repeat_truth

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    return {
        HITS: float(n_hits),
        REPEAT_HITS: float(n_repeat_hits),
        NEW_HITS: float(n_hits - n_repeat_hits),
        REPEAT_SHARE: ratio(n_repeat_hits, n_hits),
        NEW_SHARE: ratio(n_hits - n_repeat_hits, n_hits),
        REPEAT_TRUTH: float(n_repeat_truth),
        NEW_TRUTH: float(n_new_truth),
        REPEAT_RECALL: ratio(n_repeat_hits, n_repeat_truth),
        NEW_RECALL: ratio(n_hits - n_repeat_hits, n_new_truth),
    }
