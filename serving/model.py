"""The served model: ONNX rankers + the online feature snapshot, no training libraries.

:class:`ServingModel` opens a serving bundle (its files: ``basketcast.serving.bundle``) and answers
recommendation and basket queries. The arrays are memory-mapped (``np.load(mmap_mode="r")``):
loading takes a fraction of a second at any size and worker processes share the same pages. At
request time only the context features (day, hour, days since the last order) are added, by the
same function training uses.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from basketcast.features import context
from basketcast.features.sequence import SEQ_NONE, SEQ_STATES
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.ids import index_of
from basketcast.pipeline.errors import BundleError, DataError
from basketcast.pipeline.model.basket import MAX_CANDIDATES, none_probability, optimal_basket
from basketcast.pipeline.model.cooccurrence import LIFT, PMI, SUPPORT, Cooccurrence
from basketcast.pipeline.ranking import best_first
from basketcast.serving import reasons as R
from basketcast.serving.bundle import (
    ARRAYS,
    BASKET,
    CATALOG,
    RANKER,
    RELATED,
    BundleManifest,
    bundle_dir,
    read_manifest,
)
from basketcast.serving.cart import CartScorer
from basketcast.serving.online import OnlineFeatures, UserRows

RANKER_STRATEGY = "ranker"
POPULAR_STRATEGY = "popular"
MAX_DAYS = 30.0


@dataclass(frozen=True)
class Context:
    """What is known about the order being predicted. ``days`` None → the user's usual gap."""

    dow: float
    hour: float
    days: float | None = None

    @classmethod
    def at(
        cls, when: dt.datetime, *, dow: int | None = None, hour: int | None = None, days: float | None = None
    ) -> Context:
        """The context of an order placed at ``when`` unless ``dow``/``hour`` are given.

        Instacart's ``order_dow`` is taken as 0 = Sunday (the dataset does not say; clients that
        know their own convention pass ``dow``).
        """
        return cls(
            dow=(when.weekday() + 1) % 7 if dow is None else dow, hour=when.hour if hour is None else hour, days=days
        )


@dataclass(frozen=True)
class Recommendation:
    """Top products for one user, best first."""

    user_id: int
    products: np.ndarray  # uint32
    scores: np.ndarray  # float32
    repeat: np.ndarray  # bool: bought before by this user
    strategy: str  # "ranker" or "popular" (cold start)
    reasons: tuple[str, ...] = ()  # why each product is there (basketcast.serving.reasons), one per product


@dataclass(frozen=True)
class Basket:
    """The F1-optimal basket: products (may be empty) and whether "None" is predicted."""

    user_id: int
    products: np.ndarray
    probabilities: np.ndarray
    none: bool
    expected_f1: float
    strategy: str


def _session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Serving: one thread per session, one worker process per core (no oversubscription).
    # Batch scoring of large chunks: one session using every core.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # onnxmltools declares the classifier's label output as shape {1}; onnxruntime warns on every run.
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(f"{path}: not a loadable ONNX model ({exc})") from exc


class ServingModel:
    """Loads a bundle and answers recommendation and basket queries (thread-safe, read-only)."""

    def __init__(
        self,
        path: Path,
        manifest: BundleManifest,
        arrays: dict[str, np.ndarray],
        catalog: pl.DataFrame,
        ranker: Any,
        basket: Any,
        related: Cooccurrence | None = None,
        cart_attention: CartScorer | None = None,
        online: OnlineFeatures | None = None,
    ) -> None:
        self.path = path
        # Recomputes a user's rows after new orders (None: a bundle of an older version, no refresh).
        self.online = online
        self.related = related
        self.cart_attention = cart_attention
        self.cart_attention_weight = float(manifest.cart_attention_weight) if cart_attention is not None else 0.0
        self._states = (
            [manifest.base_features.index(n) for n in SEQ_STATES] if SEQ_STATES[0] in manifest.base_features else []
        )
        self.cart_weight = float(manifest.cart_weight)
        self.none_source = manifest.none_source
        self._seq_none = manifest.base_features.index(SEQ_NONE) if SEQ_NONE in manifest.base_features else None
        self.manifest = manifest
        self.version: str = manifest.version
        self.base = arrays["base"]
        self.products = arrays["products"]
        self.repeat = arrays["repeat"]
        self.users = arrays["users"]
        self.offsets = arrays["offsets"]
        self.popular_products = arrays["popular_products"]
        self.popular_scores = arrays["popular_scores"]
        self.catalog = catalog
        self._ranker = ranker
        self._basket = basket
        self._ranker_input = ranker.get_inputs()[0].name
        self._basket_input = basket.get_inputs()[0].name
        names = manifest.base_features
        self._ctx_inputs = [names.index(n) for n in context.INPUTS]
        self.n_features = len(manifest.features)
        # Columns of the full feature matrix the reasons read (a feature an older bundle lacks is NaN).
        self._reason_cols = {n: manifest.features.index(n) for n in R.INPUTS if n in manifest.features}
        names_all = catalog[S.PRODUCT_NAME].to_list()
        aisles = catalog[S.AISLE_NAME].to_list()
        depts = catalog[S.DEPARTMENT_NAME].to_list()
        self._info = {
            int(p): (n, a, d) for p, n, a, d in zip(catalog[S.PRODUCT].to_list(), names_all, aisles, depts, strict=True)
        }

    @classmethod
    def load(cls, run_dir: Path, threads: int = 1) -> ServingModel:
        """Open ``RUN_DIR/serving`` (or a bundle folder itself); BundleError names what is wrong.

        ``threads``: onnxruntime intra-op threads per model (1 for serving workers; batch
        scoring passes the number of cores).
        """
        if not Path(run_dir).is_dir():
            raise BundleError(f"{run_dir}: model folder not found")
        path = bundle_dir(run_dir)
        manifest = read_manifest(path)
        shapes = manifest.shapes
        arrays = {}
        for name, dtype in ARRAYS.items():
            file = path / f"{name}.npy"
            if not file.is_file():
                raise BundleError(f"{file}: not found (incomplete serving bundle)")
            try:
                arr = np.load(file, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise BundleError(f"{file}: corrupt or truncated ({exc})") from exc
            if arr.dtype != dtype or list(arr.shape) != list(shapes.get(name, [])):
                raise BundleError(
                    f"{file}: holds {arr.dtype}{list(arr.shape)}, the manifest expects "
                    f"{np.dtype(dtype)}{shapes.get(name)} (corrupt or from another version)"
                )
            arrays[name] = arr
        if arrays["offsets"][-1] != arrays["base"].shape[0]:
            raise BundleError(f"{path / 'offsets.npy'}: does not cover base.npy (corrupt bundle)")
        try:
            catalog = pl.read_parquet(path / CATALOG)
        except Exception as exc:
            raise BundleError(f"{path / CATALOG}: unreadable ({exc})") from exc
        related = None
        if (path / RELATED).is_dir():
            try:
                related = Cooccurrence.load(path / RELATED)
            except DataError as exc:
                raise BundleError(str(exc)) from exc
        return cls(
            path,
            manifest,
            arrays,
            catalog,
            _session(path / RANKER, threads),
            _session(path / BASKET, threads),
            related,
            CartScorer.load(path, threads),
            OnlineFeatures.load(path, arrays["users"], manifest.base_features),
        )

    # --- lookups ------------------------------------------------------------------------
    def rows(self, user_id: int) -> slice | None:
        """The snapshot rows of a known user, None for an unknown one."""
        i = int(index_of(self.users, np.uint32(user_id)))
        return slice(int(self.offsets[i]), int(self.offsets[i + 1])) if i >= 0 else None

    def product_info(self, product_id: int) -> tuple[str, str, str]:
        """(name, aisle, department) of a product; placeholders for one missing from the catalogue."""
        return self._info.get(int(product_id), (f"product {product_id}", "unknown", "unknown"))

    # --- scoring ------------------------------------------------------------------------
    def features(self, rows: slice | np.ndarray, ctx: Context) -> np.ndarray:
        """The full feature matrix of snapshot rows: base features + context features."""
        return self.features_of(np.asarray(self.base[rows], dtype=np.float32), ctx)

    def features_of(self, base: np.ndarray, ctx: Context) -> np.ndarray:
        """The full feature matrix of base rows (snapshot or fresh): base + context features."""
        inputs = {n: base[:, i] for n, i in zip(context.INPUTS, self._ctx_inputs, strict=True)}
        days: np.ndarray | np.float32
        if ctx.days is None:
            days = np.clip(np.rint(inputs[S.U_DAYS_MEAN]), 0, MAX_DAYS)
        else:
            days = np.float32(ctx.days)
        extra = context.context_features(inputs, np.float32(ctx.dow), np.float32(ctx.hour), days)
        X = np.empty((base.shape[0], self.n_features), dtype=np.float32)
        X[:, : base.shape[1]] = base
        for j, name in enumerate(context.FEATURES):
            X[:, base.shape[1] + j] = extra[name]
        return X

    def rank_scores(self, X: np.ndarray) -> np.ndarray:
        out = self._ranker.run(None, {self._ranker_input: X})
        return _positive_column(out)

    def basket_probabilities(self, X: np.ndarray) -> np.ndarray:
        out = self._basket.run(None, {self._basket_input: X})
        return _positive_column(out)

    def recommend(
        self,
        user_id: int,
        k: int,
        ctx: Context,
        exclude: Collection[int] = (),
        cart: Sequence[int] = (),
        fresh: UserRows | None = None,
    ) -> Recommendation:
        """Top-``k`` products for one user, ``exclude`` and ``cart`` removed; popular list if unknown.

        With a ``cart``, each past product's score gains ``cart_attention_weight`` × the cart
        attention's delta (``cart.onnx``: the product attending over the cart's products) and every
        candidate ``cart_weight`` × its mean PMI with the cart's products (the co-occurrence
        table); both weights were chosen on the stop users' real carts at training. So what is in
        the cart changes the order of the rest, not only what is left out.
        """
        removed = set(exclude) | set(cart)
        view = self.user_view(user_id, fresh)
        if view is None:
            return self._popular(user_id, k, removed)
        products, repeat, base = view
        X = self.features_of(base, ctx)
        scores = self.rank_scores(X)
        # In the order the products were added (as in training, the attention reads the first MAX_CART).
        cart_ids = np.fromiter(dict.fromkeys(cart), np.uint32) if cart else np.zeros(0, np.uint32)
        if cart_ids.size and self.cart_attention is not None and self.cart_attention_weight > 0 and self._states:
            states = np.asarray(base[:, self._states], dtype=np.float32)
            g = self.cart_attention.deltas(np.zeros(products.size, np.int64), products, states, [cart_ids])
            scores = (scores + np.float32(self.cart_attention_weight) * g).astype(np.float32)
        bonus = None
        if cart_ids.size and self.related is not None and self.cart_weight > 0:
            bonus = np.float32(self.cart_weight) * self.related.cart_scores(cart_ids, products)
            scores = (scores + bonus).astype(np.float32)
        return self._top(user_id, products, scores, repeat, k, removed, X, bonus, cart_ids)

    def user_view(
        self, user_id: int, fresh: UserRows | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(products, repeat, base rows) of a user: ``fresh`` rows when given (``basketcast.serving.online``),
        else the snapshot's; None for a user the snapshot does not know (and no fresh rows)."""
        if fresh is not None:
            return fresh.products, fresh.repeat, fresh.base
        rows = self.rows(user_id)
        if rows is None:
            return None
        return np.asarray(self.products[rows]), np.asarray(self.repeat[rows]), np.asarray(self.base[rows])

    def related_products(self, product_id: int, k: int) -> pl.DataFrame:
        """Products most often bought together with ``product_id`` (PRODUCT, pmi, lift, support)."""
        if self.related is None:
            return pl.DataFrame(schema={S.PRODUCT: pl.UInt32, PMI: pl.Float32, LIFT: pl.Float32, SUPPORT: pl.UInt32})
        return self.related.related_to(product_id, k)

    def knows_product(self, product_id: int) -> bool:
        return product_id in self._info

    def recommend_many(self, user_ids: Sequence[int], k: int, ctx: Context) -> list[Recommendation]:
        """Top-``k`` for many users with one ONNX call (the batch path)."""
        positions = index_of(self.users, np.asarray(user_ids, dtype=np.int64))
        idx, counts = self.gather(positions[positions >= 0])
        X = self.features(idx, ctx) if idx.size else np.zeros((0, self.n_features), np.float32)
        scores = self.rank_scores(X) if idx.size else np.zeros(0, np.float32)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        out, j = [], 0
        for user, p in zip(user_ids, positions.tolist(), strict=True):
            if p < 0:
                out.append(self._popular(user, k, ()))
                continue
            rows = idx[bounds[j] : bounds[j + 1]]
            part = slice(int(bounds[j]), int(bounds[j + 1]))
            out.append(self._top(user, self.products[rows], scores[part], self.repeat[rows], k, (), X[part]))
            j += 1
        return out

    def gather(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Snapshot row indices of the users at ``positions`` (indices into ``users``), user after
        user, and the number of rows of each."""
        starts = self.offsets[positions]
        counts = self.offsets[positions + 1] - starts
        idx = np.repeat(starts - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
        return idx, counts

    def basket(self, user_id: int, ctx: Context, fresh: UserRows | None = None) -> Basket:
        """The F1-optimal basket over the user's past products (Kaggle rule, "None" allowed).

        As offline (``basketcast.pipeline.model.basket.choose_baskets``, behind ``predict --submission``):
        only the ``MAX_CANDIDATES`` most probable past products enter the optimisation.
        """
        view = self.user_view(user_id, fresh)
        if view is None:
            return Basket(
                user_id, np.zeros(0, np.uint32), np.zeros(0, np.float32), True, float("nan"), POPULAR_STRATEGY
            )
        products, repeat, base = view
        probs = self.basket_probabilities(self.features_of(base, ctx))[repeat]
        products = products[repeat]
        order = best_first(products, probs)[:MAX_CANDIDATES]
        network_none = float(base[0, self._seq_none]) if self._seq_none is not None else math.nan
        k, none, f1 = optimal_basket(probs[order], none_probability(probs[order], network_none, self.none_source))
        chosen = order[:k]
        return Basket(user_id, products[chosen], probs[chosen], bool(none), float(f1), RANKER_STRATEGY)

    def _top(
        self,
        user_id: int,
        products: np.ndarray,
        scores: np.ndarray,
        repeat: np.ndarray,
        k: int,
        exclude: Collection[int],
        X: np.ndarray,
        bonus: np.ndarray | None = None,
        cart: np.ndarray | None = None,
    ) -> Recommendation:
        """The best ``k`` rows not in ``exclude``, with their reasons (``X``: the rows' full feature
        matrix; ``bonus``: the cart's co-occurrence bonus per row, with the ``cart`` it came from)."""
        products = np.asarray(products)
        keep = ~np.isin(products, np.fromiter(exclude, np.uint32)) if exclude else np.ones(products.size, bool)
        kept = np.flatnonzero(keep)
        rows = kept[best_first(products[kept], scores[kept])[:k]]
        top, top_scores = products[rows], scores[rows]
        return Recommendation(
            user_id,
            top,
            top_scores,
            np.asarray(repeat)[rows],
            RANKER_STRATEGY,
            self.reasons(
                top, X[rows], top_scores, None if bonus is None else bonus[rows], () if cart is None else cart
            ),
        )

    def reasons(
        self,
        products: np.ndarray,
        X: np.ndarray,
        scores: np.ndarray,
        bonus: np.ndarray | None = None,
        cart: Collection[int] = (),
    ) -> tuple[str, ...]:
        """Why each of ``products`` is recommended (``basketcast.serving.reasons``), from its row of the full
        feature matrix ``X`` (what the ranker scored), its served ``scores`` and, with a cart, the
        co-occurrence ``bonus`` each row got from it."""
        values: dict[str, np.ndarray] = {name: X[:, j] for name, j in self._reason_cols.items()}
        departments = [self.product_info(p)[2] for p in products.tolist()]
        partners: list[str | None] | None = None
        if bonus is not None and len(cart) and self.related is not None:
            driven = R.cart_driven(bonus, scores)
            partners = [None] * products.size
            if driven.any():
                ids, _ = R.cart_partners(self.related, np.fromiter(cart, np.uint32), products[driven])
                for i, partner in zip(np.flatnonzero(driven).tolist(), ids.tolist(), strict=True):
                    partners[i] = self.product_info(partner)[0] if partner else None
        return tuple(R.explain(values, departments, partners))

    def _popular(self, user_id: int, k: int, exclude: Collection[int]) -> Recommendation:
        products = self.popular_products
        keep = ~np.isin(products, np.fromiter(exclude, np.uint32)) if exclude else np.ones(products.size, bool)
        chosen = np.flatnonzero(keep)[:k]
        return Recommendation(
            user_id,
            np.asarray(products[chosen]),
            np.asarray(self.popular_scores[chosen]),
            np.zeros(chosen.size, bool),
            POPULAR_STRATEGY,
            (R.POPULAR,) * chosen.size,
        )


def _positive_column(outputs: list[Any]) -> np.ndarray:
    """Scores from an ONNX output: the P(class 1) column of a classifier, else the single column."""
    out = outputs[-1] if len(outputs) > 1 else outputs[0]
    out = np.asarray(out, dtype=np.float32)
    return out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(-1)
