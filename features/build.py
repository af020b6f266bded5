"""Assemble the feature rows of candidate pairs: one row per (user, product), FEATURE_NAMES columns.

``feature_frame(h, cands)`` joins every feature group onto the candidate pairs (the output of
``basketcast.pipeline.model.candidates.candidates``). The ranker, the ONNX export and the server all use
FEATURE_NAMES in this order; ``to_matrix`` turns the frame into the float32 matrix they score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from basketcast.features import context, product, sequence, taste, tifu, user, user_product
from basketcast.features.history import History
from basketcast.pipeline.config import FeatureConfig
from basketcast.pipeline.data import schema as S

# The candidate generator's own signals, carried into the rows (see basketcast.pipeline.model.candidates).
CANDIDATE_FEATURES: tuple[str, ...] = (S.ALS_SCORE, S.ALS_RANK)
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
    *sequence.FEATURES,
)
FEATURE_NAMES: tuple[str, ...] = (*BASE_FEATURES, *context.FEATURES)


@dataclass(frozen=True)
class PublishedTables:
    """The product-level state of a published model: what fresh online rows take as given.

    ``product`` is ``product.product_features`` of the snapshot's history and ``reference`` its
    TIFU neighbourhood (both computed once over every user); a user's own tables are recomputed
    from their history after each new order, these stay those of the published version.
    """

    product: pl.DataFrame
    reference: tifu.Neighbourhood

    @classmethod
    def of(cls, tables: FeatureTables) -> PublishedTables:
        return cls(product=tables.product, reference=tables.tifu.neighbourhood)

    @classmethod
    def of_history(cls, h: History, config: FeatureConfig) -> PublishedTables:
        """Only the product-level tables of ``h`` (what :meth:`FeatureTables.of` computes for them),
        without the per-user ones: what every partition of users takes as given on a cluster."""
        index = tifu.TifuIndex.of(h, config.tifu_neighbors, config.tifu_reference_users)
        return cls(product=product.product_features(h), reference=index.neighbourhood)


@dataclass(frozen=True)
class FeatureTables:
    """Every feature group of one history, computed once and joined onto any candidate pairs.

    Building the tables is the costly part (group-bys over all order lines, the TIFU space);
    :meth:`base_frame` then only joins, so candidates can be featurised in chunks.
    """

    history: History
    user_product: pl.DataFrame
    product: pl.DataFrame
    user: pl.DataFrame
    aisle: pl.DataFrame
    department: pl.DataFrame
    tifu: tifu.TifuIndex
    # The sequence network (``basketcast.pipeline.model.sequence``) and its per-user inputs; without one the
    # sequence features are missing (NaN).
    network: sequence.SequenceScorer | None = None
    sequences: sequence.UserSequences | None = None

    @classmethod
    def of(
        cls,
        h: History,
        config: FeatureConfig,
        network: sequence.SequenceScorer | None = None,
        published: PublishedTables | None = None,
    ) -> FeatureTables:
        """Every table of ``h``; the per-user ones sorted by user (see :meth:`base_frame`).

        With ``published``, the product table and the TIFU neighbourhood are those given (a
        published model's) and only the users' own tables come from ``h``: the fresh online rows
        of a user after a new order (``basketcast.serving.online``) are built this way, by this same code.
        """
        sequences = None if network is None else sequence.UserSequences.of(h, network.steps, network.vocabulary)
        return cls(
            history=h,
            user_product=user_product.user_product_features(h).sort(S.USER),
            product=product.product_features(h) if published is None else published.product,
            user=user.user_features(h).sort(S.USER),
            aisle=taste.aisle_features(h).sort(S.USER),
            department=taste.department_features(h).sort(S.USER),
            tifu=tifu.TifuIndex.of(
                h,
                config.tifu_neighbors,
                config.tifu_reference_users,
                reference=None if published is None else published.reference,
            ),
            network=network,
            sequences=sequences,
        )

    def base_frame(self, cands: pl.DataFrame) -> pl.DataFrame:
        """``cands`` (USER, PRODUCT, candidate signals, …) + BASE_FEATURES as Float32, same row order.

        Each per-user table is first cut to the users range of ``cands`` (a zero-copy slice of
        the sorted table), so featurising a chunk of users costs in proportion to the chunk.
        """
        first, last = cands.select(pl.col(S.USER).min()).item(), cands.select(pl.col(S.USER).max()).item()

        def of_users(table: pl.DataFrame) -> pl.DataFrame:
            if first is None:
                return table.clear()
            keys = table[S.USER]
            lo = int(keys.search_sorted(first, side="left"))
            hi = int(keys.search_sorted(last, side="right"))
            return table.slice(lo, hi - lo)

        knn = self.tifu.features(cands).select(tifu.FEATURES)
        seq = sequence.sequence_features(self.history, self.sequences, cands, self.network)
        frame = (
            cands.join(of_users(self.user_product), on=[S.USER, S.PRODUCT], how="left", maintain_order="left")
            .join(self.product, on=S.PRODUCT, how="left", maintain_order="left")
            .join(of_users(self.user), on=S.USER, how="left", maintain_order="left")
            .with_columns(pl.col("p_aisle").alias(S.AISLE), pl.col("p_department").alias(S.DEPARTMENT))
            .join(of_users(self.aisle), on=[S.USER, S.AISLE], how="left", maintain_order="left")
            .join(of_users(self.department), on=[S.USER, S.DEPARTMENT], how="left", maintain_order="left")
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
            .hstack(seq)
            .with_columns(
                # How much of the user's buying in this aisle is this very product (loyalty vs substitutes).
                (pl.col("up_orders") / (pl.col("ua_share") * pl.col("u_lines"))).alias("up_aisle_share"),
                # Orders since the last purchase against the product's usual cycle across all buyers.
                ((pl.col("up_orders_since_last") + 1) / pl.col("p_mean_gap_orders")).alias("up_due_vs_product"),
            )
        )
        return frame.with_columns(pl.col(*BASE_FEATURES).cast(pl.Float32))

    def frame(self, cands: pl.DataFrame) -> pl.DataFrame:
        """Candidates with every feature in FEATURE_NAMES (Float32, NaN/null = missing)."""
        return add_context(self.base_frame(cands), self.history)


def base_matrix(frame: pl.DataFrame) -> np.ndarray:
    """The (rows, len(BASE_FEATURES)) float32 matrix of a base frame, nulls as NaN: the snapshot's
    ``base.npy`` rows and the fresh online rows are both made by this."""
    block = frame.select(pl.col(n).fill_null(float("nan")) for n in BASE_FEATURES).to_numpy()
    return np.ascontiguousarray(block, dtype="<f4")


def base_feature_frame(
    h: History, cands: pl.DataFrame, config: FeatureConfig, network: sequence.SequenceScorer | None = None
) -> pl.DataFrame:
    """``cands`` (USER, PRODUCT, candidate signals, …) + BASE_FEATURES as Float32, same row order."""
    return FeatureTables.of(h, config, network).base_frame(cands)


def add_context(frame: pl.DataFrame, h: History) -> pl.DataFrame:
    """Add the context FEATURES from each user's cutoff (dow, hour, days; null → NaN)."""
    ctx = frame.select(S.USER).join(h.cutoffs, on=S.USER, how="left", maintain_order="left")
    base = {name: frame[name].to_numpy().astype(np.float32) for name in context.INPUTS}

    def col(name: str) -> np.ndarray:
        return ctx[name].cast(pl.Float32).fill_null(float("nan")).to_numpy()

    extra = context.context_features(base, col(S.DOW), col(S.HOUR), col(S.DAYS_PRIOR))
    return frame.with_columns([pl.Series(k, v, dtype=pl.Float32) for k, v in extra.items()])


def feature_frame(
    h: History, cands: pl.DataFrame, config: FeatureConfig, network: sequence.SequenceScorer | None = None
) -> pl.DataFrame:
    """Candidates with every feature in FEATURE_NAMES (Float32, NaN/null = missing)."""
    return add_context(base_feature_frame(h, cands, config, network), h)


def to_matrix(frame: pl.DataFrame) -> np.ndarray:
    """The (n_rows, len(FEATURE_NAMES)) float32 matrix, C order, nulls as NaN."""
    return np.ascontiguousarray(
        frame.select(pl.col(name).fill_null(float("nan")) for name in FEATURE_NAMES).to_numpy(),
        dtype=np.float32,
    )
