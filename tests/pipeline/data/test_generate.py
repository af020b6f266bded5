"""Tests of the synthetic generator: determinism, structural invariants, realistic statistics."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.generate import DEPARTMENT_NAMES, GeneratorConfig, generate
from basketcast.pipeline.data.storage import Dataset

SMALL_USERS = 300
STATS_USERS = 2_000


@pytest.fixture(scope="module")
def small() -> Dataset:
    """300 users, seed 7."""
    return generate(SMALL_USERS, seed=7)


@pytest.fixture(scope="module")
def medium() -> Dataset:
    """2,000 users with the default config, seed 11."""
    return generate(STATS_USERS, seed=11)


def _frames(data: Dataset) -> dict[str, pl.DataFrame]:
    return {name: data.table(name) for name in S.TABLES}


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_frames(small: Dataset) -> None:
    again = generate(SMALL_USERS, seed=7)
    for name, frame in _frames(small).items():
        assert frame.equals(again.table(name)), name


def test_different_seed_gives_different_data(small: Dataset) -> None:
    other = generate(SMALL_USERS, seed=8)
    assert not small.orders.equals(other.orders)
    assert not small.order_products.equals(other.order_products)


def test_chunking_keeps_all_invariants() -> None:
    """Several chunks (and a last, smaller one) are stitched into one consistent dataset."""
    data = generate(250, seed=3, config=GeneratorConfig(chunk_users=100, n_products=2_000))
    _check_invariants(data, 250)


# --- structure -----------------------------------------------------------------------------------


def _check_invariants(data: Dataset, n_users: int) -> None:
    orders, lines = data.orders, data.order_products
    for name, frame in _frames(data).items():
        assert dict(frame.schema) == S.TABLE_SCHEMAS[name], name

    # ids
    assert orders[S.ORDER].is_unique().all()
    assert orders[S.ORDER].min() == 1 and orders[S.ORDER].max() == orders.height
    assert sorted(orders[S.USER].unique().to_list()) == list(range(1, n_users + 1))
    by_user = orders.sort(S.USER, S.ORDER_NUMBER)[S.ORDER]
    assert not by_user.is_sorted(), "order ids must be shuffled, not sorted by user"

    # order numbers run 1..n per user, 4..100 orders, last order train/test, earlier prior
    per_user = orders.group_by(S.USER).agg(
        pl.len().alias("n"),
        pl.col(S.ORDER_NUMBER).min().alias("lo"),
        pl.col(S.ORDER_NUMBER).max().alias("hi"),
        pl.col(S.ORDER_NUMBER).n_unique().alias("distinct"),
        pl.col(S.EVAL_SET).sort_by(S.ORDER_NUMBER).last().alias("last_eval"),
        (pl.col(S.EVAL_SET) == S.PRIOR).sum().alias("n_prior"),
    )
    assert (per_user["lo"] == 1).all()
    assert (per_user["hi"] == per_user["n"]).all()
    assert (per_user["distinct"] == per_user["n"]).all()
    assert per_user["n"].min() >= 4 and per_user["n"].max() <= 100  # type: ignore[operator]
    assert per_user["last_eval"].is_in([S.TRAIN, S.TEST]).all()
    assert (per_user["n_prior"] == per_user["n"] - 1).all()

    # days null exactly for the first order; ranges
    first = orders[S.ORDER_NUMBER] == 1
    assert (orders[S.DAYS_PRIOR].is_null() == first).all()
    days = orders[S.DAYS_PRIOR].drop_nulls()
    assert days.min() >= S.DAYS_PRIOR_RANGE[0] and days.max() <= S.DAYS_PRIOR_RANGE[1]  # type: ignore[operator]
    assert orders[S.DOW].max() <= S.DOW_RANGE[1]  # type: ignore[operator]
    assert orders[S.HOUR].max() <= S.HOUR_RANGE[1]  # type: ignore[operator]

    # lines: exactly the prior and train orders have lines, with the eval set of their order
    joined = lines.join(
        orders.select(S.ORDER, S.USER, S.ORDER_NUMBER, pl.col(S.EVAL_SET).alias("order_eval")),
        on=S.ORDER,
        how="left",
    )
    assert joined[S.USER].null_count() == 0, "lines of unknown orders"
    assert (joined[S.EVAL_SET] == joined["order_eval"]).all()
    with_lines = set(lines[S.ORDER].unique().to_list())
    expected = set(orders.filter(pl.col(S.EVAL_SET) != S.TEST)[S.ORDER].to_list())
    assert with_lines == expected
    assert lines.select(S.ORDER, S.PRODUCT).is_unique().all()
    assert set(lines[S.PRODUCT].unique().to_list()) <= set(data.products[S.PRODUCT].to_list())

    # cart positions run 1..n in every order
    carts = lines.group_by(S.ORDER).agg(
        pl.len().alias("n"),
        pl.col(S.CART_POS).min().alias("lo"),
        pl.col(S.CART_POS).max().alias("hi"),
        pl.col(S.CART_POS).n_unique().alias("distinct"),
    )
    assert (carts["lo"] == 1).all()
    assert (carts["hi"] == carts["n"]).all()
    assert (carts["distinct"] == carts["n"]).all()

    # reordered = the user bought the product in an earlier order
    recomputed = joined.with_columns(
        (pl.col(S.ORDER_NUMBER).rank("ordinal").over(S.USER, S.PRODUCT) > 1).cast(pl.UInt8).alias("expected")
    )
    assert (recomputed[S.REORDERED] == recomputed["expected"]).all()


def test_structural_invariants(small: Dataset) -> None:
    _check_invariants(small, SMALL_USERS)


def test_catalog(small: Dataset) -> None:
    products, aisles, departments = small.products, small.aisles, small.departments
    assert products.height == 49_688
    assert products[S.PRODUCT].to_list() == list(range(1, products.height + 1))
    assert aisles.height == 134 and aisles[S.AISLE].to_list() == list(range(1, 135))
    assert departments[S.DEPARTMENT_NAME].to_list() == list(DEPARTMENT_NAMES)
    assert departments[S.DEPARTMENT].to_list() == list(range(1, 22))
    assert set(products[S.AISLE].unique().to_list()) == set(aisles[S.AISLE].to_list())
    assert products[S.PRODUCT_NAME].null_count() == 0
    assert products[S.PRODUCT_NAME].is_unique().all()
    # every aisle belongs to one department
    assert (products.group_by(S.AISLE).agg(pl.col(S.DEPARTMENT).n_unique())[S.DEPARTMENT] == 1).all()
    # departments of very different sizes
    sizes = products.group_by(S.DEPARTMENT).len()["len"]
    assert sizes.max() > 50 * sizes.min()  # type: ignore[operator]


def test_config_is_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        GeneratorConfig(no_such_knob=1)  # type: ignore[call-arg]
    config = GeneratorConfig()
    with pytest.raises(ValidationError):
        config.basket_median = 3.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="n_users"):
        generate(0, seed=1)


# --- realistic statistics ------------------------------------------------------------------------


def test_default_statistics_are_instacart_like(medium: Dataset) -> None:
    orders, lines = medium.orders, medium.order_products
    basket = lines.group_by(S.ORDER).len()["len"]
    assert 8 <= basket.mean() <= 12  # type: ignore[operator]
    prior = lines.filter(pl.col(S.EVAL_SET) == S.PRIOR)
    assert 0.50 <= prior[S.REORDERED].mean() <= 0.68  # type: ignore[operator]
    assert 5 <= orders[S.DAYS_PRIOR].median() <= 9  # type: ignore[operator]
    per_user = orders.group_by(S.USER).len()["len"]
    assert 10 <= per_user.mean() <= 25  # type: ignore[operator]
    last = orders.filter(pl.col(S.EVAL_SET) != S.PRIOR)
    assert last.height == STATS_USERS
    assert 0.55 <= (last[S.EVAL_SET] == S.TRAIN).mean() <= 0.73  # type: ignore[operator]

    days = orders[S.DAYS_PRIOR].drop_nulls()
    share = days.value_counts(normalize=True)
    share_of = dict(share.iter_rows())
    assert share_of[7] > 2 * share_of[6] and share_of[30] > 2 * share_of[29], "spikes at 7 and 30"
    dows = orders[S.DOW].value_counts(normalize=True, sort=True)[S.DOW].to_list()
    assert set(dows[:2]) == {0, 1}
    night = orders.filter(pl.col(S.HOUR) < 6).height / orders.height
    assert night < 0.05

    later = (
        lines.join(orders.select(S.ORDER, S.ORDER_NUMBER), on=S.ORDER)
        .filter(pl.col(S.ORDER_NUMBER) > 1)
        .group_by(S.ORDER)
        .agg(pl.col(S.REORDERED).max())
    )
    assert 0.03 <= (later[S.REORDERED] == 0).mean() <= 0.15  # type: ignore[operator]

    dept = (
        lines.join(medium.products, on=S.PRODUCT)
        .join(medium.departments, on=S.DEPARTMENT)
        .group_by(S.DEPARTMENT_NAME)
        .len()
        .sort("len", descending=True)
    )
    assert set(dept[S.DEPARTMENT_NAME].head(2).to_list()) == {"produce", "dairy eggs"}


def test_recency_weighted_frequency_beats_plain_frequency(medium: Dataset) -> None:
    """The train basket is better predicted from recency-weighted than from plain purchase counts."""
    orders, lines = medium.orders, medium.order_products
    joined = lines.join(orders.select(S.ORDER, S.USER, S.ORDER_NUMBER), on=S.ORDER)
    prior = joined.filter(pl.col(S.EVAL_SET) == S.PRIOR).with_columns(
        pl.col(S.ORDER_NUMBER).max().over(S.USER).alias("last")
    )
    truth = joined.filter(pl.col(S.EVAL_SET) == S.TRAIN).select(S.USER, S.PRODUCT)
    age = (pl.col("last") - pl.col(S.ORDER_NUMBER)).cast(pl.Float64)

    def hits(score: pl.Expr) -> int:
        scored = prior.group_by(S.USER, S.PRODUCT).agg(score.alias("score"))
        top = scored.filter(pl.col("score").rank("ordinal", descending=True).over(S.USER) <= 10)
        return top.join(truth, on=[S.USER, S.PRODUCT], how="inner").height

    plain = hits(pl.len().cast(pl.Float64) + 1e-6 * pl.col(S.ORDER_NUMBER).max())
    recency = hits((0.8**age).sum())
    assert recency > 1.03 * plain
