"""``basketcast train``: from a data folder to a published run folder.

The recipe: roles and label windows (``basketcast.pipeline.model.windows``) → rankers (``basketcast.pipeline.model.
training``) → the evaluation report on held-out users (``basketcast.pipeline.evaluation``) → ALS on all
known orders and the serving bundle (``basketcast.pipeline.workflows.export``) → the run folder
(``basketcast.pipeline.workflows.run_folder``), published atomically.

The label windows with the rankers, and the snapshot's rows, are the two steps that grow with the
shoppers: ``train`` takes them as parameters (``learn``, ``snapshot``), in this process by default
or on a Dask cluster (``basketcast.pipeline.workflows.cluster_train.ClusterSession``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from basketcast.features.history import History, order_lines
from basketcast.features.sequence import SequenceScorer
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import check_output, publishing_dir
from basketcast.pipeline.data.storage import Dataset, read_dataset, read_manifest
from basketcast.pipeline.errors import ExportError
from basketcast.pipeline.evaluation.cart import cart_stage, target_lines
from basketcast.pipeline.evaluation.evaluate import choose_none_source, evaluation_report, per_user_metrics
from basketcast.pipeline.evaluation.report import EvaluationReport, write_report
from basketcast.pipeline.model.candidates import ALSModel
from basketcast.pipeline.model.training import Rankers, fit_rankers
from basketcast.pipeline.model.windows import (
    FIT,
    STOP,
    VALID,
    PlannedWindow,
    Window,
    build_windows,
    evaluation_users,
    plan_windows,
    roles_of,
    rows_of,
)
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.workflows.export import SnapshotRows, latest_history, snapshot_rows_locally, write_bundle
from basketcast.pipeline.workflows.run_folder import PER_USER, RUN_FOLDER, DataRef, RunFolder, RunManifest, ServingRef
from basketcast.pipeline.workflows.sequence_stage import fit_network
from basketcast.serving.cart import CartScorer

log = logging.getLogger(__name__)
LIBRARIES = ("polars", "numpy", "lightgbm", "xgboost-cpu", "implicit", "scipy", "pyarrow", "torch", "onnxruntime")


@dataclass
class TrainResult:
    run_dir: Path
    report: EvaluationReport
    timings: Timings


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


@dataclass
class Learned:
    """What the learning stage hands to the rest of ``train``: window 0 (history, ALS, and the rows
    of at least the stop and evaluated users), the rankers, the roles of users with rows, and the
    learning set's size for the manifest."""

    window0: Window
    rankers: Rankers
    roles: pl.DataFrame
    stats: dict[str, Any]


class Learner(Protocol):
    """Builds the label windows' rows and trains the rankers (:func:`learn_locally`, or
    ``ClusterSession.learn`` on a Dask cluster)."""

    def __call__(
        self,
        data: Dataset,
        lines: pl.DataFrame,
        config: TrainConfig,
        timings: Timings,
        roles: pl.DataFrame,
        network: SequenceScorer | None,
        plan: list[PlannedWindow],
    ) -> Learned: ...


def learn_locally(
    data: Dataset,
    lines: pl.DataFrame,
    config: TrainConfig,
    timings: Timings,
    roles: pl.DataFrame,
    network: SequenceScorer | None,
    plan: list[PlannedWindow],
) -> Learned:
    """The label windows and the rankers in this process (``basketcast.pipeline.model.windows``, ``.training``)."""
    windows = build_windows(data, lines, config, timings, roles, network=network, plan=plan)
    # A user whose cutoff has no visible order (possible only with gaps in order numbers) has no rows.
    roles = roles.join(windows[0].history.cutoffs.select(S.USER), on=S.USER, how="semi")
    with timings.stage("rankers (LightGBM lambdarank + binary, XGBoost baseline)"):
        rankers = fit_rankers(windows, roles, config)
    return Learned(window0=windows[0], rankers=rankers, roles=roles, stats=_window_stats(windows, roles, rankers))


def train(
    data_dir: Path,
    out: Path,
    config: TrainConfig,
    *,
    force: bool = False,
    learn: Learner = learn_locally,
    snapshot: SnapshotRows = snapshot_rows_locally,
) -> TrainResult:
    """Train on DATA_DIR and publish a run folder at ``out`` (atomically; an existing ``out`` is
    replaced only when it is a run folder, or with ``force``). ``learn`` builds the label windows
    and the rankers, ``snapshot`` the serving snapshot's rows: in this process by default, on a
    Dask cluster with ``basketcast.pipeline.workflows.cluster_train.ClusterSession``."""
    check_output(out, RUN_FOLDER, force, inputs=[data_dir])
    timings = Timings()
    started = time.time()
    with timings.stage("load data"):
        data = read_dataset(data_dir)
        manifest_in = read_manifest(data_dir)
        lines = order_lines(data)
    roles = roles_of(data, config)
    plan = plan_windows(data, config, roles)
    sequence = fit_network(data, lines, config, plan, timings, roles=roles)
    network = sequence.scorer if sequence is not None else None
    learned = learn(data, lines, config, timings, roles, network, plan)
    roles, rankers = learned.roles, learned.rankers
    valid_users = evaluation_users(roles, config)
    with timings.stage("evaluation on validation users"):  # + cart completion, P(None) choice on stop users
        cart_scorer = (
            CartScorer(sequence.cart.onnx_bytes, sequence.scorer.vocabulary, os.cpu_count() or 1)
            if sequence is not None and sequence.cart is not None
            else None
        )
        report, per_user = _validation_report(learned.window0, lines, roles, valid_users, rankers, config, cart_scorer)
    stats = learned.stats
    als_eval = learned.window0.als
    del learned  # the label windows are done with: free them before the snapshot
    with timings.stage("ALS on all known orders (for prediction)"):
        latest_h = latest_history(data, lines)
        latest = ALSModel.fit(latest_h.lines, config.als)
    manifest = RunManifest(
        schema_version=S.SCHEMA_VERSION,
        data=DataRef(
            path=str(Path(data_dir).resolve()), fingerprint=manifest_in.fingerprint, source=manifest_in.source
        ),
        ranking_objective=rankers.ranking_objective,
        best_iterations={"ranking": rankers.ranking.best_iteration, "basket": rankers.basket.best_iteration},
        **stats,
        evaluated_users=valid_users.len(),
        users={role: int((roles[S.ROLE] == role).sum()) for role in (FIT, STOP, VALID)},
        metrics=report.methods,
        kaggle_f1=report.kaggle_f1,
        sequence=sequence.meta() if sequence is not None else None,
        versions=_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    )
    with publishing_dir(out, RUN_FOLDER, force=force, inputs=[data_dir]) as tmp:
        folder = RunFolder(tmp)
        folder.save_rankers(rankers)
        als_eval.save(folder.als_eval)
        latest.save(folder.als_latest)
        roles.write_parquet(folder.roles)
        folder.save_features()
        folder.save_config(config)
        if sequence is not None:
            sequence.scorer.save(folder.sequence, sequence.meta(), sequence.cart.onnx_bytes if sequence.cart else None)
        folder.report.mkdir()
        write_report(report, folder.report, "Validation report", rankers.importance())
        per_user.write_parquet(folder.report / PER_USER)
        _publish_bundle(folder, manifest, data, latest_h, rankers, latest, config, timings, network, report, snapshot)
    return TrainResult(run_dir=Path(out), report=report, timings=timings)


def _validation_report(
    window: Window,
    lines: pl.DataFrame,
    roles: pl.DataFrame,
    users: pl.Series,
    rankers: Rankers,
    config: TrainConfig,
    cart_scorer: CartScorer | None,
) -> tuple[EvaluationReport, pl.DataFrame]:
    """Every method on the validation users' window-0 orders, with the rankers' objective choice;
    the stop users choose the P(None) source of the baskets and the cart weight β, and the
    validation users' carts give the cart-completion table. Also the ranker's per-user metrics
    (``report/per_user.parquet``, what promotion compares)."""
    rows = rows_of([window], users, window0_only=True)
    scores = rankers.score(rows)
    report = evaluation_report(window, users, rows, scores, config)
    per_user = per_user_metrics(window, users, rows, scores["ranking"])
    stop_users = roles.filter(pl.col(S.ROLE) == STOP)[S.USER]
    stop_rows = rows_of([window], stop_users, window0_only=True)
    stop_scores = rankers.score(stop_rows)
    none_source = choose_none_source(window, stop_rows, stop_scores["basket"], stop_users)
    cart = cart_stage(
        window.history.lines,
        target_lines(lines, window.history.cutoffs),
        (stop_rows, stop_scores["ranking"]),
        (rows, scores["ranking"]),
        window.history.user_products.select(S.USER, S.PRODUCT),
        cart_scorer,
    )
    report = report.model_copy(
        update={
            "ranking_objective": rankers.ranking_objective,
            "selection": rankers.selection,
            "cart_completion": cart.report,
            "cart_weight": cart.weight,
            "cart_attention_weight": cart.network_weight,
            "none_source": none_source,
        }
    )
    return report, per_user


def _window_stats(windows: list[Window], roles: pl.DataFrame, rankers: Rankers) -> dict[str, Any]:
    """The learning set's size for the manifest: windows, their rows, the fit users' rows and groups."""
    fit_users = roles.filter(pl.col(S.ROLE) == FIT)[S.USER].implode()
    fit_frames = [w.frame.filter(pl.col(S.USER).is_in(fit_users)) for w in windows]
    return {
        "windows": [w.window for w in windows],
        "window_rows": [w.frame.height for w in windows],
        "training_rows": rankers.training_rows,
        "training_candidate_rows": sum(f.height for f in fit_frames),
        "training_groups": sum(f[S.USER].n_unique() for f in fit_frames),
    }


def _publish_bundle(
    folder: RunFolder,
    manifest: RunManifest,
    data: Dataset,
    latest_h: History,
    rankers: Rankers,
    latest: ALSModel,
    config: TrainConfig,
    timings: Timings,
    network: SequenceScorer | None,
    report: EvaluationReport,
    snapshot: SnapshotRows,
) -> None:
    """The serving bundle, then the run manifest that points at it (written last)."""
    bundle = write_bundle(
        folder.bundle,
        data,
        latest_h,
        rankers,
        latest,
        config,
        timings,
        network,
        cart_weight=report.cart_weight or 0.0,
        cart_attention_weight=report.cart_attention_weight or 0.0,
        none_source=report.none_source or "product",
        cart_files=folder.sequence,
        rows=snapshot,
    )
    if bundle.parity is None:
        raise ExportError(f"{folder.bundle}: the bundle was written without a parity check")
    serving = ServingRef(
        version=bundle.version, users=bundle.users, rows=bundle.rows, onnx_bytes=bundle.onnx_bytes, parity=bundle.parity
    )
    manifest.model_copy(update={"serving": serving, "timings": timings.as_dict()}).save(folder.manifest)
