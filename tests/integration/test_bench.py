"""`basketcast bench`: the whole-pipeline benchmark runs end to end (smoke test, no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

# The same stages as the full benchmark, with a model small enough for CI.
SMOKE_CONFIG = {
    "lightgbm": {"n_estimators": 40},
    "xgboost": {"n_estimators": 30},
    "windows": {"extra_windows": 1},
    "max_training_groups": 1000,
}
EXPECTED_STAGES = (
    "generate (synthetic, Parquet)",
    "write the Kaggle CSV layout",
    "ingest (validate + canonical Parquet)",
    "window 0: history + ALS",
    "rankers (LightGBM lambdarank + binary, XGBoost baseline)",
    "evaluation on validation users",
    "ONNX export + parity check",
    "batch scoring of every user (top 20)",
)


def test_bench_runs_every_stage_and_reports_counts(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMOKE_CONFIG))
    out = tmp_path / "bench"
    cli = Path(sys.executable).parent / "basketcast"
    proc = subprocess.run(
        [str(cli), "bench", "--users", "2000", "--out", str(out), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "basketcast bench: 2,000 users" in proc.stdout
    result = json.loads((out / "bench.json").read_text())
    stages = [s["stage"] for s in result["stages"]]
    for name in EXPECTED_STAGES:
        assert name in stages, f"stage {name!r} missing from {stages}"
        assert name in proc.stdout
    assert any(s.startswith("snapshot: features (") for s in stages)
    assert all(s["seconds"] >= 0 and s["peak_rss_mb"] > 0 for s in result["stages"])
    assert result["total_seconds"] >= sum(s["seconds"] for s in result["stages"]) * 0.99
    counts = result["counts"]
    # The budget caps the fit users: 1,000 groups over the windows built.
    assert counts["training_groups"] == 1000
    assert counts["training_rows"] > counts["training_groups"]
    assert counts["label_windows_built"] == 1  # window 0 alone holds 1,440 fit users > the budget
    assert counts["evaluated_users"] == 400  # 20 % of 2,000, under the evaluation cap
    # Batch scoring covered every user of the snapshot, 20 products each.
    scores = pl.read_parquet(out / "scores.parquet")
    assert scores["user_id"].n_unique() == counts["scored_users"] == 2000
    offsets = np.load(out / "model" / "serving" / "offsets.npy")
    per_user = scores.group_by("user_id").len().sort("user_id")["len"].to_numpy()
    np.testing.assert_array_equal(per_user, np.minimum(20, np.diff(offsets)))  # top 20, or every candidate
    assert counts["scored_candidate_rows"] == counts["snapshot_rows"]
    metrics = result["metrics"]
    assert set(metrics) >= {"lightgbm", "xgboost", "tifu_knn", "top_frequency"}
    assert 0 < metrics["lightgbm"]["ndcg@10"] <= 1
