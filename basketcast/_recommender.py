"""The served model as Polars tables: :class:`Recommender` over :class:`basketcast.serving.model.ServingModel`.

Every answer is the serving model's own (the same products, scores and baskets the HTTP API and
batch scoring return), with the catalogue's names, aisles and departments joined on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from basketcast._data import PathLike
from basketcast._report import metrics_frame
from basketcast.pipeline.data import schema as S

if TYPE_CHECKING:
    from basketcast.serving.model import Context, ServingModel

# Columns of the tables this module returns (beyond the registry's user_id, product_id, names, score, rank).
REPEAT = "repeat"  # the user bought the product before
REASON = "reason"  # why the product is recommended (basketcast.serving.reasons)
STRATEGY = "strategy"  # "ranker", or "popular" for a user the model does not know
PROBABILITY = "probability"  # calibrated probability that the user reorders the product
NONE = "none"  # "None" (no reordered product) is part of the basket
EXPECTED_F1 = "expected_f1"
NONE_TOKEN = "None"  # the Kaggle token of the empty prediction, as the product name of its row
# The first columns of every answer: who, which place, which product and its catalogue names.
LEADING = (S.USER, S.RANK, S.PRODUCT, S.PRODUCT_NAME, S.AISLE_NAME, S.DEPARTMENT_NAME)

MAX_ID = 2**32 - 1  # ids are uint32 in the data folders and the serving bundle

UserIds = int | Iterable[int]


def _user_ids(user_ids: UserIds) -> list[int]:
    """The requested ids as a list (one int allowed), each checked to be a uint32."""
    ids = [user_ids] if isinstance(user_ids, int | np.integer) else list(user_ids)
    for u in ids:
        if isinstance(u, bool) or not isinstance(u, int | np.integer) or not 0 <= int(u) <= MAX_ID:
            raise ValueError(f"user ids must be integers in 0..{MAX_ID}, got {u!r}")
    return [int(u) for u in ids]


class Recommender:
    """Recommendations, baskets and related products of a trained run, as Polars tables.

    Open one with :func:`basketcast.load` (or ``Run.recommender()``). Thread-safe and read-only,
    like the :class:`basketcast.serving.model.ServingModel` it wraps (``.model``).

    The order being predicted has a context (day of week, hour, days since the user's last order)
    that the ranker uses: by default the current UTC day and hour and each user's usual gap, as the
    HTTP API; pass ``dow`` and ``hour`` for reproducible answers.

    Example:
        >>> rec = basketcast.load("artifacts/model")  # doctest: +SKIP
        >>> rec.recommend([1, 2], k=5, dow=0, hour=10)  # doctest: +SKIP
        >>> rec.basket(1)  # doctest: +SKIP
    """

    def __init__(self, model: ServingModel, run_dir: Path | None = None) -> None:
        self.model = model
        self.run_dir = run_dir

    def __repr__(self) -> str:
        return f"Recommender(version={self.version!r}, users={len(self.model.users):,}, path={str(self.model.path)!r})"

    @property
    def version(self) -> str:
        """The serving bundle's version (as ``/ready`` and every HTTP answer report it).

        Example:
            >>> rec.version  # doctest: +SKIP
        """
        return self.model.version

    @property
    def users(self) -> pl.Series:
        """The user ids the model knows (its snapshot's users, ascending); any other id gets the
        popular list.

        Example:
            >>> rec.recommend(rec.users.head(3), k=5)  # doctest: +SKIP
        """
        return pl.Series(S.USER, np.asarray(self.model.users), dtype=pl.UInt32)

    @property
    def catalogue(self) -> pl.DataFrame:
        """The products the model knows: product_id, product_name, aisle, department.

        Example:
            >>> rec.catalogue.filter(pl.col("department") == "produce")  # doctest: +SKIP
        """
        return self.model.catalog

    def recommend(
        self,
        user_ids: UserIds,
        k: int = 10,
        cart: Sequence[int] | Mapping[int, Sequence[int]] | None = None,
        *,
        dow: int | None = None,
        hour: int | None = None,
        days: float | None = None,
    ) -> pl.DataFrame:
        """The top-``k`` products of each user, best first.

        Args:
            user_ids: one user id or several (duplicates kept, in the given order).
            k: products per user.
            cart: products already in the cart, in the order they were added: one list for every
                user, or a dict user → list. Cart products are left out and re-rank the rest
                (``ServingModel.recommend``).
            dow: day of week of the order, 0-6 (default: today, UTC).
            hour: hour of the order, 0-23 (default: the current hour, UTC).
            days: days since the user's last order (default: each user's usual gap).

        Returns:
            One row per (user, product): ``user_id``, ``rank`` (1 = best), ``product_id``,
            ``product_name``, ``aisle``, ``department``, ``score`` (the ranker's; the product's share
            of all order lines for the popular list), ``repeat`` (bought before by the user),
            ``reason`` (why, from the numbers the ranker scored: "in 12 of your 15 orders", "often
            bought with Bananas", …; the rules are in ``basketcast.serving.reasons``) and
            ``strategy`` (``"ranker"``, or ``"popular"`` for a user the model does not know).

        Example:
            >>> rec.recommend([1, 999_999], k=3, dow=0, hour=10)  # doctest: +SKIP
            shape: (6, 10) …  user 999999 gets the popular list, strategy "popular"
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        users = _user_ids(user_ids)
        ctx = self._context(dow, hour, days)
        if cart is None:
            recs = self.model.recommend_many(users, k, ctx) if users else []
        else:
            recs = [self.model.recommend(u, k, ctx, cart=self._cart_of(cart, u)) for u in users]
        sizes = [r.products.size for r in recs]
        frame = pl.DataFrame(
            {
                S.USER: pl.Series(np.repeat(np.asarray(users, dtype=np.uint32), sizes), dtype=pl.UInt32),
                S.RANK: pl.Series(_concat([np.arange(1, n + 1) for n in sizes], np.uint16), dtype=pl.UInt16),
                S.PRODUCT: pl.Series(_concat([r.products for r in recs], np.uint32), dtype=pl.UInt32),
                S.SCORE: pl.Series(_concat([r.scores for r in recs], np.float32), dtype=pl.Float32),
                REPEAT: pl.Series(_concat([r.repeat for r in recs], np.bool_), dtype=pl.Boolean),
                STRATEGY: pl.Series([r.strategy for r in recs for _ in range(r.products.size)], dtype=pl.String),
                REASON: pl.Series([reason for r in recs for reason in r.reasons], dtype=pl.String),
            }
        )
        return self._named(frame).select(
            *LEADING,
            S.SCORE,
            REPEAT,
            STRATEGY,
            REASON,
        )

    def basket(
        self, user_ids: UserIds, *, dow: int | None = None, hour: int | None = None, days: float | None = None
    ) -> pl.DataFrame:
        """The basket maximising each user's expected F1 (Kaggle rule: "None" is a possible item).

        Only products the user bought before enter the basket (as offline, the 80 most probable).
        A user the model does not know gets an empty basket with "None" (strategy ``"popular"``).

        Args:
            user_ids: one user id or several.
            dow, hour, days: the order's context, as :meth:`recommend`.

        Returns:
            One row per basket item: ``user_id``, ``rank`` (by probability, 1 = most probable),
            ``product_id``, ``product_name``, ``aisle``, ``department``, ``probability`` (calibrated
            probability of a reorder), and per user ``none`` (whether "None" is predicted),
            ``expected_f1`` (null for an unknown user) and ``strategy``. When "None" is predicted
            the user has one more row for it: product_name ``"None"``, product_id, aisle,
            department, rank and probability null.

        Example:
            >>> basket = rec.basket([1, 2], dow=0, hour=10)  # doctest: +SKIP
            >>> basket.select("user_id", "product_name", "probability", "none")  # doctest: +SKIP
        """
        users = _user_ids(user_ids)
        ctx = self._context(dow, hour, days)
        rows: dict[str, list[object]] = {
            c: [] for c in (S.USER, S.RANK, S.PRODUCT, PROBABILITY, NONE, EXPECTED_F1, STRATEGY, S.PRODUCT_NAME)
        }
        for u in users:
            b = self.model.basket(u, ctx)
            f1 = None if np.isnan(b.expected_f1) else b.expected_f1
            items: list[tuple[int | None, int | None, float | None, str | None]] = [
                (i + 1, int(p), float(q), None)
                for i, (p, q) in enumerate(zip(b.products, b.probabilities, strict=True))
            ]
            if b.none:
                items.append((None, None, None, NONE_TOKEN))
            for rank, product, probability, name in items:
                for column, value in zip(
                    rows, (u, rank, product, probability, b.none, f1, b.strategy, name), strict=True
                ):
                    rows[column].append(value)
        frame = pl.DataFrame(
            rows,
            schema={
                S.USER: pl.UInt32,
                S.RANK: pl.UInt16,
                S.PRODUCT: pl.UInt32,
                PROBABILITY: pl.Float32,
                NONE: pl.Boolean,
                EXPECTED_F1: pl.Float64,
                STRATEGY: pl.String,
                S.PRODUCT_NAME: pl.String,
            },
        )
        names = self._named(frame.drop(S.PRODUCT_NAME)).with_columns(
            pl.coalesce(frame[S.PRODUCT_NAME], pl.col(S.PRODUCT_NAME)).alias(S.PRODUCT_NAME)
        )
        return names.select(
            *LEADING,
            PROBABILITY,
            NONE,
            EXPECTED_F1,
            STRATEGY,
        )

    def related(self, product_id: int, k: int = 10) -> pl.DataFrame:
        """Products most often bought together with ``product_id`` (the co-occurrence table the
        model serves at ``/v1/products/{id}/related``), by PMI.

        Returns:
            ``rank``, ``product_id``, ``product_name``, ``aisle``, ``department``, ``pmi``, ``lift``,
            ``support`` (orders holding both); empty when the product is unknown or the bundle has
            no co-occurrence table.

        Example:
            >>> rec.related(24852, k=5)  # doctest: +SKIP
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        table = self.model.related_products(int(product_id), k)
        table = table.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.UInt16).alias(S.RANK))
        rest = [c for c in table.columns if c not in (S.RANK, S.PRODUCT)]
        return self._named(table).select(S.RANK, S.PRODUCT, S.PRODUCT_NAME, S.AISLE_NAME, S.DEPARTMENT_NAME, *rest)

    def evaluate(
        self, data: PathLike, *, folds: int | None = None, out: PathLike | None = None, force: bool = False
    ) -> pl.DataFrame:
        """Re-evaluate the run on ``data`` (``basketcast evaluate``): the metrics table, method × metric.

        Without ``folds`` the data must be the data the run was trained on (same fingerprint) and
        the run's validation users are scored again; with ``folds`` = k, k-fold cross-validation
        over all users of ``data`` with the run's config (trains k times). The report is also
        written to ``out`` (default ``RUN/evaluation`` or ``RUN/evaluation-kfold``).

        Example:
            >>> rec.evaluate("data/sample").select("method", "ndcg@10")  # doctest: +SKIP
        """
        from basketcast.pipeline.errors import BundleError
        from basketcast.pipeline.workflows.validation import evaluate

        if self.run_dir is None:
            raise BundleError(f"{self.model.path}: a serving bundle alone cannot be evaluated; load its run folder")
        report = evaluate(
            Path(data), self.run_dir, folds=folds, out=Path(out) if out is not None else None, force=force
        )
        return metrics_frame(report)

    # --- helpers ------------------------------------------------------------------------
    @staticmethod
    def _context(dow: int | None, hour: int | None, days: float | None) -> Context:
        from basketcast.serving.model import MAX_DAYS, Context

        if dow is not None and not 0 <= dow <= 6:
            raise ValueError(f"dow must be 0-6, got {dow!r}")
        if hour is not None and not 0 <= hour <= 23:
            raise ValueError(f"hour must be 0-23, got {hour!r}")
        if days is not None and not 0 <= days <= MAX_DAYS:
            raise ValueError(f"days must be 0-{MAX_DAYS:g}, got {days!r}")
        return Context.at(dt.datetime.now(dt.UTC), dow=dow, hour=hour, days=days)

    @staticmethod
    def _cart_of(cart: Sequence[int] | Mapping[int, Sequence[int]], user: int) -> list[int]:
        chosen = cart.get(user, ()) if isinstance(cart, Mapping) else cart
        return [int(p) for p in chosen]

    def _named(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with product_name, aisle and department joined on its product ids, by the
        serving model's own lookup (placeholders for a product missing from the catalogue)."""
        ids = frame[S.PRODUCT].drop_nulls().unique().to_list()
        info = [self.model.product_info(p) for p in ids]
        names = pl.DataFrame(
            {
                S.PRODUCT: pl.Series(ids, dtype=pl.UInt32),
                S.PRODUCT_NAME: [i[0] for i in info],
                S.AISLE_NAME: [i[1] for i in info],
                S.DEPARTMENT_NAME: [i[2] for i in info],
            },
            schema={
                S.PRODUCT: pl.UInt32,
                S.PRODUCT_NAME: pl.String,
                S.AISLE_NAME: pl.String,
                S.DEPARTMENT_NAME: pl.String,
            },
        )
        return frame.with_columns(pl.col(S.PRODUCT).cast(pl.UInt32)).join(
            names, on=S.PRODUCT, how="left", maintain_order="left"
        )


def _concat(parts: list[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=dtype) for p in parts]) if parts else np.zeros(0, dtype)


def load(run_dir: PathLike, threads: int = 1) -> Recommender:
    """Open a run folder's served model (or a serving bundle folder) as a :class:`Recommender`.

    Loading is fast at any size: the snapshot's arrays are memory-mapped.

    Args:
        run_dir: a run folder (``basketcast train``'s output) or its ``serving/`` bundle.
        threads: onnxruntime threads per model (1 suits many small queries; the number of cores
            suits a few large batches).

    Raises:
        basketcast.pipeline.errors.BundleError: not a loadable model (the message says what is wrong).

    Example:
        >>> rec = basketcast.load("artifacts/model")  # doctest: +SKIP
        >>> rec.version  # doctest: +SKIP
    """
    from basketcast.serving.bundle import bundle_dir
    from basketcast.serving.model import ServingModel

    path = Path(run_dir)
    model = ServingModel.load(path, threads=threads)
    return Recommender(model, path if bundle_dir(path) != path else None)  # a run folder holds its bundle
