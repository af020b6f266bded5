"""basketcast.serving.registry against a scripted stand-in for MLflow's REST API on loopback (real HTTP, real files).

The happy path against a real ``mlflow server`` is in tests/integration/test_registry.py; here the
server answers what a broken, hostile or confused one could: listings that point outside
``serving/``, files larger than listed or without a size, answers that are not JSON, redirects,
a registered model re-created (same version number, another run), and a version whose bundle does
not load.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from basketcast.serving.bundle import BUNDLE, MANIFEST, RANKER
from basketcast.serving.registry import ModelUri, RegistryError, RegistrySource, RestRegistry, resolve
from basketcast.serving.state import ModelHolder

NAME = "shop"


@dataclass
class Script:
    """What the stand-in answers: alias → (version, run); run → {artifact path: bytes}; overrides."""

    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    listing: Callable[[str, str], list[dict[str, object]]] | None = None  # (run, path) → entries
    raw: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)  # path → answer
    sizes: dict[str, int] = field(default_factory=dict)  # artifact path → listed size (default: true)
    requests: list[str] = field(default_factory=list)


def _listing(script: Script, run: str, path: str) -> list[dict[str, object]]:
    if script.listing is not None:
        return script.listing(run, path)
    prefix = path.rstrip("/") + "/"
    entries: dict[str, dict[str, object]] = {}
    for name, data in script.files.get(run, {}).items():
        if not name.startswith(prefix):
            continue
        head = name[len(prefix) :].split("/", 1)
        child = prefix + head[0]
        if len(head) > 1:
            entries[child] = {"path": child, "is_dir": True}
        else:
            entries[child] = {"path": child, "is_dir": False, "file_size": script.sizes.get(child, len(data))}
    return list(entries.values())


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {"Content-Type": "application/json"}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urllib.parse.urlparse(self.path)
            q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            script.requests.append(url.path)
            if url.path in script.raw:
                status, body, headers = script.raw[url.path]
                self.answer(status, body, headers)
            elif url.path == "/api/2.0/mlflow/registered-models/alias":
                if q["alias"] not in script.aliases:
                    error = {"error_code": "INVALID_PARAMETER_VALUE", "message": f"alias {q['alias']} not found"}
                    self.answer(400, json.dumps(error).encode())
                    return
                version, run = script.aliases[q["alias"]]
                body2 = {"model_version": {"name": q["name"], "version": version, "run_id": run}}
                self.answer(200, json.dumps(body2).encode())
            elif url.path == "/api/2.0/mlflow/artifacts/list":
                self.answer(200, json.dumps({"files": _listing(script, q["run_id"], q["path"])}).encode())
            elif url.path == "/get-artifact":
                data = script.files.get(q["run_uuid"], {}).get(q["path"])
                if data is None:
                    self.answer(404, b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such file"}')
                else:
                    self.answer(200, data, {"Content-Type": "application/octet-stream"})
            else:
                self.answer(404, b"{}")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def bundle_files(folder: Path) -> dict[str, bytes]:
    return {f"{BUNDLE}/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tiny_bundle() -> dict[str, bytes]:
    return {f"{BUNDLE}/{MANIFEST}": b'{"version": "x"}', f"{BUNDLE}/{RANKER}": b"onnx", f"{BUNDLE}/sub/a.npy": b"123"}


def no_leftovers(cache: Path) -> bool:
    return not [p for p in cache.rglob(".*") if ".tmp-" in p.name]


def test_a_version_is_fetched_once_into_a_folder_named_by_version_and_run(
    server: tuple[str, Script], tmp_path: Path
) -> None:
    url, script = server
    script.aliases["champion"] = ("3", "run-a")
    script.files["run-a"] = tiny_bundle()
    rest = RestRegistry(url)
    first = resolve(f"models:/{NAME}@champion", tmp_path, rest)
    assert first.fetched and first.folder == tmp_path / NAME / "3-run-a"
    assert (first.folder / "sub" / "a.npy").read_bytes() == b"123"
    fetches = script.requests.count("/get-artifact")
    again = resolve(f"models:/{NAME}@champion", tmp_path, rest)
    assert not again.fetched and script.requests.count("/get-artifact") == fetches
    # The model deleted and registered again: version 3 is now another run, fetched anew.
    script.aliases["champion"] = ("3", "run-b")
    script.files["run-b"] = {**tiny_bundle(), f"{BUNDLE}/sub/a.npy": b"456"}
    other = resolve(f"models:/{NAME}@champion", tmp_path, rest)
    assert other.fetched and (other.folder / "sub" / "a.npy").read_bytes() == b"456"
    assert (first.folder / "sub" / "a.npy").read_bytes() == b"123"
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ([{"path": "elsewhere/x", "is_dir": False, "file_size": 1}], "outside it"),
        ([{"path": "serving/../../etc/passwd", "is_dir": False, "file_size": 1}], "outside it"),
        ([{"path": "serving/manifest.json", "is_dir": False}], "without its size"),
        ([{"path": "serving", "is_dir": True}], "outside it"),
    ],
)
def test_listings_outside_the_bundle_or_without_sizes_are_refused(
    server: tuple[str, Script], tmp_path: Path, listing: list[dict[str, object]], message: str
) -> None:
    url, script = server
    script.aliases["champion"] = ("1", "run-a")
    script.listing = lambda run, path: listing
    with pytest.raises(RegistryError, match=message):
        resolve(f"models:/{NAME}@champion", tmp_path, RestRegistry(url))
    assert not (tmp_path / NAME).exists() or not any((tmp_path / NAME).iterdir())


def test_a_listing_that_loops_is_refused(server: tuple[str, Script], tmp_path: Path) -> None:
    url, script = server
    script.aliases["champion"] = ("1", "run-a")
    script.listing = lambda run, path: [{"path": "serving/again", "is_dir": True}]
    with pytest.raises(RegistryError, match="loops back"):
        resolve(f"models:/{NAME}@champion", tmp_path, RestRegistry(url))


@pytest.mark.parametrize("listed", [1, 10])
def test_a_file_of_another_size_than_listed_is_refused_and_nothing_is_left(
    server: tuple[str, Script], tmp_path: Path, listed: int
) -> None:
    url, script = server
    script.aliases["champion"] = ("1", "run-a")
    script.files["run-a"] = tiny_bundle()
    script.sizes[f"{BUNDLE}/sub/a.npy"] = listed  # the file has 3 bytes
    with pytest.raises(RegistryError, match=r"larger than its listed 1 bytes|arrived with 3 of its 10 bytes"):
        resolve(f"models:/{NAME}@champion", tmp_path, RestRegistry(url))
    assert not (tmp_path / NAME / "1-run-a").exists() and no_leftovers(tmp_path)


def test_a_bundle_above_the_limit_is_not_fetched(server: tuple[str, Script], tmp_path: Path) -> None:
    url, script = server
    script.aliases["champion"] = ("1", "run-a")
    script.files["run-a"] = tiny_bundle()
    with pytest.raises(RegistryError, match="above the limit of 10"):
        resolve(f"models:/{NAME}@champion", tmp_path, RestRegistry(url), max_bytes=10)
    assert "/get-artifact" not in script.requests


def test_answers_that_are_not_json_and_redirects_are_refused(server: tuple[str, Script], tmp_path: Path) -> None:
    url, script = server
    script.raw["/api/2.0/mlflow/registered-models/alias"] = (200, b"<html>login</html>", {"Content-Type": "text/html"})
    with pytest.raises(RegistryError, match="did not answer JSON"):
        resolve(f"models:/{NAME}@champion", tmp_path, RestRegistry(url))
    script.raw["/api/2.0/mlflow/registered-models/alias"] = (302, b"", {"Location": "http://example.com/steal"})
    with pytest.raises(RegistryError, match="redirects"):
        resolve(f"models:/{NAME}@champion", tmp_path, RestRegistry(url))


def test_a_version_that_does_not_load_is_refused_and_ready_keeps_naming_the_served_one(
    server: tuple[str, Script], tmp_path: Path, trained_run: Path
) -> None:
    url, script = server
    script.files["good"] = bundle_files(trained_run / BUNDLE)
    broken = dict(script.files["good"])
    broken[f"{BUNDLE}/{MANIFEST}"] = b'{"version": "broken"'
    script.files["broken"] = broken
    script.aliases["champion"] = ("1", "good")
    source = RegistrySource(f"models:/{NAME}@champion", tmp_path, RestRegistry(url))

    def settle(result: object) -> None:
        source.settle(result.status != "refused", result.error)  # type: ignore[attr-defined]

    holder = ModelHolder(None, on_change=settle, locate=source.locate)
    assert holder.load_initial().status == "loaded"
    served = holder.model
    assert served is not None and source.info()["version"] == "1"
    assert holder.model_dir == tmp_path / NAME / "1-good"

    script.aliases["champion"] = ("2", "broken")
    result = holder.reload()
    assert result.status == "refused" and holder.model is served
    assert holder.model_dir == tmp_path / NAME / "1-good"  # not the refused folder
    info = source.info()
    assert info["version"] == "1" and info["run_id"] == "good" and info["error"]

    script.aliases["champion"] = ("1", "good")  # rolled back: served again, the error cleared
    assert holder.reload().status == "unchanged"
    assert source.info()["error"] is None

    assert ModelUri.parse(f"models:/{NAME}/7") == ModelUri(NAME, version="7")
    with pytest.raises(RegistryError, match="expected models:/NAME@ALIAS"):
        ModelUri.parse("models:/bad name@champion")
