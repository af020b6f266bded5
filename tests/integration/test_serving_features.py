"""Request-time features against training-time features, on the real excerpt.

``ServingModel.features`` (snapshot rows + the context added per request) must give, for every
user and candidate of the snapshot, the rows the ranker's training code builds
(``basketcast.features.build.feature_frame``) at the same cutoff — each user's next order,
``basketcast.features.cutoffs.next_order`` — with the same context (day, hour, days since the last order).
Parity, the explorer and batch scoring all share ServingModel's matrix, so only this test would
see, e.g., two context features swapped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from basketcast.features import cutoffs as C
from basketcast.features.build import FEATURE_NAMES, feature_frame, to_matrix
from basketcast.features.history import as_of, order_lines
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.model.candidates import candidates
from basketcast.pipeline.workflows.run_folder import load_run
from basketcast.serving.model import Context, ServingModel

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("dow", "hour", "days"), [(0, 10, 7), (3, 15, 0), (6, 22, 30)])
def test_serving_rows_equal_the_training_feature_frame(
    excerpt_run: dict[str, Path], dow: int, hour: int, days: int
) -> None:
    run = load_run(excerpt_run["run"])
    model = ServingModel.load(excerpt_run["run"])
    data = read_dataset(excerpt_run["data"])
    cutoffs = C.next_order(data.orders).with_columns(
        pl.lit(dow).alias(S.DOW), pl.lit(hour).alias(S.HOUR), pl.lit(days).alias(S.DAYS_PRIOR)
    )
    h = as_of(data, cutoffs, order_lines(data))
    cands = candidates(h, run.als(latest=True), h.cutoffs[S.USER], run.config.candidates)
    # The same candidates, in the snapshot's order.
    np.testing.assert_array_equal(cands[S.USER].to_numpy(), np.repeat(model.users, np.diff(model.offsets)))
    np.testing.assert_array_equal(cands[S.PRODUCT].to_numpy(), model.products)

    expected = to_matrix(feature_frame(h, cands, run.config.features, run.network()))
    got = model.features(slice(0, model.base.shape[0]), Context(dow=dow, hour=hour, days=float(days)))
    assert model.manifest.features == list(FEATURE_NAMES) and got.dtype == expected.dtype == np.float32
    for j, name in enumerate(FEATURE_NAMES):  # NaN where NaN, equal elsewhere: bit for bit in float32
        np.testing.assert_array_equal(got[:, j], expected[:, j], err_msg=name)
    assert np.isnan(got).any(axis=1).sum() > 0  # missing values are compared too
