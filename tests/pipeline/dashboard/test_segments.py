"""Customer segments: known behavioural features, determinism, the choice of k, labels on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.generate import generate
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import Dataset, read_dataset
from basketcast.pipeline.errors import DataError, OutputError


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    """300 generated shoppers: real department names, varied habits."""
    return generate(300, 7)


@pytest.fixture(scope="module")
def segmented(synthetic: Dataset) -> G.Segmentation:
    return G.segment_users(synthetic)


def test_behaviour_known_answers(tiny_kaggle: Callable[..., Path], tmp_path: Path) -> None:
    ingest(tiny_kaggle(), tmp_path / "data")
    f = G.behaviour(read_dataset(tmp_path / "data"))
    u1, u2 = f.row(0, named=True), f.row(1, named=True)
    # User 1: 4 orders (days 15, 21, 29; dow 2,3,3,4; hours 8,7,12,7), 8 lines; after the first
    # order 4 of 6 lines are reorders; 5 produce, 2 dairy eggs, 1 bakery.
    assert u1[S.USER] == 1 and u1[G.ORDERS] == 4 and u1[G.BASKET] == 2.0
    assert u1[G.DAYS_BETWEEN] == pytest.approx(65 / 3) and u1[G.MEAN_HOUR] == 8.5
    assert u1[G.WEEKEND_SHARE] == 0.0 and u1[G.REORDER_RATIO] == pytest.approx(4 / 6)
    assert u1[G.department_feature("produce")] == pytest.approx(5 / 8)
    assert u1[G.department_feature("dairy eggs")] == pytest.approx(2 / 8)
    assert u1[G.department_feature("bakery")] == pytest.approx(1 / 8)
    # User 2: 3 orders (the test order counts for habits: dow 0, 1, 5 → 2 of 3 on days 0-1), 3 lines
    # in 2 orders; order 2 holds one product, a reorder.
    assert u2[G.ORDERS] == 3 and u2[G.BASKET] == 1.5 and u2[G.DAYS_BETWEEN] == 7.0
    assert u2[G.WEEKEND_SHARE] == pytest.approx(2 / 3) and u2[G.MEAN_HOUR] == 10.0
    assert u2[G.REORDER_RATIO] == 1.0 and u2[G.department_feature("bakery")] == 0.0
    # Two users cannot be segmented.
    with pytest.raises(DataError, match="at least 3 users"):
        G.segment_users(read_dataset(tmp_path / "data"))


def test_every_user_gets_one_segment_and_profiles_add_up(synthetic: Dataset, segmented: G.Segmentation) -> None:
    users = synthetic.orders[S.USER].unique().sort()
    labels = segmented.labels
    assert labels[S.USER].to_list() == users.to_list()
    assert labels.schema[G.SEGMENT] == pl.UInt8 and labels[G.SEGMENT_NAME].null_count() == 0
    k = segmented.k
    assert sorted(labels[G.SEGMENT].unique().to_list()) == list(range(1, k + 1))
    p = segmented.profiles
    assert p[G.SEGMENT].to_list() == list(range(1, k + 1))
    assert p[G.USERS].sum() == users.len() and p[G.SHARE].sum() == pytest.approx(1.0)
    assert p[G.USERS].to_list() == sorted(p[G.USERS].to_list(), reverse=True)  # numbered by size
    assert p[G.SEGMENT_NAME].n_unique() == k
    counts = labels.group_by(G.SEGMENT).len().sort(G.SEGMENT)["len"].to_list()
    assert counts == p[G.USERS].to_list()
    # The profile means are the segment means of the features.
    seg1 = segmented.features.join(labels, on=S.USER).filter(pl.col(G.SEGMENT) == 1)
    assert p.row(0, named=True)[G.BASKET] == pytest.approx(seg1[G.BASKET].mean())
    # Real departments become features (synthetic data has the 21 Instacart ones).
    assert sum(f.startswith(G.DEPT_PREFIX) for f in segmented.feature_names) == 6


def test_k_is_the_best_silhouette_and_reported(segmented: G.Segmentation) -> None:
    config = G.SegmentConfig()
    assert sorted(segmented.silhouette) == list(range(config.k_min, config.k_max + 1))
    best = max(segmented.silhouette.values())
    assert segmented.silhouette[segmented.k] == best
    assert all(-1.0 <= v <= 1.0 for v in segmented.silhouette.values())


def test_segmentation_is_deterministic(synthetic: Dataset, segmented: G.Segmentation) -> None:
    again = G.segment_users(synthetic)
    assert again.k == segmented.k and again.silhouette == segmented.silhouette
    assert again.labels.equals(segmented.labels)
    assert again.profiles.equals(segmented.profiles)


def test_profiles_are_worded_from_the_data(segmented: G.Segmentation) -> None:
    z = segmented.zscores
    threshold = G.SegmentConfig().trait_threshold
    for row, zrow in zip(segmented.profiles.iter_rows(named=True), z.iter_rows(named=True), strict=True):
        text = row[G.DESCRIPTION]
        assert text.startswith(row[G.SEGMENT_NAME].split(" (")[0])
        assert f"{row[G.SHARE]:.0%} of users" in text and f"basket {row[G.BASKET]:.1f} items" in text
        # The strongest nameable trait (a department only when above average) leads the name: e.g.
        # a segment far above the mean basket size is called "Big baskets, …". On this data every
        # segment has one beyond the threshold, so the check runs for each of them.
        nameable = [(c, v) for c, v in zrow.items() if c != G.SEGMENT and not (c.startswith(G.DEPT_PREFIX) and v < 0)]
        name, value = min(nameable, key=lambda cv: (-abs(cv[1]), cv[0]))  # ties as _traits: by name
        assert abs(value) >= threshold, (row[G.SEGMENT_NAME], name, value)
        word = (
            f"more {name.removeprefix(G.DEPT_PREFIX)}"
            if name.startswith(G.DEPT_PREFIX)
            else G.TRAITS[name][0 if value > 0 else 1]
        )
        assert word is not None and row[G.SEGMENT_NAME].lower().startswith(word.lower()), (word, row[G.SEGMENT_NAME])


def test_traits_words() -> None:
    z = {G.BASKET: 1.2, G.WEEKEND_SHARE: 0.8, G.department_feature("produce"): 0.5, G.ORDERS: -0.1}
    assert G._traits(z, 0.4) == ["big baskets", "more weekend orders", "more produce"]
    assert G._traits({G.DAYS_BETWEEN: -0.9, G.department_feature("frozen"): -2.0}, 0.4) == ["short gaps between orders"]
    assert G._traits({G.BASKET: 0.1}, 0.4) == []


def test_names_cannot_contradict_themselves() -> None:
    # The issue's example: a segment with big baskets, few orders and short gaps was "bulk-buying,
    # new, frequent" ("new" and "frequent" read as opposites). Each phrase now states its measurement.
    z = {G.BASKET: 1.1, G.ORDERS: -0.9, G.DAYS_BETWEEN: -0.7}
    means = {G.USERS: 10, G.BASKET: 13.2, G.DAYS_BETWEEN: 9.7, G.ORDERS: 8.9, G.REORDER_RATIO: 0.56}
    means |= {G.WEEKEND_SHARE: 0.33, G.MEAN_HOUR: 14.0}
    name, _ = G._describe(means, z, dict(means), 30, 0.4)
    assert name == "Big baskets, few orders so far, short gaps between orders"
    # Whatever the z-scores, a name holds at most one phrase per feature: never both of a pair.
    rng = np.random.default_rng(0)
    phrase_feature = {p: f for f, pair in G.TRAITS.items() for p in pair if p}
    features = [*G.TRAITS, G.department_feature("produce"), G.department_feature("frozen")]
    for _ in range(2000):
        traits = G._traits(dict(zip(features, rng.normal(0, 1.5, len(features)), strict=True)), 0.4)
        owners = [phrase_feature.get(t, t) for t in traits]
        assert len(owners) == len(set(owners)) <= 3, traits
    # No phrase is another feature's opposite word: high and low phrases are all distinct.
    phrases = [p for pair in G.TRAITS.values() for p in pair if p]
    assert len(phrases) == len(set(phrases))


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="k_max"):
        G.SegmentConfig(k_min=5, k_max=3)
    with pytest.raises(ValidationError):
        G.SegmentConfig.model_validate({"clusters": 4})


def test_labels_parquet_is_written_atomically(
    segmented: G.Segmentation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out" / "segments.parquet"
    G.write_labels(segmented, path)
    back = pl.read_parquet(path)
    assert back.columns == [S.USER, G.SEGMENT, G.SEGMENT_NAME]
    assert back.equals(segmented.labels.select(S.USER, G.SEGMENT, G.SEGMENT_NAME))
    before = path.read_bytes()

    # A write that fails before the rename leaves the previous file whole and no temporary file.
    other = G.Segmentation(
        features=segmented.features,
        labels=segmented.labels.with_columns(pl.lit(np.uint8(9)).alias(G.SEGMENT)),
        profiles=segmented.profiles,
        zscores=segmented.zscores,
        k=segmented.k,
        silhouette=segmented.silhouette,
        feature_names=segmented.feature_names,
    )

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="disk full"):
        G.write_labels(other, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["segments.parquet"]
