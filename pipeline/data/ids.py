"""Looking ids up in a sorted id array (the id maps of ALS, TIFU-KNN and the serving snapshot)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# Below this many ids to look up, binary search beats building a dense table.
_DENSE_MIN_LOOKUPS = 1 << 16
# A dense table may hold up to this many slots per known id (and never more than 64M slots).
_DENSE_SLOTS_PER_ID = 64
_DENSE_MAX_SLOTS = 1 << 26


def index_of(sorted_ids: np.ndarray, ids: npt.ArrayLike) -> np.ndarray:
    """Position of each of ``ids`` in the sorted, unique ``sorted_ids``; -1 where absent (int64).

    Many lookups into compact non-negative integer ids (the usual case: millions of order lines
    against 200k users) go through a dense table, O(1) each; otherwise a binary search.
    """
    ids = np.asarray(ids)
    if sorted_ids.size == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    top = int(sorted_ids[-1])
    if (
        ids.size >= _DENSE_MIN_LOOKUPS
        and np.issubdtype(sorted_ids.dtype, np.unsignedinteger)
        and np.issubdtype(ids.dtype, np.unsignedinteger)
        and top < min(_DENSE_MAX_SLOTS, _DENSE_SLOTS_PER_ID * sorted_ids.size)
    ):
        table = np.full(top + 2, -1, dtype=np.int64)  # the last slot answers every id > top
        table[sorted_ids] = np.arange(sorted_ids.size)
        return table[np.minimum(ids, top + 1)]
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)
