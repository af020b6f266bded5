"""Experiment tracking of a published run folder: MLflow and/or Weights & Biases, behind one interface.

:func:`track_run` logs the same things to each chosen backend (a :class:`Tracker`): the params
(the run's flattened ``config.json``), the validation metrics, the per-stage timings, the
evaluation report folder (``report.json``, ``report.md``, the charts in ``figures.html``) and the
manifest. :func:`track_training` is what ``basketcast train`` calls: it picks the backends with
:func:`chosen_backends` (``TrainConfig.tracking``, overridden by ``BASKETCAST_TRACKING``).

**MLflow** is the system of record; it also gets the LightGBM ranker as an MLflow model
(``ranker``), neither registered nor aliased here: ``basketcast.pipeline.workflows.registry`` registers
:attr:`TrackedRun.mlflow_model_uri` as a version of the data set's model and moves the alias
``champion`` after its checks. The
store is ``MLFLOW_TRACKING_URI`` when set, else the user-level SQLite store
``$XDG_DATA_HOME/basketcast/mlflow/mlflow.db`` (``~/.local/share/basketcast/mlflow/mlflow.db``):
found the same way from any working directory, never ``./mlruns`` or the current folder. The
artifacts of a SQLite store go to ``artifacts/`` beside the database file. An MLflow failure raises.

**W&B** (project ``basketcast``) writes its run folder under :func:`wandb_dir` (``WANDB_DIR``,
else the user-level ``$XDG_DATA_HOME/basketcast/wandb``; never the current directory), as
``wandb/offline-run-*`` when ``WANDB_MODE=offline`` (``wandb sync`` uploads it later). Console
capture, system metrics, git/code/requirements capture and job creation are off. A W&B failure
(not installed, no login, init error) is logged as a warning and the other backends go on: it
never loses a trained run.

Nothing here runs at import: MLflow and wandb are imported when a run is logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data.storage import read_json
from basketcast.pipeline.errors import ConfigError
from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.workflows.run_folder import RunFolder

if TYPE_CHECKING:
    from basketcast.pipeline.workflows.run import TrainResult

log = logging.getLogger(__name__)

CHAMPION = "champion"
EXPERIMENT = "basketcast"


def default_store() -> Path:
    """The user-level store folder: ``$XDG_DATA_HOME/basketcast/mlflow`` (else ``~/.local/share/...``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "basketcast" / "mlflow"


def tracking_uri(create: bool = True) -> str:
    """``MLFLOW_TRACKING_URI`` or the user-level SQLite store (its folder created when ``create``)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    store = default_store()
    if create:
        store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def server_store() -> tuple[str, Path]:
    """What ``make mlflow-server`` opens: (backend store URI, artifacts folder).

    ``MLFLOW_TRACKING_URI`` when it names a SQLite file, else the user-level store (so that
    ``MLFLOW_TRACKING_URI=http://…`` set for serving by alias does not point the server at itself);
    artifacts beside the database, where runs logged without the server put theirs.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    uri = env if env.startswith("sqlite:///") else f"sqlite:///{(default_store() / 'mlflow.db').resolve()}"
    root = artifact_root(uri)
    assert root is not None
    root.parent.mkdir(parents=True, exist_ok=True)
    return uri, root


def artifact_root(uri: str) -> Path | None:
    """Artifacts of a SQLite store live in ``artifacts/`` beside the database file (never in the
    current directory's ``./mlruns``); a tracking server decides for itself (None)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        return Path(uri[len(prefix) :]).resolve().parent / "artifacts"
    return None


MLFLOW: Final = "mlflow"
WANDB: Final = "wandb"
BACKENDS: Final = (MLFLOW, WANDB)  # the order runs are logged in: the system of record first
TRACKING_ENV: Final = "BASKETCAST_TRACKING"
WANDB_PROJECT: Final = "basketcast"
RANKER_ARTIFACT: Final = "ranker"  # the MLflow model's name inside its run
REPORT_ARTIFACT: Final = "report"  # the report folder's path inside a run's artifacts


# --------------------------------------------------------------------------- choosing backends


def chosen_backends(cfg: TrainConfig) -> tuple[str, ...]:
    """The backends a training run is logged to, in logging order (MLflow first).

    ``BASKETCAST_TRACKING`` (a comma list of ``mlflow``, ``wandb``, or ``none``), when set, overrides
    ``cfg.tracking``; an unknown name raises a :class:`ConfigError` naming the variable."""
    env = os.environ.get(TRACKING_ENV)
    if env is None:
        chosen: Iterable[str] = cfg.tracking
    else:
        names = [n.strip().lower() for n in env.split(",") if n.strip()]
        unknown = [n for n in names if n not in (*BACKENDS, "none")]
        if unknown or ("none" in names and len(names) > 1):
            raise ConfigError(
                f"{TRACKING_ENV}={env!r}: expected a comma list of {', '.join(BACKENDS)}, or none"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        chosen = [n for n in names if n != "none"]
    return tuple(b for b in BACKENDS if b in set(chosen))


# --------------------------------------------------------------------------- what is logged


class StageTime(NamedTuple):
    """One training stage: wall time in seconds and its own peak RSS in MiB (None when unknown)."""

    stage: str
    seconds: float
    peak_rss_mb: float | None = None


def stage_times(timings: Timings | Mapping[str, float]) -> list[StageTime]:
    """The stages of a :class:`Timings` (with peak RSS) or of a manifest's ``timings`` (seconds only)."""
    if isinstance(timings, Timings):
        return [StageTime(name, sec, rss) for name, sec, rss in timings.stages]
    return [StageTime(name, float(sec)) for name, sec in timings.items()]


def _slug(name: str) -> str:
    """A stage name as a metric-key part MLflow accepts: ``"ALS on all known orders (for prediction)"``
    → ``als_on_all_known_orders_for_prediction``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "stage"


def timing_metrics(stages: Sequence[StageTime]) -> dict[str, float]:
    """``timing.<stage>.seconds`` and ``timing.<stage>.peak_rss_mb`` per stage, ``timing.total.seconds``."""
    out: dict[str, float] = {}
    for s in stages:
        out[f"timing.{_slug(s.stage)}.seconds"] = round(s.seconds, 3)
        if s.peak_rss_mb is not None:
            out[f"timing.{_slug(s.stage)}.peak_rss_mb"] = round(s.peak_rss_mb, 1)
    out["timing.total.seconds"] = round(sum(s.seconds for s in stages), 3)
    return out


def report_metrics(report: EvaluationReport) -> dict[str, float]:
    """The validation metrics: ``<method>.<metric>`` ('@' → '_at_'), ``kaggle_f1.*``, ``candidate_recall.*``."""
    metrics = {
        f"{method}.{name.replace('@', '_at_')}": float(value)
        for method, values in report.methods.items()
        for name, value in values.items()
    }
    metrics.update({f"kaggle_f1.{k}": float(v) for k, v in report.kaggle_f1.items()})
    metrics.update({f"candidate_recall.{k}": float(v) for k, v in report.candidate_recall.model_dump().items()})
    return metrics


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def run_params(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json`` flattened to dotted keys (``lightgbm.n_estimators`` → 500)."""
    params: dict[str, Any] = {}
    _flatten("", read_json(RunFolder(run_dir).config), params)
    return params


# --------------------------------------------------------------------------- the backends


class Tracker(Protocol):
    """One experiment-tracking backend; a run goes start → log_* → finish."""

    name: str

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Open a run named ``run_name`` with its params (flat key → value) and short string tags."""
        ...

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Final metric values (key → number)."""
        ...

    def log_timings(self, stages: Sequence[StageTime]) -> None:
        """Per-stage wall time (s) and peak RSS (MiB), as :func:`timing_metrics` keys."""
        ...

    def log_path(self, path: Path, artifact_path: str | None = None) -> None:
        """A file, or a folder with everything in it, under ``artifact_path`` (None = the top)."""
        ...

    def finish(self, failed: bool = False) -> None:
        """Close the run (marked failed when ``failed``)."""
        ...


class MlflowTracker:
    """MLflow: the store of :func:`tracking_uri`, experiment ``basketcast`` (created with its
    artifacts beside a SQLite store)."""

    name = MLFLOW

    def __init__(self) -> None:
        self.uri: str | None = None
        self.run_id: str | None = None

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        import mlflow

        self.uri = tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            root = artifact_root(self.uri)
            mlflow.create_experiment(EXPERIMENT, artifact_location=root.as_uri() if root else None)
        mlflow.set_experiment(EXPERIMENT)
        run = mlflow.start_run(run_name=run_name)
        self.run_id = str(run.info.run_id)
        mlflow.log_params(dict(params))
        mlflow.set_tags(dict(tags))

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(dict(metrics))

    def log_timings(self, stages: Sequence[StageTime]) -> None:
        import mlflow

        mlflow.log_metrics(timing_metrics(stages))
        # The stage names as the summary prints them (metric keys are slugs).
        mlflow.log_dict({"stages": [s._asdict() for s in stages]}, "timings.json")

    def log_path(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_ranker(self, model_file: Path) -> str:
        """The LightGBM ranking model as the MLflow model ``ranker`` of this run; returns its URI
        (for ``mlflow.register_model``)."""
        import lightgbm as lgb
        import mlflow

        booster = lgb.Booster(model_file=str(model_file))
        # A Booster needs LightGBM alone: naming it skips MLflow's inference of the requirements,
        # which loads the model again in a subprocess (seconds).
        requirements = mlflow.lightgbm.get_default_pip_requirements()
        info = mlflow.lightgbm.log_model(booster, name=RANKER_ARTIFACT, pip_requirements=requirements)
        return str(info.model_uri)

    def finish(self, failed: bool = False) -> None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED" if failed else "FINISHED")
        if not failed:
            log.info("MLflow run %s logged to %s", self.run_id, self.uri)


def wandb_dir() -> Path:
    """Where W&B writes its run folders: ``WANDB_DIR``, else ``$XDG_DATA_HOME/basketcast/wandb``
    (beside the MLflow store; never the current directory)."""
    env = os.environ.get("WANDB_DIR")
    return Path(env) if env else default_store().parent / "wandb"


# Settings that keep W&B to what we log: no console capture, system metrics, git/code/requirements
# capture or Launch job. Each is passed only when the installed wandb knows it.
_WANDB_SETTINGS: Final[Mapping[str, Any]] = {
    "silent": True,
    "console": "off",
    "x_disable_stats": True,
    "x_disable_meta": True,
    "x_disable_machine_info": True,
    "disable_git": True,
    "disable_code": True,
    "save_code": False,
    "x_save_requirements": False,
    "disable_job_creation": True,
}


class WandbTracker:
    """Weights & Biases: project ``basketcast``, run folder under :func:`wandb_dir`. Metrics go to
    the run summary; files to one artifact ``evaluation-report`` (type ``evaluation``)."""

    name = WANDB

    def __init__(self) -> None:
        self.run: Any = None
        self.run_dir: Path | None = None
        self._artifact: Any = None

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        import wandb

        known = getattr(wandb.Settings, "model_fields", _WANDB_SETTINGS)
        settings = wandb.Settings(**{k: v for k, v in _WANDB_SETTINGS.items() if k in known})
        folder = wandb_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=WANDB_PROJECT,
            name=run_name,
            config=dict(params),
            notes="\n".join(f"{k}: {v}" for k, v in tags.items()),
            tags=[f"{k}={v}" for k, v in tags.items() if len(f"{k}={v}") <= 64],
            dir=str(folder),
            settings=settings,
        )
        self.run_dir = Path(self.run.settings.sync_dir)
        self._artifact = wandb.Artifact("evaluation-report", type="evaluation")

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self.run.summary.update(dict(metrics))

    def log_timings(self, stages: Sequence[StageTime]) -> None:
        self.run.summary.update(timing_metrics(stages))
        with self._artifact.new_file("timings.json", mode="w") as f:
            json.dump({"stages": [s._asdict() for s in stages]}, f)

    def log_path(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self._artifact.add_dir(str(path), name=artifact_path)
        else:
            name = f"{artifact_path}/{path.name}" if artifact_path else path.name
            self._artifact.add_file(str(path), name=name)

    def finish(self, failed: bool = False) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            if not failed and self._artifact is not None and self._artifact.manifest.entries:
                run.log_artifact(self._artifact)
        finally:
            run.finish(exit_code=1 if failed else 0)
        upload = f" (upload it with `wandb sync {self.run_dir}`)" if getattr(run, "offline", False) else ""
        log.info("W&B run %s written to %s%s", run.id, self.run_dir, upload)


def _tracker(name: str) -> Tracker:
    return MlflowTracker() if name == MLFLOW else WandbTracker()


# --------------------------------------------------------------------------- logging a run


@dataclass(frozen=True)
class TrackedRun:
    """What :func:`track_run` logged: ``backends`` that succeeded (in order), the MLflow run and its
    logged ranker model (``models:/…``, for ``mlflow.register_model``), W&B's run folder."""

    backends: tuple[str, ...]
    mlflow_run_id: str | None = None
    mlflow_model_uri: str | None = None
    wandb_run_dir: Path | None = None


def track_run(
    run_dir: Path,
    report: EvaluationReport,
    timings: Timings | Mapping[str, float],
    backends: Iterable[str],
) -> TrackedRun:
    """Log the published run folder ``run_dir`` to each of ``backends`` (``mlflow``, ``wandb``).

    Logged everywhere: params (the flattened config), :func:`report_metrics`, :func:`timing_metrics`
    of ``timings`` (a :class:`Timings`, or a manifest's stage → seconds), the report folder (under
    ``report/``) and ``manifest.json``; to MLflow also the ranker as the model ``ranker``
    (unregistered). MLflow errors raise; a W&B error is logged as a warning and skipped."""
    run_dir = Path(run_dir)
    wanted = set(backends)
    chosen = [b for b in BACKENDS if b in wanted]
    unknown = wanted - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown tracking backends {sorted(unknown)}; known: {', '.join(BACKENDS)}")
    folder = RunFolder(run_dir)
    params = run_params(run_dir)
    metrics = report_metrics(report)
    stages = stage_times(timings)
    tags = {"run_dir": str(run_dir.resolve()), "ranking_objective": str(report.ranking_objective)}
    done: list[str] = []
    found: dict[str, Any] = {}
    for name in chosen:
        tracker = _tracker(name)
        try:
            tracker.start(run_dir.name, params, tags)
            tracker.log_metrics(metrics)
            tracker.log_timings(stages)
            tracker.log_path(folder.report, REPORT_ARTIFACT)
            tracker.log_path(folder.manifest)
            if isinstance(tracker, MlflowTracker):
                found["mlflow_model_uri"] = tracker.log_ranker(folder.ranker_model)
            tracker.finish()
        except Exception as exc:
            _abandon(tracker)
            if name == MLFLOW:
                raise
            hint = " (pip install 'basketcast[train]')" if isinstance(exc, ImportError) else ""
            log.warning(
                "W&B tracking failed, this run is not in W&B: %s: %s%s; %s",
                type(exc).__name__,
                exc,
                hint,
                f"it is logged to {', '.join(done)}" if done else "going on without it",
            )
            continue
        done.append(name)
        if isinstance(tracker, MlflowTracker):
            found["mlflow_run_id"] = tracker.run_id
        elif isinstance(tracker, WandbTracker):
            found["wandb_run_dir"] = tracker.run_dir
    return TrackedRun(backends=tuple(done), **found)


def _abandon(tracker: Tracker) -> None:
    """Close a run that failed half-way without hiding the error that stopped it."""
    try:
        tracker.finish(failed=True)
    except Exception as exc:  # the first error is the one to report
        log.debug("closing the failed %s run: %s", tracker.name, exc)


def track_training(result: TrainResult) -> TrackedRun | None:
    """Log a finished ``basketcast train`` to the backends :func:`chosen_backends` picks from the
    run's config; None when there are none."""
    cfg = TrainConfig.model_validate(read_json(RunFolder(result.run_dir).config))
    backends = chosen_backends(cfg)
    if not backends:
        return None
    return track_run(result.run_dir, result.report, result.timings, backends)
