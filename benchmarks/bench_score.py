"""Benchmark of batch scoring: every user of a run through ``basketcast.serving.batch.score_users``.

Measured in one process, in this order:

1. batch: ``score_users(model, None, OUT, k=20)`` — gather each chunk's snapshot rows, add the
   context features, one onnxruntime call per chunk, top-k per user, Parquet writing; best of
   ``--repeat`` runs (the first one also pages the memory-mapped snapshot in);
2. the limit: the full feature matrix of every candidate row built once with ``model.features``,
   then ``model.rank_scores(X)`` alone on it, best of ``--repeat`` — raw onnxruntime, the most any
   batch path could do with the same session (``--threads`` onnxruntime threads, all cores by
   default, as ``basketcast score``).

The ratio batch / limit (rows/s) says how much the batch path adds around the model (target
≥ 0.5). Peak RSS is read after step 1 (the batch's own peak: model, memory-mapped pages it read,
one chunk) and at the end (with the full matrix of step 2). Prints a table; no assertions.

    .venv/bin/python benchmarks/bench_score.py --model artifacts/model [--k 20] [--chunk-users 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from basketcast.serving.batch import score_users
from basketcast.serving.model import Context, ServingModel

TARGET_RATIO = 0.5


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"), help="Run folder (or bundle).")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--chunk-users", type=int, default=5_000, help="score_users' chunk size.")
    parser.add_argument("--repeat", type=int, default=2, help="Runs of each measurement; the best is kept.")
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime threads, as `basketcast score --threads` (0 = all cores)."
    )
    parser.add_argument("--out", type=Path, default=None, help="Where the batch writes (default: a temp folder).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args(argv)
    if not args.model.exists():
        raise SystemExit(f"{args.model}: no such run folder (train one, or pass --model)")

    load = os.getloadavg()
    print(
        f"batch-scoring benchmark: {args.model.resolve()}; {len(os.sched_getaffinity(0))} cores, "
        f"load average {load[0]:.2f} (above ~0.3: other jobs, noisy figures)"
    )
    t0 = time.perf_counter()
    model = ServingModel.load(args.model, threads=args.threads or os.cpu_count() or 1)
    load_s = time.perf_counter() - t0
    ctx = Context(dow=2, hour=10)  # fixed: the same work on every run
    n_users = int(model.users.size)
    n_rows = int(model.base.shape[0])
    print(
        f"bundle {model.version}: {n_users:,} users, {n_rows:,} candidate rows × {model.n_features} features; "
        f"loaded in {load_s:.2f} s",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        out = args.out or Path(tmp) / "scores.parquet"
        batch_s = []
        for i in range(args.repeat):
            report = score_users(model, None, out, k=args.k, ctx=ctx, chunk_users=args.chunk_users)
            batch_s.append(report.seconds)
            print(f"  batch run {i + 1}: {report.seconds:.2f} s", flush=True)
        out_bytes = out.stat().st_size
    batch_rss = peak_rss_mib()
    if report.candidate_rows != n_rows or report.scored_users != n_users:
        print(f"warning: scored {report.scored_users:,} users / {report.candidate_rows:,} rows", file=sys.stderr)

    t0 = time.perf_counter()
    X = model.features(slice(0, n_rows), ctx)
    features_s = time.perf_counter() - t0
    limit_s = []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        scores = model.rank_scores(X)
        limit_s.append(time.perf_counter() - t0)
        print(f"  rank_scores(X) run {i + 1}: {limit_s[-1]:.2f} s", flush=True)
    assert scores.shape == (n_rows,)
    total_rss = peak_rss_mib()

    batch = min(batch_s)
    limit = min(limit_s)
    ratio = limit / batch
    rows = [
        ("score_users (batch, end to end)", batch, n_rows / batch, n_users / batch),
        ("model.features (all rows, once)", features_s, n_rows / features_s, n_users / features_s),
        ("model.rank_scores(X) (the limit)", limit, n_rows / limit, n_users / limit),
    ]
    print()
    head = f"{'step':<36} {'seconds':>8} {'rows/s':>12} {'users/s':>10}"
    print(head)
    print("-" * len(head))
    for name, s, rps, ups in rows:
        print(f"{name:<36} {s:>8.2f} {rps:>12,.0f} {ups:>10,.0f}")
    print()
    verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
    print(f"ratio batch / limit (rows/s):  {ratio:.2f}  ({verdict}: target ≥ {TARGET_RATIO})")
    print(
        f"output: {report.output_rows:,} rows (k={args.k}), {out_bytes / 2**20:.1f} MiB Parquet; "
        f"chunk {args.chunk_users:,} users"
    )
    print(
        f"peak RSS: {batch_rss:,.0f} MiB after the batch runs (memory-mapped snapshot pages included), "
        f"{total_rss:,.0f} MiB with the full matrix X ({X.nbytes / 2**20:,.0f} MiB) of the limit"
    )
    if args.json is not None:
        payload = {
            "users": n_users,
            "rows": n_rows,
            "features": model.n_features,
            "k": args.k,
            "chunk_users": args.chunk_users,
            "batch_seconds": batch_s,
            "features_seconds": features_s,
            "limit_seconds": limit_s,
            "ratio": ratio,
            "peak_rss_mib_batch": batch_rss,
            "peak_rss_mib_total": total_rss,
            "load_average": load[0],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
