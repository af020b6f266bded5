"""Every size of data trains or says why: 1, 2 and 3 shoppers, no `train` order, trees without a split."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest

from basketcast.pipeline.workflows.export import float32_thresholds, to_onnx
from basketcast.pipeline.workflows.run_folder import load_run
from basketcast.serving.model import Context, ServingModel

pytestmark = pytest.mark.integration
EXE = Path(sys.executable).with_name("basketcast")


def bc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=600)


def shoppers(folder: Path, users: int, last_eval_set: str = "train", orders_each: int = 5) -> Path:
    """``users`` hand-written shoppers in the Kaggle layout, ``orders_each`` orders each (the last
    one of ``last_eval_set``), three products an order: a staple, a rotating one and a new one."""
    folder.mkdir(parents=True)
    orders = ["order_id,user_id,eval_set,order_number,order_dow,order_hour_of_day,days_since_prior_order"]
    lines = {"prior": ["order_id,product_id,add_to_cart_order,reordered"]}
    lines["train"] = list(lines["prior"])
    oid = 0
    for u in range(1, users + 1):
        seen: set[int] = set()
        for n in range(1, orders_each + 1):
            oid += 1
            eval_set = last_eval_set if n == orders_each else "prior"
            orders.append(f"{oid},{u},{eval_set},{n},{n % 7},{8 + n},{'' if n == 1 else 7}")
            if eval_set == "test":
                continue
            products = [100 + u, 200 + n % 3, 300 + u * n]
            lines[eval_set] += [f"{oid},{p},{i},{int(p in seen)}" for i, p in enumerate(products, 1)]
            seen |= set(products)
    (folder / "orders.csv").write_text("\n".join(orders) + "\n")
    for eval_set, rows in lines.items():
        (folder / f"order_products__{eval_set}.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("users", [1, 2])
def test_too_few_shoppers_is_a_clear_error(tmp_path: Path, users: int) -> None:
    assert bc("ingest", "--source", shoppers(tmp_path / "src", users), "--out", tmp_path / "data").returncode == 0
    res = bc("train", "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"\nerror: only {users} user(s) have enough orders to train on" in "\n" + res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "run").exists()


def test_too_few_orders_is_a_clear_error(tmp_path: Path) -> None:
    """Two orders each: a target and one visible order, below the default ``min_history`` of 2."""
    assert (
        bc("ingest", "--source", shoppers(tmp_path / "src", 3, orders_each=2), "--out", tmp_path / "data").returncode
        == 0
    )
    res = bc("train", "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert res.returncode == 2 and "\nerror: no user has enough orders to train on" in "\n" + res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("last_eval_set", ["train", "test"])
def test_three_shoppers_train_export_and_serve(tmp_path: Path, last_eval_set: str) -> None:
    """Three shoppers (one each to fit, stop and validate on) give a complete, servable run — also
    when no shopper has a `train` order (the label windows use prior orders)."""
    bc("ingest", "--source", shoppers(tmp_path / "src", 3, last_eval_set), "--out", tmp_path / "data")
    res = bc("train", "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert res.returncode == 0, res.stderr[-3000:]
    run = load_run(tmp_path / "run")
    assert run.manifest.users == {"fit": 1, "stop": 1, "valid": 1}
    assert run.manifest.serving is not None and run.manifest.serving.parity.users_with_different_top10 == 0
    model = ServingModel.load(tmp_path / "run")
    rec = model.recommend(1, 5, Context(dow=1, hour=9))
    assert rec.strategy == "ranker" and rec.products.size == 5


def test_a_model_whose_trees_have_no_split_converts_exactly() -> None:
    """Constant labels: every tree is a single leaf (no `threshold=` values to round)."""
    rng = np.random.default_rng(0)
    X = rng.random((50, 4))
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, np.zeros(50)), num_boost_round=3)
    assert "threshold=\n" in booster.model_to_string() or "num_leaves=1" in booster.model_to_string()
    rounded = float32_thresholds(booster)
    np.testing.assert_array_equal(rounded.predict(X), booster.predict(X))
    session = ort.InferenceSession(to_onnx(booster), providers=["CPUExecutionProvider"])
    onnx = session.run(None, {"input": X.astype(np.float32)})[-1][:, 1]
    np.testing.assert_allclose(onnx, booster.predict(X), atol=1e-6)
