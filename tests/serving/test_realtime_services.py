"""The real-time path on real servers: ``basketcast serve`` with 2 workers, Redis, PostgreSQL.

No mocks: the servers are started on free loopback ports by ``tests.services`` and stopped at the
end. What is checked is what production relies on:

- an order posted through one worker is seen by every worker (the rows live in Redis, the order
  in PostgreSQL), under versioned keys with a TTL;
- killing Redis mid-load never makes an answer 5xx: reads degrade to the snapshot and say so (in
  the answer and in /ready), orders are still recorded in PostgreSQL; once Redis is back, the
  rows refill themselves from the log — including the order posted while it was down;
- no order acknowledged with a 2xx is lost when the server is killed with SIGKILL right after
  acknowledging (the embedded SQLite log and PostgreSQL).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from basketcast.serving.model import ServingModel
from basketcast.serving.stores import open_order_log
from tests.services import PostgresServer, RedisServer, postgres_server, redis_server
from tests.serving.conftest import UvicornProcess, free_port, wait_for

pytestmark = pytest.mark.integration

NEW = 4_200_000_000


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


def order(order_id: str, user: int, products: list[int]) -> dict[str, Any]:
    return {"order_id": order_id, "user_id": user, "products": products, "order_dow": 2, "order_hour_of_day": 9}


def recommend(client: httpx.Client, server: UvicornProcess, user: int) -> httpx.Response:
    return client.get(f"{server.url}/v1/users/{user}/recommendations", params={"k": 50, "dow": 2, "hour": 10})


def test_orders_reach_every_worker_through_redis_and_postgres(
    trained_run: Path,
    start_server: Callable[..., UvicornProcess],
    redis: RedisServer,
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    dsn = postgres.new_database()
    env = {"BASKETCAST_ORDER_LOG": dsn, "BASKETCAST_ONLINE_STORE": redis.url, "BASKETCAST_STATE_DIR": str(tmp_path)}
    server = start_server(trained_run, workers=2, env=env)
    user = NEW + 1
    popular = int(ServingModel.load(trained_run).popular_products[0])
    with httpx.Client(timeout=10) as client:
        ready = client.get(f"{server.url}/ready").json()
        assert ready["online"]["order_log"].startswith("postgresql://") and ready["online"]["online_store_up"]
        assert client.post(f"{server.url}/v1/orders", json=order("w-1", user, [popular])).status_code == 201
    pids: set[int] = set()
    freshness: Counter[str] = Counter()
    for _ in range(200):  # new connections, until both workers answered (the kernel spreads them)
        with httpx.Client(timeout=10) as client:
            answer = recommend(client, server, user)
            assert answer.status_code == 200
            freshness[answer.json()["freshness"]] += 1
            pids.add(int(client.get(f"{server.url}/ready").json()["pid"]))
        if len(pids) == 2 and sum(freshness.values()) >= 20:
            break
    assert len(pids) == 2 and set(freshness) == {"fresh"}, (pids, freshness)
    import redis as redis_client

    r = redis_client.Redis.from_url(redis.url)
    keys = [k.decode() for k in r.scan_iter(f"basketcast:*:rows:{user}")]
    assert len(keys) == 1
    ttl = int(r.ttl(keys[0]))  # type: ignore[arg-type]
    assert 0 < ttl <= 30 * 24 * 3600
    log = open_order_log(dsn)
    try:
        assert [o.order_id for o in log.orders_of(user)] == ["w-1"]
    finally:
        log.close()


def test_killing_redis_degrades_to_the_snapshot_never_to_5xx_and_refills(
    trained_run: Path,
    start_server: Callable[..., UvicornProcess],
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    with redis_server() as redis:  # a private Redis: this test kills it
        dsn = postgres.new_database()
        env = {
            "BASKETCAST_ORDER_LOG": dsn,
            "BASKETCAST_ONLINE_STORE": redis.url,
            "BASKETCAST_STATE_DIR": str(tmp_path),
        }
        server = start_server(trained_run, workers=2, env=env)
        model = ServingModel.load(trained_run)
        known, fresh_user = int(model.users[0]), NEW + 2
        first, later = int(model.popular_products[0]), int(model.popular_products[1])
        statuses: Counter[int] = Counter()
        seen: Counter[str] = Counter()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    for user in (known, fresh_user):
                        answer = recommend(client, server, user)
                        statuses[answer.status_code] += 1
                        if answer.status_code == 200:
                            seen[answer.json()["freshness"]] += 1

        with httpx.Client(timeout=10) as client:
            assert client.post(f"{server.url}/v1/orders", json=order("k-1", fresh_user, [first])).status_code == 201
            thread = threading.Thread(target=load)
            thread.start()
            try:
                time.sleep(1.0)
                redis.kill()
                time.sleep(1.5)
                # Orders are still recorded (PostgreSQL), flagged as not yet fresh.
                during = client.post(f"{server.url}/v1/orders", json=order("k-2", fresh_user, [later]))
                assert during.status_code == 201, during.text
                assert during.json()["fresh"] is False and during.json()["warnings"]
                ready = client.get(f"{server.url}/ready")
                assert ready.status_code == 200
                assert ready.json()["online"]["degraded"] is True and ready.json()["warnings"]
                degraded = recommend(client, server, fresh_user)
                assert degraded.status_code == 200 and degraded.json()["freshness"] == "degraded"
                redis.start()  # back, empty (no persistence)
                time.sleep(1.5)  # past the circuit breaker (1 s)
            finally:
                stop.set()
                thread.join(timeout=30)
            assert set(statuses) == {200}, statuses
            assert seen["degraded"] > 0 and seen["fresh"] > 0
            # Refilled from the order log, with the order posted while Redis was down.
            wait_for(lambda: recommend(client, server, fresh_user).json()["freshness"] == "fresh", "refill")
            items = {i["product_id"]: i["repeat"] for i in recommend(client, server, fresh_user).json()["items"]}
            assert items.get(first) is True and items.get(later) is True
            assert client.get(f"{server.url}/ready").json()["online"]["degraded"] is False


@pytest.mark.parametrize("log_kind", ["embedded", "postgres"])
def test_no_acknowledged_order_is_lost_when_the_server_is_killed(
    trained_run: Path,
    start_server: Callable[..., UvicornProcess],
    postgres: PostgresServer,
    tmp_path: Path,
    log_kind: str,
) -> None:
    log_url = postgres.new_database() if log_kind == "postgres" else f"sqlite:///{tmp_path / 'orders.sqlite'}"
    env = {"BASKETCAST_ORDER_LOG": log_url, "BASKETCAST_STATE_DIR": str(tmp_path)}
    server = start_server(trained_run, env=env)  # one process: SIGKILL takes all of it
    acknowledged: list[str] = []
    stop = threading.Event()

    def post(thread: int) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                order_id = f"d-{thread}-{n}"
                try:
                    answer = client.post(f"{server.url}/v1/orders", json=order(order_id, NEW + 3 + n % 5, [n % 7 + 1]))
                except httpx.TransportError:
                    return  # the server is gone
                if answer.status_code in (200, 201):
                    acknowledged.append(order_id)

    threads = [threading.Thread(target=post, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= 30, "30 acknowledged orders", timeout=60)
    server.signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    log = open_order_log(log_url)
    try:
        recorded = {o.order_id for batch in log.scan() for o in batch}
    finally:
        log.close()
    assert set(acknowledged) <= recorded, sorted(set(acknowledged) - recorded)
    assert len(recorded) - len(set(acknowledged)) <= 3  # at most the requests in flight at the kill


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped), as docker compose reads them."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def test_the_images_start_command_serves_with_the_stores(
    trained_run: Path, redis: RedisServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    """The Dockerfile's CMD, run as is with .env.example's environment (what compose and the
    Kubernetes ConfigMap pass), pointed at the tests' Redis and PostgreSQL instead of the
    stack's host names: it serves, reaches both stores and records an order."""
    repo = Path(__file__).resolve().parents[2]
    found = re.search(r"^CMD (\[.*\])$", (repo / "Dockerfile").read_text(), re.MULTILINE)
    assert found is not None, "the Dockerfile has no exec-form CMD"
    cmd = json.loads(found.group(1))
    port = str(free_port())
    env = {
        **os.environ,
        **env_file(repo / ".env.example"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "BASKETCAST_MODEL_DIR": str(trained_run),
        "BASKETCAST_HOST": "127.0.0.1",
        "BASKETCAST_PORT": port,
        "BASKETCAST_ADMIN_TOKEN": "t" * 24,
        "BASKETCAST_ORDER_LOG": postgres.new_database(),
        "BASKETCAST_ONLINE_STORE": redis.url,
        "BASKETCAST_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "image-cmd.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None  # exited: stop waiting, the asserts below say why

        wait_for(up, "the image's command to serve", timeout=60)
        assert proc.poll() is None, (tmp_path / "image-cmd.log").read_text()[-3000:]
        online = httpx.get(f"{url}/ready").json()["online"]
        assert online["order_log_up"] and online["online_store_up"] and online["refreshes_rows"]
        answer = httpx.post(f"{url}/v1/orders", json=order("img-1", NEW + 9, [1, 2]), timeout=30)
        assert answer.status_code == 201 and answer.json()["fresh"] is True
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def test_stores_down_at_startup_are_opened_once_they_answer(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL that is down when the API starts: reads answer from the snapshot flagged
    "degraded", orders get 503 "retry"; once it is up, the next requests open the stores."""
    from fastapi.testclient import TestClient

    import basketcast.serving.realtime
    from basketcast.serving.main import create_app
    from basketcast.serving.settings import Settings

    monkeypatch.setattr(basketcast.serving.realtime, "REOPEN_SECONDS", 0.2)
    with postgres_server() as pg:
        dsn = pg.new_database()
        pg.stop()
        settings = Settings(model_dir=trained_run, order_log=dsn, state_dir=tmp_path, reload_on_sighup=False)
        with TestClient(create_app(settings)) as client:
            read = client.get(f"/v1/users/{NEW + 10}/recommendations", params={"k": 5})
            assert read.status_code == 200 and read.json()["freshness"] == "degraded"
            down = client.post("/v1/orders", json=order("late-1", NEW + 10, [1]))
            assert down.status_code == 503 and down.json()["error"]["code"] == "order_log_unavailable"
            assert client.get("/ready").json()["warnings"]
            pg.start()
            wait_for(lambda: client.post("/v1/orders", json=order("late-1", NEW + 10, [1])).status_code == 201, "open")
            again = client.get(f"/v1/users/{NEW + 10}/recommendations", params={"k": 5}).json()
            assert again["freshness"] == "fresh" and again["strategy"] == "ranker"
            assert client.get("/ready").json()["online"]["order_log_up"] is True
