"""Training helpers: user split, negative sampling, group weights, top-k."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline import schema as S
from pipeline.training import FIT, ROLE, STOP, VALID, group_sizes, sample_negatives, split_users, top_k, user_weights


def test_split_users_is_by_user_deterministic_and_sized() -> None:
    users = np.arange(1, 1001, dtype=np.uint32)
    roles = split_users(users, 0.2, seed=7)
    assert roles.height == 1000 and roles[S.USER].is_unique().all()
    counts = dict(roles.group_by(ROLE).len().rows())
    assert counts == {VALID: 200, STOP: 80, FIT: 720}
    assert roles.equals(split_users(users[::-1], 0.2, seed=7))
    assert not roles.equals(split_users(users, 0.2, seed=8))
    assert VALID not in split_users(users, 0.0, seed=7)[ROLE].to_list()


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
    assert sample_negatives(rows, 1.0, seed=1).equals(rows)


def test_top_k_orders_by_score_then_product() -> None:
    frame = pl.DataFrame({S.USER: [1, 1, 1, 2], S.PRODUCT: [30, 20, 10, 5]})
    out = top_k(frame, np.array([0.5, 0.9, 0.5, 0.1], np.float32), 2)
    assert out.select(S.USER, S.PRODUCT, S.RANK).rows() == [(1, 20, 1), (1, 10, 2), (2, 5, 1)]
