"""Stage 1: ALS candidates — known answers, exclusion of seen items, batch == single, determinism."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from basketcast.features import cutoffs as C
from basketcast.features.history import as_of
from basketcast.pipeline.config import ALSConfig, CandidateConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.model.candidates import ALSModel, candidates, history_candidates

CONFIG = ALSConfig(factors=8, iterations=20, regularization=0.01)


def checkerboard_lines(n_users: int = 40, n_items: int = 20) -> pl.DataFrame:
    """Two user groups buying two disjoint item groups (implicit's 'checkerboard' oracle)."""
    users, items = [], []
    for u in range(1, n_users + 1):
        group = u % 2
        for i in range(1, n_items + 1):
            if i % 2 == group and (u + i) % 7 != 0:  # every user misses a few of their group's items
                users.append(u)
                items.append(i)
    return pl.DataFrame({S.USER: users, S.PRODUCT: items}, schema={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32})


def test_als_recommends_the_missing_items_of_the_users_group() -> None:
    lines = checkerboard_lines()
    model = ALSModel.fit(lines, CONFIG)
    top = model.top_items(np.arange(1, 41, dtype=np.uint32), 2, exclude=lines)
    assert top.join(lines, on=[S.USER, S.PRODUCT], how="semi").height == 0, "a seen item was recommended"
    for u in range(1, 41):
        missing = {i for i in range(1, 21) if i % 2 == u % 2 and (u + i) % 7 == 0}  # 1 or 2 items
        got = top.filter(pl.col(S.USER) == u)[S.PRODUCT].to_list()
        assert set(got[: len(missing)]) == missing, (u, got, missing)


def test_batch_scores_equal_single_user_scores_and_fit_is_deterministic() -> None:
    lines = checkerboard_lines()
    a, b = ALSModel.fit(lines, CONFIG), ALSModel.fit(lines, CONFIG)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    users = np.arange(1, 41, dtype=np.uint32)
    batch = a.top_items(users, 5)
    for u in (1, 2, 17):
        single = a.top_items(np.array([u], np.uint32), 5)
        expected = batch.filter(pl.col(S.USER) == u)
        # BLAS blocks a (1 × f) product differently from a (40 × f) one: equal up to float rounding.
        np.testing.assert_allclose(single[S.ALS_SCORE].to_numpy(), expected[S.ALS_SCORE].to_numpy(), rtol=1e-5)
        # Products may differ only where scores tie at the cut-off (symmetric checkerboard items).
        differ = set(single[S.PRODUCT].to_list()) ^ set(expected[S.PRODUCT].to_list())
        cut = float(expected[S.ALS_SCORE][-1])
        tied = a.score_pairs(np.full(len(differ), u, np.uint32), np.array(sorted(differ), np.uint32))
        np.testing.assert_allclose(tied, cut, rtol=1e-5)
    scores = a.score_pairs(batch[S.USER].to_numpy(), batch[S.PRODUCT].to_numpy())
    np.testing.assert_allclose(scores, batch[S.ALS_SCORE].to_numpy(), rtol=1e-5)
    assert np.isnan(a.score_pairs(np.array([999], np.uint32), np.array([1], np.uint32))).all()


def test_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = ALSModel.fit(checkerboard_lines(), CONFIG)
    model.save(tmp_path / "als.npz")
    loaded = ALSModel.load(tmp_path / "als.npz")
    np.testing.assert_array_equal(model.item_factors, loaded.item_factors)
    np.testing.assert_array_equal(model.user_ids, loaded.user_ids)


@pytest.fixture
def tiny_history(tiny_kaggle, tmp_path):  # type: ignore[no-untyped-def]
    from basketcast.pipeline.data.ingest import ingest
    from basketcast.pipeline.data.storage import read_dataset

    ingest(tiny_kaggle(), tmp_path / "d")
    data: Dataset = read_dataset(tmp_path / "d")
    return as_of(data, C.label_window(data.orders, 0))


def test_candidates_are_history_plus_unseen_als_products(tiny_history) -> None:  # type: ignore[no-untyped-def]
    h = tiny_history
    als = ALSModel.fit(h.lines, CONFIG)
    cands = candidates(h, als, h.cutoffs[S.USER], CandidateConfig(als_new=1))
    user1 = cands.filter(pl.col(S.USER) == 1)
    assert set(user1.filter(pl.col(S.IS_REPEAT))[S.PRODUCT].to_list()) == {101, 102, 103}
    new = user1.filter(~pl.col(S.IS_REPEAT))[S.PRODUCT].to_list()
    assert new == [104]  # the only product user 1 has not bought that ALS knows
    assert sorted(user1[S.ALS_RANK].to_list()) == [1.0, 2.0, 3.0, 4.0]
    assert cands.select(S.USER, S.PRODUCT).is_unique().all()


def test_history_cap_keeps_the_most_decayed_frequent(tiny_history) -> None:  # type: ignore[no-untyped-def]
    capped = history_candidates(tiny_history, pl.Series(S.USER, [1], pl.UInt32), max_history=1)
    assert capped.rows() == [(1, 101)]  # banana: bought in every order


def grocery_lines(n_users: int = 150, n_items: int = 60, seed: int = 0) -> pl.DataFrame:
    """Random repeat purchases with per-user favourites (counts > 1, so BM25 weights vary)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(1, n_users + 1):
        favourites = rng.choice(np.arange(1, n_items + 1), size=8, replace=False)
        for _ in range(int(rng.integers(5, 40))):
            users.append(u)
            items.append(int(rng.choice(favourites)) if rng.random() < 0.8 else int(rng.integers(1, n_items + 1)))
    return pl.DataFrame({S.USER: users, S.PRODUCT: items}, schema={S.USER: pl.UInt32, S.PRODUCT: pl.UInt32})


def test_fold_in_is_implicits_recalculate_user() -> None:
    """A folded-in user factor is implicit's own least-squares solution given the item factors,
    on the row BM25-weighted with the fit's statistics — so it is what the fit gives a user."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight

    lines = grocery_lines()
    model = ALSModel.fit(lines, CONFIG)
    counts = lines.group_by(S.USER, S.PRODUCT).len().sort(S.USER, S.PRODUCT)
    matrix = sp.csr_matrix(
        (
            counts["len"].to_numpy().astype(np.float32),
            (model.user_index(counts[S.USER].to_numpy()), model.item_index(counts[S.PRODUCT].to_numpy())),
        ),
        shape=(model.user_ids.size, model.item_ids.size),
    )
    weighted = bm25_weight(matrix, K1=CONFIG.bm25_k1, B=CONFIG.bm25_b).tocsr().astype(np.float32)
    als = AlternatingLeastSquares(factors=CONFIG.factors, regularization=CONFIG.regularization, random_state=0)
    als.item_factors = model.item_factors
    als.user_factors = model.user_factors
    users = np.array([1, 2, 77, 150], np.uint32)
    rows = model.user_index(users)
    reference = als.recalculate_user(rows, weighted[rows])
    folded = model.fold_in(lines.filter(pl.col(S.USER).is_in(users.tolist())))
    assert folded.user_ids.tolist() == users.tolist()
    np.testing.assert_allclose(folded.user_factors, reference, rtol=1e-4, atol=1e-5)
    # A user alone gets the same factor as in a group (computed user by user).
    alone = model.fold_in(lines.filter(pl.col(S.USER) == 77))
    np.testing.assert_array_equal(alone.user_factors[0], folded.user_factors[2])
    # Close to the fitted factors (the fit's last user step preceded its last item step).
    cosine = (folded.user_factors * model.user_factors[rows]).sum(1) / (
        np.linalg.norm(folded.user_factors, axis=1) * np.linalg.norm(model.user_factors[rows], axis=1)
    )
    assert cosine.min() > 0.95


def test_fold_in_needs_the_bm25_statistics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = ALSModel.fit(grocery_lines(), CONFIG)
    model.save(tmp_path / "als.npz")
    loaded = ALSModel.load(tmp_path / "als.npz")
    np.testing.assert_array_equal(loaded.idf, model.idf)
    assert loaded.bm25 == model.bm25 and loaded.regularization == model.regularization
    one = grocery_lines().filter(pl.col(S.USER) == 5)
    np.testing.assert_array_equal(loaded.fold_in(one).user_factors, model.fold_in(one).user_factors)
    old = ALSModel(model.user_ids, model.item_ids, model.user_factors, model.item_factors)  # saved before BM25 stats
    with pytest.raises(ValueError, match="BM25"):
        old.fold_in(one)


def test_numpy_top_items_agree_with_implicits_top_k() -> None:
    """Few users rank in NumPy, many in implicit's threaded top-k: the same products, except where
    scores tie at the cut-off within float rounding."""
    import basketcast.pipeline.model.candidates as candidates_module

    lines = grocery_lines()
    model = ALSModel.fit(lines, CONFIG)
    users = model.user_ids[:100]
    assert users.size > candidates_module.NUMPY_TOPK_USERS
    by_implicit = model.top_items(users, 6, exclude=lines)
    by_numpy = pl.concat([model.top_items(users[i : i + 50], 6, exclude=lines) for i in (0, 50)])
    assert by_numpy.join(lines, on=[S.USER, S.PRODUCT], how="semi").height == 0, "a seen item was proposed"
    differ = by_implicit.join(by_numpy, on=[S.USER, S.PRODUCT], how="anti")
    assert differ.height <= 2, differ
    np.testing.assert_allclose(
        model.score_pairs(by_numpy[S.USER].to_numpy(), by_numpy[S.PRODUCT].to_numpy()),
        by_numpy[S.ALS_SCORE].to_numpy(),
        rtol=1e-5,
    )
