"""``basketcast serve`` refuses to start, with the reason, instead of answering 503 forever — and
still starts on a run folder caught in the middle of being replaced.

The real CLI (the ``basketcast`` console script, else ``python -m basketcast.pipeline.cli``) in a subprocess:
exit status 2, one ``error: …`` line on stderr naming the path and what it is, no traceback,
nothing listening. Servers that do start listen on a free loopback port and are stopped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from basketcast.serving.bundle import BUNDLE
from basketcast.serving.server import ServeError, check_listen_address, check_model
from basketcast.serving.settings import is_loopback_host
from tests.serving.conftest import REPO, UvicornProcess, free_port, version_of

pytestmark = pytest.mark.integration
SCRIPT = Path(sys.executable).with_name("basketcast")
CLI = [str(SCRIPT)] if SCRIPT.exists() else ["-m", "basketcast.pipeline.cli"]


def basketcast(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (it must exit by itself: these are the refusals)."""
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    environ.pop("BASKETCAST_ADMIN_TOKEN", None)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, *CLI, *args], cwd=REPO, env=environ, capture_output=True, text=True, timeout=timeout
    )


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[UvicornProcess]]:
    servers: list[UvicornProcess] = []
    yield servers
    for server in servers:
        server.stop()


def test_a_data_folder_is_not_a_model(excerpt_run: dict[str, Path]) -> None:
    data = excerpt_run["data"]
    line = assert_refused(basketcast("serve", "--model", str(data), "--port", str(free_port())), str(data))
    assert "data folder" in line and "basketcast train" in line


def test_an_empty_or_missing_folder_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_refused(basketcast("serve", "--model", str(tmp_path / "empty")), "empty folder")
    assert_refused(basketcast("serve", "--model", str(tmp_path / "missing")), str(tmp_path / "missing"), "not found")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert_refused(basketcast("serve", "--model", str(other)), "not a model", "serving/manifest.json")


def test_a_run_without_its_bundle_or_with_a_broken_one_is_refused(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    path = broken / BUNDLE / "base.npy"
    path.write_bytes(path.read_bytes()[:100])
    assert_refused(basketcast("serve", "--model", str(broken)), "does not load", "base.npy")
    shutil.rmtree(model_dir / BUNDLE)
    assert_refused(basketcast("serve", "--model", str(model_dir)), "without its serving bundle", "basketcast export")


def test_a_network_address_needs_the_admin_token(model_dir: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        port = free_port()
        line = assert_refused(basketcast("serve", "--model", str(model_dir), "--host", host, "--port", str(port)))
        assert "BASKETCAST_ADMIN_TOKEN" in line and host in line
    blank = basketcast("serve", "--model", str(model_dir), "--host", "0.0.0.0", env={"BASKETCAST_ADMIN_TOKEN": " "})
    assert_refused(blank, "BASKETCAST_ADMIN_TOKEN")  # a blank token is no token


def test_the_address_rules() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"):
        assert is_loopback_host(host), host
        check_listen_address(host, admin_token_set=False)
    for host in ("0.0.0.0", "::", "", "10.0.0.1", "192.0.2.10", "fe80::1", "example.com", "localhost.example"):
        assert not is_loopback_host(host), host
        with pytest.raises(ServeError, match="BASKETCAST_ADMIN_TOKEN"):
            check_listen_address(host, admin_token_set=False)
        check_listen_address(host, admin_token_set=True)  # with a token: allowed


def test_a_run_folder_being_replaced_is_waited_for(model_dir: Path, started: list[UvicornProcess]) -> None:
    """The instant a publisher has moved the old run aside (``.run.old-PID-…``) and not yet renamed
    the new one in: the CLI waits for it instead of refusing."""
    version = version_of(model_dir)
    aside = model_dir.with_name(f".{model_dir.name}.old-{os.getpid()}-0123abcd")
    model_dir.rename(aside)
    timer = threading.Timer(1.0, lambda: aside.rename(model_dir))
    timer.start()
    try:
        assert check_model(model_dir) == version  # waited ~1 s, then loaded
    finally:
        timer.join()

    model_dir.rename(aside)
    port = free_port()
    args = [*CLI, "serve", "--model", str(model_dir), "--port", str(port)]
    server = UvicornProcess(args, model_dir, port, model_dir.parent / "serve.log")
    started.append(server)
    time.sleep(1.0)
    assert server.proc.poll() is None, server.output()  # still waiting, not refused
    aside.rename(model_dir)
    server.wait_ready()
    assert httpx.get(f"{server.url}/ready", timeout=5).json()["model_version"] == version
    r = httpx.get(f"{server.url}/v1/users/1/recommendations", timeout=5)
    assert r.status_code == 200 and r.json()["model_version"] == version


def test_a_valid_model_starts_with_the_real_cli(model_dir: Path, started: list[UvicornProcess]) -> None:
    port = free_port()
    args = [*CLI, "serve", "--model", str(model_dir), "--port", str(port), "--host", "127.0.0.1"]
    server = UvicornProcess(args, model_dir, port, model_dir.parent / "serve.log")
    started.append(server)
    server.wait_ready()
    ready = httpx.get(f"{server.url}/ready", timeout=5).json()
    assert ready["status"] == "ready" and ready["folder"]["state"] == "current" and ready["warnings"] == []
    assert server.stop() in (0, -15)
