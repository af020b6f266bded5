"""Benchmark of the HTTP server: latency and throughput of recommendations, against the limits.

Starts the server as users do (``basketcast serve``: uvicorn with uvloop + httptools, 2 worker
processes, on a free loopback port) as a separate process, drives it from a separate load
generator process for a fixed time per point, then stops it. Prints a table; no assertions.

- Points: ``GET /v1/users/{random known user}/recommendations?k=10`` at concurrency 1, 8, 32
  (closed loop: each connection sends its next request when the answer arrives, keep-alive);
  ``GET /health`` at concurrency 8 (a constant answer of the same app: the HTTP floor).
- Load generator: ``wrk`` with ``benchmarks/wrk_recommend.lua`` (one thread, C code: it leaves
  the cores to the server), installed with ``apt-get install -y wrk`` when missing and we are
  root; otherwise (or ``--loadgen python``) an asyncio raw-socket keep-alive client in a child
  process. The load generator's CPU and the server's CPU per request are measured too.
- The limit: ``ServingModel.recommend`` timed in this process over many calls (no HTTP, no JSON):
  cores ÷ that cost is the most any server could answer; served requests/s are reported as a
  share of it.

    .venv/bin/python benchmarks/bench_serve.py --model artifacts/model [--duration 10]
        [--concurrency 1,8,32] [--workers 2] [--loadgen auto|wrk|python] [--json OUT]

Only loopback traffic; every run is bounded (duration × points) and the server is stopped at the
end, also on Ctrl-C or errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk_recommend.lua"
HOST = "127.0.0.1"
RECOMMEND = "/v1/users/{user}/recommendations?k={k}"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets on the 2-core machine, load generator included.
TARGET_P99_MS_AT_8 = 10.0
TARGET_RPS = 1000.0
TARGET_SHARE = 0.5


@dataclass
class Point:
    """One load level against one endpoint."""

    endpoint: str
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_cpu_s: float
    loadgen_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / self.requests if self.requests else float("nan")


@dataclass
class Limit:
    """The in-process cost of one recommendation (no HTTP)."""

    calls: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    cores: int

    @property
    def rps(self) -> float:
        return self.cores * 1000 / self.mean_ms


# --- the in-process limit -------------------------------------------------------------------
def measure_limit(run_dir: Path, calls: int, k: int, seed: int) -> tuple[Limit, Any]:
    """Time ``ServingModel.recommend`` over ``calls`` random known users; returns the users too."""
    import numpy as np

    from basketcast.serving.model import Context, ServingModel

    model = ServingModel.load(run_dir)
    now = dt.datetime.now(dt.UTC)
    ctx = Context(dow=now.weekday(), hour=now.hour)
    rng = np.random.default_rng(seed)
    users = np.asarray(model.users)
    sample = rng.choice(users, size=calls + 200).tolist()
    for u in sample[:200]:  # warm-up: onnxruntime's first runs, pages of the snapshot
        model.recommend(u, k, ctx)
    times = np.empty(calls)
    for i, u in enumerate(sample[200:]):
        t0 = time.perf_counter()
        model.recommend(u, k, ctx)
        times[i] = time.perf_counter() - t0
    cores = len(os.sched_getaffinity(0))
    limit = Limit(
        calls,
        float(times.mean() * 1000),
        float(np.percentile(times, 50) * 1000),
        float(np.percentile(times, 99) * 1000),
        cores,
    )
    return limit, users


# --- the server -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_command(run_dir: Path, port: int, workers: int, how: str, access_log: bool) -> tuple[list[str], str]:
    """The command users run: ``basketcast serve`` (``basketcast.serving.server.serve_command`` while the CLI
    lacks it), or with ``--server uvicorn`` plain ``uvicorn basketcast.serving.main:app``. Both keep their
    default access log unless ``access_log`` is False."""
    if how == "auto":
        try:
            from basketcast.pipeline.cli import main as cli

            how = "cli" if "serve" in getattr(cli, "commands", {}) else "server"
        except ImportError:
            how = "server"
    quiet = [] if access_log else ["--no-access-log"]
    opts = ["--model", str(run_dir), "--host", HOST, "--port", str(port), "--workers", str(workers), *quiet]
    if how == "cli":
        exe = Path(sys.executable).with_name("basketcast")
        cmd = [str(exe), "serve"] if exe.exists() else [sys.executable, "-m", "basketcast.pipeline.cli", "serve"]
        desc = f"basketcast serve --workers {workers} {' '.join(quiet)}".rstrip()
        return cmd + opts, f"{desc} (uvicorn, uvloop, httptools)"
    if how == "server":
        cmd = [sys.executable, "-c", "from basketcast.serving.server import serve_command; serve_command()"]
        return (
            cmd + opts,
            f"basketcast.serving.server.serve_command --workers {workers} {' '.join(quiet)} (= basketcast serve)",
        )
    cmd = [sys.executable, "-m", "uvicorn", "basketcast.serving.main:app", "--host", HOST, "--port", str(port)]
    cmd += ["--workers", str(workers), "--loop", "uvloop", "--http", "httptools", *quiet]
    return cmd, "uvicorn basketcast.serving.main:app " + " ".join(cmd[8:])


@contextlib.contextmanager
def running_server(cmd: Sequence[str], run_dir: Path, port: int, log_path: Path, timeout: float) -> Iterator[int]:
    """Start the server in its own process group, wait for /ready, stop it (TERM, then KILL)."""
    env = dict(os.environ, BASKETCAST_MODEL_DIR=str(run_dir))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode}:\n{tail(log_path)}")
            if ready(port):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{tail(log_path)}")
            time.sleep(0.2)
        yield proc.pid
    finally:
        stop(proc)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=2) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor stops its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):  # anything left in the group we started
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants (from /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(p for p, pp in parents.items() if pp == pid)
    return total


# --- load generators ------------------------------------------------------------------------
def ensure_wrk(choice: str) -> str | None:
    """Path of wrk, installing the Debian package when allowed; None → the Python client."""
    if choice == "python":
        return None
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        install = ["apt-get", "install", "-y", "-qq", "wrk"]
        null = subprocess.DEVNULL
        if subprocess.run(install, check=False, stdout=null, stderr=null).returncode:
            subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=null, stderr=null)
            subprocess.run(install, check=False, stdout=null, stderr=null)
        found = shutil.which("wrk")
    if found is None and choice == "wrk":
        raise SystemExit("wrk is not installed (apt-get install wrk) and --loadgen wrk was asked")
    return found


def drive(
    wrk: str | None,
    port: int,
    server_pid: int,
    endpoint: str,
    lua_args: list[str],
    concurrency: int,
    duration: float,
    k: int,
) -> Point:
    """One point: ``concurrency`` keep-alive connections for ``duration`` seconds."""
    url = f"http://{HOST}:{port}"
    if wrk is not None:
        cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "5s", "--latency"]
        cmd += ["-s", str(LUA), url, "--", *lua_args]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--client", url, "--client-concurrency"]
        cmd += [str(concurrency), "--duration", f"{duration:g}", "--k", str(k), "--", *lua_args]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server0 = tree_cpu_seconds(server_pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    server1 = tree_cpu_seconds(server_pid)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r"^BENCH_JSON (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode or m is None:
        raise RuntimeError(f"load generator failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    errors = sum(int(v) for key, v in r.items() if key.startswith("err_"))
    return Point(
        endpoint=endpoint,
        concurrency=concurrency,
        requests=int(r["requests"]),
        seconds=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p95_ms=r["p95_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        errors=errors,
        server_cpu_s=server1 - server0,
        loadgen_cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    )


# --- the Python load generator (child process) ----------------------------------------------
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def carts_of(run_dir: Path, users: Any, size: int) -> str:
    """One line per user: "ID P1,P2,…" — ``size`` of the user's own snapshot candidates (products
    they buy: the cart attention and the co-occurrence term both run), for the cart point."""
    import numpy as np

    from basketcast.serving.model import ServingModel

    model = ServingModel.load(run_dir)
    lines = []
    for u in users.tolist():
        rows = model.rows(int(u))
        if rows is None:
            continue
        products = np.asarray(model.products[rows])[:size]
        lines.append(f"{u} {','.join(map(str, products.tolist()))}")
    return "\n".join(lines) + "\n"


async def _client(url: str, concurrency: int, duration: float, k: int, lua_args: list[str]) -> dict[str, Any]:
    """Closed-loop keep-alive HTTP/1.1 GETs on raw sockets; the same summary as the Lua script."""
    import random

    host, port = url.removeprefix("http://").rsplit(":", 1)
    if lua_args[0] == "users":
        ids = [line.split() for line in Path(lua_args[1]).read_text().splitlines() if line.strip()]
        k = int(lua_args[2]) if len(lua_args) > 2 else k

        def path() -> str:
            line = random.choice(ids)
            cart = f"&cart={line[1]}" if len(line) > 1 else ""
            return RECOMMEND.format(user=line[0], k=k) + cart
    else:
        fixed = lua_args[1] if len(lua_args) > 1 else "/health"

        def path() -> str:
            return fixed

    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    latencies: list[int] = []
    errors = {"err_connect": 0, "err_read": 0, "err_write": 0, "err_status": 0, "err_timeout": 0}
    total_bytes = 0

    async def connection() -> None:
        nonlocal total_bytes
        while loop.time() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                errors["err_connect"] += 1
                await asyncio.sleep(0.01)
                continue
            try:
                while loop.time() < deadline:
                    request = f"GET {path()} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
                    t0 = time.perf_counter_ns()
                    writer.write(request)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    m = _CONTENT_LENGTH.search(head)
                    body = await reader.readexactly(int(m.group(1))) if m else b""
                    latencies.append(time.perf_counter_ns() - t0)
                    total_bytes += len(head) + len(body)
                    if not 200 <= int(head[9:12]) < 400:
                        errors["err_status"] += 1
            except TimeoutError:
                errors["err_timeout"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                errors["err_read"] += 1
            finally:
                writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    lat = sorted(latencies) or [0]

    def pct(p: float) -> int:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] // 1000

    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": total_bytes,
        "p50_us": pct(50),
        "p95_us": pct(95),
        "p99_us": pct(99),
        "max_us": lat[-1] // 1000,
        "mean_us": sum(lat) / len(lat) / 1000,
        **errors,
    }


def client_main(args: argparse.Namespace) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    r = asyncio.run(_client(args.client, args.client_concurrency, args.duration, args.k, args.lua_args))
    print("BENCH_JSON " + json.dumps(r))


# --- report ---------------------------------------------------------------------------------
def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return f"{len(os.sched_getaffinity(0))} cores ({model}), load average {load[0]:.2f} / {load[1]:.2f} (1 / 5 min)"


def print_report(
    server: str, loadgen: str, limit: Limit, points: list[Point], load_before: float, load_after: float
) -> None:
    print()
    print(f"server:         {server}, on {HOST} (separate process)")
    print(f"load generator: {loadgen} (separate process, closed loop, keep-alive)")
    print(
        f"in-process:     ServingModel.recommend k=10: mean {limit.mean_ms:.3f} ms, p50 {limit.p50_ms:.3f} ms, "
        f"p99 {limit.p99_ms:.3f} ms over {limit.calls:,} calls → limit {limit.cores} cores ÷ cost = "
        f"{limit.rps:,.0f} req/s"
    )
    print(f"load average:   {load_before:.2f} before, {load_after:.2f} after (above ~0.3: other jobs, noisy figures)")
    print()
    head = (
        f"{'endpoint':<36} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'errors':>6} {'srv CPU ms/req':>14} {'loadgen CPU':>11} {'of limit':>8}"
    )
    print(head)
    print("-" * len(head))
    for p in points:
        of_limit = f"{p.rps / limit.rps:.2f}" if p.endpoint.startswith("/v1/") else "-"
        loadgen_share = p.loadgen_cpu_s / p.seconds if p.seconds else 0.0
        print(
            f"{p.endpoint:<36} {p.concurrency:>4} {p.rps:>8,.0f} {p.p50_ms:>7.2f} {p.p95_ms:>7.2f} {p.p99_ms:>7.2f} "
            f"{p.max_ms:>7.1f} {p.errors:>6} {p.server_cpu_ms_per_request:>14.3f} {loadgen_share:>10.0%} {of_limit:>8}"
        )
    rec = [p for p in points if p.endpoint.startswith("/v1/")]
    if not rec:
        return
    best = max((p for p in rec if "cart=" not in p.endpoint), key=lambda p: p.rps)
    at8 = next((p for p in rec if p.concurrency == 8 and "cart=" not in p.endpoint), None)
    cart8 = next((p for p in rec if p.concurrency == 8 and "cart=" in p.endpoint), None)
    errors = sum(p.errors for p in points)
    print()
    print("targets (2 cores, load generator included)")
    rows: list[tuple[str, str, bool]] = []
    if at8 is not None:
        rows.append(("p99 at concurrency 8 ≤ 10 ms", f"{at8.p99_ms:.2f} ms", at8.p99_ms <= TARGET_P99_MS_AT_8))
    if cart8 is not None:
        rows.append(
            ("p99 with a cart, concurrency 8 ≤ 10 ms", f"{cart8.p99_ms:.2f} ms", cart8.p99_ms <= TARGET_P99_MS_AT_8)
        )
    rows.append((f"req/s (best, c={best.concurrency}) ≥ {TARGET_RPS:,.0f}", f"{best.rps:,.0f}", best.rps >= TARGET_RPS))
    share = best.rps / limit.rps
    rows.append((f"share of the in-process limit ≥ {TARGET_SHARE}", f"{share:.2f}", share >= TARGET_SHARE))
    rows.append(("errors = 0", str(errors), errors == 0))
    for name, value, ok in rows:
        print(f"  {name:<40} {value:>10}  {'PASS' if ok else 'MISS'}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"), help="Run folder (or bundle).")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per point.")
    parser.add_argument("--warmup", type=float, default=2.0, help="Seconds of unreported load before the points.")
    parser.add_argument("--concurrency", default="1,8,32", help="Comma-separated connection counts.")
    parser.add_argument("--health-concurrency", type=int, default=8, help="Concurrency of the /health point.")
    parser.add_argument("--workers", type=int, default=2, help="Server worker processes.")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5000, help="In-process recommend() calls for the limit.")
    parser.add_argument(
        "--cart", type=int, default=10, help="Products in the cart of the extra point at concurrency 8 (0 = none)."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--server",
        choices=("auto", "cli", "server", "uvicorn"),
        default="auto",
        help="auto: `basketcast serve` (or basketcast.serving.server while the CLI lacks it); uvicorn: plain uvicorn.",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="Start the server without its access log (default: on)."
    )
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this JSON file.")
    # internal: the Python load generator's child process
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--client-concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("lua_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args)
        return

    run_dir = args.model.resolve()
    if not run_dir.exists():
        raise SystemExit(f"{run_dir}: no such run folder (train one, or pass --model)")
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    print(f"serving benchmark: {run_dir}; machine: {machine()}")
    load_before = os.getloadavg()[0]

    print(f"in-process limit: {args.calls:,} ServingModel.recommend calls …", flush=True)
    limit, users = measure_limit(run_dir, args.calls, args.k, args.seed)
    known_note = f"{users.size:,} known users"

    wrk = ensure_wrk(args.loadgen)
    loadgen = "wrk 1 thread + benchmarks/wrk_recommend.lua" if wrk else "asyncio raw-socket client (Python)"
    port = free_port()
    cmd, server_desc = server_command(run_dir, port, args.workers, args.server, not args.no_access_log)
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        ids_file = Path(tmp) / "users.txt"
        ids_file.write_text("\n".join(map(str, users.tolist())) + "\n")
        rec_args = ["users", str(ids_file), str(args.k)]
        log_path = Path(tmp) / "server.log"
        print(f"starting: {' '.join(cmd)} ({known_note})", flush=True)
        with running_server(cmd, run_dir, port, log_path, args.ready_timeout) as pid:
            if args.warmup > 0:
                drive(wrk, port, pid, "warm-up", rec_args, 8, args.warmup, args.k)
            endpoint = RECOMMEND.format(user="{id}", k=args.k)
            for c in levels:
                print(f"  {endpoint} at concurrency {c} for {args.duration:g} s …", flush=True)
                points.append(drive(wrk, port, pid, endpoint, rec_args, c, args.duration, args.k))
            if args.cart > 0:
                cart_file = Path(tmp) / "carts.txt"
                cart_file.write_text(carts_of(run_dir, users, args.cart))
                cart_endpoint = f"{endpoint}&cart=<{args.cart} of the user's products>"
                print(f"  {cart_endpoint} at concurrency 8 for {args.duration:g} s …", flush=True)
                points.append(
                    drive(
                        wrk, port, pid, cart_endpoint, ["users", str(cart_file), str(args.k)], 8, args.duration, args.k
                    )
                )
            print(f"  /health at concurrency {args.health_concurrency} for {args.duration:g} s …", flush=True)
            health = drive(wrk, port, pid, "/health", ["path", "/health"], args.health_concurrency, args.duration, 0)
            points.append(health)
        if any(p.errors for p in points):
            print(f"server log (last lines):\n{tail(log_path)}")
    load_after = os.getloadavg()[0]
    print_report(server_desc, loadgen, limit, points, load_before, load_after)
    if args.json is not None:
        payload = {
            "machine": machine(),
            "server": server_desc,
            "loadgen": loadgen,
            "limit": {**asdict(limit), "rps": limit.rps},
            "points": [{**asdict(p), "rps": p.rps} for p in points],
            "load_before": load_before,
            "load_after": load_after,
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
