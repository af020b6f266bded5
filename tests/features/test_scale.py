"""The pieces that keep the feature store linear in users: the TIFU neighbourhood sample, the
one-pass TIFU space and chunked featurisation — each checked against the exact or unchunked
computation on the real excerpt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from basketcast.features import cutoffs as C
from basketcast.features.build import FeatureTables, base_feature_frame
from basketcast.features.history import History, as_of, order_lines
from basketcast.features.tifu import TifuIndex, TifuSpace, tifu_user_vectors
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ingest import ingest
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.model.candidates import ALSModel, candidates
from tests.conftest import EXCERPT

CONFIG = TrainConfig(tracking=[])


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    out = tmp_path_factory.mktemp("scale") / "data"
    ingest(EXCERPT, out)
    data = read_dataset(out)
    return as_of(data, C.label_window(data.orders, 0, 2), order_lines(data))


def test_one_pass_tifu_space_equals_the_reference_vectors(history: History) -> None:
    lines = history.lines.select(S.USER, S.ORDER_NUMBER, S.PRODUCT)
    fast = TifuIndex.of(history, 900).space
    vectors = tifu_user_vectors(lines)
    coo = fast.X.tocoo()
    got = pl.DataFrame({S.USER: fast.user_ids[coo.row], S.PRODUCT: fast.product_ids[coo.col], "w": coo.data}).sort(
        S.USER, S.PRODUCT
    )
    assert got[S.USER].to_list() == vectors[S.USER].to_list()
    assert got[S.PRODUCT].to_list() == vectors[S.PRODUCT].to_list()
    np.testing.assert_allclose(got["w"].to_numpy(), vectors[S.SCORE].to_numpy(), rtol=1e-12)
    # The generic build (duplicates dropped first) agrees with the one-pass build, in the same
    # columns (TifuIndex.of spans the catalogue; by default a space spans the products bought).
    generic = TifuSpace.build(lines, product_ids=fast.product_ids)
    assert abs(generic.X - fast.X).max() < 1e-12
    bought = TifuSpace.build(lines)
    assert set(bought.product_ids.tolist()) <= set(fast.product_ids.tolist())
    assert bought.X.nnz == fast.X.nnz


def test_neighbourhood_is_exact_up_to_the_reference_size(history: History) -> None:
    space = TifuIndex.of(history, 900).space
    n = space.X.shape[0]
    exact = space.neighbourhood(30)
    same = space.neighbourhood(30, max_reference=n)
    assert exact.X.shape[0] == same.X.shape[0] == n and exact.n_neighbors == same.n_neighbors == 30
    assert abs(exact.X - same.X).max() == 0


def test_sampled_neighbourhood_keeps_the_share_and_is_seeded(history: History) -> None:
    space = TifuIndex.of(history, 900).space
    n = space.X.shape[0]
    hood = space.neighbourhood(30, max_reference=n // 2, seed=3)
    assert hood.X.shape[0] == n // 2
    assert hood.n_neighbors == round(30 * (n // 2) / n)  # the same share of the population
    again = space.neighbourhood(30, max_reference=n // 2, seed=3)
    assert abs(hood.X - again.X).max() == 0
    other = space.neighbourhood(30, max_reference=n // 2, seed=4)
    assert abs(hood.X - other.X).max() > 0


def test_tifu_features_with_a_sampled_neighbourhood(history: History) -> None:
    users = history.cutoffs[S.USER]
    als = ALSModel.fit(history.lines, CONFIG.als)
    cands = candidates(history, als, users, CONFIG.candidates)
    exact = TifuIndex.of(history, 900).features(cands)
    sampled = TifuIndex.of(history, 900, max_reference=50).features(cands)
    # The user's own vector does not depend on the neighbourhood; the neighbour mean does.
    assert exact["tifu_own"].equals(sampled["tifu_own"])
    assert not exact["tifu_neighbours"].equals(sampled["tifu_neighbours"])
    assert (sampled["tifu_neighbours"] >= 0).all()
    assert TifuIndex.of(history, 900, max_reference=50).features(cands).equals(sampled)  # deterministic


def test_feature_tables_featurise_chunks_like_the_whole(history: History) -> None:
    als = ALSModel.fit(history.lines, CONFIG.als)
    cands = candidates(history, als, history.cutoffs[S.USER], CONFIG.candidates)
    whole = base_feature_frame(history, cands, CONFIG.features)
    tables = FeatureTables.of(history, CONFIG.features)
    cut = cands.height // 3
    parts = pl.concat([tables.base_frame(cands.slice(0, cut)), tables.base_frame(cands.slice(cut))])
    assert parts.equals(whole)


def test_snapshot_written_in_chunks_equals_one_pass(
    history: History, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from basketcast.features.build import BASE_FEATURES
    from basketcast.pipeline.progress import Timings
    from basketcast.pipeline.workflows import export

    als = ALSModel.fit(history.lines, CONFIG.als)
    monkeypatch.setattr(export, "SNAPSHOT_CHUNK_USERS", 7)  # many chunks, uneven last one
    arrays = export._write_snapshot(tmp_path, history, als, CONFIG, Timings(), None)
    base = np.load(tmp_path / "base.npy")
    cands = candidates(history, als, history.cutoffs[S.USER], CONFIG.candidates)
    expected = base_feature_frame(history, cands, CONFIG.features)
    want = expected.select(pl.col(n).fill_null(float("nan")) for n in BASE_FEATURES).to_numpy()
    np.testing.assert_array_equal(base, want.astype(np.float32))
    assert arrays["offsets"][-1] == base.shape[0] == cands.height
    assert arrays["products"].tolist() == cands[S.PRODUCT].to_list()


@pytest.mark.parametrize("max_reference", [None, 50])
def test_dense_neighbour_gather_equals_sparse_means(
    history: History, monkeypatch: pytest.MonkeyPatch, max_reference: int | None
) -> None:
    from basketcast.features import tifu

    als = ALSModel.fit(history.lines, CONFIG.als)
    cands = candidates(history, als, history.cutoffs[S.USER], CONFIG.candidates)
    index = TifuIndex.of(history, 900, max_reference=max_reference)
    dense = index.features(cands)
    monkeypatch.setattr(tifu, "DENSE_REFERENCE_CELLS", 0)  # force the sparse fallback
    sparse = index.features(cands)
    assert dense["tifu_own"].equals(sparse["tifu_own"])
    np.testing.assert_allclose(dense["tifu_neighbours"].to_numpy(), sparse["tifu_neighbours"].to_numpy(), rtol=1e-6)
    # Most candidates are bought by some neighbour.
    assert dense.select((pl.col("tifu_neighbours") > 0).mean()).item() > 0.5


def test_streak_from_bit_patterns_and_long_runs() -> None:
    from basketcast.features.history import BASKET_SIZE, FROM_END

    runs = {1: range(70), 2: [0, 1, 2, 4], 3: [1], 4: [*range(64), 65], 5: range(64)}  # product → from_end values
    rows = [(7, p, fe) for p, values in runs.items() for fe in values]
    lines = pl.DataFrame(rows, schema={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, FROM_END: pl.UInt16}, orient="row")
    lines = lines.with_columns(
        (100 - pl.col(FROM_END)).cast(pl.UInt16).alias(S.ORDER_NUMBER),
        pl.lit(0.0, pl.Float32).alias(S.CUM_DAYS),
        pl.lit(1, pl.UInt8).alias(S.CART_POS),
        pl.lit(5, pl.UInt16).alias(BASKET_SIZE),
    )
    h = History(cutoffs=pl.DataFrame(), orders=pl.DataFrame(), lines=lines, products=pl.DataFrame())
    got = dict(h.user_products.select(S.PRODUCT, "up_streak").iter_rows())
    assert got == {1: 70, 2: 3, 3: 0, 4: 64, 5: 64}
