"""The evaluation charts (``basketcast.pipeline.evaluation.figures``, shared by the run report and the dashboard):
what they draw is what they are given, and the report's HTML file is self-contained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest

from basketcast.pipeline.evaluation import figures as EF

KS = (1, 2, 3, 5)
# Methods out of reading order on purpose: the charts put the baselines first, the ranker last.
CURVES = {
    "lightgbm": {f"{m}@{k}": v + k / 100 for k in KS for m, v in (("precision", 0.30), ("recall", 0.10))},
    "popularity": {f"{m}@{k}": v + k / 200 for k in KS for m, v in (("precision", 0.10), ("recall", 0.02))},
    "top_frequency": {f"{m}@{k}": v + k / 150 for k in KS for m, v in (("precision", 0.20), ("recall", 0.05))},
}
BINS = [
    {"predicted": 0.01, "observed": 0.02, "count": 100},
    {"predicted": 0.10, "observed": 0.08, "count": 100},
    {"predicted": 0.45, "observed": 0.50, "count": 99},
]
IMPORTANCE = {"up_orders": 50.0, "u_orders": 10.0, "tifu_score": 30.0, "als_score": 5.0, "days": 5.0}


def _reading_order() -> list[str]:
    return ["popularity", "top_frequency", "lightgbm"]


def test_metric_at_k_draws_the_given_values() -> None:
    for metric in ("precision", "recall"):
        fig = EF.metric_at_k(CURVES, metric)
        assert [t.name for t in fig.data] == [EF.method_label(m) for m in _reading_order()]
        for trace, method in zip(fig.data, _reading_order(), strict=True):
            assert list(trace.x) == list(KS)
            assert list(trace.y) == [CURVES[method][f"{metric}@{k}"] for k in KS]
            assert trace.line.color == EF.METHOD_COLORS[method]
        assert fig.layout.template.layout.to_plotly_json() == {}  # the page applies the template
    only = EF.metric_at_k(CURVES, "recall", ks=[2, 5])
    assert [list(t.y) for t in only.data] == [[CURVES[m][f"recall@{k}"] for k in (2, 5)] for m in _reading_order()]


def test_precision_recall_at_k_has_both_panels_and_one_legend() -> None:
    fig = EF.precision_recall_at_k(CURVES, KS)
    assert len(fig.data) == 2 * len(CURVES)
    for trace in fig.data:
        metric = "precision" if trace.xaxis == "x" else "recall"
        method = trace.legendgroup
        assert list(trace.x) == list(KS)
        assert list(trace.y) == [CURVES[method][f"{metric}@{k}"] for k in KS]
        assert trace.showlegend == (metric == "precision")
    assert {t.xaxis for t in fig.data} == {"x", "x2"}
    # The ranker's recall@K line is the recall values given, K by K.
    ranker = next(t for t in fig.data if t.xaxis == "x2" and t.legendgroup == "lightgbm")
    assert list(ranker.y) == [CURVES["lightgbm"][f"recall@{k}"] for k in KS]


def test_calibration_draws_the_bins() -> None:
    fig = EF.calibration(BINS)
    perfect, model = fig.data
    assert list(model.x) == [b["predicted"] for b in BINS]
    assert list(model.y) == [b["observed"] for b in BINS]
    assert list(model.customdata) == [b["count"] for b in BINS]
    top = 0.5 * 1.08
    assert list(perfect.x) == list(perfect.y) == pytest.approx([0, top])
    assert list(fig.layout.xaxis.range) == list(fig.layout.yaxis.range) == pytest.approx([0, top])


def test_feature_importance_shows_the_top_shares() -> None:
    fig = EF.feature_importance(IMPORTANCE, top=3)
    (bars,) = fig.data
    # The largest on top (plotly draws the first bar at the bottom).
    # In words on the axis (a name without words stays itself), the column name on hover.
    assert list(bars.y) == ["shopper's number of orders", "tifu_score", "orders of this shopper holding the product"]
    assert list(bars.customdata) == ["u_orders", "tifu_score", "up_orders"]
    total = sum(IMPORTANCE.values())
    assert list(bars.x) == pytest.approx([10 / total, 30 / total, 50 / total])
    assert len(EF.feature_importance(IMPORTANCE).data[0].y) == len(IMPORTANCE)


def test_methods_at_10_and_kaggle_f1() -> None:
    methods = {m: {k: 0.1 * i + 0.01 * j for j, k in enumerate(EF.METRICS_AT_10)} for i, m in enumerate(CURVES, 1)}
    fig = EF.methods_at_10(EF.ordered_methods(methods))
    assert [t.name for t in fig.data] == [EF.method_label(m) for m in _reading_order()]
    for trace, method in zip(fig.data, _reading_order(), strict=True):
        assert list(trace.x) == list(EF.METRICS_AT_10)
        assert list(trace.y) == [methods[method][k] for k in EF.METRICS_AT_10]
    kaggle = {"lightgbm_f1_optimal": 0.38, "top_frequency_best_fixed_size": 0.33, "top_frequency_best_k": 6.0}
    (bars,) = EF.kaggle_f1(kaggle).data
    assert list(bars.x) == [0.33, 0.38]
    assert list(bars.y) == ["Top-frequency, best fixed size (k=6)", "LightGBM, F1-optimal basket"]


def test_write_figures_html_is_one_self_contained_file(tmp_path: Path) -> None:
    charts = [
        ("Precision & recall at K", EF.precision_recall_at_k(CURVES, KS)),
        ("Calibration", EF.calibration(BINS)),
        ("Feature importance", EF.feature_importance(IMPORTANCE, 25)),
    ]
    out = tmp_path / "report" / "figures.html"
    out.parent.mkdir()
    EF.write_figures_html(out, charts, "Evaluation <run>")
    assert sorted(p.name for p in out.parent.iterdir()) == ["figures.html"]  # no temporary file left
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<title>Evaluation &lt;run&gt;</title>" in text
    assert "Precision &amp; recall at K" in text
    # plotly.js inlined once; nothing is fetched from the network.
    assert text.count("plotly.js v") == 1
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"""<script[^>]*src=["']?https?:""", text)
    assert not re.search(r'<link[^>]+href="(?!data:)', text)
    assert not re.search(r"""url\(\s*['"]?https?:""", text)
    # Every chart is drawn with its data and the shared look.
    for i in range(1, len(charts) + 1):
        assert f'id="figure-{i}"' in text
    calls = re.findall(r'Plotly\.newPlot\(\s*"figure-(\d)",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"responsive"', text, re.S)
    assert [c[0] for c in calls] == ["1", "2", "3"]
    calibration_traces = json.loads(calls[1][1])
    assert calibration_traces[1]["y"] == [b["observed"] for b in BINS]
    layout = json.loads(calls[1][2])
    assert layout["template"]["layout"]["font"]["family"] == EF.FONT_FAMILY
    # The caller's figures keep no template (the dashboard applies its own).
    assert charts[1][1].layout.template.layout.to_plotly_json() == {}


def test_write_figures_html_replaces_an_old_file(tmp_path: Path) -> None:
    out = tmp_path / "figures.html"
    out.write_text("old")
    EF.write_figures_html(out, [("Empty", go.Figure())], "t")
    assert out.read_text().startswith("<!DOCTYPE html>")
