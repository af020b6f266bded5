"""Benchmark of the real-time path: order → fresh recommendations, with each online store.

For each store configuration it starts what users run — ``basketcast serve`` with 2 worker
processes on a free loopback port, and for "redis" a real ``redis-server`` (online store and
prediction cache) and a real PostgreSQL (order log) on free loopback ports — then:

1. **Write path** (``POST /v1/orders``, one connection, sequential): an order of 10 of their past
   products for each of the snapshot's users with the most orders (100 at Instacart scale: the
   Kaggle data caps a user's history at 100 orders). The client measures the whole round trip:
   the log's durable commit, the recomputation of the user's rows with the offline feature code,
   the online store's write.
2. **Read path** (``GET /v1/users/{id}/recommendations?k=10`` under wrk, closed loop, keep-alive,
   concurrency 8): (a) the users who just ordered (fresh rows from the online store), and
   (b) — the baseline, same server, same run — users without posted orders (the snapshot
   answers after one store lookup). First with the prediction cache on, as deployed (its hit
   ratio from ``/metrics`` is reported), then on a server restarted with
   ``BASKETCAST_PREDICTION_CACHE=false``: every request scored.

Prints a table and the ratios (write p99 against the 50 ms budget; fresh read p99 over the
snapshot read p99). No assertions.

    .venv/bin/python benchmarks/bench_realtime.py --model artifacts/model [--orders 300]
        [--duration 10] [--stores embedded,redis] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_serve as bs  # noqa: E402  (the server and wrk drivers of the serving benchmark)

WRITE_BUDGET_MS = 50.0
WORKERS = 2


@dataclass(frozen=True)
class WritePath:
    store: str
    orders: int
    history_orders_min: int
    history_orders_median: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    not_fresh: int


@dataclass(frozen=True)
class ReadPoint:
    store: str
    users: str  # "fresh" or "snapshot"
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cache_hit_ratio: float
    cache: bool = True

    def uncached(self) -> ReadPoint:
        return ReadPoint(**{**asdict(self), "cache": False})


def heavy_users(run_dir: Path, n: int, seed: int) -> tuple[list[int], list[int], dict[int, list[int]]]:
    """``n`` posts over the snapshot's users with the most orders (every user with 100 when there
    are such users, in turn: each post makes their history one order longer), their order counts,
    and 10 past products each."""
    from basketcast.serving.model import ServingModel

    model = ServingModel.load(run_dir)
    online = model.online
    if online is None:
        raise SystemExit(f"{run_dir}: its bundle has no online state; re-export it (basketcast export --model RUN)")
    offsets = np.asarray(online.history["order_offsets"])
    counts = np.diff(offsets)
    heaviest = np.argsort(-counts, kind="stable")
    top = heaviest[counts[heaviest] >= min(100, int(counts.max()))]
    chosen = top if top.size >= 10 else heaviest[:n]
    rng = random.Random(seed)
    users = [int(model.users[i]) for i in chosen]
    products = {}
    for i, user in zip(chosen.tolist(), users, strict=True):
        lo, hi = int(online.history["line_offsets"][offsets[i]]), int(online.history["line_offsets"][offsets[i + 1]])
        past = sorted(set(np.asarray(online.history["product"][lo:hi]).tolist()))
        products[user] = rng.sample(past, min(10, len(past)))
    posts = [users[j % len(users)] for j in range(n)]
    history = [int(counts[chosen[j % len(users)]]) + j // len(users) for j in range(n)]
    return posts, history, products


def quiet_users(run_dir: Path, exclude: set[int], n: int, seed: int) -> list[int]:
    from basketcast.serving.model import ServingModel

    users = [int(u) for u in ServingModel.load(run_dir).users if int(u) not in exclude]
    return random.Random(seed).sample(users, min(n, len(users)))


def write_path(port: int, store: str, users: list[int], counts: list[int], products: dict[int, list[int]]) -> WritePath:
    conn = http.client.HTTPConnection(bs.HOST, port, timeout=30)
    times, errors, not_fresh = [], 0, 0
    stamp = time.time_ns()
    for j, user in enumerate(users):
        body = json.dumps(
            {
                "order_id": f"bench-{stamp}-{j}-{user}",
                "user_id": user,
                "products": products[user],
                "order_dow": 2,
                "order_hour_of_day": 10,
                "days_since_prior_order": 7,
            }
        )
        start = time.perf_counter()
        conn.request("POST", "/v1/orders", body=body, headers={"content-type": "application/json"})
        answer = conn.getresponse()
        payload = answer.read()
        times.append((time.perf_counter() - start) * 1000)
        if answer.status != 201:
            errors += 1
        elif not json.loads(payload)["fresh"]:
            not_fresh += 1
    conn.close()
    t = np.asarray(times)
    return WritePath(
        store=store,
        orders=len(users),
        history_orders_min=min(counts),
        history_orders_median=float(np.median(counts)),
        p50_ms=float(np.percentile(t, 50)),
        p99_ms=float(np.percentile(t, 99)),
        max_ms=float(t.max()),
        errors=errors,
        not_fresh=not_fresh,
    )


def cache_counts(port: int) -> tuple[float, float]:
    conn = http.client.HTTPConnection(bs.HOST, port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()

    def total(result: str) -> float:
        m = re.search(rf'^basketcast_prediction_cache_total\{{result="{result}"\}} (\S+)$', text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    return total("hit"), total("miss")


def read_point(
    wrk: str | None, port: int, pid: int, store: str, kind: str, users: Sequence[int], duration: float, tmp: Path
) -> ReadPoint:
    users_file = tmp / f"users-{kind}.txt"
    users_file.write_text("\n".join(map(str, users)) + "\n")
    hits0, misses0 = cache_counts(port)
    point = bs.drive(wrk, port, pid, f"{kind} users", ["users", str(users_file), "10"], 8, duration, 10)
    hits1, misses1 = cache_counts(port)
    lookups = (hits1 - hits0) + (misses1 - misses0)
    return ReadPoint(
        store=store,
        users=kind,
        concurrency=8,
        requests=point.requests,
        rps=point.requests / point.seconds,
        p50_ms=point.p50_ms,
        p99_ms=point.p99_ms,
        errors=point.errors,
        cache_hit_ratio=(hits1 - hits0) / lookups if lookups else float("nan"),
    )


@contextlib.contextmanager
def store_env(store: str, tmp: Path) -> Iterator[dict[str, str]]:
    """Environment of the server for ``store``, with the servers it needs running meanwhile."""
    env = {"BASKETCAST_STATE_DIR": str(tmp / f"state-{store}")}
    if store == "embedded":
        yield env
        return
    from tests.services import postgres_server, redis_server

    with redis_server() as redis, postgres_server() as postgres:
        env |= {"BASKETCAST_ONLINE_STORE": redis.url, "BASKETCAST_ORDER_LOG": postgres.dsn()}
        yield env


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(args.model)
    users, counts, products = heavy_users(run_dir, args.orders, args.seed)
    quiet = quiet_users(run_dir, set(users), 2000, args.seed)
    fresh = sorted(set(users))
    wrk = bs.ensure_wrk("auto")
    writes: list[WritePath] = []
    reads: list[ReadPoint] = []
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as t:
        tmp = Path(t)
        for store in args.stores.split(","):
            with store_env(store, tmp) as env:
                port = bs.free_port()
                cmd, _ = bs.server_command(run_dir, port, WORKERS, "auto", access_log=False)
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)  # running_server passes os.environ to the server
                try:
                    with bs.running_server(cmd, run_dir, port, tmp / f"server-{store}.log", 120) as pid:
                        # Warm both workers (first calls load code paths), off the record.
                        write_path(port, store, users[:4], counts[:4], products)  # 4 more orders, same users
                        print(f"[{store}] write path: {len(users)} orders ...", file=sys.stderr)
                        writes.append(write_path(port, store, users[4:], counts[4:], products))
                        for kind, who in (("fresh", fresh), ("snapshot", quiet)):
                            print(f"[{store}] read path, {kind} users, c=8 ...", file=sys.stderr)
                            reads.append(read_point(wrk, port, pid, store, kind, who, args.duration, tmp))
                    # The same reads with the prediction cache off: every request scored (the rows
                    # written above are still in the store, under the same model version).
                    os.environ["BASKETCAST_PREDICTION_CACHE"] = "false"
                    with bs.running_server(cmd, run_dir, port, tmp / f"server-{store}-nocache.log", 120) as pid:
                        for kind, who in (("fresh", fresh), ("snapshot", quiet)):
                            print(f"[{store}] read path, {kind} users, no cache, c=8 ...", file=sys.stderr)
                            point = read_point(wrk, port, pid, store, kind, who, args.duration, tmp)
                            reads.append(point.uncached())
                finally:
                    os.environ.pop("BASKETCAST_PREDICTION_CACHE", None)
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
    return {"machine": bs.machine(), "writes": [asdict(w) for w in writes], "reads": [asdict(r) for r in reads]}


def print_report(result: dict[str, Any]) -> None:
    print(f"\nreal-time path — {result['machine']}; {WORKERS} workers, prediction cache on")
    print("\nwrite path: POST /v1/orders → durable log + fresh rows (one connection, sequential)")
    print(f"{'store':<10}{'orders':>8}{'history':>14}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}{'stale':>7}")
    for w in result["writes"]:
        hist = f"{w['history_orders_min']}-{w['history_orders_median']:.0f}"
        print(
            f"{w['store']:<10}{w['orders']:>8}{hist:>14}{w['p50_ms']:>9.1f}{w['p99_ms']:>9.1f}{w['max_ms']:>9.1f}"
            f"{w['errors']:>8}{w['not_fresh']:>7}"
        )
    print("\nread path: GET /v1/users/{id}/recommendations?k=10, wrk closed loop, concurrency 8")
    print(f"{'store':<10}{'users':<10}{'cache':<7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'hits':>7}")
    for r in result["reads"]:
        hits = f"{r['cache_hit_ratio']:.2f}" if r["cache"] else "-"
        print(
            f"{r['store']:<10}{r['users']:<10}{'on' if r['cache'] else 'off':<7}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}"
            f"{r['p99_ms']:>9.2f}{r['errors']:>8}{hits:>7}"
        )
    print()
    for w in result["writes"]:
        print(f"{w['store']}: write p99 / {WRITE_BUDGET_MS:.0f} ms budget = ×{w['p99_ms'] / WRITE_BUDGET_MS:.2f}")
    by = {(r["store"], r["users"], r["cache"]): r for r in result["reads"]}
    for store in sorted({r["store"] for r in result["reads"]}):
        for cache in (True, False):
            fresh, snap = by.get((store, "fresh", cache)), by.get((store, "snapshot", cache))
            if fresh and snap:
                print(
                    f"{store}, cache {'on' if cache else 'off'}: fresh-read p99 / snapshot-read p99 = "
                    f"×{fresh['p99_ms'] / snap['p99_ms']:.2f}"
                )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Run folder (its bundle must hold the online state).")
    parser.add_argument("--orders", type=int, default=300, help="Orders posted in the write path.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per read point.")
    parser.add_argument("--stores", default="embedded,redis")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="Also write the result as JSON here.")
    args = parser.parse_args(argv)
    result = run(args)
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
