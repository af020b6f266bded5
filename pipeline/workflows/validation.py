"""``basketcast evaluate``: a run re-evaluated on its validation users, or k-fold cross-validation.

:func:`evaluate` rebuilds the run's window 0 for the users its report was computed on and scores
them with its rankers; :func:`cross_validate` trains fresh rankers with the run's config for each
of k folds of users and predicts the held-out fold, so every user's last labelled order is
predicted once by a model that never saw that user.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from basketcast.features import cutoffs as C
from basketcast.features.history import order_lines
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import check_output, publishing_dir
from basketcast.pipeline.data.storage import Dataset, read_dataset, read_manifest
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.evaluation.evaluate import evaluation_report
from basketcast.pipeline.evaluation.report import REPORT_FOLDER, EvaluationReport, markdown, write_report
from basketcast.pipeline.model.training import fit_rankers
from basketcast.pipeline.model.windows import (
    Window,
    build_window,
    build_windows,
    evaluation_users,
    plan_windows,
    rows_of,
    split_users,
)
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.workflows.run_folder import Run, load_run
from basketcast.pipeline.workflows.sequence_stage import fit_network

log = logging.getLogger(__name__)


def evaluation_window(data: Dataset, lines: pl.DataFrame, run: Run) -> tuple[Window, pl.Series]:
    """The run's window-0 evaluation rebuilt: features cut before each user's last labelled order,
    the run's evaluation ALS, rows for the users its report was computed on (returned too)."""
    users = evaluation_users(pl.read_parquet(run.folder.roles), run.config)
    cutoffs = C.label_window(data.orders, 0, run.config.windows.min_history)
    window = build_window(
        data, lines, cutoffs, 0, run.config, als=run.als(latest=False), users=users, network=run.network()
    )
    return window, users


def evaluate(
    data_dir: Path, run_dir: Path, *, folds: int | None = None, out: Path | None = None, force: bool = False
) -> EvaluationReport:
    """Re-evaluate a run on its validation users, or k-fold over all users with its config.

    Without ``folds`` the data must be the data the run was trained on (same fingerprint); with
    ``folds`` = k see :func:`cross_validate`. Writes the report to ``out`` (default
    RUN_DIR/evaluation, or RUN_DIR/evaluation-kfold) and returns it.
    """
    run = load_run(run_dir)
    out = out or run.folder.evaluation(folds)
    inputs = [Path(data_dir), Path(run_dir)]
    check_output(out, REPORT_FOLDER, force, inputs)
    data = read_dataset(data_dir)
    fingerprint = read_manifest(data_dir).fingerprint
    timings = Timings()
    lines = order_lines(data)
    if folds is None:
        if fingerprint != run.manifest.data.fingerprint:
            raise DataError(
                f"{data_dir}: not the data {run_dir} was trained on (fingerprint {fingerprint} vs "
                f"{run.manifest.data.fingerprint}); use --folds to cross-validate on new data"
            )
        with timings.stage("window 0 features"):
            window, users = evaluation_window(data, lines, run)
        with timings.stage("evaluation"):
            rows = rows_of([window], users)
            report = evaluation_report(window, users, rows, run.rankers.score(rows), run.config)
        title = "Validation report"
    else:
        report = cross_validate(data, lines, run, folds, timings)
        title = f"{folds}-fold cross-validated report"
    report = report.model_copy(update={"timings": timings.as_dict()})
    with publishing_dir(out, REPORT_FOLDER, force=force, inputs=inputs) as tmp:
        write_report(report, tmp, title, run.rankers.importance())
    log.info("\n%s", markdown(report, title))
    return report


def cross_validate(data: Dataset, lines: pl.DataFrame, run: Run, folds: int, timings: Timings) -> EvaluationReport:
    """k-fold over users with the run's config: for each fold, rankers trained on the other folds'
    users (all windows) predict the fold's window-0 orders; one report over every user.

    The sequence network is trained once, on every user's orders older than every ranker window
    (so on no order any fold predicts or trains a ranker on): its outputs are features of the
    same kind the served model computes, out-of-sample in time for every fold.
    """
    if folds < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    plan = plan_windows(data, run.config)
    network = fit_network(data, lines, run.config, plan, timings, all_users=plan[0].cutoffs[S.USER], with_cart=False)
    windows = build_windows(data, lines, run.config, timings, network=network.scorer if network else None, plan=plan)
    all_users = windows[0].history.cutoffs[S.USER].to_numpy()
    fold_of = np.random.default_rng(run.config.seed).permutation(all_users.size) % folds
    parts: list[pl.DataFrame] = []
    score_parts: dict[str, list[np.ndarray]] = {}
    for f in range(folds):
        with timings.stage(f"fold {f + 1}/{folds}"):
            held = pl.Series(S.USER, all_users[fold_of == f])
            roles = split_users(all_users[fold_of != f], 0.0, run.config.seed + f)
            rankers = fit_rankers(windows, roles, run.config)
            rows = rows_of(windows, held, window0_only=True)
            parts.append(rows)
            for name, values in rankers.score(rows).items():
                score_parts.setdefault(name, []).append(values)
    rows = pl.concat(parts)
    order = np.lexsort((rows[S.PRODUCT].to_numpy(), rows[S.USER].to_numpy()))
    rows = rows[order]
    scores = {name: np.concatenate(v)[order] for name, v in score_parts.items()}
    with timings.stage("evaluation"):
        report = evaluation_report(windows[0], pl.Series(S.USER, all_users), rows, scores, run.config)
    return report.model_copy(update={"folds": folds})
