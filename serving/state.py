"""The model currently served, and its atomic hot reload.

``ModelHolder.model`` is a single reference. A request reads it once, at its start (the
``get_model`` dependency), and keeps that object until it has answered, so a reload never
changes the model under a request in flight: the swap is one attribute assignment and the old
model (its memory maps and ONNX sessions) lives until the last request holding it is done.

``reload()`` re-opens the model folder: same manifest version → "unchanged" (nothing loaded);
a new version that loads → swapped in, "reloaded"; a version that fails to load (``BundleError``
or any other exception) → "refused", the old model keeps serving. Publishers must replace the
folder by renaming (as ``basketcast.pipeline.data.storage.publishing_dir`` and
``basketcast.pipeline.workflows.export.export`` do); if the folder is swapped while it is
being read, the load is discarded and retried, so a reload never mixes files of two
versions.

The served model does not depend on its folder once loaded (the arrays are memory-mapped, the
ONNX sessions and the catalogue are in memory): when the folder is deleted or replaced by
something broken, the old model keeps answering and reloads are refused. ``/ready`` says so:
:meth:`ModelHolder.folder` looks at the folder on every call, ``last_reload`` keeps the last
attempt, and :meth:`ModelHolder.warnings` puts both into words.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, Request

from basketcast.serving.bundle import MANIFEST, bundle_dir, is_bundle, is_run_folder
from basketcast.serving.errors import ApiError
from basketcast.serving.model import ServingModel

log = logging.getLogger(__name__)

ReloadStatus = Literal["loaded", "reloaded", "unchanged", "refused"]
FolderState = Literal["current", "new_version", "missing", "not_a_model"]
LOAD_ATTEMPTS = 5  # a folder swapped during a load is re-read up to this many times
RETRY_SECONDS = 0.1


@dataclass(frozen=True)
class ReloadResult:
    """The outcome of a (re)load: ``model_version`` is the version served afterwards."""

    status: ReloadStatus
    model_version: str | None
    previous_version: str | None
    error: str | None = None
    at: float = 0.0  # Unix time of the attempt (set by ModelHolder.reload)
    found: str | None = None  # the version the folder's manifest named when the attempt began


@dataclass(frozen=True)
class FolderView:
    """The model folder as it is now: ``state`` (see ``basketcast.serving.schemas.ModelFolder``) and its version."""

    state: FolderState
    version: str | None


class ModelHolder:
    """Holds the served model; ``load_initial()`` at startup, ``reload()`` later (thread-safe).

    ``loader`` opens a model folder (``ServingModel.load``; tests may pass another), and
    ``on_change`` is called with every ReloadResult (metrics).
    """

    def __init__(
        self,
        model_dir: Path | None,
        loader: Callable[[Path], ServingModel] = ServingModel.load,
        on_change: Callable[[ReloadResult], None] | None = None,
        locate: Callable[[], Path] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else None
        # Where the model comes from when it is not a fixed folder: called at every (re)load, it
        # returns the folder to read (basketcast.serving.registry.RegistrySource resolves an alias and fetches
        # the bundle of a new version); an exception refuses the reload like a broken folder.
        self._locate = locate
        self._loader = loader
        self._on_change = on_change
        self._model: ServingModel | None = None
        self._lock = threading.Lock()
        self.error: str | None = "the model is not loaded yet"
        self.loaded_at: float | None = None
        self.last_reload: ReloadResult | None = None

    @property
    def model(self) -> ServingModel | None:
        """The model to answer with (read it once per request), None if none could be loaded."""
        return self._model

    def load_initial(self) -> ReloadResult:
        """Load the model at startup; a failure is recorded in ``error`` (the app still starts)."""
        result = self.reload()
        if result.status == "refused":
            log.error("no model loaded: %s", result.error)
        return result

    def reload(self) -> ReloadResult:
        """Re-open the model folder and swap to its version if it is new and loads."""
        with self._lock:
            current = self._model
            previous = current.version if current is not None else None
            located: Exception | None = None
            before = self.model_dir
            if self._locate is not None:
                try:
                    self.model_dir = Path(self._locate())
                except Exception as exc:  # the registry did not answer: keep serving what we have
                    located = exc
            found = peek_version(self.model_dir) if self.model_dir is not None else None
            try:
                if located is not None:
                    raise located
                if self.model_dir is None:
                    raise ValueError("no model folder configured (set BASKETCAST_MODEL_DIR)")
                if current is not None and found == current.version:
                    result = ReloadResult("unchanged", previous, previous)
                else:
                    model = self._load(self.model_dir)
                    if current is not None and model.version == current.version:
                        result = ReloadResult("unchanged", previous, previous)
                    else:
                        self._model = model  # the swap: one reference assignment
                        self.error = None
                        self.loaded_at = time.time()
                        status: ReloadStatus = "reloaded" if current is not None else "loaded"
                        result = ReloadResult(status, model.version, previous)
                        log.info("serving model %s from %s (was %s)", model.version, model.path, previous)
            except Exception as exc:  # a broken version of any kind is refused, never served
                message = describe_error(exc)
                if current is None:
                    self.error = message
                log.warning("model reload refused, still serving %s: %s", previous, message)
                result = ReloadResult("refused", previous, previous, message)
            if result.status == "refused" and self._locate is not None and current is not None:
                self.model_dir = before  # keep pointing at the folder that is served, not the refused one
            result = ReloadResult(
                result.status, result.model_version, result.previous_version, result.error, time.time(), found
            )
            self.last_reload = result
            if self._on_change is not None:  # under the lock: observers see the swaps in order
                self._on_change(result)
        return result

    def folder(self) -> FolderView | None:
        """What the model folder holds now (None when no folder is configured); reads only its manifest."""
        if self.model_dir is None:
            return None
        if not os.path.lexists(self.model_dir):
            return FolderView("missing", None)
        version = peek_version(self.model_dir) if is_run_folder(self.model_dir) or is_bundle(self.model_dir) else None
        if version is None:
            return FolderView("not_a_model", None)
        model = self._model
        return FolderView("current" if model is not None and version == model.version else "new_version", version)

    def warnings(self, folder: FolderView | None = None) -> list[str]:
        """What needs attention while a model is served: its folder gone or broken, a refused reload,
        a published version not loaded yet. Empty when all is well or when no model is served (then
        ``error`` says why)."""
        model = self._model
        if model is None or self.model_dir is None:
            return []
        folder = folder if folder is not None else self.folder()
        if folder is None:
            return []
        served = f"still serving {model.version} (loaded {_when(self.loaded_at)})"
        out = []
        if folder.state == "missing":
            out.append(
                f"the model folder {self.model_dir} is gone (deleted, or being replaced); {served} from memory; "
                "reloads are refused until a model is published there again"
            )
        elif folder.state == "not_a_model":
            out.append(
                f"the model folder {self.model_dir} holds no readable serving bundle any more; {served}; "
                "reloads are refused until a model is published there again"
            )
        last = self.last_reload
        # A refusal is news while the folder still holds what was refused (or nothing servable).
        refused = (
            last is not None
            and last.status == "refused"
            and (folder.state != "new_version" or last.found == folder.version)
        )
        if folder.state != "current" and refused and last is not None:
            what = f" of version {last.found}" if last.found is not None else ""
            out.append(f"the last reload{what} ({_when(last.at)}) was refused: {last.error}; {served}")
        if folder.state == "new_version" and not refused:
            out.append(
                f"the model folder holds version {folder.version}, not loaded yet: POST /admin/reload or "
                f"SIGHUP to serve it ({served})"
            )
        return out

    def _load(self, model_dir: Path) -> ServingModel:
        """Load ``model_dir``; retried when the folder was swapped (renamed) during the read."""
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            before = _identity(model_dir)
            try:
                model = self._loader(model_dir)
            except Exception:
                if attempt < LOAD_ATTEMPTS and (before is None or _identity(model_dir) != before):
                    time.sleep(RETRY_SECONDS)  # absent or replaced meanwhile: read the new folder
                    continue
                raise
            if before is not None and _identity(model_dir) == before:
                return model
            time.sleep(RETRY_SECONDS)  # swapped while loading: the files may be of two versions
        raise RuntimeError(f"{model_dir}: kept changing while being loaded ({LOAD_ATTEMPTS} attempts)")


def _when(at: float | None) -> str:
    """A Unix time as ISO 8601 UTC (seconds), for messages."""
    if at is None:
        return "at an unknown time"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def peek_version(model_dir: Path) -> str | None:
    """The version in the bundle's manifest without loading it; None if it cannot be read."""
    try:
        version = json.loads((bundle_dir(model_dir) / MANIFEST).read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(version)


def describe_error(exc: BaseException) -> str:
    """A one-line message for a load failure (BundleError messages already name the file)."""
    from basketcast.pipeline.errors import BundleError

    if isinstance(exc, BundleError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _identity(model_dir: Path) -> tuple[int, int, int] | None:
    """Which physical folder ``model_dir`` is now: (device, inode of the bundle, manifest mtime)."""
    try:
        folder = bundle_dir(model_dir)
        st = os.stat(folder)
        manifest = os.stat(folder / MANIFEST)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, manifest.st_mtime_ns)


# --- FastAPI dependencies ------------------------------------------------------------------------
async def get_holder(request: Request) -> ModelHolder | None:
    """The app's ModelHolder (set by the lifespan); None before startup."""
    holder: ModelHolder | None = getattr(request.app.state, "models", None)
    return holder


async def get_model(holder: Annotated[ModelHolder | None, Depends(get_holder)]) -> ServingModel:
    """The model for this request, read once; 503 with the reason when none is loaded."""
    model = holder.model if holder is not None else None
    if model is None:
        reason = holder.error if holder is not None else "the server is starting"
        raise ApiError(503, "model_unavailable", f"no model loaded: {reason}")
    return model


# --- reload signals ------------------------------------------------------------------------------
def install_sighup_reload(holder: ModelHolder) -> Callable[[], None] | None:
    """Reload ``holder`` on SIGHUP (in a thread, off the event loop); returns the uninstaller.

    Only in the process's main thread with a running loop (a uvicorn worker); elsewhere (e.g. the
    test client's portal thread) nothing is installed and None is returned.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return None
    loop = asyncio.get_running_loop()

    def on_sighup() -> None:
        log.info("SIGHUP: reloading the model from %s", holder.model_dir)
        loop.run_in_executor(None, holder.reload)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    except (NotImplementedError, RuntimeError, ValueError):
        return None

    def uninstall() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return uninstall


def notify_other_workers(supervisor_pid: int | None) -> bool:
    """Ask serve()'s supervisor to forward SIGHUP to every worker; False when not under one."""
    if supervisor_pid is None or os.getppid() != supervisor_pid:
        return False
    try:
        os.kill(supervisor_pid, signal.SIGHUP)
    except OSError as exc:
        log.warning("could not signal the supervisor %d: %s", supervisor_pid, exc)
        return False
    return True
