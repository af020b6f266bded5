"""Plotly figures of the insights dashboard, one function per chart.

Each function takes the small frames of ``basketcast.pipeline.dashboard.insights`` /
``basketcast.pipeline.dashboard.segments`` or the run's ``report.json`` and returns a
``plotly.graph_objects.Figure`` without a title (the page titles and explains each chart) and
without a template (the page applies one shared template to all). The model-performance charts are
the run report's own (``basketcast.pipeline.evaluation.figures``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from basketcast.pipeline.dashboard import insights as I
from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.evaluation import figures as EF
from basketcast.pipeline.evaluation.figures import (
    BAR_ROW_PX,
    BASELINE_COLOR,
    RANKER_COLOR,
    method_label,
    ordered_methods,
)
from basketcast.pipeline.evaluation.report import EvaluationReport

__all__ = [
    "BAR_COLOR",
    "NEW_COLOR",
    "REPEAT_COLOR",
    "basket_size_histogram",
    "days_between_histogram",
    "dow_hour_heatmap",
    "feature_label",
    "method_label",
    "model_figures",
    "ordered_methods",
    "product_label",
    "reorder_decay_line",
    "reorder_rate_bars",
    "segment_label",
    "segment_profile_heatmap",
    "segment_quality_bars",
    "segment_sizes",
    "short",
    "silhouette_line",
    "top_products_bars",
]

BAR_COLOR: Final = "#1f77b4"
REPEAT_COLOR: Final = "#1f77b4"
NEW_COLOR: Final = "#ff7f0e"
LABEL_CHARS: Final = 34  # longer product / aisle names are cut on the axis (full name on hover)

_fig = EF.new_figure


def short(text: str, n: int = LABEL_CHARS) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def product_label(name: str, product_id: int) -> str:
    """A product on an axis: its (shortened) name and id, once when the name is only the id."""
    return short(name) if name == f"product {product_id}" else f"{short(name)} ·{product_id}"


# --- shopping patterns --------------------------------------------------------------------
def dow_hour_heatmap(grid: pl.DataFrame) -> go.Figure:
    """Orders by day of week (rows) × hour (columns) from ``insights.orders_by_dow_hour``."""
    z = [grid.filter(pl.col(S.DOW) == d).sort(S.HOUR)[I.ORDERS].to_list() for d in range(7)]
    fig = _fig(300)
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=list(range(24)),
            y=list(I.DOW_LABELS),
            colorscale="Blues",
            colorbar={"title": {"text": "orders"}, "thickness": 12},
            hovertemplate="%{y}, %{x}:00 — %{z:,} orders<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    fig.update_xaxes(title_text="hour of day", dtick=2)
    fig.update_yaxes(autorange="reversed", title_text="day of week")
    return fig


def basket_size_histogram(dist: pl.DataFrame) -> go.Figure:
    """Orders per basket size (``insights.basket_size_distribution``); the x axis stops at the 99th percentile."""
    sizes, counts = dist[I.BASKET_SIZE].to_list(), dist[I.ORDERS].to_list()
    total, run, p99 = sum(counts), 0, sizes[-1] if sizes else 1
    for s, c in zip(sizes, counts, strict=True):
        run += c
        if run >= 0.99 * total:
            p99 = s
            break
    fig = _fig(300)
    fig.add_trace(
        go.Bar(x=sizes, y=counts, marker_color=BAR_COLOR, hovertemplate="%{x} products: %{y:,} orders<extra></extra>")
    )
    fig.update_xaxes(title_text="products in the order", range=[0.5, p99 + 0.5])
    fig.update_yaxes(title_text="orders")
    fig.update_layout(bargap=0.1)
    return fig


def days_between_histogram(dist: pl.DataFrame) -> go.Figure:
    """Orders by days since the previous order, 0..30 (``insights.days_between_distribution``)."""
    fig = _fig(300)
    fig.add_trace(
        go.Bar(
            x=dist[S.DAYS_PRIOR].to_list(),
            y=dist[I.ORDERS].to_list(),
            marker_color=BAR_COLOR,
            hovertemplate="%{x} days: %{y:,} orders<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="days since the previous order (30 = 30 or more)", dtick=5)
    fig.update_yaxes(title_text="orders")
    fig.update_layout(bargap=0.1)
    return fig


def reorder_rate_bars(rates: pl.DataFrame, top: int | None = None) -> go.Figure:
    """Horizontal bars of ``insights.reorder_rate`` (the ``top`` rows by lines), highest rate on top."""
    frame = (rates.head(top) if top else rates).sort(I.REORDER_RATE)
    names = frame[I.NAME].to_list()
    fig = _fig(max(260, BAR_ROW_PX * frame.height + 70))
    fig.add_trace(
        go.Bar(
            y=[short(n) for n in names],
            x=frame[I.REORDER_RATE].to_list(),
            orientation="h",
            marker_color=BAR_COLOR,
            text=[f"{r:.0%}" for r in frame[I.REORDER_RATE].to_list()],
            textposition="outside",
            cliponaxis=False,
            customdata=list(zip(names, frame[I.LINES].to_list(), frame[I.REORDERS].to_list(), strict=True)),
            hovertemplate="%{customdata[0]}: %{x:.1%} reordered (%{customdata[2]:,} of %{customdata[1]:,} lines)"
            "<extra></extra>",
        )
    )
    highest = max((float(r) for r in frame[I.REORDER_RATE].to_list()), default=1.0)
    fig.update_xaxes(
        title_text="share of lines that are reorders", tickformat=".0%", range=[0, min(1.0, highest) * 1.15]
    )
    fig.update_yaxes(automargin=True, tickfont={"size": 11})
    return fig


def top_products_bars(top: pl.DataFrame, value: str) -> go.Figure:
    """Horizontal bars of ``insights.top_products`` by ``value`` (LINES or REORDERS), best on top."""
    frame = top.reverse()
    names = frame[S.PRODUCT_NAME].to_list()
    fig = _fig(max(260, BAR_ROW_PX * frame.height + 70))
    text = (
        [f"{r:.0%} reordered" for r in frame[I.REORDER_RATE].to_list()]
        if value == I.REORDERS
        else [f"{v:,}" for v in frame[value].to_list()]
    )
    fig.add_trace(
        go.Bar(
            y=[product_label(n, p) for n, p in zip(names, frame[S.PRODUCT].to_list(), strict=True)],
            x=frame[value].to_list(),
            orientation="h",
            marker_color=BAR_COLOR if value == I.LINES else "#2ca02c",
            text=text,
            textposition="auto",
            customdata=list(zip(names, frame[I.LINES].to_list(), frame[I.REORDER_RATE].to_list(), strict=True)),
            hovertemplate="%{customdata[0]}: %{customdata[1]:,} lines, %{customdata[2]:.1%} reordered<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="order lines" if value == I.LINES else "reorders (lines with reordered = 1)")
    fig.update_yaxes(automargin=True, tickfont={"size": 11})
    return fig


def reorder_decay_line(decay: pl.DataFrame) -> go.Figure:
    """Chance of a rebuy by orders since the last purchase (``insights.reorder_decay``)."""
    fig = _fig(300)
    fig.add_trace(
        go.Scatter(
            x=decay[I.ORDERS_SINCE].to_list(),
            y=decay[I.PROBABILITY].to_list(),
            mode="lines+markers",
            line={"color": BAR_COLOR},
            customdata=list(zip(decay[I.REBOUGHT].to_list(), decay[I.AT_RISK].to_list(), strict=True)),
            hovertemplate="%{x} orders since the last purchase: %{y:.1%} bought again "
            "(%{customdata[0]:,} of %{customdata[1]:,} user × product pairs)<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="orders since the user last bought the product", dtick=2 if decay.height > 12 else 1)
    fig.update_yaxes(title_text="bought again in this order", tickformat=".0%", rangemode="tozero")
    return fig


# --- segments -----------------------------------------------------------------------------
def silhouette_line(scores: Mapping[int, float], chosen: int) -> go.Figure:
    ks = sorted(scores)
    fig = _fig(260)
    fig.add_trace(
        go.Scatter(
            x=ks,
            y=[scores[k] for k in ks],
            mode="lines+markers",
            line={"color": BAR_COLOR},
            name="silhouette",
            hovertemplate="k = %{x}: silhouette %{y:.3f}<extra></extra>",
        )
    )
    if chosen in scores:
        fig.add_trace(
            go.Scatter(
                x=[chosen],
                y=[scores[chosen]],
                mode="markers+text",
                marker={"size": 14, "color": RANKER_COLOR, "symbol": "star"},
                text=[f"  chosen k = {chosen}"],
                textposition="top right",
                name="chosen",
                hoverinfo="skip",
            )
        )
    lo, hi = min(scores.values()), max(scores.values())
    pad = max(0.02, (hi - lo) * 0.35)
    fig.update_xaxes(title_text="number of segments k", dtick=1, range=[min(ks) - 0.5, max(ks) + 0.5])
    fig.update_yaxes(title_text="silhouette (higher: better)", range=[lo - pad, hi + pad])
    fig.update_layout(showlegend=False)
    return fig


def segment_label(segment: int, name: str) -> str:
    return f"{segment}. {name}"


def segment_sizes(profiles: pl.DataFrame) -> go.Figure:
    frame = profiles.sort(G.SEGMENT, descending=True)
    labels = [
        segment_label(s, n) for s, n in zip(frame[G.SEGMENT].to_list(), frame[G.SEGMENT_NAME].to_list(), strict=True)
    ]
    fig = _fig(max(220, 44 * frame.height + 60))
    fig.add_trace(
        go.Bar(
            y=labels,
            x=frame[G.USERS].to_list(),
            orientation="h",
            marker_color=BAR_COLOR,
            text=[
                f"{u:,} users ({s:.0%})"
                for u, s in zip(frame[G.USERS].to_list(), frame[G.SHARE].to_list(), strict=True)
            ],
            textposition="auto",
            hovertemplate="%{y}: %{x:,} users<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="users")
    fig.update_yaxes(automargin=True)
    return fig


def feature_label(name: str, wrap: bool = False) -> str:
    """A feature's display name; ``wrap`` breaks it onto two lines (chart axes)."""
    label = (
        f"{name.removeprefix(G.DEPT_PREFIX)} share"
        if name.startswith(G.DEPT_PREFIX)
        else G.FEATURE_LABELS.get(name, name)
    )
    if wrap and " " in label:
        head, _, tail = label.rpartition(" ")
        return f"{head}<br>{tail}"
    return label


def _format_value(name: str, value: float) -> str:
    if name in (G.REORDER_RATIO, G.WEEKEND_SHARE) or name.startswith(G.DEPT_PREFIX):
        return f"{value:.0%}"
    if name == G.MEAN_HOUR:
        return f"{value:.0f}h"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def segment_profile_heatmap(profiles: pl.DataFrame, zscores: pl.DataFrame, features: Sequence[str]) -> go.Figure:
    """Segments × features: colour = standard deviations from the average user, text = the segment's mean."""
    segs = profiles[G.SEGMENT].to_list()
    labels = [segment_label(s, short(n, 44)) for s, n in zip(segs, profiles[G.SEGMENT_NAME].to_list(), strict=True)]
    z = [[float(v) for v in zscores.filter(pl.col(G.SEGMENT) == s).select(features).row(0)] for s in segs]
    text = [
        [
            _format_value(f, float(v))
            for f, v in zip(features, profiles.filter(pl.col(G.SEGMENT) == s).select(features).row(0), strict=True)
        ]
        for s in segs
    ]
    fig = _fig(max(240, 46 * len(segs) + 120))
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=[feature_label(f, wrap=True) for f in features],
            y=labels,
            text=text,
            texttemplate="%{text}",
            textfont={"size": 11},
            colorscale="RdBu",
            reversescale=True,
            zmid=0,
            zmin=-2,
            zmax=2,
            xgap=2,
            ygap=2,
            colorbar={"title": {"text": "SD", "side": "right"}, "thickness": 12},
            hovertemplate="%{y}<br>%{x}: %{text} (%{z:+.2f} SD)<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(side="top", tickangle=0, automargin=True, tickfont={"size": 11})
    return fig


def segment_quality_bars(quality: pl.DataFrame, baseline: str) -> go.Figure:
    """NDCG@10 and recall@10 per segment, ranker vs the best baseline (``report.segment_quality``)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("NDCG@10", "Recall@10"), horizontal_spacing=0.08)
    fig.update_layout(template=None, height=320, margin={"l": 10, "r": 20, "t": 30, "b": 10}, barmode="group")
    segs = quality[G.SEGMENT].to_list()
    x = [f"{s} (n={n})" for s, n in zip(segs, quality[G.USERS].to_list(), strict=True)]
    for col, metric in enumerate(("ndcg@10", "recall@10"), start=1):
        for method, color, label in (
            ("ranker", RANKER_COLOR, "LightGBM ranker"),
            ("baseline", BASELINE_COLOR, method_label(baseline)),
        ):
            fig.add_trace(
                go.Bar(
                    x=x,
                    y=quality[f"{method}_{metric}"].to_list(),
                    name=label,
                    marker_color=color,
                    legendgroup=method,
                    showlegend=col == 1,
                    hovertemplate=f"segment %{{x}}: {label} {metric} %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="segment (held-out users)")
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(legend={"orientation": "h", "y": -0.28, "x": 0})
    return fig


# --- model performance --------------------------------------------------------------------
def model_figures(report: EvaluationReport, importance: Mapping[str, float]) -> dict[str, go.Figure]:
    """The model-performance charts of the run's report (``basketcast.pipeline.evaluation.figures``, the run
    report's charts) and of the ranker's feature ``importance``, by chart id."""
    return {
        "model_methods": EF.methods_at_10(ordered_methods(report.methods)),
        "model_precision": EF.metric_at_k(report.curves, "precision"),
        "model_recall": EF.metric_at_k(report.curves, "recall"),
        "model_calibration": EF.calibration([b.model_dump() for b in report.calibration]),
        "model_kaggle_f1": EF.kaggle_f1(report.kaggle_f1),
        "model_importance": EF.feature_importance(importance, top=20),
    }
