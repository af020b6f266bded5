"""Leakage: features (and the ALS candidates) never see the target order or anything later.

Built on the real Instacart excerpt: every feature of every candidate is computed, then the
target orders and all later orders are rewritten (other products, other times) or deleted, and
everything is computed again with the same cutoffs. Any difference is a leak.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from basketcast.features import cutoffs as C
from basketcast.features.build import FEATURE_NAMES
from basketcast.features.history import as_of, order_lines
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import Dataset, read_dataset
from basketcast.pipeline.model.candidates import ALSModel, candidates
from basketcast.pipeline.model.windows import build_window
from tests.conftest import EXCERPT

CONFIG = TrainConfig(tracking=[])


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("real") / "data"
    ingest(EXCERPT, out)
    return read_dataset(out)


def _target_and_later(data: Dataset, cutoffs: pl.DataFrame) -> pl.Series:
    return data.orders.join(cutoffs.select(S.USER, S.TARGET_ORDER_NUMBER), on=S.USER).filter(
        pl.col(S.ORDER_NUMBER) >= pl.col(S.TARGET_ORDER_NUMBER)
    )[S.ORDER]


def _rewrite_future(data: Dataset, cutoffs: pl.DataFrame, seed: int) -> Dataset:
    """Other products, cart order and times in every target-or-later order."""
    future = _target_and_later(data, cutoffs)
    rng = np.random.default_rng(seed)
    lines = data.order_products
    is_future = lines[S.ORDER].is_in(future.implode())
    products = data.products[S.PRODUCT].to_numpy()
    new_products = rng.choice(products, size=lines.height).astype(np.uint32)
    lines = lines.with_columns(
        pl.when(is_future).then(pl.Series(new_products)).otherwise(pl.col(S.PRODUCT)).alias(S.PRODUCT)
    ).unique([S.ORDER, S.PRODUCT], keep="first", maintain_order=True)
    orders = data.orders.with_columns(
        pl.when(pl.col(S.ORDER).is_in(future.implode()))
        .then(pl.lit(3, pl.UInt8))
        .otherwise(pl.col(S.HOUR))
        .alias(S.HOUR)
    )
    return replace(data, orders=orders, order_products=lines)


def _delete_future(data: Dataset, cutoffs: pl.DataFrame) -> Dataset:
    future = _target_and_later(data, cutoffs).implode()
    return replace(
        data,
        orders=data.orders.filter(~pl.col(S.ORDER).is_in(future)),
        order_products=data.order_products.filter(~pl.col(S.ORDER).is_in(future)),
    )


def _features(data: Dataset, cutoffs: pl.DataFrame) -> pl.DataFrame:
    h = as_of(data, cutoffs, order_lines(data))
    als = ALSModel.fit(h.lines, CONFIG.als)
    cands = candidates(h, als, h.cutoffs[S.USER], CONFIG.candidates)
    from basketcast.features.build import feature_frame

    return feature_frame(h, cands, CONFIG.features).select(S.USER, S.PRODUCT, *FEATURE_NAMES)


@pytest.mark.parametrize("window", [0, 1])
def test_rewriting_or_deleting_the_future_leaves_features_unchanged(real: Dataset, window: int) -> None:
    cutoffs = C.label_window(real.orders, window, min_history=2)
    assert cutoffs.height > 50
    original = _features(real, cutoffs)
    assert original.height > 1000
    rewritten = _features(_rewrite_future(real, cutoffs, seed=window), cutoffs)
    deleted = _features(_delete_future(real, cutoffs), cutoffs)
    assert original.equals(rewritten, null_equal=True)
    assert original.equals(deleted, null_equal=True)


def test_the_mutation_is_seen_by_labels(real: Dataset) -> None:
    """Guard against a vacuous test: the rewrite does change what the target order holds."""
    cutoffs = C.label_window(real.orders, 0, min_history=2)
    lines = order_lines(real)
    before = C.labels(lines, cutoffs)
    changed = _rewrite_future(real, cutoffs, seed=0)
    after = C.labels(order_lines(changed), cutoffs)
    assert not before.sort(S.USER, S.PRODUCT).equals(after.sort(S.USER, S.PRODUCT))


def test_context_of_the_target_order_is_the_only_thing_taken_from_it(real: Dataset) -> None:
    """The target order's day, hour and days-since-prior are known at prediction time and used."""
    cutoffs = C.label_window(real.orders, 0, min_history=2)
    window = build_window(real, order_lines(real), cutoffs, 0, CONFIG)
    got = window.frame.group_by(S.USER).agg(pl.col("ctx_hour").first()).sort(S.USER)
    want = cutoffs.select(S.USER, pl.col(S.HOUR).cast(pl.Float32).alias("ctx_hour")).sort(S.USER)
    assert got.equals(want)
