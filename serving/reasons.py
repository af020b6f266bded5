"""Why a product is recommended: one short sentence from the candidate row's own feature values.

The reasons read the very numbers the ranker scored (the base row + the request's context
features, ``basketcast.features.build.FEATURE_NAMES``), never a separate recomputation, so a reason can
not contradict the row it explains. They are computed for the returned top-k only.

Rules, first match wins (n = ``up_orders``, N = ``u_orders``):

====  ==========  ==========================================  =============================================
rule  name        when                                        reason
====  ==========  ==========================================  =============================================
1     cart        a cart is given, the product has a          "often bought with <name>": the catalogue name
                  positive PMI with a cart product (the       of the cart product of the highest PMI (ties:
                  table the cart re-rank reads,               the one added first)
                  ``Cooccurrence.cart_scores``) and the
                  re-rank's bonus β × mean PMI is
                  ≥ ``CART_SHARE`` × the served score
2     frequent    n ≥ 2 and n / N ≥ ``FREQUENT_SHARE``        "in <n> of your <N> orders"
3     regular     n ≥ 2 and G ≥ 1                             "you buy this about every <G> days; last time
                                                              <L> days ago"
4     once        n ≥ 1 (any other repeat)                    "you bought this <L> days ago" ("… before"
                                                              when L is unknown)
5     taste       n = 0 and ``ud_orders_share`` ≥             "popular in <department> among shoppers like
                  ``TASTE_SHARE``                             you"
6     explore     n = 0                                       "popular among shoppers like you"
7     cold start  the popular list (an unknown user)          "popular with shoppers" (:data:`POPULAR`)
====  ==========  ==========================================  =============================================

Units and rounding: G = ``up_mean_gap_days`` (days between two purchases of the product,
first to last purchase / (n - 1)) and L = ``up_days_since_last`` (days from the last purchase
to the predicted order: days before the last order + the request's days since the last order,
or the user's usual gap when not given), both rounded half up to whole days; "0 days ago" reads
"today", 1 reads "1 day ago", "every 1 days" reads "every day". The counts n and N cover the
user's whole visible history (every order up to the snapshot's cutoff, plus orders posted since
for fresh rows). Rules 2–6 use the row's features only; rule 1 also needs the cart, the
co-occurrence table and the catalogue's names, which the caller passes in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.model.cooccurrence import Cooccurrence

# The feature values the rules read (names of basketcast.features.build.FEATURE_NAMES; one place here).
UP_ORDERS: Final = "up_orders"  # orders of the user holding the product
U_ORDERS: Final = "u_orders"  # the user's orders
UP_GAP_DAYS: Final = S.UP_MEAN_GAP_DAYS  # mean days between two purchases of the product
UP_DAYS_SINCE_LAST: Final = "up_days_since_last"  # days from the last purchase to the predicted order
UD_ORDERS_SHARE: Final = "ud_orders_share"  # share of the user's orders touching the product's department
INPUTS: Final = (UP_ORDERS, U_ORDERS, UP_GAP_DAYS, UP_DAYS_SINCE_LAST, UD_ORDERS_SHARE)

CART_SHARE: Final = 0.25  # rule 1: the co-occurrence bonus is at least this share of the served score
FREQUENT_SHARE: Final = 0.5  # rule 2: in at least this share of the user's orders
TASTE_SHARE: Final = 0.2  # rule 5: the department is in at least this share of the user's orders

POPULAR: Final = "popular with shoppers"
EXPLORE: Final = "popular among shoppers like you"
RULES: Final = ("cart", "frequent", "regular", "once", "taste", "explore")


def whole_days(x: np.ndarray) -> np.ndarray:
    """Days rounded half up (float; NaN stays NaN)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def _ago(days: float) -> str:
    if days == 0:
        return "today"
    return "1 day ago" if days == 1 else f"{days:.0f} days ago"


def _every(days: float) -> str:
    return "every day" if days == 1 else f"every {days:.0f} days"


def rule_of(values: Mapping[str, np.ndarray], cart_driven: np.ndarray | None = None) -> np.ndarray:
    """The index into :data:`RULES` of every row (rules 1-6 of the module's table).

    ``values`` maps each name in :data:`INPUTS` to n feature values (NaN = missing; a missing
    name counts as all-NaN); ``cart_driven``: n booleans, rule 1's condition (None: no cart).
    """
    n = len(next(iter(values.values()))) if values else 0
    nan = np.full(n, np.nan)

    def get(name: str) -> np.ndarray:
        return np.asarray(values[name], dtype=np.float64) if name in values else nan

    bought, orders = get(UP_ORDERS), get(U_ORDERS)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = bought / orders
    repeat = bought >= 1
    many = bought >= 2
    conditions = [
        np.zeros(n, bool) if cart_driven is None else np.asarray(cart_driven, bool),
        many & (share >= FREQUENT_SHARE),
        many & (whole_days(get(UP_GAP_DAYS)) >= 1),
        repeat,
        ~repeat & (get(UD_ORDERS_SHARE) >= TASTE_SHARE),
    ]
    return np.select(conditions, np.arange(len(conditions)), default=len(conditions)).astype(np.int8)


def explain(
    values: Mapping[str, np.ndarray],
    departments: Sequence[str],
    partners: Sequence[str | None] | None = None,
) -> list[str]:
    """The reason of every row (see the module's rule table).

    Args:
        values: each name in :data:`INPUTS` → n feature values, as the ranker scored them.
        departments: the n products' department names (rule 5).
        partners: per row, the catalogue name of the cart product that drove it (rule 1), None
            where the cart did not (see :func:`cart_driven` and :func:`cart_partners`); None = no cart.
    """
    driven = None if partners is None else np.array([p is not None for p in partners], dtype=bool)
    rules = rule_of(values, driven)
    n = rules.size
    nan = np.full(n, np.nan)
    bought = np.asarray(values.get(UP_ORDERS, nan), dtype=np.float64)
    orders = np.asarray(values.get(U_ORDERS, nan), dtype=np.float64)
    gap = whole_days(values.get(UP_GAP_DAYS, nan))
    since = whole_days(values.get(UP_DAYS_SINCE_LAST, nan))
    out: list[str] = []
    for i, rule in enumerate(rules.tolist()):
        if rule == 0:
            out.append(f"often bought with {partners[i]}")  # type: ignore[index]
        elif rule == 1:
            out.append(f"in {bought[i]:.0f} of your {orders[i]:.0f} orders")
        elif rule == 2:
            last = f"; last time {_ago(since[i])}" if np.isfinite(since[i]) else ""
            out.append(f"you buy this about {_every(gap[i])}{last}")
        elif rule == 3:
            out.append(f"you bought this {_ago(since[i])}" if np.isfinite(since[i]) else "you bought this before")
        elif rule == 4:
            out.append(f"popular in {departments[i]} among shoppers like you")
        else:
            out.append(EXPLORE)
    return out


def cart_driven(bonus: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rule 1's condition: a positive co-occurrence bonus ≥ ``CART_SHARE`` × the served score."""
    bonus = np.asarray(bonus, dtype=np.float64)
    return (bonus > 0) & (bonus >= CART_SHARE * np.asarray(scores, dtype=np.float64))


def cart_partners(related: Cooccurrence, cart: np.ndarray, products: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``products``: the cart product of the highest PMI with it, and that PMI.

    Reads only the cart products' own lists, as ``Cooccurrence.cart_scores`` does (so a product
    has a partner exactly when its cart score is positive). Ties go to the product added to the
    cart first. Returns (uint32 partner ids, 0 = none; float32 PMI, 0 = none).
    """
    products = np.asarray(products, dtype=np.uint32)
    best = np.zeros(products.size, dtype=np.uint32)
    best_pmi = np.zeros(products.size, dtype=np.float32)
    for c in dict.fromkeys(np.asarray(cart, dtype=np.uint32).tolist()):
        slot = int(np.searchsorted(related.products, c))
        if slot >= related.products.size or int(related.products[slot]) != c:
            continue
        lo, hi = int(related.offsets[slot]), int(related.offsets[slot + 1])
        rel, pmi = np.asarray(related.related[lo:hi]), np.asarray(related.pmi[lo:hi])
        at = np.flatnonzero(np.isin(rel, products))
        if not at.size:
            continue
        lookup = dict(zip(rel[at].tolist(), pmi[at].tolist(), strict=True))
        value = np.array([lookup.get(p, 0.0) for p in products.tolist()], dtype=np.float32)
        better = value > best_pmi
        best[better], best_pmi[better] = c, value[better]
    in_cart = np.isin(products, np.asarray(cart, dtype=np.uint32))
    best[in_cart], best_pmi[in_cart] = 0, 0.0
    return best, best_pmi
