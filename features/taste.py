"""User × aisle and user × department affinity: the content side of the hybrid."""

from __future__ import annotations

import polars as pl

from basketcast.features.history import History
from basketcast.pipeline.data import schema as S

AISLE_FEATURES = ("ua_share", "ua_distinct_products", "ua_orders_share")
DEPARTMENT_FEATURES = ("ud_share", "ud_orders_share")


def _affinity(h: History, key: str, prefix: str, with_distinct: bool) -> pl.DataFrame:
    user_lines = h.lines.group_by(S.USER).agg(
        pl.len().alias("_lines"), pl.col(S.ORDER_NUMBER).n_unique().alias("_orders")
    )
    aggs = [pl.len().alias("_n"), pl.col(S.ORDER_NUMBER).n_unique().alias("_n_orders")]
    if with_distinct:
        aggs.append(pl.col(S.PRODUCT).n_unique().alias(f"{prefix}_distinct_products"))
    grouped = h.lines.group_by(S.USER, key).agg(aggs).join(user_lines, on=S.USER)
    return grouped.with_columns(
        (pl.col("_n") / pl.col("_lines")).alias(f"{prefix}_share"),
        (pl.col("_n_orders") / pl.col("_orders")).alias(f"{prefix}_orders_share"),
    ).drop("_n", "_n_orders", "_lines", "_orders")


def aisle_features(h: History) -> pl.DataFrame:
    """USER, AISLE + share of the user's lines in the aisle, distinct products bought there,
    share of the user's orders touching the aisle."""
    return _affinity(h, S.AISLE, "ua", with_distinct=True).select(S.USER, S.AISLE, *AISLE_FEATURES)


def department_features(h: History) -> pl.DataFrame:
    """USER, DEPARTMENT + share of lines and share of orders in the department."""
    return _affinity(h, S.DEPARTMENT, "ud", with_distinct=False).select(S.USER, S.DEPARTMENT, *DEPARTMENT_FEATURES)
