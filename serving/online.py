"""Fresh online rows: a user's candidates and base features after orders posted since the export.

The snapshot (``base.npy``) holds every known user's rows as of their last order in the data the
model was trained on. When a shopper orders again (``POST /v1/orders``), :class:`OnlineFeatures`
recomputes that user's rows from their whole history — the snapshot's orders (``history/``) and
the orders posted since, in arrival order — with the very functions ``basketcast train`` and the
export use:

1. the user's canonical tables (orders, order lines with Kaggle's ``reordered``) →
   ``basketcast.features.history.order_lines`` and ``as_of`` at ``basketcast.features.cutoffs.next_order``;
2. candidates: ``basketcast.pipeline.model.candidates.candidates`` with the published ALS item factors and
   the user's factors folded in (``ALSModel.fold_in``, implicit's ``recalculate_user``);
3. features: ``basketcast.features.build.FeatureTables.of(..., published=...)``: the user's own tables
   from their history, the product table and the TIFU-KNN reference of the published version.

So the product-level state and the models stay those of the published version (what changes
is the user's history), and the rows equal what the offline feature store computes for the same
history against the same published state (``tests/serving/test_online_consistency.py``).

One difference to the snapshot, by design: a user of the snapshot has the ALS factors of the
fit, a refreshed user folded-in factors (cosine ≈ 0.9996 to the fitted ones measured on the
default data); every other column is the same function of the history.

A new shopper (unknown to the snapshot) gets personal rows from their first order on.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from basketcast.features import cutoffs as C
from basketcast.features.build import BASE_FEATURES, FeatureTables, PublishedTables, base_matrix
from basketcast.features.history import as_of, order_lines
from basketcast.features.tifu import Neighbourhood
from basketcast.pipeline.config import CandidateConfig, FeatureConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ids import index_of
from basketcast.pipeline.data.posted import OrderRecord, posted_tables
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.errors import BundleError
from basketcast.pipeline.model.candidates import ALSModel, candidates
from basketcast.pipeline.model.sequence import OnnxScorer
from basketcast.serving.bundle import (
    HISTORY,
    HISTORY_ARRAYS,
    PUBLISHED,
    PUBLISHED_ALS,
    PUBLISHED_CONFIG,
    PUBLISHED_PRODUCT_FEATURES,
    PUBLISHED_PRODUCTS,
    PUBLISHED_SEQUENCE,
    PUBLISHED_TIFU,
)

_HEADER = struct.Struct("<4sIIII")  # magic, rows, base features, orders in the history, posted orders
_MAGIC = b"BCR2"


@dataclass(frozen=True)
class UserRows:
    """One user's candidates and base features, computed from ``orders`` orders of history."""

    products: np.ndarray  # uint32 (n,)
    repeat: np.ndarray  # bool (n,)
    base: np.ndarray  # float32 (n, base features)
    orders: int  # orders in the history the rows come from
    posted: int  # of which posted since the snapshot (0: the snapshot's own history)

    def pack(self) -> bytes:
        """Bytes for an online store (read back by :meth:`unpack`)."""
        n, f = self.base.shape
        return b"".join(
            (
                _HEADER.pack(_MAGIC, n, f, self.orders, self.posted),
                np.ascontiguousarray(self.products, "<u4").tobytes(),
                np.ascontiguousarray(self.repeat, np.uint8).tobytes(),
                np.ascontiguousarray(self.base, "<f4").tobytes(),
            )
        )

    @classmethod
    def unpack(cls, payload: bytes) -> UserRows:
        magic, n, f, orders, posted = _HEADER.unpack_from(payload)
        if magic != _MAGIC or len(payload) != _HEADER.size + n * (4 + 1 + 4 * f):
            raise ValueError("not a packed UserRows payload (corrupt or from another version)")
        at = _HEADER.size
        products = np.frombuffer(payload, "<u4", n, at)
        repeat = np.frombuffer(payload, np.uint8, n, at + 4 * n).astype(bool)
        base = np.frombuffer(payload, "<f4", n * f, at + 5 * n).reshape(n, f)
        return cls(products, repeat, base, int(orders), int(posted))


class OnlineFeatures:
    """Recomputes a user's rows from their history against a published bundle's state."""

    def __init__(
        self,
        users: np.ndarray,
        history: dict[str, np.ndarray],
        products: pl.DataFrame,
        published: PublishedTables,
        als: ALSModel,
        features: FeatureConfig,
        candidate_config: CandidateConfig,
        network: OnnxScorer | None,
    ) -> None:
        self.users = users
        self.history = history
        self.products = products
        self.published = published
        self.als = als
        self.features = features
        self.candidate_config = candidate_config
        self.network = network

    @classmethod
    def load(cls, bundle: Path, users: np.ndarray, base_features: Sequence[str]) -> OnlineFeatures | None:
        """The online side of a bundle; None for a bundle written before it existed (no refresh)."""
        pub, hist = bundle / PUBLISHED, bundle / HISTORY
        if not (pub / PUBLISHED_CONFIG).is_file() or not hist.is_dir():
            return None
        if tuple(base_features) != BASE_FEATURES:
            raise BundleError(f"{bundle}: its features differ from this version's (re-export the model)")
        try:
            history = {
                name: np.load(hist / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in HISTORY_ARRAYS
            }
            config = json.loads((pub / PUBLISHED_CONFIG).read_text())
            products = pl.read_parquet(pub / PUBLISHED_PRODUCTS)
            published = PublishedTables(
                product=pl.read_parquet(pub / PUBLISHED_PRODUCT_FEATURES),
                reference=Neighbourhood.load(pub / PUBLISHED_TIFU),
            )
            als = ALSModel.load(pub / PUBLISHED_ALS)
            if als.idf.size != als.item_ids.size:  # an ALS saved before fold-in existed: no refresh
                return None
            network = OnnxScorer.load(pub / PUBLISHED_SEQUENCE, threads=1)
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{bundle}: unreadable online state ({exc})") from exc
        if history["order_offsets"].shape[0] != users.shape[0] + 1:
            raise BundleError(f"{hist}: does not cover the snapshot's users (corrupt bundle)")
        return cls(
            np.asarray(users),
            history,
            products,
            published,
            als,
            FeatureConfig.model_validate(config["features"]),
            CandidateConfig.model_validate(config["candidates"]),
            network,
        )

    # --- the user's history as canonical tables -----------------------------------------
    def dataset(self, user_id: int, posted: Sequence[OrderRecord]) -> Dataset:
        """The user's orders and lines in the canonical layout: the snapshot's, then ``posted``
        (by ``basketcast.pipeline.data.posted.posted_tables``: the rules the merge into a data folder uses)."""
        h = self.history
        i = int(index_of(self.users, np.asarray([user_id], np.uint32))[0])
        lo, hi = (int(h["order_offsets"][i]), int(h["order_offsets"][i + 1])) if i >= 0 else (0, 0)
        first, last = int(h["line_offsets"][lo]), int(h["line_offsets"][hi])
        days = np.asarray(h["days"][lo:hi])
        orders = pl.DataFrame(
            {
                S.ORDER: pl.Series(np.arange(1, hi - lo + 1), dtype=pl.UInt32),
                S.USER: pl.Series(np.full(hi - lo, user_id), dtype=pl.UInt32),
                S.EVAL_SET: pl.Series([S.PRIOR] * (hi - lo), dtype=S.EVAL_SET_DTYPE),
                S.ORDER_NUMBER: pl.Series(np.asarray(h["order_number"][lo:hi]), dtype=pl.UInt16),
                S.DOW: pl.Series(np.asarray(h["dow"][lo:hi]), dtype=pl.UInt8),
                S.HOUR: pl.Series(np.asarray(h["hour"][lo:hi]), dtype=pl.UInt8),
                S.DAYS_PRIOR: pl.Series(days, dtype=pl.Float32, nan_to_null=True).cast(pl.UInt8),
            }
        )
        counts = np.diff(np.asarray(h["line_offsets"][lo : hi + 1]))
        products = np.asarray(h["product"][first:last])
        lines = pl.DataFrame(
            {
                S.ORDER: pl.Series(np.repeat(np.arange(1, hi - lo + 1), counts), dtype=pl.UInt32),
                S.PRODUCT: pl.Series(products, dtype=pl.UInt32),
                S.CART_POS: pl.Series(np.asarray(h["cart_pos"][first:last]), dtype=pl.UInt16),
                S.REORDERED: pl.Series(np.asarray(h["reordered"][first:last]), dtype=pl.UInt8),
                S.EVAL_SET: pl.Series([S.PRIOR] * (last - first), dtype=S.EVAL_SET_DTYPE),
            }
        )
        if posted:
            last_number = int(orders[S.ORDER_NUMBER].max() or 0)  # type: ignore[arg-type]
            new_orders, new_lines = posted_tables(
                posted, {user_id: last_number}, {user_id: set(products.tolist())}, hi - lo + 1
            )
            orders, lines = pl.concat([orders, new_orders]), pl.concat([lines, new_lines])
        empty = {n: pl.DataFrame(schema=S.TABLE_SCHEMAS[n]) for n in (S.AISLES, S.DEPARTMENTS)}
        return Dataset(
            orders=orders, order_products=lines, products=self.products, aisles=empty[S.AISLES],
            departments=empty[S.DEPARTMENTS],
        )  # fmt: skip

    def rows(self, user_id: int, posted: Sequence[OrderRecord]) -> UserRows | None:
        """The user's fresh rows after ``posted`` (None when they have no order with products)."""
        data = self.dataset(user_id, posted)
        h = as_of(data, C.next_order(data.orders), order_lines(data))
        if h.cutoffs.height == 0 or h.lines.height == 0:
            return None
        als = self.als.fold_in(h.lines.select(S.USER, S.PRODUCT))
        cands = candidates(h, als, h.cutoffs[S.USER], self.candidate_config)
        frame = FeatureTables.of(h, self.features, self.network, self.published).base_frame(cands)
        return UserRows(
            products=cands[S.PRODUCT].to_numpy().astype(np.uint32),
            repeat=cands[S.IS_REPEAT].to_numpy().astype(bool),
            base=base_matrix(frame),
            orders=data.orders.height,
            posted=len(posted),
        )
