"""Export parity (LightGBM vs ONNX), the snapshot, and batch scoring against per-user scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from pipeline.data import schema as S
from pipeline.errors import BundleError
from pipeline.workflows.export import export, float32_thresholds, parity, to_onnx
from pipeline.workflows.run_folder import load_run
from serving.batch import score_users, top_k_per_group
from serving.model import Context, ServingModel

pytestmark = pytest.mark.integration
CTX = Context(dow=2, hour=14)


def test_float32_threshold_rounding_keeps_every_prediction() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(scale=0.5, size=4000) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15}, lgb.Dataset(X, y), 60)
    rounded = float32_thresholds(booster)
    np.testing.assert_array_equal(booster.predict(X), rounded.predict(X))
    import onnxruntime as ort

    sess = ort.InferenceSession(to_onnx(booster), providers=["CPUExecutionProvider"])
    onnx_prob = sess.run(None, {"input": X})[1][:, 1]
    assert np.max(np.abs(onnx_prob - booster.predict(X))) < 1e-5


def test_training_publishes_a_parity_checked_bundle(excerpt_run: dict[str, Path]) -> None:
    manifest = json.loads((excerpt_run["run"] / "serving" / "manifest.json").read_text())
    check = manifest["parity"]
    assert check["rows"] >= min(10_000, manifest["rows"]) and check["rows_with_nan"] > 0
    assert check["max_abs_diff_ranking"] <= 1e-4 and check["max_abs_diff_basket"] <= 1e-4
    assert check["users_with_different_top10"] == 0
    assert manifest["users"] == 100
    run_manifest = json.loads((excerpt_run["run"] / "manifest.json").read_text())
    assert run_manifest["serving"]["version"] == manifest["version"]


def test_parity_recomputed_against_the_native_models(excerpt_run: dict[str, Path]) -> None:
    run = load_run(excerpt_run["run"])
    check = parity(ServingModel.load(excerpt_run["run"]), run.rankers)
    assert check.max_abs_diff_ranking <= 1e-4 and check.users_with_different_top10 == 0


def test_snapshot_holds_each_users_history_products(excerpt_run: dict[str, Path]) -> None:
    model = ServingModel.load(excerpt_run["run"])
    data_lines = pl.read_parquet(excerpt_run["data"] / "order_products.parquet").join(
        pl.read_parquet(excerpt_run["data"] / "orders.parquet").select(S.ORDER, S.USER), on=S.ORDER
    )
    user = int(model.users[0])
    bought = set(data_lines.filter(pl.col(S.USER) == user)[S.PRODUCT].to_list())
    rows = model.rows(user)
    assert rows is not None
    snap = set(np.asarray(model.products[rows])[np.asarray(model.repeat[rows])].tolist())
    assert snap == bought  # including the train order: the snapshot is cut after the last order


def test_batch_scores_equal_per_user_scores(excerpt_run: dict[str, Path], tmp_path: Path) -> None:
    model = ServingModel.load(excerpt_run["run"])
    users = np.asarray(model.users[:37])
    out = tmp_path / "scores.parquet"
    report = score_users(model, np.r_[users, [999_999_999]], out, k=10, ctx=CTX, chunk_users=8)
    assert report.scored_users == 37 and report.unknown_users == 1 and report.unknown_examples == [999_999_999]
    frame = pl.read_parquet(out)
    assert frame.columns == [S.USER, S.PRODUCT, S.SCORE, S.RANK]
    for u in users:
        mine = frame.filter(pl.col(S.USER) == int(u)).sort(S.RANK)
        one = model.recommend(int(u), 10, CTX)
        assert mine[S.PRODUCT].to_list() == one.products.tolist()
        np.testing.assert_allclose(mine[S.SCORE].to_numpy(), one.scores, rtol=1e-6)
    cold = frame.filter(pl.col(S.USER) == 999_999_999)
    assert cold[S.PRODUCT].to_list() == model.popular_products[:10].tolist()
    skipped = score_users(
        model, np.array([999_999_999], np.uint32), tmp_path / "s.parquet", k=5, ctx=CTX, unknown="skip"
    )
    assert skipped.output_rows == 0 and pl.read_parquet(tmp_path / "s.parquet").height == 0


def test_top_k_per_group_ties_by_product() -> None:
    groups = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.2], np.float32)
    products = np.array([30, 20, 10, 7, 8], np.uint32)
    assert top_k_per_group(groups, scores, products, 2).tolist() == [1, 2, 4, 3]


def test_failed_batch_leaves_no_output(
    excerpt_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ServingModel.load(excerpt_run["run"])
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous")
    calls = {"n": 0}
    real = model.rank_scores

    def fail_second(X: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("simulated")
        return real(X)

    monkeypatch.setattr(model, "rank_scores", fail_second)
    with pytest.raises(MemoryError):
        score_users(model, None, out, k=5, ctx=CTX, chunk_users=10)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


def test_score_cli_reports_unknown_users_and_bad_files(excerpt_run: dict[str, Path], tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("basketcast")
    users = tmp_path / "users.parquet"
    pl.DataFrame({S.USER: [1, 2, 424242]}).write_parquet(users)
    out = tmp_path / "preds.parquet"
    result = subprocess.run(
        [str(exe), "score", "--model", str(excerpt_run["run"]), "--users", str(users), "--out", str(out), "--k", "5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "1 unknown user ids given the cold-start list, e.g. [424242]" in result.stdout
    assert pl.read_parquet(out).height == 15
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"customer": [1]}).write_parquet(bad)
    result = subprocess.run(
        [
            str(exe),
            "score",
            "--model",
            str(excerpt_run["run"]),
            "--users",
            str(bad),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "column user_id: missing" in result.stderr


def test_corrupt_snapshot_is_refused_with_the_file_named(excerpt_run: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(excerpt_run["run"], copy)
    base = copy / "serving" / "base.npy"
    good = base.read_bytes()
    base.write_bytes(good[: len(good) // 2])
    with pytest.raises(BundleError, match=r"base\.npy: corrupt or truncated"):
        ServingModel.load(copy)
    base.write_bytes(good)
    assert ServingModel.load(copy).version
    (copy / "serving" / "users.npy").unlink()
    with pytest.raises(BundleError, match=r"users\.npy: not found"):
        ServingModel.load(copy)


def test_export_republishes_the_run_with_a_new_version(excerpt_run: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(excerpt_run["run"], copy)
    before = json.loads((copy / "serving" / "manifest.json").read_text())["version"]
    inode = os.stat(copy / "ranker.txt").st_ino
    manifest = export(copy, excerpt_run["data"])
    assert manifest.version != before
    assert (copy / "report" / "report.json").is_file()
    assert os.stat(copy / "ranker.txt").st_ino == inode  # unchanged files are hard links, not copies
    assert ServingModel.load(copy).version == manifest.version


def test_recommend_many_equals_one_by_one(excerpt_run: dict[str, Path]) -> None:
    model = ServingModel.load(excerpt_run["run"])
    ids = [int(model.users[0]), 999_999_999, int(model.users[5]), int(model.users[0]), int(model.users[-1])]
    many = model.recommend_many(ids, 10, CTX)
    assert [r.user_id for r in many] == ids  # request order, duplicates kept
    for user, got in zip(ids, many, strict=True):
        one = model.recommend(user, 10, CTX)
        assert got.strategy == one.strategy
        assert got.products.tolist() == one.products.tolist()
        np.testing.assert_allclose(got.scores, one.scores, rtol=1e-6)
    assert many[1].strategy == "popular"
