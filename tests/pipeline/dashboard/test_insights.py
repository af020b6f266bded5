"""Shopping-pattern aggregations on the tiny hand-written data (tests/conftest.py), answers by hand.

Lines (order: product/reordered): 11: 101/0 102/0 · 12: 101/1 103/0 · 13: 101/1 102/1 ·
14 (train): 101/1 105/0 · 21: 101/0 104/0 · 22: 104/1. Products 101, 105 produce; 102, 104
dairy eggs; 103 bakery. User 1 orders 1-4 (all with lines), user 2 orders 1-2 with lines, 3 test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from basketcast.features.history import order_lines
from basketcast.pipeline.dashboard import insights as I
from basketcast.pipeline.dashboard.explorer import peak_context
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.describe import describe
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import Dataset, read_dataset


@pytest.fixture
def tiny(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> Dataset:
    ingest(tiny_kaggle(), tmp_path / "data")
    return read_dataset(tmp_path / "data")


def test_orders_by_dow_hour_fills_the_whole_week(tiny: Dataset) -> None:
    grid = I.orders_by_dow_hour(tiny.orders)
    assert grid.height == 7 * 24 and grid[I.ORDERS].sum() == 7
    cells = {(d, h): n for d, h, n in grid.filter(pl.col(I.ORDERS) > 0).iter_rows()}
    # (2,8) (3,7) (3,12) (4,7) (0,10) (1,11) (5,9): one order each, the test order included.
    assert cells == {(2, 8): 1, (3, 7): 1, (3, 12): 1, (4, 7): 1, (0, 10): 1, (1, 11): 1, (5, 9): 1}
    # The busiest slot, ties by day then hour: day 0 at 10:00.
    ctx = peak_context(grid)
    assert (ctx.dow, ctx.hour, ctx.days) == (0, 10, None)


def test_basket_sizes_and_days_between(tiny: Dataset) -> None:
    sizes = I.basket_size_distribution(tiny.order_products)
    assert sizes.rows() == [(1, 1), (2, 5)]  # order 22 has one product, the five others two
    days = I.days_between_distribution(tiny.orders)
    assert days.height == 31 and days[I.ORDERS].sum() == 5  # first orders have no gap
    assert {d: n for d, n in days.filter(pl.col(I.ORDERS) > 0).iter_rows()} == {7: 2, 15: 1, 21: 1, 29: 1}


def test_reorder_rate_by_department_and_top_products(tiny: Dataset) -> None:
    lines = order_lines(tiny)
    by_dept = I.reorder_rate(lines, S.DEPARTMENT, tiny.departments, S.DEPARTMENT_NAME)
    got = {name: (n, r, rate) for _, name, n, r, rate in by_dept.iter_rows()}
    assert got == {"produce": (6, 3, 0.5), "dairy eggs": (4, 2, 0.5), "bakery": (1, 0, 0.0)}
    assert by_dept[I.NAME].to_list() == ["produce", "dairy eggs", "bakery"]  # most lines first

    top = I.top_products(lines, tiny.products, 2, I.LINES)
    assert top.select(S.PRODUCT, S.PRODUCT_NAME, I.LINES, I.REORDERS).rows() == [
        (101, "Banana", 5, 3),
        (102, "Milk", 2, 1),  # ties with 104 (2 lines, 1 reorder): smaller id first
    ]
    reordered = I.top_products(lines, tiny.products, 3, I.REORDERS)
    assert reordered[S.PRODUCT].to_list() == [101, 102, 104]
    with pytest.raises(ValueError, match="by must be"):
        I.top_products(lines, tiny.products, 2, "score")


def test_unknown_names_get_a_placeholder(tiny: Dataset) -> None:
    lines = order_lines(tiny)
    rates = I.reorder_rate(lines, S.AISLE, tiny.aisles.filter(pl.col(S.AISLE) != 24), S.AISLE_NAME)
    assert "aisle_id 24" in rates[I.NAME].to_list()


def test_reorder_decay_is_the_discrete_hazard(tiny: Dataset) -> None:
    # Pairs (user, product): purchase order numbers, the user's last order with lines L.
    # u1 (L=4): 101 {1,2,3,4} gaps 1,1,1, censored 0; 102 {1,3} gap 2, censored 1; 103 {2} censored 2;
    #           105 {4} censored 0.   u2 (L=2): 101 {1} censored 1; 104 {1,2} gap 1, censored 0.
    # n=1: at risk = gaps ≥1 (5) + censored ≥1 (3) = 8, rebought 4 → 0.5
    # n=2: at risk = gaps ≥2 (1) + censored ≥2 (1) = 2, rebought 1 → 0.5; n ≥ 3: nobody at risk.
    decay = I.reorder_decay(order_lines(tiny), max_orders=5)
    assert decay.rows() == [(1, 8, 4, 0.5), (2, 2, 1, 0.5)]
    assert I.reorder_decay(order_lines(tiny), max_orders=5, min_at_risk=3).rows() == [(1, 8, 4, 0.5)]
    # Long gaps still count as at risk below max_orders (the overflow bucket).
    assert I.reorder_decay(order_lines(tiny), max_orders=1).rows() == [(1, 8, 4, 0.5)]


def test_headline(tiny: Dataset) -> None:
    h = I.headline(tiny.orders, tiny.order_products)
    assert h["users"] == 2 and h["orders"] == 7 and h["lines"] == 11 and h["products"] == 5
    assert h["basket_size"] == pytest.approx(11 / 6)
    assert h["reorder_rate"] == pytest.approx(5 / 11)
    assert h["days_between_median"] == 15
    # One definition of each statistic: the data summary (``basketcast describe``) agrees.
    stats = describe(tiny)
    assert h["reorder_rate"] == stats["reorder_ratio"]
    assert h["basket_size"] == stats["basket_size"]["mean"]
    assert h["days_between_median"] == stats["days_between"]["median"]
    assert [n for row in stats["dow_hour"] for n in row] == I.orders_by_dow_hour(tiny.orders)[I.ORDERS].to_list()
