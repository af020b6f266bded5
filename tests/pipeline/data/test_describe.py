"""Tests of the data summary on a hand-written dataset with known figures."""

from __future__ import annotations

import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.describe import (
    BASKET_SIZE,
    ORDERS,
    REORDERS,
    basket_sizes,
    days_between,
    describe,
    format_description,
    orders_by_dow_hour,
    reorder_rate,
)
from basketcast.pipeline.data.storage import Dataset


@pytest.fixture
def hand() -> Dataset:
    """Two users. User 1: orders 10-12 prior, 13 train. User 2: 20-21 prior, 22 test (no lines)."""
    orders = pl.DataFrame(
        {
            S.ORDER: [10, 11, 12, 13, 20, 21, 22],
            S.USER: [1, 1, 1, 1, 2, 2, 2],
            S.EVAL_SET: [S.PRIOR, S.PRIOR, S.PRIOR, S.TRAIN, S.PRIOR, S.PRIOR, S.TEST],
            S.ORDER_NUMBER: [1, 2, 3, 4, 1, 2, 3],
            S.DOW: [0, 1, 0, 0, 2, 2, 6],
            S.HOUR: [10, 10, 15, 15, 9, 23, 0],
            S.DAYS_PRIOR: [None, 7, 30, 7, None, 3, 30],
        }
    )
    # (order, product, cart, reordered)
    rows = [
        (10, 1, 1, 0),
        (10, 2, 2, 0),
        (11, 1, 1, 1),
        (11, 3, 2, 0),
        (12, 2, 1, 1),
        (13, 1, 1, 1),
        (13, 2, 2, 1),
        (13, 4, 3, 0),
        (20, 1, 1, 0),
        (20, 3, 2, 0),
        (20, 5, 3, 0),
        (21, 6, 1, 0),
    ]
    lines = pl.DataFrame(rows, schema=[S.ORDER, S.PRODUCT, S.CART_POS, S.REORDERED], orient="row")
    lines = lines.with_columns(
        pl.when(pl.col(S.ORDER) == 13).then(pl.lit(S.TRAIN)).otherwise(pl.lit(S.PRIOR)).alias(S.EVAL_SET)
    )
    products = pl.DataFrame(
        {
            S.PRODUCT: [1, 2, 3, 4, 5, 6],
            S.PRODUCT_NAME: ["Banana", "Apple", "Milk", "Yogurt", "Chips", "Bread"],
            S.AISLE: [1, 1, 2, 2, 3, 4],
            S.DEPARTMENT: [1, 1, 2, 2, 3, 4],
        }
    )
    aisles = pl.DataFrame({S.AISLE: [1, 2, 3, 4], S.AISLE_NAME: ["fruit", "milk", "chips", "bread"]})
    departments = pl.DataFrame(
        {S.DEPARTMENT: [1, 2, 3, 4], S.DEPARTMENT_NAME: ["produce", "dairy eggs", "snacks", "bakery"]}
    )
    return Dataset(
        orders=S.conform(S.ORDERS, orders),
        order_products=S.conform(S.ORDER_PRODUCTS, lines),
        products=S.conform(S.PRODUCTS, products),
        aisles=S.conform(S.AISLES, aisles),
        departments=S.conform(S.DEPARTMENTS, departments),
    )


def test_describe_known_numbers(hand: Dataset) -> None:
    stats = describe(hand)
    assert stats["users"] == 2
    assert stats["orders"] == 7
    assert stats["lines"] == 12
    assert stats["products"] == 6
    assert stats["products_bought"] == 6
    assert stats["orders_per_user"] == {"mean": 3.5, "median": 3.5, "min": 3, "max": 4}
    # baskets of the six orders with lines: 2, 2, 1, 3, 3, 1
    assert stats["basket_size"] == {"mean": 2.0, "median": 2.0, "p90": 3.0}
    # every order line counts (prior and train): 12, of which 4 reordered
    assert stats["reorder_ratio"] == pytest.approx(4 / 12)
    # non-first orders with lines: 11, 12, 13 have a reorder, 21 has none
    assert stats["no_reorder_share"] == pytest.approx(0.25)
    days = stats["days_between"]
    assert days["mean"] == pytest.approx(15.4)
    assert days["median"] == 7.0
    assert days["share_7"] == pytest.approx(0.4)
    assert days["share_30"] == pytest.approx(0.4)
    assert stats["orders_by_dow"] == [3, 1, 2, 0, 0, 0, 1]
    grid = stats["dow_hour"]
    assert len(grid) == 7 and all(len(row) == 24 for row in grid)
    assert sum(map(sum, grid)) == 7
    assert grid[0][10] == 1 and grid[0][15] == 2 and grid[1][10] == 1
    assert grid[2][9] == 1 and grid[2][23] == 1 and grid[6][0] == 1
    # product 1: 4 lines, 2: 3, 3: 2, 4-6: 1 each -> produce 7, dairy 3, snacks 1, bakery 1
    assert stats["top_departments"] == [
        {"department": "produce", "share": pytest.approx(7 / 12)},
        {"department": "dairy eggs", "share": pytest.approx(3 / 12)},
        {"department": "bakery", "share": pytest.approx(1 / 12)},
        {"department": "snacks", "share": pytest.approx(1 / 12)},
    ]
    assert stats["eval_set_orders"] == {S.PRIOR: 5, S.TRAIN: 1, S.TEST: 1}
    assert stats["eval_set_lines"] == {S.PRIOR: 9, S.TRAIN: 3, S.TEST: 0}
    assert stats["train_share_of_last"] == 0.5


def test_format_description_is_one_screen(hand: Dataset) -> None:
    text = format_description(describe(hand))
    lines = text.splitlines()
    assert len(lines) <= 30 and max(map(len, lines)) <= 120
    assert "users 2" in text and "orders 7" in text and "lines 12" in text
    assert "0.333 of order lines" in text  # reorder ratio
    assert "produce 58.3%" in text
    assert "median 7" in text


def test_describe_handles_empty_lines(hand: Dataset) -> None:
    empty = Dataset(
        orders=hand.orders,
        order_products=S.empty_table(S.ORDER_PRODUCTS),
        products=hand.products,
        aisles=hand.aisles,
        departments=hand.departments,
    )
    stats = describe(empty)
    assert stats["lines"] == 0
    assert stats["reorder_ratio"] is None
    assert stats["no_reorder_share"] is None
    assert stats["top_departments"] == []
    assert isinstance(format_description(stats), str)


def test_the_shared_definitions(hand: Dataset) -> None:
    """The statistics the dashboard shows too, on the hand data (see ``test_describe_known_numbers``)."""
    lines = hand.order_products
    assert lines.select(reorder_rate()).item() == pytest.approx(4 / 12)
    # leaving out the users' first orders (10 and 20): 7 lines, 4 reordered
    numbered = lines.join(hand.orders.select(S.ORDER, S.USER, S.ORDER_NUMBER), on=S.ORDER)
    assert numbered.select(reorder_rate(where=pl.col(S.ORDER_NUMBER) > 1)).item() == pytest.approx(4 / 7)
    per_user = numbered.group_by(S.USER).agg(reorder_rate().alias("rate")).sort(S.USER)
    assert per_user.rows() == [(1, pytest.approx(4 / 8)), (2, 0.0)]
    assert S.empty_table(S.ORDER_PRODUCTS).select(reorder_rate()).item() is None

    sizes = basket_sizes(lines).sort(S.ORDER)
    assert sizes.rows() == [(10, 2, 0), (11, 2, 1), (12, 1, 1), (13, 3, 2), (20, 3, 0), (21, 1, 0)]
    assert sizes.columns == [S.ORDER, BASKET_SIZE, REORDERS]

    assert days_between(hand.orders).to_list() == [7, 30, 7, 3, 30]

    grid = orders_by_dow_hour(hand.orders)
    assert grid.height == 7 * 24 and grid[ORDERS].sum() == 7
    assert grid.filter(pl.col(ORDERS) > 0).rows() == [
        (0, 10, 1),
        (0, 15, 2),
        (1, 10, 1),
        (2, 9, 1),
        (2, 23, 1),
        (6, 0, 1),
    ]
