"""TIFU-KNN signals as features: the user's own time-decayed, grouped purchase vector and the
mean vector of their nearest users (Hu et al., SIGIR 2020), read at each candidate pair.

The ranker thereby sees both halves of the strongest simple baseline and can weigh them with
everything else, instead of the fixed blend alpha = 0.9 of TIFU-KNN itself.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.history import History
from pipeline import schema as S
from pipeline.baselines import TifuSpace
from pipeline.ids import index_of

FEATURES = ("tifu_own", "tifu_neighbours")


def tifu_features(h: History, cands: pl.DataFrame, n_neighbors: int) -> pl.DataFrame:
    """USER, PRODUCT + FEATURES for every candidate pair (0 where the vector has no entry).

    ``cands`` needs USER and PRODUCT; the output keeps its row order.
    """
    space = TifuSpace.build(h.lines.select(S.USER, S.ORDER_NUMBER, S.PRODUCT))
    pairs = cands.select(S.USER, S.PRODUCT).with_row_index("_i")
    pairs = pairs.sort(S.USER, maintain_order=True)
    users = pairs[S.USER].to_numpy()
    products = pairs[S.PRODUCT].to_numpy()
    col = index_of(space.product_ids, products)
    known = col >= 0
    own = np.zeros(users.size, np.float32)
    neighbours = np.zeros(users.size, np.float32)
    for rows, own_vecs, neighbour_vecs in space.blocks(np.unique(users), n_neighbors):
        block_users = space.user_ids[rows]
        lo, hi = np.searchsorted(users, block_users[0]), np.searchsorted(users, block_users[-1], side="right")
        sel = np.arange(lo, hi)[known[lo:hi]]
        r = np.searchsorted(block_users, users[sel])
        own[sel] = np.asarray(own_vecs[r, col[sel]]).ravel()
        assert neighbour_vecs is not None
        neighbours[sel] = np.asarray(neighbour_vecs[r, col[sel]]).ravel()
    return pairs.with_columns(pl.Series(FEATURES[0], own), pl.Series(FEATURES[1], neighbours)).sort("_i").drop("_i")
