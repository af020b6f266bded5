"""User × product features: how this user has bought this product so far.

Counts are 0 and gaps null for a candidate the user never bought (an ALS proposal).
"""

from __future__ import annotations

import polars as pl

from basketcast.features.history import LAST_CUM_DAYS, LAST_ORDER_NUMBER, History
from basketcast.pipeline.data import schema as S

FEATURES = (
    "up_orders",
    "up_order_rate",
    "up_rate_since_first",
    "up_orders_since_first",
    "up_orders_since_last",
    S.UP_DAYS_BEFORE_LAST,
    S.UP_MEAN_GAP_DAYS,
    "up_mean_gap_orders",
    "up_due_ratio",
    "up_streak",
    "up_in_last_3",
    "up_in_last_5",
    "up_last5_pattern",
    "up_mean_cart_pos",
    "up_mean_cart_rel",
    S.UP_DECAY_09,
    "up_decay_07",
)
COUNTS = ("up_orders", "up_streak", "up_in_last_3", "up_in_last_5", "up_last5_pattern", S.UP_DECAY_09, "up_decay_07")


def user_product_features(h: History) -> pl.DataFrame:
    """USER, PRODUCT + FEATURES for every (user, product) in the visible history.

    ``up_orders_since_last`` is 0 when bought in the last visible order;
    ``up_days_before_last_order`` counts days from the last purchase to the last visible order
    (the days to the target order are added at prediction time, see ``basketcast.features.context``).
    """
    up = h.user_products.join(h.users, on=S.USER, how="inner")
    n = pl.col(LAST_ORDER_NUMBER).cast(pl.Float32)
    bought = pl.col("up_orders").cast(pl.Float32)
    since_first = n - pl.col("up_first_order").cast(pl.Float32) + 1
    repeat_gaps = pl.when(pl.col("up_orders") > 1).then(bought - 1)
    return (
        up.with_columns(
            (bought / n).alias("up_order_rate"),
            (bought / since_first).alias("up_rate_since_first"),
            since_first.alias("up_orders_since_first"),
            (pl.col(LAST_CUM_DAYS) - pl.col("up_last_day")).alias(S.UP_DAYS_BEFORE_LAST),
            ((pl.col("up_last_day") - pl.col("up_first_day")) / repeat_gaps).alias(S.UP_MEAN_GAP_DAYS),
            ((pl.col("up_last_order") - pl.col("up_first_order")).cast(pl.Float32) / repeat_gaps).alias(
                "up_mean_gap_orders"
            ),
        )
        .with_columns(
            # Orders elapsed by the target order relative to the user's usual cycle for the product:
            # around 1 means "due now".
            ((pl.col("up_orders_since_last") + 1).cast(pl.Float32) / pl.col("up_mean_gap_orders")).alias(
                "up_due_ratio"
            ),
        )
        .select(S.USER, S.PRODUCT, *FEATURES)
    )
