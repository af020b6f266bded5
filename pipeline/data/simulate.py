"""The per-user simulation of the synthetic generator: one chunk of users over all their orders.

:func:`simulate_chunk` implements the *Users*, *Staples*, *Exploration* and *Bookkeeping* parts of the
generative story told in :mod:`basketcast.pipeline.data.generate`: it draws each user's parameters and taste, fills
the initial staple slots, then loops over the order position ``t`` for all users still active at ``t``
(users sorted by number of orders, so they are a prefix), and finally numbers the orders, sets the eval
sets and the ``reordered`` and ``add_to_cart_order`` columns. All draws come from one generator in a fixed
order, so the same ``(rng state, catalog, config, n)`` gives the same chunk. A config with a shift changes the
baskets of each user's last days before the bookkeeping (*Shift*), with draws from a generator of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import numpy as np
from numpy.typing import NDArray

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.catalogue import DEPARTMENT_NAMES, Catalog, offset_cdf, sample_offset
from basketcast.pipeline.data.generator_config import GeneratorConfig

__all__ = ["ChunkResult", "simulate_chunk"]

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]
Bool = NDArray[np.bool_]

# Real marginals (share of orders) of order_dow and order_hour_of_day, and the same as probabilities.
_DOW_SHARES: Final = (0.193, 0.174, 0.130, 0.121, 0.117, 0.130, 0.138)
# fmt: off
_HOUR_SHARES: Final = (
    0.0066, 0.0035, 0.0021, 0.0016, 0.0016, 0.0028, 0.0090, 0.0280, 0.0530, 0.0760, 0.0850, 0.0850,
    0.0820, 0.0820, 0.0830, 0.0820, 0.0780, 0.0640, 0.0500, 0.0390, 0.0300, 0.0240, 0.0190, 0.0120,
)
# fmt: on
_DOW_P: Final = np.array(_DOW_SHARES) / sum(_DOW_SHARES)
_HOUR_P: Final = np.array(_HOUR_SHARES) / sum(_HOUR_SHARES)

# codes of the eval_set Enum (its physical representation)
_PRIOR_CODE: Final = S.EVAL_SETS.index(S.PRIOR)
_TRAIN_CODE: Final = S.EVAL_SETS.index(S.TRAIN)
_TEST_CODE: Final = S.EVAL_SETS.index(S.TEST)
_EXPLORE_CART_OFFSET: Final = 384  # cart-order priority bonus of explored items (out of 1024)


@dataclass
class ChunkResult:
    """One chunk of users: orders in (user, order_number) order and their lines."""

    user_id: NDArray[np.uint32]  # per order
    order_number: NDArray[np.uint16]
    eval_code: U8  # index into schema.EVAL_SETS
    dow: U8
    hour: U8
    days: U8  # 0 where order_number == 1 (nulled later)
    line_order: I64  # chunk-local order index of each line
    line_product: NDArray[np.uint32]
    line_cart: NDArray[np.uint16]
    line_reordered: U8


@dataclass(frozen=True)
class _Users:
    """Per-user parameters of a chunk, each of shape ``(n,)``; ``row`` is the user's chunk-local index."""

    row: I64
    n_orders: I64  # orders of the user, the train/test one included
    gap_mean: F64  # typical gap between orders, in days
    weekly: F64  # chance that a gap is snapped to whole weeks
    capacity: I64  # staple slots the user keeps filled (1..max_staples)
    explore_rate: F64  # mean explored products per order (before the trip factor)
    pref_dow: I64  # preferred day of week, 0..6
    dow_loyalty: F64  # chance to shop on pref_dow
    pref_hour: I64  # preferred hour, 0..23
    is_train: Bool  # the last order is train (else test)


@dataclass
class _Staples:
    """Staple slots, shape ``(n, max_staples)``, rows as the sorted :class:`_Users`; updated in place.

    ``prod`` is the catalog index (-1: free slot), ``q`` the base buy probability, ``day`` and ``order`` the
    day (since the user's first order) and 0-based order position of the last purchase.
    """

    prod: I64
    q: F32
    day: F32
    order: F32


@dataclass
class _Orders:
    """Per-order timing (shape ``(n_total,)``, orders of sorted user rows contiguous) and the raw lines.

    ``days`` is the gap in days (0 for first orders). Each line list holds one array per order position:
    chunk-local order index, catalog product index and whether the product was explored (not a staple).
    """

    dow: U8
    hour: U8
    days: U8
    line_order: list[I64]
    line_prod: list[I64]
    line_explore: list[Bool]


def _rank_within(sorted_groups: I64) -> I64:
    """0-based position of each element within its run of equal values (input sorted)."""
    n = len(sorted_groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], sorted_groups[1:] != sorted_groups[:-1])))
    run_len = np.diff(np.concatenate((starts, [n])))
    return np.arange(n) - np.repeat(starts, run_len)


def _draw_users(rng: np.random.Generator, cfg: GeneratorConfig, n: int) -> _Users:
    """Draw the parameters of ``n`` users (rows in user order): orders, gaps, basket split, dow and hour."""
    z = rng.standard_normal(n)
    rho = cfg.frequency_orders_corr
    shape = cfg.extra_orders_shape
    extra = rng.negative_binomial(shape, shape / (shape + cfg.extra_orders_mean), n)
    n_orders_draw = np.minimum(cfg.min_orders + extra, cfg.max_orders)
    # Gaussian copula: users with high z get many orders and short gaps
    z_orders = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    n_orders = np.empty(n, dtype=np.int64)
    n_orders[np.argsort(-z_orders, kind="stable")] = np.sort(n_orders_draw)[::-1]
    z_gap = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    gap_mean = cfg.gap_median * np.exp(-cfg.gap_sigma * z_gap)
    weekly = rng.beta(cfg.weekly_habit_a, cfg.weekly_habit_b, n)

    basket = cfg.basket_median * rng.lognormal(0.0, cfg.basket_sigma, n)
    loyalty = rng.beta(cfg.loyalty_a, cfg.loyalty_b, n)
    capacity = np.clip(np.rint(loyalty * basket / cfg.staple_effective_prob), 1, cfg.max_staples).astype(np.int64)
    return _Users(
        row=np.arange(n, dtype=np.int64),
        n_orders=n_orders,
        gap_mean=gap_mean,
        weekly=weekly,
        capacity=capacity,
        explore_rate=(1 - loyalty) * basket,
        pref_dow=rng.choice(7, size=n, p=_DOW_P),
        dow_loyalty=rng.beta(cfg.dow_loyalty_a, cfg.dow_loyalty_b, n),
        pref_hour=rng.choice(24, size=n, p=_HOUR_P),
        is_train=rng.random(n) < cfg.train_share,
    )


def _draw_taste(rng: np.random.Generator, cat: Catalog, cfg: GeneratorConfig, n: int) -> tuple[F64, F64]:
    """Draw the aisle taste of ``n`` users (rows in user order) as two :func:`offset_cdf` of length ``n x A``.

    Taste is a Dirichlet over departments and within each a Dirichlet over its aisles (``A`` aisles in all).
    Row ``r`` is group ``r``: the first CDF (taste) samples explored aisles, the second (taste tilted by the
    department reorder odds) the aisles of staples.
    """
    A = cat.n_aisles
    n_dept = len(DEPARTMENT_NAMES)
    dept_prior = np.bincount(cat.aisle_dept, weights=cat.aisle_prior, minlength=n_dept)
    dept_taste = rng.gamma(cfg.department_concentration * dept_prior, 1.0, (n, n_dept))
    dept_taste /= np.maximum(dept_taste.sum(1, keepdims=True), 1e-300)
    within_prior = cat.aisle_prior / dept_prior[cat.aisle_dept]
    aisle_gamma = rng.gamma(cfg.aisle_concentration * within_prior, 1.0, (n, A))
    dept_first_aisle = np.searchsorted(cat.aisle_dept, np.arange(n_dept))  # aisles grouped by dept
    dept_sums = np.add.reduceat(aisle_gamma, dept_first_aisle, axis=1)
    aisle_taste = aisle_gamma / np.maximum(dept_sums[:, cat.aisle_dept], 1e-300) * dept_taste[:, cat.aisle_dept]
    del aisle_gamma, dept_sums
    row_starts = np.arange(n + 1, dtype=np.int64) * A
    explore_aisle_cdf = offset_cdf(aisle_taste.ravel() + 1e-12, row_starts)
    staple_w = aisle_taste * cat.dept_reorder_odds[cat.aisle_dept]
    return explore_aisle_cdf, offset_cdf(staple_w.ravel() + 1e-12, row_starts)


def _sort_users(users: _Users) -> _Users:
    """The same users sorted by number of orders (descending, stable): the users active at a step are a prefix."""
    perm = np.argsort(-users.n_orders, kind="stable")
    return _Users(**{f.name: getattr(users, f.name)[perm] for f in fields(users)})


def _init_staples(
    rng: np.random.Generator, cat: Catalog, cfg: GeneratorConfig, users: _Users, staple_aisle_cdf: F64
) -> _Staples:
    """Fill ``initial_fill`` of each user's capacity (at least 1 slot, duplicates dropped) before order 1.

    Aisles come from ``staple_aisle_cdf`` (grouped by ``users.row``), products from the staple popularity;
    each staple gets a Beta ``q`` and a last purchase 0-14 days before the first order.
    """
    A = cat.n_aisles
    n, n_slots, n_prod = len(users.row), cfg.max_staples, cat.product_ids.size
    staples = _Staples(
        prod=np.full((n, n_slots), -1, dtype=np.int64),
        q=np.zeros((n, n_slots), dtype=np.float32),
        day=np.zeros((n, n_slots), dtype=np.float32),
        order=np.zeros((n, n_slots), dtype=np.float32),
    )
    n_init = np.maximum(np.rint(users.capacity * cfg.initial_fill).astype(np.int64), 1)
    rows = np.repeat(np.arange(n), n_init)
    group = users.row[rows]
    aisle = sample_offset(staple_aisle_cdf, group, rng.random(len(rows))) - group * A
    prod = sample_offset(cat.staple_cdf, aisle, rng.random(len(rows)))
    key = np.unique(rows * n_prod + prod)
    rows, prod = key // n_prod, key % n_prod
    slot = _rank_within(rows)
    staples.prod[rows, slot] = prod
    staples.q[rows, slot] = rng.beta(cfg.staple_prob_a, cfg.staple_prob_b, len(rows))
    staples.day[rows, slot] = -rng.uniform(0, 14, len(rows))  # "bought" shortly before the first order
    staples.order[rows, slot] = -1
    return staples


def _draw_when(rng: np.random.Generator, cfg: GeneratorConfig, users: _Users, t: int, a: int) -> tuple[F64, I64, F64]:
    """Gap (days, 0 at ``t == 0``), day of week and hour of order ``t`` (0-based) of the ``a`` first users.

    Gaps are Gamma around the user's typical gap, snapped to whole weeks with the user's weekly chance,
    rounded and capped at ``max_gap``; dow and hour are the preferred ones or drawn from the real marginals.
    """
    gap = np.zeros(a)
    if t > 0:
        g = rng.gamma(cfg.gap_shape, users.gap_mean[:a] / cfg.gap_shape)
        snap = rng.random(a) < users.weekly[:a]
        g = np.where(snap, 7 * np.maximum(np.rint(g / 7), 1), np.rint(g))
        gap = np.minimum(g, cfg.max_gap)
    dow = np.where(rng.random(a) < users.dow_loyalty[:a], users.pref_dow[:a], rng.choice(7, a, p=_DOW_P))
    near = np.clip(np.rint(users.pref_hour[:a] + rng.normal(0, cfg.hour_spread, a)), 0, 23)
    hour = np.where(rng.random(a) < cfg.hour_loyalty, near, rng.choice(24, a, p=_HOUR_P))
    return gap, dow, hour


def _draw_staple_buys(
    rng: np.random.Generator, cfg: GeneratorConfig, staples: _Staples, day: F64, t: int, a: int
) -> tuple[F32, Bool]:
    """Trip factor (shape ``(a,)``) and staple purchases (``(a, max_staples)``) of order ``t`` of ``a`` users.

    A filled slot is bought with probability ``min(q x trip x recency, max_buy_prob)``; ``day`` (shape
    ``(n,)``) is the day of the current order of each user.
    """
    floor = cfg.recency_floor
    trip = rng.gamma(cfg.trip_shape, 1 / cfg.trip_shape, a).astype(np.float32)
    alive = staples.prod[:a] >= 0
    since_days = day[:a, None].astype(np.float32) - staples.day[:a]
    since_orders = np.float32(t) - staples.order[:a]
    decay = floor + (1 - floor) * np.exp(
        -since_days / np.float32(cfg.recency_days) - (since_orders - 1) / np.float32(cfg.recency_orders)
    )
    p = np.minimum(staples.q[:a] * decay * trip[:, None], np.float32(cfg.max_buy_prob))
    return trip, alive & (rng.random((a, cfg.max_staples), dtype=np.float32) < p)


def _draw_exploration(
    rng: np.random.Generator, cat: Catalog, users: _Users, explore_aisle_cdf: F64, sp: I64, trip: F32, buy: Bool
) -> tuple[I64, I64]:
    """Explored products of the current order of the ``a = len(trip)`` first users: (row, catalog index).

    The count is Poisson(explore_rate x trip), at least 1 when no staple is bought; aisle from the user's
    taste, product from the aisle's popularity. An explored staple (``sp``: the ``(a, max_staples)`` slots)
    sets ``buy`` instead (in place). The result is distinct per user and sorted by row.
    """
    A, n_prod = cat.n_aisles, cat.product_ids.size
    n_exp = rng.poisson(users.explore_rate[: len(trip)] * trip)
    n_exp += (n_exp == 0) & ~buy.any(axis=1)
    e_row = np.repeat(np.arange(len(trip)), n_exp)
    group = users.row[e_row]
    e_aisle = sample_offset(explore_aisle_cdf, group, rng.random(len(e_row))) - group * A
    e_prod = sample_offset(cat.explore_cdf, e_aisle, rng.random(len(e_row)))
    # an explored product that is one of the user's staples counts as buying that staple
    hit = sp[e_row] == e_prod[:, None]
    is_staple = hit.any(axis=1)
    buy[e_row[is_staple], hit[is_staple].argmax(axis=1)] = True
    e_row, e_prod = e_row[~is_staple], e_prod[~is_staple]
    key = np.unique(e_row * n_prod + e_prod)  # distinct within the order, sorted by row
    return key // n_prod, key % n_prod


def _retire_and_adopt(
    rng: np.random.Generator,
    cat: Catalog,
    cfg: GeneratorConfig,
    staples: _Staples,
    capacity: I64,
    day: F64,
    t: int,
    explored: tuple[I64, I64],
) -> None:
    """After order ``t`` of the ``a = len(capacity)`` first users, retire staples and adopt explored products.

    Each filled slot is freed with ``retire_prob``; an ``explored`` (row, catalog index) product becomes a
    staple with ``adopt_prob x department reorder odds`` if the user has room under ``capacity``.
    """
    a, n_slots = len(capacity), cfg.max_staples
    sp = staples.prod[:a]
    retire = (sp >= 0) & (rng.random((a, n_slots), dtype=np.float32) < cfg.retire_prob)
    sp[retire] = -1
    e_row, e_prod = explored
    adopt = rng.random(len(e_row)) < cfg.adopt_prob * cat.dept_reorder_odds[cat.product_dept[e_prod]]
    c_row, c_prod = e_row[adopt], e_prod[adopt]
    if not len(c_row):
        return
    free = sp < 0
    room = np.maximum(capacity - (n_slots - free.sum(axis=1)), 0)
    c_rank = _rank_within(c_row)
    ok = c_rank < room[c_row]
    c_row, c_prod, c_rank = c_row[ok], c_prod[ok], c_rank[ok]
    if not len(c_row):
        return
    rows_u, pos = np.unique(c_row, return_inverse=True)
    free_order = np.argsort(~free[rows_u], axis=1, kind="stable")
    c_slot = free_order[pos, c_rank]
    sp[c_row, c_slot] = c_prod
    staples.q[c_row, c_slot] = rng.beta(cfg.staple_prob_a, cfg.staple_prob_b, len(c_row))
    staples.day[c_row, c_slot] = day[c_row]
    staples.order[c_row, c_slot] = t


def _simulate_orders(
    rng: np.random.Generator,
    cat: Catalog,
    cfg: GeneratorConfig,
    users: _Users,
    order_start: I64,
    explore_aisle_cdf: F64,
    staples: _Staples,
) -> _Orders:
    """Simulate every order of the sorted ``users``, one order position ``t`` at a time for all active users.

    ``order_start`` (shape ``(n + 1,)``) is the first chunk-local order index of each user (then the total).
    """
    n_total = int(order_start[-1])
    active_at = np.searchsorted(-users.n_orders, -np.arange(1, cfg.max_orders + 1), side="right")  # t -> count
    orders = _Orders(
        dow=np.empty(n_total, dtype=np.uint8),
        hour=np.empty(n_total, dtype=np.uint8),
        days=np.zeros(n_total, dtype=np.uint8),
        line_order=[],
        line_prod=[],
        line_explore=[],
    )
    day = np.zeros(len(users.row), dtype=np.float64)
    for t in range(int(users.n_orders[0])):
        a = int(active_at[t])
        oidx = order_start[:a] + t
        gap, dow, hour = _draw_when(rng, cfg, users, t, a)
        day[:a] += gap
        orders.days[oidx] = gap.astype(np.uint8)
        orders.dow[oidx] = dow
        orders.hour[oidx] = hour

        trip, buy = _draw_staple_buys(rng, cfg, staples, day, t, a)
        e_row, e_prod = _draw_exploration(rng, cat, users, explore_aisle_cdf, staples.prod[:a], trip, buy)
        s_row, s_slot = np.nonzero(buy)
        orders.line_order.append(np.concatenate((oidx[s_row], oidx[e_row])))
        orders.line_prod.append(np.concatenate((staples.prod[s_row, s_slot], e_prod)))
        orders.line_explore.append(np.concatenate((np.zeros(len(s_row), bool), np.ones(len(e_row), bool))))
        staples.day[:a][buy] = day[s_row]  # boolean assignment walks buy in np.nonzero order
        staples.order[:a][buy] = t

        _retire_and_adopt(rng, cat, cfg, staples, users.capacity[:a], day, t, (e_row, e_prod))
    return orders


def _reordered_flags(line_order: I64, line_prod: I64, user_row: I64, n_total: int) -> U8:
    """1 where the line's user bought its product in an earlier order, else 0 (one entry per line).

    ``line_order`` is the chunk-local order index of each line, ``line_prod`` its catalog index and
    ``user_row[order]`` the user of each order; a user's orders are contiguous and chronological.
    """
    by_prod = np.argsort(line_prod * n_total + line_order, kind="stable")
    sp_prod = line_prod[by_prod]
    sp_user = user_row[line_order[by_prod]]
    first = np.ones(len(by_prod), dtype=bool)
    first[1:] = (sp_prod[1:] != sp_prod[:-1]) | (sp_user[1:] != sp_user[:-1])
    reordered = np.empty(len(by_prod), dtype=np.uint8)
    reordered[by_prod] = ~first
    return reordered


def _cart_positions(rng: np.random.Generator, line_order: I64, line_explore: Bool) -> NDArray[np.uint16]:
    """``add_to_cart_order`` (1..n within each order) of each line: random, staples tending to come first."""
    priority = rng.integers(0, 1024 - _EXPLORE_CART_OFFSET, len(line_order)) + _EXPLORE_CART_OFFSET * line_explore
    by_cart = np.argsort(line_order * 1024 + priority, kind="stable")
    cart = np.empty(len(by_cart), dtype=np.uint16)
    cart[by_cart] = (_rank_within(line_order[by_cart]) + 1).astype(np.uint16)
    return cart


def _assemble_chunk(
    rng: np.random.Generator, cat: Catalog, users: _Users, first_user: int, order_start: I64, orders: _Orders
) -> ChunkResult:
    """Number the simulated ``orders`` of the sorted ``users``, set eval sets, drop test lines, flag reorders."""
    n_total = int(order_start[-1])
    user_row = np.repeat(np.arange(len(users.row)), users.n_orders)
    order_number = (np.arange(n_total) - order_start[user_row] + 1).astype(np.uint16)
    is_last = order_number == users.n_orders[user_row]
    eval_code = np.where(is_last, np.where(users.is_train[user_row], _TRAIN_CODE, _TEST_CODE), _PRIOR_CODE)
    eval_code = eval_code.astype(np.uint8)

    line_order = np.concatenate(orders.line_order)
    line_prod = np.concatenate(orders.line_prod)
    line_explore = np.concatenate(orders.line_explore)
    keep = eval_code[line_order] != _TEST_CODE  # no lines for test orders
    line_order, line_prod, line_explore = line_order[keep], line_prod[keep], line_explore[keep]
    reordered = _reordered_flags(line_order, line_prod, user_row, n_total)
    return ChunkResult(
        user_id=(first_user + users.row[user_row]).astype(np.uint32),
        order_number=order_number,
        eval_code=eval_code,
        dow=orders.dow,
        hour=orders.hour,
        days=orders.days,
        line_order=line_order,
        line_product=cat.product_ids[line_prod],
        line_cart=_cart_positions(rng, line_order, line_explore),
        line_reordered=reordered,
    )


def _shift_orders(
    rng: np.random.Generator,
    cat: Catalog,
    cfg: GeneratorConfig,
    users: _Users,
    order_start: I64,
    orders: _Orders,
    explore_aisle_cdf: F64,
) -> _Orders:
    """The *Shift* of the generative story: the orders of each user's last ``shift_days`` days of history
    (``last day - order day < shift_days``) get ``shift_basket_size`` times their products and a
    ``shift_department_share`` of them moved to ``shift_department``.

    A bigger basket adds Poisson((size - 1) x lines) explored products (aisle from the user's taste, product
    from the aisle's popularity); a smaller one drops each line with probability 1 - size (keeping at least
    one). A moved line becomes a product of the department (aisle by the department's own aisle shares,
    product by popularity). Products repeated within an order keep their first line. Timing (days, dow,
    hour) and the staples' dynamics are untouched: only the recorded baskets change. Draws come from
    ``rng`` alone, so the unshifted simulation is unchanged.
    """
    n_total = int(order_start[-1])
    user_row = np.repeat(np.arange(len(users.row)), users.n_orders)
    cum = np.cumsum(orders.days.astype(np.int64))  # a first order's gap is 0
    day = cum - np.repeat(cum[order_start[:-1]], users.n_orders)  # days since the user's first order
    last_day = day[order_start[1:] - 1]
    shifted = last_day[user_row] - day < cfg.shift_days  # per order
    lo = np.concatenate(orders.line_order)
    lp = np.concatenate(orders.line_prod)
    le = np.concatenate(orders.line_explore)
    size = cfg.shift_basket_size
    if size < 1:
        drop = shifted[lo] & (rng.random(lo.size) >= size)
        orders_with_lines, first_line = np.unique(lo, return_index=True)
        emptied = np.bincount(lo[~drop], minlength=n_total)[orders_with_lines] == 0
        drop[first_line[emptied]] = False
        lo, lp, le = lo[~drop], lp[~drop], le[~drop]
    elif size > 1:
        extra = rng.poisson((size - 1) * np.bincount(lo, minlength=n_total)) * shifted
        e_order = np.repeat(np.arange(n_total), extra)
        group = users.row[user_row[e_order]]
        e_aisle = sample_offset(explore_aisle_cdf, group, rng.random(e_order.size)) - group * cat.n_aisles
        e_prod = sample_offset(cat.explore_cdf, e_aisle, rng.random(e_order.size))
        lo, lp, le = (
            np.concatenate((lo, e_order)),
            np.concatenate((lp, e_prod)),
            np.concatenate((le, np.ones_like(e_order, bool))),
        )
    if cfg.shift_department is not None:
        move = shifted[lo] & (rng.random(lo.size) < cfg.shift_department_share)
        aisles = np.flatnonzero(cat.aisle_dept == cfg.shift_department - 1)
        weights = cat.aisle_prior[aisles] / cat.aisle_prior[aisles].sum()
        m_aisle = rng.choice(aisles, size=int(move.sum()), p=weights)
        lp = lp.copy()
        lp[move] = sample_offset(cat.explore_cdf, m_aisle, rng.random(m_aisle.size))
        le = le | move
    _, first = np.unique(lo * cat.product_ids.size + lp, return_index=True)
    keep = np.sort(first)
    return _Orders(
        dow=orders.dow,
        hour=orders.hour,
        days=orders.days,
        line_order=[lo[keep]],
        line_prod=[lp[keep]],
        line_explore=[le[keep]],
    )


def simulate_chunk(
    rng: np.random.Generator,
    cat: Catalog,
    cfg: GeneratorConfig,
    first_user: int,
    n: int,
    shift_rng: np.random.Generator | None = None,
) -> ChunkResult:
    """Simulate users ``first_user .. first_user + n - 1`` (1-based ids) over all their orders.

    With ``cfg.shifted``, the users' last orders are then shifted with draws from ``shift_rng``
    (:func:`_shift_orders`); without it the chunk is exactly the unshifted one.
    """
    users = _draw_users(rng, cfg, n)
    explore_aisle_cdf, staple_aisle_cdf = _draw_taste(rng, cat, cfg, n)
    users = _sort_users(users)
    staples = _init_staples(rng, cat, cfg, users, staple_aisle_cdf)
    order_start = np.concatenate(([0], np.cumsum(users.n_orders)))
    orders = _simulate_orders(rng, cat, cfg, users, order_start, explore_aisle_cdf, staples)
    if cfg.shifted:
        if shift_rng is None:
            raise ValueError("a shifted GeneratorConfig needs shift_rng")
        orders = _shift_orders(shift_rng, cat, cfg, users, order_start, orders, explore_aisle_cdf)
    return _assemble_chunk(rng, cat, users, first_user, order_start, orders)
