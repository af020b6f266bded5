"""Batch scoring on a Dask cluster (``basketcast score --cluster``): a real ``LocalCluster`` of 2
single-threaded worker processes on loopback. The partitioned output must equal the
single-process ``basketcast score`` output row for row — with unknown users, with partitions
that hold no user, and when a worker is killed in the middle of the run (Dask retries its tasks
elsewhere; each part is rewritten whole)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from basketcast.pipeline.cli import main
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.workflows.cluster import (
    ClusterScoreReport,
    dask_client,
    read_scores,
    score_on_cluster,
    user_partitions,
)
from basketcast.serving.batch import REASON, score_users
from basketcast.serving.model import Context, ServingModel

pytestmark = pytest.mark.integration

CTX = Context(dow=2, hour=10, days=None)


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with dask_client("local:2") as c:
        yield c


def single(run: Path, users: np.ndarray | None, out: Path) -> pl.DataFrame:
    score_users(ServingModel.load(run), users, out, k=10, ctx=CTX)
    return read_scores(out)  # type: ignore[no-any-return]


def test_partitions_are_a_stable_hash_of_the_user(tmp_path: Path) -> None:
    users = np.array([7, 1, 12, 5, 5, 30], np.uint32)
    parts = user_partitions(users, 4)
    assert [p.tolist() for p in parts] == [[12], [1, 5], [30], [7]]
    assert [p.tolist() for p in user_partitions(np.array([1], np.uint32), 3)] == [[], [1], []]


def test_cluster_scores_equal_the_single_process_ones(
    excerpt_run: dict[str, Path], client: object, tmp_path: Path
) -> None:
    run = excerpt_run["run"]
    known = np.asarray(ServingModel.load(run).users)
    users = np.concatenate([known, [4_000_000_001, 4_000_000_002]]).astype(np.uint32)  # + 2 unknown
    expected = single(run, users, tmp_path / "single.parquet")
    report = score_on_cluster(run, users, tmp_path / "parts", client, k=10, ctx=CTX, partitions=5)  # type: ignore[arg-type]
    got = read_scores(tmp_path / "parts")
    assert got.equals(expected)
    assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == 5
    assert report.total.users == users.size and report.total.unknown_users == 2
    assert report.total.output_rows == expected.height


def test_cluster_reasons_equal_the_single_process_ones(
    excerpt_run: dict[str, Path], client: object, tmp_path: Path
) -> None:
    run = excerpt_run["run"]
    model = ServingModel.load(run)
    users = np.concatenate([np.asarray(model.users)[:40], [4_000_000_001]]).astype(np.uint32)
    score_users(model, users, tmp_path / "single.parquet", k=10, ctx=CTX, reasons=True)
    expected = pl.read_parquet(tmp_path / "single.parquet").sort(S.USER, S.RANK)
    score_on_cluster(run, users, tmp_path / "parts", client, k=10, ctx=CTX, partitions=3, reasons=True)  # type: ignore[arg-type]
    got = read_scores(tmp_path / "parts")
    assert got.columns[-1] == REASON and got.equals(expected)
    assert got[REASON].null_count() == 0


def test_partitions_without_users_are_empty_parts(excerpt_run: dict[str, Path], client: object, tmp_path: Path) -> None:
    run = excerpt_run["run"]
    users = np.asarray(ServingModel.load(run).users)[:3]
    expected = single(run, users, tmp_path / "single.parquet")
    report = score_on_cluster(run, users, tmp_path / "parts", client, k=10, ctx=CTX, partitions=16)  # type: ignore[arg-type]
    assert sum(p.users == 0 for p in report.parts) == 16 - 3
    assert read_scores(tmp_path / "parts").equals(expected)


def test_a_worker_killed_mid_run_changes_nothing(excerpt_run: dict[str, Path], tmp_path: Path) -> None:
    run = excerpt_run["run"]
    users = np.asarray(ServingModel.load(run).users)
    expected = single(run, users, tmp_path / "single.parquet")
    partitions = 300  # small tasks, many of them: the kill lands while most are still to run
    with dask_client("local:2") as client:
        pids = client.run(os.getpid)
        result: dict[str, ClusterScoreReport] = {}
        job = threading.Thread(
            target=lambda: result.setdefault(
                "report", score_on_cluster(run, users, tmp_path / "parts", client, k=10, ctx=CTX, partitions=partitions)
            )
        )
        job.start()
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob(".parts.tmp-*/part-*.parquet"))) < 5:
            assert time.monotonic() < deadline and job.is_alive(), "the run ended before a worker could be killed"
            time.sleep(0.005)
        written_at_kill = len(list(tmp_path.glob(".parts.tmp-*/part-*.parquet")))
        os.kill(next(iter(pids.values())), signal.SIGKILL)  # a worker process dies (its nanny restarts it)
        job.join(timeout=120)
        assert not job.is_alive()
    assert written_at_kill < partitions
    assert read_scores(tmp_path / "parts").equals(expected)
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        f"part-{i:05d}.parquet" for i in range(partitions)
    ]
    assert result["report"].total.scored_users == users.size


def test_score_command_with_a_local_cluster(excerpt_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "scores"
    args = ["score", "--model", str(excerpt_run["run"]), "--out", str(out), "--k", "10", "--dow", "2", "--hour", "10"]
    done = CliRunner().invoke(main, [*args, "--cluster", "local:2", "--partitions", "3"])
    assert done.exit_code == 0, done.output
    assert "on 2 Dask workers" in done.output and "(3 parts)" in done.output
    expected = single(excerpt_run["run"], None, tmp_path / "single.parquet")
    assert read_scores(out).equals(expected)
    again = CliRunner().invoke(main, [*args, "--cluster", "local:2"])  # replaces its own output
    assert again.exit_code == 0, again.output
    bad = CliRunner().invoke(main, [*args, "--cluster", "tcp://127.0.0.1:9", "--force"])
    assert bad.exit_code == 2 and "no Dask scheduler answers there" in bad.output
