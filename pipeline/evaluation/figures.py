"""Plotly charts of an evaluation report: the one charting path of the run's report and the dashboard.

Every builder takes plain values (the pieces of ``report.json``) and returns a
``plotly.graph_objects.Figure`` without a title (the page around it titles and explains each chart)
and without a template: :func:`template` is the one look applied to every chart, by the dashboard
page (``basketcast.pipeline.dashboard``) and by :func:`write_figures_html`, which writes charts as one
self-contained HTML file (plotly.js inlined once, nothing fetched from the network).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from basketcast.features import glossary
from basketcast.pipeline.data.publish import atomic_write_bytes

RANKER: Final = "lightgbm"  # the method drawn in the ranker's colour and a thicker line
RANKER_COLOR: Final = "#d62728"
BASELINE_COLOR: Final = "#7f7f7f"
BAR_ROW_PX: Final = 22  # height of one bar of a horizontal bar chart
METHOD_LABELS: Final[dict[str, str]] = {
    "popularity": "Global popularity",
    "top_frequency": "Personal top-frequency",
    "tifu_knn": "TIFU-KNN",
    "als": "ALS",
    "sequence_model": "Sequence network (GRU + attention)",
    "lightgbm": "LightGBM ranker",
    "xgboost": "XGBoost ranker",
}
METHOD_COLORS: Final[dict[str, str]] = {
    "popularity": "#bcbd22",
    "top_frequency": "#2ca02c",
    "tifu_knn": "#9467bd",
    "als": "#8c564b",
    "sequence_model": "#17becf",
    "lightgbm": RANKER_COLOR,
    "xgboost": "#ff7f0e",
}
METRICS_AT_10: Final = ("ndcg@10", "recall@10", "precision@10", "map@10")
FONT_FAMILY: Final = '-apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif'
# The interactive options of every chart (the dashboard's script uses the same).
PLOTLY_CONFIG: Final[dict[str, Any]] = {
    "responsive": True,
    "displaylogo": False,
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
}


def new_figure(height: int = 360, **layout: Any) -> go.Figure:
    """An empty figure with the shared margins, no template and full-length hover labels."""
    fig = go.Figure()
    fig.update_layout(
        template=None,
        height=height,
        margin={"l": 10, "r": 20, "t": 10, "b": 10},
        hoverlabel={"namelength": -1},
        **layout,
    )
    return fig


def template() -> go.layout.Template:
    """The look of every chart: Plotly's ``plotly_white`` with the page's font (a copy: the
    registry stays as it is)."""
    out = go.layout.Template(pio.templates["plotly_white"])
    out.layout.font = {"family": FONT_FAMILY, "size": 12}
    return out


def method_label(name: str) -> str:
    """A method's display name (``lightgbm`` → ``LightGBM ranker``); unknown names as they are."""
    return METHOD_LABELS.get(name, name)


def method_color(name: str) -> str:
    return METHOD_COLORS.get(name, BASELINE_COLOR)


def ordered_methods(methods: Mapping[str, Any]) -> dict[str, Any]:
    """The methods of a report in reading order: baselines (simplest first), then the rankers."""
    order = {name: i for i, name in enumerate(METHOD_LABELS)}
    return {name: methods[name] for name in sorted(methods, key=lambda n: (order.get(n, len(order)), n))}


def _curve_ks(curve: Mapping[str, float], metric: str) -> list[int]:
    return sorted(int(key.split("@")[1]) for key in curve if key.startswith(f"{metric}@"))


def _curve_traces(curves: Mapping[str, Mapping[str, float]], metric: str, ks: Sequence[int] | None) -> list[go.Scatter]:
    traces = []
    for name, curve in ordered_methods(curves).items():
        xs = list(ks) if ks is not None else _curve_ks(curve, metric)
        traces.append(
            go.Scatter(
                x=xs,
                y=[curve[f"{metric}@{k}"] for k in xs],
                mode="lines+markers",
                marker={"size": 4},
                line={"color": method_color(name), "width": 3 if name == RANKER else 1.5},
                name=method_label(name),
                hovertemplate=f"{method_label(name)}: {metric}@%{{x}} = %{{y:.3f}}<extra></extra>",
            )
        )
    return traces


def metric_at_k(curves: Mapping[str, Mapping[str, float]], metric: str, ks: Sequence[int] | None = None) -> go.Figure:
    """``metric``@K against K, one line per method (``report["curves"]``: method → {"recall@5": …}).

    ``ks``: the Ks drawn (default: every K of ``metric`` in each method's curve).
    """
    fig = new_figure(320)
    fig.add_traces(_curve_traces(curves, metric, ks))
    fig.update_xaxes(title_text="K (products recommended)", dtick=2)
    fig.update_yaxes(title_text=f"{metric}@K", rangemode="tozero")
    fig.update_layout(legend={"font": {"size": 10}})
    return fig


def precision_recall_at_k(curves: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> go.Figure:
    """Precision@K (left) and recall@K (right) side by side, one line per method, at ``ks``: the
    same lines as :func:`metric_at_k` of each metric, one legend for both."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Precision@K", "Recall@K"), horizontal_spacing=0.1)
    fig.update_layout(
        template=None, height=340, margin={"l": 10, "r": 20, "t": 30, "b": 10}, hoverlabel={"namelength": -1}
    )
    for col, metric in enumerate(("precision", "recall"), start=1):
        for name, trace in zip(ordered_methods(curves), _curve_traces(curves, metric, ks), strict=True):
            trace.update(legendgroup=name, showlegend=col == 1)  # one legend entry toggles both panels
            fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(title_text="K (products recommended)", dtick=2, row=1, col=col)
        fig.update_yaxes(title_text=f"{metric}@K", rangemode="tozero", row=1, col=col)
    fig.update_layout(legend={"font": {"size": 10}, "tracegroupgap": 0})
    return fig


def calibration(bins: Sequence[Mapping[str, float]]) -> go.Figure:
    """Predicted vs observed share bought per probability bin (``report["calibration"]``: a list of
    {"predicted", "observed", "count"}), against the diagonal of perfect calibration."""
    pred = [b["predicted"] for b in bins]
    observed = [b["observed"] for b in bins]
    top = max([*pred, *observed, 0.05]) * 1.08
    fig = new_figure(320)
    fig.add_trace(
        go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"color": BASELINE_COLOR, "dash": "dash"}, name="perfect")
    )
    fig.add_trace(
        go.Scatter(
            x=pred,
            y=observed,
            mode="lines+markers",
            marker={"size": 8, "color": RANKER_COLOR},
            line={"color": RANKER_COLOR},
            name="basket model",
            customdata=[b["count"] for b in bins],
            hovertemplate="predicted %{x:.3f} → observed %{y:.3f} (%{customdata:,} candidates)<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="predicted probability (decile mean)", range=[0, top])
    fig.update_yaxes(title_text="observed share bought", range=[0, top])
    fig.update_layout(legend={"x": 0.02, "y": 0.98})
    return fig


def feature_importance(importance: Mapping[str, float], top: int = 20) -> go.Figure:
    """The ``top`` features by importance (e.g. the ranker's total split gain) as horizontal bars of
    their share of the total over every feature, the largest on top."""
    items = sorted(importance.items(), key=lambda kv: kv[1])[-top:]
    total = sum(importance.values()) or 1.0
    fig = new_figure(BAR_ROW_PX * len(items) + 70)
    fig.add_trace(
        go.Bar(
            y=[glossary.words(k) for k, _ in items],  # plain words on the axis, the column name on hover
            x=[v / total for _, v in items],
            orientation="h",
            marker_color=RANKER_COLOR,
            customdata=[k for k, _ in items],
            hovertemplate="%{y} (%{customdata}): %{x:.1%} of the total gain<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="share of the ranker's total split gain", tickformat=".0%")
    fig.update_yaxes(automargin=True, tickfont={"size": 11})
    return fig


def methods_at_10(methods: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """The evaluation table at K = 10 as grouped bars: one group per metric, one bar per method
    (in the order given; :func:`ordered_methods` for the reading order)."""
    fig = new_figure(340, barmode="group")
    for name, metrics in methods.items():
        fig.add_trace(
            go.Bar(
                x=list(METRICS_AT_10),
                y=[metrics[m] for m in METRICS_AT_10],
                name=method_label(name),
                marker_color=method_color(name),
                text=[f"{metrics[m]:.3f}" for m in METRICS_AT_10],
                textposition="outside",
                textfont={"size": 9},
                cliponaxis=False,
                hovertemplate=f"{method_label(name)}: %{{x}} %{{y:.4f}}<extra></extra>",
            )
        )
    top = max(metrics[m] for metrics in methods.values() for m in METRICS_AT_10)
    fig.update_yaxes(title_text="mean over held-out users", range=[0, top * 1.15])
    fig.update_layout(legend={"orientation": "h", "y": -0.12, "x": 0})
    return fig


def kaggle_f1(kaggle: Mapping[str, float]) -> go.Figure:
    """The Kaggle F1 of the F1-optimal baskets vs the best fixed-size top list (``report["kaggle_f1"]``)."""
    labels = {
        "lightgbm_f1_optimal": "LightGBM, F1-optimal basket",
        "xgboost_f1_optimal": "XGBoost, F1-optimal basket",
        "top_frequency_best_fixed_size": "Top-frequency, best fixed size (k={k:.0f})",
    }
    names = [n for n in labels if n in kaggle]
    fig = new_figure(200)
    fig.add_trace(
        go.Bar(
            y=[labels[n].format(k=kaggle.get("top_frequency_best_k", 0)) for n in names][::-1],
            x=[kaggle[n] for n in names][::-1],
            orientation="h",
            marker_color=[RANKER_COLOR if n.startswith(RANKER) else BASELINE_COLOR for n in names][::-1],
            text=[f"{kaggle[n]:.4f}" for n in names][::-1],
            textposition="auto",
            hovertemplate="%{y}: %{x:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="Kaggle mean F1 (reordered products, 'None' as a token)", rangemode="tozero")
    fig.update_yaxes(automargin=True)
    return fig


_PAGE_CSS: Final = (
    f"body {{ margin:0 auto; max-width:1100px; padding:18px 28px 40px; font:14px/1.45 {FONT_FAMILY}; color:#1d2430; }}"
    "h1 { font-size:22px; font-weight:600; } h2 { font-size:16px; margin:26px 0 4px; }"
)


def figures_html(figures: Sequence[tuple[str, go.Figure]], title: str) -> str:
    """One self-contained HTML page: ``title``, then each (heading, figure) under its heading, with
    :func:`template` applied; plotly.js is inlined once and nothing is loaded from the network."""
    from plotly.offline import get_plotlyjs

    look = template()
    parts = []
    for i, (heading, fig) in enumerate(figures):
        styled = go.Figure(fig)  # a copy: the caller's figure keeps its (absent) template
        styled.update_layout(template=look)
        div = pio.to_html(
            styled,
            include_plotlyjs=False,
            full_html=False,
            div_id=f"figure-{i + 1}",
            config=PLOTLY_CONFIG,
            validate=False,
        )
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{div}</section>")
    plotly_js = get_plotlyjs()
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{_PAGE_CSS}</style>"
        f'<script type="text/javascript">{plotly_js}</script></head>'
        f"<body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>\n"
    )


def write_figures_html(path: Path, figures: Sequence[tuple[str, go.Figure]], title: str) -> None:
    """Write :func:`figures_html` of ``figures`` to ``path`` atomically (temporary file + rename)."""
    atomic_write_bytes(Path(path), figures_html(figures, title).encode())


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """A figure as the plain JSON dict plotly.js draws (``data``, ``layout``)."""
    return json.loads(fig.to_json())  # type: ignore[no-any-return]


def template_json() -> dict[str, Any]:
    """:func:`template` as the plain JSON dict plotly.js applies."""
    return json.loads(pio.to_json(template(), remove_uids=False))  # type: ignore[no-any-return]
