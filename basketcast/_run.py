"""Training for the notebook API: :func:`train` and the :class:`Run` it returns."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from basketcast._data import PathLike
from basketcast._report import metrics_frame

if TYPE_CHECKING:
    from basketcast._recommender import Recommender
    from basketcast.pipeline.config import TrainConfig
    from basketcast.pipeline.evaluation.report import EvaluationReport


@dataclass(frozen=True)
class Run:
    """A published run folder (what :func:`train` returns; ``Run(path)`` opens an existing one).

    It is path-like: ``os.fspath(run)`` is the folder.

    Attributes:
        path: the run folder (``manifest.json``, models, ``report/``, ``serving/``).

    Example:
        >>> run = basketcast.Run("artifacts/model")  # doctest: +SKIP
        >>> run.report.select("method", "ndcg@10", "recall@10")  # doctest: +SKIP
        >>> run.recommender().recommend([1, 2], k=5)  # doctest: +SKIP
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def evaluation(self) -> EvaluationReport:
        """The typed validation report (``report/report.json``) written at training."""
        from basketcast.pipeline.evaluation.report import REPORT_JSON, EvaluationReport
        from basketcast.pipeline.workflows.run_folder import RunFolder

        return EvaluationReport.load(RunFolder(self.path).report / REPORT_JSON)

    @property
    def report(self) -> pl.DataFrame:
        """The validation metrics, method × metric: the ranker (``lightgbm``), the baselines
        (``popularity``, ``top_frequency``, ``tifu_knn``, ``als``…) on the same held-out users.

        Example:
            >>> run.report.sort("ndcg@10", descending=True).select("method", "ndcg@10")  # doctest: +SKIP
        """
        return metrics_frame(self.evaluation)

    @property
    def kaggle_f1(self) -> dict[str, float]:
        """Kaggle F1 of each basket strategy on the validation users (basket → mean F1)."""
        return dict(self.evaluation.kaggle_f1)

    def recommender(self, threads: int = 1) -> Recommender:
        """The run's served model as a :class:`~basketcast.Recommender` (see :func:`basketcast.load`).

        Example:
            >>> run.recommender().recommend(1, k=3)  # doctest: +SKIP
        """
        from basketcast._recommender import load

        return load(self.path, threads=threads)


def _config(config: TrainConfig | Mapping[str, Any] | PathLike | None) -> TrainConfig:
    from pydantic import ValidationError

    from basketcast.pipeline.config import TrainConfig, load_config
    from basketcast.pipeline.errors import ConfigError

    if config is None or isinstance(config, TrainConfig):
        return config if config is not None else TrainConfig()
    if isinstance(config, str | os.PathLike):
        return load_config(Path(config))
    try:
        return TrainConfig.model_validate(dict(config))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config: {problems}") from exc


def train(
    data: PathLike,
    out: PathLike,
    config: TrainConfig | Mapping[str, Any] | PathLike | None = None,
    force: bool = False,
) -> Run:
    """Train on a data folder and publish the run folder ``out``; returns the :class:`Run`.

    Same as ``basketcast train --data DATA --out OUT``: features → ALS candidates → label windows →
    LightGBM rankers (+ XGBoost baseline) → validation report on held-out users → serving bundle,
    published atomically. The run is then logged to the experiment trackers the config names
    (``tracking``, default MLflow; ``BASKETCAST_TRACKING`` overrides it); registering and promoting
    a version stay with the command line (``basketcast train``, ``basketcast promote``).

    Args:
        data: a data folder (:func:`basketcast.ingest`, :func:`basketcast.generate`).
        out: the run folder to write (replaced only when it is a run folder, or with ``force``).
        config: a :class:`basketcast.pipeline.config.TrainConfig`, a dict with any subset of its keys, or the
            path of a JSON file of that shape; None = the defaults. Unknown keys are refused.
        force: replace ``out`` whatever it holds.

    Returns:
        The published :class:`Run`.

    Raises:
        basketcast.pipeline.errors.ConfigError: a bad config (the message names the key).
        basketcast.pipeline.errors.DataError: too little data to train (fewer than 3 shoppers with enough orders).

    Example:
        >>> fast = {"lightgbm": {"n_estimators": 50}, "xgboost": {"enabled": False}, "tracking": []}
        >>> run = basketcast.train("data/sample", "artifacts/sample", config=fast)  # doctest: +SKIP
        >>> run.report.select("method", "ndcg@10")  # doctest: +SKIP
    """
    from basketcast.pipeline.workflows.run import train as run_train
    from basketcast.pipeline.workflows.tracking import chosen_backends, track_training

    cfg = _config(config)
    chosen_backends(cfg)  # a bad BASKETCAST_TRACKING fails now, not after training
    result = run_train(Path(data), Path(out), cfg, force=force)
    track_training(result)
    return Run(result.run_dir)
