"""F1-optimal baskets: the O(n²) programme against brute force over every subset and outcome."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.model.basket import (
    _BATCH,
    MAX_CANDIDATES,
    choose_baskets,
    expected_f1_table,
    optimal_basket,
)


def _brute_force(p: np.ndarray) -> dict[tuple[int, bool], float]:
    """Expected Kaggle F1 of every prediction (subset mask, with None) by enumerating all truths.

    Returns {(mask, none): E[F1]} where bit i of ``mask`` selects product i.
    """
    n = len(p)
    truths = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int64).reshape(-1, n)
    prob = np.prod(np.where(truths == 1, p, 1.0 - p), axis=1)  # (2^n,)
    masks = np.arange(2**n)
    preds = ((masks[:, None] >> np.arange(n)) & 1).astype(np.int64)  # (2^n, n)
    hits = truths @ preds.T  # (truths, preds)
    n_true = truths.sum(axis=1)[:, None]
    n_pred = preds.sum(axis=1)[None, :]
    truth_none = n_true == 0
    out: dict[tuple[int, bool], float] = {}
    for none in (False, True):
        pred_none = np.full(n_pred.shape, True) if none else n_pred == 0
        size_pred = n_pred + (1 if none else 0)
        size_pred = np.maximum(size_pred, 1)
        size_true = np.maximum(n_true, 1)
        f1 = 2.0 * (hits + (truth_none & pred_none)) / (size_pred + size_true)
        for mask, value in zip(masks, prob @ f1, strict=True):
            out[(int(mask), none)] = float(value)
    return out


@pytest.mark.parametrize("seed", range(60))
def test_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    # Mix of shapes: uniform, skewed towards 0, towards 1.
    p = rng.random(n) ** rng.choice([0.3, 1.0, 3.0])
    brute = _brute_force(p)
    table = expected_f1_table(p)
    assert table.shape == (n + 1, 2)

    # Every (top-k, none) entry of the table equals the brute-force expectation.
    order = np.argsort(-p, kind="stable")
    for k in range(n + 1):
        mask = sum(1 << int(i) for i in order[:k])
        for none in (False, True):
            assert table[k, int(none)] == pytest.approx(brute[(mask, none)], abs=1e-12)

    # The optimum over top-k choices is the optimum over all 2^(n+1) predictions.
    k, none, f1 = optimal_basket(p)
    assert f1 == pytest.approx(max(brute.values()), abs=1e-12)
    mask = sum(1 << int(i) for i in order[:k])
    assert brute[(mask, none)] == pytest.approx(f1, abs=1e-12)


def test_certain_products_are_all_taken_without_none() -> None:
    k, none, f1 = optimal_basket(np.array([0.999, 0.9999, 0.995, 0.999]))
    assert (k, none) == (4, False)
    assert f1 > 0.99


def test_tiny_probabilities_give_none_only() -> None:
    p = np.full(10, 0.001)
    k, none, f1 = optimal_basket(p)
    assert (k, none) == (0, True)
    assert f1 == pytest.approx(np.prod(1 - p))


def test_single_coin_flip() -> None:
    # p = 0.5. {None}: 0.5. {A}: 0.5. {A, None}: truth {A} → 2·1/(2+1), truth {None} → 2·1/(2+1),
    # so 2/3 whatever happens: the best choice.
    table = expected_f1_table(np.array([0.5]))
    np.testing.assert_allclose(table, [[0.5, 0.5], [0.5, 2 / 3]])
    assert optimal_basket(np.array([0.5])) == pytest.approx((1, True, 2 / 3))


def test_no_candidates() -> None:
    assert optimal_basket(np.array([])) == (0, True, 1.0)


def test_choose_baskets_shapes_and_consistency() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for order in range(1, 41):
        for product in rng.choice(1000, size=int(rng.integers(1, 12)), replace=False):
            rows.append((order, int(product), float(rng.beta(0.7, 2.0))))
    scores = pl.DataFrame(rows, schema={S.ORDER: pl.UInt32, S.PRODUCT: pl.UInt32, S.SCORE: pl.Float32}, orient="row")
    out = choose_baskets(scores, S.ORDER, keys=[*range(1, 41), 500], with_expected_f1=True)
    assert out.columns == [S.ORDER, S.BASKET_PRODUCTS, S.BASKET_NONE, S.BASKET_EXPECTED_F1]
    assert out.schema[S.BASKET_PRODUCTS] == pl.List(pl.UInt32)
    assert out.schema[S.BASKET_NONE] == pl.Boolean
    assert out[S.ORDER].to_list() == [*range(1, 41), 500]

    for order, products, none, f1 in out.iter_rows():
        if order == 500:  # no candidate at all
            assert (products, none, f1) == ([], True, 1.0)
            continue
        cand = scores.filter(pl.col(S.ORDER) == order).sort(S.SCORE, descending=True)
        probs = cand[S.SCORE].cast(pl.Float64).to_numpy()
        k, exp_none, exp_f1 = optimal_basket(probs)
        assert products == cand[S.PRODUCT].to_list()[:k]
        assert none == exp_none
        assert f1 == pytest.approx(exp_f1, abs=1e-12)


def test_choose_baskets_cap_ties_and_default_keys() -> None:
    scores = pl.DataFrame(
        {
            S.USER: [1, 1, 1, 2, 2],
            S.PRODUCT: [30, 10, 20, 5, 6],
            S.SCORE: [0.99, 0.99, 0.99, 0.001, 0.002],
        }
    )
    out = choose_baskets(scores, S.USER, max_candidates=2)
    assert out.columns == [S.USER, S.BASKET_PRODUCTS, S.BASKET_NONE]
    # Only the 2 best candidates survive the cap; equal probabilities → smaller product id first.
    assert out.row(0) == (1, [10, 20], False)
    assert out.row(1) == (2, [], True)


def test_choose_baskets_empty_input() -> None:
    scores = pl.DataFrame(schema={S.ORDER: pl.UInt32, S.PRODUCT: pl.UInt32, S.SCORE: pl.Float32})
    assert choose_baskets(scores, S.ORDER).height == 0
    out = choose_baskets(scores, S.ORDER, keys=[3, 1])
    assert out.rows() == [(1, [], True), (3, [], True)]


def test_choose_baskets_over_several_batches_equals_each_key_alone() -> None:
    """More keys than one batch of the vectorised programme (every real evaluation has more than
    _BATCH = 1,024 users), in shuffled rows, sizes 1 to above MAX_CANDIDATES: each key's basket
    is optimal_basket over its own MAX_CANDIDATES most probable candidates."""
    rng = np.random.default_rng(11)
    n_keys = 2 * _BATCH + 300
    sizes = rng.integers(1, 16, size=n_keys)
    big = rng.choice(n_keys, size=25, replace=False)
    sizes[big] = rng.integers(MAX_CANDIDATES + 1, MAX_CANDIDATES + 30, size=big.size)
    scores = pl.DataFrame(
        {
            S.ORDER: np.repeat(np.arange(1, n_keys + 1, dtype=np.uint32), sizes),
            S.PRODUCT: np.concatenate([rng.choice(10_000, size=n, replace=False) for n in sizes]).astype(np.uint32),
            S.SCORE: rng.beta(0.6, 1.8, size=int(sizes.sum())),
        }
    ).sample(fraction=1.0, shuffle=True, seed=5)
    out = choose_baskets(scores, S.ORDER, with_expected_f1=True)
    assert out[S.ORDER].to_list() == list(range(1, n_keys + 1))

    taken = 0
    by_key = scores.sort([S.ORDER, S.SCORE, S.PRODUCT], descending=[False, True, False]).partition_by(
        S.ORDER, as_dict=True
    )
    for key, products, none, f1 in out.iter_rows():
        mine = by_key[(key,)].head(MAX_CANDIDATES)
        k, expected_none, expected_f1 = optimal_basket(mine[S.SCORE].to_numpy())
        assert products == mine[S.PRODUCT].to_list()[:k], key
        assert none == expected_none and f1 == pytest.approx(expected_f1, abs=1e-12), key
        taken += k
    assert taken > n_keys  # mostly non-empty baskets: the comparison is not one of empty predictions
