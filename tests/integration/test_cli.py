"""The real CLI, end to end, on the real Instacart excerpt: ingest → train → evaluate → predict."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from tests.conftest import EXCERPT

pytestmark = pytest.mark.integration
FAST = {
    "lightgbm": {"n_estimators": 200},
    "xgboost": {"n_estimators": 100},
    "windows": {"extra_windows": 1},
    "sequence": {"enabled": True, "epochs": 2},
}


def bc(*args: str | Path, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("basketcast")
    result = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    config = root / "config.json"
    config.write_text(json.dumps(FAST))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    bc("ingest", "--source", EXCERPT, "--out", root / "data")
    result = bc("train", "--data", root / "data", "--out", root / "run", "--config", config, env=env)
    assert "run folder:" in result.stdout and "tifu_knn" in result.stdout  # the one-screen summary
    (root / "train.stdout").write_text(result.stdout)
    return {"root": root, "data": root / "data", "run": root / "run", "train_stdout": root / "train.stdout"}


def test_train_publishes_a_complete_run_folder(trained: dict[str, Path]) -> None:
    run = trained["run"]
    for name in (
        "ranker.txt",
        "basket_model.txt",
        "xgboost.json",
        "als.npz",
        "als_eval.npz",
        "roles.parquet",
        "features.json",
        "config.json",
        "manifest.json",
        "report/report.json",
        "report/report.md",
        "report/figures.html",
    ):
        assert (run / name).is_file(), name
    figures = (run / "report/figures.html").read_text()
    for title in ("Precision and recall at K", "Calibration", "feature importance"):
        assert title in figures, title
    assert not re.search(r"<script[^>]+src=[\"']?https?:", figures)  # self-contained: opens offline
    config = json.loads((run / "config.json").read_text())
    assert config["lightgbm"]["n_estimators"] == 200 and config["windows"]["extra_windows"] == 1
    manifest = json.loads((run / "manifest.json").read_text())
    data_manifest = json.loads((trained["data"] / "manifest.json").read_text())
    assert manifest["data"]["fingerprint"] == data_manifest["fingerprint"]
    assert manifest["versions"]["lightgbm"] and manifest["users"]["valid"] == 20
    report = json.loads((run / "report/report.json").read_text())
    assert set(report["methods"]) == {
        "popularity",
        "top_frequency",
        "tifu_knn",
        "als",
        "lightgbm",
        "xgboost",
        "sequence_model",
    }
    assert 0 < report["methods"]["lightgbm"]["ndcg@10"] <= 1
    assert not [p for p in trained["root"].iterdir() if p.name.startswith(".run")]


def test_train_logs_to_mlflow_and_registers_the_model(trained: dict[str, Path]) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from basketcast.pipeline.data.storage import read_manifest
    from basketcast.pipeline.workflows.registry import registered_name

    mlflow.set_tracking_uri(f"sqlite:///{trained['root'] / 'mlflow.db'}")
    client = MlflowClient()
    name = registered_name(read_manifest(trained["data"]).fingerprint)  # one registered model per data set
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 1
    # About 20 validation users: below promotion's minimum, so the version is not champion.
    assert "NOT promoted" in trained["train_stdout"].read_text()
    assert "[FAIL] enough users" in trained["train_stdout"].read_text()
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "champion")
    run_id = versions[0].run_id
    assert run_id is not None
    run = client.get_run(run_id)
    assert run.data.metrics["lightgbm.ndcg_at_10"] > 0
    assert run.data.params["lightgbm.n_estimators"] == "200"
    # Artifacts sit beside the SQLite store, not in the working directory's ./mlruns.
    assert (trained["root"] / "artifacts").is_dir()
    assert not (Path.cwd() / "mlruns").exists()


def test_evaluate_reproduces_the_training_report(trained: dict[str, Path]) -> None:
    result = bc("evaluate", "--data", trained["data"], "--model", trained["run"])
    assert "lightgbm" in result.stdout and "tifu_knn" in result.stdout
    again = json.loads((trained["run"] / "evaluation/report.json").read_text())
    original = json.loads((trained["run"] / "report/report.json").read_text())
    for method in original["methods"]:
        assert again["methods"][method] == pytest.approx(original["methods"][method], rel=1e-6), method


def test_kfold_evaluation_predicts_every_user_once(trained: dict[str, Path]) -> None:
    out = trained["root"] / "kfold"
    bc("evaluate", "--data", trained["data"], "--model", trained["run"], "--folds", "3", "--out", out)
    report = json.loads((out / "report.json").read_text())
    assert report["users"] == 100 and report["folds"] == 3


def test_predict_writes_k_rows_per_order_and_a_submission(trained: dict[str, Path]) -> None:
    preds_path = trained["root"] / "preds.parquet"
    sub_path = trained["root"] / "sub.csv"
    bc(
        "predict",
        "--data",
        trained["data"],
        "--model",
        trained["run"],
        "--eval-set",
        "train",
        "--k",
        "5",
        "--out",
        preds_path,
        "--submission",
        sub_path,
    )
    preds = pl.read_parquet(preds_path)
    assert preds.columns == [S.ORDER, S.USER, S.PRODUCT, S.SCORE, S.RANK]
    per_order = preds.group_by(S.ORDER).agg(pl.len(), pl.col(S.RANK).sort())
    assert per_order.height == 100
    assert (per_order["len"] == 5).all()
    assert all(r.to_list() == [1, 2, 3, 4, 5] for r in per_order[S.RANK])
    sub = pl.read_csv(sub_path)
    assert sub.columns == [S.ORDER, "products"] and sub.height == 100
    tokens = [t for row in sub["products"].to_list() for t in row.split()]
    assert all(t == "None" or t.isdigit() for t in tokens)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--eval-set", "test", "--k", "5"), "eval set 'test' has no orders"),
        (("--eval-set", "train", "--k", "0"), "--k must be a positive"),
    ],
)
def test_predict_bad_input(trained: dict[str, Path], args: tuple[str, ...], message: str) -> None:
    out = trained["root"] / "never.parquet"
    result = bc("predict", "--data", trained["data"], "--model", trained["run"], *args, "--out", out, ok=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_config_with_unknown_key_is_refused_and_nothing_written(trained: dict[str, Path]) -> None:
    bad = trained["root"] / "bad.json"
    bad.write_text(json.dumps({"lightgbm": {"n_trees": 5}}))
    out = trained["root"] / "never-run"
    result = bc("train", "--data", trained["data"], "--out", out, "--config", bad, ok=False)
    assert result.returncode == 2 and "lightgbm.n_trees" in result.stderr and "Extra inputs" in result.stderr
    assert not out.exists()


def test_broken_model_folder_is_refused(trained: dict[str, Path]) -> None:
    broken = trained["root"] / "broken"
    shutil.copytree(trained["run"], broken)
    (broken / "als.npz").unlink()
    result = bc(
        "predict",
        "--data",
        trained["data"],
        "--model",
        broken,
        "--eval-set",
        "train",
        "--out",
        trained["root"] / "x.parquet",
        ok=False,
    )
    assert result.returncode == 2 and "missing als.npz" in result.stderr
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "als.npz").write_bytes((trained["run"] / "als.npz").read_bytes())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 999}))
    result = bc("evaluate", "--data", trained["data"], "--model", broken, ok=False)
    assert result.returncode == 2 and "data schema 999" in result.stderr


def test_evaluate_on_other_data_is_refused(trained: dict[str, Path], tiny_kaggle) -> None:  # type: ignore[no-untyped-def]
    other = trained["root"] / "other-data"
    bc("ingest", "--source", tiny_kaggle(), "--out", other)
    result = bc("evaluate", "--data", other, "--model", trained["run"], ok=False)
    assert result.returncode == 2 and "not the data" in result.stderr
