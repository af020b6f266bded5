"""The user explorer's data: a seeded sample of users, their order timelines and the serving
bundle's recommendations, embedded in the dashboard page as JSON.

The page's script draws it (``page.js``); opened from a file it answers from this sample, served
at ``/dashboard`` it asks the live API for any user and uses the sample only as a fallback.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import polars as pl

from basketcast.pipeline.dashboard import insights as I
from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset
from basketcast.serving.model import Context, ServingModel

EXPLORER_USERS: Final = 500
TOP_K: Final = 10  # recommendations per user in the explorer (and the K of the per-segment metrics)
TIMELINE_ORDERS: Final = 40  # the explorer embeds each user's last orders up to this many
TIMELINE_EXTRA: Final = 10  # products besides the recommended ones on a user's timeline


def peak_context(grid: pl.DataFrame) -> Context:
    """The busiest (day, hour) of the data, the user's usual gap: the context of the explorer's answers."""
    row = grid.sort([I.ORDERS, S.DOW, S.HOUR], descending=[True, False, False]).row(0, named=True)
    return Context(dow=int(row[S.DOW]), hour=int(row[S.HOUR]), days=None)


def sample_users(data: Dataset, model: ServingModel, n_users: int, seed: int) -> np.ndarray:
    """Up to ``n_users`` user ids known to both the model and the data, drawn with ``seed``, sorted."""
    known = np.intersect1d(np.asarray(model.users), data.orders[S.USER].unique().to_numpy())
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(known, size=min(n_users, known.size), replace=False)) if known.size else known


def order_timelines(data: Dataset, users: np.ndarray) -> dict[int, list[list[Any]]]:
    """Per user of ``users``: every order with products, oldest first, as ``[order_number, dow,
    hour, days since prior or None, [product ids in cart order]]``."""
    ids = pl.Series(S.USER, users, dtype=pl.UInt32)
    orders = data.orders.filter(pl.col(S.USER).is_in(ids.implode())).select(
        S.ORDER, S.USER, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR
    )
    baskets = (
        data.order_products.join(orders, on=S.ORDER, how="inner")
        .sort(S.USER, S.ORDER_NUMBER, S.CART_POS)
        .group_by(S.USER, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR, maintain_order=True)
        .agg(pl.col(S.PRODUCT))
    )
    by_user: dict[int, list[list[Any]]] = {}
    for user, number, dow, hour, days, products in baskets.iter_rows():
        by_user.setdefault(user, []).append([number, dow, hour, days, products])
    return by_user


def explorer_payload(
    data: Dataset, model: ServingModel, labels: pl.DataFrame, ctx: Context, n_users: int, seed: int
) -> dict[str, Any]:
    """The explorer's embedded data for a seeded sample of up to ``n_users`` users known to the model.

    ``users``: id → {segment, n_orders, orders: [[order_number, dow, hour, days since prior or
    null, [product ids in cart order]], …] (the last TIMELINE_ORDERS orders with products),
    recs: [[product id, score, repeat 0/1, reason], …] (``ServingModel.recommend_many`` at ``ctx``;
    the reason as the API gives it, ``basketcast.serving.reasons``), strategy}; ``products``: id → [name,
    aisle, department] of every product mentioned; ``day_names``: order_dow → name (0 = Sunday,
    ``schema.DAY_NAMES``).
    """
    sample = sample_users(data, model, n_users, seed)
    by_user = order_timelines(data, sample)
    segment_of = dict(labels.select(S.USER, G.SEGMENT).iter_rows())
    recs = model.recommend_many(sample.tolist(), TOP_K, ctx) if sample.size else []
    product_ids: set[int] = set()
    users: dict[str, Any] = {}
    for user, rec in zip(sample.tolist(), recs, strict=True):
        history = by_user.get(user, [])
        shown = history[-TIMELINE_ORDERS:]
        for o in shown:
            product_ids.update(o[4])
        product_ids.update(rec.products.tolist())
        users[str(user)] = {
            "segment": segment_of.get(user),
            "n_orders": len(history),
            "orders": shown,
            "recs": [
                [p, round(float(s), 5), int(r), why]
                for p, s, r, why in zip(
                    rec.products.tolist(), rec.scores.tolist(), rec.repeat.tolist(), rec.reasons, strict=True
                )
            ],
            "strategy": rec.strategy,
        }
    return {
        "users": users,
        "products": {str(p): list(model.product_info(p)) for p in sorted(product_ids)},
        "k": TOP_K,
        "context": {"dow": int(ctx.dow), "hour": int(ctx.hour)},
        "model_version": model.version,
        "timeline_extra": TIMELINE_EXTRA,
        "day_names": list(S.DAY_NAMES),
    }
