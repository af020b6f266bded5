"""basketcast.serving.online: how posted orders become a user's history, and the packed rows' format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.serving.model import ServingModel
from basketcast.serving.online import UserRows
from basketcast.serving.stores.base import OrderRecord


@pytest.fixture(scope="module")
def model(trained_run: Path) -> ServingModel:
    return ServingModel.load(trained_run)


def test_rows_pack_and_unpack_exactly() -> None:
    rng = np.random.default_rng(0)
    rows = UserRows(
        products=rng.integers(0, 2**32 - 1, 7, dtype=np.uint32),
        repeat=rng.random(7) < 0.5,
        base=np.where(rng.random((7, 5)) < 0.2, np.nan, rng.random((7, 5))).astype(np.float32),
        orders=12,
        posted=3,
    )
    back = UserRows.unpack(rows.pack())
    np.testing.assert_array_equal(back.products, rows.products)
    np.testing.assert_array_equal(back.repeat, rows.repeat)
    np.testing.assert_array_equal(back.base, rows.base)
    assert (back.orders, back.posted) == (12, 3)
    with pytest.raises(ValueError, match="not a packed"):
        UserRows.unpack(rows.pack()[:-4])


def test_posted_orders_follow_the_snapshot_history(model: ServingModel) -> None:
    online = model.online
    assert online is not None
    user = int(model.users[0])
    base = online.dataset(user, [])
    last = int(base.orders[S.ORDER_NUMBER].max())  # type: ignore[arg-type]
    bought = set(base.order_products[S.PRODUCT].to_list())
    old, new = next(iter(bought)), 987_654_321
    posted = [
        OrderRecord("a", user, (new, old, new), dow=1, hour=9, days_since_prior=45.4, seq=1),
        OrderRecord("b", user, (new,), dow=2, hour=10, days_since_prior=None, seq=2),
    ]
    data = online.dataset(user, posted)
    added = data.orders.filter(pl.col(S.ORDER_NUMBER) > last).sort(S.ORDER_NUMBER)
    assert added[S.ORDER_NUMBER].to_list() == [last + 1, last + 2]
    assert added[S.DAYS_PRIOR].to_list() == [30, None]  # capped as Instacart; unknown stays unknown
    assert added[S.DOW].to_list() == [1, 2] and added[S.HOUR].to_list() == [9, 10]
    first = data.order_products.filter(pl.col(S.ORDER) == added[S.ORDER][0]).sort(S.CART_POS)
    assert first[S.PRODUCT].to_list() == [new, old]  # a repeated product counts once, at its first position
    assert first[S.REORDERED].to_list() == [0, 1]
    second = data.order_products.filter(pl.col(S.ORDER) == added[S.ORDER][1])
    assert second[S.REORDERED].to_list() == [1]  # bought in the order before


def test_a_new_shopper_has_rows_from_the_first_order(model: ServingModel) -> None:
    online = model.online
    assert online is not None
    assert online.rows(4_000_000_001, []) is None
    products = model.popular_products[:3].tolist()
    rows = online.rows(4_000_000_001, [OrderRecord("n1", 4_000_000_001, tuple(products), dow=0, hour=8, seq=5)])
    assert rows is not None and rows.posted == 1 and rows.orders == 1
    assert set(rows.products[rows.repeat].tolist()) == set(products)
    assert (~rows.repeat).sum() > 0  # ALS proposes new products from the folded-in factors
