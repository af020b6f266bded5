"""`make bench-realtime` runs end to end on a small model (smoke test: no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_bench_realtime_posts_orders_and_reads_them_back_fresh(excerpt_run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "realtime.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_realtime.py"), "--model", str(excerpt_run["run"])]
    cmd += ["--orders", "12", "--duration", "1", "--stores", "embedded", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    (write,) = result["writes"]
    assert write["orders"] == 8 and write["errors"] == 0 and write["not_fresh"] == 0  # 12 minus 4 warm-up
    assert 0 < write["p50_ms"] <= write["p99_ms"] <= write["max_ms"]
    reads = {(r["users"], r["cache"]): r for r in result["reads"]}
    assert set(reads) == {("fresh", True), ("snapshot", True), ("fresh", False), ("snapshot", False)}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in reads.values())
    assert reads[("fresh", True)]["cache_hit_ratio"] > 0.5  # the same few users, asked again and again
    assert "write p99 / 50 ms budget" in done.stdout
