"""The sequence network as a stage of ``basketcast train`` and of k-fold evaluation.

It runs before the ranker's label windows are featurised, because its outputs are among their
features: it learns from the orders just older than the oldest label window the plan builds
(``basketcast.pipeline.model.sequence.training_windows``), then every window, the evaluation and the serving
snapshot read it through onnxruntime.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.model.cart_network import train_cart
from basketcast.pipeline.model.sequence import SequenceModel, train_sequence
from basketcast.pipeline.model.windows import FIT, STOP, STOP_SHARE, PlannedWindow
from basketcast.pipeline.progress import Timings

log = logging.getLogger(__name__)


def fit_network(
    data: Dataset,
    lines: pl.DataFrame,
    config: TrainConfig,
    plan: list[PlannedWindow],
    timings: Timings,
    *,
    roles: pl.DataFrame | None = None,
    all_users: pl.Series | None = None,
    with_cart: bool = True,
) -> SequenceModel | None:
    """Train the network for the windows of ``plan`` (None when disabled or without old enough
    orders). Fit and stop users are the roles' (``roles``), or a seeded STOP_SHARE of
    ``all_users`` stops and the rest fit (cross-validation: no user is validated on those
    orders, which are older than every ranker window). ``with_cart`` also trains the cart
    attention (``basketcast.pipeline.model.cart_network``) after it."""
    if not config.sequence.enabled:
        return None
    if roles is not None:
        fit_users = roles.filter(pl.col(S.ROLE) == FIT)[S.USER]
        stop_users = roles.filter(pl.col(S.ROLE) == STOP)[S.USER]
    else:
        users = np.sort(np.asarray(all_users if all_users is not None else [], dtype=np.uint32))
        stop = np.random.default_rng(config.seed).random(users.size) < STOP_SHARE
        fit_users, stop_users = pl.Series(S.USER, users[~stop]), pl.Series(S.USER, users[stop])
    oldest = max(p.window for p in plan)
    with timings.stage(f"sequence network (windows older than {oldest}; PyTorch → ONNX)"):
        model = train_sequence(data, lines, oldest, fit_users, stop_users, config.sequence, config.windows.min_history)
    if model is not None and with_cart:
        # The cart attention learns on window 1, a ranker window: the network never trained on its
        # orders, so its logit there is out-of-sample, as at serving time. Window 0 is not used: in
        # cross-validation it holds every user's evaluated order. One window only: the network's own.
        cart_window = 1 if oldest >= 1 else None
        with timings.stage("cart attention (PyTorch → ONNX)"):
            model.cart = train_cart(
                data, lines, model, fit_users, stop_users, config.windows.min_history, config.seed, cart_window
            )
    return model
