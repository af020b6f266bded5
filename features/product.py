"""Product features (one row per product), from all users' visible histories."""

from __future__ import annotations

import polars as pl

from basketcast.features.history import History
from basketcast.pipeline.data import schema as S

FEATURES = (
    "p_lines",
    "p_buyers",
    "p_reorder_prob",
    "p_second_purchase_prob",
    "p_times_per_buyer",
    "p_mean_gap_orders",
    "p_mean_cart_pos",
    "p_aisle",
    "p_department",
)


def product_features(h: History) -> pl.DataFrame:
    """PRODUCT + FEATURES for every product in the catalogue (zeros for never-bought ones).

    ``p_reorder_prob`` is the share of the product's lines flagged as reorders;
    ``p_second_purchase_prob`` the share of its buyers who bought it at least twice.
    """
    lines = h.lines.group_by(S.PRODUCT).agg(
        pl.len().alias("p_lines"),
        pl.col(S.REORDERED).cast(pl.Float32).mean().alias("p_reorder_prob"),
        pl.col(S.CART_POS).cast(pl.Float32).mean().alias("p_mean_cart_pos"),
    )
    buyers = h.user_products.group_by(S.PRODUCT).agg(
        pl.len().alias("p_buyers"),
        (pl.col("up_orders") >= 2).mean().alias("p_second_purchase_prob"),
        pl.col("up_orders").cast(pl.Float32).mean().alias("p_times_per_buyer"),
        # The product's typical repurchase cycle in orders, over buyers who bought it again.
        ((pl.col("up_last_order") - pl.col("up_first_order")).cast(pl.Float32) / (pl.col("up_orders") - 1))
        .filter(pl.col("up_orders") > 1)
        .mean()
        .alias("p_mean_gap_orders"),
    )
    return (
        h.products.select(S.PRODUCT, pl.col(S.AISLE).alias("p_aisle"), pl.col(S.DEPARTMENT).alias("p_department"))
        .join(lines, on=S.PRODUCT, how="left")
        .join(buyers, on=S.PRODUCT, how="left")
        .with_columns(pl.col("p_lines", "p_buyers").fill_null(0))
        .select(S.PRODUCT, *FEATURES)
    )
