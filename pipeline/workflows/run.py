"""The three model workflows behind the CLI: train, evaluate, predict.

A run folder (RUN_DIR) holds, published atomically:

- ``ranker.txt`` (LightGBM ranking model), ``basket_model.txt`` (binary LightGBM: calibrated
  probabilities for baskets), ``xgboost.json`` (the baseline);
- ``als_eval.npz`` (ALS fitted on the window-0 history, for evaluation) and ``als.npz`` (ALS
  fitted on all known orders, for predicting the next ones);
- ``roles.parquet`` (user → fit / stop / valid), ``features.json`` (feature names, in order);
- ``config.json`` (the resolved TrainConfig), ``manifest.json`` (data fingerprint, schema
  version, metrics, library versions, timings);
- ``report/`` (report.json, report.md, PNG plots).
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features import cutoffs as C
from features.build import FEATURE_NAMES
from features.history import order_lines
from pipeline.config import TrainConfig
from pipeline.data import schema as S
from pipeline.data.storage import (
    DataError,
    Dataset,
    atomic_write_bytes,
    publishing_dir,
    read_dataset,
    read_json,
    read_manifest,
    write_json,
)
from pipeline.evaluation.evaluate import evaluation_report, markdown, write_report
from pipeline.model.basket import choose_baskets
from pipeline.model.candidates import ALSModel
from pipeline.model.training import (
    FIT,
    STOP,
    VALID,
    Rankers,
    Window,
    build_window,
    evaluation_users,
    fit_rankers,
    rows_of,
    sample_users,
    split_users,
    top_k,
)
from pipeline.progress import Timings
from pipeline.workflows.export import latest_history, write_bundle
from serving.model import BUNDLE

log = logging.getLogger(__name__)
RUN_FILES = (
    "ranker.txt",
    "basket_model.txt",
    "als.npz",
    "als_eval.npz",
    "roles.parquet",
    "features.json",
    "config.json",
    "manifest.json",
)
LIBRARIES = ("polars", "numpy", "lightgbm", "xgboost-cpu", "implicit", "scipy", "pyarrow")


@dataclass
class TrainResult:
    run_dir: Path
    report: dict[str, Any]
    timings: Timings


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def build_windows(
    data: Dataset, lines: pl.DataFrame, config: TrainConfig, timings: Timings, roles: pl.DataFrame | None = None
) -> list[Window]:
    """Window 0..extra_windows: cutoffs, history, ALS, candidates, features, labels.

    Without ``roles`` every user of every window gets rows (cross-validation). With them, window
    0 gets rows for the stop users, the evaluated validation users and fit users, and each
    window adds fit users until ``max_training_groups`` of them are used (the last window's a
    seeded sample); windows beyond that budget are not built.
    """
    windows = []
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
        window = build_window(data, lines, cutoffs, w, config, users=users, timings=timings)
        log.info(
            "window %d: %d users with a cutoff, %d with rows, %d candidate rows, %.1f%% positive",
            w,
            window.history.cutoffs.height,
            window.frame[S.USER].n_unique(),
            window.frame.height,
            100 * float(window.frame[S.LABEL].mean()),
        )  # type: ignore[arg-type]
        windows.append(window)
    if not windows or windows[0].window != 0:
        raise _not_enough_orders(config)
    return windows


def _not_enough_orders(config: TrainConfig) -> DataError:
    need = config.windows.min_history + 1
    return DataError(f"no user has enough orders to train on (need at least {need} orders with products)")


def _roles(data: Dataset, config: TrainConfig) -> pl.DataFrame:
    """fit / stop / valid for every user with a window-0 cutoff."""
    cutoffs = C.label_window(data.orders, 0, config.windows.min_history)
    if cutoffs.height == 0:
        raise _not_enough_orders(config)
    return split_users(cutoffs[S.USER].to_numpy(), config.valid_share, config.seed)


def train(data_dir: Path, out: Path, config: TrainConfig) -> TrainResult:
    """Train on DATA_DIR and publish a run folder at ``out`` (atomically)."""
    timings = Timings()
    started = time.time()
    with timings.stage("load data"):
        data = read_dataset(data_dir)
        manifest_in = read_manifest(data_dir)
        lines = order_lines(data)
    roles = _roles(data, config)
    windows = build_windows(data, lines, config, timings, roles)
    # A user whose cutoff has no visible order (possible only with gaps in order numbers) has no rows.
    roles = roles.join(windows[0].history.cutoffs.select(S.USER), on=S.USER, how="semi")
    with timings.stage("rankers (LightGBM lambdarank + binary, XGBoost baseline)"):
        rankers = fit_rankers(windows, roles, config)
    valid_users = evaluation_users(roles, config)
    with timings.stage("evaluation on validation users"):
        rows = rows_of(windows, valid_users, window0_only=True)
        report = evaluation_report(windows[0], valid_users, rows, rankers.score(rows), config)
        report["ranking_objective"] = rankers.ranking_objective
        report.update(rankers.selection)
    fit_users = roles.filter(pl.col(S.ROLE) == FIT)[S.USER].implode()
    fit_frames = [w.frame.filter(pl.col(S.USER).is_in(fit_users)) for w in windows]
    window_stats = {
        "windows": [w.window for w in windows],
        "window_rows": [w.frame.height for w in windows],
        "training_rows": rankers.training_rows,
        "training_candidate_rows": sum(f.height for f in fit_frames),
        "training_groups": sum(f[S.USER].n_unique() for f in fit_frames),
    }
    als_eval = windows[0].als
    del windows, rows, fit_frames  # the label windows are done with: free them before the snapshot
    with timings.stage("ALS on all known orders (for prediction)"):
        latest_h = latest_history(data, lines)
        latest = ALSModel.fit(latest_h.lines, config.als)
    importance = dict(zip(FEATURE_NAMES, rankers.ranking.feature_importance("gain").tolist(), strict=True))
    manifest = {
        "schema_version": S.SCHEMA_VERSION,
        "data": {
            "path": str(Path(data_dir).resolve()),
            "fingerprint": manifest_in["fingerprint"],
            "source": manifest_in.get("source"),
        },
        "ranking_objective": rankers.ranking_objective,
        "best_iterations": {
            "ranking": rankers.ranking.best_iteration,
            "basket": rankers.basket.best_iteration,
        },
        **window_stats,
        "evaluated_users": valid_users.len(),
        "users": {role: int((roles[S.ROLE] == role).sum()) for role in (FIT, STOP, VALID)},
        "metrics": {name: report["methods"][name] for name in report["methods"]},
        "kaggle_f1": report["kaggle_f1"],
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }
    with publishing_dir(out) as tmp:
        rankers.save(tmp)
        als_eval.save(tmp / "als_eval.npz")
        latest.save(tmp / "als.npz")
        roles.write_parquet(tmp / "roles.parquet")
        write_json(tmp / "features.json", {"features": list(FEATURE_NAMES)})
        write_json(tmp / "config.json", config.model_dump(mode="json"))
        (tmp / "report").mkdir()
        write_report(report, tmp / "report", "Validation report", importance)
        bundle = write_bundle(tmp / BUNDLE, data, latest_h, rankers, latest, config, timings)
        manifest["serving"] = {k: bundle[k] for k in ("version", "users", "rows", "onnx_bytes", "parity")}
        manifest["timings"] = timings.as_dict()
        write_json(tmp / "manifest.json", manifest)
    return TrainResult(run_dir=Path(out), report=report, timings=timings)


@dataclass
class Run:
    """A loaded run folder."""

    path: Path
    config: TrainConfig
    manifest: dict[str, Any]
    rankers: Rankers


def load_run(run_dir: Path) -> Run:
    """Load a run folder, refusing one that is incomplete or from another schema/feature set."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: model folder not found (train one with `basketcast train`)")
    missing = [f for f in RUN_FILES if not (run_dir / f).exists()]
    if missing:
        raise DataError(f"{run_dir}: not a complete model folder, missing {', '.join(missing)}")
    manifest = read_json(run_dir / "manifest.json")
    if manifest.get("schema_version") != S.SCHEMA_VERSION:
        raise DataError(
            f"{run_dir}: model built for data schema {manifest.get('schema_version')!r}, "
            f"this basketcast uses {S.SCHEMA_VERSION}; retrain"
        )
    features = read_json(run_dir / "features.json").get("features")
    if features != list(FEATURE_NAMES):
        raise DataError(f"{run_dir}: model trained on other features than this basketcast computes; retrain")
    config = TrainConfig.model_validate(read_json(run_dir / "config.json"))
    rankers = Rankers.load(run_dir, manifest["ranking_objective"])
    return Run(path=run_dir, config=config, manifest=manifest, rankers=rankers)


def evaluation_window(data: Dataset, lines: pl.DataFrame, run: Run) -> tuple[Window, pl.Series]:
    """The run's window-0 evaluation rebuilt: features cut before each user's last labelled order,
    the run's evaluation ALS, rows for the users its report was computed on (returned too)."""
    users = evaluation_users(pl.read_parquet(run.path / "roles.parquet"), run.config)
    cutoffs = C.label_window(data.orders, 0, run.config.windows.min_history)
    als = ALSModel.load(run.path / "als_eval.npz")
    return build_window(data, lines, cutoffs, 0, run.config, als=als, users=users), users


def evaluate(data_dir: Path, run_dir: Path, *, folds: int | None = None, out: Path | None = None) -> dict[str, Any]:
    """Re-evaluate a run on its validation users, or k-fold over all users with its config.

    Without ``folds`` the data must be the data the run was trained on (same fingerprint). With
    ``folds`` = k, users are split in k folds; for each, rankers are trained on the other folds'
    users (all windows) and predict the fold's window-0 orders, so every user's last labelled
    order is predicted once by a model that never saw that user. Writes the report to ``out``
    (default RUN_DIR/evaluation, or RUN_DIR/evaluation-kfold) and returns it.
    """
    run = load_run(run_dir)
    data = read_dataset(data_dir)
    fingerprint = read_manifest(data_dir)["fingerprint"]
    timings = Timings()
    lines = order_lines(data)
    if folds is None:
        if fingerprint != run.manifest["data"]["fingerprint"]:
            raise DataError(
                f"{data_dir}: not the data {run_dir} was trained on (fingerprint {fingerprint} vs "
                f"{run.manifest['data']['fingerprint']}); use --folds to cross-validate on new data"
            )
        with timings.stage("window 0 features"):
            window, users = evaluation_window(data, lines, run)
        with timings.stage("evaluation"):
            rows = rows_of([window], users)
            report = evaluation_report(window, users, rows, run.rankers.score(rows), run.config)
        title = "Validation report"
        out = out or run.path / "evaluation"
    else:
        if folds < 2:
            raise DataError(f"--folds must be at least 2, got {folds}")
        windows = build_windows(data, lines, run.config, timings)
        all_users = windows[0].history.cutoffs[S.USER].to_numpy()
        fold_of = np.random.default_rng(run.config.seed).permutation(all_users.size) % folds
        parts: list[pl.DataFrame] = []
        score_parts: dict[str, list[np.ndarray]] = {}
        for f in range(folds):
            with timings.stage(f"fold {f + 1}/{folds}"):
                held = pl.Series(S.USER, all_users[fold_of == f])
                rest = all_users[fold_of != f]
                roles = split_users(rest, 0.0, run.config.seed + f)
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
        report["folds"] = folds
        title = f"{folds}-fold cross-validated report"
        out = out or run.path / "evaluation-kfold"
    report["timings"] = timings.as_dict()
    importance = dict(zip(FEATURE_NAMES, run.rankers.ranking.feature_importance("gain").tolist(), strict=True))
    with publishing_dir(out) as tmp:
        write_report(report, tmp, title, importance)
    log.info("\n%s", markdown(report, title))
    return report


def predict(
    data_dir: Path, run_dir: Path, *, eval_set: str, k: int, out: Path, submission: Path | None = None
) -> pl.DataFrame:
    """Top-k products for every order of ``eval_set``; optional Kaggle submission of F1-optimal baskets.

    Writes ``out`` (Parquet: order_id, user_id, product_id, score, rank; k rows per order) and,
    with ``submission``, a CSV ``order_id,products`` (space-separated ids or ``None``).
    """
    if k <= 0:
        raise DataError(f"--k must be a positive number of products, got {k}")
    run = load_run(run_dir)
    data = read_dataset(data_dir)
    if read_manifest(data_dir)["fingerprint"] != run.manifest["data"]["fingerprint"]:
        log.warning("%s differs from the data %s was trained on; predicting anyway", data_dir, run_dir)
    cutoffs, users = C.eval_set_cutoffs(data.orders, eval_set)
    if users.len() == 0:
        raise DataError(f"{data_dir}: eval set '{eval_set}' has no orders to predict")
    als = ALSModel.load(run.path / ("als_eval.npz" if eval_set == S.TRAIN else "als.npz"))
    lines = order_lines(data)
    window = build_window(data, lines, cutoffs, 0, run.config, als=als)
    rows = rows_of([window], users)
    scores = run.rankers.score(rows)
    orders = data.orders.filter(pl.col(S.EVAL_SET) == eval_set).select(S.ORDER, S.USER)
    preds = (
        top_k(rows, scores["ranking"], k)
        .join(orders, on=S.USER, how="inner")
        .select(S.ORDER, S.USER, S.PRODUCT, S.SCORE, S.RANK)
        .sort(S.ORDER, S.RANK)
    )
    atomic_write_bytes(Path(out), _parquet_bytes(preds))
    if submission is not None:
        probs = rows.select(S.USER, S.PRODUCT, S.IS_REPEAT).with_columns(pl.Series(S.SCORE, scores["basket"]))
        baskets = choose_baskets(probs.filter(pl.col(S.IS_REPEAT)), S.USER, keys=users)
        text = (
            baskets.join(orders, on=S.USER)
            .sort(S.ORDER)
            .select(
                S.ORDER,
                pl.when(pl.col(S.BASKET_PRODUCTS).list.len() == 0)
                .then(pl.lit("None"))
                .otherwise(
                    pl.concat_str(
                        pl.col(S.BASKET_PRODUCTS).list.eval(pl.element().cast(pl.String)).list.join(" "),
                        pl.when(pl.col(S.BASKET_NONE)).then(pl.lit(" None")).otherwise(pl.lit("")),
                    )
                )
                .alias("products"),
            )
        )
        atomic_write_bytes(Path(submission), text.write_csv().encode())
    return preds


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()
