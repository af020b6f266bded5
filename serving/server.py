"""Run the API under uvicorn (uvloop + httptools), with one or several worker processes.

``serve(model_dir, host, port, workers)`` passes the model folder to the app through
``BASKETCAST_MODEL_DIR`` and runs ``serving.main:app``.

Reloading a new model version, with any number of workers:

- ``POST /admin/reload`` reloads the worker that gets the request (answering 200 / 409 for it)
  and, under serve()'s supervisor, asks the supervisor to forward SIGHUP to every worker;
- ``kill -HUP <pid>`` of the server (the supervisor when ``workers > 1``): the supervisor
  forwards SIGHUP to each worker; a single-process server handles it itself. Each worker then
  reloads in place (``ModelHolder.reload``: new version swapped in atomically, a broken one
  refused and the old one kept, same version left alone).

uvicorn's own supervisor (0.54) answers SIGHUP with a rolling restart of the workers instead:
each replacement loads whatever the folder holds at startup, so a broken version would replace
a working one (served as 503). serve() therefore runs a subclass of it whose SIGHUP handler only
forwards the signal. With plain ``uvicorn serving.main:app --workers N`` (not recommended), POST
/admin/reload only reaches the worker that gets it: signal the workers themselves (``pkill -HUP
-P <supervisor pid>``), not the supervisor, and set ``PROMETHEUS_MULTIPROC_DIR`` yourself.

Metrics with several workers: serve() points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder
(removed at exit) so /metrics sums every worker (see ``serving.metrics``); an operator-set
folder is used instead and emptied of its metric files first.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from serving.bundle import is_bundle, is_run_folder
from serving.metrics import MULTIPROC_ENV
from serving.settings import MODEL_DIR_ENV, SUPERVISOR_PID_ENV, get_settings

log = logging.getLogger(__name__)

APP = "serving.main:app"


def serve(
    model_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve ``model_dir`` (a run folder or its serving bundle) on ``host:port`` until stopped.

    Blocks; returns on SIGINT/SIGTERM. A model that fails to load does not stop the server (it
    answers 503 on /ready until a reload succeeds). Exits with status 3 if it cannot start.
    ``log_level`` applies to uvicorn's and basketcast's loggers; ``access_log`` False drops the
    per-request log line (the metrics still count every request).
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    os.environ[MODEL_DIR_ENV] = str(Path(model_dir).resolve())
    get_settings.cache_clear()
    config = uvicorn.Config(
        APP,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=30,
        log_config=log_config(),
        log_level=log_level,
        access_log=access_log,
    )
    if workers == 1:
        os.environ.pop(SUPERVISOR_PID_ENV, None)
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            sys.exit(STARTUP_FAILURE)
        return
    with _multiprocess_metrics_dir():
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
        sock = config.bind_socket()
        try:
            _supervisor_class()(config, sockets=[sock]).run()
        finally:
            sock.close()
            os.environ.pop(SUPERVISOR_PID_ENV, None)


def log_config() -> dict[str, Any]:
    """uvicorn's logging config plus the ``serving`` and ``pipeline`` loggers on its handler.

    uvicorn applies it in every worker, so reload messages ("serving model ...", refusals) are
    printed like uvicorn's own.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for name in ("serving", "pipeline"):
        config["loggers"][name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _supervisor_class() -> type:
    """uvicorn's Multiprocess supervisor whose SIGHUP reloads the workers in place."""
    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            pids = [p.pid for p in self.processes if p.pid is not None and p.exitcode is None]
            log.info("SIGHUP: asking workers %s to reload the model", pids)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)

    return Supervisor


@contextlib.contextmanager
def _multiprocess_metrics_dir() -> Iterator[Path]:
    """PROMETHEUS_MULTIPROC_DIR for the workers: the operator's (emptied) or a temporary one."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="basketcast-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


@click.command("serve")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Run folder (RUN_DIR) or its serving/ bundle; re-read on POST /admin/reload or SIGHUP.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes (one per core; SIGHUP/reload reaches all of them).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="Log level of the server.",
)
@click.option("--no-access-log", is_flag=True, help="No log line per request (metrics still count them).")
def serve_command(model_dir: Path, host: str, port: int, workers: int, log_level: str, no_access_log: bool) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn); docs at /docs.

    Reload a newly published model with POST /admin/reload or `kill -HUP <pid>`.
    """
    if not is_run_folder(model_dir) and not is_bundle(model_dir):
        log.warning("%s holds no serving bundle yet: /ready will say 503 until a reload finds one", model_dir)
    serve(model_dir, host=host, port=port, workers=workers, log_level=log_level, access_log=not no_access_log)
