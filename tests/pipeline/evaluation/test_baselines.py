"""Baselines on hand-made histories with known answers, and TIFU-KNN against a naive port."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import basketcast.features.tifu
from basketcast.features.tifu import tifu_user_vectors
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.evaluation.baselines import global_popularity, tifu_knn, top_frequency

A, B, C, D, E, F, Z = 1, 2, 3, 4, 5, 6, 26
OUT_SCHEMA = {S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, S.SCORE: pl.Float32, S.RANK: pl.UInt16}


def _history(baskets: dict[int, list[list[int]]]) -> pl.DataFrame:
    """USER, ORDER_NUMBER, PRODUCT lines from {user: [basket 1, basket 2, ...]}."""
    rows = [
        (user, number, product)
        for user, user_baskets in baskets.items()
        for number, basket in enumerate(user_baskets, start=1)
        for product in basket
    ]
    return pl.DataFrame(rows, schema={S.USER: pl.UInt32, S.ORDER_NUMBER: pl.UInt16, S.PRODUCT: pl.UInt32}, orient="row")


# User 1 buys A every time; B twice (last in order 3); C once (order 2); D once (order 4).
# User 2 buys E twice and F once. Popularity (order lines): A 4, B 2, E 2, C 1, D 1, F 1.
HISTORY = _history({1: [[A, B], [A, C], [A, B], [A, D]], 2: [[E, F], [E]]})


def _products(out: pl.DataFrame, user: int) -> list[int]:
    return out.filter(pl.col(S.USER) == user).sort(S.RANK)[S.PRODUCT].to_list()


def _scores(out: pl.DataFrame, user: int) -> list[float]:
    return out.filter(pl.col(S.USER) == user).sort(S.RANK)[S.SCORE].to_list()


def _check_shape(out: pl.DataFrame, users: list[int], k: int) -> None:
    assert out.schema == pl.Schema(OUT_SCHEMA)
    assert out.group_by(S.USER).len().sort(S.USER).rows() == [(u, k) for u in sorted(users)]
    for user in users:
        assert out.filter(pl.col(S.USER) == user)[S.RANK].to_list() == list(range(1, k + 1))
        assert len(set(_products(out, user))) == k


def test_global_popularity() -> None:
    out = global_popularity(HISTORY, [999, 1], 3)
    _check_shape(out, [1, 999], 3)
    # B and E tie at 2 lines: smaller product id first.
    assert _products(out, 1) == _products(out, 999) == [A, B, E]
    assert _scores(out, 1) == [4.0, 2.0, 2.0]


def test_top_frequency_order_and_padding() -> None:
    out = top_frequency(HISTORY, pl.Series([1, 2, 999, 1]), 6)
    _check_shape(out, [1, 2, 999], 6)
    # A (4 orders) first; C and D both once, D bought more recently → before C.
    # Padded with the most popular products not already listed: E, then F (score 0).
    assert _products(out, 1) == [A, B, D, C, E, F]
    assert _scores(out, 1) == [4.0, 2.0, 1.0, 1.0, 0.0, 0.0]
    assert _products(out, 2) == [E, F, A, B, C, D]
    # No history: pure popularity, all scores 0.
    assert _products(out, 999) == [A, B, E, C, D, F]
    assert _scores(out, 999) == [0.0] * 6


def test_fewer_products_than_k() -> None:
    out = top_frequency(HISTORY, [1], 10)
    assert out.height == 6  # only 6 distinct products exist in the history


def test_tifu_vectors_four_baskets_by_hand() -> None:
    # n = 4 baskets, 3 groups: 4 = 1·3 + 1, so the groups are {b1}, {b2}, {b3, b4}.
    # Basket weights 0.9^3, 0.9^2, 0.9, 1; group weights 0.7^2, 0.7, 1; divide by 3 groups.
    out = tifu_knn(HISTORY, [1], 4, alpha=1.0)
    _check_shape(out, [1], 4)
    g0, g1 = 0.49 * 0.729, 0.7 * 0.81
    expected = {
        A: (g0 + g1 + (0.9 + 1.0) / 2) / 3,  # 0.624737
        B: (g0 + 0.9 / 2) / 3,  # 0.269070
        C: g1 / 3,  # 0.189
        D: 1.0 / 2 / 3,  # 0.166667
    }
    assert _products(out, 1) == [A, B, C, D]  # (top_frequency says A, B, D, C)
    np.testing.assert_allclose(_scores(out, 1), list(expected.values()), rtol=1e-6)


def test_tifu_vectors_grouping() -> None:
    # One distinct product per basket, so each weight shows where its basket went.
    # n = 7, 3 groups: 7 = 2·3 + 1 → the first 2 groups have 2 baskets, the last one 3.
    lines = _history({1: [[t] for t in range(7)]})
    vecs = tifu_user_vectors(lines, within_decay=0.9, group_decay=0.7, n_groups=3)
    group = [0, 0, 1, 1, 2, 2, 2]
    size = [2, 2, 2, 2, 3, 3, 3]
    expected = [0.9 ** (6 - t) * 0.7 ** (2 - group[t]) / size[t] / 3 for t in range(7)]
    np.testing.assert_allclose(vecs.sort(S.PRODUCT)[S.SCORE].to_numpy(), expected)

    # n = 2 < 3 groups: each basket is a group, the real group count is 2, but the group decay
    # still counts from n_groups (exponents 2 and 1), as in the authors' code.
    vecs = tifu_user_vectors(_history({1: [[0], [1]]}), n_groups=3)
    np.testing.assert_allclose(vecs.sort(S.PRODUCT)[S.SCORE].to_numpy(), [0.9 * 0.49 / 2, 0.7 / 2])


def test_tifu_neighbour_effect() -> None:
    # One basket each → vector = 0.7^2 = 0.49 on the bought products.
    # User 1 {A}, user 2 {A, B}, user 3 {Z}. With 2 neighbours, user 1's are itself (distance 0)
    # and user 2 (0.49 < 0.49·√2 for user 3). alpha = 0.5:
    #   A: 0.5·0.49 + 0.5·(0.49 + 0.49)/2 = 0.49;  B: 0.5·(0 + 0.49)/2 = 0.1225;  Z: padding.
    history = _history({1: [[A]], 2: [[A, B]], 3: [[Z]]})
    out = tifu_knn(history, [1], 3, alpha=0.5, n_neighbors=2)
    _check_shape(out, [1], 3)
    assert _products(out, 1) == [A, B, Z]
    np.testing.assert_allclose(_scores(out, 1), [0.49, 0.1225, 0.0], rtol=1e-6)
    # Without neighbours B is not scored and comes from the popularity padding instead.
    out = tifu_knn(history, [1], 3, alpha=1.0)
    np.testing.assert_allclose(_scores(out, 1), [0.49, 0.0, 0.0], rtol=1e-6)


def test_tifu_neighbour_ties_go_to_smaller_user_id() -> None:
    # Users 2 and 3 are equally far from user 1; with 2 neighbours user 2 is taken.
    #   A: 0.5·0.49 + 0.5·0.49/2 = 0.3675;  B: 0.5·0.49/2 = 0.1225.
    history = _history({1: [[A]], 2: [[B]], 3: [[C]]})
    out = tifu_knn(history, [1], 2, alpha=0.5, n_neighbors=2)
    assert _products(out, 1) == [A, B]
    np.testing.assert_allclose(_scores(out, 1), [0.3675, 0.1225], rtol=1e-6)


def _group_history_list(his: list[np.ndarray], group_size: int) -> tuple[list[np.ndarray], int]:
    """The authors' ``group_history_list`` (TIFUKNN.py), condensed."""
    if len(his) < group_size:
        return list(his), len(his)
    est = len(his) / group_size
    base = int(np.floor(est))
    residual = est - base
    n_extra = int(np.round(residual * group_size))
    if residual == 0:
        return [np.sum([his[i * base + j] for j in range(base)], axis=0) / base for i in range(group_size)], group_size
    grouped = [np.sum([his[i * base + j] for j in range(base)], axis=0) / base for i in range(group_size - n_extra)]
    last_idx = (group_size - n_extra) * base - 1
    est_num = int(np.ceil(est))
    for i in range(n_extra):
        grouped.append(np.sum([his[last_idx + 1 + i * est_num + j] for j in range(est_num)], axis=0) / est_num)
    return grouped, group_size


def _naive_tifu(
    baskets: dict[int, list[list[int]]], n_products: int, G: int, alpha: float, n_neighbors: int
) -> dict[int, np.ndarray]:
    """Dense port of temporal_decay_sum_history + brute-force KNN + merge_history."""
    users = sorted(baskets)
    vecs = []
    for user in users:
        n = len(baskets[user])
        his = []
        for idx, basket in enumerate(baskets[user]):
            v = np.zeros(n_products)
            v[basket] = 0.9 ** (n - 1 - idx)
            his.append(v)
        grouped, real = _group_history_list(his, G)
        vecs.append(sum(grouped[i] * 0.7 ** (G - 1 - i) for i in range(real)) / real)
    M = np.array(vecs)
    dist = np.sqrt(((M[:, None, :] - M[None, :, :]) ** 2).sum(axis=2))
    m = min(n_neighbors, len(users))
    nn = np.argsort(dist, axis=1, kind="stable")[:, :m]
    pred = alpha * M + (1 - alpha) * M[nn].mean(axis=1)
    return dict(zip(users, pred, strict=True))


@pytest.mark.parametrize(("G", "alpha", "n_neighbors"), [(3, 0.9, 10), (4, 0.5, 7), (1, 0.7, 500)])
def test_tifu_matches_naive_port(monkeypatch: pytest.MonkeyPatch, G: int, alpha: float, n_neighbors: int) -> None:
    monkeypatch.setattr(basketcast.features.tifu, "KNN_BLOCK", 7)  # several query blocks
    rng = np.random.default_rng(G)
    n_products, k = 40, 10
    baskets: dict[int, list[list[int]]] = {}
    for user in range(1, 51):
        taste = rng.dirichlet(np.full(n_products, 0.3))
        baskets[user] = [
            sorted({int(p) for p in rng.choice(n_products, size=int(rng.integers(1, 8)), p=taste)})
            for _ in range(int(rng.integers(1, 12)))
        ]
    expected = _naive_tifu(baskets, n_products, G, alpha, n_neighbors)
    query = list(range(1, 51, 2))
    out = tifu_knn(_history(baskets), query, k, n_groups=G, alpha=alpha, n_neighbors=n_neighbors)
    _check_shape(out, query, k)
    for user in query:
        products = np.array(_products(out, user))
        scores = np.array(_scores(out, user))
        scored = scores > 0
        # The scored products are the top of the naive prediction, with the same values.
        np.testing.assert_allclose(scores[scored], expected[user][products[scored]], rtol=1e-6)
        top = np.sort(expected[user][expected[user] > 0])[::-1][:k]
        np.testing.assert_allclose(scores[scored], top, rtol=1e-6)


def test_distinct_flag_skips_deduplication_only() -> None:
    users = [1, 2]
    assert global_popularity(HISTORY, users, 3, distinct=True).equals(global_popularity(HISTORY, users, 3))
    assert top_frequency(HISTORY, users, 3, distinct=True).equals(top_frequency(HISTORY, users, 3))
    assert tifu_knn(HISTORY, users, 3, n_neighbors=1, distinct=True).equals(tifu_knn(HISTORY, users, 3, n_neighbors=1))
    # Without the flag a duplicated line still counts once.
    doubled = pl.concat([HISTORY, HISTORY])
    assert top_frequency(doubled, users, 3).equals(top_frequency(HISTORY, users, 3))
