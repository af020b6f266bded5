"""The whole-pipeline benchmark behind ``basketcast bench`` and ``make bench-full``.

At N synthetic users, in one process and through the same functions as the CLI:
generate → write the Kaggle CSV layout → ingest → train (label windows: ALS, candidates,
features; rankers; evaluation; ALS on all orders; ONNX export + online snapshot) → batch scoring
of every user. Every stage's wall time and own peak RSS (see ``basketcast.pipeline.progress``) is recorded,
with the candidate and training row counts and the model's validation metrics; the result is
printed as a table and written to ``OUT/bench.json``. Experiment tracking is off (a benchmark
logs no runs to MLflow or W&B); everything else is ``make train``'s code path with the default config.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.evaluation.report import RANKER, XGBOOST
from basketcast.pipeline.progress import Timings, overall_peak_rss_mb

log = logging.getLogger(__name__)

FULL_SCALE_USERS = 206_209  # the Kaggle Instacart data
SCALES = (20_621, 61_863, FULL_SCALE_USERS)  # 10 %, 30 %, 100 %
SHOWN_METRICS = ("ndcg@10", "recall@10", "precision@5")


@dataclass
class BenchResult:
    users: int
    stages: list[tuple[str, float, float]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    total_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "stages": [{"stage": n, "seconds": round(s, 2), "peak_rss_mb": round(r)} for n, s, r in self.stages],
            "counts": self.counts,
            "metrics": self.metrics,
            "total_seconds": round(self.total_seconds, 1),
            "peak_rss_mb": round(self.peak_rss_mb),
            "machine": self.machine,
        }

    def table(self) -> str:
        width = max([len(s[0]) for s in self.stages] + [5])
        rule = "─" * (width + 28)
        header = f"{'stage':<{width}}  {'seconds':>9}  {'peak RSS MiB':>13}"
        rows = [f"basketcast bench: {self.users:,} users", rule, header]
        rows += [f"{n:<{width}}  {s:9.1f}  {r:13,.0f}" for n, s, r in self.stages]
        rows += [rule, f"{'total':<{width}}  {self.total_seconds:9.1f}  {self.peak_rss_mb:13,.0f}", rule]
        rows += [f"{k.replace('_', ' ')}: {v:,}" for k, v in self.counts.items()]
        rows.append(f"{'validation':<16}" + "".join(f"{m:>13}" for m in SHOWN_METRICS))
        rows += [f"{name:<16}" + "".join(f"{m[k]:13.4f}" for k in SHOWN_METRICS) for name, m in self.metrics.items()]
        return "\n".join(rows)


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def run_bench(users: int, out: Path, *, seed: int = 42, config: TrainConfig | None = None) -> BenchResult:
    """Run every stage at ``users`` synthetic users inside ``out`` (created); see the module doc."""
    import polars as pl

    from basketcast.pipeline.data.generate import generate
    from basketcast.pipeline.data.ingest import ingest
    from basketcast.pipeline.data.sample import dataset_to_kaggle, write_kaggle_layout
    from basketcast.pipeline.data.storage import write_dataset
    from basketcast.pipeline.workflows.run import train
    from basketcast.pipeline.workflows.run_folder import RunFolder, RunManifest
    from basketcast.serving.batch import score_users
    from basketcast.serving.model import Context, ServingModel

    config = (config or TrainConfig()).model_copy(update={"tracking": []})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = BenchResult(users=users, machine=_machine())
    timings = Timings()
    started = time.perf_counter()
    with timings.stage("generate (synthetic, Parquet)"):
        generated = generate(users, seed)
        write_dataset(out / "generated", generated, source=f"bench generate --users {users} --seed {seed}")
    with timings.stage("write the Kaggle CSV layout"):
        write_kaggle_layout(dataset_to_kaggle(generated), out / "kaggle")
        lines = generated.order_products.height
        del generated
    with timings.stage("ingest (validate + canonical Parquet)"):
        ingest(out / "kaggle", out / "data")
    trained = train(out / "data", out / "model", config)
    timings.stages += trained.timings.stages
    with timings.stage("batch scoring of every user (top 20)"):
        model = ServingModel.load(out / "model", threads=os.cpu_count() or 1)
        scored = score_users(model, None, out / "scores.parquet", k=20, ctx=Context(dow=0, hour=10))
    result.total_seconds = time.perf_counter() - started
    result.stages = timings.stages
    result.peak_rss_mb = overall_peak_rss_mb()
    manifest = RunManifest.load(RunFolder(out / "model").manifest)
    report = trained.report
    result.counts = {
        "users": users,
        "order_lines": lines,
        "label_window_candidate_rows": sum(manifest.window_rows),
        "training_rows": manifest.training_rows,
        "training_groups": manifest.training_groups,
        "label_windows_built": len(manifest.windows),
        "evaluated_users": manifest.evaluated_users,
        "snapshot_rows": manifest.serving.rows if manifest.serving else 0,
        "scored_users": scored.scored_users,
        "scored_candidate_rows": scored.candidate_rows,
        "best_iteration_ranking": manifest.best_iterations["ranking"],
    }
    result.metrics = {
        name: {k: float(report.methods[name][k]) for k in SHOWN_METRICS}
        for name in (RANKER, XGBOOST, "tifu_knn", "top_frequency")
        if name in report.methods
    }
    scores = pl.read_parquet(out / "scores.parquet", columns=[S.USER])
    if scores[S.USER].n_unique() != model.users.size:
        raise RuntimeError(f"batch scoring covered {scores[S.USER].n_unique()} of {model.users.size} users")
    (out / "bench.json").write_text(json.dumps(result.to_json(), indent=2))
    return result
