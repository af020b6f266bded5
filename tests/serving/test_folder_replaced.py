"""A real ``basketcast serve`` keeps serving its model when the run folder is deleted or replaced by
something broken under it, and ``/ready`` says what happened.

One server (the real CLI, one process, a free loopback port, stopped at the end) on a private copy
of the trained run. The run folder is deleted, replaced by a data folder, by a broken model, and
finally by a good new version; after each step every request is still answered by the model
loaded at the start (until the good version is reloaded), reloads (SIGHUP, POST /admin/reload)
are refused, and /ready stays 200 with ``folder``, ``last_reload`` and ``warnings`` saying why.
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from basketcast.serving.bundle import BUNDLE
from tests.serving.conftest import UvicornProcess, free_port, publish, set_version, truncate, version_of, wait_for

pytestmark = pytest.mark.integration
SCRIPT = Path(sys.executable).with_name("basketcast")
CLI = [str(SCRIPT)] if SCRIPT.exists() else ["-m", "basketcast.pipeline.cli"]
USERS = [1, 2, 3, 4_000_000_000]


@pytest.fixture
def server(model_dir: Path, tmp_path: Path) -> Iterator[UvicornProcess]:
    port = free_port()
    proc = UvicornProcess(
        [*CLI, "serve", "--model", str(model_dir), "--port", str(port)], model_dir, port, tmp_path / "s.log"
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def ready(server: UvicornProcess) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/ready", timeout=5)
    assert r.status_code == 200, r.text  # still serving: still ready
    body: dict[str, Any] = r.json()
    assert body["status"] == "ready" and body["error"] is None
    return body


def assert_serving(server: UvicornProcess, version: str) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for user in USERS:
            r = c.get(f"/v1/users/{user}/recommendations", params={"k": 5})
            assert r.status_code == 200 and r.json()["model_version"] == version, r.text
        r = c.post("/v1/recommendations", json={"user_ids": USERS, "k": 5})
        assert r.status_code == 200 and r.json()["model_version"] == version
        assert c.get("/v1/users/1/basket").json()["model_version"] == version


def test_the_old_model_keeps_serving_and_ready_says_why(
    server: UvicornProcess, model_dir: Path, excerpt_run: dict[str, Path], tmp_path: Path
) -> None:
    v1 = version_of(model_dir)
    good = tmp_path / "good-copy"
    shutil.copytree(model_dir, good)
    body = ready(server)
    assert body["folder"] == {"state": "current", "version": v1} and body["warnings"] == []
    assert body["last_reload"]["status"] == "loaded"

    # 1. deleted under it
    shutil.rmtree(model_dir)
    assert_serving(server, v1)
    body = ready(server)
    assert body["model_version"] == v1 and body["folder"] == {"state": "missing", "version": None}
    assert any("is gone" in w and f"still serving {v1}" in w for w in body["warnings"]), body["warnings"]
    server.signal(signal.SIGHUP)
    wait_for(lambda: ready(server)["last_reload"]["status"] == "refused", "the SIGHUP reload refused")
    body = ready(server)
    assert "not found" in body["last_reload"]["error"] and body["last_reload"]["model_version"] == v1
    assert any("was refused" in w for w in body["warnings"])
    assert_serving(server, v1)

    # 2. replaced by a data folder (e.g. `ingest --out RUN --force`)
    shutil.copytree(excerpt_run["data"], model_dir)
    body = ready(server)
    assert body["folder"] == {"state": "not_a_model", "version": None}
    assert any("no readable serving bundle" in w for w in body["warnings"])
    r = httpx.post(f"{server.url}/admin/reload", timeout=30)
    assert r.status_code == 409 and r.json()["error"]["model_version"] == v1, r.text
    assert_serving(server, v1)

    # 3. replaced by a broken model (a new version whose snapshot is truncated)
    shutil.rmtree(model_dir)
    shutil.copytree(good, model_dir)
    publish(model_dir, truncate("base.npy"))
    body = ready(server)
    assert body["folder"] == {"state": "new_version", "version": "broken-version"}
    assert any("not loaded yet" in w for w in body["warnings"])  # not tried yet
    r = httpx.post(f"{server.url}/admin/reload", timeout=30)
    assert r.status_code == 409 and "base.npy" in r.json()["error"]["message"]
    body = ready(server)
    assert body["last_reload"]["status"] == "refused" and "base.npy" in body["last_reload"]["error"]
    assert any("version broken-version" in w and "base.npy" in w for w in body["warnings"]), body["warnings"]
    assert not any("not loaded yet" in w for w in body["warnings"])
    assert_serving(server, v1)

    # 4. a good new version: reloaded, and all is well again
    shutil.rmtree(model_dir)
    shutil.copytree(good, model_dir)
    publish(model_dir, set_version("v-good"))
    r = httpx.post(f"{server.url}/admin/reload", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "reloaded", r.text
    body = ready(server)
    assert body["folder"] == {"state": "current", "version": "v-good"} and body["warnings"] == []
    assert_serving(server, "v-good")
    assert (model_dir / BUNDLE).is_dir() and server.proc.poll() is None
