"""Soak test of the HTTP server: sustained load with hot reloads and one broken bundle.

Starts ``basketcast serve`` (2 worker processes, loopback) on a copy of a run folder and drives
``GET /v1/users/{random known user}/recommendations?k=10`` at concurrency 8 for ``--duration``
seconds (wrk, or the Python client of bench_serve.py). Meanwhile, every ``--reload-every`` seconds
the copy is re-exported (``basketcast export``: a new bundle version, published atomically) and
``POST /admin/reload`` swaps every worker to it; once, half way, a *broken* bundle (a new
version whose ``base.npy`` is truncated) is published instead, and the reload must be refused (409) with the old
version still serving. At the end the server must serve the last good version.

Prints: requests, failed requests (socket errors + non-2xx), p50/p99, the reloads and what each
answered, and the server's resident memory (all its processes, from /proc) after the warm-up and
at the end. Exits 1 when a request failed or a reload did not answer as expected.

    .venv/bin/python benchmarks/soak.py --model artifacts/model [--duration 600] [--reload-every 30]

Only loopback traffic; bounded by ``--duration``; the server is stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import HOST, drive, ensure_wrk, free_port, running_server, server_command, tail

EXE = Path(sys.executable).with_name("basketcast")


@dataclass
class Reload:
    at_s: float
    broken: bool
    status: int
    version_before: str
    version_after: str

    @property
    def as_expected(self) -> bool:
        if self.broken:  # refused, and the old version keeps serving
            return self.status == 409 and self.version_after == self.version_before
        return self.status == 200 and self.version_after != self.version_before


@dataclass
class SoakResult:
    duration_s: float = 0.0
    requests: int = 0
    failed: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    reloads: list[Reload] = field(default_factory=list)
    final_version: str = ""

    @property
    def ok(self) -> bool:
        good = [r for r in self.reloads if not r.broken]
        return (
            self.failed == 0
            and bool(self.reloads)
            and all(r.as_expected for r in self.reloads)
            and self.final_version == good[-1].version_after
        )


def tree_rss_mib(root: int) -> float:
    """Resident memory of ``root`` and its descendants (MiB, from /proc/PID/status VmRSS)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields.get("PPid", "0").strip() or 0)
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(p for p, pp in parents.items() if pp == pid)
    return total / 1024


def get_json(url: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, method="POST" if "/admin/" in url else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def served_version(port: int) -> str:
    """The version /ready reports ("" when the server does not answer three times in a row)."""
    for _ in range(3):
        try:
            _, body = get_json(f"http://{HOST}:{port}/ready")
            return str(body.get("model_version") or "")
        except (OSError, ValueError):
            time.sleep(0.5)
    return ""


def publish_broken(run: Path) -> None:
    """Replace the run folder by a copy whose bundle has a truncated base.npy (atomically)."""
    from basketcast.pipeline.data.publish import publishing_dir
    from basketcast.pipeline.workflows.run_folder import RUN_FOLDER

    with publishing_dir(run, RUN_FOLDER) as tmp:
        shutil.copytree(run, tmp, dirs_exist_ok=True, copy_function=os.link)
        # New files (the published ones are hard links and stay intact): a new version whose
        # snapshot is cut in half, as a publication interrupted by a full disk might leave it.
        base, manifest = tmp / "serving" / "base.npy", tmp / "serving" / "manifest.json"
        data, meta = base.read_bytes(), json.loads(manifest.read_text())
        base.unlink()
        base.write_bytes(data[: len(data) // 2])
        manifest.unlink()
        manifest.write_text(json.dumps({**meta, "version": meta["version"] + "-broken"}))


def settled_version(port: int, expected: str, timeout: float = 15.0) -> str:
    """Poll /ready (whichever worker answers) until ``expected`` comes back 5 times in a row, or
    ``timeout``; the last version seen. The other workers swap on the supervisor's SIGHUP, a
    moment after the one that answered the reload."""
    deadline, streak, seen = time.monotonic() + timeout, 0, ""
    while time.monotonic() < deadline and streak < 5:
        seen = served_version(port)
        streak = streak + 1 if seen == expected else 0
        time.sleep(0.1)
    return seen


def reload_loop(run: Path, port: int, every: float, duration: float, result: SoakResult, stop: threading.Event) -> None:
    """A reload at every ``every`` seconds of the run (export time included), the middle one broken."""
    start = time.monotonic()
    n = max(1, int(duration // every) - 1)
    broken_at = n // 2 if n > 1 else -1
    for i in range(n):
        if stop.wait(max(0.0, start + (i + 1) * every - time.monotonic())):
            return
        broken = i == broken_at
        if broken:
            publish_broken(run)
        else:
            res = subprocess.run([str(EXE), "export", "--model", str(run)], capture_output=True, text=True)
            if res.returncode:
                print(f"export failed: {res.stderr[-1000:]}", file=sys.stderr)
        before = served_version(port)
        try:
            status, body = get_json(f"http://{HOST}:{port}/admin/reload")
        except (OSError, ValueError) as exc:  # recorded as an unexpected reload, not a crash
            print(f"reload request failed: {exc}", file=sys.stderr)
            status, body = -1, {}
        if broken:
            time.sleep(2.0)  # long enough for a wrongly accepted version to show
            after = served_version(port)
        else:
            after = settled_version(port, str(body.get("model_version") or ""))
        result.reloads.append(Reload(round(time.monotonic() - start, 1), broken, status, before, after))


def soak(model: Path, duration: float, reload_every: float, workers: int, concurrency: int, loadgen: str) -> SoakResult:
    result = SoakResult(duration_s=duration)
    wrk = ensure_wrk(loadgen)
    with tempfile.TemporaryDirectory(prefix="basketcast-soak-") as tmp_name:
        tmp = Path(tmp_name)
        run = tmp / "run"
        shutil.copytree(model, run)
        from basketcast.serving.model import ServingModel

        users = ServingModel.load(run).users
        ids = tmp / "users.txt"
        ids.write_text("\n".join(map(str, users[:: max(1, users.size // 5000)].tolist())) + "\n")
        port = free_port()
        cmd, _ = server_command(run, port, workers, "cli", access_log=False)
        log_path = tmp / "server.log"
        with running_server(cmd, run, port, log_path, timeout=120) as pid:
            drive(wrk, port, pid, "warm-up", ["users", str(ids), "10"], concurrency, 3, 10)
            result.rss_start_mib = tree_rss_mib(pid)
            stop = threading.Event()
            reloader = threading.Thread(
                target=reload_loop, args=(run, port, reload_every, duration, result, stop), daemon=True
            )
            reloader.start()
            try:
                point = drive(wrk, port, pid, "soak", ["users", str(ids), "10"], concurrency, duration, 10)
            finally:
                stop.set()
                reloader.join(timeout=120)
            result.rss_end_mib = tree_rss_mib(pid)
            result.final_version = served_version(port)
            result.requests, result.failed = point.requests, point.errors
            result.p50_ms, result.p99_ms = point.p50_ms, point.p99_ms
            if not result.ok:
                print(f"server log (last lines):\n{tail(log_path, 60)}", file=sys.stderr)
    return result


def report(r: SoakResult) -> str:
    lines = [
        f"soak: {r.duration_s:g} s at concurrency 8, {r.requests:,} requests, {r.failed} failed, "
        f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms",
        f"server RSS (all processes): {r.rss_start_mib:,.0f} MiB after warm-up → {r.rss_end_mib:,.0f} MiB at the end "
        f"(×{r.rss_end_mib / max(r.rss_start_mib, 1e-9):.2f})",
        "reloads:",
    ]
    for x in r.reloads:
        what = "broken bundle" if x.broken else "new bundle"
        lines.append(
            f"  t={x.at_s:6.1f} s  {what:13} → {x.status}  {x.version_before[-8:]} → {x.version_after[-8:]}"
            f"  {'ok' if x.as_expected else 'UNEXPECTED'}"
        )
    lines.append(f"result: {'PASS' if r.ok else 'FAIL'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> SoakResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"), help="Run folder (copied, not changed).")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--reload-every", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args(argv)
    if not (args.model / "manifest.json").is_file():
        raise SystemExit(f"{args.model}: not a run folder (train one first: make train)")
    result = soak(args.model, args.duration, args.reload_every, args.workers, args.concurrency, args.loadgen)
    print(report(result))
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(0 if main().ok else 1)
