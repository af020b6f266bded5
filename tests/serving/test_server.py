"""Real servers: uvicorn processes on free loopback ports, queried with httpx, always stopped.

- one process (``python -m uvicorn basketcast.serving.main:app``): the API end to end, a hot reload under
  continuous concurrent requests that loses none, a broken version refused, SIGHUP;
- two workers (``basketcast.serving.server.serve``): SIGHUP to the supervisor and POST /admin/reload reach
  every worker, and /metrics sums the workers.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.conftest import UvicornProcess, publish, republish, set_version, truncate, version_of, wait_for

pytestmark = pytest.mark.integration
RECOMMEND = "/v1/users/{user}/recommendations?k=10"
Start = Callable[..., UvicornProcess]


@dataclass
class Outcome:
    started: float
    status: int | None  # None: no answer (transport error)
    version: str | None


def model_info(url: str) -> dict[str, dict[str, float]]:
    """basketcast_model_info as {pid or "": {version: value}} from /metrics."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for s in family.samples:
            if s.name == "basketcast_model_info":
                out.setdefault(s.labels.get("pid", ""), {})[s.labels["version"]] = s.value
    return out


def served_versions(url: str) -> dict[str, str]:
    """The version each worker serves (pid → version), from the model_info gauge."""
    return {pid: v for pid, versions in model_info(url).items() for v, on in versions.items() if on == 1}


def total(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_real_server_reloads_under_load_without_losing_a_request(model_dir: Path, start_server: Start) -> None:
    server = start_server(model_dir)
    url = server.url
    v1 = version_of(model_dir)
    with httpx.Client(base_url=url, timeout=10) as c:
        ready = c.get("/ready").json()
        assert ready["model_version"] == v1
        users = [1, 2, 3, 7, 13, 4_000_000_000]
        assert c.get(RECOMMEND.format(user=1)).json()["strategy"] == "ranker"
        assert c.get(RECOMMEND.format(user=4_000_000_000)).json()["strategy"] == "popular"
        batch = c.post("/v1/recommendations", json={"user_ids": users, "k": 5})
        assert batch.status_code == 200 and len(batch.json()["results"]) == len(users)
        assert c.get("/v1/users/1/basket").status_code == 200
        assert c.get("/nope").json()["error"]["code"] == "not_found"
        assert c.post("/v1/recommendations", content=b"x" * (2 << 20)).status_code == 413

    stop = threading.Event()

    def fire(worker: int) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with httpx.Client(base_url=url, timeout=10) as c:
            for i in range(3000):  # bounded; normally ended by `stop` after a few seconds
                if stop.is_set():
                    break
                started = time.monotonic()
                try:
                    r = c.get(RECOMMEND.format(user=users[(worker + i) % len(users)]))
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    outcomes.append(Outcome(started, r.status_code, version))
                except httpx.HTTPError:
                    outcomes.append(Outcome(started, None, None))
        return outcomes

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(fire, w) for w in range(3)]
        try:
            time.sleep(0.5)
            v2 = republish(
                model_dir
            )  # basketcast.pipeline.workflows.export: a real new bundle, the run folder swapped atomically
            r = httpx.post(f"{url}/admin/reload", timeout=30)
            reloaded_at = time.monotonic()
            assert r.status_code == 200, r.text
            assert (r.json()["status"], r.json()["model_version"], r.json()["previous_version"]) == ("reloaded", v2, v1)
            time.sleep(0.5)
            publish(model_dir, truncate("base.npy"))  # a broken version
            r = httpx.post(f"{url}/admin/reload", timeout=30)
            assert r.status_code == 409, r.text
            assert r.json()["error"]["model_version"] == v2 and "base.npy" in r.json()["error"]["message"]
            time.sleep(0.5)
        finally:
            stop.set()
        outcomes = [o for f in futures for o in f.result()]

    failed = [o for o in outcomes if o.status != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    assert len(outcomes) > 30
    assert {o.version for o in outcomes} == {v1, v2}
    assert all(o.version == v2 for o in outcomes if o.started > reloaded_at)  # after the swap: the new one
    assert httpx.get(f"{url}/ready").json()["model_version"] == v2  # the broken version was not taken
    route = "/v1/users/{user_id}/recommendations"
    assert total(url, "basketcast_http_requests_total", route=route, status="200") >= len(outcomes) + 2
    assert total(url, "basketcast_http_request_duration_seconds_count", route=route) >= len(outcomes) + 2


def test_sighup_reloads_a_single_process_server(model_dir: Path, start_server: Start) -> None:
    server = start_server(model_dir)
    publish(model_dir, set_version("v-sighup"))
    server.signal(signal.SIGHUP)
    wait_for(lambda: httpx.get(f"{server.url}/ready").json()["model_version"] == "v-sighup", what="SIGHUP reload")
    publish(model_dir, truncate("ranker.onnx"))
    server.signal(signal.SIGHUP)
    wait_for(lambda: total(server.url, "basketcast_model_reloads_total", result="refused") == 1, what="refusal")
    assert httpx.get(f"{server.url}/v1/users/1/recommendations").json()["model_version"] == "v-sighup"
    assert server.proc.poll() is None
    assert server.stop() in (0, -signal.SIGTERM)  # a graceful shutdown
    assert "ranker.onnx" in server.output()  # the refusal is logged with the file


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def test_two_workers_all_reload_and_metrics_sum_them(model_dir: Path, start_server: Start) -> None:
    server = start_server(model_dir, workers=2)
    url, v1 = server.url, version_of(model_dir)
    wait_for(lambda: len(served_versions(url)) == 2, what="both workers loaded")
    workers = {int(p) for p in served_versions(url)}
    assert workers <= _children(server.proc.pid) and set(served_versions(url).values()) == {v1}

    # SIGHUP to the supervisor: forwarded to every worker, which reloads in place (same pids)
    publish(model_dir, set_version("v-multi-1"))
    server.signal(signal.SIGHUP)
    wait_for(lambda: set(served_versions(url).values()) == {"v-multi-1"}, what="SIGHUP reaching both workers")
    assert {int(p) for p in served_versions(url)} == workers

    # POST /admin/reload through one worker reaches the other one too
    publish(model_dir, set_version("v-multi-2"))
    r = httpx.post(f"{url}/admin/reload", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "reloaded" and r.json()["workers_notified"] is True
    wait_for(lambda: set(served_versions(url).values()) == {"v-multi-2"}, what="admin reload reaching both workers")
    assert {int(p) for p in served_versions(url)} == workers

    # a broken version is refused by every worker
    publish(model_dir, truncate("base.npy"))
    server.signal(signal.SIGHUP)
    wait_for(lambda: total(url, "basketcast_model_reloads_total", result="refused") == 2, what="both refusals")
    assert set(served_versions(url).values()) == {"v-multi-2"}

    # /metrics answers for all workers: every request counted once, whichever worker served it
    before = total(url, "basketcast_http_requests_total", route="/health")
    pids = set()
    for _ in range(20):
        with httpx.Client(base_url=url, timeout=5) as c:  # a new connection each time
            assert c.get("/health").status_code == 200
            pids.add(c.get("/ready").json()["pid"])
    assert total(url, "basketcast_http_requests_total", route="/health") - before == 20
    assert pids <= workers
    environ = Path(f"/proc/{min(workers)}/environ").read_bytes().split(b"\0")
    metrics_dir = Path(
        next(e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")).split(b"=", 1)[1].decode()
    )
    assert any(metrics_dir.glob("*.db"))  # the workers' shared metric files
    assert server.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert not metrics_dir.exists()  # serve() removes its temporary metrics folder
