"""``basketcast monitor`` end to end through the real CLI.

300 generated shoppers; the "before" data folder drops the last labelled order (and the Kaggle
test order) of two users in three. A small run trained on "before" scores every user; the full
data then holds, for those 200 users, the order after the snapshot's cutoff. The monitor's
Recall@10, NDCG@10 and Kaggle F1 must equal a computation by hand from the Parquet files (the
cutoff taken from "before", not from the bundle; baskets from ``ServingModel.basket``, the API's
path), the by-day table must account for every scored user, every run must append one history
line, and bad inputs must be refused with a one-line error and nothing written.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import Dataset, read_dataset, write_dataset
from basketcast.pipeline.evaluation.monitor import DAY, KAGGLE_F1, NDCG_K, RECALL_K, USERS
from basketcast.pipeline.workflows.monitor import BY_DAY_FILE, HISTORY_FILE, MONITORING, REPORT_FILE, USERS_FILE
from basketcast.serving.model import Context, ServingModel
from tests.conftest import FAST_TRAIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def bc(*args: str | Path | int, ok: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("basketcast")
    result = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def drop_last_orders(full: Path, out: Path) -> None:
    """``full`` without the last labelled order and the test order of every user whose id is not a
    multiple of 3, published as a data folder."""
    data = read_dataset(full)
    last = (
        data.orders.filter(pl.col(S.EVAL_SET) != S.TEST)
        .group_by(S.USER)
        .agg(pl.col(S.ORDER_NUMBER).max().alias("last"))
        .filter(pl.col(S.USER) % 3 != 0)
    )
    dropped = data.orders.join(last, on=S.USER).filter(pl.col(S.ORDER_NUMBER) >= pl.col("last")).select(S.ORDER)
    before = Dataset(
        orders=data.orders.join(dropped, on=S.ORDER, how="anti"),
        order_products=data.order_products.join(dropped, on=S.ORDER, how="anti"),
        products=data.products,
        aisles=data.aisles,
        departments=data.departments,
    )
    write_dataset(out, before, source=f"{full} without the last orders of 2 users in 3")


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("monitor")
    bc("generate", "--users", 300, "--seed", 3, "--out", root / "full")
    drop_last_orders(root / "full", root / "before")
    config = root / "config.json"
    config.write_text(json.dumps({**FAST_TRAIN, "mlflow": False}))
    bc("train", "--data", root / "before", "--out", root / "run", "--config", config)
    bc("score", "--model", root / "run", "--out", root / "scores.parquet", "--k", 20, "--dow", 2, "--hour", 10)
    result = bc("monitor", "--data", root / "full", "--model", root / "run", "--predictions", root / "scores.parquet")
    (root / "summary.txt").write_text(result.stdout)
    history = root / "run" / MONITORING / HISTORY_FILE
    entry = json.loads(history.read_text().splitlines()[-1])
    return {
        **{n: root / n for n in ("full", "before", "run", "scores.parquet", "summary.txt")},
        "out": Path(entry["out"]),
    }


def by_hand(paths: dict[str, Path]) -> pl.DataFrame:
    """Per scored user: the next order after the cutoff in "before" and its products, from the Parquet files."""
    before = pl.read_parquet(paths["before"] / "orders.parquet")
    full = pl.read_parquet(paths["full"] / "orders.parquet")
    lines = pl.read_parquet(paths["full"] / "order_products.parquet")
    cutoff = before.filter(pl.col(S.EVAL_SET) != S.TEST).group_by(S.USER).agg(pl.col(S.ORDER_NUMBER).max().alias("c"))
    nxt = (
        full.join(cutoff, on=S.USER)
        .filter(pl.col(S.ORDER_NUMBER) > pl.col("c"))
        .sort(S.ORDER_NUMBER)
        .group_by(S.USER)
        .first()
        .filter(pl.col(S.EVAL_SET) != S.TEST)
    )
    products = lines.group_by(S.ORDER).agg(
        pl.col(S.PRODUCT).alias("bought"), pl.col(S.PRODUCT).filter(pl.col(S.REORDERED) == 1).alias("reordered")
    )
    return nxt.join(products, on=S.ORDER).sort(S.USER)


def recall_ndcg(top: list[int], bought: set[int]) -> tuple[float, float]:
    hits = [i for i, p in enumerate(top[:10]) if p in bought]
    dcg = sum(1 / math.log2(i + 2) for i in hits)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(bought), 10)))
    return len(hits) / len(bought), dcg / ideal


def test_metrics_equal_a_computation_by_hand(monitored: dict[str, Path]) -> None:
    report = json.loads((monitored["out"] / REPORT_FILE).read_text())
    truth = by_hand(monitored)
    scores = pl.read_parquet(monitored["scores.parquet"]).sort(S.USER, S.RANK)
    top = {u: p for u, p in scores.group_by(S.USER).agg(pl.col(S.PRODUCT)).iter_rows()}
    model = ServingModel.load(monitored["run"])
    recalls, ndcgs, f1s = {}, {}, []
    for row in truth.iter_rows(named=True):
        user, bought, reordered = row[S.USER], set(row["bought"]), set(row["reordered"]) or {None}
        recalls[user], ndcgs[user] = recall_ndcg(top[user], bought)
        days = row[S.DAYS_PRIOR]
        basket = model.basket(user, Context(dow=row[S.DOW], hour=row[S.HOUR], days=None if days is None else days))
        predicted: set[int | None] = set(basket.products.tolist()) | ({None} if basket.none else set())
        predicted = predicted or {None}
        f1s.append(2 * len(predicted & reordered) / (len(predicted) + len(reordered)))

    assert truth.height == 200  # two users in three have a new order; the others wait (100)
    assert report["users"] == {"predicted": 300, "unknown": 0, "history_differs": 0, "waiting": 100, "scored": 200}
    assert report["metrics"][RECALL_K] == pytest.approx(np.mean(list(recalls.values())), abs=1e-12)
    assert report["metrics"][NDCG_K] == pytest.approx(np.mean(list(ndcgs.values())), abs=1e-12)
    assert report["metrics"][KAGGLE_F1] == pytest.approx(np.mean(f1s), abs=1e-12)
    for name in (RECALL_K, NDCG_K):
        ci = report["intervals"][name]
        assert ci["low"] <= report["metrics"][name] <= ci["high"] and ci["resamples"] == 1000
    per_user = pl.read_parquet(monitored["out"] / USERS_FILE)
    assert per_user[S.USER].to_list() == truth[S.USER].to_list()
    for user, recall, ndcg in per_user.select(S.USER, RECALL_K, NDCG_K).head(10).iter_rows():
        assert recall == pytest.approx(recalls[user], abs=1e-12) and ndcg == pytest.approx(ndcgs[user], abs=1e-12)
    assert "recall@10" in monitored["summary.txt"].read_text()


def test_by_day_accounts_for_every_scored_user(monitored: dict[str, Path]) -> None:
    report = json.loads((monitored["out"] / REPORT_FILE).read_text())
    by_day = pl.read_parquet(monitored["out"] / BY_DAY_FILE)
    truth = by_hand(monitored)
    expected = truth.group_by(S.DAYS_PRIOR).len().sort(S.DAYS_PRIOR)
    assert by_day.select(DAY, USERS).rows() == expected.rows()  # day = days_since_prior_order of the new order
    assert int(by_day[USERS].sum()) == report["users"]["scored"] == 200
    assert [s["value"] for s in report["by_day"]] == by_day[DAY].to_list()
    assert sum(s["users"] for s in report["by_dow"]) == 200
    # The users-weighted mean of the days' recall is the overall recall.
    weighted = float((by_day[USERS] * by_day[RECALL_K]).sum()) / 200
    assert weighted == pytest.approx(report["metrics"][RECALL_K], abs=1e-12)


def test_every_run_appends_one_history_line(monitored: dict[str, Path], tmp_path: Path) -> None:
    history = monitored["run"] / MONITORING / HISTORY_FILE
    before = history.read_text().splitlines()
    out = tmp_path / "elsewhere"
    m = monitored
    bc("monitor", "--data", m["full"], "--model", m["run"], "--predictions", m["scores.parquet"], "--out", out)
    after = history.read_text().splitlines()
    assert after[: len(before)] == before and len(after) == len(before) + 1
    entry = json.loads(after[-1])
    assert set(entry) >= {"created_at", "model_version", "users", "metrics"} and entry["users"] == 200
    assert Path(entry["out"]) == out.resolve() and (out / REPORT_FILE).is_file()
    assert entry["metrics"] == json.loads((monitored["out"] / REPORT_FILE).read_text())["metrics"]
    # The default output folder is inside the run's monitoring folder.
    assert monitored["out"].parent == (monitored["run"] / MONITORING).resolve()


def _refused(monitored: dict[str, Path], *args: str | Path) -> str:
    history = monitored["run"] / MONITORING / HISTORY_FILE
    lines = history.read_text()
    folders = sorted((monitored["run"] / MONITORING).iterdir())
    result = bc("monitor", *args, ok=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")
    assert history.read_text() == lines and sorted((monitored["run"] / MONITORING).iterdir()) == folders
    return result.stderr


def test_data_without_a_later_order_is_refused(monitored: dict[str, Path]) -> None:
    m = monitored
    err = _refused(m, "--data", m["before"], "--model", m["run"], "--predictions", m["scores.parquet"])
    assert "no order after the predictions for any of the 300 predicted users" in err


def test_a_file_that_is_not_a_scores_output_is_refused(monitored: dict[str, Path], tmp_path: Path) -> None:
    m = monitored
    for bad in (m["full"] / "orders.parquet", m["run"] / "config.json", tmp_path / "missing.parquet"):
        err = _refused(m, "--data", m["full"], "--model", m["run"], "--predictions", bad)
        assert str(bad) in err and ("not a basketcast scores output" in err or "not found" in err)


def test_scores_of_another_snapshot_are_refused(monitored: dict[str, Path], tmp_path: Path) -> None:
    m = monitored
    other = tmp_path / "other.parquet"
    scores = pl.read_parquet(m["scores.parquet"])
    scores.with_columns((pl.col(S.PRODUCT) + 1_000_000).cast(pl.UInt32)).write_parquet(other)
    err = _refused(m, "--data", m["full"], "--model", m["run"], "--predictions", other)
    assert "not scores of this model's snapshot" in err


def test_scores_whose_drift_summary_names_another_model_are_refused(monitored: dict[str, Path], tmp_path: Path) -> None:
    m = monitored
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(m["scores.parquet"].read_bytes())
    (tmp_path / "copy.drift.json").write_text(json.dumps({"model_version": "20250101T000000Z-0000"}))
    err = _refused(m, "--data", m["full"], "--model", m["run"], "--predictions", copy)
    assert "made by model version 20250101T000000Z-0000" in err
