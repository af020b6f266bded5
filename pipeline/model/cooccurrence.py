""" "Often bought together": a product co-occurrence table built from baskets.

For two products a and b, with N baskets, n(a) baskets holding a and n(a, b) holding both (a
basket, i.e. an order, is the unit):

* support = n(a, b);
* lift = P(a, b) / (P(a) P(b)) = n(a, b) N / (n(a) n(b));
* PMI = log(lift) (natural log): > 0 when a and b are bought together more often than chance.

Only pairs with support ≥ ``min_support`` and PMI > 0 are kept, and of those the ``top`` best per
product (PMI descending, then the smaller product id: the rule of :mod:`basketcast.pipeline.ranking`). The
table is symmetric before that cut: b is a candidate of a's list exactly when a is one of b's.

It serves two things: the related products of one product (``related_to``) and a cart-completion
score (``cart_scores``: the mean PMI between the products already in a cart and each candidate).
The serving process imports this module, so it needs NumPy and Polars only.

Scale: counting every pair costs Σ n_i² over baskets (about 0.5 billion at the full Instacart
scale), so beyond ``max_orders`` baskets a seeded uniform sample of ``max_orders`` baskets is
counted instead, and P(a), P(b) come from that same sample (N = ``max_orders``). Pairs are counted
in chunks of baskets so memory stays bounded by the chunk, plus the distinct pairs seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

import numpy as np
import polars as pl

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_json, write_json
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.ranking import best_first

# Columns of ``related_to`` (besides S.PRODUCT). They belong to this table only.
PMI: Final = "pmi"
LIFT: Final = "lift"
SUPPORT: Final = "support"

FORMAT_VERSION: Final = 1
PARAMETERS_JSON: Final = "cooccurrence.json"
_ARRAYS: Final = ("products", "offsets", "related", "pmi", "lift", "support")
_DTYPES: Final = {
    "products": np.uint32,
    "offsets": np.int64,
    "related": np.uint32,
    "pmi": np.float32,
    "lift": np.float32,
    "support": np.uint32,
}

# At most this many (basket, a < b) pair occurrences are materialised at once: about 30 bytes
# each while counting (int64 line indices, then the pair keys), i.e. ~120 MB per chunk.
_CHUNK_PAIRS: Final = 4_000_000
# The distinct pair keys of all chunks are merged in this many ranges of the key space, one at a time.
_KEY_RANGES: Final = 16

_RELATED_SCHEMA: Final = pl.Schema(
    {S.PRODUCT: pl.UInt32(), PMI: pl.Float32(), LIFT: pl.Float32(), SUPPORT: pl.UInt32()}
)


def _baskets(lines: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Basket keys and product ids of ``lines``, sorted by basket then product, one row per (basket, product)."""
    for column in (S.USER, S.ORDER_NUMBER, S.PRODUCT):
        if column not in lines.columns:
            raise ValueError(f"order lines need the column {column!r}; got {lines.columns}")
    keyed = lines.select(
        # A basket is one (user, order number): both fit 32 bits, so one UInt64 key identifies it.
        (pl.col(S.USER).cast(pl.UInt64) * (1 << 32) + pl.col(S.ORDER_NUMBER).cast(pl.UInt64)).alias("_basket"),
        pl.col(S.PRODUCT).cast(pl.UInt32),
    ).sort("_basket", S.PRODUCT)
    basket = keyed["_basket"].to_numpy()
    product = keyed[S.PRODUCT].to_numpy()
    # A line repeated within a basket would pair a product with itself and inflate n(a): keep one.
    keep = np.ones(basket.size, dtype=bool)
    keep[1:] = (basket[1:] != basket[:-1]) | (product[1:] != product[:-1])
    return basket[keep], product[keep]


def _sample(
    basket: np.ndarray, product: np.ndarray, max_orders: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Basket index (0..N-1, non-decreasing), product and N: every basket, or a seeded uniform
    sample of ``max_orders`` of them.

    The sample is drawn over the sorted basket keys, so it does not depend on the input's row order.
    """
    new = np.r_[False, basket[1:] != basket[:-1]] if basket.size else np.zeros(0, dtype=bool)
    index = np.cumsum(new)
    n_baskets = int(index[-1]) + 1 if basket.size else 0
    if max_orders is None or n_baskets <= max_orders:
        return index, product, n_baskets
    chosen = np.zeros(n_baskets, dtype=bool)
    chosen[np.random.default_rng(seed).choice(n_baskets, size=max_orders, replace=False)] = True
    keep = chosen[index]
    renumber = np.cumsum(chosen) - 1  # the kept baskets become 0..max_orders-1, in order
    return renumber[index[keep]], product[keep], max_orders


def _pair_counts(
    index: np.ndarray, dense: np.ndarray, n_products: int, min_support: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pair keys a * n_products + b (a < b, dense product indices) in ≥ ``min_support`` baskets, and those counts.

    ``index`` (basket, non-decreasing) and ``dense`` (product index, increasing within a basket)
    are the lines of the baskets. Baskets are processed in chunks of about ``_CHUNK_PAIRS`` pairs,
    each chunk's distinct keys are filed into ``_KEY_RANGES`` ranges of the key space, and each
    range is merged on its own at the end: memory is one chunk plus the chunks' distinct keys,
    never a sort of all of them at once. Keys are UInt32 when they fit (up to 65,536 products).
    Returns Int64 keys, ascending, and their Int64 counts.
    """
    empty = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if index.size == 0:
        return empty
    key_type = np.uint32 if n_products * n_products <= 1 << 32 else np.uint64
    dense = dense.astype(key_type)
    bounds = np.linspace(0, n_products * n_products, _KEY_RANGES + 1).astype(np.uint64)[1:-1].astype(key_type)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    sizes = np.diff(np.r_[starts, index.size])
    # Each line pairs with the lines after it in its basket.
    after = np.repeat(sizes, sizes) - 1 - (np.arange(index.size) - np.repeat(starts, sizes))
    cumulative = np.cumsum(sizes * (sizes - 1) // 2)
    ranges: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in range(_KEY_RANGES)]
    first = 0  # the first basket of the chunk
    while first < starts.size:
        done = cumulative[first - 1] if first else 0
        # The chunk ends at the last basket keeping it under _CHUNK_PAIRS (at least one basket).
        last = max(int(np.searchsorted(cumulative, done + _CHUNK_PAIRS, side="right")), first + 1)
        lo = starts[first]
        hi = starts[last] if last < starts.size else index.size
        first = last
        count = after[lo:hi]
        total = int(count.sum())
        if total == 0:
            continue
        left = np.repeat(np.arange(lo, hi, dtype=np.int64), count)
        right = np.arange(1, total + 1, dtype=np.int64)
        right -= np.repeat(np.cumsum(count) - count, count)
        right += left
        keys = dense[left]
        del left
        keys *= key_type(n_products)
        keys += dense[right]
        del right
        # np.unique (a sort) measured several times faster than a Polars group_by on these keys.
        unique, counts = np.unique(keys, return_counts=True)
        del keys
        cuts = np.r_[0, np.searchsorted(unique, bounds), unique.size]
        for r, (keys_of, counts_of) in enumerate(ranges):
            keys_of.append(unique[cuts[r] : cuts[r + 1]])
            counts_of.append(counts[cuts[r] : cuts[r + 1]].astype(np.uint32))
    out_keys: list[np.ndarray] = []
    out_counts: list[np.ndarray] = []
    for keys_of, counts_of in ranges:
        if not keys_of:  # no basket holds two counted products
            unique, counts = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        elif len(keys_of) == 1:
            unique, counts = keys_of[0], counts_of[0].astype(np.int64)
        else:
            unique, inverse = np.unique(np.concatenate(keys_of), return_inverse=True)
            counts = np.bincount(inverse, weights=np.concatenate(counts_of), minlength=unique.size).astype(np.int64)
        keys_of.clear()
        counts_of.clear()
        strong = counts >= min_support
        out_keys.append(unique[strong].astype(np.int64))
        out_counts.append(counts[strong])
    return np.concatenate(out_keys), np.concatenate(out_counts)


@dataclass(frozen=True, eq=False)
class Cooccurrence:
    """Per product, its related products best first, as flat arrays (CSR layout).

    ``related[offsets[i]:offsets[i + 1]]`` (and the same slice of ``pmi``, ``lift``, ``support``)
    is the list of ``products[i]``: PMI descending, then product id ascending. ``products`` is
    sorted and holds only products with a non-empty list. ``n_orders`` is the number of baskets
    counted (the sample size when sampled); the other fields are the parameters it was built with.
    """

    products: np.ndarray  # uint32
    offsets: np.ndarray  # int64, len(products) + 1
    related: np.ndarray  # uint32
    pmi: np.ndarray  # float32
    lift: np.ndarray  # float32
    support: np.ndarray  # uint32
    n_orders: int
    min_support: int = 5
    top: int = 50
    max_orders: int | None = 300_000
    seed: int = 0

    @classmethod
    def of(
        cls,
        lines: pl.DataFrame,
        *,
        min_support: int = 5,
        top: int = 50,
        max_orders: int | None = 300_000,
        seed: int = 0,
    ) -> Self:
        """Count the co-occurrences of ``lines`` (S.USER, S.ORDER_NUMBER, S.PRODUCT; a basket is one
        (user, order number)).

        Keeps pairs with support ≥ ``min_support`` and PMI > 0, at most ``top`` per product. With
        more than ``max_orders`` baskets, a uniform sample of ``max_orders`` baskets drawn with
        ``seed`` is counted (None: always every basket).
        """
        if min_support < 1 or top < 1 or (max_orders is not None and max_orders < 1):
            raise ValueError(f"min_support, top and max_orders must be ≥ 1; got {min_support}, {top}, {max_orders}")
        params: dict[str, Any] = {"min_support": min_support, "top": top, "max_orders": max_orders, "seed": seed}
        basket, product = _baskets(lines)
        index, product, n_orders = _sample(basket, product, max_orders, seed)
        ids, dense, n_of = np.unique(product, return_inverse=True, return_counts=True)
        # A product in fewer than min_support baskets cannot reach that support with any partner:
        # the pairs are counted among the others only, renumbered 0..n-1 (still in id order).
        frequent = n_of >= min_support
        ids, n_of = ids[frequent], n_of[frequent]
        on_frequent = frequent[dense]
        renumbered = (np.cumsum(frequent) - 1)[dense[on_frequent]]
        pair_keys, n_ab = _pair_counts(index[on_frequent], renumbered, ids.size, min_support)
        a, b = np.divmod(pair_keys, np.int64(ids.size))
        lift64 = n_ab.astype(np.float64) * n_orders / (n_of[a].astype(np.float64) * n_of[b])
        pmi = np.log(lift64).astype(np.float32)
        positive = pmi > 0
        a, b, n_ab, pmi, lift = a[positive], b[positive], n_ab[positive], pmi[positive], lift64[positive]

        # Both directions, then each source's list best first and cut at `top`.
        source = ids[np.r_[a, b]]
        target = ids[np.r_[b, a]]
        pmi2 = np.r_[pmi, pmi]
        order = best_first(target, pmi2, groups=source)
        source, target = source[order], target[order]
        products, first, length = np.unique(source, return_index=True, return_counts=True)
        rank = np.arange(source.size) - np.repeat(first, length)
        kept = order[rank < top]
        lengths = np.minimum(length, top)
        return cls(
            products=products.astype(np.uint32),
            offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
            related=target[rank < top].astype(np.uint32),
            pmi=pmi2[kept].astype(np.float32),
            lift=np.r_[lift, lift][kept].astype(np.float32),
            support=np.r_[n_ab, n_ab][kept].astype(np.uint32),
            n_orders=n_orders,
            **params,
        )

    def _slot(self, product: int) -> int | None:
        """Index of ``product`` in ``products``, None when it has no list."""
        i = int(np.searchsorted(self.products, product))
        return i if i < self.products.size and int(self.products[i]) == product else None

    def related_to(self, product: int, k: int = 10) -> pl.DataFrame:
        """The ``k`` best related products of ``product``: S.PRODUCT, PMI, LIFT, SUPPORT (empty when unknown)."""
        i = self._slot(product)
        if i is None or k < 1:
            return pl.DataFrame(schema=_RELATED_SCHEMA)
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        hi = min(hi, lo + k)
        return pl.DataFrame(
            {
                S.PRODUCT: np.asarray(self.related[lo:hi]),
                PMI: np.asarray(self.pmi[lo:hi]),
                LIFT: np.asarray(self.lift[lo:hi]),
                SUPPORT: np.asarray(self.support[lo:hi]),
            },
            schema=_RELATED_SCHEMA,
        )

    def cart_scores(self, cart: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Mean PMI between the cart's distinct products and each candidate (float32, one per candidate).

        A pair absent from the stored lists (PMI ≤ 0, rare, or beyond the top) counts 0, and so do
        cart products unknown to the table; a candidate that is in the cart scores 0. Only the cart
        products' own lists are read, so a pair cut from the cart product's list but kept in the
        candidate's list also counts 0. An empty cart gives zeros.
        """
        candidates = np.asarray(candidates)
        cart = np.unique(np.asarray(cart))
        out = np.zeros(candidates.size, dtype=np.float32)
        if cart.size == 0 or candidates.size == 0:
            return out
        slot = np.searchsorted(self.products, cart)
        inside = slot < self.products.size
        slot = slot[inside]
        slot = slot[self.products[slot] == cart[inside]]
        if slot.size:
            lo, hi = self.offsets[slot], self.offsets[slot + 1]
            if slot.size == 1:
                take = np.arange(lo[0], hi[0])
            else:
                length = hi - lo
                take = np.repeat(lo - np.r_[0, np.cumsum(length)[:-1]], length) + np.arange(int(length.sum()))
            rel = self.related[take]
            order = np.argsort(candidates, kind="stable")
            ordered = candidates[order]
            at = np.searchsorted(ordered, rel)
            hit = at < ordered.size
            hit[hit] = ordered[at[hit]] == rel[hit]
            # Sums per first occurrence of each candidate id in sorted order; duplicates read the same slot.
            sums = np.bincount(at[hit], weights=self.pmi[take][hit], minlength=ordered.size)
            out = (sums[np.searchsorted(ordered, candidates)] / cart.size).astype(np.float32)
        out[np.isin(candidates, cart)] = 0.0
        return out

    def save(self, folder: Path) -> None:
        """Write the arrays as ``<name>.npy``, n_orders and the parameters as ``cooccurrence.json``, in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(self, name), dtype=_DTYPES[name]))
        write_json(
            folder / PARAMETERS_JSON,
            {
                "format_version": FORMAT_VERSION,
                "n_orders": self.n_orders,
                "min_support": self.min_support,
                "top": self.top,
                "max_orders": self.max_orders,
                "seed": self.seed,
            },
        )

    @classmethod
    def load(cls, folder: Path) -> Self:
        """Read a table written by :meth:`save`; the arrays are memory-mapped read-only."""
        params = read_json(folder / PARAMETERS_JSON)
        if params.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{folder}: co-occurrence format {params.get('format_version')}, expected {FORMAT_VERSION}")
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        for name, array in arrays.items():
            if array.dtype != _DTYPES[name]:
                raise DataError(f"{folder / f'{name}.npy'}: dtype {array.dtype}, expected {np.dtype(_DTYPES[name])}")
        return cls(
            **arrays,
            n_orders=int(params["n_orders"]),
            min_support=int(params["min_support"]),
            top=int(params["top"]),
            max_orders=None if params["max_orders"] is None else int(params["max_orders"]),
            seed=int(params["seed"]),
        )
