"""Delayed quality on hand-written frames: which order each prediction is scored against, the day,
and the metrics (known answers)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.evaluation import monitor as M


def orders(rows: list[tuple[int, int, int, str, int | None]]) -> pl.DataFrame:
    """(order_id, user, number, eval_set, days since prior) → an orders table (dow 1, hour 9)."""
    return pl.DataFrame(
        {
            S.ORDER: pl.Series([r[0] for r in rows], dtype=pl.UInt32),
            S.USER: pl.Series([r[1] for r in rows], dtype=pl.UInt32),
            S.EVAL_SET: pl.Series([r[3] for r in rows], dtype=S.EVAL_SET_DTYPE),
            S.ORDER_NUMBER: pl.Series([r[2] for r in rows], dtype=pl.UInt16),
            S.DOW: pl.Series([1] * len(rows), dtype=pl.UInt8),
            S.HOUR: pl.Series([9] * len(rows), dtype=pl.UInt8),
            S.DAYS_PRIOR: pl.Series([r[4] for r in rows], dtype=pl.UInt8),
        }
    )


def test_snapshot_cutoffs_are_each_users_last_order() -> None:
    users = np.array([3, 5, 8], np.uint32)
    offsets = np.array([0, 2, 2, 5])  # user 5 has no order
    numbers = np.array([1, 2, 1, 2, 3], np.uint16)
    cut = M.snapshot_cutoffs(users, offsets, numbers)
    assert cut.rows() == [(3, 2, 2), (8, 3, 3)]


def test_the_first_order_after_the_cutoff_and_its_day() -> None:
    new = orders(
        [
            (11, 1, 1, S.PRIOR, None),
            (12, 1, 2, S.PRIOR, 7),
            (13, 1, 3, S.PRIOR, 4),  # user 1: cutoff 2 → order 13, day 4
            (14, 1, 4, S.TRAIN, 30),
            (21, 2, 1, S.PRIOR, None),
            (22, 2, 2, S.TEST, 9),  # user 2: only a test order after the cutoff → waiting
            (31, 3, 1, S.PRIOR, None),  # user 3: nothing after the cutoff
            (41, 4, 2, S.PRIOR, 5),  # user 4: order 1 missing → the history differs
            (42, 4, 3, S.PRIOR, 6),
        ]
    )
    cutoffs = pl.DataFrame(
        {S.USER: [1, 2, 3, 4], M.CUTOFF_ORDER: [2, 1, 1, 2], "_n_orders": [2, 1, 1, 2]},
        schema={S.USER: pl.UInt32, M.CUTOFF_ORDER: pl.UInt16, "_n_orders": pl.UInt32},
    )
    nxt, differs = M.first_orders_after(new, cutoffs)
    assert differs == 1
    assert nxt.select(S.USER, S.ORDER, M.DAY).rows() == [(1, 13, 4), (2, 22, 9)]
    lines = pl.DataFrame(
        {S.ORDER: [13, 13], S.PRODUCT: [7, 8], S.REORDERED: [1, 0]}, schema_overrides={S.ORDER: pl.UInt32}
    )
    assert M.scored_users(nxt, lines)[S.USER].to_list() == [1]


def test_quality_known_answers() -> None:
    nxt = (
        orders([(13, 1, 3, S.PRIOR, 4), (23, 2, 5, S.PRIOR, 4), (33, 3, 2, S.PRIOR, 30)])
        .rename({S.DAYS_PRIOR: M.DAY})
        .with_columns(pl.lit(2, dtype=pl.UInt16).alias(M.CUTOFF_ORDER))
    )
    lines = pl.DataFrame(
        {S.ORDER: [13, 13, 23, 33], S.PRODUCT: [7, 8, 9, 5], S.REORDERED: [1, 0, 0, 1]},
        schema_overrides={S.ORDER: pl.UInt32, S.PRODUCT: pl.UInt32},
    )
    # user 1 ranks 7 first and 8 eleventh; user 2 misses; user 3 has 5 second.
    pred = pl.DataFrame(
        {S.USER: [1, 1, 2, 3, 3], S.PRODUCT: [7, 8, 1, 4, 5], S.RANK: [1, 11, 1, 1, 2]},
        schema_overrides={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, S.RANK: pl.UInt16},
    )
    # Baskets: user 1 {7} (truth {7}: F1 1), user 2 {None} (nothing reordered: F1 1), user 3 {4} (truth {5}: 0).
    baskets = pl.DataFrame(
        {S.USER: [1, 2, 3], S.BASKET_PRODUCTS: [[7], [], [4]], S.BASKET_NONE: [False, True, False]},
        schema={S.USER: pl.UInt32, S.BASKET_PRODUCTS: pl.List(pl.UInt32), S.BASKET_NONE: pl.Boolean},
    )
    counts = M.UserCounts(predicted=3, unknown=0, history_differs=0, waiting=0, scored=3)
    r = M.delayed_quality(pred, nxt, lines, baskets, counts, resamples=200)
    q = r.quality
    assert q.metrics[M.RECALL_K] == pytest.approx((0.5 + 0 + 1) / 3)
    assert q.metrics[M.NDCG_K] == pytest.approx((1 / (1 + 1 / np.log2(3)) + 0 + 1 / np.log2(3)) / 3)
    assert q.metrics[M.KAGGLE_F1] == pytest.approx(2 / 3)
    assert [(s.value, s.users) for s in q.by_day] == [(4, 2), (30, 1)]
    assert q.by_day[0].metrics[M.KAGGLE_F1] == pytest.approx(1.0) and q.by_day[1].metrics[M.KAGGLE_F1] == 0.0
    assert [(s.value, s.users) for s in q.by_dow] == [(1, 3)]
    assert q.predictions_k == 11
    assert r.by_day[M.USERS].to_list() == [2, 1]
    ci = q.intervals[M.RECALL_K]
    assert ci.low <= q.metrics[M.RECALL_K] <= ci.high and ci.resamples == 200
