"""MLflow tracking of a published run folder (kept out of serving's import path).

The store is ``sqlite:///<cwd>/artifacts/mlflow/mlflow.db`` unless ``MLFLOW_TRACKING_URI`` is
set; the artifacts of a SQLite store go to ``artifacts/`` beside the database file. Each training run logs
its params (the flattened config), the validation metrics, the report and the ranking model;
the model is registered as ``basketcast-ranker`` and, when the ranker beats every baseline on
NDCG@10, the new version takes the alias ``champion``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.data.storage import read_json
from pipeline.evaluation.report import EvaluationReport
from pipeline.workflows.run_folder import RunFolder

log = logging.getLogger(__name__)

MODEL_NAME = "basketcast-ranker"
CHAMPION = "champion"
EXPERIMENT = "basketcast"
DEFAULT_STORE = Path("artifacts") / "mlflow"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` or the default SQLite store (created on demand)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    DEFAULT_STORE.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"


def artifact_root(uri: str) -> Path | None:
    """Artifacts of a SQLite store live in ``artifacts/`` beside the database file (never in the
    current directory's ``./mlruns``); a tracking server decides for itself (None)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        return Path(uri[len(prefix) :]).resolve().parent / "artifacts"
    return None


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def log_run(run_dir: Path, report: EvaluationReport) -> str:
    """Log a published run folder to MLflow; returns the MLflow run id."""
    import lightgbm as lgb
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        root = artifact_root(uri)
        mlflow.create_experiment(EXPERIMENT, artifact_location=root.as_uri() if root else None)
    mlflow.set_experiment(EXPERIMENT)
    params: dict[str, Any] = {}
    folder = RunFolder(run_dir)
    _flatten("", read_json(folder.config), params)
    metrics = {
        f"{method}.{name.replace('@', '_at_')}": value
        for method, values in report.methods.items()
        for name, value in values.items()
    }
    metrics.update({f"kaggle_f1.{k}": v for k, v in report.kaggle_f1.items()})
    metrics.update({f"candidate_recall.{k}": v for k, v in report.candidate_recall.model_dump().items()})
    with mlflow.start_run(run_name=run_dir.name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"run_dir": str(run_dir.resolve()), "ranking_objective": str(report.ranking_objective)})
        mlflow.log_artifacts(str(folder.report), artifact_path="report")
        mlflow.log_artifact(str(folder.manifest))
        booster = lgb.Booster(model_file=str(folder.ranker_model))
        info = mlflow.lightgbm.log_model(booster, name="ranker", registered_model_name=MODEL_NAME)
        version = getattr(info, "registered_model_version", None)
        if report.ranker_beats_all_baselines and version is not None:
            MlflowClient().set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
            log.info("MLflow: %s version %s is now '%s'", MODEL_NAME, version, CHAMPION)
        log.info("MLflow run %s logged to %s", run.info.run_id, uri)
        return str(run.info.run_id)
