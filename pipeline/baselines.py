"""Simple next-basket baselines: global popularity, personal top frequency and TIFU-KNN.

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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline import schema as S
from pipeline.ids import index_of

# Internal column names (never leave this module).
_N: Final = "_n"  # a user's number of visible orders
_T: Final = "_t"  # 0-based position of an order in the user's history
_G: Final = "_g"  # 0-based TIFU group (block) of an order
_G_LEN: Final = "_g_len"
_G_REAL: Final = "_g_real"
_W: Final = "_w"
_LAST: Final = "_last"
_POP: Final = "_pop"
_ROW: Final = "_row"
_COL: Final = "_col"

_OUT_SCHEMA: Final = pl.Schema(
    {S.USER: pl.UInt32(), S.PRODUCT: pl.UInt32(), S.SCORE: pl.Float32(), S.RANK: pl.UInt16()}
)

# Query users per block of the TIFU-KNN neighbour search, and an upper bound on the number of
# float64 distances held at once (the block shrinks when there are many reference users).
KNN_BLOCK: Final = 512
_KNN_MAX_CELLS: Final = 1 << 24  # 16M float64 = 128 MB per block-sized array


def _lines(history: pl.DataFrame, distinct: bool = False) -> pl.DataFrame:
    """Distinct (user, order number, product) lines with canonical dtypes (``distinct``: the caller
    guarantees it, as for ingested data, and the costly de-duplication is skipped)."""
    lines = history.select(
        pl.col(S.USER).cast(pl.UInt32),
        pl.col(S.ORDER_NUMBER).cast(pl.Int64),
        pl.col(S.PRODUCT).cast(pl.UInt32),
    )
    return lines if distinct else lines.unique()


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
    lines = _lines(history, distinct)
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
    lines = _lines(history, distinct)
    popular = _popularity(lines)
    u = _user_series(users)
    scored = (
        lines.join(pl.DataFrame(u), on=S.USER, how="semi")
        .group_by(S.USER, S.PRODUCT)
        .agg(pl.len().cast(pl.Float64).alias(S.SCORE), pl.col(S.ORDER_NUMBER).max().alias(_LAST))
    )
    ranked = _rank_top_k(scored, k, [S.SCORE, _LAST, S.PRODUCT], [True, True, False])
    return _finish(ranked, u, k, popular)


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
    return _tifu_vectors(_lines(history), within_decay, group_decay, n_groups)


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
    ) -> TifuSpace:
        """From the visible history (USER, ORDER_NUMBER, PRODUCT; see the module doc).

        ``orders`` (the distinct USER, ORDER_NUMBER baskets with lines) marks ``history`` as
        already distinct, as ingested data is; without it duplicates are dropped first.
        """
        if orders is None:
            history = _lines(history)
            orders = history.select(S.USER, S.ORDER_NUMBER).unique()
        weighted = history.select(S.USER, S.ORDER_NUMBER, S.PRODUCT).join(
            _order_weights(orders, within_decay, group_decay, n_groups), on=[S.USER, S.ORDER_NUMBER]
        )
        users = weighted[S.USER].cast(pl.UInt32).to_numpy()
        products = weighted[S.PRODUCT].cast(pl.UInt32).to_numpy()
        user_ids = np.sort(weighted[S.USER].unique().cast(pl.UInt32).to_numpy())
        product_ids = np.sort(weighted[S.PRODUCT].unique().cast(pl.UInt32).to_numpy())
        # COO → CSR sums the weights of each (user, product) and sorts the columns of every row.
        X = sp.csr_matrix(
            (weighted[_W].to_numpy(), (index_of(user_ids, users), index_of(product_ids, products))),
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
        sq_norms = np.asarray(X.multiply(X).sum(axis=1)).ravel()
        return Neighbourhood(X=X, XT=sp.csr_matrix(X.T), sq_norms=sq_norms, n_neighbors=m)

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
    lines = _lines(history, distinct)
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
