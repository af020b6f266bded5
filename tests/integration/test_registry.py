"""The registry drives serving: train → register → promote (with checks) → serve by alias → promote → reload.

Everything is real: an MLflow tracking server (``mlflow server``, SQLite store, proxied artifacts)
on a loopback port, the ``basketcast`` CLI in subprocesses, ``basketcast serve --workers 2`` that
resolves ``models:/NAME@champion`` through MLflow's REST API (the serving process imports no
MLflow), and HTTP load while the alias moves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from basketcast.pipeline.data.storage import read_manifest
from basketcast.pipeline.workflows.registry import registered_name
from basketcast.serving.registry import ModelUri, RegistryError, RestRegistry, resolve
from tests.conftest import EXCERPT
from tests.services import mlflow_server
from tests.serving.conftest import UvicornProcess, free_port, wait_for

pytestmark = pytest.mark.integration
FAST = {
    "lightgbm": {"n_estimators": 120},
    "xgboost": {"enabled": False},
    "windows": {"extra_windows": 1},
    "sequence": {"enabled": False},
}
MIN_USERS = "5"  # the excerpt's 100 shoppers leave about 20 validation users


def bc(*args: str | Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("basketcast")
    result = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if ok:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def bundle_version(run: Path) -> str:
    return str(json.loads((run / "serving" / "manifest.json").read_text())["version"])


@dataclass(frozen=True)
class Registry:
    root: Path
    url: str
    env: dict[str, str]
    name: str
    run1: Path
    run2: Path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    with mlflow_server(root / "mlflow") as url:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            "BASKETCAST_TRACKING": "mlflow",
            "XDG_STATE_HOME": str(root / "state"),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        config = root / "config.json"
        config.write_text(json.dumps(FAST))
        bc("ingest", "--source", EXCERPT, "--out", root / "data", env=env)
        for run in ("run1", "run2"):
            out = bc("train", "--data", root / "data", "--out", root / run, "--config", config, "--no-promote", env=env)
            assert "registered basketcast-" in out.stdout
        name = registered_name(read_manifest(root / "data").fingerprint)
        yield Registry(root, url, env, name, root / "run1", root / "run2")


def test_each_run_is_a_version_of_the_data_sets_model_with_its_bundle(registry: Registry) -> None:
    name, url = registry.name, registry.url
    rest = RestRegistry(url)
    body = rest.get_json("/api/2.0/mlflow/model-versions/search", {"filter": f"name='{name}'"})
    versions = sorted(body["model_versions"], key=lambda v: int(v["version"]))
    assert [v["version"] for v in versions] == ["1", "2"]
    tags = [{t["key"]: t["value"] for t in v.get("tags", [])} for v in versions]
    assert [t["basketcast.bundle_version"] for t in tags] == [
        bundle_version(registry.run1),
        bundle_version(registry.run2),
    ]
    # No alias yet (--no-promote), and the run's artifacts hold the whole serving bundle.
    with pytest.raises(RegistryError, match=r"RESOURCE_DOES_NOT_EXIST|not found"):
        rest.model_version(ModelUri(name, alias="champion"))
    files = dict(rest.list_files(versions[0]["run_id"], "serving"))
    local = {
        f"serving/{p.relative_to(Path(str(registry.run1)) / 'serving')}": p.stat().st_size
        for p in (registry.run1 / "serving").rglob("*")
        if p.is_file()
    }
    assert files == local
    assert "report/per_user.parquet" in dict(rest.list_files(versions[0]["run_id"], "report"))


def test_promotion_refuses_without_enough_users_and_moves_the_alias_with_them(registry: Registry) -> None:
    env = dict(registry.env)
    refused = bc("promote", registry.run1, "--min-users", "100000", env=env, ok=False)
    assert refused.returncode == 1
    assert "NOT promoted" in refused.stdout and "[FAIL] enough users" in refused.stdout
    assert "[ok] parity" in refused.stdout
    with pytest.raises(RegistryError):
        RestRegistry(registry.url).model_version(ModelUri(registry.name, alias="champion"))

    done = bc("promote", registry.run1, "--min-users", MIN_USERS, env=env)
    assert f"{registry.name} version 1 is now 'champion'" in done.stdout
    assert RestRegistry(registry.url).model_version(ModelUri(registry.name, alias="champion"))[0] == "1"


def test_serving_follows_the_alias_under_load_without_losing_a_request(registry: Registry, tmp_path: Path) -> None:
    env = dict(registry.env)
    name = registry.name
    uri = f"models:/{name}@champion"
    if RestRegistry(registry.url).model_version(ModelUri(name, alias="champion"))[0] != "1":
        bc("promote", "--name", name, "--version", "1", "--force", env=env)
    v1, v2 = bundle_version(registry.run1), bundle_version(registry.run2)
    port = free_port()
    args = ["-m", "basketcast.pipeline.cli", "serve", "--model", uri, "--port", str(port), "--workers", "2"]
    server = UvicornProcess(args, tmp_path / "unused", port, tmp_path / "serve.log", env)
    try:
        server.wait_ready(timeout=60)
        ready = httpx.get(f"{server.url}/ready", timeout=5).json()
        assert ready["model_version"] == v1
        assert ready["registry"]["uri"] == uri and ready["registry"]["version"] == "1"
        assert f"/registry/{name}/1-" in ready["model_dir"]

        answers: Counter[str] = Counter()
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                user = 0
                while not stop.is_set():
                    user = user % 50 + 1
                    try:
                        r = client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        answers[r.json()["model_version"]] += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: answers[v1] >= 20, "answers from version 1", timeout=30)
            promoted = bc("promote", registry.run2, "--min-users", MIN_USERS, env=env)
            assert "version 2 is now 'champion'" in promoted.stdout
            assert "[ok] not worse than the champion" in promoted.stdout
            r = httpx.post(f"{server.url}/admin/reload", timeout=120)
            assert r.status_code == 200 and r.json()["model_version"] == v2, r.text
            # Every worker reloads (SIGHUP from the supervisor); then only version 2 answers.
            wait_for(lambda: _only(server.url, v2), "every worker on version 2", timeout=60)
            settled = answers[v2]
            wait_for(lambda: answers[v2] >= settled + 20, "answers from version 2", timeout=30)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert failures == []
        assert answers[v1] > 0 and answers[v2] > 0
        ready = httpx.get(f"{server.url}/ready", timeout=5).json()
        assert ready["registry"]["version"] == "2" and f"/registry/{name}/2-" in ready["model_dir"]
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        served = {
            (s.labels["name"], s.labels["alias"], s.labels["registry_version"], s.labels.get("pid"))
            for family in text_string_to_metric_families(metrics)
            if family.name == "basketcast_model_registry_info"
            for s in family.samples
            if s.value == 1
        }
        assert {labels[:3] for labels in served} == {(name, "champion", "2")}, metrics
        assert len(served) == 2  # one series per worker (multiprocess mode labels them by pid)
    finally:
        server.stop()


def _only(url: str, version: str) -> bool:
    """Whether ten answers in a row come from ``version`` (both workers get some of them)."""
    return all(
        httpx.get(f"{url}/v1/users/{u}/recommendations", timeout=5).json()["model_version"] == version
        for u in range(1, 11)
    )


def test_score_by_alias_equals_scoring_the_run(registry: Registry, tmp_path: Path) -> None:
    env = dict(registry.env)
    name = registry.name
    champion = RestRegistry(registry.url).model_version(ModelUri(name, alias="champion"))[0]
    run = registry.run1 if champion == "1" else registry.run2
    bc("score", "--model", f"models:/{name}@champion", "--out", tmp_path / "alias.parquet", "--k", "5", env=env)
    bc("score", "--model", run, "--out", tmp_path / "run.parquet", "--k", "5", env=env)
    by_alias = pl.read_parquet(tmp_path / "alias.parquet")
    assert by_alias.height > 0
    assert by_alias.equals(pl.read_parquet(tmp_path / "run.parquet"))


def test_resolution_errors_are_clear(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = registry.name
    rest = RestRegistry(registry.url)
    with pytest.raises(RegistryError, match="alias no-such-alias not found"):
        resolve(f"models:/{name}@no-such-alias", tmp_path, rest)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(RegistryError, match="needs an MLflow tracking server"):
        resolve(f"models:/{name}@champion", tmp_path)
    with pytest.raises(RegistryError, match="cannot be reached"):
        resolve(f"models:/{name}@champion", tmp_path, RestRegistry(f"http://127.0.0.1:{free_port()}", timeout=2))
    # A cached version is served from the cache: the second resolution fetches nothing.
    first = resolve(f"models:/{name}/1", tmp_path, rest)
    again = resolve(f"models:/{name}/1", tmp_path, rest)
    assert first.fetched and not again.fetched and first.folder == again.folder
    assert not [p for p in (tmp_path / name).iterdir() if p.name.startswith(".")]  # no temporary folder left
    started = time.monotonic()
    refused = subprocess.run(
        [str(Path(sys.executable).with_name("basketcast")), "serve", "--model", f"models:/{name}@champion"],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'x.db'}"},
        timeout=60,
    )
    assert refused.returncode == 2 and "needs an MLflow tracking server" in refused.stderr
    assert "Traceback" not in refused.stderr and time.monotonic() - started < 60


def test_a_re_exported_run_is_still_found_and_the_registry_keeps_its_training_bundle(registry: Registry) -> None:
    env = dict(registry.env)
    trained = bundle_version(registry.run1)
    bc("export", "--model", registry.run1, env=env)
    assert bundle_version(registry.run1) != trained
    done = bc("promote", registry.run1, "--min-users", MIN_USERS, env=env)
    assert f"{registry.name} version 1 is now 'champion'" in done.stdout
    # What a server fetches for version 1 is the bundle logged at training time.
    rest = RestRegistry(registry.url)
    run_id = rest.model_version(ModelUri(registry.name, version="1"))[1]
    manifest = registry.root / "fetched-manifest.json"
    rest.download(
        run_id, "serving/manifest.json", manifest, dict(rest.list_files(run_id, "serving"))["serving/manifest.json"]
    )
    assert json.loads(manifest.read_text())["version"] == trained
