"""Caveats appear exactly where the numbers are weak, and say which numbers."""

from __future__ import annotations

import polars as pl

from basketcast.pipeline.dashboard import caveats as C
from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.evaluation.bootstrap import Difference


def methods(ranker: float, tifu: float, top: float = 0.40) -> dict[str, dict[str, float]]:
    return {
        "lightgbm": {"ndcg@10": ranker},
        "tifu_knn": {"ndcg@10": tifu},
        "top_frequency": {"ndcg@10": top},
        "xgboost": {"ndcg@10": ranker + 0.05},  # the XGBoost baseline ranker is not a "simple method"
    }


def lead(low: float, high: float) -> Difference:
    return Difference(mean=(low + high) / 2, low=low, high=high, resamples=1000, level=0.95)


def test_a_clear_win_on_many_users_has_no_caveat() -> None:
    assert C.model_caveats(methods(0.48, 0.46), 5_000, lead(0.01, 0.03), "tifu_knn") == []


def test_few_held_out_users() -> None:
    (note,) = C.model_caveats(methods(0.48, 0.46), 118, lead(0.01, 0.03), "tifu_knn")
    assert "Only 118 held-out shoppers" in note


def test_a_baseline_at_least_as_good_as_the_ranker_is_named() -> None:
    notes = C.model_caveats(methods(0.538, 0.544, top=0.538), 5_000, lead(-0.02, 0.01), "tifu_knn")
    (note,) = notes  # the lost comparison says it all; no second note about the interval
    assert "TIFU-KNN (0.544)" in note and "Personal top-frequency (0.538)" in note and "0.538 NDCG@10" in note
    assert note.index("TIFU-KNN") < note.index("Personal top-frequency")  # the strongest first


def test_a_lead_inside_the_noise_is_called_chance() -> None:
    (note,) = C.model_caveats(methods(0.47, 0.46), 5_000, lead(-0.002, 0.02), "tifu_knn")
    assert "not distinguishable from chance" in note and "TIFU-KNN" in note and "-0.0020" in note
    assert C.model_caveats(methods(0.47, 0.46), 5_000, None, "tifu_knn") == []  # no interval: nothing claimed


def segmentation(best: float) -> G.Segmentation:
    empty = pl.DataFrame()
    return G.Segmentation(
        features=empty,
        labels=empty,
        profiles=empty,
        zscores=empty,
        k=3,
        silhouette={3: best, 4: best - 0.01},
        feature_names=(),
    )


def test_weak_segments_and_thin_segments() -> None:
    assert C.segment_caveats(segmentation(0.31), None) == []
    (weak,) = C.segment_caveats(segmentation(0.10), None)
    assert "silhouette 0.10" in weak and "rough tendencies" in weak
    quality = pl.DataFrame({G.SEGMENT: [1, 2, 3], G.USERS: [400, 49, 12]})
    notes = C.segment_caveats(segmentation(0.31), quality)
    assert notes == [
        "Few held-out shoppers in segment 2 (49), segment 3 (12): the model quality shown for them is noisy."
    ]
