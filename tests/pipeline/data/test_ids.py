"""basketcast.pipeline.data.ids.index_of: the dense-table path and the binary-search path agree."""

from __future__ import annotations

import numpy as np
import pytest

from basketcast.pipeline.data.ids import index_of


def _reference(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    lookup = {int(v): i for i, v in enumerate(sorted_ids)}
    return np.array([lookup.get(int(v), -1) for v in ids], dtype=np.int64)


@pytest.mark.parametrize("n_lookups", [10, 100_000])  # below and above the dense-table threshold
@pytest.mark.parametrize("dtype", [np.uint32, np.int64])
def test_index_of_matches_a_dictionary(n_lookups: int, dtype: type) -> None:
    rng = np.random.default_rng(0)
    sorted_ids: np.ndarray = np.unique(rng.integers(1, 5_000, size=2_000)).astype(dtype)
    ids: np.ndarray = rng.integers(0, 6_000, size=n_lookups).astype(dtype)  # absent ids, ids above the largest
    got = index_of(sorted_ids, ids)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, _reference(sorted_ids, ids))
    assert (got == -1).any() and (got >= 0).any()


def test_index_of_sparse_ids_fall_back_to_search() -> None:
    sorted_ids = np.array([3, 4_000_000_000], dtype=np.uint32)  # too sparse for a dense table
    ids = np.tile(np.array([3, 5, 4_000_000_000], dtype=np.uint32), 30_000)
    np.testing.assert_array_equal(index_of(sorted_ids, ids)[:3], [0, -1, 1])


def test_index_of_empty() -> None:
    assert index_of(np.array([], dtype=np.uint32), np.array([1, 2], dtype=np.uint32)).tolist() == [-1, -1]
