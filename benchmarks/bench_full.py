"""Whole-pipeline benchmark at 10 %, 30 % and 100 % of the Kaggle Instacart scale (``make bench-full``).

Each scale runs ``basketcast bench --users N`` in its own process (so every peak RSS is its
own), then this script prints the stages side by side, the growth from the smallest to the
largest scale (the baseline is the smallest run of this same invocation) and the issue's
targets. No assertions: it reports.

    .venv/bin/python benchmarks/bench_full.py [--scales 20621 61863 206209] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SCALES = (20_621, 61_863, 206_209)
# Targets of the full-scale issue, checked on the largest scale.
TARGETS = {"total_seconds": 900.0, "peak_rss_mb": 12 * 1024.0, "cutoff_features_s": 60.0, "batch_scoring_s": 60.0}
GROWTH_TARGETS = {"time": 11.0, "memory": 10.0}


def stage_key(name: str) -> str:
    """A stage name without its per-scale details ("window 0: features (1,234 rows)" → "window 0: features")."""
    return name.split(" (")[0]


def run_scale(users: int, work: Path) -> dict:
    out = work / f"users-{users}"
    shutil.rmtree(out, ignore_errors=True)
    log = work / f"users-{users}.log"
    cli = Path(sys.executable).parent / "basketcast"
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run([str(cli), "bench", "--users", str(users), "--out", str(out)], stdout=fh, stderr=fh)
    if proc.returncode != 0:
        sys.exit(f"bench at {users:,} users failed (exit {proc.returncode}); see {log}")
    result = json.loads((out / "bench.json").read_text())
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=list(DEFAULT_SCALES))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/basketcast-bench-full"))
    parser.add_argument("--keep", action="store_true", help="keep every scale's data, model and scores")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for users in sorted(args.scales):
        print(f"… {users:,} users (log: {args.workdir / f'users-{users}.log'})", flush=True)
        results.append(run_scale(users, args.workdir))
        r = results[-1]
        print(f"  {r['total_seconds']:.0f} s, peak RSS {r['peak_rss_mb']:,} MiB", flush=True)
        if not args.keep:
            for sub in ("generated", "kaggle", "data", "model", "scores.parquet"):
                path = args.workdir / f"users-{users}" / sub
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    (args.workdir / "bench-full.json").write_text(json.dumps(results, indent=2))
    print(render(results))


def render(results: list[dict]) -> str:
    keys: list[str] = []
    for r in results:
        for s in r["stages"]:
            if stage_key(s["stage"]) not in keys:
                keys.append(stage_key(s["stage"]))
    width = max(len(k) for k in keys) + 2
    heads = [f"{r['users']:,}" for r in results]
    lines = [f"{'stage (seconds | peak RSS MiB)':<{width}}" + "".join(f"{h:>22}" for h in heads)]
    for key in keys:
        cells = []
        for r in results:
            hit = [s for s in r["stages"] if stage_key(s["stage"]) == key]
            sec = sum(s["seconds"] for s in hit)
            rss = max((s["peak_rss_mb"] for s in hit), default=0)
            cells.append(f"{sec:10.1f} | {rss:7,.0f}" if hit else f"{'—':>20}")
        lines.append(f"{key:<{width}}" + "".join(f"{c:>22}" for c in cells))
    lines.append(
        f"{'total':<{width}}" + "".join(f"{r['total_seconds']:10.1f} | {r['peak_rss_mb']:7,.0f}" for r in results)
    )
    for count in ("order_lines", "training_rows", "training_groups", "snapshot_rows", "evaluated_users"):
        lines.append(f"{count.replace('_', ' '):<{width}}" + "".join(f"{r['counts'][count]:>22,}" for r in results))
    for method in ("lightgbm", "tifu_knn"):
        lines.append(
            f"{method + ' NDCG@10':<{width}}" + "".join(f"{r['metrics'][method]['ndcg@10']:>22.4f}" for r in results)
        )
    base, top = results[0], results[-1]
    data_growth = top["counts"]["order_lines"] / base["counts"]["order_lines"]
    time_growth = top["total_seconds"] / base["total_seconds"]
    mem_growth = top["peak_rss_mb"] / base["peak_rss_mb"]
    lines.append(
        f"growth {base['users']:,} → {top['users']:,} users (data ×{data_growth:.1f}): "
        f"time ×{time_growth:.2f} (target ≤ {GROWTH_TARGETS['time']:.0f}), "
        f"peak RSS ×{mem_growth:.2f} (target ≤ {GROWTH_TARGETS['memory']:.0f})"
    )
    stages = {stage_key(s["stage"]): s["seconds"] for s in top["stages"]}
    checks = {
        f"whole pipeline ≤ {TARGETS['total_seconds']:.0f} s": top["total_seconds"] <= TARGETS["total_seconds"],
        f"peak RSS ≤ {TARGETS['peak_rss_mb']:,.0f} MiB": top["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
        "features of one cutoff (snapshot, every user) ≤ 60 s": stages.get("snapshot: features", 1e9)
        <= TARGETS["cutoff_features_s"],
        "batch scoring of every user ≤ 60 s": stages.get("batch scoring of every user", 1e9)
        <= TARGETS["batch_scoring_s"],
        f"time growth ≤ {GROWTH_TARGETS['time']:.0f}×": time_growth <= GROWTH_TARGETS["time"],
        f"memory growth ≤ {GROWTH_TARGETS['memory']:.0f}×": mem_growth <= GROWTH_TARGETS["memory"],
    }
    lines.append(f"targets at {top['users']:,} users:")
    lines += [f"  {'met   ' if ok else 'MISSED'} {name}" for name, ok in checks.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
