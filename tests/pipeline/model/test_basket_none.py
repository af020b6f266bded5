"""P(None) from a model of its own (the sequence network's None row) in the F1-optimal basket."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.model.basket import (
    NONE_SOURCES,
    choose_baskets,
    expected_f1_table,
    none_probability,
    optimal_basket,
)


def test_default_p_none_is_the_product_rule() -> None:
    probs = np.array([0.6, 0.3, 0.1])
    assert optimal_basket(probs) == optimal_basket(probs, float(np.prod(1 - probs)))


def test_a_confident_none_model_predicts_none_alone() -> None:
    probs = np.array([0.35, 0.3, 0.2])
    k, none, _ = optimal_basket(probs)
    assert k >= 1  # by the product rule P(None) = 0.36: products are worth predicting
    k, none, f1 = optimal_basket(probs, 0.95)
    assert (k, none) == (0, True) and f1 == pytest.approx(0.95)


def test_expected_f1_with_p_none_matches_the_formula_for_one_candidate() -> None:
    # One candidate p; with None: E = 2p/(1+1+1)·... (k=1, None): 2·p/(k+1+A) with A = 1 → 2p/3, + 2 P(empty)/(k+2).
    p, q = 0.5, 0.4
    table = expected_f1_table(np.array([p]))
    assert table[1, 1] == pytest.approx(2 * p / 3 + 2 * (1 - p) / 3)
    from basketcast.pipeline.model.basket import _expected_f1_batch

    given = _expected_f1_batch(np.array([[p]]), np.array([q]))[0]
    assert given[1, 1] == pytest.approx(2 * p / 3 + 2 * q / 3)
    assert given[0, 0] == pytest.approx(q)


def test_choose_baskets_mixes_the_given_p_none() -> None:
    scores = pl.DataFrame({S.USER: [1, 1, 2], S.PRODUCT: [10, 11, 12], S.SCORE: [0.35, 0.3, 0.4]})
    plain = choose_baskets(scores, S.USER)
    p_none = pl.DataFrame({S.USER: [1, 2], S.SCORE: [0.99, float("nan")]})
    given = choose_baskets(scores, S.USER, p_none=p_none, none_weight=1.0)
    assert given.filter(pl.col(S.USER) == 1)[S.BASKET_PRODUCTS].to_list() == [[]]
    # user 2's NaN falls back to the product rule: the same basket as without a None model
    assert given.filter(pl.col(S.USER) == 2).equals(plain.filter(pl.col(S.USER) == 2))
    none_off = choose_baskets(scores, S.USER, p_none=p_none, none_weight=0.0)
    assert none_off.equals(plain)


def test_none_probability_sources() -> None:
    probs = np.array([0.5, 0.5])
    assert none_probability(probs, 0.8, "product") is None
    assert none_probability(probs, 0.8, "network") == pytest.approx(0.8)
    assert none_probability(probs, 0.8, "mean") == pytest.approx((0.8 + 0.25) / 2)
    assert none_probability(probs, float("nan"), "network") is None
    assert set(NONE_SOURCES) == {"product", "network", "mean"}
