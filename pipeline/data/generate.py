"""Synthetic grocery orders in the canonical (Instacart Kaggle) layout.

:func:`generate` returns a :class:`~basketcast.pipeline.data.storage.Dataset` whose tables have exactly the columns and
dtypes of :data:`basketcast.pipeline.data.schema.TABLE_SCHEMAS`: every user's orders are ``prior`` except the last,
which is ``train`` (about 64 %) or ``test``; ``order_products`` holds lines for prior and train orders
only (none for test orders), each carrying the eval set of its order. The defaults of
:class:`GeneratorConfig` are tuned so that the headline figures land near the real data (basket
size ~10, reorder ratio of prior lines ~0.59, median days between orders 7, ~16.6 orders per user).

Generative story
----------------
*Catalog.* The 21 real Instacart departments hold 134 aisles (plausible names, listed per
department from the most to the least popular). Products (49,688 by default) are split over
departments in the real proportions (personal care and snacks have the most products, bulk the
fewest) and over a department's aisles at random. A product's global purchase share is
``department share x aisle share x product share``: department shares are the real line shares
(produce ~29 %, dairy eggs ~17 %, ..., bulk 0.1 %), aisles within a department and products within an
aisle follow Zipf laws (with a little log-normal noise). Product names combine a modifier, a
variant and an aisle noun ("Organic Whole Milk"), numbered when repeated; product ids (and aisle
ids) are alphabetical by name, as in the real data, so an id says nothing about popularity.

*Users.* Each user draws

- a number of orders ``4 + NegBin`` capped at 100 (heavy right tail: mean ~16.6, median ~10) and a
  typical gap between orders (log-normal, median ~12 days); a Gaussian copula makes users with many
  orders shop more often;
- a weekly habit: with a per-user probability a gap is snapped to a multiple of 7 days, giving the
  spikes at 7, 14, 21, 28; gaps are capped at 30 ("30 or more"), which piles infrequent shoppers at 30;
- a preferred day of week and hour (drawn from the real marginals: most orders on days 0 and 1, hours
  9-16, few at night) and how faithfully the user keeps them;
- a basket size (log-normal, long right tail) and a loyalty share that splits it between staples and
  exploration;
- a taste: a Dirichlet over departments around the global shares, and within each department a
  Dirichlet over its aisles.

*Staples.* A user keeps a personal set of favourite products (at most ``max_staples`` slots; the
capacity grows with the user's basket size and loyalty). It starts partly filled with products drawn
from the user's aisle taste, tilted towards departments people reorder (dairy, produce, beverages) and
towards globally popular products (popularity raised to ``staple_popularity_power``). Each staple has
its own base probability ``q`` (Beta, "high") of being bought in an order; the probability actually
used is ``q x trip x recency`` where ``trip`` is a per-order Gamma factor (big and small shops) and
``recency = floor + (1 - floor) exp(-days_since_last / recency_days - (orders_since_last - 1) /
recency_orders)``, so a staple not bought for a while is less likely to come back: recency matters on
top of frequency. Every order each staple retires with a small probability (interests fade) and
freed slots are refilled by adoption: a newly explored product becomes a staple with probability
``adopt_prob x department reorder propensity``. So the staple set drifts over time, and a
recency-weighted purchase frequency predicts the next basket better than a plain count.

*Exploration.* Besides staples an order holds a Poisson number of explored products (rate = the
user's exploration share of the basket x the trip factor): an aisle from the user's taste, then a
product from that aisle's popularity. An explored product the user already bought is a reorder too.
An order that would be empty gets one explored product.

*Bookkeeping.* Within an order the products are distinct; ``add_to_cart_order`` runs 1..n with
staples tending to be added first; ``reordered`` is 1 exactly when the user bought the product in an
earlier order; ``order_id`` is a random permutation of 1..n_orders (not sorted by user).

*Shift* (off by default, for testing drift monitoring). With ``shift_days`` > 0, the orders in each
user's last ``shift_days`` days of history (the last order included) are changed after the simulation:
``shift_basket_size`` times as many products (explored ones added, or lines dropped) and a
``shift_department_share`` of their products replaced by products of ``shift_department`` (aisles by
the department's own shares, products by popularity). The timing of the orders and everything before
the window are unchanged; ``reordered`` and ``add_to_cart_order`` are computed afterwards as usual. The
shift draws from its own generator (the root seed's fourth child), so the unshifted data of a seed is
bit for bit what it was without the option, and the same shift of a seed changes the same users'
orders. ``catalog_seed`` draws the catalog from another seed than the users: data of other shoppers
(``seed``) of the same shop (``catalog_seed``), as a model trained on the first data expects.

Everything is vectorized: users are simulated in chunks of ``chunk_users``, looping over the order
position (1..100) for all users of a chunk at once. Same ``(n_users, seed, config)`` gives identical
frames. The catalog is built by :mod:`basketcast.pipeline.data.catalogue`, a chunk of users is simulated by
:mod:`basketcast.pipeline.data.simulate`, the knobs (:class:`GeneratorConfig`) are in
:mod:`basketcast.pipeline.data.generator_config`; this module assembles the tables.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.typing import NDArray

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.catalogue import DEPARTMENT_NAMES, build_catalog
from basketcast.pipeline.data.generator_config import GeneratorConfig
from basketcast.pipeline.data.simulate import ChunkResult, simulate_chunk
from basketcast.pipeline.data.storage import Dataset

__all__ = ["DEPARTMENT_NAMES", "GeneratorConfig", "generate"]


def _orders_frame(chunks: list[ChunkResult], order_ids: NDArray[np.uint32]) -> pl.DataFrame:
    """The ``orders`` table of the concatenated ``chunks`` (``order_ids``: one per order, chunk order)."""

    def cat_orders(attr: str) -> NDArray[np.generic]:
        return np.concatenate([getattr(ch, attr) for ch in chunks])

    orders = pl.DataFrame(
        {
            S.ORDER: order_ids,
            S.USER: cat_orders("user_id"),
            S.EVAL_SET: pl.Series(cat_orders("eval_code")).cat.to(S.EVAL_SET_DTYPE),
            S.ORDER_NUMBER: cat_orders("order_number"),
            S.DOW: cat_orders("dow"),
            S.HOUR: cat_orders("hour"),
            S.DAYS_PRIOR: cat_orders("days"),
        }
    ).with_columns(pl.when(pl.col(S.ORDER_NUMBER) > 1).then(pl.col(S.DAYS_PRIOR)).otherwise(None).alias(S.DAYS_PRIOR))
    return S.conform(S.ORDERS, orders.sort(S.USER, S.ORDER_NUMBER))


def _lines_frame(chunks: list[ChunkResult], order_ids: NDArray[np.uint32]) -> pl.DataFrame:
    """The ``order_products`` table of the concatenated ``chunks`` (``order_ids``: one per order, chunk order)."""
    offsets = np.concatenate(([0], np.cumsum([len(ch.order_number) for ch in chunks])))
    line_order = np.concatenate([ch.line_order + offsets[i] for i, ch in enumerate(chunks)])
    eval_code = np.concatenate([ch.eval_code for ch in chunks])
    lines = pl.DataFrame(
        {
            S.ORDER: order_ids[line_order],
            S.PRODUCT: np.concatenate([ch.line_product for ch in chunks]),
            S.CART_POS: np.concatenate([ch.line_cart for ch in chunks]),
            S.REORDERED: np.concatenate([ch.line_reordered for ch in chunks]),
            S.EVAL_SET: pl.Series(eval_code[line_order]).cat.to(S.EVAL_SET_DTYPE),
        }
    )
    return S.conform(S.ORDER_PRODUCTS, lines.sort(S.ORDER, S.CART_POS))


def generate(
    n_users: int, seed: int, config: GeneratorConfig | None = None, *, catalog_seed: int | None = None
) -> Dataset:
    """Generate a synthetic :class:`Dataset` of ``n_users`` users (ids 1..n_users).

    ``seed`` fixes everything: the same ``(n_users, seed, config, catalog_seed)`` gives identical
    frames. ``catalog_seed`` (default: ``seed``) fixes the catalog alone: two seeds with the same
    catalog seed are other shoppers of the same shop (same product ids, names, aisles and
    popularity). ``config`` defaults to :class:`GeneratorConfig` ``()``. The tables are already in
    the canonical dtypes; orders are sorted by (user_id, order_number), lines by (order_id, cart position).
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    cfg = config if config is not None else GeneratorConfig()
    if cfg.min_orders > cfg.max_orders:
        raise ValueError(f"min_orders {cfg.min_orders} > max_orders {cfg.max_orders}")
    root = np.random.SeedSequence(seed)
    cat_seq, ids_seq, users_seq = root.spawn(3)
    if catalog_seed is not None and catalog_seed != seed:
        cat_seq = np.random.SeedSequence(catalog_seed).spawn(3)[0]  # the catalog that seed would draw
    cat = build_catalog(
        np.random.default_rng(cat_seq),
        n_products=cfg.n_products,
        aisle_zipf=cfg.aisle_zipf,
        product_zipf=cfg.product_zipf,
        popularity_noise=cfg.popularity_noise,
        explore_popularity_power=cfg.explore_popularity_power,
        staple_popularity_power=cfg.staple_popularity_power,
        reorder_propensity_power=cfg.reorder_propensity_power,
    )

    n_chunks = -(-n_users // cfg.chunk_users)
    chunk_seqs = users_seq.spawn(n_chunks)
    # The shift's own generators: the root's fourth child, spawned only when used (it changes no other draw).
    shift_seqs = root.spawn(1)[0].spawn(n_chunks) if cfg.shifted else None
    chunks: list[ChunkResult] = []
    for c in range(n_chunks):
        start = c * cfg.chunk_users
        size = min(cfg.chunk_users, n_users - start)
        shift_rng = np.random.default_rng(shift_seqs[c]) if shift_seqs is not None else None
        chunks.append(simulate_chunk(np.random.default_rng(chunk_seqs[c]), cat, cfg, start + 1, size, shift_rng))

    n_orders_total = sum(len(ch.order_number) for ch in chunks)
    order_ids = (np.random.default_rng(ids_seq).permutation(n_orders_total) + 1).astype(np.uint32)
    return Dataset(
        orders=_orders_frame(chunks, order_ids),
        order_products=_lines_frame(chunks, order_ids),
        products=cat.products,
        aisles=cat.aisles,
        departments=cat.departments,
    )
