"""Simple next-basket baselines: global popularity, personal top frequency and TIFU-KNN.

The TIFU-KNN user vectors and neighbour search live in :mod:`basketcast.features.tifu` (the ranker reads
them as features too); this module ranks with them.

Common input:

* ``history``: the visible order lines, columns ``S.USER``, ``S.ORDER_NUMBER``, ``S.PRODUCT``
  (already cut before each user's target order by the caller). A product listed twice in the
  same order counts once.
* ``users``: the user ids to predict for (any sequence or Series; duplicates ignored). A user
  without history gets the global popularity list.
* ``k``: the number of products to return per user.

Common output: a DataFrame ``S.USER`` (UInt32), ``S.PRODUCT`` (UInt32), ``S.SCORE`` (Float32),
``S.RANK`` (UInt16, 1 = best), sorted by user then rank, with exactly k rows per user. When a
method scores fewer than k products for a user, the list is padded with the globally most
popular products (most order lines in ``history``, ties by smaller product id) not already
listed, with score 0. Only if ``history`` has fewer than k distinct products do users get fewer
rows (all the products).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from basketcast.features.tifu import TifuSpace, distinct_lines
from basketcast.pipeline.data import schema as S

# Internal column names (never leave this module).
_N: Final = "_n"  # a user's number of visible orders
_LAST: Final = "_last"
_POP: Final = "_pop"
_ROW: Final = "_row"
_COL: Final = "_col"

_OUT_SCHEMA: Final = pl.Schema(
    {S.USER: pl.UInt32(), S.PRODUCT: pl.UInt32(), S.SCORE: pl.Float32(), S.RANK: pl.UInt16()}
)


def _user_series(users: Sequence[int] | pl.Series | np.ndarray) -> pl.Series:
    return pl.Series(S.USER, users).cast(pl.UInt32).unique().sort()


def _popularity(lines: pl.DataFrame) -> pl.DataFrame:
    """Products by decreasing number of order lines, ties by product id: PRODUCT, SCORE, _POP."""
    return (
        lines.group_by(S.PRODUCT)
        .agg(pl.len().cast(pl.Float64).alias(S.SCORE))
        .sort([S.SCORE, S.PRODUCT], descending=[True, False])
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(_POP))
    )


def _finish(ranked: pl.DataFrame, users: pl.Series, k: int, popular: pl.DataFrame) -> pl.DataFrame:
    """Assemble the output from per-user ranked lists, padding with popular products.

    Args:
        ranked: USER, PRODUCT, SCORE, RANK (1-based, dense per user, at most k per user).
        users: the users to return (UInt32 Series named USER, unique).
        k: rows per user.
        popular: ``_popularity`` of the history.
    """
    ranked = ranked.join(pl.DataFrame(users), on=S.USER, how="semi").filter(pl.col(S.RANK) <= k)
    counts = pl.DataFrame(users).join(ranked.group_by(S.USER).agg(pl.len().alias(_N)), on=S.USER, how="left")
    short = counts.filter(pl.col(_N).fill_null(0) < k).select(S.USER, pl.col(_N).fill_null(0))
    top_pop = popular.head(k).select(S.PRODUCT, _POP)
    pads = (
        short.join(top_pop, how="cross")
        .join(ranked.select(S.USER, S.PRODUCT), on=[S.USER, S.PRODUCT], how="anti")
        .sort(S.USER, _POP)
        .with_columns((pl.col(_N) + 1 + pl.int_range(pl.len()).over(S.USER)).alias(S.RANK))
        .filter(pl.col(S.RANK) <= k)
        .with_columns(pl.lit(0.0).alias(S.SCORE))
    )
    out = pl.concat(
        [
            ranked.select(S.USER, S.PRODUCT, S.SCORE, S.RANK).cast(_OUT_SCHEMA),
            pads.select(S.USER, S.PRODUCT, S.SCORE, S.RANK).cast(_OUT_SCHEMA),
        ]
    )
    return out.sort(S.USER, S.RANK)


def _rank_top_k(scored: pl.DataFrame, k: int, by: list[str], descending: list[bool]) -> pl.DataFrame:
    """Keep the k best rows per user ordered by ``by``; add RANK 1..k."""
    return (
        scored.sort([S.USER, *by], descending=[False, *descending])
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(S.USER).alias(S.RANK))
        .filter(pl.col(S.RANK) <= k)
    )


def global_popularity(
    history: pl.DataFrame, users: Sequence[int] | pl.Series | np.ndarray, k: int, *, distinct: bool = False
) -> pl.DataFrame:
    """The k products with the most order lines in ``history``, the same list for every user.

    Score: number of order lines of the product (as Float32). Ties: smaller product id first.
    Output as described in the module doc.
    """
    lines = distinct_lines(history, distinct)
    popular = _popularity(lines)
    u = _user_series(users)
    ranked = (
        pl.DataFrame(u)
        .join(popular.head(k), how="cross")
        .with_columns((pl.col(_POP) + 1).alias(S.RANK))
        .select(S.USER, S.PRODUCT, S.SCORE, S.RANK)
    )
    return _finish(ranked, u, k, popular)


def top_frequency(
    history: pl.DataFrame, users: Sequence[int] | pl.Series | np.ndarray, k: int, *, distinct: bool = False
) -> pl.DataFrame:
    """Each user's own most frequently bought products ("personal top-k").

    Score: number of the user's visible orders containing the product (Float32). Ties: more
    recent last purchase (larger order number) first, then smaller product id. Padded with
    popular products (score 0) as described in the module doc.
    """
    lines = distinct_lines(history, distinct)
    popular = _popularity(lines)
    u = _user_series(users)
    scored = (
        lines.join(pl.DataFrame(u), on=S.USER, how="semi")
        .group_by(S.USER, S.PRODUCT)
        .agg(pl.len().cast(pl.Float64).alias(S.SCORE), pl.col(S.ORDER_NUMBER).max().alias(_LAST))
    )
    ranked = _rank_top_k(scored, k, [S.SCORE, _LAST, S.PRODUCT], [True, True, False])
    return _finish(ranked, u, k, popular)


def _dense_rank(r: np.ndarray) -> np.ndarray:
    """1-based position of each element within its run of equal values of the sorted ``r``."""
    if r.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    run_len = np.diff(np.r_[starts, r.size])
    return np.arange(r.size) - np.repeat(starts, run_len) + 1


def _top_k_rows(dense: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k largest positive entries of every row of the dense (b, P) matrix ``dense``.

    Ties are resolved towards the smaller column index, so the result is deterministic.

    Returns:
        (row, col, value) arrays sorted by row, then value descending, then column; at most k
        entries per row.
    """
    b, P = dense.shape
    if b == 0 or P == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dense.dtype)
    if 0 < k < P:
        thr = -np.partition(-dense, k - 1, axis=1)[:, k - 1 : k]  # k-th largest value per row
        keep = (dense >= thr) & (dense > 0)
    else:
        keep = dense > 0
    r, c = np.nonzero(keep)  # only the entries ≥ the k-th value: k per row (more with ties)
    v = dense[r, c]
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    top = _dense_rank(r) <= k
    return r[top], c[top], v[top]


def tifu_knn(
    history: pl.DataFrame,
    users: Sequence[int] | pl.Series | np.ndarray,
    k: int,
    *,
    within_decay: float = 0.9,
    group_decay: float = 0.7,
    n_groups: int = 3,
    alpha: float = 0.9,
    n_neighbors: int = 900,
    distinct: bool = False,
) -> pl.DataFrame:
    """TIFU-KNN (Hu, He, Gao and Zhang, SIGIR 2020) as in the authors' TIFUKNN.py.

    User vectors: ``tifu_user_vectors``. Neighbours: the min(n_neighbors, N) nearest of the N
    users present in ``history`` (the user itself included, at distance 0) by Euclidean
    distance between user vectors, like ``NearestNeighbors(algorithm='brute')``. Prediction:
    ``alpha * own vector + (1 - alpha) * mean of the neighbours' vectors``; the k largest
    entries are returned (score = that value as Float32; ties by smaller product id), padded
    with popular products (score 0) when fewer than k entries are positive.

    The search runs over blocks of at most ``KNN_BLOCK`` query users (fewer when N is large, so
    that a block holds at most 2^24 float64 distances or scores) with sparse products, so memory stays
    bounded (e.g. 20k query users × 200k users). With ``alpha == 1`` no search is done.

    Output as described in the module doc.
    """
    lines = distinct_lines(history, distinct)
    popular = _popularity(lines)
    u = _user_series(users)
    space = TifuSpace.build(
        lines,
        within_decay=within_decay,
        group_decay=group_decay,
        n_groups=n_groups,
        orders=lines.select(S.USER, S.ORDER_NUMBER).unique(),
    )
    parts: list[pl.DataFrame] = []
    hood = space.neighbourhood(n_neighbors) if alpha != 1.0 else None
    for rows, own, neighbours in space.blocks(u.to_numpy(), hood):
        pred = own if neighbours is None else alpha * own + (1.0 - alpha) * neighbours
        r, c, v = _top_k_rows(np.asarray(pred.toarray()), k)
        parts.append(
            pl.DataFrame(
                {
                    S.USER: space.user_ids[rows[r]],
                    S.PRODUCT: space.product_ids[c],
                    S.SCORE: v,
                    S.RANK: _dense_rank(r),
                }
            )
        )
    ranked = pl.concat(parts).cast(_OUT_SCHEMA) if parts else pl.DataFrame(schema=_OUT_SCHEMA)
    return _finish(ranked, u, k, popular)
