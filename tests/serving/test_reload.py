"""Loading failures name the file; reload swaps versions atomically and refuses broken ones."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from basketcast.pipeline.errors import BundleError
from basketcast.serving.bundle import BUNDLE, MANIFEST
from basketcast.serving.main import create_app
from basketcast.serving.model import Context, ServingModel
from basketcast.serving.settings import Settings
from basketcast.serving.state import ModelHolder, ReloadResult
from tests.serving.conftest import publish, set_version, truncate, version_of


def _delete(name: str) -> Callable[[Path], None]:
    def change(bundle: Path) -> None:
        (bundle / name).unlink()

    return change


def _truncate(name: str) -> Callable[[Path], None]:
    def change(bundle: Path) -> None:
        data = (bundle / name).read_bytes()
        (bundle / name).write_bytes(data[: len(data) // 2])

    return change


def _garbage(name: str) -> Callable[[Path], None]:
    def change(bundle: Path) -> None:
        (bundle / name).write_bytes(b"not what you think")

    return change


@pytest.mark.parametrize(
    "name, change",
    [
        ("base.npy", _delete("base.npy")),
        ("base.npy", _truncate("base.npy")),
        ("products.npy", _garbage("products.npy")),
        ("offsets.npy", _truncate("offsets.npy")),
        ("manifest.json", _delete("manifest.json")),
        ("manifest.json", _garbage("manifest.json")),
        ("ranker.onnx", _truncate("ranker.onnx")),
        ("basket.onnx", _delete("basket.onnx")),
        ("catalog.parquet", _garbage("catalog.parquet")),
    ],
)
def test_a_corrupt_or_missing_file_fails_loading_with_its_name(
    model_dir: Path, name: str, change: Callable[[Path], None]
) -> None:
    change(model_dir / BUNDLE)
    with pytest.raises(BundleError) as info:
        ServingModel.load(model_dir)
    assert name in str(info.value)


def test_ready_reports_the_broken_file(model_dir: Path) -> None:
    _truncate("repeat.npy")(model_dir / BUNDLE)
    app = create_app(Settings(model_dir=model_dir, reload_on_sighup=False))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 503 and "repeat.npy" in ready.json()["error"]
        assert "repeat.npy" in c.get("/v1/users/1/recommendations").json()["error"]["message"]


def test_holder_reload_semantics(model_dir: Path) -> None:
    seen: list[ReloadResult] = []
    holder = ModelHolder(model_dir, on_change=seen.append)
    first = holder.load_initial()
    v1 = version_of(model_dir)
    assert first.status == "loaded" and first.model_version == v1 and holder.error is None
    model1 = holder.model
    assert holder.reload().status == "unchanged" and holder.model is model1

    publish(model_dir, set_version("v2"))
    result = holder.reload()
    assert (result.status, result.model_version, result.previous_version) == ("reloaded", "v2", v1)
    model2 = holder.model
    assert model2 is not None and model2 is not model1
    # the old object still answers (a request in flight keeps the model it started with)
    assert model1 is not None and model1.recommend(int(model1.users[0]), 5, Context(dow=1, hour=10)).products.size == 5

    publish(model_dir, truncate("base.npy"))
    refused = holder.reload()
    assert refused.status == "refused" and refused.model_version == "v2"
    assert refused.error is not None and "base.npy" in refused.error
    assert holder.model is model2 and holder.error is None  # still serving v2
    assert [r.status for r in seen] == ["loaded", "unchanged", "reloaded", "refused"]


def test_holder_without_a_model_recovers_on_reload(tmp_path: Path, trained_run: Path) -> None:
    target = tmp_path / "run"
    holder = ModelHolder(target)
    assert holder.load_initial().status == "refused" and holder.model is None
    assert holder.error is not None and str(target) in holder.error
    shutil.copytree(trained_run, target)
    assert holder.reload().status == "loaded" and holder.model is not None


def test_admin_reload_swaps_refuses_and_keeps_serving(model_dir: Path) -> None:
    app = create_app(Settings(model_dir=model_dir, reload_on_sighup=False))
    v1 = version_of(model_dir)
    with TestClient(app) as c:
        r = c.post("/admin/reload")
        assert r.status_code == 200 and r.json()["status"] == "unchanged" and r.json()["model_version"] == v1

        publish(model_dir, set_version("v2"))
        r = c.post("/admin/reload")
        assert r.status_code == 200
        assert {k: r.json()[k] for k in ("status", "model_version", "previous_version")} == {
            "status": "reloaded",
            "model_version": "v2",
            "previous_version": v1,
        }
        assert c.get("/ready").json()["model_version"] == "v2"
        assert c.get("/v1/users/1/recommendations").json()["model_version"] == "v2"

        publish(model_dir, truncate("base.npy"))
        r = c.post("/admin/reload")
        assert r.status_code == 409
        error = r.json()["error"]
        assert error["code"] == "reload_refused" and error["model_version"] == "v2"
        assert "base.npy" in error["message"] and "still serving v2" in error["message"]
        rec = c.get("/v1/users/1/recommendations")
        assert rec.status_code == 200 and rec.json()["model_version"] == "v2"
        assert c.get("/ready").json()["model_version"] == "v2"

        metrics = c.get("/metrics").text
        for result, n in (("loaded", 1), ("unchanged", 1), ("reloaded", 1), ("refused", 1)):
            assert f'basketcast_model_reloads_total{{result="{result}"}} {n}.0' in metrics
        assert 'basketcast_model_info{version="v2"} 1.0' in metrics
        assert f'basketcast_model_info{{version="{v1}"}} 0.0' in metrics


def test_a_manifest_naming_another_version_of_the_same_files_is_a_new_version(model_dir: Path) -> None:
    holder = ModelHolder(model_dir)
    holder.load_initial()
    path = model_dir / BUNDLE / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["shapes"]["base"] = [1, 1]  # inconsistent with base.npy: refused, named
    manifest["version"] = "v-bad-shapes"
    path.write_text(json.dumps(manifest))
    result = holder.reload()
    assert result.status == "refused" and result.error is not None and "base.npy" in result.error


def test_a_folder_swapped_during_the_load_is_read_again(model_dir: Path) -> None:
    calls: list[str] = []

    def loader(path: Path) -> ServingModel:
        if not calls:  # a publisher swaps the folder while this first load reads it
            publish(model_dir, set_version("v-swapped"))
        model = ServingModel.load(path)
        calls.append(model.version)
        return model

    holder = ModelHolder(model_dir, loader=loader)
    result = holder.load_initial()
    assert result.status == "loaded" and result.model_version == "v-swapped"
    assert len(calls) == 2  # the first (possibly mixed) read was discarded
