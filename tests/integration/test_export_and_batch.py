"""Export parity (LightGBM vs ONNX), the snapshot, and batch scoring against per-user scores."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from basketcast.features.build import FEATURE_NAMES
from basketcast.features.history import order_lines
from basketcast.pipeline.config import TrainConfig
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.errors import BundleError, ExportError
from basketcast.pipeline.workflows.export import (
    PARITY_CHUNK_ROWS,
    PARITY_CONTEXTS,
    TOLERANCE,
    export,
    float32_thresholds,
    latest_history,
    parity,
    to_onnx,
    write_bundle,
)
from basketcast.pipeline.workflows.run import train
from basketcast.pipeline.workflows.run_folder import load_run
from basketcast.serving.batch import score_users, top_k_per_group
from basketcast.serving.model import Context, ServingModel
from tests.conftest import FAST_TRAIN

pytestmark = pytest.mark.integration
CTX = Context(dow=2, hour=14)


def _onnx_probabilities(model: bytes, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxmltools' label shape warning
    out = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"]).run(None, {"input": X})
    return np.asarray(out[-1])[:, 1]


def _edge_rows(booster: Any, X: np.ndarray, splits: int = 400) -> np.ndarray:
    """Copies of real rows with one feature set to float32(t) for splits whose float64 threshold t
    lies just below its nearest float32: LightGBM sends such a value right (v > t), an ONNX
    TreeEnsemble holding float32(t) sends it left (v <= float32(t))."""
    found: list[tuple[int, float]] = []

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            t = float(node["threshold"])
            if float(np.float32(t)) > t:
                found.append((int(node["split_feature"]), float(np.float32(t))))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    rng = np.random.default_rng(0)
    chosen = [found[i] for i in rng.choice(len(found), size=min(splits, len(found)), replace=False)]
    base = X[rng.choice(X.shape[0], size=len(chosen))]
    for row, (feature, value) in zip(base, chosen, strict=True):
        row[feature] = value
    return base


def test_float32_threshold_rounding_keeps_every_prediction(excerpt_run: dict[str, Path]) -> None:
    """On the real excerpt's snapshot rows plus copies of them with one feature exactly at a
    float32 value between a split's float64 threshold and its float32 rounding: converted as is,
    the binary model is off on such rows (they take the other branch); rounded first, it agrees
    to 1e-5 — so this fails if ``to_onnx`` skips the rounding. The rounding itself changes no
    LightGBM prediction on float32 inputs."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = load_run(excerpt_run["run"]).rankers.basket
    model = ServingModel.load(excerpt_run["run"])
    X = np.concatenate([model.features(np.arange(model.base.shape[0]), ctx) for ctx in (CTX, Context(6, 22, 30.0))])
    assert np.isnan(X).any(axis=1).sum() > 1000  # NaN rows take the missing-value branches too
    X = np.concatenate([X, _edge_rows(booster, X)]).astype(np.float32)
    native = booster.predict(X)
    np.testing.assert_array_equal(float32_thresholds(booster).predict(X), native)
    types = [("input", FloatTensorType([None, booster.num_feature()]))]
    unrounded = convert_lightgbm(booster, initial_types=types, zipmap=False, target_opset=15).SerializeToString()
    assert np.max(np.abs(_onnx_probabilities(unrounded, X) - native)) > 1e-4
    assert np.max(np.abs(_onnx_probabilities(to_onnx(booster), X) - native)) <= 1e-5
    # The same booster converts to the same bytes (onnxmltools alone names the graph at random).
    assert to_onnx(booster) == to_onnx(booster)


def test_training_publishes_a_parity_checked_bundle(excerpt_run: dict[str, Path]) -> None:
    manifest = json.loads((excerpt_run["run"] / "serving" / "manifest.json").read_text())
    check = manifest["parity"]
    # Every row of every user of the snapshot, at each request context.
    assert check["rows"] == manifest["rows"] and check["users"] == manifest["users"]
    assert check["contexts"] == len(PARITY_CONTEXTS) >= 3 and check["rows_with_nan"] > 0
    assert check["max_abs_diff_ranking"] <= 1e-4 and check["max_abs_diff_basket"] <= 1e-4
    assert check["users_with_different_top10"] == 0
    assert manifest["users"] == 100
    run_manifest = json.loads((excerpt_run["run"] / "manifest.json").read_text())
    assert run_manifest["serving"]["version"] == manifest["version"]


def test_parity_recomputed_against_the_native_models(excerpt_run: dict[str, Path]) -> None:
    run = load_run(excerpt_run["run"])
    model = ServingModel.load(excerpt_run["run"])
    check = parity(model, run.rankers)
    assert check.max_abs_diff_ranking <= 1e-4 and check.users_with_different_top10 == 0
    assert (check.rows, check.users, check.contexts) == (model.base.shape[0], model.users.size, len(PARITY_CONTEXTS))
    # In chunks of a few users (≥ 1 whole user each) the same rows are compared.
    assert parity(model, run.rankers, chunk_rows=500) == check
    assert parity(model, run.rankers, chunk_rows=1) == check


class _Perturbed:
    """A LightGBM booster whose ``predict`` negates the scores of the rows ``where(X)`` selects
    (everything else, e.g. the ONNX conversion, is the real booster's)."""

    def __init__(self, booster: Any, where: Callable[[np.ndarray], np.ndarray]) -> None:
        self.booster = booster
        self.where = where

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.array(self.booster.predict(X), dtype=np.float64)
        out[self.where(X)] *= -1.0
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.booster, name)


def _last_user_on_saturdays(model: ServingModel) -> Callable[[np.ndarray], np.ndarray]:
    """Selects the rows of the snapshot's last user, requested with dow = 6."""
    rows = model.rows(int(model.users[-1]))
    assert rows is not None
    n_base, dow = model.base.shape[1], FEATURE_NAMES.index("ctx_dow")
    mine = {row.tobytes() for row in np.asarray(model.base[rows])}

    def where(X: np.ndarray) -> np.ndarray:
        base = np.ascontiguousarray(X[:, :n_base])
        return (X[:, dow] == 6) & np.fromiter((r.tobytes() in mine for r in base), bool, X.shape[0])

    return where


def test_parity_checks_every_user_at_every_context(excerpt_run: dict[str, Path], tmp_path: Path) -> None:
    """Rankers whose native scores differ only for the last user and only on Saturdays: caught
    (whatever the chunking), and write_bundle refuses to write the bundle."""
    run = load_run(excerpt_run["run"])
    model = ServingModel.load(excerpt_run["run"])
    broken = replace(run.rankers, ranking=cast(Any, _Perturbed(run.rankers.ranking, _last_user_on_saturdays(model))))
    assert any(ctx.dow == 6 for ctx in PARITY_CONTEXTS)
    for chunk_rows in (PARITY_CHUNK_ROWS, 500):
        check = parity(model, broken, chunk_rows=chunk_rows)
        assert check.users_with_different_top10 == 1 and check.max_abs_diff_ranking > TOLERANCE
        assert check.max_abs_diff_basket <= 1e-4  # the basket model is untouched
    weekdays = tuple(ctx for ctx in PARITY_CONTEXTS if ctx.dow != 6)
    assert parity(model, broken, contexts=weekdays).users_with_different_top10 == 0  # only Saturdays differ

    data = read_dataset(excerpt_run["data"])
    with pytest.raises(ExportError, match="differs from LightGBM"):
        write_bundle(
            tmp_path / "bundle",
            data,
            latest_history(data, order_lines(data)),
            broken,
            run.als(latest=True),
            run.config,
            network=run.network(),
        )


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` → the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_failed_parity_keeps_the_published_run_folder(
    excerpt_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`basketcast export` and `basketcast train` over a published run, failing at the parity
    check (the ONNX is converted from a model whose leaf values are 1 % off, so it differs on
    every row, whatever the data): the run folder stays byte-identical."""
    import shutil

    import lightgbm as lgb

    import basketcast.pipeline.workflows.export as export_module
    from basketcast.pipeline.cli import main

    def leaves_off(booster: lgb.Booster) -> lgb.Booster:
        lines = []
        for line in booster.model_to_string().split("\n"):
            if line.startswith("leaf_value="):
                line = "leaf_value=" + " ".join(repr(float(v) * 1.01 + 1e-3) for v in line[11:].split(" "))
            if not line.startswith("tree_sizes="):  # byte offsets the new numbers change
                lines.append(line)
        return lgb.Booster(model_str="\n".join(lines))

    copy = tmp_path / "runs" / "run"
    shutil.copytree(excerpt_run["run"], copy)
    before = _tree(copy)
    monkeypatch.setattr(export_module, "float32_thresholds", leaves_off)

    result = CliRunner().invoke(main, ["export", "--model", str(copy)])
    assert result.exit_code == 2 and "ONNX export differs from LightGBM" in result.output, result.output
    assert _tree(copy) == before
    assert [p.name for p in copy.parent.iterdir()] == ["run"]  # no temporary copy left

    config = TrainConfig.model_validate(FAST_TRAIN)
    with pytest.raises(ExportError, match="differs from LightGBM"):
        train(excerpt_run["data"], copy, config)
    assert _tree(copy) == before
    assert [p.name for p in copy.parent.iterdir()] == ["run"]


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
    score_users(model, model.users[:3], out, k=5, ctx=CTX)  # a previous scores file
    previous = out.read_bytes()
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
    assert out.read_bytes() == previous
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


class _FakeBundle:
    """The parts of a ServingModel that ``parity`` reads, over hand-made scores: X's one column is
    the row index; ``rank_scores`` answers the "ONNX" scores."""

    def __init__(self, onnx: list[list[float]]) -> None:
        counts = [len(s) for s in onnx]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.users = np.arange(1, len(onnx) + 1, dtype=np.uint32)
        self.products = np.arange(100, 100 + int(self.offsets[-1]), dtype=np.uint32)
        self.onnx = np.concatenate([np.asarray(s, np.float64) for s in onnx])

    def gather(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ServingModel.gather(cast(Any, self), positions)

    def features(self, rows: np.ndarray, ctx: object) -> np.ndarray:
        return np.asarray(rows, np.float32).reshape(-1, 1)

    def rank_scores(self, X: np.ndarray) -> np.ndarray:
        return self.onnx[X[:, 0].astype(np.int64)]

    def basket_probabilities(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(X.shape[0])


class _Native:
    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scores[X[:, 0].astype(np.int64)]


def test_parity_tells_near_ties_from_real_top10_changes() -> None:
    """Float32 (ONNX) against float64 (LightGBM) sums may order two candidates scored within the
    tolerance either way: that is a near-tie swap, not a failure; a swap of candidates LightGBM
    scores further apart is. User 1: ranks 10 and 11 are 5e-7 apart natively and swapped in
    ONNX. User 2: the same swap with 1e-2 between them."""
    base = [1.0 - 0.05 * i for i in range(12)]  # 12 candidates, best first
    tied = list(base)
    tied[9], tied[10] = 0.5, 0.5 - 5e-7
    far = list(base)
    native = np.asarray(tied + far, np.float64)
    onnx_tied, onnx_far = list(tied), list(far)
    onnx_tied[9], onnx_tied[10] = tied[10], tied[9]  # ONNX orders the near-tie the other way
    onnx_far[9], onnx_far[10] = far[10], far[9]
    bundle = _FakeBundle([onnx_tied, onnx_far])
    rankers = SimpleNamespace(ranking=_Native(native), basket=_Native(np.zeros(native.size)))
    check = parity(cast(Any, bundle), cast(Any, rankers), contexts=PARITY_CONTEXTS[:1])
    assert check.users_with_tied_swaps == 1 and check.users_with_different_top10 == 1
