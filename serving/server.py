"""Run the API under uvicorn (uvloop + httptools), with one or several worker processes.

``serve(model_dir, host, port, workers)`` passes the model folder to the app through
``BASKETCAST_MODEL_DIR`` and runs ``basketcast.serving.main:app``.

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
forwards the signal. With plain ``uvicorn basketcast.serving.main:app --workers N`` (not recommended), POST
/admin/reload only reaches the worker that gets it: signal the workers themselves (``pkill -HUP
-P <supervisor pid>``), not the supervisor, and set ``PROMETHEUS_MULTIPROC_DIR`` yourself.

Before it starts, ``basketcast serve`` checks what it would serve and where (exit status 2 and
an ``error: …`` line otherwise): ``--model`` must be a model that loads (:func:`check_model`; a
data folder, an empty or missing folder is refused with the reason — a run folder caught in the
middle of being replaced is waited for), and listening on anything but loopback needs
``BASKETCAST_ADMIN_TOKEN`` (:func:`check_listen_address`), or ``/admin/reload`` would be open to
the network.

Metrics with several workers: serve() points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder
(removed at exit) so /metrics sums every worker (see ``basketcast.serving.metrics``); an operator-set
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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from basketcast.pipeline.errors import BasketcastError, BundleError
from basketcast.serving.bundle import BUNDLE, MANIFEST, RANKER, is_bundle, is_run_folder
from basketcast.serving.metrics import MULTIPROC_ENV
from basketcast.serving.registry import is_model_uri, resolve
from basketcast.serving.settings import (
    ENV_PREFIX,
    MODEL_DIR_ENV,
    MODEL_URI_ENV,
    SUPERVISOR_PID_ENV,
    get_settings,
    is_loopback_host,
)

log = logging.getLogger(__name__)

APP = "basketcast.serving.main:app"
REPLACING_WAIT_SECONDS = 5.0  # how long a run folder caught mid-replacement is waited for


class ServeError(BasketcastError):
    """The server must not start as asked (e.g. an open /admin on a network address)."""


def check_listen_address(host: str, admin_token_set: bool) -> None:
    """ServeError when ``host`` is not loopback and no admin token is configured."""
    if admin_token_set or is_loopback_host(host):
        return
    raise ServeError(
        f"refusing to listen on {host or 'every address'!r} without an admin token: /admin/reload would be "
        "open to the network. Set BASKETCAST_ADMIN_TOKEN (clients then send 'Authorization: Bearer <token>'), "
        "or listen on 127.0.0.1"
    )


def _being_replaced(path: Path) -> bool:
    """Whether ``path`` looks caught in a publication: gone, with the publisher's aside copy beside it."""
    try:
        siblings = [entry.name for entry in path.parent.iterdir()]
    except OSError:
        return False
    return any(name.startswith(f".{path.name}.old-") or name.startswith(f".{path.name}.tmp-") for name in siblings)


def not_a_model_reason(path: Path) -> str:
    """Why ``path`` is not something to serve, in one line naming what it is instead."""
    if not path.exists():
        return f"{path}: not found (pass the run folder `basketcast train --out` wrote, or its {BUNDLE}/ folder)"
    if not path.is_dir():
        return f"{path}: not a folder"
    try:
        entries = {entry.name for entry in path.iterdir()}
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror})"
    if not entries:
        return f"{path}: an empty folder, not a model (serve the run folder `basketcast train --out` wrote)"
    if "orders.parquet" in entries:
        return (
            f"{path}: a data folder (`basketcast ingest`), not a model: train one with "
            f"`basketcast train --data {path} --out RUN` and serve RUN"
        )
    if "ranker.txt" in entries:
        return (
            f"{path}: a run folder without its serving bundle ({BUNDLE}/{MANIFEST}, {BUNDLE}/{RANKER}): "
            f"write it with `basketcast export --model {path}`"
        )
    return (
        f"{path}: not a model: neither a run folder with a serving bundle ({BUNDLE}/{MANIFEST} and "
        f"{BUNDLE}/{RANKER}) nor a bundle folder ({MANIFEST} and {RANKER})"
    )


def check_model(model_dir: Path, wait: float = REPLACING_WAIT_SECONDS) -> str:
    """The version ``model_dir`` serves; BundleError with the reason when it is not a model that loads.

    A run folder caught in the middle of being replaced (absent, its publisher's aside copy beside
    it) is waited for up to ``wait`` seconds; a folder that is a model but is swapped while it is
    read is read again (``ModelHolder``). The model is loaded once, as a worker will load it, and
    dropped.
    """
    from basketcast.serving.state import ModelHolder

    path = Path(model_dir)
    deadline = time.monotonic() + wait
    while not (is_run_folder(path) or is_bundle(path)):
        if not (not path.exists() and _being_replaced(path)) or time.monotonic() > deadline:
            raise BundleError(not_a_model_reason(path))
        time.sleep(0.1)
    result = ModelHolder(path).reload()
    if result.status == "refused" or result.model_version is None:
        raise BundleError(f"{path}: the model does not load: {result.error}")
    return result.model_version


def serve(
    model_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve ``model_dir`` (a run folder, its serving bundle, or a registry URI ``models:/NAME@ALIAS``)
    on ``host:port`` until stopped.

    Blocks; returns on SIGINT/SIGTERM. A model that fails to load does not stop the server (it
    answers 503 on /ready until a reload succeeds; ``basketcast serve`` checks the model first,
    see :func:`check_model`). Exits with status 3 if it cannot start. Raises ServeError, before
    listening, for a non-loopback ``host`` without ``BASKETCAST_ADMIN_TOKEN``.
    ``log_level`` applies to uvicorn's and basketcast's loggers; ``access_log`` False drops the
    per-request log line (the metrics still count every request).
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if is_model_uri(model_dir):
        os.environ[MODEL_URI_ENV] = str(model_dir)
        os.environ.pop(MODEL_DIR_ENV, None)
    else:
        os.environ[MODEL_DIR_ENV] = str(Path(model_dir).resolve())
        os.environ.pop(MODEL_URI_ENV, None)
    get_settings.cache_clear()
    check_listen_address(host, get_settings().admin_token is not None)
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
    """uvicorn's logging config plus the ``basketcast.serving`` and ``basketcast.pipeline`` loggers on its handler.

    uvicorn applies it in every worker, so reload messages ("serving model ...", refusals) are
    printed like uvicorn's own.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for name in ("basketcast.serving", "basketcast.pipeline"):
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
    "model",
    required=True,
    help="Run folder (RUN_DIR) or its serving/ bundle, or a registry alias models:/NAME@ALIAS (MLflow server at "
    "MLFLOW_TRACKING_URI); re-read (the alias re-resolved) on POST /admin/reload or SIGHUP.",
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
def serve_command(model: str, host: str, port: int, workers: int, log_level: str, no_access_log: bool) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn); docs at /docs.

    Reload a newly published model with POST /admin/reload or `kill -HUP <pid>`. Refuses to start
    (exit status 2) when --model is not a model that loads, or when --host is not loopback and
    BASKETCAST_ADMIN_TOKEN is not set.
    """
    try:
        get_settings.cache_clear()
        check_listen_address(host, get_settings().admin_token is not None)
        if is_model_uri(model):
            resolved = resolve(
                model, get_settings().state_dir / "registry"
            )  # fetched once here, cached for the workers
            version = check_model(resolved.folder)
            log.info("%s is version %s (run %s)", model, resolved.version, resolved.run_id)
        else:
            version = check_model(Path(model))
    except BasketcastError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ValidationError as exc:  # a BASKETCAST_* variable with a bad value
        problems = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        click.echo(f"error: invalid setting: {problems}", err=True)
        sys.exit(2)
    log.info("serving %s (version %s) on %s:%d", model, version, host, port)
    serve(
        model if is_model_uri(model) else Path(model),
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=not no_access_log,
    )
