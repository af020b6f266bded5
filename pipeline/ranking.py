"""The one ranking rule: best score first, ties broken by the smaller product id.

Every ranked list basketcast produces — the ranker's top-k in training, evaluation, the snapshot's
parity check, the server, batch scoring and the baskets — orders products this way, so two paths
given the same scores return the same list. :func:`best_first` is the NumPy form,
:func:`sort_best_first` / :func:`top_k` the Polars form.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from basketcast.pipeline.data import schema as S


def best_first(
    products: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None, axis: int = -1
) -> np.ndarray:
    """Indices ordering ``products`` by ``scores`` descending, ties by smaller product id.

    With ``groups`` (one key per element) the order is by group first, then as above. ``axis``
    orders each row of 2-D inputs independently (no ``groups`` then).
    """
    keys = (products, -scores) if groups is None else (products, -scores, groups)
    return np.lexsort(keys, axis=axis)


def sort_best_first(frame: pl.DataFrame, key: str = S.USER, score: str = S.SCORE) -> pl.DataFrame:
    """``frame`` sorted by ``key``, then ``score`` descending, then product id."""
    return frame.sort([key, score, S.PRODUCT], descending=[False, True, False])


def rank_within(key: str) -> pl.Expr:
    """1-based UInt16 RANK of each row within its ``key`` group (rows already in rank order)."""
    return pl.int_range(1, pl.len() + 1, dtype=pl.UInt16).over(key).alias(S.RANK)


def top_k(frame: pl.DataFrame, scores: np.ndarray, k: int, key: str = S.USER) -> pl.DataFrame:
    """Best ``k`` rows per key of ``frame`` by ``scores`` (one per row): key, PRODUCT, SCORE, RANK."""
    scored = frame.select(key, S.PRODUCT).with_columns(pl.Series(S.SCORE, scores, dtype=pl.Float32))
    return sort_best_first(scored, key).group_by(key, maintain_order=True).head(k).with_columns(rank_within(key))
