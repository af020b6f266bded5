"""Ranking metrics, Kaggle F1 and the repeat/new split against hand-computed values."""

from __future__ import annotations

import math

import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.metrics import (
    F1,
    HIT_RATE,
    HITS,
    MAP,
    METRICS,
    NDCG,
    NEW_HITS,
    NEW_RECALL,
    NEW_SHARE,
    NEW_TRUTH,
    PRECISION,
    RECALL,
    REPEAT_HITS,
    REPEAT_RECALL,
    REPEAT_SHARE,
    REPEAT_TRUTH,
    kaggle_f1,
    metric_name,
    per_key_metrics,
    ranking_metrics,
    repeat_new_hits,
)
from basketcast.pipeline.model.basket import choose_baskets

L2 = math.log2

# User 1: truth {10, 11, 12}; hits at ranks 1 (10), 3 (12) and 5 (11).
# User 2: truth {30}; no prediction at all → zero everywhere.
# User 3: truth {40, 41}; hit at rank 1 (41), 40 only at rank 7.
# User 9: predicted but not in the truth → ignored.
PRED = pl.DataFrame(
    {
        S.USER: [1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 9],
        S.PRODUCT: [10, 20, 12, 21, 11, 22, 41, 50, 51, 52, 53, 54, 40, 10],
        S.RANK: [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 7, 1],
    },
    schema={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, S.RANK: pl.UInt16},
)
TRUTH = pl.DataFrame(
    {S.USER: [1, 1, 1, 2, 3, 3], S.PRODUCT: [10, 11, 12, 30, 40, 41]},
    schema={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32},
)

EXPECTED = {
    1: {
        # K=2: 1 hit. P = 1/2, R = 1/3, F1 = 2·(1/6)/(5/6) = 0.4.
        # DCG = 1/log2(2) = 1; IDCG over min(3, 2) = 2 positions = 1 + 1/log2(3).
        # AP: precision@1 = 1, divided by min(3, 2) = 2.
        2: {
            PRECISION: 0.5,
            RECALL: 1 / 3,
            F1: 0.4,
            NDCG: 1 / (1 + 1 / L2(3)),
            HIT_RATE: 1.0,
            MAP: 0.5,
        },
        # K=5: 3 hits at ranks 1, 3, 5. P = 3/5, R = 1, F1 = 2·0.6/1.6 = 0.75.
        # DCG = 1 + 1/log2(4) + 1/log2(6); IDCG = 1 + 1/log2(3) + 1/log2(4).
        # AP = (1/1 + 2/3 + 3/5) / min(3, 5).
        5: {
            PRECISION: 0.6,
            RECALL: 1.0,
            F1: 0.75,
            NDCG: (1 + 0.5 + 1 / L2(6)) / (1 + 1 / L2(3) + 0.5),
            HIT_RATE: 1.0,
            MAP: (1 + 2 / 3 + 3 / 5) / 3,
        },
    },
    2: {k: dict.fromkeys(METRICS, 0.0) for k in (2, 5)},
    3: {
        # K=2: 1 hit at rank 1 of 2 true. P = 1/2, R = 1/2, F1 = 1/2; IDCG = 1 + 1/log2(3).
        2: {
            PRECISION: 0.5,
            RECALL: 0.5,
            F1: 0.5,
            NDCG: 1 / (1 + 1 / L2(3)),
            HIT_RATE: 1.0,
            MAP: 1 / 2,
        },
        # K=5: still 1 hit (40 is at rank 7). P = 1/5, R = 1/2, F1 = 2·0.1/0.7 = 2/7.
        5: {
            PRECISION: 0.2,
            RECALL: 0.5,
            F1: 2 / 7,
            NDCG: 1 / (1 + 1 / L2(3)),
            HIT_RATE: 1.0,
            MAP: 1 / 2,
        },
    },
}


def test_per_key_metrics_hand_computed() -> None:
    per_key = per_key_metrics(PRED, TRUTH, ks=(2, 5), key=S.USER)
    assert per_key[S.USER].to_list() == [1, 2, 3]
    assert per_key.columns == [S.USER] + [metric_name(m, k) for k in (2, 5) for m in METRICS]
    for row in per_key.iter_rows(named=True):
        for k, values in EXPECTED[row[S.USER]].items():
            for metric, value in values.items():
                assert row[metric_name(metric, k)] == pytest.approx(value), (row[S.USER], k, metric)


def test_ranking_metrics_is_the_mean_over_truth_keys() -> None:
    result = ranking_metrics(PRED, TRUTH, ks=(2, 5), key=S.USER)
    assert set(result) == {metric_name(m, k) for k in (2, 5) for m in METRICS}
    for k in (2, 5):
        for metric in METRICS:
            mean = sum(EXPECTED[u][k][metric] for u in (1, 2, 3)) / 3
            assert result[metric_name(metric, k)] == pytest.approx(mean)
    # e.g. precision@2 = (0.5 + 0 + 0.5) / 3.
    assert result[metric_name(PRECISION, 2)] == pytest.approx(1 / 3)


def test_ranking_metrics_edge_cases() -> None:
    # K beyond the list length: precision keeps K as denominator; a duplicate product keeps its
    # best rank; order keys work as well as user keys.
    pred = pl.DataFrame({S.ORDER: [7, 7, 7], S.PRODUCT: [1, 1, 2], S.RANK: [2, 1, 3]})
    truth = pl.DataFrame({S.ORDER: [7], S.PRODUCT: [1]})
    result = ranking_metrics(pred, truth, ks=(10,), key=S.ORDER)
    assert result[metric_name(PRECISION, 10)] == pytest.approx(0.1)
    assert result[metric_name(RECALL, 10)] == pytest.approx(1.0)
    assert result[metric_name(NDCG, 10)] == pytest.approx(1.0)
    assert result[metric_name(MAP, 10)] == pytest.approx(1.0)
    # No prediction at all: every metric 0.
    empty_pred = pred.clear()
    assert set(ranking_metrics(empty_pred, truth, ks=(1,), key=S.ORDER).values()) == {0.0}
    # Empty truth: NaN means.
    assert all(math.isnan(v) for v in ranking_metrics(pred, truth.clear(), ks=(1,), key=S.ORDER).values())
    with pytest.raises(ValueError):
        ranking_metrics(pred, truth, ks=(0,), key=S.ORDER)


def test_kaggle_f1_hand_computed() -> None:
    baskets = pl.DataFrame(
        {
            S.ORDER: [1, 2, 3, 4, 5, 6],
            S.BASKET_PRODUCTS: [[1, 2], [], [5], [6], [7], []],
            S.BASKET_NONE: [False, True, True, False, True, False],
        },
        schema={S.ORDER: pl.UInt32, S.BASKET_PRODUCTS: pl.List(pl.UInt32), S.BASKET_NONE: pl.Boolean},
    )
    truth = pl.DataFrame(
        {S.ORDER: [1, 1, 4, 5, 5, 6, 99], S.PRODUCT: [1, 3, 6, 7, 8, 9, 1]},
        schema={S.ORDER: pl.UInt32, S.PRODUCT: pl.UInt32},
    )
    # 1: {1,2} vs {1,3}        → 2·1/(2+2) = 1/2
    # 2: {None} vs {None}      → 1
    # 3: {5,None} vs {None}    → 2·1/(2+1) = 2/3
    # 4: {6} vs {6}            → 1
    # 5: {7,None} vs {7,8}     → 2·1/(2+2) = 1/2
    # 6: [] (= {None}) vs {9}  → 0
    # (order 99 is not in the baskets: ignored)
    expected = (0.5 + 1 + 2 / 3 + 1 + 0.5 + 0) / 6
    assert kaggle_f1(baskets, truth, S.ORDER) == pytest.approx(expected)


def test_kaggle_f1_on_choose_baskets_output() -> None:
    scores = pl.DataFrame({S.ORDER: [1, 1, 2], S.PRODUCT: [10, 11, 20], S.SCORE: [0.99, 0.98, 0.001]})
    baskets = choose_baskets(scores, S.ORDER)  # 1 → [10, 11]; 2 → {None}
    truth = pl.DataFrame({S.ORDER: [1], S.PRODUCT: [10]})
    # 1: {10, 11} vs {10} → 2/3; 2: {None} vs {None} → 1.
    assert kaggle_f1(baskets, truth, S.ORDER) == pytest.approx((2 / 3 + 1) / 2)
    assert math.isnan(kaggle_f1(baskets.clear(), truth, S.ORDER))


def test_repeat_new_hits() -> None:
    history = pl.DataFrame({S.USER: [1, 1, 1, 3], S.PRODUCT: [10, 11, 11, 99]})
    result = repeat_new_hits(PRED, TRUTH, history, k=5, key=S.USER)
    # Hits@5: user 1 → 10 (repeat), 12 (new), 11 (repeat); user 3 → 41 (new).
    # Truth pairs: repeat {1:10, 1:11}; new {1:12, 2:30, 3:40, 3:41}.
    assert result[HITS] == 4
    assert result[REPEAT_HITS] == 2
    assert result[NEW_HITS] == 2
    assert result[REPEAT_SHARE] == pytest.approx(0.5)
    assert result[NEW_SHARE] == pytest.approx(0.5)
    assert result[REPEAT_TRUTH] == 2
    assert result[NEW_TRUTH] == 4
    assert result[REPEAT_RECALL] == pytest.approx(1.0)
    assert result[NEW_RECALL] == pytest.approx(0.5)
    # At k=1 only 10 (user 1, repeat) and 41 (user 3, new) are hits.
    assert repeat_new_hits(PRED, TRUTH, history, k=1, key=S.USER)[REPEAT_HITS] == 1
    # No hit at all: shares are undefined.
    none = repeat_new_hits(PRED.clear(), TRUTH, history, k=5, key=S.USER)
    assert none[HITS] == 0
    assert math.isnan(none[REPEAT_SHARE])
