"""``basketcast train``: from a data folder to a published run folder.

The recipe: roles and label windows (``pipeline.model.windows``) → rankers (``pipeline.model.
training``) → the evaluation report on held-out users (``pipeline.evaluation``) → ALS on all
known orders and the serving bundle (``pipeline.workflows.export``) → the run folder
(``pipeline.workflows.run_folder``), published atomically.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from features.history import History, order_lines
from pipeline.config import TrainConfig
from pipeline.data import schema as S
from pipeline.data.publish import check_output, publishing_dir
from pipeline.data.storage import Dataset, read_dataset, read_manifest
from pipeline.errors import ExportError
from pipeline.evaluation.evaluate import evaluation_report
from pipeline.evaluation.report import EvaluationReport, write_report
from pipeline.model.candidates import ALSModel
from pipeline.model.training import Rankers, fit_rankers
from pipeline.model.windows import FIT, STOP, VALID, Window, build_windows, evaluation_users, roles_of, rows_of
from pipeline.progress import Timings
from pipeline.workflows.export import latest_history, write_bundle
from pipeline.workflows.run_folder import RUN_FOLDER, DataRef, RunFolder, RunManifest, ServingRef

log = logging.getLogger(__name__)
LIBRARIES = ("polars", "numpy", "lightgbm", "xgboost-cpu", "implicit", "scipy", "pyarrow")


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


def train(data_dir: Path, out: Path, config: TrainConfig, *, force: bool = False) -> TrainResult:
    """Train on DATA_DIR and publish a run folder at ``out`` (atomically; an existing ``out`` is
    replaced only when it is a run folder, or with ``force``)."""
    check_output(out, RUN_FOLDER, force, inputs=[data_dir])
    timings = Timings()
    started = time.time()
    with timings.stage("load data"):
        data = read_dataset(data_dir)
        manifest_in = read_manifest(data_dir)
        lines = order_lines(data)
    roles = roles_of(data, config)
    windows = build_windows(data, lines, config, timings, roles)
    # A user whose cutoff has no visible order (possible only with gaps in order numbers) has no rows.
    roles = roles.join(windows[0].history.cutoffs.select(S.USER), on=S.USER, how="semi")
    with timings.stage("rankers (LightGBM lambdarank + binary, XGBoost baseline)"):
        rankers = fit_rankers(windows, roles, config)
    valid_users = evaluation_users(roles, config)
    with timings.stage("evaluation on validation users"):
        report = _validation_report(windows[0], valid_users, rankers, config)
    stats = _window_stats(windows, roles, rankers)
    als_eval = windows[0].als
    del windows  # the label windows are done with: free them before the snapshot
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
        folder.report.mkdir()
        write_report(report, folder.report, "Validation report", rankers.importance())
        _publish_bundle(folder, manifest, data, latest_h, rankers, latest, config, timings)
    return TrainResult(run_dir=Path(out), report=report, timings=timings)


def _validation_report(window: Window, users: pl.Series, rankers: Rankers, config: TrainConfig) -> EvaluationReport:
    """Every method on the validation users' window-0 orders, with the rankers' objective choice."""
    rows = rows_of([window], users, window0_only=True)
    report = evaluation_report(window, users, rows, rankers.score(rows), config)
    return report.model_copy(update={"ranking_objective": rankers.ranking_objective, "selection": rankers.selection})


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
) -> None:
    """The serving bundle, then the run manifest that points at it (written last)."""
    bundle = write_bundle(folder.bundle, data, latest_h, rankers, latest, config, timings)
    if bundle.parity is None:
        raise ExportError(f"{folder.bundle}: the bundle was written without a parity check")
    serving = ServingRef(
        version=bundle.version, users=bundle.users, rows=bundle.rows, onnx_bytes=bundle.onnx_bytes, parity=bundle.parity
    )
    manifest.model_copy(update={"serving": serving, "timings": timings.as_dict()}).save(folder.manifest)
