"""Every ranker feature in plain words, for people who read the dashboard rather than the code.

``words(name)`` gives the phrase shown in place of a feature's column name (the feature importance
chart of the dashboard and of the run report); the column name stays on hover. Each phrase says
what the number measures for one (shopper, product) candidate, as of the cutoff order. A test
(``tests/features/test_glossary.py``) requires a phrase for every name of
``basketcast.features.build.FEATURE_NAMES``, so a new feature cannot reach the dashboard without one.
"""

from __future__ import annotations

from typing import Final

from basketcast.features import sequence
from basketcast.pipeline.data import schema as S

WORDS: Final[dict[str, str]] = {
    # The candidate generator (ALS collaborative filtering).
    S.ALS_SCORE: "similar shoppers' taste for it (ALS score)",
    S.ALS_RANK: "its place in the similar-shoppers list (ALS rank)",
    # The shopper.
    "u_orders": "shopper's number of orders",
    "u_basket_mean": "shopper's usual basket size",
    "u_basket_std": "how much the shopper's basket size varies",
    "u_basket_last": "shopper's last basket size",
    "u_reorder_ratio": "share of the shopper's items that are rebuys",
    "u_reorder_ratio_recent": "share of rebuys in the shopper's recent orders",
    "u_none_share": "share of the shopper's orders with no rebuy at all",
    S.U_DAYS_MEAN: "shopper's usual days between orders",
    "u_days_std": "how regular the shopper's order rhythm is",
    "u_days_last": "days between the shopper's last two orders",
    "u_span_days": "days the shopper has been ordering",
    S.U_HOUR_MEAN: "shopper's usual hour of ordering",
    "u_hour_std": "how much the shopper's ordering hour varies",
    "u_weekend_share": "share of the shopper's orders on the two busiest days",
    "u_distinct_products": "different products the shopper has bought",
    "u_lines": "items the shopper has bought in all",
    # The product, over all shoppers.
    "p_lines": "product's sales (order lines)",
    "p_buyers": "product's number of buyers",
    "p_reorder_prob": "share of the product's sales that are rebuys",
    "p_second_purchase_prob": "share of the product's buyers who bought it again",
    "p_times_per_buyer": "times an average buyer bought the product",
    "p_mean_gap_orders": "orders between two purchases of the product, over all buyers",
    "p_mean_cart_pos": "product's usual place in the cart",
    "p_aisle": "product's aisle",
    "p_department": "product's department",
    # This shopper and this product.
    "up_orders": "orders of this shopper holding the product",
    "up_order_rate": "share of the shopper's orders holding the product",
    "up_rate_since_first": "share of the shopper's orders with it since the first purchase",
    "up_orders_since_first": "shopper's orders since the first purchase of it",
    "up_orders_since_last": "shopper's orders since the last purchase of it",
    S.UP_DAYS_BEFORE_LAST: "days from its last purchase to the shopper's last order",
    S.UP_MEAN_GAP_DAYS: "shopper's usual days between two purchases of it",
    "up_mean_gap_orders": "shopper's usual orders between two purchases of it",
    "up_due_ratio": "how due it is (orders since last purchase / usual gap)",
    "up_streak": "last orders in a row holding it",
    "up_in_last_3": "of the shopper's last 3 orders, how many hold it",
    "up_in_last_5": "of the shopper's last 5 orders, how many hold it",
    "up_last5_pattern": "which of the last 5 orders hold it (as a pattern)",
    "up_mean_cart_pos": "its usual place in the shopper's cart",
    "up_mean_cart_rel": "its usual place in the shopper's cart (0 first, 1 last)",
    S.UP_DECAY_09: "how often and how recently the shopper bought it (recent orders count more)",
    "up_decay_07": "how recently the shopper bought it (recent orders count much more)",
    # The shopper's taste for the product's aisle and department.
    "ua_share": "share of the shopper's items from its aisle",
    "ua_distinct_products": "different products the shopper bought in its aisle",
    "ua_orders_share": "share of the shopper's orders touching its aisle",
    "ud_share": "share of the shopper's items from its department",
    "ud_orders_share": "share of the shopper's orders touching its department",
    # TIFU-KNN (frequency model with time decay, own and of similar shoppers).
    "tifu_own": "shopper's own time-weighted buying of it (TIFU-KNN)",
    "tifu_neighbours": "similar shoppers' time-weighted buying of it (TIFU-KNN)",
    # Ratios across groups.
    "up_aisle_share": "its share of the shopper's buying in its aisle",
    "up_due_vs_product": "orders since the last purchase / the product's usual gap",
    # The sequence network (basketcast.pipeline.model.sequence).
    sequence.SEQ_LOGIT: "sequence network's chance it is in the next order",
    sequence.SEQ_NONE: "sequence network's chance the next order has no rebuy",
    # The predicted order's context.
    "ctx_dow": "day of the week of the predicted order",
    "ctx_hour": "hour of the predicted order",
    "ctx_days_prior": "days from the last order to the predicted one",
    "ctx_days_ratio": "days since the last order / the shopper's usual gap",
    "ctx_hour_gap": "hours between the predicted order and the shopper's usual hour",
    "up_days_since_last": "days since the shopper last bought it",
    "up_gap_ratio": "days since the last purchase / the shopper's usual gap for it",
}
for _i, _name in enumerate(sequence.SEQ_STATES):
    WORDS[_name] = f"sequence network's summary of the shopper's buying of it (number {_i + 1})"


def words(name: str) -> str:
    """The plain-words phrase of feature ``name`` (the name itself when there is none)."""
    return WORDS.get(name, name)
