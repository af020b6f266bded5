"""Cart completion: given the first products a shopper put in the cart, rank what they add next.

Each held-out order is cut by its cart position (S.CART_POS, the add-to-cart order): the first
products are the *cart* (known at request time), the others the *rest* (the truth). Every method
ranks products for each user with the user's cart products removed, and is scored against the
rest, split into repeat products (bought by the user before) and new "explore" products.

A *ranking* here is the frame of :func:`basketcast.pipeline.ranking.top_k`: S.USER, S.PRODUCT, S.SCORE and
S.RANK (1 = best), at most k rows per user, ordered by the one tie rule of :mod:`basketcast.pipeline.ranking`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from basketcast.features.sequence import SEQ_STATES
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.evaluation.bootstrap import Difference, paired_bootstrap
from basketcast.pipeline.metrics import NDCG, RECALL, metric_name, per_key_metrics
from basketcast.pipeline.model.cooccurrence import Cooccurrence
from basketcast.pipeline.ranking import top_k
from basketcast.serving.cart import CartScorer

# The weights β that fit_weight tries for "ranker + β · cart score".
WEIGHT_GRID: Final = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

# Internal column names (never leave this module).
_POS: Final = "_pos"
_N: Final = "_n"
_CUT: Final = "_cut"
_ROW: Final = "_row"
_SOURCE: Final = "_source"
_SUM: Final = "_sum"
_CART_N: Final = "_cart_n"
_IN_CART: Final = "_in_cart"


@dataclass(frozen=True)
class CartSplits:
    """Held-out orders cut in two: ``cart`` (S.USER, S.PRODUCT) and ``rest`` (S.USER, S.PRODUCT, S.REORDERED).

    Every user has at least one product in each.
    """

    cart: pl.DataFrame
    rest: pl.DataFrame

    @property
    def users(self) -> pl.Series:
        """The users of the splits, sorted."""
        return self.rest[S.USER].unique().sort()


def _positions(target_lines: pl.DataFrame, min_size: int) -> pl.DataFrame:
    """Lines of the baskets with ≥ ``min_size`` products, by user and cart position, with _POS (0-based) and _N."""
    if min_size < 2:
        raise ValueError(f"min_size must be ≥ 2 (a cart and a rest), got {min_size}")
    return (
        target_lines.select(S.USER, S.PRODUCT, S.CART_POS, S.REORDERED)
        .sort(S.USER, S.CART_POS)
        .with_columns(
            pl.int_range(pl.len(), dtype=pl.Int64).over(S.USER).alias(_POS),
            pl.len().cast(pl.Int64).over(S.USER).alias(_N),
        )
        .filter(pl.col(_N) >= min_size)
    )


def _cut(lines: pl.DataFrame) -> CartSplits:
    in_cart = pl.col(_POS) < pl.col(_CUT)
    return CartSplits(
        cart=lines.filter(in_cart).select(S.USER, S.PRODUCT),
        rest=lines.filter(~in_cart).select(S.USER, S.PRODUCT, S.REORDERED),
    )


def cart_splits(target_lines: pl.DataFrame, min_size: int = 2) -> CartSplits:
    """The first floor(n/2) products of each basket (by S.CART_POS) as the cart, the others as the rest.

    ``target_lines``: S.USER, S.PRODUCT, S.CART_POS, S.REORDERED of one held-out order per user
    (cart positions unique within a basket). Baskets with fewer than ``min_size`` products are left out.
    """
    lines = _positions(target_lines, min_size)
    return _cut(lines.with_columns((pl.col(_N) // 2).alias(_CUT)))


def random_cart_splits(target_lines: pl.DataFrame, seed: int, min_size: int = 2) -> CartSplits:
    """As :func:`cart_splits`, but each basket of n products is cut after m products, m uniform in 1..n-1.

    A sensitivity check: the cart size no longer follows the basket size. Drawn per user in user order.
    """
    lines = _positions(target_lines, min_size)
    sizes = lines.group_by(S.USER).agg(pl.col(_N).first()).sort(S.USER)
    cuts = np.random.default_rng(seed).integers(1, sizes[_N].to_numpy())  # high exclusive: 1..n-1
    sizes = sizes.with_columns(pl.Series(_CUT, cuts, dtype=pl.Int64))
    return _cut(lines.join(sizes.select(S.USER, _CUT), on=S.USER, how="left"))


def _keys_like(frame: pl.DataFrame, like: pl.DataFrame) -> pl.DataFrame:
    """The distinct (S.USER, S.PRODUCT) of ``frame`` cast to the dtypes of ``like``."""
    return frame.select(
        pl.col(S.USER).cast(like.schema[S.USER]), pl.col(S.PRODUCT).cast(like.schema[S.PRODUCT])
    ).unique()


def without_cart(rows: pl.DataFrame, scores: np.ndarray, cart: pl.DataFrame, k: int) -> pl.DataFrame:
    """Top ``k`` of each user's ``rows`` (S.USER, S.PRODUCT, …) by ``scores`` (one per row), cart products removed."""
    keys = rows.select(S.USER, S.PRODUCT)
    kept = keys.with_row_index(_ROW).join(_keys_like(cart, keys), on=[S.USER, S.PRODUCT], how="anti")[_ROW].to_numpy()
    return top_k(keys[kept], np.asarray(scores)[kept], k)


def rescored(
    rows: pl.DataFrame, scores: np.ndarray, cart: pl.DataFrame, cart_scores: np.ndarray, weight: float, k: int
) -> pl.DataFrame:
    """:func:`without_cart` of ``scores + weight · cart_scores`` (both one per row of ``rows``).

    For "ranker + β · PMI" (``cart_scores`` from :func:`cart_pmi`) or a cart residual of another model.
    """
    combined = np.asarray(scores, dtype=np.float64) + weight * np.asarray(cart_scores, dtype=np.float64)
    return without_cart(rows, combined, cart, k)


def _cart_pmi_sums(cart: pl.DataFrame, cooc: Cooccurrence) -> pl.DataFrame:
    """Per user and product reachable from the cart's lists: S.USER, S.PRODUCT, S.SCORE (mean PMI over the cart).

    The frame form of :meth:`Cooccurrence.cart_scores` for many users at once: the sum of the
    stored PMI(cart product, product) over the user's distinct cart products, divided by their number.
    """
    lengths = np.diff(np.asarray(cooc.offsets))
    edges = pl.DataFrame(
        {
            _SOURCE: np.repeat(np.asarray(cooc.products), lengths),
            S.PRODUCT: np.asarray(cooc.related),
            _SUM: np.asarray(cooc.pmi).astype(np.float64),
        },
        schema={_SOURCE: pl.UInt32(), S.PRODUCT: pl.UInt32(), _SUM: pl.Float64()},
    )
    distinct = cart.select(pl.col(S.USER), pl.col(S.PRODUCT).cast(pl.UInt32).alias(_SOURCE)).unique()
    n_cart = distinct.group_by(S.USER).agg(pl.len().cast(pl.Float64).alias(_CART_N))
    return (
        distinct.join(edges, on=_SOURCE, how="inner")
        .group_by(S.USER, S.PRODUCT)
        .agg(pl.col(_SUM).sum())
        .join(n_cart, on=S.USER, how="left")
        .select(S.USER, S.PRODUCT, (pl.col(_SUM) / pl.col(_CART_N)).alias(S.SCORE))
    )


def cart_pmi(rows: pl.DataFrame, cart: pl.DataFrame, cooc: Cooccurrence) -> np.ndarray:
    """Per row of ``rows`` (S.USER, S.PRODUCT): the mean PMI between the user's cart and the product (float32).

    As :meth:`Cooccurrence.cart_scores` per user: 0 for pairs not stored, for users without a
    cart and for the cart's own products.
    """
    keys = rows.select(pl.col(S.USER), pl.col(S.PRODUCT).cast(pl.UInt32))
    sums = _cart_pmi_sums(cart.with_columns(pl.col(S.USER).cast(keys.schema[S.USER])), cooc)
    in_cart = _keys_like(cart, keys).with_columns(pl.lit(True).alias(_IN_CART))
    scored = (
        keys.with_row_index(_ROW)
        .join(sums, on=[S.USER, S.PRODUCT], how="left")
        .join(in_cart, on=[S.USER, S.PRODUCT], how="left")
        .sort(_ROW)
        .select(pl.when(pl.col(_IN_CART).is_null()).then(pl.col(S.SCORE).fill_null(0.0)).otherwise(0.0))
    )
    return scored.to_series().to_numpy().astype(np.float32)


def cooccurrence_ranking(
    cart: pl.DataFrame, cooc: Cooccurrence, k: int, candidates: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Rank by the mean PMI between the user's cart and each product, cart products removed.

    Without ``candidates``: over every product in the related lists of the user's cart products
    (users whose cart reaches nothing get no rows). With ``candidates`` (S.USER, S.PRODUCT rows):
    over those rows only, products the cart does not reach scoring 0.
    """
    if candidates is None:
        sums = _cart_pmi_sums(cart, cooc)
        return without_cart(sums, sums[S.SCORE].to_numpy(), cart, k)
    return without_cart(candidates, cart_pmi(candidates, cart, cooc), cart, k)


def fit_weight(
    rows: pl.DataFrame,
    scores: np.ndarray,
    cart_scores: np.ndarray,
    splits: CartSplits,
    users: pl.Series | Sequence[int] | None = None,
    grid: Sequence[float] = WEIGHT_GRID,
    k: int = 10,
) -> float:
    """The weight β of ``grid`` maximising the mean NDCG@k of ``splits.rest`` for ``rescored(..., β)``.

    Evaluated over ``users`` (e.g. the stop users; default every user of the splits). Ties go to
    the smallest weight, so a cart score that does not help gives the smallest weight of the grid.
    """
    chosen = splits.users if users is None else pl.Series(S.USER, users).cast(splits.rest.schema[S.USER])
    selected = pl.DataFrame({S.USER: chosen})
    in_users = rows.select(pl.col(S.USER).cast(selected.schema[S.USER]).is_in(chosen.implode())).to_series()
    mask = in_users.to_numpy()
    sub_rows, sub_scores, sub_cart_scores = (
        rows.filter(in_users),
        np.asarray(scores)[mask],
        np.asarray(cart_scores)[mask],
    )
    truth = splits.rest.join(selected, on=S.USER, how="semi").select(S.USER, S.PRODUCT)
    if truth.height == 0:
        raise ValueError("fit_weight: none of the given users is in the splits")
    cart = splits.cart.join(selected, on=S.USER, how="semi")
    best_weight, best_ndcg = math.nan, -math.inf
    for weight in sorted(grid):
        ranking = rescored(sub_rows, sub_scores, cart, sub_cart_scores, weight, k)
        ndcg = float(_metrics(ranking, truth, k)[1].mean())
        if ndcg > best_ndcg:
            best_weight, best_ndcg = weight, ndcg
    return float(best_weight)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CartMethod(_Part):
    """One method's mean Recall@k and NDCG@k against the rest, and against its repeat / explore parts.

    The repeat (explore) figures are over the users whose rest holds repeat (new) products; NaN when none does.
    """

    recall: float
    ndcg: float
    repeat_recall: float
    repeat_ndcg: float
    explore_recall: float
    explore_ndcg: float


class CartComparison(_Part):
    """A method minus the reference, per user, paired bootstrap (see
    :mod:`basketcast.pipeline.evaluation.bootstrap`)."""

    ndcg: Difference
    recall: Difference


class CartCompletion(_Part):
    """Every method on the same cart splits: metrics at ``k`` and differences from ``reference``."""

    k: int
    users: int  # users with a cart and a rest
    repeat_users: int  # ... whose rest holds a product they bought before
    explore_users: int  # ... whose rest holds a product new to them
    mean_cart_size: float
    mean_rest_size: float
    reference: str
    methods: dict[str, CartMethod]
    versus_reference: dict[str, CartComparison]  # every method but the reference

    def markdown(self) -> str:
        """One Markdown table: a row per method, differences from the reference with their intervals."""

        def num(value: float) -> str:
            return "n/a" if math.isnan(value) else f"{value:.4f}"

        def diff(d: Difference | None) -> str:
            return "—" if d is None else f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"

        k = self.k
        level = next((c.ndcg.level for c in self.versus_reference.values()), 0.95)
        header = (
            f"| method | Recall@{k} | NDCG@{k} | repeat Recall@{k} | repeat NDCG@{k} | explore Recall@{k} "
            f"| explore NDCG@{k} | ΔNDCG@{k} vs {self.reference} [{level:.0%} CI] "
            f"| ΔRecall@{k} vs {self.reference} [{level:.0%} CI] |"
        )
        lines = [
            f"Cart completion: {self.users} users ({self.repeat_users} with repeat products in the rest, "
            f"{self.explore_users} with new ones); mean cart {self.mean_cart_size:.1f}, "
            f"mean rest {self.mean_rest_size:.1f} products.",
            "",
            header,
            "|---" * 9 + "|",
        ]
        for name, m in self.methods.items():
            versus = self.versus_reference.get(name)
            cells = [m.recall, m.ndcg, m.repeat_recall, m.repeat_ndcg, m.explore_recall, m.explore_ndcg]
            lines.append(
                f"| {name} | "
                + " | ".join(num(c) for c in cells)
                + f" | {diff(versus.ndcg if versus else None)} | {diff(versus.recall if versus else None)} |"
            )
        return "\n".join(lines) + "\n"


def _metrics(ranking: pl.DataFrame, truth: pl.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user Recall@k and NDCG@k (users of ``truth``, sorted), empty when ``truth`` is."""
    if truth.height == 0:
        return np.zeros(0), np.zeros(0)
    per_user = per_key_metrics(ranking, truth, (k,))
    return per_user[metric_name(RECALL, k)].to_numpy(), per_user[metric_name(NDCG, k)].to_numpy()


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def cart_completion_report(
    splits: CartSplits,
    rankings: Mapping[str, pl.DataFrame],
    history_pairs: pl.DataFrame,
    reference: str,
    k: int = 10,
    resamples: int = 10_000,
    seed: int = 0,
) -> CartCompletion:
    """Score every ranking (S.USER, S.PRODUCT, S.RANK) against the rest of the splits' users.

    ``history_pairs`` (S.USER, S.PRODUCT): what each user bought before the held-out order; it
    splits the truth into repeat and explore products. Every method other than ``reference`` gets
    the paired bootstrap interval of its per-user NDCG@k and Recall@k minus the reference's.
    """
    if reference not in rankings:
        raise ValueError(f"reference {reference!r} is not one of the rankings {sorted(rankings)}")
    truth = splits.rest.select(S.USER, S.PRODUCT).unique()
    if truth.height == 0:
        raise ValueError("the cart splits hold no users")
    seen = _keys_like(history_pairs, truth)
    repeat_truth = truth.join(seen, on=[S.USER, S.PRODUCT], how="semi")
    explore_truth = truth.join(seen, on=[S.USER, S.PRODUCT], how="anti")

    per_user: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    methods: dict[str, CartMethod] = {}
    for name, ranking in rankings.items():
        recall, ndcg = per_user[name] = _metrics(ranking, truth, k)
        repeat_recall, repeat_ndcg = _metrics(ranking, repeat_truth, k)
        explore_recall, explore_ndcg = _metrics(ranking, explore_truth, k)
        methods[name] = CartMethod(
            recall=_mean(recall),
            ndcg=_mean(ndcg),
            repeat_recall=_mean(repeat_recall),
            repeat_ndcg=_mean(repeat_ndcg),
            explore_recall=_mean(explore_recall),
            explore_ndcg=_mean(explore_ndcg),
        )
    ref_recall, ref_ndcg = per_user[reference]
    versus = {
        name: CartComparison(
            ndcg=paired_bootstrap(ndcg, ref_ndcg, resamples=resamples, seed=seed),
            recall=paired_bootstrap(recall, ref_recall, resamples=resamples, seed=seed),
        )
        for name, (recall, ndcg) in per_user.items()
        if name != reference
    }
    n_users = truth[S.USER].n_unique()
    return CartCompletion(
        k=k,
        users=n_users,
        repeat_users=repeat_truth[S.USER].n_unique(),
        explore_users=explore_truth[S.USER].n_unique(),
        mean_cart_size=splits.cart.height / max(splits.cart[S.USER].n_unique(), 1),
        mean_rest_size=truth.height / n_users,
        reference=reference,
        methods=methods,
        versus_reference=versus,
    )


# ---------------------------------------------------------------------------------------------
# The stage: β chosen on stop users, the table on validation users


WITHOUT_CART: Final = "lightgbm_without_cart"
COOCCURRENCE: Final = "cooccurrence"
COOCCURRENCE_CANDIDATES: Final = "cooccurrence_candidates"
WITH_CART: Final = "lightgbm_plus_cooccurrence"
WITH_ATTENTION: Final = "lightgbm_plus_cart_attention"
WITH_BOTH: Final = "lightgbm_plus_cart_attention_and_cooccurrence"


def target_lines(lines: pl.DataFrame, cutoffs: pl.DataFrame) -> pl.DataFrame:
    """The lines of each cutoff's target order: USER, PRODUCT, CART_POS, REORDERED."""
    return lines.join(
        cutoffs.select(S.USER, pl.col(S.TARGET_ORDER_NUMBER).cast(lines.schema[S.ORDER_NUMBER]).alias(S.ORDER_NUMBER)),
        on=[S.USER, S.ORDER_NUMBER],
        how="semi",
    ).select(S.USER, S.PRODUCT, S.CART_POS, S.REORDERED)


@dataclass(frozen=True)
class CartStage:
    """The weights chosen on the stop users — β of the co-occurrence term and γ of the cart
    attention, as served together — and the cart-completion table (validation users)."""

    weight: float
    network_weight: float
    report: CartCompletion | None


def cart_deltas(scorer: CartScorer, rows: pl.DataFrame, cart: pl.DataFrame) -> np.ndarray:
    """The cart attention's g for every row (USER, PRODUCT, seq_state_*; 0 for new products)."""
    users = np.unique(rows[S.USER].to_numpy())
    per_user = cart.group_by(S.USER).agg(pl.col(S.PRODUCT))
    baskets = dict(zip(per_user[S.USER].to_list(), per_user[S.PRODUCT].to_list(), strict=True))
    carts = [np.asarray(baskets.get(int(u), []), dtype=np.uint32) for u in users]
    row_user = np.searchsorted(users, rows[S.USER].to_numpy())
    states = rows.select(SEQ_STATES).to_numpy().astype(np.float32)
    return scorer.deltas(row_user, rows[S.PRODUCT].to_numpy(), states, carts)


def _restrict(splits: CartSplits, users: pl.Series) -> CartSplits:
    keep = pl.DataFrame({S.USER: users.unique()}).cast({S.USER: splits.rest.schema[S.USER]})
    return CartSplits(
        cart=splits.cart.join(keep, on=S.USER, how="semi"), rest=splits.rest.join(keep, on=S.USER, how="semi")
    )


def cart_stage(
    history_lines: pl.DataFrame,
    target: pl.DataFrame,
    stop: tuple[pl.DataFrame, np.ndarray],
    valid: tuple[pl.DataFrame, np.ndarray],
    history_pairs: pl.DataFrame,
    scorer: CartScorer | None = None,
    k: int = 10,
) -> CartStage:
    """Co-occurrence of ``history_lines`` (the baskets before the targets); on the stop users'
    carts (``stop``: their candidate rows and ranker scores; each basket cut in half by
    ``add_to_cart_order``) γ of "ranker + γ · cart attention" and then β of "+ β · mean PMI to the
    cart"; on the validation users (``valid``) the table: the ranker without the cart,
    co-occurrence alone (over every product, and over the candidates), the ranker + β · PMI (β
    chosen alone), + γ · cart attention, and both as served."""
    cooc = Cooccurrence.of(history_lines)
    splits = cart_splits(target)
    stop_rows, stop_scores = stop
    stop_users = stop_rows[S.USER].unique()
    stop_splits = _restrict(splits, stop_users)
    beta_alone = gamma = beta = 0.0
    if stop_splits.rest.height:
        stop_pmi = cart_pmi(stop_rows, stop_splits.cart, cooc)
        beta_alone = fit_weight(stop_rows, stop_scores, stop_pmi, stop_splits)
        beta = beta_alone
        if scorer is not None:
            stop_g = cart_deltas(scorer, stop_rows, stop_splits.cart)
            gamma = fit_weight(stop_rows, stop_scores, stop_g, stop_splits)
            beta = fit_weight(stop_rows, stop_scores + gamma * stop_g, stop_pmi, stop_splits)
    rows, scores = valid
    cut = _restrict(splits, rows[S.USER])
    if cut.rest.height == 0:
        return CartStage(beta, gamma, None)
    pmi = cart_pmi(rows, cut.cart, cooc)
    rankings = {
        WITHOUT_CART: without_cart(rows, scores, cut.cart, k),
        COOCCURRENCE: cooccurrence_ranking(cut.cart, cooc, k),
        COOCCURRENCE_CANDIDATES: cooccurrence_ranking(cut.cart, cooc, k, candidates=rows.select(S.USER, S.PRODUCT)),
        WITH_CART: rescored(rows, scores, cut.cart, pmi, beta_alone, k),
    }
    if scorer is not None:
        g = cart_deltas(scorer, rows, cut.cart)
        rankings[WITH_ATTENTION] = rescored(rows, scores, cut.cart, g, gamma, k)
        rankings[WITH_BOTH] = rescored(rows, scores + gamma * g, cut.cart, pmi, beta, k)
    return CartStage(beta, gamma, cart_completion_report(cut, rankings, history_pairs, WITHOUT_CART, k))
