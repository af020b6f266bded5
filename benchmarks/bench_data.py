"""Benchmark of the data layer: generate N users, write them in the Kaggle CSV layout, ingest them.

Each step runs in its own process so its peak RSS is its own. Prints a table; no assertions.

    .venv/bin/python benchmarks/bench_data.py --users 206209 [--workdir /tmp/bench-data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

STEP = r"""
import json, resource, sys, time
from pathlib import Path
step, users, workdir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()
if step == "generate":
    from basketcast.pipeline.data.generate import generate
    from basketcast.pipeline.data.storage import write_dataset
    m = write_dataset(workdir / "data", generate(users, 42), source="bench")
    rows = m.rows["order_products"]
elif step == "export":
    from basketcast.pipeline.data.sample import dataset_to_kaggle, write_kaggle_layout
    from basketcast.pipeline.data.storage import read_dataset
    d = read_dataset(workdir / "data")
    write_kaggle_layout(dataset_to_kaggle(d), workdir / "kaggle")
    rows = d.order_products.height
else:
    from basketcast.pipeline.data.ingest import ingest
    rep = ingest(workdir / "kaggle", workdir / "ingested")
    rows = rep.manifest.rows["order_products"]
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=206209)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-data"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    print(f"data-layer benchmark: {args.users:,} users, work folder {args.workdir}")
    print(f"{'step':<10} {'seconds':>9} {'order lines':>13} {'lines/s':>12} {'peak RSS MiB':>13}")
    for step in ("generate", "export", "ingest"):
        out = subprocess.run(
            [sys.executable, "-c", STEP, step, str(args.users), str(args.workdir)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rate = r["rows"] / r["seconds"]
        print(f"{step:<10} {r['seconds']:9.1f} {r['rows']:13,} {rate:12,.0f} {r['peak_rss_mb']:13,.0f}")


if __name__ == "__main__":
    main()
