"""Orders posted after a data folder was made (``POST /v1/orders``), and how they become its rows.

:class:`OrderRecord` is one such order as the order log keeps it (``basketcast.serving.stores``);
:func:`posted_tables` turns a sequence of them into canonical ``orders`` / ``order_products`` rows
by the rules of Instacart's layout. It is the one place those rules live: the fresh online rows
of a user (``basketcast.serving.online``) and the merge of the log into a data folder for retraining
(``basketcast.pipeline.workflows.orders``) both call it, so tomorrow's model learns from the very rows today's
server computed features from.

- each user's posted orders follow their last order, numbered on in the order given (arrival);
- ``eval_set`` is ``prior``;
- ``days_since_prior_order`` rounded and capped at 30 as in Instacart's data; unknown → null, and
  null for a user's first order;
- a product posted twice in an order counts once, at its first cart position;
- ``reordered`` is Kaggle's: 1 when the user bought the product in an earlier order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from basketcast.pipeline.data import schema as S

MAX_DAYS_PRIOR = 30  # Instacart caps days_since_prior_order at 30


@dataclass(frozen=True)
class OrderRecord:
    """One order as posted: the user's products in the order they were added to the cart.

    ``dow`` (0-6, Instacart's convention) and ``hour`` (0-23) are always known (from the client
    or from ``placed_at``); ``days_since_prior`` is None when the client does not know it (and
    for a user's first order). ``seq`` is the log's own arrival number (None until recorded):
    a user's posted orders follow each other in ``seq`` order.
    """

    order_id: str
    user_id: int
    products: tuple[int, ...]
    dow: int
    hour: int
    days_since_prior: float | None = None
    placed_at: dt.datetime | None = None  # timezone-aware UTC when given
    seq: int | None = field(default=None, compare=False)

    def content_key(self) -> str:
        """A digest of everything but ``seq``: equal for a retry of the same order."""
        body = {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "products": list(self.products),
            "dow": self.dow,
            "hour": self.hour,
            "days_since_prior": self.days_since_prior,
            "placed_at": None if self.placed_at is None else self.placed_at.isoformat(),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def posted_tables(
    posted: Sequence[OrderRecord],
    last_number: dict[int, int],
    bought: dict[int, set[int]],
    first_order_id: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Canonical ``orders`` and ``order_products`` rows of ``posted`` (the rules in the module doc).

    ``last_number`` (user → their last order number so far) and ``bought`` (user → products bought
    so far) are read and updated in place; order ids are ``first_order_id``, +1, ...
    """
    orders: dict[str, list[object]] = {c: [] for c in S.TABLE_SCHEMAS[S.ORDERS]}
    lines: dict[str, list[object]] = {c: [] for c in S.TABLE_SCHEMAS[S.ORDER_PRODUCTS]}
    order_id = first_order_id
    for record in posted:
        number = last_number.get(record.user_id, 0) + 1
        last_number[record.user_id] = number
        days = record.days_since_prior
        orders[S.ORDER].append(order_id)
        orders[S.USER].append(record.user_id)
        orders[S.EVAL_SET].append(S.PRIOR)
        orders[S.ORDER_NUMBER].append(number)
        orders[S.DOW].append(record.dow)
        orders[S.HOUR].append(record.hour)
        orders[S.DAYS_PRIOR].append(None if days is None or number == 1 else min(MAX_DAYS_PRIOR, round(days)))
        seen = bought.setdefault(record.user_id, set())
        for position, product in enumerate(dict.fromkeys(record.products), start=1):
            lines[S.ORDER].append(order_id)
            lines[S.PRODUCT].append(product)
            lines[S.CART_POS].append(position)
            lines[S.REORDERED].append(int(product in seen))
            lines[S.EVAL_SET].append(S.PRIOR)
        seen.update(record.products)
        order_id += 1
    return (
        pl.DataFrame(orders, schema=S.TABLE_SCHEMAS[S.ORDERS]),
        pl.DataFrame(lines, schema=S.TABLE_SCHEMAS[S.ORDER_PRODUCTS]),
    )
