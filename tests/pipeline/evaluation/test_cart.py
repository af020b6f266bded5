"""Cart completion: splits by cart position, rankings without the cart, the PMI rescoring, the report by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.evaluation.cart import (
    CartCompletion,
    CartSplits,
    cart_completion_report,
    cart_pmi,
    cart_splits,
    cooccurrence_ranking,
    fit_weight,
    random_cart_splits,
    rescored,
    without_cart,
)
from basketcast.pipeline.model.cooccurrence import Cooccurrence

KEYS = {S.USER: pl.UInt32, S.PRODUCT: pl.UInt32}


def _frame(rows: list[tuple[int, ...]], schema: Mapping[str, type[pl.DataType]] = KEYS) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


def _target(rows: list[tuple[int, int, int, int]]) -> pl.DataFrame:
    """USER, PRODUCT, CART_POS, REORDERED lines."""
    schema = {S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, S.CART_POS: pl.UInt16, S.REORDERED: pl.UInt8}
    return pl.DataFrame(rows, schema=schema, orient="row")


# User 1 adds 10, 20, 30, 40, 50 in that order (rows shuffled); user 2 adds 60 then 10; user 3 one product.
TARGET = _target(
    [
        (1, 40, 4, 1),
        (1, 10, 1, 0),
        (2, 10, 2, 1),
        (1, 50, 5, 0),
        (1, 30, 3, 0),
        (3, 70, 1, 1),
        (1, 20, 2, 1),
        (2, 60, 1, 0),
    ]
)


def _products(frame: pl.DataFrame, user: int, by: str | None = None) -> list[int]:
    rows = frame.filter(pl.col(S.USER) == user)
    return (rows.sort(by) if by else rows)[S.PRODUCT].to_list()


def test_cart_splits_by_cart_position_and_min_size() -> None:
    splits = cart_splits(TARGET)
    assert splits.users.to_list() == [1, 2]  # user 3 has a single product
    assert _products(splits.cart, 1) == [10, 20]  # floor(5/2) first by cart position
    assert _products(splits.rest, 1) == [30, 40, 50]
    assert _products(splits.cart, 2) == [60] and _products(splits.rest, 2) == [10]
    assert splits.rest.columns == [S.USER, S.PRODUCT, S.REORDERED]
    assert splits.rest.filter(pl.col(S.USER) == 1)[S.REORDERED].to_list() == [0, 1, 0]
    assert cart_splits(TARGET, min_size=3).users.to_list() == [1]
    with pytest.raises(ValueError, match="min_size"):
        cart_splits(TARGET, min_size=1)


def test_random_cart_splits_bounds_and_seed() -> None:
    sizes = set()
    for seed in range(40):
        splits = random_cart_splits(TARGET, seed)
        assert splits.users.to_list() == [1, 2]
        m = len(_products(splits.cart, 1))
        sizes.add(m)
        # A prefix by cart position, and at least one product on each side.
        assert _products(splits.cart, 1) == [10, 20, 30, 40, 50][:m]
        assert _products(splits.rest, 1) == [10, 20, 30, 40, 50][m:]
        assert _products(splits.cart, 2) == [60]
    assert sizes == {1, 2, 3, 4}
    a, b = random_cart_splits(TARGET, 5), random_cart_splits(TARGET, 5)
    assert a.cart.equals(b.cart) and a.rest.equals(b.rest)


# Candidate rows of user 1 (cart 10, 20) and user 2 (cart 60).
ROWS = _frame([(1, 10), (1, 30), (1, 20), (1, 40), (1, 50), (2, 60), (2, 10), (2, 30)])
SCORES = np.array([0.9, 0.5, 0.8, 0.6, 0.1, 0.7, 0.2, 0.3])


def test_without_cart_removes_the_cart_and_ranks_the_rest() -> None:
    cart = cart_splits(TARGET).cart
    out = without_cart(ROWS, SCORES, cart, k=2)
    assert _products(out, 1, S.RANK) == [40, 30]
    assert _products(out, 2, S.RANK) == [30, 10]
    assert out[S.RANK].to_list() == [1, 2, 1, 2]
    # Cart keys in other dtypes still match.
    cast = cart.with_columns(pl.col(S.USER).cast(pl.Int64), pl.col(S.PRODUCT).cast(pl.Int32))
    assert without_cart(ROWS, SCORES, cast, k=2).equals(out)


def test_rescored_with_weight_zero_is_without_cart() -> None:
    cart = cart_splits(TARGET).cart
    noise = np.random.default_rng(0).normal(size=SCORES.size)
    assert rescored(ROWS, SCORES, cart, noise, 0.0, k=3).equals(without_cart(ROWS, SCORES, cart, k=3))
    assert not rescored(ROWS, SCORES, cart, noise, 5.0, k=3).equals(without_cart(ROWS, SCORES, cart, k=3))


# 7 and B = 200 are bought together: N = 10, n(7) = n(200) = n(7, 200) = 3, PMI = ln(3·10/9) = ln(10/3).
# A = 100 is bought alone. 8 goes with 7 twice: n(8) = 2, n(7, 8) = 2, PMI = ln(2·10/6) = ln(10/3).
A, B = 100, 200
COOC = Cooccurrence.of(
    _frame(
        [
            (u, 1, p)
            for u, basket in enumerate([[7, B, 8], [7, B, 8], [7, B], [A], [A], [A], [5], [5], [5], [5]])
            for p in basket
        ],
        {S.USER: pl.UInt32, S.ORDER_NUMBER: pl.UInt16, S.PRODUCT: pl.UInt32},
    ),
    min_support=2,
)
LN = math.log(10 / 3)


def test_the_cart_lifts_b_above_a() -> None:
    rows = _frame([(1, A), (1, B)])
    scores = np.array([0.5, 0.4])
    cart = _frame([(1, 7)])
    pmi = cart_pmi(rows, cart, COOC)
    np.testing.assert_allclose(pmi, [0.0, LN], rtol=1e-6)
    assert _products(without_cart(rows, scores, cart, 2), 1, S.RANK) == [A, B]
    assert _products(rescored(rows, scores, cart, pmi, 1.0, 2), 1, S.RANK) == [B, A]
    # Co-occurrence alone, over every product reachable from the cart: B and 8 tie on PMI, B's id is larger.
    alone = cooccurrence_ranking(cart, COOC, k=5)
    assert _products(alone, 1, S.RANK) == [8, B]
    np.testing.assert_allclose(alone[S.SCORE].to_numpy(), [LN, LN], rtol=1e-6)


def test_cooccurrence_ranking_removes_the_cart_and_averages_over_it() -> None:
    cart = _frame([(1, 7), (1, B), (2, 5)])
    out = cooccurrence_ranking(cart, COOC, k=5)
    # User 1: 8 relates to 7 only (PMI(B, 8) = ln(2·10/6) too): mean over the 2 cart products.
    pmi_b8 = math.log(2 * 10 / (3 * 2))
    assert _products(out, 1, S.RANK) == [8]  # 7 and B are in the cart
    assert out.filter(pl.col(S.USER) == 1)[S.SCORE].to_list() == [pytest.approx((LN + pmi_b8) / 2, rel=1e-6)]
    assert _products(out, 2) == []  # 5 relates to nothing
    # Over given candidates only: unreached candidates score 0 and follow by product id; cart rows go.
    candidates = _frame([(1, A), (1, 8), (1, 7), (1, 50), (2, A)])
    given = cooccurrence_ranking(cart, COOC, k=5, candidates=candidates)
    assert _products(given, 1, S.RANK) == [8, 50, A]
    assert _products(given, 2, S.RANK) == [A]


def test_cart_pmi_equals_cart_scores_per_user() -> None:
    rng = np.random.default_rng(3)
    baskets = [rng.choice(30, size=int(rng.integers(2, 8)), replace=False) for _ in range(400)]
    lines = _frame(
        [(i, 1, int(p)) for i, b in enumerate(baskets) for p in b],
        {S.USER: pl.UInt32, S.ORDER_NUMBER: pl.UInt16, S.PRODUCT: pl.UInt32},
    )
    cooc = Cooccurrence.of(lines, min_support=3, top=5)
    cart = _frame([(u, int(p)) for u in range(1, 6) for p in rng.choice(30, size=u, replace=False)])
    rows = _frame([(u, p) for u in range(1, 7) for p in range(30)])  # user 6 has no cart
    got = cart_pmi(rows, cart, cooc)
    for user in range(1, 7):
        products = rows.filter(pl.col(S.USER) == user)[S.PRODUCT].to_numpy()
        expected = cooc.cart_scores(cart.filter(pl.col(S.USER) == user)[S.PRODUCT].to_numpy(), products)
        np.testing.assert_allclose(got[rows[S.USER].to_numpy() == user], expected, rtol=1e-6, atol=1e-7)
    assert got[rows[S.USER].to_numpy() == 6].tolist() == [0.0] * 30
    assert np.count_nonzero(got) > 20


def test_fit_weight_positive_when_the_cart_informs_zero_when_not() -> None:
    rows = _frame([(1, A), (1, B), (2, A), (2, B)])
    scores = np.array([0.5, 0.4, 0.5, 0.4])
    cart = _frame([(1, 7), (2, 7)])
    pmi = cart_pmi(rows, cart, COOC)
    rest_b = _frame([(1, B, 0), (2, B, 1)], {**KEYS, S.REORDERED: pl.UInt8})
    # B comes first once 0.4 + β ln(10/3) > 0.5, i.e. β > 0.083: 0.1 is the smallest such weight of the grid.
    assert fit_weight(rows, scores, pmi, CartSplits(cart=cart, rest=rest_b)) == 0.1
    rest_a = rest_b.with_columns(pl.lit(A, dtype=pl.UInt32).alias(S.PRODUCT))
    assert fit_weight(rows, scores, pmi, CartSplits(cart=cart, rest=rest_a)) == 0.0
    # Only the given users count: user 2's rest is A, user 1's is B.
    mixed = CartSplits(cart=cart, rest=pl.concat([rest_b.head(1), rest_a.tail(1)]))
    assert fit_weight(rows, scores, pmi, mixed, users=[1]) == 0.1
    assert fit_weight(rows, scores, pmi, mixed, users=pl.Series([2])) == 0.0


# The report on a case computed by hand (k = 2): user 1 cart {10, 20}, rest {30, 40, 50}, bought 30 before;
# user 2 cart {60}, rest {10}, new. IDCG@2 with two relevant items is 1 + 1/log2(3).
IDCG2 = 1 + 1 / math.log2(3)


def test_report_by_hand() -> None:
    splits = cart_splits(TARGET)
    history = _frame([(1, 30), (1, 60), (2, 99)])
    ranking = {S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, S.RANK: pl.UInt16}
    rankings = {
        "reference": _frame([(1, 30, 1), (1, 99, 2), (2, 10, 1), (2, 98, 2)], ranking),
        "method": _frame([(1, 40, 1), (1, 30, 2), (2, 97, 1), (2, 96, 2)], ranking),
    }
    report = cart_completion_report(splits, rankings, history, "reference", k=2, resamples=2_000, seed=0)
    assert (report.users, report.repeat_users, report.explore_users) == (2, 1, 2)
    assert (report.mean_cart_size, report.mean_rest_size) == (1.5, 2.0)
    ref, m = report.methods["reference"], report.methods["method"]
    # Reference: user 1 hits 30 at 1 (recall 1/3, NDCG 1/IDCG2); user 2 hits 10 at 1.
    assert ref.recall == pytest.approx((1 / 3 + 1) / 2)
    assert ref.ndcg == pytest.approx((1 / IDCG2 + 1) / 2)
    assert (ref.repeat_recall, ref.repeat_ndcg) == (pytest.approx(1.0), pytest.approx(1.0))
    assert (ref.explore_recall, ref.explore_ndcg) == (pytest.approx(0.5), pytest.approx(0.5))
    # Method: user 1 hits 40 at 1 and 30 at 2 (recall 2/3, NDCG 1); user 2 nothing.
    assert m.recall == pytest.approx(1 / 3)
    assert m.ndcg == pytest.approx(0.5)
    assert (m.repeat_recall, m.repeat_ndcg) == (pytest.approx(1.0), pytest.approx(1 / math.log2(3)))
    assert (m.explore_recall, m.explore_ndcg) == (pytest.approx(0.25), pytest.approx(0.5 / IDCG2))
    # Differences per user: NDCG (1 - 1/IDCG2, -1), recall (1/3, -1); two users, so the 95% interval spans
    # the extreme resample means (both users the same one).
    assert list(report.versus_reference) == ["method"]
    ndcg, recall = report.versus_reference["method"].ndcg, report.versus_reference["method"].recall
    assert ndcg.mean == pytest.approx((1 - 1 / IDCG2 - 1) / 2)
    assert (ndcg.low, ndcg.high) == (pytest.approx(-1.0), pytest.approx(1 - 1 / IDCG2))
    assert recall.mean == pytest.approx(-1 / 3)
    assert (recall.low, recall.high) == (pytest.approx(-1.0), pytest.approx(1 / 3))
    assert ndcg.resamples == 2_000
    # JSON round trip and one Markdown table.
    assert CartCompletion.model_validate_json(report.model_dump_json()) == report
    table = report.markdown()
    assert "| method | Recall@2 | NDCG@2 |" in table
    assert "| reference | 0.6667 | 0.8066 | 1.0000 | 1.0000 | 0.5000 | 0.5000 | — | — |" in table
    assert f"| method | 0.3333 | 0.5000 | 1.0000 | {1 / math.log2(3):.4f} |" in table


def test_report_without_repeat_truth_and_unknown_reference() -> None:
    splits = cart_splits(TARGET)
    ranking = without_cart(ROWS, SCORES, splits.cart, k=3)
    report = cart_completion_report(splits, {"ranker": ranking}, _frame([]), "ranker", resamples=10)
    assert report.repeat_users == 0
    assert math.isnan(report.methods["ranker"].repeat_recall)
    assert report.versus_reference == {}
    assert "n/a" in report.markdown()
    with pytest.raises(ValueError, match="reference"):
        cart_completion_report(splits, {"ranker": ranking}, _frame([]), "missing")
