"""Crash safety of the real CLI: ``kill -9`` at several points of ingest, train, export and score.

For each command: a first run publishes an output; then the same command is started again and
killed with SIGKILL after 20 %, 60 % and 95 % of the first run's wall time. After every kill the
output must be loadable and byte-identical to the previous one — except after the 95 % kill, which
may land after the new output was swapped into place: then it must be the complete new output
(the same files, loadable), never a mix. A final re-run must succeed and leave no temporary or
aside copies behind (the leftovers of the killed runs are cleaned up by it).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from basketcast.pipeline.data.publish import _LEFTOVER
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.workflows.run_folder import load_run
from basketcast.serving.model import ServingModel
from tests.conftest import EXCERPT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXE = Path(sys.executable).with_name("basketcast")
FAST = {
    "lightgbm": {"n_estimators": 60},
    "xgboost": {"enabled": False},
    "windows": {"extra_windows": 1},
    "mlflow": False,
}
KILL_AT = (0.2, 0.6, 0.95)


def digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (or of ``path`` itself), by relative name."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if _LEFTOVER.match(p.name))


def run(args: list[str]) -> float:
    start = time.perf_counter()
    res = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return time.perf_counter() - start


def kill_after(args: list[str], seconds: float) -> bool:
    """Start the command, SIGKILL it after ``seconds``; whether it was still running then."""
    proc = subprocess.Popen([str(EXE), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return True


def kill_while_publishing(args: list[str], out: Path, delay: float) -> bool:
    """Start the command and SIGKILL it ``delay`` seconds after it starts writing its new output
    (a temporary sibling of ``out`` appears, or ``out`` itself changes); whether it was killed."""

    def state() -> tuple[int, int] | None:
        try:
            st = out.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    initial = state()
    proc = subprocess.Popen([str(EXE), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        started = state() != initial or any(p.name.startswith(f".{out.name}.tmp-") for p in out.parent.iterdir())
        if started:
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return True
        time.sleep(0.005)
    return False


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    (root / "config.json").write_text(json.dumps(FAST))
    return root


def check_kills(args: list[str], out: Path, load: Callable[[Path], object]) -> None:
    wall = min(run(args), run(args))  # the previous output; how long the command takes (warm)
    load(out)
    before = digest(out)
    kept = 0
    for share in KILL_AT:
        killed = kill_after(args, share * wall)
        after = digest(out)
        load(out)
        if after == before:
            kept += 1
        else:
            # Only a run that got past its publication (the atomic swap) may change the output,
            # and then the output is the new one, complete: the same files, loadable.
            assert sorted(after) == sorted(before), f"killed at {share:.0%}: a different set of files"
            assert not killed or share == KILL_AT[-1], f"killed at {share:.0%}: the previous output changed"
    # Time points drift with the machine's load (a run may finish early); the 20 % one never does.
    assert kept >= 1, "the command finished before every kill point; nothing was tested"
    # And once while the new output is being written (the window the time points may miss).
    run(args)  # the 95 % kill may have let a run finish; this one also cleans the killed runs' leftovers
    before = digest(out)
    if kill_while_publishing(args, out, delay=0.05):
        assert digest(out) == before, "killed while publishing: the previous output changed"
        load(out)
    run(args)
    load(out)
    assert leftovers(out.parent) == []


def test_kill_9_during_ingest_keeps_the_previous_data(root: Path) -> None:
    check_kills(["ingest", "--source", str(EXCERPT), "--out", str(root / "data")], root / "data", read_dataset)


def test_kill_9_during_train_keeps_the_previous_run(root: Path) -> None:
    if not (root / "data").exists():
        run(["ingest", "--source", str(EXCERPT), "--out", str(root / "data")])
    args = ["train", "--data", str(root / "data"), "--out", str(root / "run"), "--config", str(root / "config.json")]
    check_kills(args, root / "run", load_run)


def test_kill_9_during_export_keeps_the_previous_bundle(root: Path) -> None:
    if not (root / "run").exists():
        run(["ingest", "--source", str(EXCERPT), "--out", str(root / "data")])
        run(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--config", str(root / "config.json")])
    check_kills(["export", "--model", str(root / "run")], root / "run", lambda p: ServingModel.load(p))


def test_kill_9_during_score_keeps_the_previous_scores(root: Path) -> None:
    if not (root / "run").exists():
        run(["ingest", "--source", str(EXCERPT), "--out", str(root / "data")])
        run(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--config", str(root / "config.json")])
    out = root / "scores.parquet"
    check_kills(["score", "--model", str(root / "run"), "--out", str(out)], out, pl.read_parquet)


def test_kill_9_before_a_first_output_leaves_nothing_there(root: Path) -> None:
    out = root / "first-data"
    wall = run(["ingest", "--source", str(EXCERPT), "--out", str(root / "probe")])
    assert kill_after(["ingest", "--source", str(EXCERPT), "--out", str(out)], 0.6 * wall)
    assert not out.exists()  # only a hidden temporary copy, which the next run removes
    run(["ingest", "--source", str(EXCERPT), "--out", str(out)])
    read_dataset(out)
    assert leftovers(root) == []


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_output(root: Path) -> None:
    """``ulimit -f`` (RLIMIT_FSIZE, SIGXFSZ ignored) makes every write past 32 KiB fail with EFBIG,
    as a full disk makes them fail with ENOSPC: the excerpt's 70 KB order_products.parquet does not fit."""
    import resource

    out = root / "full-disk-data"
    run(["ingest", "--source", str(EXCERPT), "--out", str(out)])
    before = digest(out)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    args = ["ingest", "--source", str(EXCERPT), "--out", str(out)]
    res = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"error: {out}: could not be written (" in res.stderr and "Traceback" not in res.stderr
    assert digest(out) == before and leftovers(root) == []
