"""Real servers for tests: Redis and PostgreSQL on free loopback ports, always stopped and removed.

Why real servers: the stores' promises (durability, reconnection after a restart, migrations
racing between processes, fail-fast timeouts) are properties of the server and its driver
together, which a fake cannot show.

- :func:`redis_server` runs ``redis-server`` as a child process (``--daemonize no``: its pid is
  ours to kill -9 and restart on the same port) without persistence, bound to 127.0.0.1.
- :func:`postgres_server` runs a throw-away PostgreSQL cluster (``initdb`` in a temporary folder,
  its own port and socket folder, ``fsync=on``) with a ``basketcast`` database. PostgreSQL refuses
  to run as root, so as root its programs run as the ``postgres`` user (``runuser``). It never
  touches the cluster that Debian's ``postgresql`` package may have created on port 5432.

When a server's programs are missing, :class:`MissingServiceError` says what to install (``.ci/run``
installs both); ``tests/stores/conftest.py`` turns that into a failure, or a skip when
``BASKETCAST_SKIP_SERVICES=1``. Everything listens on loopback only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

SKIP_ENV = "BASKETCAST_SKIP_SERVICES"
PG_BIN_ENV = "BASKETCAST_PG_BIN"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


class MissingServiceError(RuntimeError):
    """A server's programs are not installed on this machine."""


class ServiceStartError(RuntimeError):
    """A server was found but did not start (its log's tail is in the message)."""


def skip_services() -> bool:
    """Whether the environment asks to skip (not fail) tests whose server programs are missing."""
    return os.environ.get(SKIP_ENV, "").strip() == "1"


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it; a tiny window remains before the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- Redis ------------------------------------------------------------------------------------


def redis_binary() -> str:
    """The ``redis-server`` program, or MissingServiceError saying how to get it."""
    found = shutil.which("redis-server")
    if found is None:
        raise MissingServiceError(
            "redis-server is not installed: the Redis tests need it (.ci/run installs it; by hand: "
            f"apt-get install -y redis-server). Set {SKIP_ENV}=1 to skip these tests instead."
        )
    return found


class RedisServer:
    """One ``redis-server`` child process on a fixed loopback port: start, kill -9, restart, stop."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.workdir = workdir
        self.port = port or free_port()
        self.log = workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start on ``port`` and return once it answers PING."""
        if self.running:
            return
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise ServiceStartError(f"redis-server did not start on port {self.port}:\n{_tail(self.log)}")
            time.sleep(0.02)

    def answers(self) -> bool:
        """Whether a PING on a new connection gets +PONG (a raw socket: no client library needed)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9 (no shutdown: what a crash or an OOM kill does) and wait until it is gone."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill (if running) and start again on the same port: an empty Redis (no persistence)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running Redis on a free loopback port, killed and its folder removed afterwards."""
    redis_binary()
    workdir = Path(tempfile.mkdtemp(prefix="basketcast-redis-"))
    server = RedisServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The folder of ``initdb``/``pg_ctl``: $BASKETCAST_PG_BIN, Debian's newest /usr/lib/postgresql/N/bin, or PATH."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += [Path(p).parent for p in debian]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise MissingServiceError(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: the PostgreSQL tests need them "
        "(.ci/run installs them; by hand: apt-get install -y postgresql, which puts them in "
        f"/usr/lib/postgresql/15/bin). Set {PG_BIN_ENV} to their folder if they are elsewhere, or "
        f"{SKIP_ENV}=1 to skip these tests instead."
    )


class PostgresServer:
    """A throw-away PostgreSQL cluster in a temporary folder, on a free loopback port."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.port = port or free_port()
        self._as_postgres: list[str] = []
        self.sockets.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                account = pwd.getpwnam("postgres")
            except KeyError as e:
                raise MissingServiceError(
                    "running as root, PostgreSQL needs a 'postgres' user (apt-get install -y postgresql creates it)"
                ) from e
            for folder in (root, self.sockets):
                os.chown(folder, account.pw_uid, account.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    def dsn(self, database: str = "basketcast") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as_postgres, *args],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            output = done.stdout.decode(errors="replace").strip()
            raise ServiceStartError(f"{Path(args[0]).name} failed ({done.returncode}):\n{output}\n{_tail(self.log)}")

    def init(self) -> None:
        """initdb: trust authentication for local connections (the cluster lives only for the tests)."""
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses={HOST} -c fsync=on -c max_connections=60"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-t",
            str(int(START_TIMEOUT_S)),
            "-w",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: no checkpoint, like a crash (the next start replays the WAL)."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop (``immediate`` = crash-like) and start again on the same port."""
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        """A new empty database; its DSN."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.dsn(name)

    def new_database(self) -> str:
        """A new database with a unique name (one per test keeps tests independent); its DSN."""
        return self.create_database(f"t_{uuid.uuid4().hex[:16]}")

    def _force_stop(self) -> None:
        """Last resort when pg_ctl failed: SIGKILL the postmaster named in postmaster.pid."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL with a ``basketcast`` database (``server.dsn()``); stopped and deleted afterwards."""
    postgres_bindir()
    root = Path(tempfile.mkdtemp(prefix="basketcast-pg-"))  # under /tmp: reachable by the postgres user
    server: PostgresServer | None = None
    try:
        server = PostgresServer(root)
        server.init()
        server.start()
        server.create_database("basketcast")
        yield server
    finally:
        if server is not None:
            try:
                server.stop()
            except (ServiceStartError, subprocess.SubprocessError, OSError):
                server._force_stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(workdir: Path, timeout: float = 90.0) -> Iterator[str]:
    """A real MLflow tracking server (``mlflow server``: REST API, registry, proxied artifacts) on a
    free loopback port, with a SQLite store and an artifact folder in ``workdir``; yields its URL.

    It runs in its own process group, stopped (SIGTERM, then SIGKILL) with every child at the end.
    """
    import sys
    import urllib.request

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    args = [
        str(mlflow), "server", "--host", HOST, "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "mlartifacts"),
    ]  # fmt: skip
    log = workdir / "mlflow-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ServiceStartError(f"mlflow server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServiceStartError(f"mlflow server not up after {timeout} s:\n{_tail(log)}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
