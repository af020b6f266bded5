"""Stage 2 on a Dask cluster: the same rankers trained by LightGBM's own distributed estimators.

:func:`fit_rankers_on_cluster` is :func:`basketcast.pipeline.model.training.fit_rankers` for training rows
that live on the workers, one block per worker made of whole (window, user) groups, as
``lightgbm.dask`` requires of a ranker's partitions:

- lambdarank with :class:`lightgbm.dask.DaskLGBMRanker`, binary with
  :class:`lightgbm.dask.DaskLGBMClassifier` (data-parallel trees: every worker builds histograms of
  its rows and LightGBM's network sums them), the XGBoost baseline with ``xgboost.dask``;
- **early stopping on the stop users, after the fact.** ``lightgbm.dask`` cannot stop early (each
  worker would judge its own share of the stop rows, and workers that stop at different rounds
  hang the network), so all ``n_estimators`` rounds are trained and the stop rows' metric is
  replayed round by round on the client, with the rule of ``lightgbm.early_stopping`` (the best
  round, stopped after ``early_stopping_rounds`` rounds without a strict improvement); the model
  is cut at that round. The metric is the one ``lgb.train`` watches: NDCG@10 for lambdarank
  (LightGBM's definition: gains 2^label − 1, a group without a positive counts 1), weighted log
  loss for binary;
- the objective is chosen on the stop users' NDCG@10 exactly as in one process.

The blocks hold the very rows one process trains on (same negative sample, same weights; see
``basketcast.pipeline.workflows.cluster_train``). The models differ from one process's by what data-parallel
training implies: each worker bins its share of the features from its own rows, bagging draws
rows per worker, and histograms are summed in another order (BENCHMARKS.md, "More than one
machine", measures the difference). The same blocks on the same number of workers give the same
model files, run after run (the workers' ranks follow the blocks, see ``_BlockOrderClient``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import lightgbm as lgb
import numpy as np
import polars as pl

from basketcast.pipeline.config import LightGBMConfig, TrainConfig, XGBoostConfig
from basketcast.pipeline.model.training import (
    Matrix,
    Rankers,
    choose_rankers,
    lightgbm_params,
    objectives,
    xgboost_params,
)

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Block:
    """One block of training rows on the workers: a future of a :class:`Matrix`, its row count,
    and the worker that holds it."""

    matrix: Future
    rows: int
    worker: str


def _dask_arrays(client: Client, blocks: list[Block], n_features: int) -> dict[str, Any]:
    """X, label, weights, sampling weights and group sizes as Dask arrays with one chunk per block.

    Every chunk of a block is made on the block's worker (one block per worker): ``lightgbm.dask``
    trains each worker on the chunks it holds and ranks the workers in the order of the chunks, so
    the same blocks on the same workers give the same models, run after run.
    """
    import dask.array as da
    from dask import delayed

    def pinned(fn: Any, block: Block) -> Any:
        return delayed(client.submit(fn, block.matrix, workers=[block.worker], allow_other_workers=False, pure=False))

    groups = client.gather([client.submit(_group_count, b.matrix, workers=[b.worker], pure=False) for b in blocks])
    out: dict[str, Any] = {}
    for name, dtype in (
        ("X", np.float32),
        ("label", np.uint8),
        ("weight", np.float32),
        ("sampling_weight", np.float32),
    ):
        shapes = [(b.rows, n_features) if name == "X" else (b.rows,) for b in blocks]
        out[name] = da.concatenate(
            [
                da.from_delayed(pinned(_Field(name), b), shape=shape, dtype=dtype)
                for b, shape in zip(blocks, shapes, strict=True)
            ]
        )
    out["group"] = da.concatenate(
        [
            da.from_delayed(pinned(_Field("sizes"), b), shape=(int(n),), dtype=np.int64)
            for b, n in zip(blocks, groups, strict=True)
        ]
    )
    return out


def _group_count(matrix: Matrix) -> int:
    return int(matrix.sizes.size)


@dataclass(frozen=True)
class _Field:
    """A picklable ``getattr(matrix, name)`` for a task."""

    name: str

    def __call__(self, matrix: Matrix) -> Any:
        return getattr(matrix, self.name)


def lightgbm_ndcg(raw: np.ndarray, label: np.ndarray, sizes: np.ndarray, k: int = 10) -> float:
    """LightGBM's ``ndcg@k`` of scores ``raw`` over consecutive groups of ``sizes`` (labels 0/1)."""
    group = np.repeat(np.arange(sizes.size), sizes)
    order = np.lexsort((-raw, group))  # stable: ties keep their order, as LightGBM's stable sort
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    rank = np.arange(raw.size) - np.repeat(starts, sizes)
    gain = (2.0 ** label[order].astype(np.float64) - 1.0) / np.log2(rank + 2.0)
    gain[rank >= k] = 0.0
    dcg = np.bincount(group[order], weights=gain, minlength=sizes.size)
    positives = np.bincount(group, weights=label.astype(np.float64), minlength=sizes.size)
    ideal_ranks = np.arange(k)
    ideal_gain = 1.0 / np.log2(ideal_ranks + 2.0)
    ideal = np.cumsum(ideal_gain)[np.minimum(positives.astype(np.int64), k) - 1]
    ndcg = np.where(positives > 0, dcg / np.where(positives > 0, ideal, 1.0), 1.0)
    return float(ndcg.mean())


def weighted_logloss(raw: np.ndarray, label: np.ndarray, weight: np.ndarray) -> float:
    """LightGBM's ``binary_logloss`` of raw scores (weighted mean)."""
    p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
    loss = -(label * np.log(p) + (1 - label) * np.log(1 - p))
    return float(np.sum(weight * loss) / np.sum(weight))


def early_stopping_round(booster: lgb.Booster, stop: Matrix, objective: str, rounds: int) -> int:
    """The round ``lgb.early_stopping(rounds)`` keeps when watching the stop rows (1-based)."""
    raw = np.zeros(stop.X.shape[0], np.float64)
    best_round, best = 0, None
    higher_is_better = objective == "lambdarank"
    for i in range(booster.current_iteration()):
        raw += booster.predict(stop.X, start_iteration=i, num_iteration=1, raw_score=True)
        score = (
            lightgbm_ndcg(raw, stop.label, stop.sizes)
            if higher_is_better
            else weighted_logloss(raw, stop.label, stop.weight)
        )
        if best is None or (score > best if higher_is_better else score < best):
            best_round, best = i, score
        elif i - best_round >= rounds:
            break
    return best_round + 1


class _BlockOrderClient:
    """The client ``lightgbm.dask`` is given: the client itself, except for two answers that make
    the worker holding block k LightGBM's rank k, run after run (the rank decides which worker's
    rows bin which features, so it changes the model):

    - ``compute`` of the training parts (one per block, in block order) runs part k on block k's
      worker, where its data already is; the scheduler could otherwise put two parts on one
      worker (a small part moves cheaply) and train on fewer machines;
    - ``who_has`` answers in the order the parts are asked about: ``lightgbm.dask`` ranks the
      workers in the order of that answer, which the scheduler sorts by the parts' random keys.
    """

    def __init__(self, client: Client, workers: list[str]) -> None:
        self._client = client
        self._workers = workers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def compute(self, collections: Any, **kwargs: Any) -> Any:
        if isinstance(collections, list) and len(collections) == len(self._workers) and "workers" not in kwargs:
            return [
                self._client.compute(part, workers=[worker], allow_other_workers=False, **kwargs)
                for part, worker in zip(collections, self._workers, strict=True)
            ]
        return self._client.compute(collections, **kwargs)

    def who_has(self, futures: Any = None, **kwargs: Any) -> Any:
        answer = self._client.who_has(futures, **kwargs)
        keys = [f.key for f in futures] if futures is not None else []
        if sorted(map(str, keys)) != sorted(map(str, answer)):
            return answer
        return {key: answer[key] for key in keys}


def _estimator(client: Client, workers: list[str], cfg: LightGBMConfig, objective: str) -> Any:
    from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRanker

    params: dict[str, Any] = {
        k: v for k, v in lightgbm_params(cfg, objective).items() if k not in ("metric", "eval_at")
    }
    del params["num_threads"]  # lightgbm.dask gives each worker its Dask threads
    kind = DaskLGBMRanker if objective == "lambdarank" else DaskLGBMClassifier
    ordered = cast("Client", _BlockOrderClient(client, workers))
    return kind(client=ordered, n_estimators=cfg.n_estimators, **params)


def fit_lightgbm_on_cluster(
    client: Client, blocks: list[Block], arrays: dict[str, Any], stop: Matrix, cfg: LightGBMConfig, objective: str
) -> lgb.Booster:
    """One LightGBM model trained on the cluster (``arrays``: :func:`_dask_arrays` of ``blocks``),
    cut at the early-stopping round of the stop rows."""
    from basketcast.features.build import FEATURE_NAMES

    model = _estimator(client, [b.worker for b in blocks], cfg, objective)
    names = list(FEATURE_NAMES)
    if objective == "lambdarank":
        model.fit(arrays["X"], arrays["label"], group=arrays["group"], feature_name=names)
    else:
        model.fit(arrays["X"], arrays["label"], sample_weight=arrays["weight"], feature_name=names)
    booster: lgb.Booster = model.to_local().booster_
    best = early_stopping_round(booster, stop, objective, cfg.early_stopping_rounds)
    log.info(
        "%s on the cluster: %d rounds trained, %d kept (early stopping on the stop users)",
        objective,
        booster.current_iteration(),
        best,
    )
    # The ports of this run's LightGBM network are no part of the model: left out, the same
    # training gives the same model file.
    text = "\n".join(
        line
        for line in booster.model_to_string(num_iteration=best).split("\n")
        if not line.startswith(("[machines: ", "[local_listen_port: "))
    )
    cut = lgb.Booster(model_str=text)
    cut.best_iteration = best
    return cut


def fit_xgboost_on_cluster(client: Client, arrays: dict[str, Any], stop: Matrix, cfg: XGBoostConfig) -> object:
    """The XGBoost baseline with ``xgboost.dask`` (its early stopping is global, so it is used)."""
    import xgboost.dask as xgb_dask

    from basketcast.features.build import FEATURE_NAMES

    names = list(FEATURE_NAMES)
    dtrain = xgb_dask.DaskDMatrix(
        client, arrays["X"], arrays["label"], weight=arrays["sampling_weight"], feature_names=names
    )
    dstop = xgb_dask.DaskDMatrix(
        client, _scattered(client, stop.X), _scattered(client, stop.label), feature_names=names
    )
    out = xgb_dask.train(
        client,
        xgboost_params(cfg, 1),  # a worker's thread
        dtrain,
        num_boost_round=cfg.n_estimators,
        evals=[(dstop, "stop")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )
    return out["booster"]


def _scattered(client: Client, array: np.ndarray) -> Any:
    """``array`` as a Dask array of one block per worker, the blocks scattered (not in the graph)."""
    import dask.array as da
    from dask import delayed

    workers = max(1, len(client.scheduler_info()["workers"]))
    blocks = [b for b in np.array_split(array, workers) if b.shape[0]] or [array]
    futures = client.scatter(blocks)
    return da.concatenate(
        [da.from_delayed(delayed(f), shape=b.shape, dtype=b.dtype) for f, b in zip(futures, blocks, strict=True)]
    )


def fit_rankers_on_cluster(
    client: Client,
    blocks: list[Block],
    stop_rows: pl.DataFrame,
    stop_truth: pl.DataFrame,
    config: TrainConfig,
) -> Rankers:
    """:func:`~basketcast.pipeline.model.training.fit_rankers` with the training rows in ``blocks`` on the
    workers and the stop users' window-0 rows (``stop_rows``) on the client."""
    from basketcast.features.build import FEATURE_NAMES

    cfg = config.lightgbm
    blocks = [b for b in blocks if b.rows > 0]
    arrays = _dask_arrays(client, blocks, len(FEATURE_NAMES))
    stop = Matrix.of(stop_rows, cfg.equal_user_weight)
    models = {obj: fit_lightgbm_on_cluster(client, blocks, arrays, stop, cfg, obj) for obj in objectives(cfg)}
    xgb_model = fit_xgboost_on_cluster(client, arrays, stop, config.xgboost) if config.xgboost.enabled else None
    return choose_rankers(models, stop_rows, stop, stop_truth, cfg, xgb_model, sum(b.rows for b in blocks))
