"""Fresh rows against a published state: the TIFU reference and the product table given, not recomputed.

``FeatureTables.of(h, config, published=...)`` is how the online path (``basketcast.serving.online``) builds a
user's rows after a new order. These tests pin what that relies on: the published TIFU reference
round-trips exactly, a history of one user scored against it gets the very TIFU values the
full population's history gives that user, and the few-columns dense gather equals the full one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from basketcast.features import cutoffs as C
from basketcast.features.build import FeatureTables, PublishedTables, base_matrix
from basketcast.features.history import as_of, order_lines
from basketcast.features.tifu import DENSE_REFERENCE_CELLS, Neighbourhood, TifuIndex
from basketcast.pipeline.config import ALSConfig, CandidateConfig, FeatureConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.generate import generate
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.model.candidates import ALSModel, candidates

CONFIG = FeatureConfig(tifu_neighbors=30, tifu_reference_users=120)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return generate(n_users=300, seed=11)


def one_user(data: Dataset, user: int) -> Dataset:
    orders = data.orders.filter(pl.col(S.USER) == user)
    lines = data.order_products.join(orders.select(S.ORDER), on=S.ORDER, how="semi")
    return Dataset(orders, lines, data.products, data.aisles, data.departments)


def test_reference_round_trips_exactly(data: Dataset, tmp_path: Path) -> None:
    h = as_of(data, C.next_order(data.orders), order_lines(data))
    reference = TifuIndex.of(h, CONFIG.tifu_neighbors, CONFIG.tifu_reference_users).neighbourhood
    reference.save(tmp_path / "ref.npz")
    loaded = Neighbourhood.load(tmp_path / "ref.npz")
    assert loaded.n_neighbors == reference.n_neighbors and loaded.n_neighbors < CONFIG.tifu_neighbors  # sampled
    assert (loaded.X != reference.X).nnz == 0
    np.testing.assert_array_equal(loaded.sq_norms, reference.sq_norms)


def test_one_users_rows_against_the_published_state_equal_the_populations(data: Dataset) -> None:
    h = as_of(data, C.next_order(data.orders), order_lines(data))
    everyone = FeatureTables.of(h, CONFIG)
    published = PublishedTables.of(everyone)
    als = ALSModel.fit(h.lines, ALSConfig(factors=8, iterations=5))
    for user in (3, 150, 299):
        solo = one_user(data, user)
        h1 = as_of(solo, C.next_order(solo.orders), order_lines(solo))
        folded = als.fold_in(h1.lines)
        cands = candidates(h1, folded, h1.cutoffs[S.USER], CandidateConfig())
        alone = base_matrix(FeatureTables.of(h1, CONFIG, published=published).base_frame(cands))
        together = base_matrix(everyone.base_frame(cands))
        # Only the ALS columns come from the candidates; the rest must agree to float32 rounding.
        np.testing.assert_allclose(alone, together, rtol=4 * float(np.finfo(np.float32).eps), equal_nan=True)
        # Without the published state the product table is the one user's: it must differ.
        own = base_matrix(FeatureTables.of(h1, CONFIG).base_frame(cands))
        assert not np.allclose(own, together, equal_nan=True)


def test_few_columns_gather_equals_the_full_dense_copy(data: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    h = as_of(data, C.next_order(data.orders), order_lines(data))
    index = TifuIndex.of(h, CONFIG.tifu_neighbors, CONFIG.tifu_reference_users)
    cands = h.user_products.select(S.USER, S.PRODUCT).filter(pl.col(S.USER) < 40)
    few = index.features(cands)  # few candidate columns (under DENSE_REFERENCE_CELLS / 64): a copy of those
    import basketcast.features.tifu as tifu

    n_ref, n_products = index.neighbourhood.X.shape
    wanted = cands[S.PRODUCT].n_unique()
    assert wanted * n_ref <= DENSE_REFERENCE_CELLS // 64
    # A limit under which the candidates' columns are too many for the small copy, but the full
    # dense copy of the reference fits: the other path.
    monkeypatch.setattr(tifu, "DENSE_REFERENCE_CELLS", n_ref * n_products)
    assert wanted * n_ref > tifu.DENSE_REFERENCE_CELLS // 64
    full = TifuIndex(index.space, index.neighbourhood).features(cands)
    assert few.equals(full)
    assert float(few["tifu_neighbours"].sum()) > 0
