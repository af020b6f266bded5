"""``basketcast monitor``: the delayed quality of a scores file, once new orders have arrived.

``monitor(NEW_DATA, RUN, SCORES)`` scores the predictions ``basketcast score --model RUN --out
SCORES`` made against each user's first order after the snapshot's cutoff in NEW_DATA (a data
folder whose histories extend the snapshot's: ``basketcast orders merge``'s output, or a newer
ingest). What is measured and how "day" is defined: ``basketcast.pipeline.evaluation.monitor``.

Files (each written atomically):

- ``OUT/monitor.json`` (:class:`MonitorReport`): sources, user counts, Recall@10, NDCG@10 and
  Kaggle F1 overall (bootstrap intervals for the first two), by day and by day of week;
- ``OUT/by_day.parquet``: ``day, users, recall@10, ndcg@10, kaggle_f1``;
- ``OUT/users.parquet``: one row per scored user (the order scored against, its day, day of week
  and hour, Recall@10, NDCG@10);
- one line appended to ``RUN/monitoring/history.jsonl`` (:class:`HistoryEntry`; append-only, one
  JSON object per monitor run), whatever ``OUT`` is.

``OUT`` defaults to ``RUN/monitoring/<UTC time>/``. ``basketcast export`` carries the
``monitoring`` folder over to the republished run (hard links), so the history stays with the run;
a new ``basketcast train --out RUN`` starts a new one.

The scores must come from RUN's current snapshot: when the scores file has a drift summary beside
it (``X.drift.json`` for ``X.parquet``, written by ``basketcast score``) its ``model_version`` must
be RUN's, and every checked (user, product) of the file must be one of the user's snapshot
candidates.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import Kind, loads, publishing_dir, write_failure
from basketcast.pipeline.data.storage import read_dataset, read_manifest
from basketcast.pipeline.errors import BundleError, DataError, OutputError
from basketcast.pipeline.evaluation import monitor as M
from basketcast.pipeline.workflows.cluster import SCORES_DATASET
from basketcast.serving.batch import OUT_SCHEMA, SCORES
from basketcast.serving.bundle import HISTORY, bundle_dir, is_bundle, is_run_folder, run_dir_of
from basketcast.serving.model import ServingModel

log = logging.getLogger(__name__)

MONITORING: Final = "monitoring"  # the run folder's monitoring folder
HISTORY_FILE: Final = "history.jsonl"  # in MONITORING: one HistoryEntry per line
DRIFT_HISTORY_FILE: Final = "drift-history.jsonl"  # in MONITORING: one drift summary per line (basketcast score)
REPORT_FILE: Final = "monitor.json"
BY_DAY_FILE: Final = "by_day.parquet"
USERS_FILE: Final = "users.parquet"
DRIFT_SUFFIX: Final = ".drift.json"  # beside a scores file X.parquet: X.drift.json, its drift summary
DRIFT_FILE: Final = "drift.json"  # inside a folder of parts (score --cluster)
FOLDER_TIME: Final = "%Y%m%dT%H%M%SZ"
PREDICTION_COLUMNS: Final = (S.USER, S.PRODUCT, S.RANK)


class MonitorReport(M.Quality):
    """``monitor.json``: the quality (``basketcast.pipeline.evaluation.monitor.Quality``) and its sources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    created_at: str  # UTC, ISO 8601
    model_version: str  # the serving bundle's version (the snapshot the predictions came from)
    run: str
    data: str
    data_fingerprint: str
    predictions: str


class HistoryEntry(BaseModel):
    """One line of ``RUN/monitoring/history.jsonl``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    created_at: str
    model_version: str
    users: int  # scored users
    metrics: dict[str, float]  # recall@10, ndcg@10, kaggle_f1
    intervals: dict[str, M.Interval]
    predictions: str
    data: str
    out: str  # the monitor folder written


def read_report(path: Path) -> MonitorReport:
    """A ``monitor.json``; DataError when it is not one."""
    try:
        return MonitorReport.model_validate_json(Path(path).read_bytes())
    except (OSError, ValidationError) as exc:
        raise DataError(f"{path}: not a basketcast monitor report ({exc})") from exc


MONITOR_FOLDER: Final = Kind(
    "monitoring report folder", folder=True, recognise=loads(lambda path: read_report(path / REPORT_FILE))
)


@dataclass(frozen=True)
class MonitorResult:
    """What :func:`monitor` wrote."""

    report: MonitorReport
    out: Path
    history: Path
    by_day: pl.DataFrame


def monitoring_dir(run_dir: Path) -> Path:
    """``RUN/monitoring`` of a run folder (or of the run of a bundle folder)."""
    return run_dir_of(bundle_dir(Path(run_dir))) / MONITORING


def read_predictions(path: Path) -> pl.DataFrame:
    """USER, PRODUCT, RANK of a ``basketcast score`` output (a Parquet file, or the folder of parts
    ``score --cluster`` writes); DataError when ``path`` is not one."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (the output of `basketcast score --model RUN --out {path}`)")
    if path.is_dir() and SCORES_DATASET.recognise(path):
        source: Path | str = str(path / "part-*.parquet")
    elif path.is_file() and SCORES.recognise(path):
        source = path
    else:
        columns = ", ".join(OUT_SCHEMA.names)
        raise DataError(
            f"{path}: not a basketcast scores output (a Parquet file, or a folder of part-*.parquet, with the "
            f"columns {columns} that `basketcast score` writes)"
        )
    return pl.read_parquet(source, columns=list(PREDICTION_COLUMNS))


def drift_summary(predictions: Path) -> dict[str, object] | None:
    """The drift summary ``basketcast score`` wrote beside a scores output (``X.drift.json`` for
    ``X.parquet``, ``drift.json`` inside a folder of parts), None when there is none; an unreadable
    one is a warning."""
    predictions = Path(predictions)
    stem = predictions.name.removesuffix(".parquet")
    candidates = (
        [predictions / DRIFT_FILE]
        if predictions.is_dir()
        else [predictions.with_name(stem + DRIFT_SUFFIX), predictions.with_name(predictions.name + DRIFT_SUFFIX)]
    )
    for path in candidates:
        if path.is_file():
            try:
                found = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable drift summary, ignored (%s)", path, exc)
                return None
            return found if isinstance(found, dict) else None
    return None


def _history_arrays(model: ServingModel) -> tuple[np.ndarray, np.ndarray]:
    """(order_offsets, order_number) of the snapshot's history (``basketcast.serving.bundle.HISTORY``)."""
    folder = model.path / HISTORY
    try:
        offsets = np.load(folder / "order_offsets.npy", mmap_mode="r", allow_pickle=False)
        numbers = np.load(folder / "order_number.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(
            f"{folder}: the snapshot's history is missing or unreadable ({exc}); re-export the run with "
            "`basketcast export` (and score again) to monitor it"
        ) from exc
    if offsets.shape[0] != model.users.shape[0] + 1:
        raise BundleError(f"{folder}: does not cover the snapshot's users (corrupt bundle)")
    return np.asarray(offsets), np.asarray(numbers)


def _out_dir(monitoring: Path, now: dt.datetime) -> Path:
    """``monitoring/<UTC time>``, with ``-2``, ``-3``… when that name is taken."""
    name = now.strftime(FOLDER_TIME)
    out, n = monitoring / name, 1
    while out.exists():
        n += 1
        out = monitoring / f"{name}-{n}"
    return out


def append_line(path: Path, payload: str) -> None:
    """Append ``payload`` and a newline to ``path`` with one ``write`` on an O_APPEND descriptor
    (never rewrites what is there; concurrent appends do not interleave), then fsync."""
    data = (payload.replace("\n", " ") + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        reason = exc.strerror if exc.strerror else str(exc)
        what = "the disk refused it: " if write_failure(exc) else ""
        raise OutputError(f"{path}: could not append the monitor's line ({what}{reason})") from exc


def monitor(
    data_dir: Path,
    run_dir: Path,
    predictions: Path,
    out: Path | None = None,
    *,
    force: bool = False,
    resamples: int = M.RESAMPLES,
) -> MonitorResult:
    """Score ``predictions`` (a ``basketcast score`` output of ``run_dir``) against the orders of
    ``data_dir`` placed after the snapshot's cutoffs; write ``out`` (default
    ``RUN/monitoring/<UTC time>``) and append to ``RUN/monitoring/history.jsonl`` (module doc).

    DataError (nothing written) when the predictions are not a scores output, not of this run's
    snapshot, or when no predicted user has an order after the cutoff in ``data_dir``.
    """
    data_dir, run_dir, predictions = Path(data_dir), Path(run_dir), Path(predictions)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    monitoring = monitoring_dir(run_dir)
    target = Path(out) if out is not None else _out_dir(monitoring, now)
    inputs = [data_dir, run_dir, predictions]

    pred = read_predictions(predictions)
    if not (is_run_folder(run_dir) or is_bundle(run_dir)):
        raise DataError(f"{run_dir}: not a run folder with a serving bundle (the --model that `basketcast score` used)")
    model = ServingModel.load(run_dir)
    drift = drift_summary(predictions)
    if drift is not None and drift.get("model_version") not in (None, model.version):
        raise DataError(
            f"{predictions}: made by model version {drift.get('model_version')} (its drift summary says so), "
            f"{run_dir} now serves {model.version}; monitor predictions with the run that made them"
        )
    manifest = read_manifest(data_dir)
    data = read_dataset(data_dir)

    predicted = pred[S.USER].cast(pl.UInt32).unique().sort()
    cutoffs = M.snapshot_cutoffs(model.users, *_history_arrays(model)).join(
        pl.DataFrame({S.USER: predicted}), on=S.USER, how="semi"
    )
    unknown = predicted.len() - cutoffs.height
    if cutoffs.height == 0:
        raise DataError(
            f"{predictions}: none of its {predicted.len():,} users is in the snapshot of {run_dir} "
            f"({model.version}); monitor predictions with the run that made them"
        )
    M.check_predictions(pred, model, cutoffs[S.USER], str(predictions))
    next_orders, differs = M.first_orders_after(data.orders, cutoffs)
    lines = data.order_products
    scored = M.scored_users(next_orders, lines)
    counts = M.UserCounts(
        predicted=predicted.len(),
        unknown=unknown,
        history_differs=differs,
        waiting=cutoffs.height - differs - scored.height,
        scored=scored.height,
    )
    if scored.height == 0:
        differ = f" ({differs:,} of them with a history that does not extend the snapshot's)" if differs else ""
        raise DataError(
            f"{data_dir}: no order after the predictions for any of the {cutoffs.height:,} predicted users of "
            f"{run_dir}'s snapshot{differ}: is it the data the run was trained on? Monitor once new orders "
            "have arrived (e.g. with the data folder `basketcast orders merge` writes)"
        )
    if differs:
        log.warning(
            "%d predicted users have a history in %s that does not extend the snapshot's: left out", differs, data_dir
        )
    baskets = M.bundle_baskets(model, scored.select(S.USER, S.DOW, S.HOUR, M.DAY))
    result = M.delayed_quality(pred, scored, lines, baskets, counts, resamples=resamples)
    report = MonitorReport(
        **result.quality.model_dump(),
        created_at=now.isoformat(),
        model_version=model.version,
        run=str(run_dir.resolve()),
        data=str(data_dir.resolve()),
        data_fingerprint=manifest.fingerprint,
        predictions=str(predictions.resolve()),
    )
    with publishing_dir(target, MONITOR_FOLDER, force=force, inputs=inputs) as tmp:
        (tmp / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n")
        result.by_day.write_parquet(tmp / BY_DAY_FILE)
        result.per_user.write_parquet(tmp / USERS_FILE)
    entry = HistoryEntry(
        created_at=report.created_at,
        model_version=report.model_version,
        users=counts.scored,
        metrics=report.metrics,
        intervals=report.intervals,
        predictions=report.predictions,
        data=report.data,
        out=str(target.resolve()),
    )
    history = monitoring / HISTORY_FILE
    append_line(history, entry.model_dump_json())
    return MonitorResult(report=report, out=target, history=history, by_day=result.by_day)


def _fmt(x: float) -> str:
    return "   n/a" if x != x else f"{x:.4f}"


def monitor_summary(result: MonitorResult) -> str:
    """One screen: users, the overall metrics with their intervals, and the table by day."""
    r = result.report
    u = r.users
    rule = "─" * 78
    lines = [
        rule,
        f"delayed quality of {r.predictions} (model {r.model_version}) on {r.data}",
        f"users: {u.predicted:,} predicted, {u.scored:,} scored against their next order, {u.waiting:,} waiting "
        f"for one, {u.unknown:,} not in the snapshot, {u.history_differs:,} with a different history",
        rule,
    ]
    for name in M.QUALITY:
        ci = r.intervals.get(name)
        band = f"  [{ci.low:.4f}, {ci.high:.4f}] ({ci.level:.0%} bootstrap over users)" if ci else ""
        lines.append(f"{name:>10}  {_fmt(r.metrics[name])}{band}")
    if r.predictions_k < M.K:
        lines.append(f"note: the scores file holds {r.predictions_k} products per user; Recall@{M.K} counts those")
    lines += [rule, "days after the cutoff (the new order's days_since_prior_order; 30 = 30 or more):"]
    lines.append(f"{'day':>5}{'users':>8}" + "".join(f"{m:>12}" for m in M.QUALITY))
    for s in r.by_day:
        day = "?" if s.value is None else str(s.value)
        lines.append(f"{day:>5}{s.users:>8,}" + "".join(f"{_fmt(s.metrics[m]):>12}" for m in M.QUALITY))
    lines += [rule, f"written: {result.out}/{REPORT_FILE}, {BY_DAY_FILE}, {USERS_FILE}; history: {result.history}"]
    return "\n".join(lines)


def record_drift(run_dir: Path, summary_json: str) -> Path | None:
    """Append a ``basketcast score`` drift summary to ``RUN/monitoring/drift-history.jsonl`` (what the
    dashboard's monitoring section plots). None, with nothing written, when ``run_dir`` is not a run
    folder (a bare bundle, a registry cache); OutputError when the folder refuses the line (e.g. a
    read-only mount): the caller decides whether that matters.
    """
    run = run_dir_of(bundle_dir(Path(run_dir)))
    if not is_run_folder(run):  # a bundle alone (a registry cache, a copied serving/): no run to record in
        return None
    path = run / MONITORING / DRIFT_HISTORY_FILE
    append_line(path, summary_json)
    return path
