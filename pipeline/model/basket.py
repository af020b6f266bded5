"""F1-optimal basket selection with the Kaggle "None" token.

Exact maximiser of the expected F1 of Ye, Chai, Lee and Chieu (ICML 2012, "Optimizing
F-measures: a tale of two approaches"), in the form used in the Instacart Kaggle competition
(Faron's O(n²) dynamic programme), extended to the pseudo-item "None".

Model: the n candidate products of one order are reordered independently with probabilities
p_1 ≥ ... ≥ p_n. Kaggle's rule: when no product is reordered the true set is ``{None}``; an empty
prediction counts as ``{None}``; "None" may also be predicted alongside products. Hence
P(truth = {None}) = Π(1 - p_i). Under independence an optimal prediction is always "the k most
probable products, plus None or not", so only the 2(n + 1) choices (k, none) are compared.

Derivation (A = number of true products among the top k, B = among the others, independent):

* without None, k ≥ 1: E[F1] = E[2A / (k + A + B)] (a true set {None} gives F1 = 0);
* with None: E[F1] = E[2A / (k + 1 + A + B)] + 2 P(truth empty) / (k + 2);
* k = 0: the prediction is {None} either way, so E[F1] = P(truth empty).

``C[a, j]`` = P(a of the first j products are true) is a forward recursion; ``S_k[i]`` =
E[1 / (i + B_k)], B_k = number of true products after position k, is a backward recursion
S_{k-1}[i] = (1 - p_k) S_k[i] + p_k S_k[i + 1] starting from S_n[i] = 1 / i. Then
E[2A / (k + A + B)] = 2 Σ_a a C[a, k] S_k[k + a], and the None variant reads S_k[k + a + 1].
Both recursions are vectorised over a batch of orders, so the whole table is O(n²) per order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.ranking import sort_best_first

# At most this many candidates (the most probable ones) per order enter the optimisation. A
# product ranked beyond 80 has a probability far too small to be worth predicting in practice,
# and the cap bounds the O(n²) time and the O(B n²) memory of a batch.
MAX_CANDIDATES: Final = 80

# Where P(no product reordered) comes from: the product rule Π(1 - p_i) over the candidates, the
# sequence network's None row, or their mean — the weight of the network's value.
NONE_SOURCES: Final = {"product": 0.0, "network": 1.0, "mean": 0.5}


def none_probability(probs: np.ndarray, network_none: float, source: str) -> float | None:
    """P(None) for :func:`optimal_basket` of one order (None = the product rule itself)."""
    weight = NONE_SOURCES[source]
    if weight == 0 or not np.isfinite(network_none):
        return None
    rule = float(np.prod(1.0 - np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)))
    return weight * float(network_none) + (1 - weight) * rule


# Orders optimised together; the C table of a batch holds BATCH * (n+1)² float64 values
# (about 54 MB for n = 80).
_BATCH: Final = 1024

# Internal column names (never leave this module).
_POS: Final = "_pos"
_GROUP: Final = "_group"
_K: Final = "_k"


def _expected_f1_batch(P: np.ndarray, p_none: np.ndarray | None = None) -> np.ndarray:
    """Expected F1 of every (k, none) choice for a batch of orders.

    Args:
        P: float array of shape (B, n); each row sorted in decreasing order, values in [0, 1].
            Rows with fewer candidates are padded with zeros (a zero-probability candidate does
            not change the distribution of the truth).
        p_none: optional (B,) probabilities that the truth is {None}, from a model of their own
            (Kaggle's 2nd place's None model, the 3rd place's None row; Faron's ``pNone``);
            default Π(1 - p_i). Only the "truth empty" terms use it.

    Returns:
        Array of shape (B, n + 1, 2): ``[b, k, 0]`` is the expected F1 of predicting the top k
        products without None, ``[b, k, 1]`` with None. ``[b, 0, 0] == [b, 0, 1]`` (an empty
        prediction is {None}).
    """
    P = np.asarray(P, dtype=np.float64)
    B, n = P.shape
    Q = 1.0 - P
    p_none = np.prod(Q, axis=1) if p_none is None else np.clip(np.asarray(p_none, dtype=np.float64), 0.0, 1.0)

    # Forward: C[:, a, j] = P(exactly a true among the first j products).
    C = np.zeros((B, n + 1, n + 1))
    C[:, 0, 0] = 1.0
    for j in range(1, n + 1):
        prev = C[:, : j + 1, j - 1]
        C[:, : j + 1, j] = Q[:, j - 1, None] * prev
        C[:, 1 : j + 1, j] += P[:, j - 1, None] * prev[:, :j]

    # Backward: S[:, i] = E[1 / (i + B_k)], exact for i <= n + k + 1 at step k (see module doc).
    Sv = np.zeros((B, 2 * n + 2))
    Sv[:, 1:] = 1.0 / np.arange(1, 2 * n + 2)
    out = np.empty((B, n + 1, 2))
    for k in range(n, -1, -1):
        w = np.arange(k + 1, dtype=np.float64) * C[:, : k + 1, k]  # a * P(A = a)
        out[:, k, 0] = 2.0 * np.einsum("ba,ba->b", w, Sv[:, k : 2 * k + 1])
        out[:, k, 1] = 2.0 * np.einsum("ba,ba->b", w, Sv[:, k + 1 : 2 * k + 2]) + 2.0 * p_none / (k + 2)
        if k > 0:
            Sv[:, 1:-1] = Q[:, k - 1, None] * Sv[:, 1:-1] + P[:, k - 1, None] * Sv[:, 2:]
    out[:, 0, 0] = p_none
    return out


def expected_f1_table(probs: np.ndarray) -> np.ndarray:
    """Expected Kaggle F1 of every candidate prediction for one order.

    Args:
        probs: 1-D array of n independent reorder probabilities (any order; clipped to [0, 1]).

    Returns:
        float64 array of shape (n + 1, 2). Row k refers to predicting the k most probable
        products (``np.sort(probs)[::-1][:k]``); column 0 without the "None" token, column 1
        with it. Row 0 is P(no product reordered) in both columns (an empty prediction is {None}).
    """
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), 0.0, 1.0)
    p = np.sort(p)[::-1]
    return _expected_f1_batch(p[None, :])[0]


def _best_choice(table: np.ndarray, n_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Argmax of a (B, n+1, 2) table, ignoring k > n_valid; ties → smaller k, then no None."""
    B, n1, _ = table.shape
    masked = np.where((np.arange(n1)[None, :] <= n_valid[:, None])[:, :, None], table, -np.inf)
    flat = masked.reshape(B, 2 * n1)
    idx = np.argmax(flat, axis=1)
    k = idx // 2
    none = (idx % 2 == 1) | (k == 0)
    return k, none, flat[np.arange(B), idx]


def optimal_basket(probs: np.ndarray, p_none: float | None = None) -> tuple[int, bool, float]:
    """The expected-F1-maximising prediction for one order.

    Args:
        probs: 1-D array of the independent reorder probabilities of the candidates (any order;
            all are used, no cap).
        p_none: P(no product reordered) from a model of its own; default Π(1 - p_i).

    Returns:
        ``(k, include_none, expected_f1)``: predict the k most probable products, plus the
        "None" token when ``include_none``. ``k == 0`` always comes with ``include_none=True``.
        Ties are resolved towards the smaller k, then towards no None.
    """
    p = np.sort(np.clip(np.asarray(probs, dtype=np.float64).ravel(), 0.0, 1.0))[::-1]
    table = _expected_f1_batch(p[None, :], None if p_none is None else np.array([p_none]))[0]
    k, none, f1 = _best_choice(table[None], np.array([table.shape[0] - 1]))
    return int(k[0]), bool(none[0]), float(f1[0])


def choose_baskets(
    scores: pl.DataFrame,
    key: str,
    *,
    keys: pl.Series | Sequence[int] | None = None,
    max_candidates: int = MAX_CANDIDATES,
    with_expected_f1: bool = False,
    p_none: pl.DataFrame | None = None,
    none_weight: float = 1.0,
) -> pl.DataFrame:
    """F1-optimal basket (with or without "None") for every key.

    Args:
        scores: one row per (``key``, ``S.PRODUCT``) with a calibrated reorder probability in
            ``S.SCORE``. Rows with a null product or score are ignored.
        key: the grouping column (e.g. ``S.ORDER`` or ``S.USER``).
        keys: optional keys to produce a basket for; keys without any candidate row get an
            empty product list and ``none=True``. By default, the keys present in ``scores``.
        max_candidates: only the ``max_candidates`` most probable products of a key are
            considered (default ``MAX_CANDIDATES`` = 80); the rest are never predicted.
        with_expected_f1: also return the maximal expected F1 in ``S.BASKET_EXPECTED_F1``.
        p_none: optional ``key``, ``S.SCORE`` rows: each key's P(no product reordered) from a
            model of its own (see :func:`_expected_f1_batch`); keys without one (or with a null
            or NaN value) use Π(1 - p_i).
        none_weight: P(None) = ``none_weight`` × the given value + (1 - ``none_weight``) × Π(1 - p_i)
            (see :data:`NONE_SOURCES`).

    Returns:
        One row per key, sorted by key: ``key`` (dtype of the input), ``S.BASKET_PRODUCTS``
        (List[UInt32], the chosen products by decreasing probability, ties by product id) and
        ``S.BASKET_NONE`` (Boolean) [, ``S.BASKET_EXPECTED_F1`` (Float64)].
    """
    cand = (
        scores.select(pl.col(key), pl.col(S.PRODUCT).cast(pl.UInt32), pl.col(S.SCORE).cast(pl.Float64))
        .drop_nulls()
        .pipe(sort_best_first, key)
        .with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).over(key).alias(_POS))
        .filter(pl.col(_POS) < max_candidates)
    )
    per_key = cand.group_by(key, maintain_order=True).agg(
        pl.col(S.PRODUCT).alias(S.BASKET_PRODUCTS), pl.len().alias(_K)
    )
    n_keys = per_key.height
    counts = per_key[_K].to_numpy().astype(np.int64)
    width = int(counts.max()) if n_keys else 0

    # Dense (n_keys, width) probability matrix, zero-padded; rows already sorted decreasingly.
    group = np.repeat(np.arange(n_keys), counts)
    P = np.zeros((n_keys, width))
    P[group, cand[_POS].to_numpy()] = np.clip(cand[S.SCORE].to_numpy(), 0.0, 1.0)

    given = np.full(n_keys, np.nan)
    if p_none is not None:
        matched = per_key.select(key).join(
            p_none.select(pl.col(key).cast(scores.schema[key]), pl.col(S.SCORE).cast(pl.Float64).fill_nan(None)),
            on=key,
            how="left",
            maintain_order="left",
        )
        given = matched[S.SCORE].fill_null(float("nan")).to_numpy()
    product_rule = np.prod(1.0 - P, axis=1)
    none_prob = np.where(np.isnan(given), product_rule, none_weight * given + (1 - none_weight) * product_rule)

    best_k = np.zeros(n_keys, dtype=np.int64)
    best_none = np.zeros(n_keys, dtype=bool)
    best_f1 = np.zeros(n_keys)
    order = np.argsort(counts, kind="stable")  # batch keys of similar size: little padding
    for start in range(0, n_keys, _BATCH):
        rows = order[start : start + _BATCH]
        n_max = int(counts[rows].max())
        table = _expected_f1_batch(P[rows, :n_max], none_prob[rows])
        best_k[rows], best_none[rows], best_f1[rows] = _best_choice(table, counts[rows])

    chosen = per_key.with_columns(
        pl.Series(_K, best_k, dtype=pl.UInt32),
        pl.Series(S.BASKET_NONE, best_none, dtype=pl.Boolean),
        pl.Series(S.BASKET_EXPECTED_F1, best_f1, dtype=pl.Float64),
    ).select(
        pl.col(key),
        pl.col(S.BASKET_PRODUCTS).list.head(pl.col(_K)),
        pl.col(S.BASKET_NONE),
        pl.col(S.BASKET_EXPECTED_F1),
    )
    if keys is not None:
        wanted = pl.Series(key, keys).cast(scores.schema[key]).unique()
        chosen = (
            pl.DataFrame(wanted)
            .join(chosen, on=key, how="left")
            .with_columns(
                pl.col(S.BASKET_PRODUCTS).fill_null(pl.lit([], dtype=pl.List(pl.UInt32))),
                pl.col(S.BASKET_NONE).fill_null(True),
                # An empty prediction ({None}) scores P(truth empty) = 1 without candidates.
                pl.col(S.BASKET_EXPECTED_F1).fill_null(1.0),
            )
        )
    chosen = chosen.sort(key)
    if not with_expected_f1:
        chosen = chosen.drop(S.BASKET_EXPECTED_F1)
    return chosen
