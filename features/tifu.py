"""TIFU-KNN signals as features: the user's own time-decayed, grouped purchase vector and the
mean vector of their nearest users (Hu et al., SIGIR 2020), read at each candidate pair.

The ranker thereby sees both halves of the strongest simple baseline and can weigh them with
everything else, instead of the fixed blend alpha = 0.9 of TIFU-KNN itself.

Neighbours are the ``n_neighbors`` nearest of all users while there are at most
``max_reference`` users; beyond that they are searched among a seeded sample of
``max_reference`` users and the same share of them is averaged (see
``TifuSpace.neighbourhood``), so the cost stays linear in users.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
import scipy.sparse as sp

from basketcast.features.history import BASKET_SIZE, History
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ids import index_of

FEATURES = ("tifu_own", "tifu_neighbours")
REFERENCE_SEED = 0  # the reference sample depends on the history only, not on the run's seed


# Largest dense copy of the reference vectors (cells) the neighbour gather may hold (512 MB).
DENSE_REFERENCE_CELLS = 1 << 27


# Internal column names of the TIFU weighting (never leave this module).
_N: Final = "_n"  # a user's number of visible orders
_T: Final = "_t"  # 0-based position of an order in the user's history
_G: Final = "_g"  # 0-based TIFU group (block) of an order
_G_LEN: Final = "_g_len"
_G_REAL: Final = "_g_real"
_W: Final = "_w"

# Query users per block of the TIFU-KNN neighbour search, and an upper bound on the number of
# float64 distances held at once (the block shrinks when there are many reference users).
KNN_BLOCK: Final = 512
_KNN_MAX_CELLS: Final = 1 << 24  # 16M float64 = 128 MB per block-sized array


def distinct_lines(history: pl.DataFrame, distinct: bool = False) -> pl.DataFrame:
    """Distinct (user, order number, product) lines with canonical dtypes (``distinct``: the caller
    guarantees it, as for ingested data, and the costly de-duplication is skipped)."""
    lines = history.select(
        pl.col(S.USER).cast(pl.UInt32),
        pl.col(S.ORDER_NUMBER).cast(pl.Int64),
        pl.col(S.PRODUCT).cast(pl.UInt32),
    )
    return lines if distinct else lines.unique()


def tifu_user_vectors(
    history: pl.DataFrame, *, within_decay: float = 0.9, group_decay: float = 0.7, n_groups: int = 3
) -> pl.DataFrame:
    """TIFU-KNN user vectors as long (user, product, weight) rows.

    Mirrors ``temporal_decay_sum_history`` + ``group_history_list`` of the authors' TIFUKNN.py.
    A user with n baskets (ordered by order number, t = 0..n-1) gives basket t the weight
    ``within_decay**(n-1-t)``. The baskets are cut into consecutive groups: if n < n_groups each
    basket is a group and the real group count is n; otherwise, with n = q·n_groups + r, the
    first n_groups - r groups have q baskets and the last r groups have q + 1. Group g (0-based)
    contributes ``group_decay**(n_groups-1-g)`` times the mean of its weighted basket vectors,
    and the user vector is the sum of the contributions divided by the real group count.

    Args:
        history: USER, ORDER_NUMBER, PRODUCT order lines (as in the module doc).

    Returns:
        USER (UInt32), PRODUCT (UInt32), ``S.SCORE`` (Float64 weight > 0), one row per (user,
        product) bought, sorted by user and product.
    """
    return _tifu_vectors(distinct_lines(history), within_decay, group_decay, n_groups)


def _order_weights(orders: pl.DataFrame, within_decay: float, group_decay: float, n_groups: int) -> pl.DataFrame:
    """TIFU-KNN weight of every basket: USER, ORDER_NUMBER, _W (see ``tifu_user_vectors``).

    Args:
        orders: the distinct (USER, ORDER_NUMBER) baskets that have lines.
    """
    G = int(n_groups)
    if G < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    orders = orders.sort(S.USER, S.ORDER_NUMBER).with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).over(S.USER).alias(_T),
        pl.len().cast(pl.Int64).over(S.USER).alias(_N),
    )
    q = pl.col(_N) // G
    r = pl.col(_N) % G
    small_end = (G - r) * q  # baskets [0, small_end) sit in the groups of size q
    return (
        orders.with_columns(
            pl.when(pl.col(_N) < G)
            .then(pl.col(_T))
            .when(pl.col(_T) < small_end)
            .then(pl.col(_T) // q)
            .otherwise(G - r + (pl.col(_T) - small_end) // (q + 1))
            .alias(_G),
            pl.when(pl.col(_N) < G).then(1).when(pl.col(_T) < small_end).then(q).otherwise(q + 1).alias(_G_LEN),
            pl.min_horizontal(pl.col(_N), pl.lit(G, dtype=pl.Int64)).alias(_G_REAL),
        )
        .with_columns(
            (
                pl.lit(float(within_decay)).pow(pl.col(_N) - 1 - pl.col(_T))
                * pl.lit(float(group_decay)).pow(G - 1 - pl.col(_G))
                / pl.col(_G_LEN).cast(pl.Float64)
                / pl.col(_G_REAL).cast(pl.Float64)
            ).alias(_W)
        )
        .select(S.USER, S.ORDER_NUMBER, _W)
    )


def _tifu_vectors(lines: pl.DataFrame, within_decay: float, group_decay: float, n_groups: int) -> pl.DataFrame:
    """``tifu_user_vectors`` of already distinct lines (see ``_lines``)."""
    weights = _order_weights(lines.select(S.USER, S.ORDER_NUMBER).unique(), within_decay, group_decay, n_groups)
    return (
        lines.join(weights, on=[S.USER, S.ORDER_NUMBER])
        .group_by(S.USER, S.PRODUCT)
        .agg(pl.col(_W).sum().alias(S.SCORE))
        .sort(S.USER, S.PRODUCT)
    )


def nearest(ref: Neighbourhood, queries: sp.csr_matrix) -> np.ndarray:
    """Indices (into ``ref.X``) of the min(``ref.n_neighbors``, N) nearest reference rows (Euclidean)
    of each query row: an int64 array (q, m), each row ascending.

    Squared distances are ‖a‖² + ‖b‖² − 2a·b in float64 (as scikit-learn's brute force); the
    query's own ‖a‖² is the same for all candidates, so rows are ranked by ‖b‖² − 2a·b. Among
    equal values at the boundary the reference rows with the smaller index (smaller user id) win,
    so the neighbour set is deterministic. A query that is itself a reference row is its own
    nearest neighbour (distance 0).
    """
    N = ref.X.shape[0]
    q = queries.shape[0]
    m = min(ref.n_neighbors, N)
    if m == N:
        return np.tile(np.arange(N, dtype=np.int64), (q, 1))
    d2 = (queries @ ref.XT).toarray()
    d2 *= -2.0
    d2 += ref.sq_norms[None, :]
    thr = np.partition(d2, m - 1, axis=1)[:, m - 1 : m]
    selected = d2 < thr
    need = m - selected.sum(axis=1)
    equal = d2 == thr
    n_equal = equal.sum(axis=1)
    # Where more rows tie at the threshold than slots are left, keep the smallest indices.
    for i in np.flatnonzero(n_equal > need):
        tied = np.flatnonzero(equal[i])
        equal[i, tied[need[i] :]] = False
    selected |= equal
    return np.nonzero(selected)[1].reshape(q, m).astype(np.int64)


def _nearest_mean(ref: Neighbourhood, queries: sp.csr_matrix) -> sp.csr_matrix:
    """Mean vector of the nearest reference rows (see :func:`nearest`) of each query row: CSR (q, P)."""
    idx = nearest(ref, queries)
    q, m = idx.shape
    W = sp.csr_matrix(
        (np.full(idx.size, 1.0 / m), (np.repeat(np.arange(q), m), idx.ravel())), shape=(q, ref.X.shape[0])
    )
    return sp.csr_matrix(W @ ref.X)


@dataclass(frozen=True)
class Neighbourhood:
    """Who neighbours are searched among (their vectors, its transpose, squared norms) and how
    many of the nearest are averaged."""

    X: sp.csr_matrix
    XT: sp.csr_matrix
    sq_norms: np.ndarray
    n_neighbors: int

    @classmethod
    def of(cls, X: sp.csr_matrix, n_neighbors: int) -> Neighbourhood:
        """Reference vectors ``X`` (CSR) whose nearest ``n_neighbors`` are averaged."""
        sq_norms = np.asarray(X.multiply(X).sum(axis=1)).ravel()
        return cls(X=X, XT=sp.csr_matrix(X.T), sq_norms=sq_norms, n_neighbors=n_neighbors)

    def save(self, path: Path) -> None:
        """Write the reference as ``.npz`` (CSR arrays + n_neighbors); :meth:`load` reads it back exactly."""
        np.savez(
            path,
            data=self.X.data,
            indices=self.X.indices,
            indptr=self.X.indptr,
            shape=np.asarray(self.X.shape, np.int64),
            n_neighbors=np.int64(self.n_neighbors),
        )

    @classmethod
    def load(cls, path: Path) -> Neighbourhood:
        with np.load(path) as z:
            X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(int(v) for v in z["shape"]))
            return cls.of(X, int(z["n_neighbors"]))


@dataclass(frozen=True)
class TifuSpace:
    """TIFU-KNN user vectors of every user in a history, ready for neighbour search.

    ``X`` is the (N users × P products) CSR matrix of ``tifu_user_vectors``; row i is user
    ``user_ids[i]``, column j product ``product_ids[j]`` (both sorted).
    """

    X: sp.csr_matrix
    user_ids: np.ndarray
    product_ids: np.ndarray

    @classmethod
    def build(
        cls,
        history: pl.DataFrame,
        *,
        within_decay: float = 0.9,
        group_decay: float = 0.7,
        n_groups: int = 3,
        orders: pl.DataFrame | None = None,
        product_ids: np.ndarray | None = None,
    ) -> TifuSpace:
        """From the visible history (USER, ORDER_NUMBER, PRODUCT; see the module doc).

        ``orders`` (the distinct USER, ORDER_NUMBER baskets with lines) marks ``history`` as
        already distinct, as ingested data is; without it duplicates are dropped first.
        ``product_ids`` (sorted, unique) fixes the columns — the catalogue, so that vectors of
        different histories (a published reference, one user's fresh history) share one space;
        lines of products outside it are left out. Default: the products bought in ``history``.
        """
        if orders is None:
            history = distinct_lines(history)
            orders = history.select(S.USER, S.ORDER_NUMBER).unique()
        weighted = history.select(S.USER, S.ORDER_NUMBER, S.PRODUCT).join(
            _order_weights(orders, within_decay, group_decay, n_groups), on=[S.USER, S.ORDER_NUMBER]
        )
        users = weighted[S.USER].cast(pl.UInt32).to_numpy()
        products = weighted[S.PRODUCT].cast(pl.UInt32).to_numpy()
        user_ids = np.sort(weighted[S.USER].unique().cast(pl.UInt32).to_numpy())
        if product_ids is None:
            product_ids = np.sort(weighted[S.PRODUCT].unique().cast(pl.UInt32).to_numpy())
        cols = index_of(product_ids, products)
        inside = cols >= 0
        # COO → CSR sums the weights of each (user, product) and sorts the columns of every row.
        X = sp.csr_matrix(
            (weighted[_W].to_numpy()[inside], (index_of(user_ids, users)[inside], cols[inside])),
            shape=(user_ids.size, product_ids.size),
        )
        X.sum_duplicates()
        X.sort_indices()
        return cls(X=X, user_ids=user_ids, product_ids=product_ids)

    def neighbourhood(self, n_neighbors: int, max_reference: int | None = None, seed: int = 0) -> Neighbourhood:
        """The users neighbours are searched among and how many of them to average.

        All N users with ``n_neighbors`` neighbours (exact TIFU-KNN) when ``max_reference`` is
        None or N ≤ ``max_reference``. Otherwise a seeded sample of ``max_reference`` users, of
        whom the nearest ``round(n_neighbors · max_reference / N)`` (at least 1) are averaged:
        the same share of the population as the exact search, at a cost linear in N.
        """
        N = self.X.shape[0]
        if max_reference is None or max_reference >= N:
            X, m = self.X, n_neighbors
        else:
            rows = np.sort(np.random.default_rng(seed).choice(N, size=max_reference, replace=False))
            X, m = self.X[rows], max(1, round(n_neighbors * max_reference / N))
        return Neighbourhood.of(X, m)

    def block_rows(self, users: np.ndarray, neighbourhood: Neighbourhood | None) -> Iterator[np.ndarray]:
        """Row indices of the known ``users`` (sorted), in blocks of at most KNN_BLOCK users and
        at most 2^24 distances or vector entries."""
        N, P = self.X.shape
        rows_all = np.flatnonzero(np.isin(self.user_ids, np.asarray(users)))
        width = max(N if neighbourhood is None else neighbourhood.X.shape[0], P, 1)
        block = max(1, min(KNN_BLOCK, _KNN_MAX_CELLS // width))
        for start in range(0, len(rows_all), block):
            yield rows_all[start : start + block]

    def blocks(
        self, users: np.ndarray, neighbourhood: Neighbourhood | None
    ) -> Iterator[tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix | None]]:
        """For blocks of the known ``users`` (sorted): (row indices, own vectors, neighbour means).

        A block holds at most KNN_BLOCK users and at most 2^24 distances or vector entries.
        Neighbour means are None without a ``neighbourhood`` (no search).
        """
        for rows in self.block_rows(users, neighbourhood):
            own = self.X[rows]
            yield rows, own, None if neighbourhood is None else _nearest_mean(neighbourhood, own)


@dataclass(frozen=True)
class TifuIndex:
    """The user vectors of one history and the neighbourhood searched for every query user."""

    space: TifuSpace
    neighbourhood: Neighbourhood

    @classmethod
    def of(
        cls, h: History, n_neighbors: int, max_reference: int | None = None, reference: Neighbourhood | None = None
    ) -> TifuIndex:
        """The users of ``h`` in the catalogue's product space (``h.products``), and their neighbourhood:
        ``reference`` when given (the published one, for fresh online rows), else searched in ``h``."""
        baskets = h.orders.filter(pl.col(BASKET_SIZE) > 0).select(S.USER, S.ORDER_NUMBER)
        space = TifuSpace.build(
            h.lines.select(S.USER, S.ORDER_NUMBER, S.PRODUCT), orders=baskets, product_ids=catalogue_ids(h.products)
        )
        if reference is not None:
            if reference.X.shape[1] != space.product_ids.size:
                raise ValueError(
                    f"the TIFU reference has {reference.X.shape[1]} product columns, the catalogue "
                    f"{space.product_ids.size}: they come from different catalogues"
                )
            return cls(space=space, neighbourhood=reference)
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
        wanted = np.unique(col[known])
        if wanted.size * hood.X.shape[0] <= DENSE_REFERENCE_CELLS // 64:
            # Few candidate products (a chunk of a few users, the online path): a dense copy of
            # those columns only; the same float32 values as the full copy below.
            dense: np.ndarray | None = hood.X[:, wanted].astype(np.float32).toarray()
            dense_col = np.searchsorted(wanted, np.maximum(col, 0))
        else:
            dense, dense_col = self._dense_reference, col
        if dense is not None:
            order = np.flatnonzero(known)[np.argsort(row[known], kind="stable")]
            sorted_rows = row[order]

            def block(rows: np.ndarray) -> None:
                contiguous = rows[-1] - rows[0] + 1 == rows.size  # a row slice is far cheaper than fancy indexing
                idx = nearest(hood, space.X[rows[0] : rows[-1] + 1] if contiguous else space.X[rows])  # (users, m)
                lo, hi = np.searchsorted(sorted_rows, [rows[0], rows[-1] + 1])
                pairs = order[lo:hi]
                who = np.searchsorted(rows, row[pairs])
                vals = dense[idx[who], dense_col[pairs][:, None]].sum(axis=1, dtype=np.float64)
                neighbours[pairs] = vals / idx.shape[1]  # blocks write disjoint pairs

            blocks = list(space.block_rows(space.user_ids[np.unique(sorted_rows)], hood))
            if len(blocks) == 1:  # a few users (the online path): no thread pool to start
                block(blocks[0])
            else:  # SciPy's sparse products and NumPy's partition release the GIL: one thread per core.
                with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                    list(pool.map(block, blocks))
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


def catalogue_ids(products: pl.DataFrame) -> np.ndarray:
    """The sorted product ids of a catalogue: the columns of every TIFU space built on it."""
    ids = products[S.PRODUCT].cast(pl.UInt32).to_numpy()
    if ids.size and bool(np.all(ids[1:] > ids[:-1])):  # already sorted and unique (a check, not a sort)
        return ids
    return np.unique(ids)


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
