"""Feature groups on a hand-made history with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from basketcast.features import cutoffs as C
from basketcast.features.build import FEATURE_NAMES, base_feature_frame, feature_frame, to_matrix
from basketcast.features.context import context_features
from basketcast.features.history import as_of, order_lines
from basketcast.features.product import product_features
from basketcast.features.taste import aisle_features
from basketcast.features.user import user_features
from basketcast.features.user_product import user_product_features
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import Dataset, read_dataset

CONFIG = TrainConfig(tracking=[])


@pytest.fixture
def tiny(tiny_kaggle, tmp_path: Path) -> Dataset:  # type: ignore[no-untyped-def]
    ingest(tiny_kaggle(), tmp_path / "data")
    return read_dataset(tmp_path / "data")


def _row(frame: pl.DataFrame, **keys: int) -> dict[str, object]:
    out = frame.filter(pl.all_horizontal([pl.col(k) == v for k, v in keys.items()]))
    assert out.height == 1, keys
    return out.row(0, named=True)


def test_cutoffs_of_windows_and_test_orders(tiny: Dataset) -> None:
    w0 = C.label_window(tiny.orders, 0)
    # user 1: last labelled = train order 4; user 2: last labelled = prior order 2 (3 is test).
    assert w0.select(S.USER, S.TARGET_ORDER_NUMBER).rows() == [(1, 4), (2, 2)]
    assert _row(w0, user_id=1)[S.DAYS_PRIOR] == 29 and _row(w0, user_id=1)[S.DOW] == 4
    w1 = C.label_window(tiny.orders, 1)
    assert w1.select(S.USER, S.TARGET_ORDER_NUMBER).rows() == [(1, 3)]  # user 2 would have no history
    test = C.test_orders(tiny.orders)
    assert test.select(S.USER, S.TARGET_ORDER_NUMBER).rows() == [(1, 5), (2, 3)]
    assert _row(test, user_id=1)[S.DOW] is None and _row(test, user_id=2)[S.DOW] == 5
    nxt = C.next_order(tiny.orders)
    assert nxt.select(S.USER, S.TARGET_ORDER_NUMBER).rows() == [(1, 5), (2, 3)]
    with pytest.raises(ValueError, match="eval set"):
        C.eval_set_cutoffs(tiny.orders, "prior")


def test_history_hides_the_target_and_later_orders(tiny: Dataset) -> None:
    h = as_of(tiny, C.label_window(tiny.orders, 1))
    assert h.orders[S.ORDER].sort().to_list() == [11, 12]
    assert set(h.lines[S.ORDER_NUMBER].to_list()) == {1, 2}
    assert C.labels(order_lines(tiny), h.cutoffs).rows() == [(1, 101, 1), (1, 102, 1)]


def test_user_product_features_known_answers(tiny: Dataset) -> None:
    h = as_of(tiny, C.label_window(tiny.orders, 0))  # user 1 sees orders 1-3
    up = user_product_features(h)
    banana = _row(up, user_id=1, product_id=101)  # bought in orders 1, 2, 3 (days 0, 15, 36)
    assert banana["up_orders"] == 3
    assert banana["up_order_rate"] == pytest.approx(1.0)
    assert banana["up_streak"] == 3
    assert banana["up_orders_since_last"] == 0
    assert banana["up_days_before_last_order"] == pytest.approx(0.0)
    assert banana["up_mean_gap_days"] == pytest.approx(18.0)  # (36 - 0) / 2
    assert banana["up_decay_09"] == pytest.approx(1 + 0.9 + 0.81, rel=1e-5)
    milk = _row(up, user_id=1, product_id=102)  # orders 1 and 3
    assert milk["up_streak"] == 1 and milk["up_in_last_3"] == 2
    assert milk["up_mean_gap_orders"] == pytest.approx(2.0)
    bread = _row(up, user_id=1, product_id=103)  # order 2 only (day 15)
    assert bread["up_orders_since_last"] == 1 and bread["up_streak"] == 0
    assert bread["up_days_before_last_order"] == pytest.approx(21.0)
    assert bread["up_mean_gap_days"] is None
    assert bread["up_mean_cart_rel"] == pytest.approx(1.0)  # 2nd of 2 items


def test_user_product_aisle_features_known_answers(tiny: Dataset) -> None:
    h = as_of(tiny, C.label_window(tiny.orders, 0))
    u = _row(user_features(h), user_id=1)
    assert u["u_orders"] == 3 and u["u_basket_mean"] == pytest.approx(2.0)
    assert u["u_reorder_ratio"] == pytest.approx(3 / 4)  # orders 2-3: 4 lines, 3 reorders
    assert u["u_none_share"] == pytest.approx(0.0)
    assert u["u_days_mean"] == pytest.approx(18.0) and u["u_days_last"] == 21
    assert u["u_distinct_products"] == 3
    p = _row(product_features(h), product_id=101)  # bought 3x by user 1, 1x by user 2
    assert p["p_lines"] == 4 and p["p_buyers"] == 2
    assert p["p_reorder_prob"] == pytest.approx(0.5)
    assert p["p_second_purchase_prob"] == pytest.approx(0.5)
    never = _row(product_features(h), product_id=105)  # only in the train order: invisible
    assert never["p_lines"] == 0 and never["p_buyers"] == 0
    a = _row(aisle_features(h), user_id=1, aisle_id=24)  # fresh fruits: 3 of 6 lines, all 3 orders
    assert a["ua_share"] == pytest.approx(0.5) and a["ua_orders_share"] == pytest.approx(1.0)


def test_context_features_add_the_days_to_the_target() -> None:
    base = {
        "u_days_mean": np.array([10.0, 10.0], np.float32),
        "u_hour_mean": np.array([12.0, 12.0], np.float32),
        "up_days_before_last_order": np.array([5.0, np.nan], np.float32),
        "up_mean_gap_days": np.array([10.0, np.nan], np.float32),
    }
    out = context_features(base, np.float32(3), np.float32(9), np.float32(7))
    assert out["up_days_since_last"][0] == pytest.approx(12.0)
    assert out["up_gap_ratio"][0] == pytest.approx(1.2)
    assert np.isnan(out["up_days_since_last"][1])
    assert out["ctx_hour_gap"][0] == pytest.approx(3.0) and out["ctx_days_ratio"][0] == pytest.approx(0.7)
    unknown = context_features(base, np.float32(np.nan), np.float32(np.nan), np.float32(np.nan))
    assert np.isnan(unknown["up_days_since_last"]).all()


def test_feature_frame_has_every_feature_in_order(tiny: Dataset) -> None:
    h = as_of(tiny, C.label_window(tiny.orders, 0))
    cands = pl.DataFrame(
        {
            S.USER: [1, 1, 2],
            S.PRODUCT: [101, 104, 104],
            "als_score": [0.5, 0.1, 0.2],
            "als_rank": [1.0, 2.0, 1.0],
        },
        schema_overrides={
            S.USER: pl.UInt32,
            S.PRODUCT: pl.UInt32,
            "als_score": pl.Float32,
            "als_rank": pl.Float32,
        },
    )
    frame = feature_frame(h, cands, CONFIG.features)
    X = to_matrix(frame)
    assert X.shape == (3, len(FEATURE_NAMES)) and X.dtype == np.float32
    assert frame.select(S.USER, S.PRODUCT).rows() == [(1, 101), (1, 104), (2, 104)]  # order kept
    new = frame.row(1, named=True)  # eggs: never bought by user 1 → counts 0, gaps missing
    assert new["up_orders"] == 0 and new["up_decay_09"] == 0
    assert new["up_mean_gap_days"] is None or np.isnan(new["up_mean_gap_days"])
    assert new["ud_share"] == pytest.approx(2 / 6)  # dairy eggs: milk in 2 of user 1's 6 lines
    base = base_feature_frame(h, cands, CONFIG.features)
    assert set(FEATURE_NAMES) - set(base.columns) == {
        "ctx_dow",
        "ctx_hour",
        "ctx_days_prior",
        "ctx_days_ratio",
        "ctx_hour_gap",
        "up_days_since_last",
        "up_gap_ratio",
    }
