"""``basketcast train --cluster`` and ``export --cluster``: the work that grows with the users, on Dask.

:class:`ClusterSession` plugs into ``basketcast.pipeline.workflows.run.train`` (its learning stage) and
``basketcast.pipeline.workflows.export.write_bundle`` (the snapshot's rows); everything else runs as in one
process. What runs where:

1. **Buckets on Parquet** (client, once): users hash-partitioned (``user_id mod P``); each
   bucket's orders and order lines go to ``WORK/buckets/bucket-NNNNN/`` (on a real cluster a
   shared folder: every worker reads it at the same path).
2. **Per label window, once** (client): the visible history, ALS (``implicit`` on one node, as
   ``basketcast.pipeline.model.windows``) and the product-level tables every user's features take as given
   (``basketcast.features.build.PublishedTables``: product features, the TIFU reference), scattered to the
   workers once; each bucket's task carries its own users' ALS factors.
3. **Per (window, bucket), one task** (workers): the bucket's history as of the window's
   cutoffs, candidates, features and labels — ``basketcast.pipeline.model.windows.window_rows``, the function
   one process uses — written to ``WORK/rows/window-W/part-NNNNN.parquet`` (renamed into place,
   so a task Dask retries after its worker died rewrites it whole).
4. **The training blocks** (workers): each part's fit users' rows with the negative sample and
   weights one process draws (the client hands each part its share of the same seeded random
   numbers), gathered into one block per worker; ``basketcast.pipeline.model.dask_training`` trains on them
   with ``lightgbm.dask``. The stop and evaluated users' window-0 rows come back to the client for
   early stopping, the objective's choice and the evaluation report.
5. **The snapshot** (workers, one task per bucket): each bucket's users' candidates and base
   features as of their next order, merged on the client into the bundle in user order.

Rows and snapshot equal one process's for the same data and seeds (tests compare them bit for
bit); the rankers differ by what data-parallel LightGBM implies (BENCHMARKS.md, "More than one
machine").
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from basketcast.features import cutoffs as C
from basketcast.features.build import BASE_FEATURES, FeatureTables, PublishedTables, base_matrix
from basketcast.features.history import History, as_of, order_lines
from basketcast.features.sequence import SequenceScorer
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import atomic_path
from basketcast.pipeline.data.storage import Dataset
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.model.candidates import NUMPY_TOPK_USERS, ALSModel, candidates
from basketcast.pipeline.model.dask_training import Block, fit_rankers_on_cluster
from basketcast.pipeline.model.training import Matrix
from basketcast.pipeline.model.windows import FIT, STOP, PlannedWindow, Window, evaluation_users, window_rows
from basketcast.pipeline.progress import Timings, overall_peak_rss_mb
from basketcast.pipeline.workflows.cluster import TASK_RETRIES
from basketcast.pipeline.workflows.export import SNAPSHOT_CHUNK_USERS, open_rows

if TYPE_CHECKING:
    from distributed import Client

    from basketcast.pipeline.workflows.run import Learned

log = logging.getLogger(__name__)

BUCKET = "bucket-{:05d}"
PART = "part-{:05d}.parquet"
_BUCKET_COL = "_bucket"


USERS_PER_PARTITION = 25_000  # a bucket's history, rows and snapshot stay a few hundred MB


def default_partitions(users: int, workers: int) -> int:
    """User buckets when none are asked for: 4 per worker (a slow or lost worker delays a small
    share), and more as users grow so that a bucket holds at most USERS_PER_PARTITION users
    (the per-task memory stays flat: 8 at Instacart's 206k users on 2 workers, 800 at 20M)."""
    return max(4 * max(1, workers), -(-users // USERS_PER_PARTITION))


def _by_bucket(frame: pl.DataFrame, bucket: pl.Expr, partitions: int) -> list[pl.DataFrame]:
    """The rows of ``frame`` in ``partitions`` buckets by ``bucket`` (0 … partitions − 1), in their
    order; an empty frame for a bucket without rows."""
    tagged = frame.with_columns(bucket.cast(pl.UInt32).alias(_BUCKET_COL))
    parts = {int(k[0]): v for k, v in tagged.partition_by(_BUCKET_COL, as_dict=True).items()}  # type: ignore[arg-type]
    return [parts.get(b, tagged.clear()).drop(_BUCKET_COL) for b in range(partitions)]


def write_buckets(data: Dataset, partitions: int, folder: Path) -> list[Path]:
    """Each bucket's orders and order lines (``user_id mod partitions``) as Parquet under ``folder``.

    Rows keep their order in the data folder, so per-user computations see them as one process does.
    """
    bucket = pl.col(S.USER) % partitions
    lines = data.order_products.join(
        data.orders.select(S.ORDER, bucket.alias(_BUCKET_COL)), on=S.ORDER, how="left", maintain_order="left"
    )
    paths = []
    for b, (orders_b, lines_b) in enumerate(
        zip(
            _by_bucket(data.orders, bucket, partitions), _by_bucket(lines, pl.col(_BUCKET_COL), partitions), strict=True
        )
    ):
        path = folder / BUCKET.format(b)
        path.mkdir(parents=True, exist_ok=True)
        orders_b.write_parquet(path / "orders.parquet")
        lines_b.write_parquet(path / "order_products.parquet")
        paths.append(path)
    return paths


def cutoffs_by_bucket(cutoffs: pl.DataFrame, partitions: int) -> list[pl.DataFrame]:
    """``cutoffs`` (sorted by user) in the buckets of :func:`write_buckets`, each sorted by user."""
    return _by_bucket(cutoffs, pl.col(S.USER) % partitions, partitions)


def read_bucket(path: Path, products: pl.DataFrame) -> Dataset:
    """A bucket written by :func:`write_buckets` as a Dataset (the catalogue shared)."""
    return Dataset(
        orders=pl.read_parquet(path / "orders.parquet"),
        order_products=pl.read_parquet(path / "order_products.parquet"),
        products=products,
        aisles=pl.DataFrame(),
        departments=pl.DataFrame(),
    )


@dataclass(frozen=True)
class PartStats:
    """What one (window, bucket) task made, and its worker process's peak memory so far (MiB)."""

    window: int
    bucket: int
    users: int
    rows: int
    positives: int
    seconds: float
    worker_peak_mb: float
    worker: str


def window_part(
    bucket_dir: str,
    bucket: int,
    products: pl.DataFrame,
    cutoffs: pl.DataFrame,
    users: np.ndarray | None,
    als_items: ALSModel,
    als_users: tuple[np.ndarray, np.ndarray],
    published: PublishedTables,
    window: int,
    config: TrainConfig,
    numpy_topk_users: int,
    out: str,
    network: SequenceScorer | None = None,
) -> PartStats:
    """One task: the labelled rows of one bucket's users in one window, written to ``out``
    (``als_items``: the window's ALS item side, the same for every task; ``als_users``: the
    bucket's users' ids and factors from the same fit)."""
    start = time.perf_counter()
    als = als_items.with_users(*als_users)
    data = read_bucket(Path(bucket_dir), products)
    lines = order_lines(data)
    h = as_of(data, cutoffs, lines)
    chosen = h.cutoffs[S.USER]
    if users is not None:
        chosen = chosen.filter(chosen.is_in(pl.Series(users, dtype=pl.UInt32).implode()))
    frame, _ = window_rows(
        h, lines, als, chosen, window, config, network=network, published=published, numpy_topk_users=numpy_topk_users
    )
    with atomic_path(Path(out)) as tmp:
        frame.write_parquet(tmp)
    from distributed import get_worker

    try:
        worker = get_worker().address
    except ValueError:
        worker = "client"
    return PartStats(
        window=window,
        bucket=bucket,
        users=int(chosen.len()),
        rows=frame.height,
        positives=int(frame[S.LABEL].sum()) if frame.height else 0,
        seconds=time.perf_counter() - start,
        worker_peak_mb=overall_peak_rss_mb(),
        worker=worker,
    )


def training_block(
    part: str, fit_users: np.ndarray, draws: np.ndarray, mean_size: float, rate: float, equal_user_weight: bool
) -> Matrix:
    """One part's training matrix: its fit users' rows with the negative sample and the weights
    ``basketcast.pipeline.model.training.fit_rankers`` gives them in one process.

    ``draws`` are this part's share (its rows in (window, user) order) of the seeded uniform
    numbers one process draws for all training rows; ``mean_size`` the mean rows per (window,
    user) group over all of them (the equal-user weight's numerator).
    """
    rows = pl.read_parquet(part).filter(pl.col(S.USER).is_in(pl.Series(fit_users, dtype=pl.UInt32).implode()))
    sizes = rows.group_by(S.USER, maintain_order=True).len()["len"].to_numpy()
    if draws.size != rows.height:
        raise DataError(f"{part}: {rows.height} training rows but {draws.size} random draws (rows changed?)")
    rows = rows.with_columns(
        pl.Series(S.USER_WEIGHT, (mean_size / np.repeat(sizes, sizes)).astype(np.float32)),
        pl.when(pl.col(S.LABEL) == 1).then(1.0).otherwise(1.0 / rate).cast(pl.Float32).alias(S.SAMPLING_WEIGHT),
    )
    if rate < 1.0:
        rows = rows.filter(pl.Series(draws < rate) | (pl.col(S.LABEL) == 1))
    return Matrix.of(rows, equal_user_weight)


def _group_sizes(part: str, fit_users: np.ndarray) -> np.ndarray:
    """(user, rows) of the fit users' groups of one part, in the part's (user) order."""
    rows = pl.read_parquet(part, columns=[S.USER]).filter(
        pl.col(S.USER).is_in(pl.Series(fit_users, dtype=pl.UInt32).implode())
    )
    counts = rows.group_by(S.USER, maintain_order=True).len()
    return np.stack([counts[S.USER].to_numpy().astype(np.int64), counts["len"].to_numpy().astype(np.int64)])


@dataclass
class ClusterWindows:
    """What the cluster made of the label windows: parts on disk, their stats, window 0 for the client."""

    parts: dict[int, list[Path]]  # window → part per bucket
    stats: list[PartStats] = field(default_factory=list)
    window0: Window | None = None


def build_windows_on_cluster(
    client: Client,
    data: Dataset,
    lines: pl.DataFrame,
    config: TrainConfig,
    plan: list[PlannedWindow],
    work: Path,
    buckets: list[Path],
    products: Any,
    timings: Timings,
    client_users: pl.Series,
    network: SequenceScorer | None = None,
) -> ClusterWindows:
    """Every planned window's rows, one task per (window, bucket); window 0's rows of
    ``client_users`` (stop and evaluated users) are read back into a :class:`Window` with its
    history and ALS, as the evaluation on the client needs. ``network`` (the sequence network,
    trained on the client) is scattered once and scores each bucket's rows on its worker."""
    partitions = len(buckets)
    out = ClusterWindows(parts={})
    net = None if network is None else client.scatter(network, broadcast=True)
    for planned in plan:
        w = planned.window
        with timings.stage(f"window {w}: history + ALS + product tables (client)"):
            h = as_of(data, planned.cutoffs, lines)
            als = ALSModel.fit(h.lines, config.als)
            published = PublishedTables.of_history(h, config.features)
        chosen = h.cutoffs[S.USER] if planned.users is None else planned.users
        # One process ranks ALS candidates in NumPy only when the whole window has few users.
        topk = 1 << 62 if chosen.len() <= NUMPY_TOPK_USERS else 0
        shared = client.scatter(published, broadcast=True)
        items = client.scatter(als.item_side(), broadcast=True)
        folder = work / "rows" / f"window-{w}"
        folder.mkdir(parents=True, exist_ok=True)
        chosen_np = None if planned.users is None else np.sort(planned.users.cast(pl.UInt32).to_numpy())
        futures = []
        for b, cut_b in enumerate(cutoffs_by_bucket(h.cutoffs, partitions)):
            users_b = cut_b[S.USER].to_numpy()
            mine = None if chosen_np is None else chosen_np[np.isin(chosen_np, users_b)]
            futures.append(
                client.submit(
                    window_part,
                    str(buckets[b]),
                    b,
                    products,
                    cut_b,
                    mine,
                    items,
                    als.factors_of(users_b),
                    shared,
                    w,
                    config,
                    topk,
                    str(folder / PART.format(b)),
                    net,
                    key=f"basketcast-window-{w}-{b:05d}-{time.time_ns()}",
                    retries=TASK_RETRIES,
                    pure=False,
                )
            )
        with timings.stage(f"window {w}: candidates + features on the cluster ({partitions} tasks)"):
            stats = client.gather(futures)
        out.stats.extend(stats)
        out.parts[w] = [folder / PART.format(b) for b in range(partitions)]
        log.info(
            "window %d: %d users with rows, %d candidate rows (cluster)",
            w,
            sum(s.users for s in stats),
            sum(s.rows for s in stats),
        )
        if w == 0:
            frame = read_rows(out.parts[0], client_users)
            truth = C.labels(lines, h.cutoffs.join(pl.DataFrame(client_users), on=S.USER, how="semi"))
            out.window0 = Window(window=0, history=h, als=als, frame=frame, truth=truth)
        del h, als, published
    return out


def read_rows(parts: list[Path], users: pl.Series) -> pl.DataFrame:
    """The rows of ``users`` from a window's parts, sorted by user (as one process holds them)."""
    wanted = users.cast(pl.UInt32).implode()
    frames = [pl.scan_parquet(p).filter(pl.col(S.USER).is_in(wanted)).collect() for p in parts]
    return pl.concat(frames).sort(S.USER, maintain_order=True)


def training_blocks(
    client: Client, windows: ClusterWindows, fit_users: pl.Series, config: TrainConfig
) -> tuple[list[Block], dict[str, int]]:
    """The training blocks on the workers, with one process's negative sample and weights, and
    the fit users' candidate rows and (window, user) groups before sampling."""
    fit = np.sort(fit_users.cast(pl.UInt32).to_numpy())
    keys = [(w, b, p) for w in sorted(windows.parts) for b, p in enumerate(windows.parts[w])]
    groups = client.gather([client.submit(_group_sizes, str(p), fit, pure=False) for _, _, p in keys])
    # One process draws one uniform number per training row, rows in (window, user) order.
    table = pl.concat(
        [
            pl.DataFrame({"k": np.full(g.shape[1], i), S.WINDOW: np.full(g.shape[1], w), S.USER: g[0], "n": g[1]})
            for i, ((w, _, _), g) in enumerate(zip(keys, groups, strict=True))
        ]
    )
    if table.height == 0:
        raise DataError("no fit user has training rows")
    table = table.sort(S.WINDOW, S.USER).with_columns((pl.col("n").cum_sum() - pl.col("n")).alias("offset"))
    total = int(table["n"].sum())
    draws = np.random.default_rng(config.seed).random(total)
    mean_size = float(np.mean(table["n"].to_numpy()))  # what user_weights divides by in one process
    futures = []
    for i, (_, _, p) in enumerate(keys):
        mine = table.filter(pl.col("k") == i).sort(S.USER)
        if mine.height == 0:
            continue
        idx = np.concatenate(
            [np.arange(o, o + n) for o, n in zip(mine["offset"].to_numpy(), mine["n"].to_numpy(), strict=True)]
        )
        futures.append(
            client.submit(
                training_block,
                str(p),
                fit,
                draws[idx],
                mean_size,
                config.negative_sample_rate,
                config.lightgbm.equal_user_weight,
                pure=False,
                retries=TASK_RETRIES,
            )
        )
    # One block per worker, block k on the k-th worker by address: lightgbm.dask trains each worker
    # on the data it holds and ranks workers by the first block, so this fixed placement makes the
    # same models run after run. (Training needs every worker to the end: a lost one fails the fit.)
    workers = sorted(client.scheduler_info()["workers"])
    groups = [futures[k :: len(workers)] for k in range(min(len(workers), len(futures)))]
    merged = [
        client.submit(concat_matrices, *group, workers=[workers[k]], allow_other_workers=False, pure=False)
        for k, group in enumerate(groups)
    ]
    rows = client.gather([client.submit(_rows, f, workers=[workers[k]], pure=False) for k, f in enumerate(merged)])
    blocks = [
        Block(matrix=f, rows=int(n), worker=workers[k]) for k, (f, n) in enumerate(zip(merged, rows, strict=True))
    ]
    return blocks, {"training_candidate_rows": total, "training_groups": table.height}


def concat_matrices(*parts: Matrix) -> Matrix:
    """Training matrices one after another (groups stay whole)."""
    return Matrix(
        X=np.concatenate([m.X for m in parts]),
        label=np.concatenate([m.label for m in parts]),
        sizes=np.concatenate([m.sizes for m in parts]),
        weight=np.concatenate([m.weight for m in parts]),
        sampling_weight=np.concatenate([m.sampling_weight for m in parts]),
    )


def _rows(matrix: Matrix) -> int:
    return int(matrix.X.shape[0])


def snapshot_part(
    bucket_dir: str,
    products: pl.DataFrame,
    cutoffs: pl.DataFrame,
    als_items: ALSModel,
    als_users: tuple[np.ndarray, np.ndarray],
    published: PublishedTables,
    config: TrainConfig,
    numpy_topk_users: int,
    out: str,
    network: SequenceScorer | None = None,
) -> dict[str, np.ndarray]:
    """One task of the snapshot: the bucket's users' candidates and base rows as of ``cutoffs``
    (``out``: a .npy of base rows); returns users (sorted), rows per user, products, repeat flags."""
    data = read_bucket(Path(bucket_dir), products)
    h = as_of(data, cutoffs, order_lines(data))
    als = als_items.with_users(*als_users)
    cands = candidates(h, als, h.cutoffs[S.USER], config.candidates, numpy_topk_users=numpy_topk_users)
    base = base_matrix(FeatureTables.of(h, config.features, network, published=published).base_frame(cands))
    with atomic_path(Path(out)) as tmp, tmp.open("wb") as fh:
        np.save(fh, base, allow_pickle=False)
    users, counts = np.unique(cands[S.USER].to_numpy(), return_counts=True)
    return {
        "users": users.astype(np.uint32),
        "counts": counts.astype(np.int64),
        "products": cands[S.PRODUCT].to_numpy().astype(np.uint32),
        "repeat": cands[S.IS_REPEAT].to_numpy().astype(np.bool_),
    }


@dataclass
class ClusterSession:
    """``basketcast train --cluster`` / ``export --cluster``: a Dask client, a work folder every
    worker reads at the same path, and the user buckets on Parquet (written once, on first use).

    :meth:`learn` is the learning stage of ``basketcast.pipeline.workflows.run.train`` and
    :meth:`snapshot_rows` the snapshot rows of ``basketcast.pipeline.workflows.export.write_bundle``.
    Close it (or use it as a context manager) to remove the work folder.
    """

    client: Client
    work: Path
    partitions: int | None = None  # None: see default_partitions
    stats: list[PartStats] = field(default_factory=list)
    _buckets: list[Path] | None = None
    _products: Any = None

    def __enter__(self) -> ClusterSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def buckets(self, data: Dataset, timings: Timings) -> tuple[list[Path], Any]:
        """The bucket folders and the scattered catalogue (written and scattered on first use)."""
        if self._buckets is None:
            if self.partitions is None:
                workers = len(self.client.scheduler_info()["workers"])
                self.partitions = default_partitions(data.orders[S.USER].n_unique(), workers)
            with timings.stage(f"cluster: {self.partitions} user buckets on Parquet"):
                self._buckets = write_buckets(data, self.partitions, self.work / "buckets")
            self._products = self.client.scatter(data.products, broadcast=True)
        return self._buckets, self._products

    def learn(
        self,
        data: Dataset,
        lines: pl.DataFrame,
        config: TrainConfig,
        timings: Timings,
        roles: pl.DataFrame,
        network: SequenceScorer | None,
        plan: list[PlannedWindow],
    ) -> Learned:
        """The label windows' rows and the rankers on the cluster
        (:class:`basketcast.pipeline.workflows.run.Learner`)."""
        from basketcast.pipeline.workflows.run import Learned

        buckets, products = self.buckets(data, timings)
        assert self.partitions is not None
        stop_users = roles.filter(pl.col(S.ROLE) == STOP)[S.USER]
        client_users = pl.concat([stop_users, evaluation_users(roles, config)]).unique().sort()
        windows = build_windows_on_cluster(
            self.client, data, lines, config, plan, self.work, buckets, products, timings, client_users, network
        )
        self.stats.extend(windows.stats)
        assert windows.window0 is not None
        window0 = windows.window0
        roles = roles.join(window0.history.cutoffs.select(S.USER), on=S.USER, how="semi")
        with timings.stage("rankers on the cluster (lightgbm.dask, xgboost.dask)"):
            fit_users = roles.filter(pl.col(S.ROLE) == FIT)[S.USER]
            blocks, fit_stats = training_blocks(self.client, windows, fit_users, config)
            stop_users = roles.filter(pl.col(S.ROLE) == STOP)[S.USER]
            stop_rows = window0.frame.filter(pl.col(S.USER).is_in(stop_users.implode()))
            stop_truth = window0.truth.filter(pl.col(S.USER).is_in(stop_users.implode()))
            rankers = fit_rankers_on_cluster(self.client, blocks, stop_rows, stop_truth, config)
            del blocks
        stats = {
            "windows": sorted(windows.parts),
            "window_rows": [sum(s.rows for s in windows.stats if s.window == w) for w in sorted(windows.parts)],
            "training_rows": rankers.training_rows,
            **fit_stats,
        }
        return Learned(window0=window0, rankers=rankers, roles=roles, stats=stats)

    def snapshot_rows(
        self,
        base: Path,
        h: History,
        als: ALSModel,
        config: TrainConfig,
        timings: Timings,
        network: SequenceScorer | None,
    ) -> tuple[dict[str, np.ndarray], PublishedTables]:
        """Every user's snapshot rows, one task per bucket, merged into ``base`` in user order
        (:class:`basketcast.pipeline.workflows.export.SnapshotRows`)."""
        assert self._buckets is not None and self.partitions is not None, "call buckets() first (learn does)"
        with timings.stage("snapshot: product tables (product features, TIFU reference)"):
            published = PublishedTables.of_history(h, config.features)
        folder = self.work / "snapshot"
        folder.mkdir(parents=True, exist_ok=True)
        topk = 1 << 62 if h.cutoffs.height <= NUMPY_TOPK_USERS else 0
        shared = self.client.scatter(published, broadcast=True)
        net = None if network is None else self.client.scatter(network, broadcast=True)
        items = self.client.scatter(als.item_side(), broadcast=True)
        futures = [
            self.client.submit(
                snapshot_part,
                str(self._buckets[b]),
                self._products,
                cut_b,
                items,
                als.factors_of(cut_b[S.USER].to_numpy()),
                shared,
                config,
                topk,
                str(folder / f"base-{b:05d}.npy"),
                net,
                key=f"basketcast-snapshot-{b:05d}-{time.time_ns()}",
                retries=TASK_RETRIES,
                pure=False,
            )
            for b, cut_b in enumerate(cutoffs_by_bucket(h.cutoffs, self.partitions))
        ]
        with timings.stage(f"snapshot: candidates + features on the cluster ({self.partitions} tasks)"):
            parts = self.client.gather(futures)
        with timings.stage("snapshot: rows merged in user order"):
            files = [folder / f"base-{b:05d}.npy" for b in range(self.partitions)]
            return merge_snapshot(base, parts, files), published


def merge_snapshot(base: Path, parts: list[dict[str, np.ndarray]], files: list[Path]) -> dict[str, np.ndarray]:
    """The parts' rows in one ``base`` .npy, users ascending (each part's users are sorted, and a
    user is in one part); returns products, repeat, users and offsets in that order."""
    users = np.concatenate([p["users"] for p in parts])
    counts = np.concatenate([p["counts"] for p in parts])
    part_of = np.concatenate([np.full(p["users"].size, k, np.int64) for k, p in enumerate(parts)])
    # Where each user's rows start in its part, and where each part starts in the concatenation.
    start_in_part = np.concatenate([(np.cumsum(p["counts"]) - p["counts"]).astype(np.int64) for p in parts])
    part_base = np.r_[0, np.cumsum([p["products"].size for p in parts])[:-1]].astype(np.int64)
    order = np.argsort(users, kind="stable")
    if np.any(users[order][1:] == users[order][:-1]):
        raise DataError("a user is in two snapshot parts")
    maps = [np.load(f, mmap_mode="r") for f in files]
    offsets = np.r_[0, np.cumsum(counts[order])].astype(np.int64)
    gather = np.empty(int(offsets[-1]), np.int64)  # row of the concatenated parts for each output row
    with open_rows(base, int(offsets[-1])) as fh:
        for lo in range(0, order.size, SNAPSHOT_CHUNK_USERS):
            sel = order[lo : lo + SNAPSHOT_CHUNK_USERS]
            n = counts[sel]
            within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
            row = np.repeat(start_in_part[sel], n) + within
            part = np.repeat(part_of[sel], n)
            block = np.empty((row.size, len(BASE_FEATURES)), np.float32)
            for k in np.unique(part):
                mask = part == k
                block[mask] = maps[k][row[mask]]
            fh.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
            gather[offsets[lo] : offsets[lo] + row.size] = part_base[part] + row
    return {
        "products": np.concatenate([p["products"] for p in parts])[gather],
        "repeat": np.concatenate([p["repeat"] for p in parts])[gather],
        "users": users[order],
        "offsets": offsets,
    }
