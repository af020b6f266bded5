"""What is visible at a cutoff: the single gate between raw tables and every feature.

A *cutoff* is one row per user: the ``target_order_number`` being predicted plus the context of
that target order known when predicting it (day of week, hour, days since the previous order;
null when unknown, e.g. a future order that has not happened yet). :func:`as_of` keeps, for
each user, only orders with ``order_number < target_order_number`` — every feature is computed
from the :class:`History` it returns, so no feature can see the target order or anything later.
Users without a cutoff are absent from the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset

BASKET_SIZE = "basket_size"  # lines in a visible order
FROM_END = "orders_from_end"  # 0 for the user's last visible order, 1 for the one before, ...
LAST_ORDER_NUMBER = "last_order_number"  # the user's last visible order number
LAST_CUM_DAYS = "last_cum_days"  # cum_days of the user's last visible order
_STREAK_BITS = 64  # purchase runs up to this long are counted from a bit pattern, longer ones by sorting

CUTOFF_SCHEMA: dict[str, pl.DataType] = {
    S.USER: pl.UInt32(),
    S.TARGET_ORDER_NUMBER: pl.UInt16(),
    S.DOW: pl.UInt8(),
    S.HOUR: pl.UInt8(),
    S.DAYS_PRIOR: pl.UInt8(),
}


def with_cum_days(orders: pl.DataFrame) -> pl.DataFrame:
    """Add ``cum_days``: days from the user's first order to each order (first order = 0).

    An order's cum_days depends only on it and the user's earlier orders.
    """
    return orders.sort(S.USER, S.ORDER_NUMBER).with_columns(
        pl.col(S.DAYS_PRIOR).fill_null(0).cast(pl.Float32).cum_sum().over(S.USER).alias(S.CUM_DAYS)
    )


def order_lines(data: Dataset) -> pl.DataFrame:
    """Every order line with its order's user, order number, cum_days, aisle and department."""
    orders = with_cum_days(data.orders).select(S.ORDER, S.USER, S.ORDER_NUMBER, S.CUM_DAYS)
    return (
        data.order_products.select(S.ORDER, S.PRODUCT, S.CART_POS, S.REORDERED)
        .join(orders, on=S.ORDER, how="inner")
        .join(data.products.select(S.PRODUCT, S.AISLE, S.DEPARTMENT), on=S.PRODUCT, how="left")
    )


@dataclass(frozen=True)
class History:
    """Orders and order lines visible at ``cutoffs`` (one row per user, CUTOFF_SCHEMA).

    ``orders``: USER, ORDER, ORDER_NUMBER, DOW, HOUR, DAYS_PRIOR, CUM_DAYS, basket_size,
    orders_from_end. ``lines``: USER, ORDER_NUMBER, PRODUCT, CART_POS, REORDERED, CUM_DAYS,
    AISLE, DEPARTMENT, orders_from_end, basket_size. ``products``: the product table.
    """

    cutoffs: pl.DataFrame
    orders: pl.DataFrame
    lines: pl.DataFrame
    products: pl.DataFrame

    @cached_property
    def users(self) -> pl.DataFrame:
        """Per user: last visible order number and its cum_days (keys of every user feature)."""
        return self.orders.group_by(S.USER).agg(
            pl.col(S.ORDER_NUMBER).max().alias(LAST_ORDER_NUMBER),
            pl.col(S.CUM_DAYS).max().alias(LAST_CUM_DAYS),
        )

    @cached_property
    def user_products(self) -> pl.DataFrame:
        """One row per (user, product) ever bought in the visible history, with base counts."""
        up = self.lines.group_by(S.USER, S.PRODUCT).agg(
            pl.len().cast(pl.UInt16).alias("up_orders"),
            pl.col(S.ORDER_NUMBER).min().alias("up_first_order"),
            pl.col(S.ORDER_NUMBER).max().alias("up_last_order"),
            pl.col(S.CUM_DAYS).min().alias("up_first_day"),
            pl.col(S.CUM_DAYS).max().alias("up_last_day"),
            pl.col(S.CART_POS).cast(pl.Float32).mean().alias("up_mean_cart_pos"),
            (pl.col(S.CART_POS).cast(pl.Float32) / pl.col(BASKET_SIZE)).mean().alias("up_mean_cart_rel"),
            pl.col(FROM_END).min().alias("up_orders_since_last"),
            (pl.col(FROM_END) < 3).sum().cast(pl.UInt8).alias("up_in_last_3"),
            (pl.col(FROM_END) < 5).sum().cast(pl.UInt8).alias("up_in_last_5"),
            # Bit i set when bought i orders before the last visible one (i < 5): the recent pattern.
            pl.lit(2, pl.UInt16)
            .pow(pl.col(FROM_END))
            .filter(pl.col(FROM_END) < 5)
            .sum()
            .cast(pl.UInt8)
            .alias("up_last5_pattern"),
            pl.lit(0.9, pl.Float32).pow(pl.col(FROM_END)).sum().alias(S.UP_DECAY_09),
            pl.lit(0.7, pl.Float32).pow(pl.col(FROM_END)).sum().alias("up_decay_07"),
            # Length of the run of consecutive orders, ending with the last visible one, that
            # contain the product: the trailing ones of the bit pattern of the last 64 orders
            # (exact below 64; longer runs are counted below).
            pl.lit(2, pl.UInt64)
            .pow(pl.col(FROM_END))
            .filter(pl.col(FROM_END) < _STREAK_BITS)
            .sum()
            .bitwise_trailing_ones()
            .cast(pl.UInt16)
            .alias("up_streak"),
        )
        long_runs = up.filter(pl.col("up_streak") == _STREAK_BITS).select(S.USER, S.PRODUCT)
        if long_runs.height == 0:
            return up
        # Line j (0 = most recent purchase) is in the run iff from_end == j: sort each such group.
        exact = (
            self.lines.join(long_runs, on=[S.USER, S.PRODUCT], how="semi")
            .group_by(S.USER, S.PRODUCT)
            .agg(
                (pl.col(FROM_END).sort() == pl.int_range(pl.len(), dtype=pl.UInt16))
                .sum()
                .cast(pl.UInt16)
                .alias("_exact")
            )
        )
        return (
            up.join(exact, on=[S.USER, S.PRODUCT], how="left", maintain_order="left")
            .with_columns(pl.coalesce("_exact", "up_streak").alias("up_streak"))
            .drop("_exact")
        )


def as_of(data: Dataset, cutoffs: pl.DataFrame, lines: pl.DataFrame | None = None) -> History:
    """The history visible at ``cutoffs``: only orders before each user's target order.

    ``lines`` may pass a precomputed :func:`order_lines` (it is the same for every cutoff).
    """
    cutoffs = cutoffs.select([pl.col(c).cast(t) for c, t in CUTOFF_SCHEMA.items()])
    visible = (
        with_cum_days(data.orders)
        .join(cutoffs.select(S.USER, S.TARGET_ORDER_NUMBER), on=S.USER, how="inner")
        .filter(pl.col(S.ORDER_NUMBER) < pl.col(S.TARGET_ORDER_NUMBER))
        .drop(S.TARGET_ORDER_NUMBER, S.EVAL_SET)
    )
    lines = order_lines(data) if lines is None else lines
    visible_lines = lines.join(visible.select(S.ORDER), on=S.ORDER, how="semi")
    sizes = visible_lines.group_by(S.ORDER).agg(pl.len().cast(pl.UInt16).alias(BASKET_SIZE))
    orders = (
        visible.join(sizes, on=S.ORDER, how="left")
        .with_columns(pl.col(BASKET_SIZE).fill_null(0))
        .with_columns(
            (pl.col(S.ORDER_NUMBER).max().over(S.USER) - pl.col(S.ORDER_NUMBER)).cast(pl.UInt16).alias(FROM_END)
        )
    )
    visible_lines = visible_lines.join(orders.select(S.ORDER, FROM_END, BASKET_SIZE), on=S.ORDER, how="inner").drop(
        S.ORDER
    )
    # A user needs at least one visible order; a cutoff at their first order has nothing to learn from.
    cutoffs = cutoffs.join(orders.select(S.USER).unique(), on=S.USER, how="semi").sort(S.USER)
    return History(cutoffs=cutoffs, orders=orders, lines=visible_lines, products=data.products)
