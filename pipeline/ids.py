"""Looking ids up in a sorted id array (the id maps of ALS, TIFU-KNN and the serving snapshot)."""

from __future__ import annotations

import numpy as np


def index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each of ``ids`` in the sorted, unique ``sorted_ids``; -1 where absent (int64)."""
    ids = np.asarray(ids)
    if sorted_ids.size == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)
