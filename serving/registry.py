"""Serve what the model registry says: ``models:/NAME@ALIAS`` resolved through MLflow's REST API.

The serving process never imports MLflow (the serving image does not install it). It talks to
an MLflow tracking *server* (``MLFLOW_TRACKING_URI=http(s)://…``; ``mlflow server``, the compose
file's ``mlflow`` service, ``make mlflow-server``) with the standard library's HTTP client:

1. ``GET /api/2.0/mlflow/registered-models/alias?name=NAME&alias=ALIAS`` (or
   ``/model-versions/get?name=NAME&version=V`` for ``models:/NAME/V``) → the version and its run;
2. ``GET /api/2.0/mlflow/artifacts/list?run_id=…&path=serving`` (recursively) → the files of the
   serving bundle that ``basketcast train`` logged with the run (``basketcast.pipeline.workflows.registry``);
3. ``GET /get-artifact?run_uuid=…&path=…`` → each file, streamed into a temporary folder of the
   local cache, sizes checked, then renamed into place as ``CACHE/NAME/VERSION-RUN_ID`` — a
   version is immutable, so a cached one is never fetched again, and a half-fetched one is never
   seen. Listings that point outside ``serving/``, files without a size or larger than listed,
   redirects (which would carry the credentials elsewhere) and answers that are not JSON are
   refused with a RegistryError.

The cache is ``BASKETCAST_STATE_DIR/registry`` (``$XDG_STATE_HOME/basketcast/registry``).
Credentials, when the server needs them, come from MLflow's own variables:
``MLFLOW_TRACKING_TOKEN`` (Bearer) or ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
(Basic). A ``sqlite:///`` or file store has no REST API: serving by alias needs the server (the
error says so); a run folder can always be served directly.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from basketcast.pipeline.errors import BasketcastError
from basketcast.serving.bundle import MANIFEST, is_bundle

SCHEME: Final = "models:/"
BUNDLE_ARTIFACT: Final = "serving"  # where the run's serving bundle is logged in its artifacts
TRACKING_URI_ENV: Final = "MLFLOW_TRACKING_URI"
TIMEOUT_SECONDS: Final = 30.0
MAX_JSON_BYTES: Final = 64 * 1024 * 1024  # an answer of the REST API (artifact listings are paged)
MAX_BUNDLE_BYTES: Final = 256 * 1024**3  # a fetched bundle, all files together
_CHUNK: Final = 1 << 20
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # a registered model name it can serve


class RegistryError(BasketcastError):
    """The registry cannot give the model asked for (bad URI, no server, unknown alias, failed fetch)."""


@dataclass(frozen=True)
class ModelUri:
    """``models:/NAME@ALIAS`` (``alias`` set) or ``models:/NAME/VERSION`` (``version`` set)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelUri:
        """Parse a registry URI; RegistryError naming the expected forms otherwise."""
        if not text.startswith(SCHEME):
            raise RegistryError(f"{text!r}: not a registry URI (models:/NAME@ALIAS or models:/NAME/VERSION)")
        rest = text[len(SCHEME) :]
        if "@" in rest:
            name, alias = rest.split("@", 1)
            if NAME_PATTERN.fullmatch(name) and re.fullmatch(r"[A-Za-z0-9_-]{1,255}", alias):
                return cls(name, alias=alias)
        elif "/" in rest:
            name, version = rest.split("/", 1)
            if NAME_PATTERN.fullmatch(name) and version.isdigit():
                return cls(name, version=version)
        raise RegistryError(
            f"{text!r}: expected models:/NAME@ALIAS (e.g. models:/basketcast@champion) or models:/NAME/VERSION"
        )

    def __str__(self) -> str:
        return f"{SCHEME}{self.name}@{self.alias}" if self.alias is not None else f"{SCHEME}{self.name}/{self.version}"


def is_model_uri(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` names a registry model (``models:/…``) rather than a folder."""
    return str(text).startswith(SCHEME)


@dataclass(frozen=True)
class Resolved:
    """What a registry URI pointed at when it was resolved, and the local copy of its bundle."""

    uri: ModelUri
    version: str  # the registered model's version number
    run_id: str
    folder: Path  # the cached serving bundle
    tracking_uri: str
    fetched: bool  # False when the version was already in the cache


def tracking_server() -> str:
    """``MLFLOW_TRACKING_URI`` when it is an MLflow server (http/https); RegistryError otherwise."""
    uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    where = f"{TRACKING_URI_ENV}={uri!r}" if uri else f"{TRACKING_URI_ENV} is not set"
    raise RegistryError(
        f"serving a models:/ URI needs an MLflow tracking server ({where}): start one on the store "
        "(`make mlflow-server`, or `mlflow server --backend-store-uri sqlite:///…/mlflow.db`) and set "
        f"{TRACKING_URI_ENV}=http://HOST:PORT; or serve the run folder itself"
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the Authorization header to wherever they point."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise RegistryError(
            f"MLflow at {req.full_url.split('?')[0]} redirects ({code}) to {newurl.split('?')[0]}: set "
            f"{TRACKING_URI_ENV} to the server's own address (credentials are never sent to a redirect)"
        )


class RestRegistry:
    """The few MLflow REST calls serving needs (standard library HTTP, no MLflow import).

    Every failure is a RegistryError naming the server and the call: HTTP errors with MLflow's own
    error code and message, unreachable servers, redirects (refused), answers that are not JSON or
    larger than ``MAX_JSON_BYTES``, and files that do not arrive with their listed size.
    """

    def __init__(self, tracking_uri: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirects)

    def _headers(self) -> dict[str, str]:
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if token:
            return {"Authorization": f"Bearer {token}"}
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user and password is not None:
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {}

    def _open(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.tracking_uri}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self._headers())
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace")
            try:
                body = json.loads(detail)
                detail = f"{body.get('error_code', '')}: {body.get('message', detail)}"
            except ValueError:
                pass
            raise RegistryError(
                f"MLflow at {self.tracking_uri}: {path} answered {exc.code} ({detail.strip()})"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(f"MLflow at {self.tracking_uri} cannot be reached: {reason}") from None

    def get_json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            with self._open(path, params) as response:
                raw = response.read(MAX_JSON_BYTES + 1)
        except OSError as exc:  # the connection broke while reading
            raise RegistryError(f"MLflow at {self.tracking_uri}: {path}: {exc}") from None
        if len(raw) > MAX_JSON_BYTES:
            raise RegistryError(f"MLflow at {self.tracking_uri}: {path} answered more than {MAX_JSON_BYTES} bytes")
        try:
            document = json.loads(raw)
        except ValueError:
            raise RegistryError(
                f"MLflow at {self.tracking_uri}: {path} did not answer JSON (is {TRACKING_URI_ENV} an MLflow "
                f"server?): {raw[:120]!r}"
            ) from None
        if not isinstance(document, dict):
            raise RegistryError(f"MLflow at {self.tracking_uri}: {path} answered {type(document).__name__}")
        return document

    def model_version(self, uri: ModelUri) -> tuple[str, str]:
        """(version, run id) that ``uri`` names now."""
        if uri.alias is not None:
            body = self.get_json("/api/2.0/mlflow/registered-models/alias", {"name": uri.name, "alias": uri.alias})
        else:
            body = self.get_json("/api/2.0/mlflow/model-versions/get", {"name": uri.name, "version": str(uri.version)})
        version = body.get("model_version", {})
        if not version.get("run_id"):
            raise RegistryError(f"{uri}: version {version.get('version')} has no run, so no serving bundle to fetch")
        return str(version["version"]), str(version["run_id"])

    def list_files(self, run_id: str, root: str) -> list[tuple[str, int]]:
        """Every file under ``root`` of the run's artifacts (recursively): (path, size in bytes).

        Only paths inside ``root`` are followed or returned (a listing that points elsewhere, or
        back at a folder already seen, is an error), and every file must come with its size.
        """
        out: list[tuple[str, int]] = []
        pending, seen = [root], {root}
        while pending:
            folder = pending.pop()
            token: str | None = None
            while True:
                params = {"run_id": run_id, "path": folder}
                if token:
                    params["page_token"] = token
                body = self.get_json("/api/2.0/mlflow/artifacts/list", params)
                for entry in body.get("files", []):
                    path = str(entry.get("path", ""))
                    if not _inside(path, root):
                        raise RegistryError(f"run {run_id}: artifact listing of {root}/ names {path!r}, outside it")
                    if entry.get("is_dir"):
                        if path in seen:
                            raise RegistryError(f"run {run_id}: artifact listing loops back to {path!r}")
                        seen.add(path)
                        pending.append(path)
                    elif "file_size" not in entry:
                        raise RegistryError(f"run {run_id}: artifact {path!r} is listed without its size")
                    else:
                        out.append((path, int(entry["file_size"])))
                token = body.get("next_page_token")
                if not token:
                    break
        return sorted(out)

    def download(self, run_id: str, path: str, target: Path, size: int) -> None:
        """Stream one artifact file of ``size`` bytes into ``target``; RegistryError when more or
        fewer bytes arrive (the transfer stops as soon as it exceeds ``size``)."""
        written = 0
        try:
            with self._open("/get-artifact", {"run_uuid": run_id, "path": path}) as response, target.open("wb") as out:
                while chunk := response.read(_CHUNK):
                    written += len(chunk)
                    if written > size:
                        raise RegistryError(f"run {run_id}: {path} is larger than its listed {size} bytes")
                    out.write(chunk)
        except OSError as exc:
            raise RegistryError(f"run {run_id}: {path} could not be fetched to {target}: {exc}") from None
        if written != size:
            raise RegistryError(f"run {run_id}: {path} arrived with {written} of its {size} bytes")


def _inside(path: str, root: str) -> bool:
    """Whether the artifact path ``path`` lies strictly inside ``root`` (no ``..``, not absolute)."""
    parts = PurePosixPath(path).parts
    return len(parts) > 1 and parts[0] == root and ".." not in parts and not path.startswith("/")


def resolve(
    uri: ModelUri | str, cache: Path, registry: RestRegistry | None = None, max_bytes: int = MAX_BUNDLE_BYTES
) -> Resolved:
    """What ``uri`` names now, with its serving bundle in the local ``cache`` folder (fetched if absent).

    The cached copy is ``CACHE/NAME/VERSION-RUN_ID`` (a registered model deleted and created again
    restarts its version numbers; the run id tells its versions apart); it is fetched into a
    temporary folder beside it (sizes checked, at most ``max_bytes`` in all, and only when the disk
    has room) and renamed into place, so it is complete or absent. The server's cache is
    ``Settings.state_dir / "registry"``; ``registry`` defaults to the server of ``MLFLOW_TRACKING_URI``.
    """
    uri = ModelUri.parse(uri) if isinstance(uri, str) else uri
    registry = registry or RestRegistry(tracking_server())
    version, run_id = registry.model_version(uri)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", run_id) or not version.isdigit():
        raise RegistryError(f"{uri}: unexpected version {version!r} / run id {run_id!r} from {registry.tracking_uri}")
    folder = Path(cache) / uri.name / f"{version}-{run_id}"
    if is_bundle(folder):
        return Resolved(uri, version, run_id, folder, registry.tracking_uri, fetched=False)
    files = registry.list_files(run_id, BUNDLE_ARTIFACT)
    if f"{BUNDLE_ARTIFACT}/{MANIFEST}" not in dict(files):
        raise RegistryError(
            f"{uri} (version {version}, run {run_id}): the run has no {BUNDLE_ARTIFACT}/{MANIFEST} artifact — it was "
            "not logged by `basketcast train` with a serving bundle"
        )
    total = sum(size for _, size in files)
    if total > max_bytes:
        raise RegistryError(f"{uri}: its bundle is {total:,} bytes, above the limit of {max_bytes:,}")
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder.parent).free
        if total > free:
            raise RegistryError(f"{uri}: its bundle needs {total:,} bytes, {folder.parent} has {free:,} free")
        for path, size in files:
            target = tmp / PurePosixPath(path).relative_to(BUNDLE_ARTIFACT)
            target.parent.mkdir(parents=True, exist_ok=True)
            registry.download(run_id, path, target, size)
        if not is_bundle(tmp):
            raise RegistryError(f"{uri}: the fetched {BUNDLE_ARTIFACT}/ folder is not a serving bundle")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not is_bundle(folder):  # another process published the same version meanwhile: keep theirs
                raise
    except OSError as exc:
        raise RegistryError(f"{uri}: cannot write the bundle into {folder.parent}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Resolved(uri, version, run_id, folder, registry.tracking_uri, fetched=True)


class RegistrySource:
    """A server's model source for ``BASKETCAST_MODEL_URI``: each call resolves the URI again.

    ``ModelHolder`` calls :meth:`locate` at every (re)load: the alias's current version, its bundle
    fetched into the cache when new, the cached folder returned. The holder's verdict comes back
    through :meth:`settle`: only a version that was served (loaded, reloaded or unchanged) becomes
    the one :meth:`info` reports — ``/ready`` and ``/metrics`` never name a version that was
    refused — and a failure (registry unreachable, bundle broken) is kept in ``error`` while the
    served model stays.
    """

    def __init__(self, uri: str, cache: Path, registry: RestRegistry | None = None) -> None:
        self.uri = ModelUri.parse(uri)
        self.cache = Path(cache)
        self._registry = registry
        self._pending: Resolved | None = None
        self.resolved: Resolved | None = None
        self.resolved_at: float | None = None
        self.error: str | None = None

    def locate(self) -> Path:
        self._pending = None
        try:
            registry = self._registry or RestRegistry(tracking_server())
            resolved = resolve(self.uri, self.cache, registry)
        except RegistryError as exc:
            self.error = str(exc)
            raise
        self._pending = resolved
        return resolved.folder

    def settle(self, served: bool, error: str | None = None) -> None:
        """The holder's verdict on the last :meth:`locate`: ``served`` (its folder is what answers now)
        or refused with ``error``."""
        import time

        pending, self._pending = self._pending, None
        if served and pending is not None:
            self.resolved, self.resolved_at, self.error = pending, time.time(), None
        elif not served:
            self.error = error or self.error

    def info(self) -> dict[str, Any]:
        """The fields of ``basketcast.serving.schemas.RegistryModel``."""
        r = self.resolved
        return {
            "uri": str(self.uri),
            "name": self.uri.name,
            "alias": self.uri.alias,
            "version": r.version if r is not None else None,
            "run_id": r.run_id if r is not None else None,
            "tracking_uri": r.tracking_uri if r is not None else os.environ.get(TRACKING_URI_ENV, ""),
            "resolved_at": self.resolved_at,
            "error": self.error,
        }
