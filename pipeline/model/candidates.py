"""Stage 1 — candidates: the user's past products ∪ the top unseen products of an ALS model.

:class:`ALSModel` is implicit's ALS fitted on BM25-weighted user × product purchase counts of a
:class:`~basketcast.features.history.History` (so, for a training window, on orders before the cutoff only).
:func:`candidates` returns one row per (user, candidate product) with the generator signals
``als_score`` (dot product of the factors) and ``als_rank`` (1 = best among the user's candidates)
and ``is_repeat`` (the user bought it before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Self

import numpy as np
import polars as pl
import scipy.sparse as sp

from basketcast.features.history import History
from basketcast.pipeline.config import ALSConfig, CandidateConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ids import index_of
from basketcast.pipeline.ranking import best_first

# Up to this many users, ``top_items`` ranks in NumPy instead of implicit's threaded top-k.
NUMPY_TOPK_USERS = 64


@dataclass
class ALSModel:
    """Learned ALS state: id maps and factor matrices (row i of ``user_factors`` is ``user_ids[i]``)."""

    user_ids: np.ndarray  # uint32, sorted
    item_ids: np.ndarray  # uint32, sorted
    user_factors: np.ndarray  # float32 (n_users, factors)
    item_factors: np.ndarray  # float32 (n_items, factors)
    # What folding a new user in needs (see :meth:`fold_in`): the BM25 weighting of the fit
    # (idf per item, mean row length, K1, B) and the regularisation. Empty in models saved by
    # versions before the online store; such a model cannot fold users in.
    idf: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float64 (n_items,)
    bm25: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (average row length, K1, B)
    regularization: float = 0.0

    @classmethod
    def fit(cls, lines: pl.DataFrame, config: ALSConfig) -> Self:
        """Fit on order lines (USER, PRODUCT; one row per purchase)."""
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.nearest_neighbours import bm25_weight
        from threadpoolctl import threadpool_limits

        counts = lines.group_by(S.USER, S.PRODUCT).agg(pl.len().alias("n"))
        user_ids = np.sort(counts[S.USER].unique().to_numpy()).astype(np.uint32)
        item_ids = np.sort(counts[S.PRODUCT].unique().to_numpy()).astype(np.uint32)
        matrix = sp.csr_matrix(
            (
                counts["n"].to_numpy().astype(np.float32),
                (
                    np.searchsorted(user_ids, counts[S.USER].to_numpy()),
                    np.searchsorted(item_ids, counts[S.PRODUCT].to_numpy()),
                ),
            ),
            shape=(user_ids.size, item_ids.size),
        )
        weighted = bm25_weight(matrix, K1=config.bm25_k1, B=config.bm25_b).tocsr().astype(np.float32)
        # implicit's bm25_weight: idf = log(N) - log1p(users per item); rows normalised by their
        # sum against the mean row sum. Kept so a new user's row is weighted the same way.
        idf = np.log(float(user_ids.size)) - np.log1p(np.bincount(matrix.indices, minlength=item_ids.size))
        average_length = float(np.ravel(matrix.sum(axis=1)).mean())
        # OpenBLAS threads fight implicit's own threads and make fitting ~10x slower.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=config.factors,
                regularization=config.regularization,
                iterations=config.iterations,
                random_state=config.seed,
            )
            model.fit(weighted, show_progress=False)
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
            item_factors=np.ascontiguousarray(model.item_factors, dtype=np.float32),
            idf=idf.astype(np.float64),
            bm25=(average_length, float(config.bm25_k1), float(config.bm25_b)),
            regularization=float(config.regularization),
        )

    def fold_in(self, lines: pl.DataFrame) -> ALSModel:
        """The same item factors with user factors solved for the users of ``lines`` (USER, PRODUCT).

        A user's factor is the ALS least-squares solution given the item factors (implicit's
        ``recalculate_user``): ``(YᵀY + Yᵀ(C−I)Y + λI) x = Yᵀc`` over the items of their row,
        whose confidences c are the purchase counts BM25-weighted with the *fit's* idf and mean
        row length. This is how a user unknown to the fit (or whose history grew since) gets
        factors without refitting. Products unknown to the fit are ignored; a user with none of
        the fit's products gets a zero factor. Computed user by user in float64, so a user's
        factor does not depend on who else is folded in with them.
        """
        if self.idf.size != self.item_ids.size:
            raise ValueError("this ALS model was saved without its BM25 statistics and cannot fold users in")
        counts = (
            lines.group_by(S.USER, S.PRODUCT)
            .agg(pl.len().alias("n"))
            .with_columns(pl.col(S.USER).cast(pl.UInt32), pl.col(S.PRODUCT).cast(pl.UInt32))
            .sort(S.USER, S.PRODUCT)
        )
        users, starts = np.unique(counts[S.USER].to_numpy(), return_index=True)
        items = self.item_index(counts[S.PRODUCT].to_numpy())
        n = counts["n"].to_numpy().astype(np.float64)
        bounds = np.r_[starts, counts.height]
        average_length, K1, B = self.bm25
        Y = self.item_factors.astype(np.float64)
        base = self._gram + self.regularization * np.eye(Y.shape[1])
        factors = np.zeros((users.size, Y.shape[1]), np.float32)
        for u in range(users.size):
            lo, hi = bounds[u], bounds[u + 1]
            row_items, row_n = items[lo:hi], n[lo:hi]
            length_norm = (1.0 - B) + B * row_n.sum() / average_length  # the row sum counts unknown items too
            known = row_items >= 0
            if not known.any():
                continue
            row_items, row_n = row_items[known], row_n[known]
            c = (row_n * (K1 + 1.0) / (K1 * length_norm + row_n) * self.idf[row_items]).astype(np.float32)
            c = c.astype(np.float64)  # the fit saw float32 weights
            Yu = Y[row_items]
            A = base + Yu.T @ ((c - 1.0)[:, None] * Yu)
            factors[u] = np.linalg.solve(A, Yu.T @ c)
        return self.with_users(users.astype(np.uint32), factors)

    def with_users(self, user_ids: np.ndarray, user_factors: np.ndarray) -> ALSModel:
        """The same item side (factors, BM25 statistics) with these users' factors."""
        return ALSModel(
            user_ids=user_ids,
            item_ids=self.item_ids,
            user_factors=user_factors,
            item_factors=self.item_factors,
            idf=self.idf,
            bm25=self.bm25,
            regularization=self.regularization,
        )

    def item_side(self) -> ALSModel:
        """The model without users: what is published for folding users in, or broadcast to a
        cluster's workers once (each partition of users then brings its own factors)."""
        return self.with_users(np.zeros(0, np.uint32), np.zeros((0, self.item_factors.shape[1]), np.float32))

    def factors_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(user ids, factors) of those ``users`` the fit knows, sorted by id: one partition's share."""
        rows = self.user_index(np.asarray(users, dtype=np.uint32))
        rows = np.sort(rows[rows >= 0])
        return self.user_ids[rows], self.user_factors[rows]

    @cached_property
    def _gram(self) -> np.ndarray:
        Y = self.item_factors.astype(np.float64)
        return Y.T @ Y

    def user_index(self, users: np.ndarray) -> np.ndarray:
        """Row of each user id in the factor matrix, -1 when unknown."""
        return index_of(self.user_ids, users)

    def item_index(self, items: np.ndarray) -> np.ndarray:
        return index_of(self.item_ids, items)

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """ALS score of each (user, item) pair; NaN when either is unknown to the model."""
        u = self.user_index(users)
        i = self.item_index(items)
        ok = (u >= 0) & (i >= 0)
        out = np.full(users.shape[0], np.nan, dtype=np.float32)
        u, i, pos = u[ok], i[ok], np.flatnonzero(ok)
        step = 1 << 16  # rows per gather: keeps both factor blocks in cache (~9x faster than one einsum)
        for lo in range(0, pos.size, step):
            sl = slice(lo, lo + step)
            out[pos[sl]] = np.einsum("ij,ij->i", self.user_factors[u[sl]], self.item_factors[i[sl]])
        return out

    def top_items(
        self,
        users: np.ndarray,
        n: int,
        exclude: pl.DataFrame | None = None,
        batch: int = 16384,
        numpy_topk_users: int = NUMPY_TOPK_USERS,
    ) -> pl.DataFrame:
        """Top-``n`` items per user by score, skipping ``exclude`` pairs (USER, PRODUCT).

        Returns USER, PRODUCT, S.ALS_SCORE with up to ``n`` rows per known user, best first.
        Up to ``numpy_topk_users`` users are ranked in NumPy, more by implicit's top-k (the two
        agree except at near-ties: a partition of users that must give what all of them give
        at once passes 0).
        """
        users = np.asarray(users, dtype=np.uint32)
        rows = self.user_index(users)
        users, rows = users[rows >= 0], rows[rows >= 0]
        n = min(n, self.item_ids.size)
        if n == 0 or users.size == 0:
            return pl.DataFrame(schema={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, S.ALS_SCORE: pl.Float32})
        seen: sp.csr_matrix | None = None
        if exclude is not None:
            items = self.item_index(exclude[S.PRODUCT].cast(pl.UInt32).to_numpy())
            pos = index_of(users, exclude[S.USER].cast(pl.UInt32).to_numpy())  # callers pass sorted users
            known = (items >= 0) & (pos >= 0)
            seen = sp.csr_matrix(
                (np.ones(int(known.sum()), dtype=np.float32), (pos[known], items[known])),
                shape=(users.size, self.item_ids.size),
            )
        if users.size <= numpy_topk_users:
            return self._top_items_numpy(users, rows, n, seen)
        from implicit.cpu.topk import topk
        from threadpoolctl import threadpool_limits

        parts = []
        for start in range(0, users.size, batch):
            # implicit's multi-threaded top-k (dot products, filtering the seen items); its own
            # threads plus OpenBLAS's oversubscribe the cores (measured 1.6x slower) ...
            with threadpool_limits(1, "blas"):
                top, top_scores = topk(
                    self.item_factors,
                    self.user_factors[rows[start : start + batch]],
                    n,
                    filter_query_items=None if seen is None else seen[start : start + batch],
                    num_threads=0,
                )
            # ... then a stable order: by score, then by product id (deterministic across runs).
            keep = (top >= 0) & np.isfinite(top_scores) & (top_scores > np.finfo(np.float32).min)
            top = np.where(keep, top, 0)
            top_scores = np.where(keep, top_scores, -np.inf).astype(np.float32)
            order = best_first(self.item_ids[top], top_scores, axis=1)
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            keep = np.isfinite(top_scores)
            parts.append(
                pl.DataFrame(
                    {
                        S.USER: np.repeat(users[start : start + batch], n)[keep.ravel()],
                        S.PRODUCT: self.item_ids[top][keep],
                        S.ALS_SCORE: top_scores[keep],
                    }
                )
            )
        return pl.concat(parts)

    def _top_items_numpy(self, users: np.ndarray, rows: np.ndarray, n: int, seen: sp.csr_matrix | None) -> pl.DataFrame:
        """``top_items`` for a few users in NumPy: one small matrix product, no thread pool to
        start (the online path folds one user in and asks for their candidates; the serving
        image has no implicit). Same rule: top-``n`` by score, ties by product id."""
        scores = (self.user_factors[rows] @ self.item_factors.T).astype(np.float32)
        if seen is not None:
            seen = seen.tocoo()
            scores[seen.row, seen.col] = -np.inf
        parts = []
        for j in range(users.size):
            s = scores[j]
            finite = np.flatnonzero(np.isfinite(s))
            if finite.size > n:  # keep every item tied with the n-th best, then order exactly
                threshold = np.partition(s[finite], finite.size - n)[finite.size - n]
                finite = finite[s[finite] >= threshold]
            order = finite[best_first(self.item_ids[finite], s[finite])][:n]
            parts.append(
                pl.DataFrame(
                    {
                        S.USER: np.full(order.size, users[j], np.uint32),
                        S.PRODUCT: self.item_ids[order],
                        S.ALS_SCORE: s[order],
                    }
                )
            )
        return pl.concat(parts)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            idf=self.idf,
            bm25=np.asarray(self.bm25, np.float64),
            regularization=np.float64(self.regularization),
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        with np.load(path) as z:
            model = cls(**{k: z[k] for k in ("user_ids", "item_ids", "user_factors", "item_factors")})
            if "idf" in z.files:
                model.idf = z["idf"]
                model.bm25 = (float(z["bm25"][0]), float(z["bm25"][1]), float(z["bm25"][2]))
                model.regularization = float(z["regularization"])
            return model


def history_candidates(h: History, users: pl.Series, max_history: int | None) -> pl.DataFrame:
    """USER, PRODUCT of each user's past products, capped at ``max_history`` by decayed frequency."""
    up = h.user_products.filter(pl.col(S.USER).is_in(users.implode()))
    if max_history is not None:
        up = (
            up.sort([S.USER, S.UP_DECAY_09, S.PRODUCT], descending=[False, True, False])
            .group_by(S.USER, maintain_order=True)
            .head(max_history)
        )
    return up.select(S.USER, S.PRODUCT)


def candidates(
    h: History, als: ALSModel, users: pl.Series, config: CandidateConfig, numpy_topk_users: int = NUMPY_TOPK_USERS
) -> pl.DataFrame:
    """The candidate set of ``users``: USER, PRODUCT, S.ALS_SCORE, S.ALS_RANK, S.IS_REPEAT.

    Sorted by user, then ALS rank. Users unknown to ALS (none in a consistent history) keep
    their history candidates with NaN ALS scores. ``numpy_topk_users``: see ``ALSModel.top_items``.
    """
    users = users.sort().cast(pl.UInt32)
    past = history_candidates(h, users, config.max_history).with_columns(pl.lit(True).alias(S.IS_REPEAT))
    all_past = h.user_products.select(S.USER, S.PRODUCT)
    new = als.top_items(users.to_numpy(), config.als_new, exclude=all_past, numpy_topk_users=numpy_topk_users).select(
        S.USER, S.PRODUCT, pl.lit(False).alias(S.IS_REPEAT)
    )
    pairs = pl.concat([past, new]).sort(S.USER, S.PRODUCT)
    scores = als.score_pairs(pairs[S.USER].to_numpy(), pairs[S.PRODUCT].to_numpy())
    return (
        pairs.with_columns(pl.Series(S.ALS_SCORE, scores, dtype=pl.Float32))
        .with_columns(
            pl.col(S.ALS_SCORE)
            .fill_nan(float("-inf"))
            .rank("ordinal", descending=True)
            .over(S.USER)
            .cast(pl.Float32)
            .alias(S.ALS_RANK)
        )
        .sort(S.USER, S.ALS_RANK)
    )
