"""Typed configuration of every training stage (pydantic, unknown keys rejected).

The resolved :class:`TrainConfig` is written as ``config.json`` next to the model it produced,
and ``basketcast train --config FILE`` reads the same shape (JSON; any subset of keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from basketcast.pipeline.errors import ConfigError

TrackingBackend = Literal["mlflow", "wandb"]


def _mlflow_only() -> list[TrackingBackend]:
    return ["mlflow"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ALSConfig(_Config):
    """Stage 1: implicit ALS over BM25-weighted user × product purchase counts."""

    factors: int = Field(64, ge=1)
    regularization: float = Field(0.05, ge=0)
    iterations: int = Field(15, ge=1)
    bm25_k1: float = Field(100.0, gt=0)
    bm25_b: float = Field(0.8, ge=0, le=1)
    seed: int = 42


class CandidateConfig(_Config):
    """Candidate set = the user's past products (optionally capped) ∪ top-``als_new`` unseen ALS products."""

    als_new: int = Field(10, ge=0, description="unseen products proposed by ALS per user")
    max_history: int | None = Field(
        None, ge=1, description="keep only this many past products per user, by time-decayed frequency"
    )


class FeatureConfig(_Config):
    """Feature store options."""

    tifu_neighbors: int = Field(900, ge=1, description="nearest users behind the tifu_neighbours feature")
    tifu_reference_users: int | None = Field(
        2000,
        ge=1,
        description="search neighbours among a seeded sample of this many users when there are more "
        "(averaging the same share of them); null = exact search among all users",
    )


class WindowConfig(_Config):
    """Label windows: window 0 = each user's last labelled order; each extra window one order earlier."""

    extra_windows: int = Field(4, ge=0)
    min_history: int = Field(2, ge=1, description="visible orders a cutoff needs at least")


class LightGBMConfig(_Config):
    """Stage 2 ranker. ``objective='auto'`` trains lambdarank and binary and keeps the better
    on validation NDCG@10 for ranking; the binary model always supplies the basket probabilities."""

    objective: Literal["auto", "lambdarank", "binary"] = "auto"
    n_estimators: int = Field(500, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_child_samples: int = Field(200, ge=1)
    feature_fraction: float = Field(0.6, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    lambda_l2: float = Field(10.0, ge=0)
    early_stopping_rounds: int = Field(40, ge=1)
    equal_user_weight: bool = Field(True, description="binary objective: weigh each user's rows by 1/their count")
    num_threads: int = Field(0, ge=0, description="0 = all cores")
    seed: int = 42


class XGBoostConfig(_Config):
    """The offline baseline ranker: a binary XGBoost classifier (hist)."""

    enabled: bool = True
    n_estimators: int = Field(400, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    max_depth: int = Field(7, ge=1)
    min_child_weight: float = Field(5.0, ge=0)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    early_stopping_rounds: int = Field(40, ge=1)
    seed: int = 42


class SequenceConfig(_Config):
    """The sequence network (``basketcast.pipeline.model.sequence``): a GRU over each (user, past product)'s
    last ``steps`` orders, the product's embedding attending over the user's recent baskets; its
    outputs are ranker features. Trained on target orders older than every ranker window."""

    # Off by default: measured, its outputs do not improve the ranker (real sample, 5 folds: −0.0048
    # NDCG@10 [−0.0110, +0.0013]; synthetic: +0.0006 [−0.0011, +0.0024]; 100 real users: worse
    # than TIFU-KNN by up to 0.024) and it doubles `make train` (BENCHMARKS.md, "Deep learning").
    enabled: bool = False
    steps: int = Field(32, ge=2, le=64, description="orders per sequence (the most recent ones)")
    hidden: int = Field(32, ge=4, description="GRU hidden size")
    embedding: int = Field(32, ge=4, description="product / aisle / department embedding size (summed)")
    heads: int = Field(4, ge=1, description="attention heads (must divide embedding)")
    windows: int = Field(
        8,
        ge=1,
        description="label windows the network learns from at most: the ones just older than the ranker's oldest, "
        "added from the most recent back until max_training_groups is used (so small data gets more of them)",
    )
    min_product_buyers: int = Field(5, ge=1, description="products bought by fewer users share one embedding")
    max_training_groups: int = Field(6_000, ge=1, description="(window, fit user) groups trained on at most")
    negative_sample_rate: float = Field(0.3, gt=0, le=1, description="negative rows kept, reweighted by 1/rate")
    aux_weight: float = Field(0.5, ge=0, description="weight of the every-step loss (each earlier order as a target)")
    epochs: int = Field(4, ge=1)
    patience: int = Field(0, ge=0, description="epochs without a better stop-user loss before stopping")
    batch_size: int = Field(512, ge=16)
    learning_rate: float = Field(3e-3, gt=0)
    threads: int = Field(0, ge=0, description="torch threads; 0 = all cores")
    seed: int = 42

    def model_post_init(self, _context: object) -> None:
        if self.embedding % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide embedding ({self.embedding})")


class EvaluationConfig(_Config):
    ks: tuple[int, ...] = (5, 10, 20)
    tifu_neighbors: int = Field(900, ge=1)
    max_users: int | None = Field(
        5000,
        ge=1,
        description="validation users every method is evaluated on (a seeded sample when there are more; "
        "null = all): exact TIFU-KNN costs time quadratic in users",
    )

    def model_post_init(self, _context: object) -> None:
        if not self.ks or min(self.ks) <= 0:
            raise ValueError(f"ks must be positive, got {self.ks}")


class TrainConfig(_Config):
    """Everything ``basketcast train`` does, with defaults that work on any data size."""

    als: ALSConfig = ALSConfig()
    candidates: CandidateConfig = CandidateConfig()
    features: FeatureConfig = FeatureConfig()
    windows: WindowConfig = WindowConfig()
    lightgbm: LightGBMConfig = LightGBMConfig()
    xgboost: XGBoostConfig = XGBoostConfig()
    sequence: SequenceConfig = SequenceConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    valid_share: float = Field(0.2, gt=0, lt=1, description="share of users held out for validation")
    max_training_groups: int | None = Field(
        40_000,
        ge=1,
        description="(window, user) groups the rankers train on at most: label windows are added from the "
        "most recent back until this many fit users are used, the last window's fit users sampled (seeded); "
        "null = every fit user of every window",
    )
    negative_sample_rate: float = Field(
        0.3,
        gt=0,
        le=1,
        description="share of negative candidate rows kept for training, reweighted by 1/rate so the basket "
        "probabilities stay calibrated (early stopping and validation keep all rows)",
    )
    seed: int = 42
    tracking: list[TrackingBackend] = Field(
        default_factory=_mlflow_only,
        description="experiment trackers the run is logged to after training ([] = none); the environment "
        "variable BASKETCAST_TRACKING (mlflow, wandb, mlflow,wandb or none) overrides it",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_mlflow_key(cls, data: Any) -> Any:
        """Older configs (and run folders' config.json) say ``mlflow: true|false``: false means no
        tracking, true the default; an explicit ``tracking`` wins."""
        if not isinstance(data, dict) or "mlflow" not in data:
            return data
        data = dict(data)
        legacy = data.pop("mlflow")
        if not isinstance(legacy, bool):
            raise ValueError(f"mlflow: must be true or false (legacy key; use tracking), got {legacy!r}")
        if not legacy:
            data.setdefault("tracking", [])
        return data


def load_config(path: Path | None) -> TrainConfig:
    """Read a (partial) JSON config; unknown keys and bad values raise a ConfigError naming them."""
    if path is None:
        return TrainConfig()
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: invalid config: {problems}") from exc
