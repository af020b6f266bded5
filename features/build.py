"""Assemble the feature rows of candidate pairs: one row per (user, product), FEATURE_NAMES columns.

``feature_frame(h, cands)`` joins every feature group onto the candidate pairs (the output of
``pipeline.candidates.candidates``). The ranker, the ONNX export and the server all use
FEATURE_NAMES in this order; ``to_matrix`` turns the frame into the float32 matrix they score.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features import context, product, taste, tifu, user, user_product
from features.history import History
from pipeline import schema as S
from pipeline.candidates import FEATURES as CANDIDATE_FEATURES
from pipeline.config import FeatureConfig

# Ratios across groups, computed once the groups are joined.
CROSS_FEATURES: tuple[str, ...] = ("up_aisle_share", "up_due_vs_product")

# Base features: known once the history is cut, independent of the target order's context.
BASE_FEATURES: tuple[str, ...] = (
    *CANDIDATE_FEATURES,
    *user.FEATURES,
    *product.FEATURES,
    *user_product.FEATURES,
    *taste.AISLE_FEATURES,
    *taste.DEPARTMENT_FEATURES,
    *tifu.FEATURES,
    *CROSS_FEATURES,
)
FEATURE_NAMES: tuple[str, ...] = (*BASE_FEATURES, *context.FEATURES)


def base_feature_frame(h: History, cands: pl.DataFrame, config: FeatureConfig) -> pl.DataFrame:
    """``cands`` (USER, PRODUCT, candidate signals, …) + BASE_FEATURES as Float32, same row order."""
    up = user_product.user_product_features(h)
    knn = tifu.tifu_features(h, cands, config.tifu_neighbors).select(tifu.FEATURES)
    frame = (
        cands.join(up, on=[S.USER, S.PRODUCT], how="left", maintain_order="left")
        .join(product.product_features(h), on=S.PRODUCT, how="left", maintain_order="left")
        .join(user.user_features(h), on=S.USER, how="left", maintain_order="left")
        .with_columns(pl.col("p_aisle").alias(S.AISLE), pl.col("p_department").alias(S.DEPARTMENT))
        .join(taste.aisle_features(h), on=[S.USER, S.AISLE], how="left", maintain_order="left")
        .join(taste.department_features(h), on=[S.USER, S.DEPARTMENT], how="left", maintain_order="left")
        .drop(S.AISLE, S.DEPARTMENT)
        .with_columns(
            pl.col(
                *user_product.COUNTS,
                "ua_share",
                "ud_share",
                "ua_distinct_products",
                "ua_orders_share",
                "ud_orders_share",
            ).fill_null(0)
        )
        .hstack(knn)
        .with_columns(
            # How much of the user's buying in this aisle is this very product (loyalty vs substitutes).
            (pl.col("up_orders") / (pl.col("ua_share") * pl.col("u_lines"))).alias("up_aisle_share"),
            # Orders since the last purchase against the product's usual cycle across all buyers.
            ((pl.col("up_orders_since_last") + 1) / pl.col("p_mean_gap_orders")).alias("up_due_vs_product"),
        )
    )
    return frame.with_columns(pl.col(*BASE_FEATURES).cast(pl.Float32))


def add_context(frame: pl.DataFrame, h: History) -> pl.DataFrame:
    """Add the context FEATURES from each user's cutoff (dow, hour, days; null → NaN)."""
    ctx = frame.select(S.USER).join(h.cutoffs, on=S.USER, how="left", maintain_order="left")
    base = {name: frame[name].to_numpy().astype(np.float32) for name in context.INPUTS}

    def col(name: str) -> np.ndarray:
        return ctx[name].cast(pl.Float32).fill_null(float("nan")).to_numpy()

    extra = context.context_features(base, col(S.DOW), col(S.HOUR), col(S.DAYS_PRIOR))
    return frame.with_columns([pl.Series(k, v, dtype=pl.Float32) for k, v in extra.items()])


def feature_frame(h: History, cands: pl.DataFrame, config: FeatureConfig) -> pl.DataFrame:
    """Candidates with every feature in FEATURE_NAMES (Float32, NaN/null = missing)."""
    return add_context(base_feature_frame(h, cands, config), h)


def to_matrix(frame: pl.DataFrame) -> np.ndarray:
    """The (n_rows, len(FEATURE_NAMES)) float32 matrix, C order, nulls as NaN."""
    return np.ascontiguousarray(
        frame.select(pl.col(name).fill_null(float("nan")) for name in FEATURE_NAMES).to_numpy(),
        dtype=np.float32,
    )
