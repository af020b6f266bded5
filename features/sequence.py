"""The sequence network's inputs, as of a cutoff: one order sequence per (user, candidate).

Every candidate row becomes the user's last ``steps`` visible orders, oldest → newest, left-padded,
with ``len(STEP_INPUTS)`` numbers per order: whether the order happened (padding = 0), whether it
held the candidate and where in the cart, and the order's own context (days since the previous
order, basket size, share reordered, day of week, hour). This is the per-(user, product) input of
the 3rd-place Kaggle Instacart network (Vasquez) and of ReCANet. Beside it the network reads
product, aisle and department ids and the products of the user's last ``RECENT_BASKETS``
baskets (the attention context).

One pseudo-product per user, :data:`NONE`, stands for "an order without any reordered product":
its "bought" input is 1 on such orders and its row's output is the user's probability of a
basket with no reorder (Vasquez's ``product_id == 0`` rows).

Only NumPy and Polars: the arrays are built from a :class:`~basketcast.features.history.History` (so they see
only orders before the cutoff) by the same code for the network's training targets, the ranker's
label windows and the serving snapshot. The network itself — any :class:`SequenceScorer` — is
passed in by the model layer (``basketcast.pipeline.model.sequence``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import polars as pl

from basketcast.features.history import BASKET_SIZE, FROM_END, History
from basketcast.pipeline.data import schema as S

STEP_INPUTS: Final = (
    "present",  # 1 for a real order, 0 for left padding
    "bought",  # the candidate is in this order (None row: the order has no reordered product)
    "cart_rel",  # its add_to_cart_order / basket size (0 when not bought)
    "days_prior",  # days since the previous order / 30 (0 for the first)
    "basket_size",  # log1p(lines) / log1p(100)
    "reorder_share",  # share of the order's lines that are reorders
    "dow_sin",
    "dow_cos",
    "hour",  # hour / 24
)
N_INPUTS: Final = len(STEP_INPUTS)
_ORDER_INPUTS: Final = 6  # the order-context part: days_prior .. hour (per user, shared by its rows)
RECENT_BASKETS: Final = 3  # baskets whose products form the attention context
RECENT_MAX: Final = 32  # at most this many of their products, most recent basket first (3 baskets ≈ 30)

# Vocabulary rows with a meaning of their own (product, aisle and department tables alike).
OOV: Final = 0  # a product too rare in the training history to have its own embedding
NONE: Final = 1  # the pseudo-product "no reordered product"
FIRST_ID: Final = 2

# Output columns: the candidate's logit, the state vector, the user's None probability.
SEQ_LOGIT: Final = "seq_logit"
SEQ_NONE: Final = "seq_none"
STATE_SIZE: Final = 8
SEQ_STATES: Final = tuple(f"seq_state_{i}" for i in range(STATE_SIZE))
FEATURES: Final = (SEQ_LOGIT, *SEQ_STATES, SEQ_NONE)

MAX_CART: Final = 32  # cart products the cart attention reads at most (the first ones added)
ROWS_PER_BATCH: Final = 8192  # rows expanded to dense tensors at a time (~9.4 MB at 32 steps)


@dataclass(frozen=True)
class Vocabulary:
    """Dense id → embedding-row tables, fixed when the network is trained.

    A product gets its own row when at least ``min_buyers`` users bought it in the training
    history; rarer ones share :data:`OOV` and are told apart by their aisle and department rows.
    """

    product_row: np.ndarray  # int64, indexed by product id
    aisle_row: np.ndarray  # int64, indexed by aisle id
    department_row: np.ndarray  # int64, indexed by department id
    product_aisle: np.ndarray  # int64 aisle id of every product id (0 = unknown)
    product_department: np.ndarray  # int64

    @classmethod
    def of(cls, h: History, min_buyers: int) -> Vocabulary:
        products = h.products
        max_product = int(products[S.PRODUCT].max() or 0)  # type: ignore[arg-type]
        aisle = np.zeros(max_product + 1, dtype=np.int64)
        dept = np.zeros(max_product + 1, dtype=np.int64)
        ids = products[S.PRODUCT].to_numpy().astype(np.int64)
        aisle[ids] = products[S.AISLE].fill_null(0).to_numpy()
        dept[ids] = products[S.DEPARTMENT].fill_null(0).to_numpy()
        buyers = h.lines.group_by(S.PRODUCT).agg(pl.col(S.USER).n_unique().alias("_b"))
        common = np.sort(buyers.filter(pl.col("_b") >= min_buyers)[S.PRODUCT].to_numpy().astype(np.int64))
        product_row = np.full(max_product + 1, OOV, dtype=np.int64)
        product_row[common[common <= max_product]] = FIRST_ID + np.arange(int((common <= max_product).sum()))

        def rows_of(values: np.ndarray) -> np.ndarray:
            distinct = np.unique(values[values > 0])
            table = np.full(int(values.max(initial=0)) + 1, OOV, dtype=np.int64)
            table[distinct] = FIRST_ID + np.arange(distinct.size)
            return table

        return cls(product_row, rows_of(aisle), rows_of(dept), aisle, dept)

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Embedding rows of the product, aisle and department tables."""
        return tuple(int(t.max(initial=NONE)) + 1 for t in (self.product_row, self.aisle_row, self.department_row))  # type: ignore[return-value]

    def rows(self, products: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Product, aisle and department rows of product ids (unknown ids → OOV; id 0 = NONE rows)."""
        p = np.asarray(products, dtype=np.int64)
        known = (p > 0) & (p < self.product_row.size)
        safe = np.where(known, p, 0)
        aisle = self.product_aisle[safe]
        dept = self.product_department[safe]
        prow = np.where(known, self.product_row[safe], OOV)
        arow = np.where(
            known & (aisle < self.aisle_row.size), self.aisle_row[np.minimum(aisle, self.aisle_row.size - 1)], OOV
        )
        drow = np.where(
            known & (dept < self.department_row.size),
            self.department_row[np.minimum(dept, self.department_row.size - 1)],
            OOV,
        )
        none = p == 0
        return (np.where(none, NONE, prow), np.where(none, NONE, arow), np.where(none, NONE, drow))

    def save(self, path: Path) -> None:
        np.savez(path, **{k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class UserSequences:
    """Per user of a history (sorted ids): the order context of the last ``steps`` orders, the
    None row's "bought" input and the attention context (products of the last baskets)."""

    users: np.ndarray  # uint32, sorted
    steps: int
    orders: np.ndarray  # float32 (U, steps, 1 + _ORDER_INPUTS): present + order context
    no_reorder: np.ndarray  # float32 (U, steps): 1 on real orders without a reordered product (not the first)
    recent: np.ndarray  # int64 (U, RECENT_MAX) product ids, 0 = padding
    recent_ago: np.ndarray  # int64 (U, RECENT_MAX) baskets ago (0 = the last visible basket)
    recent_rows: tuple[np.ndarray, np.ndarray, np.ndarray]  # vocabulary rows of ``recent``

    @classmethod
    def of(cls, h: History, steps: int, vocab: Vocabulary) -> UserSequences:
        users = h.cutoffs[S.USER].to_numpy().astype(np.uint32)  # as_of sorts the cutoffs by user
        n = users.size
        orders = h.orders.filter(pl.col(FROM_END) < steps)
        uidx = np.searchsorted(users, orders[S.USER].to_numpy())
        col = steps - 1 - orders[FROM_END].to_numpy().astype(np.int64)
        reorders = h.lines.group_by(S.USER, S.ORDER_NUMBER).agg(pl.col(S.REORDERED).cast(pl.Float32).mean().alias("_r"))
        orders = orders.join(reorders, on=[S.USER, S.ORDER_NUMBER], how="left", maintain_order="left")
        dow = orders[S.DOW].cast(pl.Float32).to_numpy() * (2 * np.pi / 7)
        ctx = np.zeros((n, steps, 1 + _ORDER_INPUTS), dtype=np.float32)
        ctx[uidx, col, 0] = 1.0
        ctx[uidx, col, 1] = orders[S.DAYS_PRIOR].cast(pl.Float32).fill_null(0).to_numpy() / 30.0
        ctx[uidx, col, 2] = np.log1p(orders[BASKET_SIZE].cast(pl.Float32).to_numpy()) / np.log1p(100.0)
        share = orders["_r"].fill_null(0).to_numpy()
        ctx[uidx, col, 3] = share
        ctx[uidx, col, 4] = np.sin(dow)
        ctx[uidx, col, 5] = np.cos(dow)
        ctx[uidx, col, 6] = orders[S.HOUR].cast(pl.Float32).to_numpy() / 24.0
        no_reorder = np.zeros((n, steps), dtype=np.float32)
        all_first = h.orders.group_by(S.USER).agg(pl.col(S.ORDER_NUMBER).min().alias("_m"))
        is_first = (
            orders.join(all_first, on=S.USER, how="left", maintain_order="left")
            .select(pl.col(S.ORDER_NUMBER) == pl.col("_m"))
            .to_series()
            .to_numpy()
        )
        no_reorder[uidx, col] = ((share == 0) & ~is_first).astype(np.float32)

        recent_lines = (
            h.lines.filter(pl.col(FROM_END) < RECENT_BASKETS)
            .sort(S.USER, FROM_END, S.CART_POS)
            .with_columns(pl.int_range(pl.len()).over(S.USER).alias("_i"))
            .filter(pl.col("_i") < RECENT_MAX)
        )
        recent = np.zeros((n, RECENT_MAX), dtype=np.int64)
        ago = np.zeros((n, RECENT_MAX), dtype=np.int64)
        ru = np.searchsorted(users, recent_lines[S.USER].to_numpy())
        ri = recent_lines["_i"].to_numpy()
        recent[ru, ri] = recent_lines[S.PRODUCT].to_numpy()
        ago[ru, ri] = recent_lines[FROM_END].to_numpy()
        return cls(users, steps, ctx, no_reorder, recent, ago, vocab.rows(recent))


@dataclass(frozen=True)
class SequenceBatch:
    """Dense network inputs for a block of rows of consecutive users (see the module doc)."""

    # The step inputs come in two parts, joined inside the network (STEP_INPUTS order: present,
    # bought, cart_rel, then the order context): the row's own (n, T, 2) — bought, cart_rel — and
    # its user's (u, T, 7) — present and the order context — gathered by ``row_user``.
    row_steps: np.ndarray  # float32 (n, T, 2)
    user_steps: np.ndarray  # float32 (u, T, 7)
    product: np.ndarray  # int64 (n,) vocabulary rows
    aisle: np.ndarray
    department: np.ndarray
    row_user: np.ndarray  # int64 (n,) index into the recent_* arrays
    recent_product: np.ndarray  # int64 (u, RECENT_MAX) vocabulary rows
    recent_aisle: np.ndarray
    recent_department: np.ndarray
    recent_ago: np.ndarray  # int64 (u, RECENT_MAX)
    recent_pad: np.ndarray  # bool (u, RECENT_MAX): True = padding

    def __len__(self) -> int:
        return int(self.product.shape[0])


class SequenceScorer(Protocol):
    """The network as the feature layer sees it: inputs → (logit (n,), state (n, STATE_SIZE))."""

    vocabulary: Vocabulary
    steps: int

    def score(self, batch: SequenceBatch) -> tuple[np.ndarray, np.ndarray]: ...


_CART_SCALE: Final = 255.0  # cart_rel is stored as uint8 (the network sees the rounded value everywhere)


@dataclass(frozen=True)
class RowSequences:
    """The per-row part of the inputs, compact (2 bytes per step): expanded by :meth:`batch`."""

    user_index: np.ndarray  # int64 (n,): the row's user in the UserSequences
    bought: np.ndarray  # uint8 (n, steps)
    cart: np.ndarray  # uint8 (n, steps): round(cart_rel * 255)
    product: np.ndarray  # int64 (n,) vocabulary rows
    aisle: np.ndarray
    department: np.ndarray

    def __len__(self) -> int:
        return int(self.product.shape[0])

    def batch(self, users: UserSequences, index: np.ndarray | slice) -> SequenceBatch:
        """Dense inputs of the rows ``index`` (a slice or an index array), any order."""
        uidx = self.user_index[index]
        block, row_user = np.unique(uidx, return_inverse=True)
        bought = self.bought[index]
        row_steps = np.empty((*bought.shape, 2), dtype=np.float32)
        row_steps[:, :, 0] = bought
        row_steps[:, :, 1] = self.cart[index] * np.float32(1.0 / _CART_SCALE)
        recent = users.recent[block]
        return SequenceBatch(
            row_steps=row_steps,
            user_steps=users.orders[block],
            product=self.product[index],
            aisle=self.aisle[index],
            department=self.department[index],
            row_user=row_user.astype(np.int64).reshape(-1),
            recent_product=users.recent_rows[0][block],
            recent_aisle=users.recent_rows[1][block],
            recent_department=users.recent_rows[2][block],
            recent_ago=users.recent_ago[block],
            recent_pad=recent == 0,
        )


def encode_rows(h: History, users: UserSequences, rows: pl.DataFrame, vocab: Vocabulary) -> RowSequences:
    """:class:`RowSequences` of ``rows`` (USER, PRODUCT; product 0 = the user's None row)."""
    T = users.steps
    n = rows.height
    bought = np.zeros((n, T), dtype=np.uint8)
    cart = np.zeros((n, T), dtype=np.uint8)
    keyed = rows.select(pl.col(S.USER).cast(pl.UInt32), pl.col(S.PRODUCT).cast(pl.UInt32)).with_row_index("_row")
    hits = (
        h.lines.filter(pl.col(FROM_END) < T)
        .select(
            pl.col(S.USER).cast(pl.UInt32),
            pl.col(S.PRODUCT).cast(pl.UInt32),
            FROM_END,
            (pl.col(S.CART_POS).cast(pl.Float32) / pl.col(BASKET_SIZE).cast(pl.Float32)).alias("_rel"),
        )
        .join(keyed, on=[S.USER, S.PRODUCT], how="inner")
    )
    r = hits["_row"].to_numpy().astype(np.int64)
    c = T - 1 - hits[FROM_END].to_numpy().astype(np.int64)
    bought[r, c] = 1
    cart[r, c] = np.rint(np.clip(hits["_rel"].to_numpy(), 0, 1) * _CART_SCALE).astype(np.uint8)
    user_ids = keyed[S.USER].to_numpy()
    uidx = np.searchsorted(users.users, user_ids)
    if n and np.any(users.users[np.minimum(uidx, users.users.size - 1)] != user_ids):
        raise ValueError("rows hold a user without a cutoff in this history")
    products = keyed[S.PRODUCT].to_numpy()
    none_rows = np.flatnonzero(products == 0)
    bought[none_rows] = users.no_reorder[uidx[none_rows]].astype(np.uint8)
    prod, aisle, dept = vocab.rows(products)
    return RowSequences(uidx.astype(np.int64), bought, cart, prod, aisle, dept)


def batches(
    h: History, users: UserSequences, rows: pl.DataFrame, vocab: Vocabulary, size: int = ROWS_PER_BATCH
) -> Iterator[tuple[int, SequenceBatch]]:
    """``(first row, batch)`` over ``rows`` (USER, PRODUCT; product 0 = None row), ``size`` at a time."""
    encoded = encode_rows(h, users, rows, vocab)
    for start in range(0, len(encoded), size):
        yield start, encoded.batch(users, slice(start, min(start + size, len(encoded))))


def score_rows(
    h: History, users: UserSequences, rows: pl.DataFrame, scorer: SequenceScorer
) -> tuple[np.ndarray, np.ndarray]:
    """The network's (logit (n,), state (n, STATE_SIZE)) for ``rows`` (USER, PRODUCT; product 0 =
    the None row), ROWS_PER_BATCH rows at a time."""
    logit = np.empty(rows.height, dtype=np.float32)
    state = np.empty((rows.height, STATE_SIZE), dtype=np.float32)
    for start, batch in batches(h, users, rows, scorer.vocabulary):
        logit[start : start + len(batch)], state[start : start + len(batch)] = scorer.score(batch)
    return logit, state


def with_none_rows(cands: pl.DataFrame) -> pl.DataFrame:
    """USER, PRODUCT of ``cands`` plus one None row (product 0) per user, sorted by user (None first)."""
    pairs = cands.select(pl.col(S.USER).cast(pl.UInt32), pl.col(S.PRODUCT).cast(pl.UInt32))
    nones = pairs.select(S.USER).unique().with_columns(pl.lit(0, pl.UInt32).alias(S.PRODUCT))
    return pl.concat([nones, pairs]).sort(S.USER, maintain_order=True)


def sequence_features(
    h: History, users: UserSequences | None, cands: pl.DataFrame, scorer: SequenceScorer | None
) -> pl.DataFrame:
    """FEATURES for every row of ``cands`` (USER, PRODUCT, IS_REPEAT; sorted by user), same order.

    ``seq_logit`` and the state are the network's outputs for the user's past products (NaN for
    products the user never bought: their sequence is all zeros and the network was not trained
    on such rows); ``seq_none`` is the user's None-row probability, on every row. Without a
    scorer every column is NaN (the ranker then ignores them).
    """
    n = cands.height
    out = {name: np.full(n, np.nan, dtype=np.float32) for name in FEATURES}
    if scorer is None or users is None or n == 0:
        return pl.DataFrame({k: pl.Series(k, v, dtype=pl.Float32) for k, v in out.items()})
    if not cands[S.USER].is_sorted():
        raise ValueError("candidate rows must be sorted by user")
    repeat = cands[S.IS_REPEAT].to_numpy().astype(bool)
    if not repeat.any():  # only products new to their users (e.g. a chunk of ALS proposals)
        return pl.DataFrame({k: pl.Series(k, v, dtype=pl.Float32) for k, v in out.items()})
    rows = with_none_rows(cands.filter(pl.col(S.IS_REPEAT)))
    logit, state = score_rows(h, users, rows, scorer)
    is_none = rows[S.PRODUCT].to_numpy() == 0
    # Rows of ``rows`` are the repeat rows in their original order, interleaved with None rows.
    out[SEQ_LOGIT][repeat] = logit[~is_none]
    for i, name in enumerate(SEQ_STATES):
        out[name][repeat] = state[~is_none, i]
    none_users = rows[S.USER].to_numpy()[is_none]
    p_none = 1.0 / (1.0 + np.exp(-logit[is_none].astype(np.float64)))
    cand_users = cands[S.USER].to_numpy()
    pos = np.searchsorted(none_users, cand_users)
    has = (pos < none_users.size) & (none_users[np.minimum(pos, max(none_users.size - 1, 0))] == cand_users)
    out[SEQ_NONE][has] = p_none[pos[has]].astype(np.float32)
    return pl.DataFrame({k: pl.Series(k, v, dtype=pl.Float32) for k, v in out.items()})


def save_meta(path: Path, steps: int) -> None:
    path.write_text(json.dumps({"steps": steps, "inputs": list(STEP_INPUTS), "recent_max": RECENT_MAX}))
