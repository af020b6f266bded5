"""``basketcast report`` / ``build_report`` on the excerpt run: what the page holds, what it agrees
with, and bad input refused before anything is written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from basketcast.features.history import order_lines
from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.dashboard.report import TOP_K, best_baseline, segment_quality, validation_metrics
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset
from basketcast.pipeline.workflows.run_folder import load_run
from basketcast.serving.bundle import BUNDLE
from basketcast.serving.model import Context, ServingModel
from tests.pipeline.dashboard.conftest import BuiltReport

pytestmark = pytest.mark.integration


def bc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("basketcast")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_page_is_self_contained(built_report: BuiltReport) -> None:
    text = built_report.html.read_text()
    assert "plotly.js v" in text  # the library is inlined…
    assert not re.search(r"<script[^>]+src=", text)  # …and nothing is fetched
    assert not re.search(r"<link[^>]+href=\"(?!data:)", text)
    assert not re.search(r"url\(\s*['\"]?https?:", text)
    figures = built_report.embedded("bc-figures")["figures"]
    assert built_report.result.charts == len(figures) + 1  # + the explorer timeline
    for chart_id in figures:
        assert f'id="{chart_id}"' in text
    for section in ("patterns", "segments", "model", "explorer"):
        assert f'<section id="{section}">' in text


def test_segment_labels_cover_every_user(built_report: BuiltReport) -> None:
    assert built_report.segments == built_report.run / "segments.parquet"
    labels = pl.read_parquet(built_report.segments)
    users = read_dataset(built_report.data).orders[S.USER].unique().sort()
    assert labels[S.USER].to_list() == users.to_list()
    assert labels[G.SEGMENT].min() == 1 and labels[G.SEGMENT].max() == built_report.result.segments
    text = built_report.html.read_text()
    for name in labels[G.SEGMENT_NAME].unique().to_list():
        assert name in text


def test_segment_quality_agrees_with_the_run_report(built_report: BuiltReport) -> None:
    data = read_dataset(built_report.data)
    run = load_run(built_report.run)
    report = run.report()
    baseline = best_baseline(report)
    per_user = validation_metrics(data, order_lines(data), run, baseline)
    assert per_user.height == report.users
    # The same users, features, model and metric code as the run's report: the same means.
    assert per_user["ranker_ndcg@10"].mean() == pytest.approx(report.ranker["ndcg@10"], abs=1e-9)
    assert per_user["ranker_recall@10"].mean() == pytest.approx(report.ranker["recall@10"], abs=1e-9)
    assert per_user["baseline_ndcg@10"].mean() == pytest.approx(report.methods[baseline]["ndcg@10"], abs=1e-9)
    by_segment = segment_quality(pl.read_parquet(built_report.segments), per_user)
    assert by_segment[G.USERS].sum() == per_user.height
    weighted = (by_segment["ranker_ndcg@10"] * by_segment[G.USERS]).sum() / per_user.height
    assert weighted == pytest.approx(report.ranker["ndcg@10"], abs=1e-9)


def test_explorer_embeds_what_the_serving_model_answers(built_report: BuiltReport) -> None:
    ex = built_report.embedded("bc-explorer")
    model = ServingModel.load(built_report.run)
    assert 0 < len(ex["users"]) == built_report.result.explorer_users <= 500
    assert ex["k"] == TOP_K and ex["model_version"] == model.version
    ctx = Context(dow=ex["context"]["dow"], hour=ex["context"]["hour"])
    data = read_dataset(built_report.data)
    for uid in list(ex["users"])[:10]:
        user = ex["users"][uid]
        rec = model.recommend(int(uid), TOP_K, ctx)
        assert [r[0] for r in user["recs"]] == rec.products.tolist()
        assert [bool(r[2]) for r in user["recs"]] == rec.repeat.tolist()
        assert [r[1] for r in user["recs"]] == pytest.approx(rec.scores.tolist(), abs=1e-4)
        # The timeline is the user's last orders with their products, in cart order.
        orders = data.orders.filter((pl.col(S.USER) == int(uid)) & (pl.col(S.EVAL_SET) != S.TEST))
        assert user["n_orders"] == orders.height
        last = user["orders"][-1]
        lines = (
            data.order_products.join(orders.filter(pl.col(S.ORDER_NUMBER) == last[0]), on=S.ORDER)
            .sort(S.CART_POS)[S.PRODUCT]
            .to_list()
        )
        assert last[4] == lines
        for pid in lines + [r[0] for r in user["recs"]]:
            assert str(pid) in ex["products"]


def test_explorer_sample_is_bounded_and_seeded(built_report: BuiltReport, tmp_path: Path) -> None:
    from basketcast.pipeline.dashboard.report import build_report

    a = build_report(built_report.data, built_report.run, tmp_path / "a" / "r.html", explorer_users=7)
    build_report(built_report.data, built_report.run, tmp_path / "b" / "r.html", explorer_users=7)
    assert a.explorer_users == 7
    ids = re.findall(r'<option value="(\d+)">', (tmp_path / "a" / "r.html").read_text())
    assert len(ids) == 7 and ids == re.findall(r'<option value="(\d+)">', (tmp_path / "b" / "r.html").read_text())
    assert pl.read_parquet(tmp_path / "a" / "segments.parquet").equals(pl.read_parquet(built_report.segments))


def test_cli_writes_the_page_and_prints_timings(built_report: BuiltReport, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    seg = tmp_path / "labels.parquet"
    result = bc(
        "report", "--data", built_report.data, "--model", built_report.run, "--out", out,
        "--segments-out", seg, "--explorer-users", "20",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file() and seg.is_file() and not (out.parent / "segments.parquet").exists()
    assert "customer segments" in result.stdout and "total" in result.stdout  # the per-stage timings
    assert "20 users in the explorer" in result.stdout


@pytest.mark.parametrize("broken", ["no-model", "no-data", "no-bundle", "no-report"])
def test_cli_refuses_bad_input_and_writes_nothing(built_report: BuiltReport, tmp_path: Path, broken: str) -> None:
    run, data = built_report.run, built_report.data
    if broken == "no-model":
        run = tmp_path / "missing-run"
    elif broken == "no-data":
        data = tmp_path / "missing-data"
    else:
        copy = tmp_path / "run"
        shutil.copytree(built_report.run, copy)
        shutil.rmtree(copy / (BUNDLE if broken == "no-bundle" else "report"))
        run = copy
    out = tmp_path / "out" / "report.html"
    result = bc("report", "--data", data, "--model", run, "--out", out)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.stderr
    expected = {
        "no-model": "missing-run",
        "no-data": "missing-data",
        "no-bundle": "no serving bundle",
        "no-report": "report.json",
    }
    assert expected[broken] in result.stderr
    assert not (tmp_path / "out").exists()


def test_other_data_leaves_out_only_the_per_segment_quality(built_report: BuiltReport, tmp_path: Path) -> None:
    from basketcast.pipeline.dashboard.report import build_report
    from basketcast.pipeline.data.storage import Dataset, write_dataset

    data = read_dataset(built_report.data)
    dropped = int(data.orders[S.USER].max())  # type: ignore[arg-type]
    orders = data.orders.filter(pl.col(S.USER) != dropped)
    other = Dataset(
        orders=orders,
        order_products=data.order_products.join(orders.select(S.ORDER), on=S.ORDER, how="semi"),
        products=data.products,
        aisles=data.aisles,
        departments=data.departments,
    )
    write_dataset(tmp_path / "other", other, source="test: the excerpt less one user")
    result = build_report(tmp_path / "other", built_report.run, tmp_path / "r.html")
    assert len(result.notes) == 1 and "not the data" in result.notes[0]
    assert result.charts == built_report.result.charts - 1
    text = (tmp_path / "r.html").read_text()
    assert 'id="segment_quality"' not in text and "left out" in text
    assert dropped not in pl.read_parquet(tmp_path / "segments.parquet")[S.USER].to_list()
    assert (
        str(dropped)
        not in BuiltReport(tmp_path, built_report.run, tmp_path / "r.html", tmp_path, result).embedded("bc-explorer")[
            "users"
        ]
    )


def test_model_section_shows_the_sequence_network_and_the_repeat_explore_split(built_report: BuiltReport) -> None:
    """The run's report has the network as a method and the repeat / explore split: both on the page,
    with the report's own numbers."""
    text = built_report.html.read_text()
    model = text[text.index('<section id="model">') : text.index('<section id="explorer">')]
    report = load_run(built_report.run).report()
    assert "sequence_model" in report.methods and report.repeat_explore
    assert "Sequence network (GRU + attention)" in model
    assert "Repeat and explore" in model
    for method, row in report.repeat_explore.items():
        assert f"{row['repeat_ndcg@10']:.4f}" in model, method
