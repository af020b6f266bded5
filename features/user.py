"""User features (one row per user), from the visible history only."""

from __future__ import annotations

import polars as pl

from basketcast.features.history import BASKET_SIZE, History
from basketcast.pipeline.data import schema as S

FEATURES = (
    "u_orders",
    "u_basket_mean",
    "u_basket_std",
    "u_basket_last",
    "u_reorder_ratio",
    "u_reorder_ratio_recent",
    "u_none_share",
    S.U_DAYS_MEAN,
    "u_days_std",
    "u_days_last",
    "u_span_days",
    S.U_HOUR_MEAN,
    "u_hour_std",
    "u_weekend_share",
    "u_distinct_products",
    "u_lines",
)


def user_features(h: History) -> pl.DataFrame:
    """USER + FEATURES.

    Reorder ratio and "none" share count only orders after the first (a first order cannot
    hold a reorder). Days statistics ignore the first order's null.
    """
    reorders = (
        h.lines.filter(pl.col(S.ORDER_NUMBER) > 1)
        .group_by(S.USER, S.ORDER_NUMBER)
        .agg(pl.col(S.REORDERED).sum().alias("reorders"), pl.len().alias("lines"))
        .group_by(S.USER)
        .agg(
            (pl.col("reorders").sum() / pl.col("lines").sum()).alias("u_reorder_ratio"),
            (pl.col("reorders") == 0).mean().alias("u_none_share"),
            # The same over the user's last five orders: habits drift.
            (
                pl.col("reorders").sort_by(S.ORDER_NUMBER).tail(5).sum()
                / pl.col("lines").sort_by(S.ORDER_NUMBER).tail(5).sum()
            ).alias("u_reorder_ratio_recent"),
        )
    )
    orders = (
        h.orders.sort(S.USER, S.ORDER_NUMBER)
        .group_by(S.USER)
        .agg(
            pl.len().alias("u_orders"),
            pl.col(BASKET_SIZE).cast(pl.Float32).mean().alias("u_basket_mean"),
            pl.col(BASKET_SIZE).cast(pl.Float32).std().alias("u_basket_std"),
            pl.col(BASKET_SIZE).last().alias("u_basket_last"),
            pl.col(S.DAYS_PRIOR).cast(pl.Float32).mean().alias(S.U_DAYS_MEAN),
            pl.col(S.DAYS_PRIOR).cast(pl.Float32).std().alias("u_days_std"),
            pl.col(S.DAYS_PRIOR).last().alias("u_days_last"),
            pl.col(S.CUM_DAYS).max().alias("u_span_days"),
            pl.col(S.HOUR).cast(pl.Float32).mean().alias(S.U_HOUR_MEAN),
            pl.col(S.HOUR).cast(pl.Float32).std().alias("u_hour_std"),
            # Instacart does not say which dow is Sunday; 0 and 1 carry the weekend-like peak.
            pl.col(S.DOW).is_in([0, 1]).mean().alias("u_weekend_share"),
        )
    )
    distinct = h.lines.group_by(S.USER).agg(
        pl.col(S.PRODUCT).n_unique().alias("u_distinct_products"), pl.len().alias("u_lines")
    )
    return orders.join(reorders, on=S.USER, how="left").join(distinct, on=S.USER, how="left").select(S.USER, *FEATURES)
