"""The run folder (RUN_DIR): the one description of its files, its manifest and how to load it.

A run folder holds, published atomically by ``basketcast train``:

- ``ranker.txt`` (LightGBM ranking model), ``basket_model.txt`` (binary LightGBM: calibrated
  probabilities for baskets), ``xgboost.json`` (the baseline; absent when disabled);
- ``als_eval.npz`` (ALS fitted on the window-0 history, for evaluation) and ``als.npz`` (ALS
  fitted on all known orders, for predicting the next ones);
- ``sequence/`` (the sequence network: ``network.onnx``, ``vocabulary.npz``, ``meta.json``;
  absent when it is disabled or the data has no orders older than the ranker's windows);
- ``roles.parquet`` (user → fit / stop / valid), ``features.json`` (feature names, in order);
- ``config.json`` (the resolved TrainConfig), ``manifest.json`` (:class:`RunManifest`);
- ``report/`` (the evaluation report: ``basketcast.pipeline.evaluation.report``; ``per_user.parquet``, the ranker's
  NDCG@10 / Recall@10 per validation user and target order, which promotion compares);
- ``serving/`` (the serving bundle: ``basketcast.serving.bundle``);
- later, ``evaluation/`` and ``evaluation-kfold/`` (``basketcast evaluate``) and
  ``dashboard.html`` (``basketcast report``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from basketcast.features.build import FEATURE_NAMES
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import Kind, loads
from basketcast.pipeline.data.storage import read_json, write_json
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.evaluation.report import REPORT_JSON, EvaluationReport
from basketcast.pipeline.model.candidates import ALSModel
from basketcast.pipeline.model.sequence import OnnxScorer
from basketcast.pipeline.model.training import Rankers
from basketcast.serving.bundle import BUNDLE, DASHBOARD, Parity

RANKER_MODEL: Final = "ranker.txt"
BASKET_MODEL: Final = "basket_model.txt"
XGBOOST_MODEL: Final = "xgboost.json"
ALS_LATEST: Final = "als.npz"
ALS_EVAL: Final = "als_eval.npz"
ROLES: Final = "roles.parquet"
FEATURES: Final = "features.json"
CONFIG: Final = "config.json"
MANIFEST: Final = "manifest.json"
REPORT: Final = "report"
PER_USER: Final = "per_user.parquet"  # in report/: the ranker's metrics per validation user (promotion)
SEQUENCE: Final = "sequence"
EVALUATION: Final = "evaluation"
EVALUATION_KFOLD: Final = "evaluation-kfold"
REQUIRED: Final = (RANKER_MODEL, BASKET_MODEL, ALS_LATEST, ALS_EVAL, ROLES, FEATURES, CONFIG, MANIFEST)

__all__ = ["BUNDLE", "DASHBOARD", "Run", "RunFolder", "RunManifest", "load_run"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRef(_Part):
    """The data folder a run was trained on."""

    path: str
    fingerprint: str
    source: str | None = None


class ServingRef(_Part):
    """The serving bundle published with the run (its full manifest is in ``serving/``)."""

    version: str
    users: int
    rows: int
    onnx_bytes: dict[str, int]
    parity: Parity


class RunManifest(_Part):
    """``manifest.json`` of a run folder."""

    schema_version: int
    data: DataRef
    ranking_objective: str
    best_iterations: dict[str, int]
    windows: list[int]  # label windows built
    window_rows: list[int]  # candidate rows of each
    training_rows: int  # rows the rankers were fitted on (after negative sampling)
    training_candidate_rows: int
    training_groups: int  # (window, fit user) groups
    evaluated_users: int
    users: dict[str, int]  # role → users
    metrics: dict[str, dict[str, float]]  # method → metric → value, as in the report
    kaggle_f1: dict[str, float]
    versions: dict[str, str]  # library versions
    created: str
    serving: ServingRef | None = None  # absent only while the run is being written
    sequence: dict[str, Any] | None = None  # the sequence network's training record (absent without one)
    timings: dict[str, float] = Field(default_factory=dict)

    def save(self, path: Path) -> None:
        write_json(path, self.model_dump(exclude_none=True))

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            return cls.model_validate(read_json(path))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            raise DataError(f"{path}: not a run manifest of this basketcast ({problems}); retrain") from exc


RUN_FOLDER = Kind("run folder", folder=True, recognise=loads(lambda path: RunManifest.load(path / MANIFEST)))


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (nothing is read or checked here)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def ranker_model(self) -> Path:
        return self.path / RANKER_MODEL

    @property
    def basket_model(self) -> Path:
        return self.path / BASKET_MODEL

    @property
    def xgboost_model(self) -> Path:
        return self.path / XGBOOST_MODEL

    @property
    def als_latest(self) -> Path:
        return self.path / ALS_LATEST

    @property
    def als_eval(self) -> Path:
        return self.path / ALS_EVAL

    @property
    def roles(self) -> Path:
        return self.path / ROLES

    @property
    def features(self) -> Path:
        return self.path / FEATURES

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def report(self) -> Path:
        """The folder of the training-time evaluation report."""
        return self.path / REPORT

    @property
    def bundle(self) -> Path:
        return self.path / BUNDLE

    @property
    def sequence(self) -> Path:
        return self.path / SEQUENCE

    def evaluation(self, folds: int | None) -> Path:
        """The default output folder of ``basketcast evaluate`` (with or without ``--folds``)."""
        return self.path / (EVALUATION if folds is None else EVALUATION_KFOLD)

    def save_rankers(self, rankers: Rankers) -> None:
        rankers.save(self.ranker_model, self.basket_model, self.xgboost_model)

    def save_config(self, config: TrainConfig) -> None:
        write_json(self.config, config.model_dump(mode="json"))

    def save_features(self) -> None:
        write_json(self.features, {"features": list(FEATURE_NAMES)})


@dataclass
class Run:
    """A loaded run folder."""

    folder: RunFolder
    config: TrainConfig
    manifest: RunManifest
    rankers: Rankers

    @property
    def path(self) -> Path:
        return self.folder.path

    def als(self, latest: bool) -> ALSModel:
        """The ALS of all known orders (``latest``) or of the window-0 history (evaluation)."""
        return ALSModel.load(self.folder.als_latest if latest else self.folder.als_eval)

    def network(self) -> OnnxScorer | None:
        """The sequence network in onnxruntime (None when the run has none)."""
        return OnnxScorer.load(self.folder.sequence, self.config.sequence.threads)

    def report(self) -> EvaluationReport:
        """The evaluation report written at training time."""
        return EvaluationReport.load(self.folder.report / REPORT_JSON)


def load_run(run_dir: Path) -> Run:
    """Load a run folder, refusing one that is incomplete or from another schema/feature set."""
    folder = RunFolder(Path(run_dir))
    if not folder.path.is_dir():
        raise DataError(f"{folder.path}: model folder not found (train one with `basketcast train`)")
    missing = [f for f in REQUIRED if not (folder.path / f).exists()]
    if missing:
        raise DataError(f"{folder.path}: not a complete model folder, missing {', '.join(missing)}")
    raw: dict[str, Any] = read_json(folder.manifest)
    if raw.get("schema_version") != S.SCHEMA_VERSION:
        raise DataError(
            f"{folder.path}: model built for data schema {raw.get('schema_version')!r}, "
            f"this basketcast uses {S.SCHEMA_VERSION}; retrain"
        )
    manifest = RunManifest.load(folder.manifest)
    features = read_json(folder.features).get("features")
    if features != list(FEATURE_NAMES):
        raise DataError(f"{folder.path}: model trained on other features than this basketcast computes; retrain")
    try:
        config = TrainConfig.model_validate(json.loads(folder.config.read_text()))
    except (ValueError, OSError) as exc:
        raise DataError(f"{folder.config}: not a valid config of this basketcast ({exc})") from exc
    rankers = Rankers.load(folder.ranker_model, folder.basket_model, folder.xgboost_model, manifest.ranking_objective)
    return Run(folder=folder, config=config, manifest=manifest, rankers=rankers)
