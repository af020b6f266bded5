"""Delayed quality: earlier predictions scored against the orders that arrived since.

``basketcast score`` writes each snapshot user's top-k *before* their next order is known. Once
new orders have arrived (a data folder whose users' histories extend the snapshot's: the output of
``basketcast orders merge``, or a newer ingest), each prediction can be scored:

- **Which order.** The snapshot of a run knows each user's last order (the bundle's history,
  ``basketcast.serving.bundle.HISTORY``: the cutoff the predictions were made after). The order a prediction
  is scored against is the user's *first* order numbered after that cutoff. A Kaggle ``test``
  order there holds no products: that user is still *waiting* and is not scored, nor is a user
  with no later order, nor one unknown to the snapshot (the cold-start list: no cutoff is known).
- **Day.** The Instacart layout has no calendar dates. The *day* of a prediction is the number of
  days between the cutoff order and the new order: that order's ``days_since_prior_order``
  (0..30, 30 meaning "30 or more" as Instacart caps it; null when unknown). It is how old the
  prediction was when it was tested. Results are also split by the new order's ``order_dow``.
- **Metrics** (``basketcast.pipeline.metrics``, the evaluation's own functions): Recall@10 and NDCG@10 of the
  scores file's ranking against every product of the new order; Kaggle F1 (``kaggle_f1``, the
  "None" token included) of the F1-optimal basket against the reordered products. The scores
  file holds no basket, so the basket is the serving bundle's (:func:`bundle_baskets`: what
  ``GET /v1/users/{id}/basket`` answers from the snapshot) for the new order's own day, hour and
  days since the previous order — the context the API knows when the shopper opens it to order.
- **Uncertainty.** A percentile bootstrap interval over users (``basketcast.pipeline.evaluation.bootstrap``)
  of the overall Recall@10 and NDCG@10. ``kaggle_f1`` returns a mean, not per-user values, so the
  F1 has no interval.

Everything here is computation on frames and a loaded model; files are
``basketcast.pipeline.workflows.monitor``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from basketcast.features.sequence import SEQ_NONE
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ids import index_of
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.evaluation.bootstrap import paired_bootstrap
from basketcast.pipeline.metrics import NDCG, RECALL, kaggle_f1, metric_name, per_key_metrics
from basketcast.pipeline.model.basket import NONE_SOURCES, choose_baskets
from basketcast.serving.model import Context, ServingModel

# Columns of the frames below (and of the monitor's Parquet outputs).
CUTOFF_ORDER: Final = "cutoff_order_number"  # the user's last order in the snapshot
DAY: Final = "day"  # days from the cutoff order to the new order (its days_since_prior_order)
USERS: Final = "users"  # users in a group
K: Final = 10
RECALL_K: Final = metric_name(RECALL, K)
NDCG_K: Final = metric_name(NDCG, K)
KAGGLE_F1: Final = "kaggle_f1"
QUALITY: Final = (RECALL_K, NDCG_K, KAGGLE_F1)
WITH_INTERVAL: Final = (RECALL_K, NDCG_K)
RESAMPLES: Final = 1_000
SEED: Final = 0
# Users of the scores file checked against the snapshot's candidates (a seeded sample).
CHECK_USERS: Final = 2_000
# Users whose candidates are scored in one ONNX call when their baskets are built.
BASKET_CHUNK_USERS: Final = 5_000

_POS: Final = "_pos"
_N_ORDERS: Final = "_n_orders"
_BEFORE: Final = "_before"


class Interval(BaseModel):
    """A percentile bootstrap interval of a mean over users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float
    level: float
    resamples: int


class Slice(BaseModel):
    """The quality of the users of one group (a day, a day of week); ``value`` None = unknown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: int | None
    users: int
    metrics: dict[str, float]


class UserCounts(BaseModel):
    """Where the users of the scores file went."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    predicted: int  # distinct users in the scores file
    unknown: int  # not in the snapshot (cold-start list): no cutoff, not scored
    history_differs: int  # the new data's history up to the cutoff is not the snapshot's: not scored
    waiting: int  # no order with products after the cutoff yet
    scored: int  # with a new order: the metrics' users


class Quality(BaseModel):
    """The delayed quality of one set of predictions (``monitor.json`` holds it with its sources)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: UserCounts
    metrics: dict[str, float]  # QUALITY → mean over the scored users
    intervals: dict[str, Interval]  # WITH_INTERVAL → bootstrap interval
    by_day: list[Slice]
    by_dow: list[Slice]
    predictions_k: int  # the deepest rank in the scores file (Recall@10 needs 10)


@dataclass(frozen=True)
class Scored:
    """:func:`delayed_quality`'s result: the summary and the per-user and per-day frames."""

    quality: Quality
    per_user: pl.DataFrame  # USER, ORDER, CUTOFF_ORDER, ORDER_NUMBER, DAY, DOW, HOUR, RECALL_K, NDCG_K
    by_day: pl.DataFrame  # DAY, USERS, *QUALITY


def snapshot_cutoffs(users: np.ndarray, order_offsets: np.ndarray, order_number: np.ndarray) -> pl.DataFrame:
    """Each snapshot user's last order number and order count, from the bundle's history arrays.

    Args:
        users: the snapshot's users (``users.npy``, sorted uint32).
        order_offsets: ``history/order_offsets.npy`` (users + 1): user i's orders are
            ``order_offsets[i]:order_offsets[i + 1]``, in order-number order.
        order_number: ``history/order_number.npy``.

    Returns:
        USER (UInt32), CUTOFF_ORDER (UInt16), ``_n_orders`` (UInt32: orders up to the cutoff); users
        without an order are left out.
    """
    offsets = np.asarray(order_offsets, dtype=np.int64)
    counts = np.diff(offsets)
    has = counts > 0
    last = np.asarray(order_number)[offsets[1:][has] - 1]
    return pl.DataFrame(
        {
            S.USER: pl.Series(np.asarray(users)[has], dtype=pl.UInt32),
            CUTOFF_ORDER: pl.Series(last, dtype=pl.UInt16),
            _N_ORDERS: pl.Series(counts[has], dtype=pl.UInt32),
        }
    )


def first_orders_after(orders: pl.DataFrame, cutoffs: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Each user's first order after their cutoff, and how many users' histories differ.

    Args:
        orders: the new data's ``orders`` table.
        cutoffs: USER, CUTOFF_ORDER, ``_n_orders`` (:func:`snapshot_cutoffs`) of the users to score.

    Returns:
        ``(next_orders, differs)``: one row per user of ``cutoffs`` whose history in ``orders``
        extends the snapshot's (the same number of orders up to the cutoff) and who has a later
        order: USER, ORDER, EVAL_SET, CUTOFF_ORDER, ORDER_NUMBER, DOW, HOUR, DAY (the new order's
        days since the previous one); ``differs`` counts the users whose history does not extend it.
    """
    joined = orders.join(cutoffs, on=S.USER, how="inner")
    before = (
        joined.filter(pl.col(S.ORDER_NUMBER) <= pl.col(CUTOFF_ORDER))
        .group_by(S.USER)
        .agg(pl.len().cast(pl.UInt32).alias(_BEFORE))
    )
    same = cutoffs.join(before, on=S.USER, how="left").filter(pl.col(_BEFORE) == pl.col(_N_ORDERS))
    next_orders = (
        joined.join(same.select(S.USER), on=S.USER, how="semi")
        .filter(pl.col(S.ORDER_NUMBER) > pl.col(CUTOFF_ORDER))
        .sort(S.USER, S.ORDER_NUMBER)
        .group_by(S.USER, maintain_order=True)
        .first()
        .select(
            S.USER,
            S.ORDER,
            S.EVAL_SET,
            CUTOFF_ORDER,
            S.ORDER_NUMBER,
            S.DOW,
            S.HOUR,
            pl.col(S.DAYS_PRIOR).alias(DAY),
        )
    )
    return next_orders, cutoffs.height - same.height


def check_predictions(pred: pl.DataFrame, model: ServingModel, users: pl.Series, name: str) -> None:
    """Refuse predictions the model's snapshot cannot have made.

    ``basketcast score`` ranks only each known user's snapshot candidates, so every (user,
    product) of ``pred`` (USER, PRODUCT) for a user of ``users`` (known to the snapshot) must be
    one of them. Checked on a seeded sample of ``CHECK_USERS`` users; DataError naming ``name`` and
    an offending row otherwise (scores of another run, or of this run before a re-export).
    """
    sample = users.sample(min(CHECK_USERS, users.len()), seed=SEED) if users.len() else users
    positions = index_of(model.users, sample.cast(pl.UInt32).to_numpy())
    positions = np.sort(positions[positions >= 0])
    idx, counts = model.gather(positions)
    candidates = pl.DataFrame(
        {
            S.USER: pl.Series(np.repeat(np.asarray(model.users)[positions], counts), dtype=pl.UInt32),
            S.PRODUCT: pl.Series(np.asarray(model.products)[idx], dtype=pl.UInt32),
        }
    )
    shown = pred.select(pl.col(S.USER).cast(pl.UInt32), pl.col(S.PRODUCT).cast(pl.UInt32)).join(
        candidates.select(S.USER).unique(), on=S.USER, how="semi"
    )
    stray = shown.join(candidates, on=[S.USER, S.PRODUCT], how="anti")
    if stray.height:
        user, product = stray.row(0)
        raise DataError(
            f"{name}: not scores of this model's snapshot ({model.version}): {stray.height:,} of "
            f"{shown.height:,} checked (user, product) rows are not among the user's candidates "
            f"(first: user {user}, product {product}); monitor predictions with the run that made them"
        )


def bundle_baskets(model: ServingModel, contexts: pl.DataFrame) -> pl.DataFrame:
    """The F1-optimal basket of each user, from the serving bundle's snapshot, at a given context.

    Args:
        model: the served model (its snapshot rows, basket model and ``none_source``).
        contexts: USER, DOW, HOUR, DAY (days since the previous order; null = the user's usual
            gap), one row per user known to the snapshot.

    Returns:
        USER, ``S.BASKET_PRODUCTS``, ``S.BASKET_NONE`` (``basketcast.pipeline.model.basket.choose_baskets``),
        sorted by user: for each user what ``ServingModel.basket`` answers at that context —
        the users' rows are scored together, one ONNX call per context and chunk of users.
    """
    positions = index_of(model.users, contexts[S.USER].cast(pl.UInt32).to_numpy())
    if (positions < 0).any():
        raise ValueError("bundle_baskets: every user must be in the snapshot")
    frame = contexts.select(S.USER, S.DOW, S.HOUR, DAY).with_columns(pl.Series(_POS, positions))
    names = model.manifest.base_features
    seq_none = names.index(SEQ_NONE) if SEQ_NONE in names else None
    probs: list[pl.DataFrame] = []
    nones: list[pl.DataFrame] = []
    for (dow, hour, day), group in frame.group_by(S.DOW, S.HOUR, DAY):
        ctx = Context(dow=float(dow), hour=float(hour), days=None if day is None else float(day))  # type: ignore[arg-type]
        for lo in range(0, group.height, BASKET_CHUNK_USERS):
            pos = np.sort(group[_POS].to_numpy()[lo : lo + BASKET_CHUNK_USERS])
            idx, counts = model.gather(pos)
            base = np.asarray(model.base[idx], dtype=np.float32)
            p = model.basket_probabilities(model.features_of(base, ctx))
            repeat = np.asarray(model.repeat[idx], dtype=bool)
            users = np.repeat(np.asarray(model.users)[pos], counts)
            probs.append(
                pl.DataFrame(
                    {
                        S.USER: pl.Series(users[repeat], dtype=pl.UInt32),
                        S.PRODUCT: pl.Series(np.asarray(model.products)[idx][repeat], dtype=pl.UInt32),
                        S.SCORE: pl.Series(p[repeat], dtype=pl.Float32),
                    }
                )
            )
            if seq_none is not None:  # the network's P(None) sits on every row of the user: take the first
                has = counts > 0
                first = (np.cumsum(counts) - counts)[has]
                nones.append(
                    pl.DataFrame(
                        {
                            S.USER: pl.Series(np.asarray(model.users)[pos][has], dtype=pl.UInt32),
                            S.SCORE: pl.Series(base[first, seq_none], dtype=pl.Float32),
                        }
                    )
                )
    schema = {S.USER: pl.UInt32, S.PRODUCT: pl.UInt32, S.SCORE: pl.Float32}
    scores = pl.concat(probs) if probs else pl.DataFrame(schema=schema)
    p_none = pl.concat(nones) if nones else None
    return choose_baskets(
        scores,
        S.USER,
        keys=contexts[S.USER].cast(pl.UInt32).sort(),
        p_none=p_none,
        none_weight=NONE_SOURCES[model.none_source],
    )


def _slices(
    per_user: pl.DataFrame, baskets: pl.DataFrame, truth_reordered: pl.DataFrame, by: str
) -> tuple[list[Slice], pl.DataFrame]:
    """Mean quality of the users of each value of ``by`` (sorted, null last)."""
    means = (
        per_user.group_by(by)
        .agg(pl.len().cast(pl.UInt32).alias(USERS), pl.col(RECALL_K).mean(), pl.col(NDCG_K).mean())
        .sort(by, nulls_last=True)
    )
    f1 = []
    for value in means[by].to_list():
        users = per_user.filter(pl.col(by).is_null() if value is None else pl.col(by) == value).select(S.USER)
        f1.append(kaggle_f1(baskets.join(users, on=S.USER, how="semi"), truth_reordered, S.USER))
    table = means.with_columns(pl.Series(KAGGLE_F1, f1, dtype=pl.Float64))
    slices = [
        Slice(value=row[by], users=row[USERS], metrics={m: float(row[m]) for m in QUALITY})
        for row in table.iter_rows(named=True)
    ]
    return slices, table


def delayed_quality(
    pred: pl.DataFrame,
    next_orders: pl.DataFrame,
    lines: pl.DataFrame,
    baskets: pl.DataFrame,
    counts: UserCounts,
    *,
    resamples: int = RESAMPLES,
) -> Scored:
    """Score the predictions of the users of ``next_orders`` against those orders.

    Args:
        pred: the scores file (USER, PRODUCT, RANK at least).
        next_orders: the orders to score against (:func:`first_orders_after`, Kaggle ``test``
            orders already removed), one per user; at least one.
        lines: the new data's ``order_products`` (ORDER, PRODUCT, REORDERED at least).
        baskets: :func:`bundle_baskets` of the same users.
        counts: the user counts to report (``scored`` must equal ``next_orders.height``).
        resamples: bootstrap resamples of the intervals.

    Returns:
        The summary (overall, by day, by day of week, intervals) and its per-user and by-day frames.
    """
    if next_orders.height == 0:
        raise ValueError("delayed_quality: no order to score against")
    truth = lines.join(next_orders.select(S.ORDER, S.USER), on=S.ORDER, how="inner").select(
        S.USER, S.PRODUCT, S.REORDERED
    )
    truth_reordered = truth.filter(pl.col(S.REORDERED) == 1).select(S.USER, S.PRODUCT)
    ranking = pred.select(S.USER, S.PRODUCT, S.RANK).join(next_orders.select(S.USER), on=S.USER, how="semi")
    metrics = per_key_metrics(ranking, truth.select(S.USER, S.PRODUCT), (K,), key=S.USER)
    per_user = next_orders.select(S.USER, S.ORDER, CUTOFF_ORDER, S.ORDER_NUMBER, DAY, S.DOW, S.HOUR).join(
        metrics.select(pl.col(S.USER).cast(pl.UInt32), RECALL_K, NDCG_K), on=S.USER, how="left"
    )
    overall = {
        RECALL_K: float(per_user[RECALL_K].mean()),  # type: ignore[arg-type]
        NDCG_K: float(per_user[NDCG_K].mean()),  # type: ignore[arg-type]
        KAGGLE_F1: kaggle_f1(baskets.join(per_user.select(S.USER), on=S.USER, how="semi"), truth_reordered, S.USER),
    }
    intervals = {}
    for name in WITH_INTERVAL:
        values = per_user[name].to_numpy()
        d = paired_bootstrap(values, np.zeros_like(values), resamples=resamples, seed=SEED)
        intervals[name] = Interval(low=d.low, high=d.high, level=d.level, resamples=d.resamples)
    by_day, day_table = _slices(per_user, baskets, truth_reordered, DAY)
    by_dow, _ = _slices(per_user, baskets, truth_reordered, S.DOW)
    quality = Quality(
        users=counts,
        metrics=overall,
        intervals=intervals,
        by_day=by_day,
        by_dow=by_dow,
        predictions_k=int(pred[S.RANK].max() or 0),  # type: ignore[arg-type]
    )
    return Scored(quality=quality, per_user=per_user.sort(S.USER), by_day=day_table)


def scored_users(next_orders: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame:
    """The orders of :func:`first_orders_after` that can be scored: those with products in
    ``lines`` (a Kaggle ``test`` order has none: its user is still waiting)."""
    return next_orders.filter(pl.col(S.EVAL_SET) != S.TEST).join(lines.select(S.ORDER).unique(), on=S.ORDER, how="semi")
