"""The pipeline on a 2-worker Dask LocalCluster against one process (``make bench-dask``).

Each run is a child process of its own (so its peak RSS is its own): ``basketcast train`` on
synthetic data, in one process or with ``--cluster`` on a ``LocalCluster`` of 2 single-threaded
workers, each with a memory limit below the single process's peak. Reported per run: wall time,
the peak RSS of the process (the client, on a cluster) and of each worker, worker restarts,
the stages and the validation metrics.

1. **Tolerance** (``--tolerance-users``, default 5,000): one process with LightGBM seeds 42, 43,
   44 and the cluster with seed 42. The cluster's metrics against one process's, next to the
   spread the seed alone causes: what data-parallel LightGBM changes, measured.
2. **Scale** (``--scales``, default 206,209 and 412,418 users: Instacart and twice it): one
   process, then the cluster; the ratio of wall times and of peak memories.

No assertions: it reports (a table, ratios, and JSON in the work folder).

    .venv/bin/python benchmarks/bench_dask.py [--scales 206209 412418] [--tolerance-users 5000]
        [--worker-memory 3GiB] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_SCALES = (206_209, 412_418)
SEEDS = (42, 43, 44)
METRICS = ("ndcg@10", "recall@10")


def child(args: argparse.Namespace) -> None:
    """One training run in this process; writes its figures to ``args.result``."""
    from basketcast.pipeline.config import TrainConfig
    from basketcast.pipeline.progress import overall_peak_rss_mb
    from basketcast.pipeline.workflows.run import train

    config = TrainConfig.model_validate({"mlflow": False, "lightgbm": {"seed": args.seed}})
    started = time.perf_counter()
    out: dict[str, Any] = {"mode": args.mode, "seed": args.seed}
    if args.mode == "single":
        result = train(args.data, args.out, config, force=True)
    else:
        from basketcast.pipeline.workflows.cluster import dask_client
        from basketcast.pipeline.workflows.cluster_train import ClusterSession

        with dask_client("local:2", memory_limit=args.worker_memory) as client:
            pids = client.run(os.getpid)
            with ClusterSession(client, args.out.parent / f".work-{args.out.name}") as session:
                result = train(
                    args.data, args.out, config, force=True, learn=session.learn, snapshot=session.snapshot_rows
                )
                out["partitions"] = session.partitions
                out["tasks"] = [dataclasses.asdict(t) for t in session.stats]
            out["worker_peak_mb"] = sorted(client.run(overall_peak_rss_mb).values())
            out["worker_restarts"] = len(set(pids.values()) - set(client.run(os.getpid).values()))
            out["worker_memory_limit"] = args.worker_memory
    out["seconds"] = time.perf_counter() - started
    out["peak_mb"] = overall_peak_rss_mb()
    out["stages"] = result.timings.as_dict()
    out["stage_peak_mb"] = {name: round(rss) for name, _, rss in result.timings.stages}
    methods = result.report.methods
    out["metrics"] = {
        m: {k: methods[m][k] for k in METRICS} for m in ("lightgbm", "xgboost", "tifu_knn") if m in methods
    }
    out["kaggle_f1"] = result.report.kaggle_f1.get("lightgbm_f1_optimal") if result.report.kaggle_f1 else None
    out["evaluated_users"] = json.loads((args.out / "manifest.json").read_text())["evaluated_users"]
    args.result.write_text(json.dumps(out, indent=2))


def run(mode: str, data: Path, work: Path, seed: int, worker_memory: str) -> dict[str, Any]:
    name = f"{mode}-{data.name}-seed{seed}"
    result = work / f"{name}.json"
    log = work / f"{name}.log"
    print(f"… {name} (log: {log})", flush=True)
    cmd = [sys.executable, __file__, "--child", mode, "--data", str(data), "--out", str(work / name)]
    cmd += ["--seed", str(seed), "--worker-memory", worker_memory, "--result", str(result)]
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=fh)
    if proc.returncode != 0:
        sys.exit(f"{name} failed (exit {proc.returncode}); see {log}")
    shutil.rmtree(work / name, ignore_errors=True)
    r: dict[str, Any] = json.loads(result.read_text())
    workers = f", workers {r['worker_peak_mb']} MiB" if "worker_peak_mb" in r else ""
    print(
        f"  {r['seconds']:.0f} s, peak {r['peak_mb']:,.0f} MiB{workers}, LightGBM NDCG@10 "
        f"{r['metrics']['lightgbm']['ndcg@10']:.4f}",
        flush=True,
    )
    return r


def generate(users: int, work: Path) -> Path:
    out = work / f"data-{users}"
    if not (out / "manifest.json").exists():
        cli = Path(sys.executable).parent / "basketcast"
        subprocess.run([str(cli), "generate", "--users", str(users), "--seed", "42", "--out", str(out)], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="*", default=list(DEFAULT_SCALES))
    parser.add_argument("--tolerance-users", type=int, default=5_000, help="0 = skip the tolerance runs")
    parser.add_argument("--worker-memory", default="3GiB", help="memory limit of each cluster worker")
    parser.add_argument(
        "--modes", nargs="+", choices=["single", "cluster"], default=["single", "cluster"], help="runs at each scale"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/basketcast-bench-dask"))
    parser.add_argument("--child", choices=["single", "cluster"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    report_path = work / "report.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if report_path.exists() else {}
    report = {"tolerance": report.get("tolerance", []), "scales": report.get("scales", [])}
    if args.tolerance_users:
        data = generate(args.tolerance_users, work)
        runs = [run("single", data, work, s, args.worker_memory) for s in SEEDS]
        runs.append(run("cluster", data, work, SEEDS[0], args.worker_memory))
        report["tolerance"] = runs
        report_path.write_text(json.dumps(report, indent=2))
    for users in args.scales:
        data = generate(users, work)
        entry = next((e for e in report["scales"] if e["users"] == users), None)
        if entry is None:
            entry = {"users": users}
            report["scales"].append(entry)
        for mode in args.modes:  # a later invocation adds its runs to the same report
            entry[mode] = run(mode, data, work, SEEDS[0], args.worker_memory)
            report_path.write_text(json.dumps(report, indent=2))
        shutil.rmtree(data, ignore_errors=True)
    print_summary(report)


def print_summary(report: dict[str, Any]) -> None:
    if report["tolerance"]:
        runs = report["tolerance"]
        singles = [r for r in runs if r["mode"] == "single"]
        cluster = next(r for r in runs if r["mode"] == "cluster")
        print(
            f"\nTolerance ({singles[0]['evaluated_users']:,} validation users): LightGBM on the cluster vs one process"
        )
        print(
            f"{'metric':<12}{'seeds 42/43/44 (one process)':>34}{'spread':>9}{'cluster (42)':>14}{'cluster − 42':>14}"
        )
        for m in METRICS:
            vals = [r["metrics"]["lightgbm"][m] for r in singles]
            c = cluster["metrics"]["lightgbm"][m]
            print(
                f"{m:<12}{' / '.join(f'{v:.4f}' for v in vals):>34}{max(vals) - min(vals):>9.4f}{c:>14.4f}"
                f"{c - vals[0]:>+14.4f}"
            )
    for s in report["scales"]:
        one, many = s.get("single"), s.get("cluster")
        head = f"\n{s['users']:,} users"
        if many:
            head += f" ({many['partitions']} buckets, 2 workers of {many['worker_memory_limit']})"
        print(head)
        print(f"{'':<34}{'one process':>14}{'cluster':>14}{'ratio':>8}")

        def row(label: str, a: float | None, b: float | None, fmt: str, diff: bool = False) -> None:
            cells = [f"{v:>14{fmt}}" if v is not None else f"{'—':>14}" for v in (a, b)]
            tail = ""
            if a is not None and b is not None:
                tail = f"{b - a:>+8.4f}" if diff else f"{b / a:>8.2f}"
            print(f"{label:<34}{cells[0]}{cells[1]}{tail}")

        row("wall time (s)", one and one["seconds"], many and many["seconds"], ".0f")
        row("peak RSS, process / client (MiB)", one and one["peak_mb"], many and many["peak_mb"], ",.0f")
        worker = max(many["worker_peak_mb"]) if many else None
        row("peak RSS, largest worker (MiB)", one and one["peak_mb"], worker, ",.0f")
        if many:
            print(f"{'worker restarts':<34}{'':>14}{many['worker_restarts']:>14}")
        for m in METRICS:
            a = one["metrics"]["lightgbm"][m] if one else None
            b = many["metrics"]["lightgbm"][m] if many else None
            row("LightGBM " + m, a, b, ".4f", diff=True)


if __name__ == "__main__":
    main()
