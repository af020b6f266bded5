"""Beyond one machine: batch scoring on a Dask cluster (``basketcast score --cluster``).

Users are hash-partitioned into buckets (``user_id mod P``). Each bucket is one Dask task: the
worker opens the serving bundle (memory-mapped, once per worker process and model version) and
scores its users with the very function the single-process ``basketcast score`` uses
(``basketcast.serving.batch.score_users``), writing ``part-NNNNN.parquet`` of the output folder. The folder
is published atomically when every part is written (``basketcast.pipeline.data.publish``), so a reader sees
the old dataset or the new one, never a mix. Parts are written under temporary names and renamed,
so a task that Dask retries after a worker died (``retries``) rewrites its part from scratch and
the result is the same.

``ADDRESS`` is a running scheduler (``tcp://host:8786``: every worker needs basketcast with the
``serve`` extra and read access to the run folder at the same path); ``local[:N]`` starts a
:class:`distributed.LocalCluster` of N single-threaded worker processes on loopback (default 2)
and stops it afterwards.

Training and the export use the same clients and buckets (``basketcast.pipeline.workflows.cluster_train``).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from basketcast.pipeline.data.publish import Kind, publishing_dir
from basketcast.pipeline.errors import DataError
from basketcast.serving.batch import ScoreReport, is_scores_file, score_users
from basketcast.serving.model import Context, ServingModel

if TYPE_CHECKING:
    from distributed import Client

LOCAL = re.compile(r"^local(?::([1-9][0-9]*))?$")
DEFAULT_LOCAL_WORKERS = 2
PART = "part-{:05d}.parquet"
TASK_RETRIES = 3  # a task whose worker died is run again (on another worker) up to this many times


def _is_scores_dataset(path: Path) -> bool:
    """A folder of ``part-*.parquet`` scores files (what :func:`score_on_cluster` writes)."""
    parts = sorted(Path(path).glob("part-*.parquet"))
    return bool(parts) and all(is_scores_file(p) for p in parts)


SCORES_DATASET = Kind("scores dataset (folder of Parquet parts)", folder=True, recognise=_is_scores_dataset)


@contextlib.contextmanager
def dask_client(address: str, memory_limit: str | None = "auto") -> Iterator[Client]:
    """A client of the cluster at ``address``, or of a local cluster for ``local[:N]`` (stopped
    after; ``memory_limit`` per worker, e.g. "3GiB": Dask's nanny restarts a worker above it)."""
    from distributed import Client, LocalCluster

    match = LOCAL.match(address)
    if match is None:
        try:
            client = Client(address, timeout=10)
        except (OSError, TimeoutError) as exc:
            raise DataError(f"--cluster {address}: no Dask scheduler answers there ({exc})") from exc
        with client:
            yield client
        return
    workers = int(match.group(1) or DEFAULT_LOCAL_WORKERS)
    import dask

    with (
        # Tasks stay where their data is: lightgbm.dask trains each worker on the chunks it holds,
        # and a stolen task could move one (and change the model). A real scheduler needs the same
        # setting for reproducible models (README, "More than one machine").
        dask.config.set({"distributed.scheduler.work-stealing": False}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port on loopback (None still takes 8787 for its HTTP server)
            host="127.0.0.1",
            memory_limit=memory_limit,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def user_partitions(users: np.ndarray, partitions: int) -> list[np.ndarray]:
    """``users`` (uint32) in ``partitions`` buckets by ``user_id mod partitions``, each sorted.

    Stable whatever else is scored: a user always lands in the same bucket for a given count.
    Buckets may be empty.
    """
    users = np.unique(np.asarray(users, dtype=np.uint32))
    bucket = users % np.uint32(partitions)
    return [users[bucket == b] for b in range(partitions)]


_MODELS: dict[tuple[str, str], ServingModel] = {}  # per worker process: (path, version) → model


def _model(run_dir: str) -> ServingModel:
    from basketcast.serving.bundle import bundle_dir, read_manifest

    key = (run_dir, read_manifest(bundle_dir(Path(run_dir))).version)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker: a newer version replaces the older
        _MODELS[key] = ServingModel.load(Path(run_dir), threads=1)
    return _MODELS[key]


def score_partition(
    run_dir: str,
    users: np.ndarray,
    part: str,
    k: int,
    ctx: Context,
    unknown: Literal["popular", "skip"],
    reasons: bool = False,
) -> ScoreReport:
    """One task: the bucket's users scored into ``part`` (replaced whole when the task is retried);
    ``reasons`` adds the reason column, as single-process scoring does."""
    return score_users(_model(run_dir), users, Path(part), k=k, ctx=ctx, unknown=unknown, force=True, reasons=reasons)


@dataclass
class ClusterScoreReport:
    """What a cluster run did: the totals and each part's report."""

    partitions: int
    workers: int
    total: ScoreReport = field(default_factory=ScoreReport)
    parts: list[ScoreReport] = field(default_factory=list)


def score_on_cluster(
    run_dir: Path,
    users: np.ndarray | None,
    out: Path,
    client: Client,
    *,
    k: int = 20,
    ctx: Context,
    partitions: int | None = None,
    unknown: Literal["popular", "skip"] = "popular",
    force: bool = False,
    reasons: bool = False,
) -> ClusterScoreReport:
    """Score ``users`` (None = every user of the snapshot) into the folder ``out`` of Parquet parts
    (with ``reasons``, each part has the reason column of ``basketcast.serving.batch.score_users``).

    ``partitions`` defaults to 4 per worker (so a slow or lost worker delays a small share).
    """
    start = time.perf_counter()
    run_dir = Path(run_dir).resolve()
    if users is None:
        users = np.asarray(ServingModel.load(run_dir, threads=1).users)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    n = partitions or 4 * workers
    buckets = user_partitions(users, n)
    report = ClusterScoreReport(partitions=n, workers=workers)
    with publishing_dir(Path(out), SCORES_DATASET, force=force, inputs=[run_dir]) as tmp:
        futures = [
            client.submit(
                score_partition,
                str(run_dir),
                bucket,
                str(tmp / PART.format(i)),
                k,
                ctx,
                unknown,
                reasons,
                key=f"basketcast-score-{i:05d}-{time.time_ns()}",
                retries=TASK_RETRIES,
                pure=False,
            )
            for i, bucket in enumerate(buckets)
        ]
        report.parts = list(client.gather(futures))
        # Every task has finished: anything but the parts is a temporary file of a task whose worker
        # died mid-write (its retry wrote the part again). The folder is ours until published.
        names = {PART.format(i) for i in range(n)}
        for entry in tmp.iterdir():
            if entry.name not in names:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for part in report.parts:
        t = report.total
        t.users += part.users
        t.scored_users += part.scored_users
        t.unknown_users += part.unknown_users
        t.unknown_examples = (t.unknown_examples + part.unknown_examples)[:10]
        t.candidate_rows += part.candidate_rows
        t.output_rows += part.output_rows
    report.total.seconds = time.perf_counter() - start
    return report


def read_scores(path: Path) -> Any:
    """A scores file or a scores dataset folder as one Polars frame (sorted by user and rank)."""
    import polars as pl

    from basketcast.pipeline.data import schema as S

    frame = pl.read_parquet(Path(path) / "part-*.parquet" if Path(path).is_dir() else path)
    return frame.sort(S.USER, S.RANK)
