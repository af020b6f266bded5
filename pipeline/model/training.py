"""Stage 2 — the rankers: LightGBM (lambdarank and binary) and the XGBoost baseline.

:func:`fit_rankers` trains on the candidate rows of the *fit* users across the label windows
(``basketcast.pipeline.model.windows``), early-stops and chooses the objective on window 0 of the *stop*
users. Every positive row is kept and a seeded share of the negatives, reweighted so that the
binary probabilities stay calibrated; each (window, user) group can weigh the same in total.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from basketcast.features.build import FEATURE_NAMES, to_matrix
from basketcast.pipeline.config import LightGBMConfig, TrainConfig, XGBoostConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.metrics import ranking_metrics
from basketcast.pipeline.model.windows import FIT, STOP, Window, rows_of
from basketcast.pipeline.ranking import top_k

log = logging.getLogger(__name__)


def sample_negatives(rows: pl.DataFrame, rate: float, seed: int) -> pl.DataFrame:
    """Keep every positive and a seeded ``rate`` share of negatives (rate 1 keeps all).

    Adds S.SAMPLING_WEIGHT: 1 / ``rate`` on the kept negatives, 1 on positives, so weighted sums
    (the binary loss, hence its probabilities) keep their expectation.
    """
    rows = rows.with_columns(
        pl.when(pl.col(S.LABEL) == 1).then(1.0).otherwise(1.0 / rate).cast(pl.Float32).alias(S.SAMPLING_WEIGHT)
    )
    if rate >= 1.0:
        return rows
    keep = np.random.default_rng(seed).random(rows.height) < rate
    return rows.filter(pl.Series(keep) | (pl.col(S.LABEL) == 1))


def group_sizes(rows: pl.DataFrame) -> np.ndarray:
    """Sizes of consecutive (window, user) groups of rows sorted by them."""
    return rows.group_by(S.WINDOW, S.USER, maintain_order=True).len()["len"].to_numpy()


def user_weights(sizes: np.ndarray) -> np.ndarray:
    """Row weights giving every (window, user) group of ``sizes`` the same total weight (mean row
    weight 1), so the loss counts users the way per-user averaged metrics do."""
    return np.repeat(sizes.mean() / sizes, sizes).astype(np.float32)


@dataclass(frozen=True)
class Matrix:
    """Training rows as the rankers take them: features, labels and (window, user) group sizes.

    Built once per row set and shared by every model fitted on it.
    """

    X: np.ndarray  # float32 (rows, len(FEATURE_NAMES))
    label: np.ndarray
    sizes: np.ndarray
    weight: np.ndarray  # row weights of the binary objective
    sampling_weight: np.ndarray  # 1 / negative sampling rate on negatives, else 1

    @classmethod
    def of(cls, rows: pl.DataFrame, equal_user_weight: bool) -> Matrix:
        """From candidate rows sorted by (window, user), optionally with S.SAMPLING_WEIGHT and
        S.USER_WEIGHT (equal-user weights computed before negative sampling; default: from the
        rows' own group sizes)."""
        sizes = group_sizes(rows)

        def column(name: str) -> np.ndarray | None:
            return rows[name].to_numpy().astype(np.float32) if name in rows.columns else None

        sampling = column(S.SAMPLING_WEIGHT)
        if sampling is None:
            sampling = np.ones(rows.height, np.float32)
        user_weight = column(S.USER_WEIGHT) if equal_user_weight else np.ones(rows.height, np.float32)
        if user_weight is None:
            user_weight = user_weights(sizes)
        return cls(
            X=to_matrix(rows),
            label=rows[S.LABEL].to_numpy(),
            sizes=sizes,
            weight=(user_weight * sampling).astype(np.float32),
            sampling_weight=sampling,
        )


@dataclass
class Rankers:
    """The trained stage-2 models.

    ``ranking`` orders candidates (lambdarank or binary, whichever won on the stop users);
    ``basket`` is the binary model whose probabilities feed the F1-optimal basket;
    ``xgboost`` is the offline baseline (binary XGBoost), absent when disabled.
    """

    ranking: lgb.Booster
    ranking_objective: str
    basket: lgb.Booster
    xgboost: object | None = None
    selection: dict[str, float] = field(default_factory=dict)
    training_rows: int = 0  # rows the models were fitted on (after negative sampling)

    def score(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """Scores of every row: ``ranking``, ``basket`` (probability) and ``xgboost`` (probability)."""
        X = to_matrix(frame)
        out = {"ranking": np.asarray(self.ranking.predict(X), dtype=np.float32)}
        out["basket"] = (
            out["ranking"] if self.basket is self.ranking else np.asarray(self.basket.predict(X), dtype=np.float32)
        )
        if self.xgboost is not None:
            import xgboost as xgb

            booster: xgb.Booster = self.xgboost  # type: ignore[assignment]
            out["xgboost"] = booster.predict(xgb.DMatrix(X, feature_names=list(FEATURE_NAMES))).astype(np.float32)
        return out

    def importance(self) -> dict[str, float]:
        """The ranking model's total split gain per feature, by feature name."""
        return dict(zip(FEATURE_NAMES, self.ranking.feature_importance("gain").tolist(), strict=True))

    def save(self, ranking: Path, basket: Path, xgboost: Path) -> None:
        """Write the models to the given files (``xgboost`` only when there is one)."""
        self.ranking.save_model(ranking)
        self.basket.save_model(basket)
        if self.xgboost is not None:
            self.xgboost.save_model(xgboost)  # type: ignore[attr-defined]

    @classmethod
    def load(cls, ranking: Path, basket: Path, xgboost: Path, ranking_objective: str) -> Rankers:
        """Read the models written by :meth:`save` (no XGBoost model when ``xgboost`` is absent)."""
        xgb_model = None
        if xgboost.exists():
            import xgboost as xgb

            xgb_model = xgb.Booster()
            xgb_model.load_model(xgboost)
        return cls(
            ranking=lgb.Booster(model_file=str(ranking)),
            ranking_objective=ranking_objective,
            basket=lgb.Booster(model_file=str(basket)),
            xgboost=xgb_model,
        )


def lightgbm_params(cfg: LightGBMConfig, objective: str) -> dict[str, object]:
    """LightGBM's parameters for ``objective`` (lambdarank or binary) and the metric early
    stopping watches (NDCG@10 or binary log loss)."""
    params: dict[str, object] = {
        "objective": objective,
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_child_samples,
        "feature_fraction": cfg.feature_fraction,
        "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": cfg.lambda_l2,
        "num_threads": cfg.num_threads,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }
    if objective == "lambdarank":
        params.update({"metric": "ndcg", "eval_at": [10], "lambdarank_truncation_level": 20})
    else:
        params["metric"] = "binary_logloss"
    return params


def fit_lightgbm(train: Matrix, stop: Matrix, cfg: LightGBMConfig, objective: str) -> lgb.Booster:
    """One LightGBM model with early stopping on the ``stop`` rows."""
    weighted = objective == "binary"

    def dataset(m: Matrix, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(
            m.X,
            label=m.label,
            weight=m.weight if weighted else None,
            group=m.sizes,
            feature_name=list(FEATURE_NAMES),
            reference=reference,
            free_raw_data=False,  # the matrix is shared with the other models
        )

    dtrain = dataset(train)
    dstop = dataset(stop, reference=dtrain)
    return lgb.train(
        lightgbm_params(cfg, objective),
        dtrain,
        num_boost_round=cfg.n_estimators,
        valid_sets=[dstop],
        valid_names=["stop"],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )


def xgboost_params(cfg: XGBoostConfig, threads: int) -> dict[str, object]:
    """The XGBoost baseline's booster parameters: binary logistic trees (hist)."""
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "eta": cfg.learning_rate,
        "max_depth": cfg.max_depth,
        "min_child_weight": cfg.min_child_weight,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "seed": cfg.seed,
        "nthread": threads,
    }


def fit_xgboost(train: Matrix, stop: Matrix, cfg: XGBoostConfig, threads: int) -> object:
    """The XGBoost baseline: binary logistic trees (hist), early stopping on the ``stop`` rows."""
    import xgboost as xgb

    names = list(FEATURE_NAMES)
    dtrain = xgb.DMatrix(train.X, label=train.label, weight=train.sampling_weight, feature_names=names)
    dstop = xgb.DMatrix(stop.X, label=stop.label, feature_names=names)
    return xgb.train(
        xgboost_params(cfg, threads),
        dtrain,
        num_boost_round=cfg.n_estimators,
        evals=[(dstop, "stop")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )


def ndcg_at_10(frame: pl.DataFrame, scores: np.ndarray, truth: pl.DataFrame) -> float:
    return ranking_metrics(top_k(frame, scores, 10), truth, ks=(10,))["ndcg@10"]


def fit_rankers(windows: list[Window], roles: pl.DataFrame, config: TrainConfig) -> Rankers:
    """Train the rankers on the fit users' windows; early-stop and select on the stop users."""
    fit_users = roles.filter(pl.col(S.ROLE) == FIT)[S.USER]
    stop_users = roles.filter(pl.col(S.ROLE) == STOP)[S.USER]
    cfg = config.lightgbm
    train_rows = rows_of(windows, fit_users)
    # Equal-user weights from the full groups, so sampling negatives does not reweigh users.
    train_rows = train_rows.with_columns(pl.Series(S.USER_WEIGHT, user_weights(group_sizes(train_rows))))
    train_rows = sample_negatives(train_rows, config.negative_sample_rate, config.seed)
    stop_rows = rows_of(windows, stop_users, window0_only=True)
    stop_truth = windows[0].truth.filter(pl.col(S.USER).is_in(stop_users.implode()))
    log.info(
        "training rows: %d (%.1f%% positive), stop rows: %d",
        train_rows.height,
        100 * (train_rows.select(pl.col(S.LABEL).cast(pl.Float64).mean()).item() or 0.0),
        stop_rows.height,
    )
    train = Matrix.of(train_rows, cfg.equal_user_weight)
    stop = Matrix.of(stop_rows, cfg.equal_user_weight)
    del train_rows
    models = {obj: fit_lightgbm(train, stop, cfg, obj) for obj in objectives(cfg)}
    xgb_model = fit_xgboost(train, stop, config.xgboost, cfg.num_threads) if config.xgboost.enabled else None
    return choose_rankers(models, stop_rows, stop, stop_truth, cfg, xgb_model, int(train.X.shape[0]))


def objectives(cfg: LightGBMConfig) -> list[str]:
    """The LightGBM objectives to train: the configured one (both for "auto"), and binary always
    (the basket needs probabilities)."""
    chosen: list[str] = ["lambdarank", "binary"] if cfg.objective == "auto" else [cfg.objective]
    return chosen if "binary" in chosen else [*chosen, "binary"]


def choose_rankers(
    models: dict[str, lgb.Booster],
    stop_rows: pl.DataFrame,
    stop: Matrix,
    stop_truth: pl.DataFrame,
    cfg: LightGBMConfig,
    xgb_model: object | None,
    training_rows: int,
) -> Rankers:
    """The :class:`Rankers` of the trained ``models`` (by objective): with ``objective="auto"``,
    the one with the better stop-user NDCG@10 ranks (binary on a tie); binary gives the basket."""
    selection = {
        obj: ndcg_at_10(stop_rows, np.asarray(model.predict(stop.X)), stop_truth) for obj, model in models.items()
    }
    if cfg.objective == "auto":
        best = max(selection, key=lambda o: (selection[o], o == "binary"))
    else:
        best = cfg.objective
    log.info("stop-user NDCG@10 by objective: %s → ranking with %s", selection, best)
    return Rankers(
        ranking=models[best],
        ranking_objective=best,
        basket=models["binary"],
        xgboost=xgb_model,
        selection={f"stop_ndcg@10_{k}": v for k, v in selection.items()},
        training_rows=training_rows,
    )
