"""Which order each user's features are cut before.

* ``label_window(orders, w)``: target = the user's last order with known products (``prior`` or
  ``train``) minus ``w``. Window 0 predicts the Kaggle ``train`` order for train users; windows
  1, 2, … predict earlier orders and multiply the training data. Users whose target would leave
  fewer than ``min_history`` visible orders are left out of that window.
* ``test_orders(orders)``: target = the Kaggle ``test`` order (for test users) and, for every
  other user, the next order after their last one, so the whole population shapes the history.
* ``next_order(orders)``: target = the order after each user's last order with products — the
  cutoff of the online snapshot. Its context (dow, hour, days) is unknown: null.
"""

from __future__ import annotations

import polars as pl

from basketcast.features.history import CUTOFF_SCHEMA
from basketcast.pipeline.data import schema as S

_CONTEXT = (S.DOW, S.HOUR, S.DAYS_PRIOR)


def _finish(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select([pl.col(c).cast(t) for c, t in CUTOFF_SCHEMA.items()]).sort(S.USER)


def _last_labelled(orders: pl.DataFrame) -> pl.DataFrame:
    return (
        orders.filter(pl.col(S.EVAL_SET) != S.TEST)
        .group_by(S.USER)
        .agg(pl.col(S.ORDER_NUMBER).max().alias("last_labelled"))
    )


def label_window(orders: pl.DataFrame, window: int, min_history: int = 1) -> pl.DataFrame:
    """Cutoffs at the ``window``-th last labelled order of each user (0 = the last)."""
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    targets = _last_labelled(orders).with_columns(
        (pl.col("last_labelled").cast(pl.Int32) - window).alias(S.TARGET_ORDER_NUMBER)
    )
    targets = targets.filter(pl.col(S.TARGET_ORDER_NUMBER) > min_history)
    joined = targets.join(
        orders.select(S.USER, pl.col(S.ORDER_NUMBER).cast(pl.Int32).alias(S.TARGET_ORDER_NUMBER), *_CONTEXT),
        on=[S.USER, S.TARGET_ORDER_NUMBER],
        how="inner",
    )
    return _finish(joined)


def next_order(orders: pl.DataFrame) -> pl.DataFrame:
    """Cutoffs right after each user's last order with products; context unknown (null)."""
    targets = _last_labelled(orders).with_columns((pl.col("last_labelled") + 1).alias(S.TARGET_ORDER_NUMBER))
    return _finish(targets.with_columns([pl.lit(None).alias(c) for c in _CONTEXT]))


def test_orders(orders: pl.DataFrame) -> pl.DataFrame:
    """Cutoffs at each ``test`` order; users without one are cut after their last order."""
    test = orders.filter(pl.col(S.EVAL_SET) == S.TEST).select(
        S.USER, pl.col(S.ORDER_NUMBER).alias(S.TARGET_ORDER_NUMBER), *_CONTEXT
    )
    others = next_order(orders).join(test.select(S.USER), on=S.USER, how="anti")
    return _finish(pl.concat([_finish(test), others]))


def eval_set_cutoffs(orders: pl.DataFrame, eval_set: str) -> tuple[pl.DataFrame, pl.Series]:
    """Cutoffs for predicting every order of ``eval_set`` and the users those orders belong to.

    ``train`` → window 0 of the train users; ``test`` → the test orders. The cutoffs cover all
    users (so the population history is complete); the second value selects whom to predict.
    """
    if eval_set == S.TRAIN:
        cutoffs = label_window(orders, 0)
    elif eval_set == S.TEST:
        cutoffs = test_orders(orders)
    else:
        raise ValueError(f"eval set must be '{S.TRAIN}' or '{S.TEST}', got {eval_set!r}")
    users = orders.filter(pl.col(S.EVAL_SET) == eval_set)[S.USER].unique().sort()
    return cutoffs, users


def labels(lines: pl.DataFrame, cutoffs: pl.DataFrame) -> pl.DataFrame:
    """Products of each cutoff's target order: USER, PRODUCT, REORDERED (from ``order_lines``)."""
    return lines.join(
        cutoffs.select(S.USER, pl.col(S.TARGET_ORDER_NUMBER).alias(S.ORDER_NUMBER)),
        on=[S.USER, S.ORDER_NUMBER],
        how="semi",
    ).select(S.USER, S.PRODUCT, S.REORDERED)
