"""TIFU-KNN signals as features: the user's own time-decayed, grouped purchase vector and the
mean vector of their nearest users (Hu et al., SIGIR 2020), read at each candidate pair.

The ranker thereby sees both halves of the strongest simple baseline and can weigh them with
everything else, instead of the fixed blend alpha = 0.9 of TIFU-KNN itself.

Neighbours are the ``n_neighbors`` nearest of all users while there are at most
``max_reference`` users; beyond that they are searched among a seeded sample of
``max_reference`` users and the same share of them is averaged (see
``pipeline.baselines.TifuSpace.neighbourhood``), so the cost stays linear in users.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.history import BASKET_SIZE, History
from pipeline import schema as S
from pipeline.baselines import Neighbourhood, TifuSpace, nearest
from pipeline.ids import index_of

FEATURES = ("tifu_own", "tifu_neighbours")
REFERENCE_SEED = 0  # the reference sample depends on the history only, not on the run's seed


# Largest dense copy of the reference vectors (cells) the neighbour gather may hold (512 MB).
DENSE_REFERENCE_CELLS = 1 << 27


@dataclass(frozen=True)
class TifuIndex:
    """The user vectors of one history and the neighbourhood searched for every query user."""

    space: TifuSpace
    neighbourhood: Neighbourhood

    @classmethod
    def of(cls, h: History, n_neighbors: int, max_reference: int | None = None) -> TifuIndex:
        baskets = h.orders.filter(pl.col(BASKET_SIZE) > 0).select(S.USER, S.ORDER_NUMBER)
        space = TifuSpace.build(h.lines.select(S.USER, S.ORDER_NUMBER, S.PRODUCT), orders=baskets)
        return cls(space=space, neighbourhood=space.neighbourhood(n_neighbors, max_reference, REFERENCE_SEED))

    def features(self, cands: pl.DataFrame) -> pl.DataFrame:
        """USER, PRODUCT + FEATURES for every candidate pair (0 where the vector has no entry).

        ``cands`` needs USER and PRODUCT; the output keeps its row order. Only the candidate
        cells are read: the own value by a binary search in the sorted CSR entries, the
        neighbour mean by gathering the neighbours' values from a dense copy of the reference
        vectors (pairs × neighbours reads; the product of the two stays bounded as users grow,
        since fewer neighbours are averaged from a sampled reference).
        """
        space, hood = self.space, self.neighbourhood
        users = cands[S.USER].cast(pl.UInt32).to_numpy()
        row = index_of(space.user_ids, users)
        col = index_of(space.product_ids, cands[S.PRODUCT].cast(pl.UInt32).to_numpy())
        known = (row >= 0) & (col >= 0)
        own = np.zeros(users.size, np.float32)
        own[known] = self._own.values(row[known], col[known])
        neighbours = np.zeros(users.size, np.float32)
        dense = self._dense_reference
        if dense is not None:
            order = np.flatnonzero(known)[np.argsort(row[known], kind="stable")]
            sorted_rows = row[order]

            def block(rows: np.ndarray) -> None:
                contiguous = rows[-1] - rows[0] + 1 == rows.size  # a row slice is far cheaper than fancy indexing
                idx = nearest(hood, space.X[rows[0] : rows[-1] + 1] if contiguous else space.X[rows])  # (users, m)
                lo, hi = np.searchsorted(sorted_rows, [rows[0], rows[-1] + 1])
                pairs = order[lo:hi]
                who = np.searchsorted(rows, row[pairs])
                vals = dense[idx[who], col[pairs][:, None]].sum(axis=1, dtype=np.float64)
                neighbours[pairs] = vals / idx.shape[1]  # blocks write disjoint pairs

            # SciPy's sparse products and NumPy's partition release the GIL: one thread per core.
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                list(pool.map(block, space.block_rows(space.user_ids[np.unique(sorted_rows)], hood)))
        else:  # an exact search over too many users for a dense copy: sparse means per block
            for rows, _, means in space.blocks(space.user_ids[np.unique(row[known])], hood):
                assert means is not None
                sel = np.flatnonzero(known & (row >= rows[0]) & (row <= rows[-1]))
                neighbours[sel] = _CsrLookup(means).values(np.searchsorted(rows, row[sel]), col[sel])
        return pl.DataFrame(
            {S.USER: cands[S.USER], S.PRODUCT: cands[S.PRODUCT], FEATURES[0]: own, FEATURES[1]: neighbours}
        )

    @cached_property
    def _own(self) -> _CsrLookup:
        return _CsrLookup(self.space.X)

    @cached_property
    def _dense_reference(self) -> np.ndarray | None:
        """The reference vectors as a dense float32 array, None when that would be too large."""
        n_ref, n_products = self.neighbourhood.X.shape
        if n_ref * n_products > DENSE_REFERENCE_CELLS:
            return None
        return self.neighbourhood.X.astype(np.float32).toarray()


class _CsrLookup:
    """Element reads X[rows[i], cols[i]] of a sparse matrix by binary search over its entries."""

    def __init__(self, X: sp.csr_matrix) -> None:
        X = X.tocsr()
        X.sum_duplicates()  # canonical: sorted columns within rows
        self.n_cols = np.int64(X.shape[1])
        entry_rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
        self.keys = entry_rows * self.n_cols + X.indices  # ascending
        self.data = X.data

    def values(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The entries (0 where X has none)."""
        if self.keys.size == 0:
            return np.zeros(rows.size)
        want = rows.astype(np.int64) * self.n_cols + cols.astype(np.int64)
        pos = np.minimum(np.searchsorted(self.keys, want), self.keys.size - 1)
        return np.where(self.keys[pos] == want, self.data[pos], 0.0)
