"""Serving fixtures: one model trained on the real excerpt per session, copies to mutate, servers.

``trained_run`` is read-only (shared by every test); tests that publish new or broken versions
work on ``model_dir``, a private copy. ``UvicornProcess`` runs a real server on a free loopback
port in a subprocess and always stops it (by its own pid).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from basketcast.serving.bundle import BUNDLE, MANIFEST
from basketcast.serving.main import create_app
from basketcast.serving.settings import MODEL_DIR_ENV, Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def trained_run(excerpt_run: dict[str, Path]) -> Path:
    """The suite's run folder trained on the committed real excerpt (tests/conftest.py; read-only)."""
    return Path(excerpt_run["run"])


@pytest.fixture
def model_dir(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run folder, to republish or break."""
    dest = tmp_path / "run"
    shutil.copytree(trained_run, dest)
    return dest


@pytest.fixture(scope="module")
def client(trained_run: Path) -> Iterator[TestClient]:
    """A TestClient (lifespan run) serving the shared trained run; 500s answered, not raised."""
    app = create_app(Settings(model_dir=trained_run, reload_on_sighup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def version_of(run_dir: Path) -> str:
    """The version recorded in a run folder's serving manifest."""
    return str(json.loads((run_dir / BUNDLE / MANIFEST).read_text())["version"])


def publish(run_dir: Path, change: Callable[[Path], None]) -> None:
    """Publish a changed copy of ``run_dir`` in its place, atomically (rename), as export does."""
    tmp = run_dir.with_name(f".{run_dir.name}.tmp")
    old = run_dir.with_name(f".{run_dir.name}.old")
    shutil.copytree(run_dir, tmp)
    change(tmp)
    run_dir.rename(old)
    tmp.rename(run_dir)
    shutil.rmtree(old)


def set_version(version: str) -> Callable[[Path], None]:
    """A ``publish`` change: same bundle under another manifest version."""

    def change(run_dir: Path) -> None:
        path = run_dir / BUNDLE / MANIFEST
        manifest = json.loads(path.read_text())
        manifest["version"] = version
        path.write_text(json.dumps(manifest))

    return change


def truncate(name: str) -> Callable[[Path], None]:
    """A ``publish`` change: a new version whose bundle file ``name`` is cut in half."""

    def change(run_dir: Path) -> None:
        set_version("broken-version")(run_dir)
        path = run_dir / BUNDLE / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return change


def republish(run_dir: Path) -> str:
    """Re-export the run (basketcast.pipeline.workflows.export: a real new bundle, published atomically); its
    version."""
    from basketcast.pipeline.workflows.export import export

    before = version_of(run_dir)
    for _ in range(3):
        version = export(run_dir).version
        if version != before:
            return version
        time.sleep(1.0)  # versions are stamped to the second
    raise AssertionError("export kept the same version")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UvicornProcess:
    """A real server in a subprocess on a free loopback port; ``stop()`` ends it (SIGTERM, then kill)."""

    def __init__(
        self, args: list[str], model_dir: Path, port: int, log: Path, extra_env: Mapping[str, str] | None = None
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, MODEL_DIR_ENV: str(model_dir), "PYTHONPATH": str(REPO), **(extra_env or {})}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until /health answers (the model is loaded at startup, before it does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not up after {timeout} s:\n{self.output()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def output(self) -> str:
        """The tail of the server's stdout + stderr."""
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> int:
        """SIGTERM (graceful shutdown), SIGKILL after 15 s; the exit code.

        A single uvicorn process re-raises the SIGTERM it handled once shut down (exit -15); the
        multi-worker supervisor returns normally (0).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log_file.close()
        return int(self.proc.returncode)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., UvicornProcess]]:
    """Start real servers: ``start_server(model_dir)`` (``python -m uvicorn``, one process) or
    ``start_server(model_dir, workers=2)`` (``basketcast.serving.server.serve``), ``env`` added to the
    environment; all stopped at teardown."""
    started: list[UvicornProcess] = []

    def start(model_dir: Path, workers: int | None = None, env: Mapping[str, str] | None = None) -> UvicornProcess:
        port = free_port()
        if workers is None:
            args = ["-m", "uvicorn", "basketcast.serving.main:app", "--host", "127.0.0.1", "--port", str(port)]
            args += ["--loop", "uvloop", "--http", "httptools", "--log-level", "info"]
        else:
            code = (
                "import sys; from pathlib import Path; from basketcast.serving.server import serve; "
                "serve(Path(sys.argv[1]), port=int(sys.argv[2]), workers=int(sys.argv[3]))"
            )
            args = ["-c", code, str(model_dir), str(port), str(workers)]
        server = UvicornProcess(args, model_dir, port, tmp_path / f"server-{port}.log", env)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def wait_for(predicate: Callable[[], bool], what: str = "condition", timeout: float = 15.0) -> None:
    """Poll ``predicate`` every 0.1 s until it holds; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def uvicorn_serving(model_dir: Path, log_path: Path) -> Iterator[UvicornProcess]:
    """A real uvicorn (one worker) serving ``model_dir`` on a free loopback port, stopped at the end."""
    port = free_port()
    args = ["-m", "uvicorn", "basketcast.serving.main:app", "--host", "127.0.0.1", "--port", str(port)]
    server = UvicornProcess(args, model_dir, port, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
