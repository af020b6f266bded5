"""Training helpers: user split, negative sampling, group weights, top-k."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.model.training import group_sizes, sample_negatives, user_weights
from basketcast.pipeline.model.windows import FIT, STOP, VALID, evaluation_users, sample_users, split_users
from basketcast.pipeline.ranking import top_k


def test_split_users_is_by_user_deterministic_and_sized() -> None:
    users = np.arange(1, 1001, dtype=np.uint32)
    roles = split_users(users, 0.2, seed=7)
    assert roles.height == 1000 and roles[S.USER].is_unique().all()
    counts = dict(roles.group_by(S.ROLE).len().rows())
    assert counts == {VALID: 200, STOP: 80, FIT: 720}
    assert roles.equals(split_users(users[::-1], 0.2, seed=7))
    assert not roles.equals(split_users(users, 0.2, seed=8))
    assert VALID not in split_users(users, 0.0, seed=7)[S.ROLE].to_list()


def _rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            S.WINDOW: [0, 0, 0, 0, 1, 1],
            S.USER: [1, 1, 1, 2, 1, 1],
            S.PRODUCT: [10, 11, 12, 10, 10, 13],
            S.LABEL: [1, 0, 0, 1, 0, 1],
        }
    )


def test_group_sizes_and_equal_user_weights() -> None:
    rows = _rows()
    assert group_sizes(rows).tolist() == [3, 1, 2]
    w = user_weights(group_sizes(rows))
    assert w.mean() == pytest.approx(1.0)
    per_group = [w[:3].sum(), w[3:4].sum(), w[4:].sum()]
    assert per_group == pytest.approx([2.0, 2.0, 2.0])


def test_negative_sampling_keeps_every_positive() -> None:
    rows = pl.concat([_rows()] * 50)
    kept = sample_negatives(rows, 0.3, seed=1)
    assert kept.filter(pl.col(S.LABEL) == 1).height == rows.filter(pl.col(S.LABEL) == 1).height
    negatives = kept.filter(pl.col(S.LABEL) == 0).height
    assert 0.15 * 150 < negatives < 0.45 * 150
    assert sample_negatives(rows, 1.0, seed=1).drop(S.SAMPLING_WEIGHT).equals(rows)


def test_negative_sampling_weights_keep_the_expected_negative_mass() -> None:
    rows = pl.concat([_rows()] * 2000)  # 6,000 negatives
    kept = sample_negatives(rows, 0.25, seed=3)
    w = kept[S.SAMPLING_WEIGHT]
    assert set(w.filter(kept[S.LABEL] == 1).to_list()) == {1.0}
    assert set(w.filter(kept[S.LABEL] == 0).to_list()) == {4.0}
    negative_mass = float(w.filter(kept[S.LABEL] == 0).sum())
    assert negative_mass == pytest.approx(6000, rel=0.05)  # about as many as before sampling


def test_sample_users_is_seeded_sorted_and_a_subset() -> None:
    users = pl.Series(S.USER, np.arange(1000, 0, -1), dtype=pl.UInt32)
    a = sample_users(users, 100, seed=7)
    assert a.len() == 100 and a.is_sorted() and a.is_in(users.implode()).all()
    assert a.equals(sample_users(users, 100, seed=7))
    assert not a.equals(sample_users(users, 100, seed=8))
    assert sample_users(users, None, seed=7).equals(users.sort())
    assert sample_users(users, 5000, seed=7).equals(users.sort())


def test_evaluation_users_are_a_capped_sample_of_the_valid_users() -> None:
    roles = split_users(np.arange(1, 2001), 0.2, seed=1)
    valid = roles.filter(pl.col(S.ROLE) == VALID)[S.USER]
    capped = evaluation_users(roles, TrainConfig.model_validate({"evaluation": {"max_users": 50}}))
    assert capped.len() == 50 and capped.is_in(valid.implode()).all()
    assert evaluation_users(roles, TrainConfig.model_validate({"evaluation": {"max_users": None}})).equals(valid.sort())


def test_top_k_orders_by_score_then_product() -> None:
    frame = pl.DataFrame({S.USER: [1, 1, 1, 2], S.PRODUCT: [30, 20, 10, 5]})
    out = top_k(frame, np.array([0.5, 0.9, 0.5, 0.1], np.float32), 2)
    assert out.select(S.USER, S.PRODUCT, S.RANK).rows() == [(1, 20, 1), (1, 10, 2), (2, 5, 1)]
