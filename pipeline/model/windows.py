"""The learning set, as one recipe: roles, label windows, the training budget, candidate rows.

Read top to bottom, this is how ``basketcast train`` turns a data folder into rows a ranker learns
from (the way RecTools' ``CandidateRankingModel`` reads):

1. **Roles** (:func:`split_users`): every user with a window-0 cutoff is *fit* (trained on),
   *stop* (early stopping and the choice of objective) or *valid* (held out for the report; at
   most ``evaluation.max_users`` of them are evaluated, :func:`evaluation_users`).
2. **Label windows** (:func:`build_windows`): window 0 predicts each user's last labelled order,
   window w the order w before it; each window's features and ALS see only the orders before its
   own targets (``basketcast.features.history.as_of``).
3. **The budget**: windows are added from the most recent back until ``max_training_groups``
   (window, fit user) groups are used, the last one sampled by a seed; later windows are not built.
4. **Rows** (:func:`build_window`): candidates (past products ∪ ALS), their features as of the
   cutoff and a label (1 when the product is in the target order); :func:`rows_of` selects
   users' rows across windows, sorted by (window, user) as the rankers' groups require.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from basketcast.features import cutoffs as C
from basketcast.features.build import FeatureTables, PublishedTables
from basketcast.features.history import History, as_of
from basketcast.features.sequence import SequenceScorer
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.model.candidates import NUMPY_TOPK_USERS, ALSModel, candidates
from basketcast.pipeline.progress import Timings

log = logging.getLogger(__name__)

FIT, STOP, VALID = "fit", "stop", "valid"
STOP_SHARE = 0.1  # of the non-validation users, held out for early stopping


def split_users(users: np.ndarray, valid_share: float, seed: int) -> pl.DataFrame:
    """Assign each user a role — fit, stop (early stopping) or valid — by a seeded permutation.

    ``valid_share`` of the users are valid (none when 0); STOP_SHARE of the rest stop; others fit.
    """
    users = np.sort(np.asarray(users, dtype=np.uint32))
    order = np.random.default_rng(seed).permutation(users.size)
    n_valid = max(1, round(users.size * valid_share)) if valid_share > 0 else 0
    n_stop = max(1, round((users.size - n_valid) * STOP_SHARE))
    roles = np.empty(users.size, dtype=object)
    roles[order[:n_valid]] = VALID
    roles[order[n_valid : n_valid + n_stop]] = STOP
    roles[order[n_valid + n_stop :]] = FIT
    return pl.DataFrame({S.USER: users, S.ROLE: roles.astype(str)})


def sample_users(users: pl.Series, n: int | None, seed: int) -> pl.Series:
    """``users`` sorted, or a seeded sample of ``n`` of them (sorted) when there are more."""
    users = users.sort()
    if n is None or users.len() <= n:
        return users
    keep = np.sort(np.random.default_rng(seed).choice(users.len(), size=n, replace=False))
    return users.gather(keep)


def evaluation_users(roles: pl.DataFrame, config: TrainConfig) -> pl.Series:
    """The validation users every method is evaluated on (``evaluation.max_users`` of them at most)."""
    valid = roles.filter(pl.col(S.ROLE) == VALID)[S.USER]
    return sample_users(valid, config.evaluation.max_users, config.seed)


def not_enough_orders(config: TrainConfig) -> DataError:
    need = config.windows.min_history + 1
    return DataError(f"no user has enough orders to train on (need at least {need} orders with products)")


MIN_USERS = 3  # one each to fit on, to early-stop on and to validate on


def roles_of(data: Dataset, config: TrainConfig) -> pl.DataFrame:
    """fit / stop / valid for every user with a window-0 cutoff (at least MIN_USERS of them)."""
    cutoffs = C.label_window(data.orders, 0, config.windows.min_history)
    if cutoffs.height == 0:
        raise not_enough_orders(config)
    if cutoffs.height < MIN_USERS:
        need = config.windows.min_history + 1
        raise DataError(
            f"only {cutoffs.height} user(s) have enough orders to train on (at least {need} orders with products); "
            f"basketcast needs at least {MIN_USERS}: one each to train on, to stop the training early and to validate"
        )
    return split_users(cutoffs[S.USER].to_numpy(), config.valid_share, config.seed)


@dataclass
class Window:
    """One label window: cutoffs, visible history, its ALS, candidate features with labels, truth."""

    window: int
    history: History
    als: ALSModel
    frame: pl.DataFrame  # USER, PRODUCT, S.IS_REPEAT, FEATURE_NAMES…, LABEL; sorted by user
    truth: pl.DataFrame  # USER, PRODUCT, REORDERED of the target orders


@dataclass(frozen=True)
class PlannedWindow:
    """A label window to build: its cutoffs and the users who get rows (None = all of them)."""

    window: int
    cutoffs: pl.DataFrame
    users: pl.Series | None


def plan_windows(data: Dataset, config: TrainConfig, roles: pl.DataFrame | None = None) -> list[PlannedWindow]:
    """Which label windows :func:`build_windows` builds, and for whom (cheap: cutoffs only).

    Without ``roles`` every user of every window gets rows (cross-validation). With them, window
    0 gets rows for the stop users, the evaluated validation users and fit users, and each
    window adds fit users until ``max_training_groups`` of them are used (the last window's a
    seeded sample); windows beyond that budget are not built.
    """
    plan = []
    budget = config.max_training_groups
    for w in range(config.windows.extra_windows + 1):
        if roles is not None and budget is not None and budget <= 0:
            log.info("window %d: not needed, the training budget (%d groups) is used", w, config.max_training_groups)
            break
        cutoffs = C.label_window(data.orders, w, config.windows.min_history)
        if cutoffs.height == 0:
            log.info("window %d: no user has enough orders; skipped", w)
            continue
        users = None
        if roles is not None:
            eligible = roles.filter((pl.col(S.ROLE) == FIT) & pl.col(S.USER).is_in(cutoffs[S.USER].implode()))
            users = sample_users(eligible[S.USER], budget, config.seed + w)
            if budget is not None:
                budget -= users.len()
            if w == 0:
                users = pl.concat(
                    [users, roles.filter(pl.col(S.ROLE) == STOP)[S.USER], evaluation_users(roles, config)]
                )
        plan.append(PlannedWindow(w, cutoffs, users))
    if not plan or plan[0].window != 0:
        raise not_enough_orders(config)
    return plan


def build_windows(
    data: Dataset,
    lines: pl.DataFrame,
    config: TrainConfig,
    timings: Timings,
    roles: pl.DataFrame | None = None,
    network: SequenceScorer | None = None,
    plan: list[PlannedWindow] | None = None,
) -> list[Window]:
    """Window 0..extra_windows as :func:`plan_windows` plans them: cutoffs, history, ALS,
    candidates, features (with the sequence ``network``'s, when given), labels."""
    windows = []
    for planned in plan if plan is not None else plan_windows(data, config, roles):
        window = build_window(
            data, lines, planned.cutoffs, planned.window, config, users=planned.users, timings=timings, network=network
        )
        log.info(
            "window %d: %d users with a cutoff, %d with rows, %d candidate rows, %.1f%% positive",
            planned.window,
            window.history.cutoffs.height,
            window.frame[S.USER].n_unique(),
            window.frame.height,
            100 * (window.frame.select(pl.col(S.LABEL).cast(pl.Float64).mean()).item() or 0.0),
        )
        windows.append(window)
    return windows


def build_window(
    data: Dataset,
    lines: pl.DataFrame,
    cutoffs: pl.DataFrame,
    window: int,
    config: TrainConfig,
    als: ALSModel | None = None,
    users: pl.Series | None = None,
    timings: Timings | None = None,
    network: SequenceScorer | None = None,
) -> Window:
    """Candidates, features and labels for ``cutoffs`` (ALS fitted here unless given).

    The history, ALS and every feature see all users with a cutoff; candidate rows and labels
    are made for ``users`` only (default: all of them). ``timings`` records the three steps.
    """
    timings = timings or Timings()
    with timings.stage(f"window {window}: history + ALS"):
        h = as_of(data, cutoffs, lines)
        als = ALSModel.fit(h.lines, config.als) if als is None else als
    chosen = h.cutoffs[S.USER]
    if users is not None:
        chosen = chosen.filter(chosen.is_in(users.cast(pl.UInt32).implode()))
    frame, truth = window_rows(h, lines, als, chosen, window, config, network=network, timings=timings)
    return Window(window=window, history=h, als=als, frame=frame, truth=truth)


def window_rows(
    h: History,
    lines: pl.DataFrame,
    als: ALSModel,
    users: pl.Series,
    window: int,
    config: TrainConfig,
    *,
    network: SequenceScorer | None = None,
    published: PublishedTables | None = None,
    timings: Timings | None = None,
    numpy_topk_users: int = NUMPY_TOPK_USERS,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The labelled candidate rows of ``users`` in the history ``h`` of one window, and their truth.

    Candidates (past products ∪ ALS), every feature as of the cutoff and the label (1 when the
    product is in the target order). With ``published`` (the product table and TIFU reference of
    the whole window's history), ``h`` may hold only some users (a partition of them on a cluster,
    ``basketcast.pipeline.workflows.cluster_train``) and the rows are those the whole history gives.
    """
    timings = timings or Timings()
    with timings.stage(f"window {window}: candidates ({users.len():,} users)"):
        cands = candidates(h, als, users, config.candidates, numpy_topk_users=numpy_topk_users)
    with timings.stage(f"window {window}: features ({cands.height:,} rows)"):
        frame = FeatureTables.of(h, config.features, network, published=published).frame(cands)
    truth = C.labels(lines, h.cutoffs.join(pl.DataFrame(users), on=S.USER, how="semi"))
    frame = frame.join(
        truth.select(S.USER, S.PRODUCT, pl.lit(1, pl.UInt8).alias(S.LABEL)),
        on=[S.USER, S.PRODUCT],
        how="left",
        maintain_order="left",
    ).with_columns(pl.col(S.LABEL).fill_null(0), pl.lit(window, pl.UInt8).alias(S.WINDOW))
    return frame, truth


def rows_of(windows: list[Window], users: pl.Series, window0_only: bool = False) -> pl.DataFrame:
    """The candidate rows of ``users`` across windows, sorted by (window, user)."""
    picked = [w.frame for w in windows if not window0_only or w.window == 0]
    return pl.concat(picked).filter(pl.col(S.USER).is_in(users.implode())).sort(S.WINDOW, S.USER, maintain_order=True)
