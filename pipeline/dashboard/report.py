"""``basketcast report``: the insights dashboard as one self-contained HTML file.

``build_report(DATA_DIR, RUN_DIR, OUT)`` writes ``OUT`` (HTML; plotly.js inlined, no network needed
to view it) with four sections —

- **Shopping patterns** (``pipeline.dashboard.insights``): orders by day × hour, basket sizes, days between
  orders, reorder rate by department and aisle, top and top-reordered products, and how the chance
  of a rebuy falls with the orders since the last purchase;
- **Customer segments** (``pipeline.dashboard.segments``): silhouette by k, segment sizes, profiles (colour =
  standard deviations from the average user, text = the segment's mean) with a generated sentence
  each, and NDCG@10 / recall@10 per segment of the ranker and the best baseline on the run's
  held-out users (the same per-user metrics as ``pipeline.evaluation.evaluate``);
- **Model performance**: the run's evaluation report (ranker vs every baseline) as charts, the
  table, precision/recall@K curves, calibration, Kaggle F1 and feature importance;
- **User explorer**: for a seeded sample of users (500 by default) their order timeline and the
  serving bundle's top-10 (``serving.model.ServingModel``: the answer the API gives for the same
  context), repeats and new products marked; served at ``/dashboard`` it asks the live API.

and the segment labels next to it (``segments.parquet``: user_id, segment, segment_name). Both
files are written atomically, after every input has been read and checked.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from features.build import FEATURE_NAMES
from features.history import order_lines
from pipeline.dashboard import figures as F
from pipeline.dashboard import insights as I
from pipeline.dashboard import segments as G
from pipeline.dashboard.page import chart, render_page
from pipeline.data import schema as S
from pipeline.data.storage import Dataset, atomic_write_bytes, read_dataset, read_json, read_manifest
from pipeline.errors import DataError
from pipeline.evaluation.evaluate import BASELINES, RANKER, baseline_rankings
from pipeline.metrics import per_key_metrics
from pipeline.model.training import rows_of, top_k
from pipeline.progress import Timings
from pipeline.workflows.run import Run, evaluation_window, load_run
from serving.model import BUNDLE, Context, ServingModel

log = logging.getLogger(__name__)

EXPLORER_USERS: Final = 500
TOP_K: Final = 10  # recommendations per user in the explorer (and the K of the per-segment metrics)
TIMELINE_ORDERS: Final = 40  # the explorer embeds each user's last orders up to this many
TIMELINE_EXTRA: Final = 10  # products besides the recommended ones on a user's timeline
SEGMENTS_FILE: Final = "segments.parquet"
NDCG: Final = f"ndcg@{TOP_K}"
RECALL: Final = f"recall@{TOP_K}"


@dataclass
class ReportResult:
    """What ``build_report`` wrote."""

    out: Path
    segments_out: Path
    html_bytes: int
    charts: int
    segments: int
    explorer_users: int
    notes: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)


@dataclass(frozen=True)
class _Inputs:
    data: Dataset
    data_manifest: dict[str, Any]
    run: Run
    report: dict[str, Any]
    model: ServingModel


def _load(data_dir: Path, run_dir: Path) -> _Inputs:
    """Read and check every input first, so that a bad one fails before anything is computed or written."""
    data = read_dataset(data_dir)
    data_manifest = read_manifest(data_dir)
    run = load_run(run_dir)
    report = read_json(Path(run_dir) / "report" / "report.json")
    for key in ("methods", "curves", "calibration", "kaggle_f1"):
        if key not in report:
            raise DataError(f"{Path(run_dir) / 'report' / 'report.json'}: no '{key}' (re-run `basketcast evaluate`)")
    if not (Path(run_dir) / BUNDLE).is_dir():
        raise DataError(
            f"{Path(run_dir) / BUNDLE}: no serving bundle (the explorer needs it; "
            f"`basketcast export --model {run_dir}`)"
        )
    model = ServingModel.load(run_dir)
    return _Inputs(data, data_manifest, run, report, model)


def validation_metrics(data: Dataset, lines: pl.DataFrame, run: Run, baseline: str) -> pl.DataFrame:
    """Per evaluated held-out user of the run (``evaluation_users``): NDCG@10 and recall@10 of the
    ranker and of ``baseline``.

    The run's window-0 evaluation rebuilt as ``pipeline.workflows.run.evaluate`` does (features cut before
    each user's last labelled order, the run's evaluation ALS), scored with the run's ranker and
    measured with ``pipeline.metrics.per_key_metrics``. Columns: USER, ``ranker_ndcg@10``,
    ``ranker_recall@10``, ``baseline_ndcg@10``, ``baseline_recall@10``; one row per valid user
    with a target order, sorted by user.
    """
    window, users = evaluation_window(data, lines, run)  # the users the run's report was computed on
    truth = window.truth.filter(pl.col(S.USER).is_in(users.implode()))
    users = users.filter(users.is_in(truth[S.USER].unique().implode()))
    rows = rows_of([window], users)
    rankings = {
        "ranker": top_k(rows, run.rankers.score(rows)["ranking"], TOP_K),
        "baseline": baseline_rankings(window, users, TOP_K, run.config)[baseline],
    }
    out = pl.DataFrame({S.USER: users})
    for name, ranking in rankings.items():
        m = per_key_metrics(ranking, truth, (TOP_K,)).select(
            pl.col(S.USER), pl.col(NDCG).alias(f"{name}_{NDCG}"), pl.col(RECALL).alias(f"{name}_{RECALL}")
        )
        out = out.join(m, on=S.USER, how="left")
    return out.sort(S.USER)


def segment_quality(labels: pl.DataFrame, per_user: pl.DataFrame) -> pl.DataFrame:
    """Mean per-user metrics by segment: SEGMENT, USERS (evaluated users) and the metric columns."""
    metrics = [c for c in per_user.columns if c != S.USER]
    return (
        per_user.join(labels.select(S.USER, G.SEGMENT), on=S.USER, how="inner")
        .group_by(G.SEGMENT)
        .agg(pl.len().cast(pl.UInt32).alias(G.USERS), *[pl.col(c).mean() for c in metrics])
        .sort(G.SEGMENT)
    )


def best_baseline(report: dict[str, Any]) -> str:
    """The baseline with the highest NDCG@10 in the run's report."""
    present = [b for b in BASELINES if b in report["methods"]]
    return max(present, key=lambda b: report["methods"][b][NDCG])


def peak_context(grid: pl.DataFrame) -> Context:
    """The busiest (day, hour) of the data, the user's usual gap: the context of the explorer's answers."""
    row = grid.sort([I.ORDERS, S.DOW, S.HOUR], descending=[True, False, False]).row(0, named=True)
    return Context(dow=int(row[S.DOW]), hour=int(row[S.HOUR]), days=None)


def explorer_payload(
    data: Dataset, model: ServingModel, labels: pl.DataFrame, ctx: Context, n_users: int, seed: int
) -> dict[str, Any]:
    """The explorer's embedded data for a seeded sample of up to ``n_users`` users known to the model.

    ``users``: id → {segment, n_orders, orders: [[order_number, dow, hour, days since prior or
    null, [product ids in cart order]], …] (the last TIMELINE_ORDERS orders with products),
    recs: [[product id, score, repeat 0/1], …] (``ServingModel.recommend_many`` at ``ctx``),
    strategy}; ``products``: id → [name, aisle, department] of every product mentioned.
    """
    known = np.intersect1d(np.asarray(model.users), data.orders[S.USER].unique().to_numpy())
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(known, size=min(n_users, known.size), replace=False)) if known.size else known
    ids = pl.Series(S.USER, sample, dtype=pl.UInt32)
    orders = data.orders.filter(pl.col(S.USER).is_in(ids.implode())).select(
        S.ORDER, S.USER, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR
    )
    baskets = (
        data.order_products.join(orders, on=S.ORDER, how="inner")
        .sort(S.USER, S.ORDER_NUMBER, S.CART_POS)
        .group_by(S.USER, S.ORDER_NUMBER, S.DOW, S.HOUR, S.DAYS_PRIOR, maintain_order=True)
        .agg(pl.col(S.PRODUCT))
    )
    by_user: dict[int, list[list[Any]]] = {}
    for user, number, dow, hour, days, products in baskets.iter_rows():
        by_user.setdefault(user, []).append([number, dow, hour, days, products])
    segment_of = dict(labels.select(S.USER, G.SEGMENT).iter_rows())
    recs = model.recommend_many(sample.tolist(), TOP_K, ctx) if sample.size else []
    product_ids: set[int] = set()
    users: dict[str, Any] = {}
    for user, rec in zip(sample.tolist(), recs, strict=True):
        history = by_user.get(user, [])
        shown = history[-TIMELINE_ORDERS:]
        for o in shown:
            product_ids.update(o[4])
        product_ids.update(rec.products.tolist())
        users[str(user)] = {
            "segment": segment_of.get(user),
            "n_orders": len(history),
            "orders": shown,
            "recs": [
                [p, round(float(s), 5), int(r)]
                for p, s, r in zip(rec.products.tolist(), rec.scores.tolist(), rec.repeat.tolist(), strict=True)
            ],
            "strategy": rec.strategy,
        }
    return {
        "users": users,
        "products": {str(p): list(model.product_info(p)) for p in sorted(product_ids)},
        "k": TOP_K,
        "context": {"dow": int(ctx.dow), "hour": int(ctx.hour)},
        "model_version": model.version,
        "timeline_extra": TIMELINE_EXTRA,
    }


def _figure_json(fig: Any) -> dict[str, Any]:
    return json.loads(fig.to_json())  # type: ignore[no-any-return]


def _template() -> dict[str, Any]:
    import plotly.graph_objects as go
    import plotly.io as pio

    template = go.layout.Template(pio.templates["plotly_white"])  # a copy: the registry stays as it is
    template.layout.font = {"family": '-apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif', "size": 12}
    return json.loads(pio.to_json(template, remove_uids=False))  # type: ignore[no-any-return]


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.1%}"


def _methods_table(methods: dict[str, dict[str, float]], ks: list[int]) -> str:
    """The evaluation table: one row per metric@K, one column per method; the best of each row underlined."""
    names = list(methods)
    head = "".join(f'<th class="num">{html.escape(F.method_label(n))}</th>' for n in names)
    rows = []
    for k in ks:
        for metric in ("precision", "recall", "f1", "ndcg", "map", "hit_rate"):
            col = f"{metric}@{k}"
            if not all(col in methods[n] for n in names):
                continue
            best = max(methods[n][col] for n in names)
            cells = "".join(
                f'<td class="num">{"<u>" if methods[n][col] == best else ""}{methods[n][col]:.4f}'
                f"{'</u>' if methods[n][col] == best else ''}</td>"
                for n in names
            )
            rows.append(f"<tr><td>{col}</td>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="metrics"><thead><tr><th>metric</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def build_report(
    data_dir: Path,
    run_dir: Path,
    out: Path,
    *,
    segments_out: Path | None = None,
    explorer_users: int = EXPLORER_USERS,
    segment_config: G.SegmentConfig | None = None,
) -> ReportResult:
    """Write the dashboard of ``run_dir`` on ``data_dir`` to ``out`` and the segment labels to
    ``segments_out`` (default: ``segments.parquet`` next to ``out``). See the module doc."""
    import plotly
    import plotly.offline

    out = Path(out)
    segments_out = Path(segments_out) if segments_out else out.parent / SEGMENTS_FILE
    if out.is_dir():
        raise DataError(f"{out}: is a folder; --out takes the HTML file to write")
    if explorer_users < 1:
        raise DataError(f"--explorer-users must be at least 1, got {explorer_users}")
    config = segment_config or G.SegmentConfig()
    timings = Timings()
    notes: list[str] = []

    with timings.stage("load data, run and serving bundle"):
        inputs = _load(data_dir, run_dir)
        data, report, run, model = inputs.data, inputs.report, inputs.run, inputs.model
        lines = order_lines(data)

    with timings.stage("shopping patterns"):
        grid = I.orders_by_dow_hour(data.orders)
        head = I.headline(data.orders, data.order_products)
        patterns = {
            "dow_hour": F.dow_hour_heatmap(grid),
            "basket_sizes": F.basket_size_histogram(I.basket_size_distribution(data.order_products)),
            "days_between": F.days_between_histogram(I.days_between_distribution(data.orders)),
            "reorder_department": F.reorder_rate_bars(
                I.reorder_rate(lines, S.DEPARTMENT, data.departments, S.DEPARTMENT_NAME)
            ),
            "reorder_aisle": F.reorder_rate_bars(I.reorder_rate(lines, S.AISLE, data.aisles, S.AISLE_NAME), top=25),
            "top_products": F.top_products_bars(I.top_products(lines, data.products, 20, I.LINES), I.LINES),
            "top_reordered": F.top_products_bars(I.top_products(lines, data.products, 20, I.REORDERS), I.REORDERS),
            "reorder_decay": F.reorder_decay_line(I.reorder_decay(lines, max_orders=30, min_at_risk=20)),
        }

    with timings.stage("customer segments (k-means, k by silhouette)"):
        seg = G.segment_users(data, config)

    baseline = best_baseline(report)
    quality: pl.DataFrame | None = None
    with timings.stage("model quality per segment (held-out users)"):
        if inputs.data_manifest["fingerprint"] == run.manifest["data"]["fingerprint"]:
            quality = segment_quality(seg.labels, validation_metrics(data, lines, run, baseline))
        else:
            notes.append(
                f"{data_dir} is not the data {run_dir} was trained on: model quality per segment is left out "
                "(it needs the run's held-out users)."
            )

    with timings.stage("user explorer (serving bundle)"):
        ctx = peak_context(grid)
        explorer = explorer_payload(data, model, seg.labels, ctx, explorer_users, config.seed)

    with timings.stage("figures and page"):
        importance = dict(zip(FEATURE_NAMES, run.rankers.ranking.feature_importance("gain").tolist(), strict=True))
        segment_figs = {
            "segment_silhouette": F.silhouette_line(seg.silhouette, seg.k),
            "segment_sizes": F.segment_sizes(seg.profiles),
            "segment_profiles": F.segment_profile_heatmap(seg.profiles, seg.zscores, seg.feature_names),
        }
        if quality is not None:
            segment_figs["segment_quality"] = F.segment_quality_bars(quality, baseline)
        model_figs = {
            "model_methods": F.methods_bars(F.ordered_methods(report["methods"])),
            "model_precision": F.curves(report, "precision"),
            "model_recall": F.curves(report, "recall"),
            "model_calibration": F.calibration(report),
            "model_kaggle_f1": F.kaggle_f1_bars(report["kaggle_f1"]),
            "model_importance": F.importance_bars(importance),
        }
        figures = {**patterns, **segment_figs, **model_figs}
        page = _page(
            data_dir=Path(data_dir),
            run_dir=Path(run_dir),
            inputs=inputs,
            head=head,
            seg=seg,
            quality=quality,
            baseline=baseline,
            ctx=ctx,
            explorer=explorer,
            figures={k: _figure_json(v) for k, v in figures.items()},
            plotly_js=plotly.offline.get_plotlyjs(),
            plotly_version=plotly.__version__,
            config=config,
            notes=notes,
        )
        payload = page.encode()
        G.write_labels(seg, segments_out)
        atomic_write_bytes(out, payload)
    for note in notes:
        log.warning("%s", note)
    return ReportResult(
        out=out,
        segments_out=segments_out,
        html_bytes=len(payload),
        charts=len(figures) + 1,  # + the explorer's timeline, drawn by the page
        segments=seg.k,
        explorer_users=len(explorer["users"]),
        notes=notes,
        timings=timings,
    )


def _page(
    *,
    data_dir: Path,
    run_dir: Path,
    inputs: _Inputs,
    head: dict[str, float],
    seg: G.Segmentation,
    quality: pl.DataFrame | None,
    baseline: str,
    ctx: Context,
    explorer: dict[str, Any],
    figures: dict[str, Any],
    plotly_js: str,
    plotly_version: str,
    config: G.SegmentConfig,
    notes: list[str],
) -> str:
    report, run = inputs.report, inputs.run
    methods = F.ordered_methods(report["methods"])
    ranker_ndcg, base_ndcg = methods[RANKER][NDCG], methods[baseline][NDCG]
    built = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    e = html.escape
    meta = (
        f"data <b>{e(str(data_dir))}</b> ({e(str(inputs.data_manifest.get('source', '?')))}, fingerprint "
        f"{e(str(inputs.data_manifest['fingerprint']))}) · model <b>{e(str(run_dir))}</b> (trained "
        f"{e(str(run.manifest.get('created', '?')))}, serving version {e(inputs.model.version)}) · built {built}"
    )
    kpis = [
        ("shoppers", f"{head['users']:,.0f}"),
        ("orders", f"{head['orders']:,.0f}"),
        ("products bought", f"{head['products']:,.0f}"),
        ("mean basket", f"{head['basket_size']:.1f} items"),
        ("of items are reorders", _pct(head["reorder_rate"])),
        ("median days between orders", f"{head['days_between_median']:.0f}"),
        ("customer segments", str(seg.k)),
        (f"ranker NDCG@10 (best baseline {base_ndcg:.3f})", f"{ranker_ndcg:.3f}"),
    ]
    patterns = "".join(
        [
            '<div class="grid">',
            chart(
                "dow_hour",
                "When people shop: orders by day of week × hour",
                "Every order counted at its day (order_dow; Instacart does not name the days — days 0 and 1 carry "
                "the weekend-like peak) and hour of day.",
                wide=True,
            ),
            chart("basket_sizes", "Basket size", "Orders by number of products (axis cut at the 99th percentile)."),
            chart(
                "days_between",
                "Days between orders",
                "Orders by days since the same shopper's previous order; Instacart caps the value at 30.",
            ),
            chart(
                "reorder_department",
                "Reorder rate by department",
                "Share of order lines that are reorders (the shopper bought the product before).",
            ),
            chart("reorder_aisle", "Reorder rate by aisle", "The 25 aisles with the most order lines."),
            chart("top_products", "Top products", "The 20 products in the most orders."),
            chart(
                "top_reordered",
                "Top reordered products",
                "The 20 products with the most reorders, labelled with their reorder rate.",
            ),
            chart(
                "reorder_decay",
                "The longer since the last purchase, the less likely a rebuy",
                "For every shopper × product: the chance it is in the next order when it has not been bought for "
                "n orders (pairs that reached n orders without a rebuy; points with under 20 pairs left out).",
                wide=True,
            ),
            "</div>",
        ]
    )
    sentences = "".join(
        f"<li><b>{int(r[G.SEGMENT])}.</b> {e(r[G.DESCRIPTION])}</li>" for r in seg.profiles.iter_rows(named=True)
    )
    quality_card = (
        chart(
            "segment_quality",
            "How well the model does in each segment",
            f"Mean NDCG@10 and recall@10 of the LightGBM ranker and the best baseline ({e(F.method_label(baseline))}) "
            "on the run's held-out users, by their segment (n = held-out users in it).",
            wide=True,
        )
        if quality is not None
        else '<div class="card wide"><h3>How well the model does in each segment</h3>'
        f'<p class="cap">{e(notes[0])}</p></div>'
    )
    segments = "".join(
        [
            '<div class="grid">',
            f'<div class="card wide"><h3>The segments in words</h3><ul class="segments">{sentences}</ul></div>',
            chart(
                "segment_sizes",
                "Segment sizes",
                "Users per segment; segments are numbered by size.",
            ),
            chart(
                "segment_silhouette",
                "Choosing the number of segments",
                f"k-means for k = {min(seg.silhouette)}..{max(seg.silhouette)}; the k with the best silhouette "
                "(how much closer users are to their own segment than to the next) is kept.",
            ),
            chart(
                "segment_profiles",
                "What makes each segment different",
                "Colour: the segment's mean in standard deviations from the average user (red above, blue below; "
                "order counts and basket sizes on a log scale); text: the segment's mean.",
                wide=True,
            ),
            quality_card,
            "</div>",
        ]
    )
    ks = sorted({int(c.split("@")[1]) for c in next(iter(methods.values()))})
    model_section = "".join(
        [
            '<div class="grid">',
            chart(
                "model_methods",
                "Ranker vs every baseline at K = 10",
                f"Held-out users ({report.get('users', '?')}, never trained on), their last labelled order predicted "
                "from the history before it.",
                wide=True,
            ),
            f'<div class="card wide"><h3>The evaluation table</h3><p class="cap">Mean over held-out users; '
            f"the best value of each row underlined.</p>{_methods_table(methods, ks)}</div>",
            chart("model_precision", "Precision@K", "Share of the top K that the shopper bought."),
            chart("model_recall", "Recall@K", "Share of the order's products found in the top K."),
            chart(
                "model_calibration",
                "Calibration of the basket probabilities",
                "Candidates in ten equal-count bins of predicted probability: predicted vs observed share bought.",
            ),
            chart(
                "model_kaggle_f1",
                "Kaggle F1 of the predicted baskets",
                "F1-optimal baskets from the calibrated probabilities vs the best fixed-size personal top list.",
            ),
            chart(
                "model_importance",
                "Feature importance",
                "The ranker's 20 most useful features (share of its total split gain).",
                wide=True,
            ),
            "</div>",
        ]
    )
    explorer_section = (
        '<div class="card wide">'
        '<form id="explorer-form" class="controls">'
        '<label for="explorer-user"><b>User id</b></label>'
        '<input id="explorer-user" name="user" list="explorer-ids" inputmode="numeric" autocomplete="off">'
        '<datalist id="explorer-ids">' + "".join(f'<option value="{u}">' for u in explorer["users"]) + "</datalist>"
        '<button type="submit" id="explorer-show">Show</button>'
        '<button type="button" class="ghost" id="explorer-random">Random user</button>'
        '<span id="explorer-mode"></span> <span id="explorer-status"></span>'
        "</form>"
        '<p id="explorer-summary" class="cap"></p>'
        '<div class="grid">'
        '<div><h3>Order timeline</h3><p class="cap">Each square is a purchase; rows are the recommended products '
        f"(ranked) and the user's {TIMELINE_EXTRA} other most frequent ones; ★ marks the recommended next order "
        '(blue: bought before, orange: new to the user).</p><div class="chart" id="explorer-timeline"></div></div>'
        f'<div><h3>Recommended next basket (top {TOP_K})</h3><p class="cap">For an order on day {int(ctx.dow)} '
        f"at {int(ctx.hour)}:00 (the busiest slot) after the user's usual gap; score: the ranker's, higher is "
        "better (not a probability).</p>"
        '<table id="explorer-recs"><thead><tr><th class="num">#</th><th>product</th><th>aisle</th>'
        '<th>department</th><th class="num">score</th><th>kind</th></tr></thead><tbody></tbody></table></div>'
        "</div></div>"
    )
    sections = [
        (
            "patterns",
            "Shopping patterns",
            f"{head['orders']:,.0f} orders of {head['users']:,.0f} shoppers, {head['lines']:,.0f} order lines.",
            patterns,
        ),
        (
            "segments",
            "Customer segments",
            f"{seg.k} segments from k-means on {len(seg.feature_names)} standardised behavioural features: "
            + e(", ".join(F.feature_label(f) for f in seg.feature_names))
            + ". Labels for every user are in the segments Parquet file next to this page.",
            segments,
        ),
        (
            "model",
            "Model performance",
            f"The run's validation report ({e(report.get('ranking_objective', RANKER))} ranking objective).",
            model_section,
        ),
        (
            "explorer",
            "User explorer",
            "Pick or type a user id to see what they bought when, next to the model's recommended next basket.",
            explorer_section,
        ),
    ]
    footer = (
        f"Segments: k-means (scikit-learn, {config.n_init} restarts, seed {config.seed}) on standardised features, "
        f"department shares weighted to count as {config.department_weight:g} features together, fitted on up to "
        f"{config.fit_users:,} users; silhouette on up to {config.silhouette_users:,} (seeded). "
        f"Silhouette by k: {', '.join(f'{k}: {v:.3f}' for k, v in sorted(seg.silhouette.items()))}. "
        f"Explorer: {len(explorer['users'])} users sampled with seed {config.seed}; recommendations from the serving "
        f"bundle (ONNX), as GET /v1/users/{{id}}/recommendations?k={TOP_K}&amp;dow={int(ctx.dow)}"
        f"&amp;hour={int(ctx.hour)} "
        f"answers. Charts: Plotly {e(plotly_version)}, embedded; this page needs no network."
    )
    return render_page(
        title="basketcast insights",
        meta=meta,
        kpis=kpis,
        sections=sections,
        figures_json={"figures": figures, "template": _template()},
        explorer_json={
            **explorer,
            "segments": dict(
                zip(map(str, seg.profiles[G.SEGMENT].to_list()), seg.profiles[G.SEGMENT_NAME].to_list(), strict=True)
            ),
        },
        plotly_js=plotly_js,
        footer=footer,
    )
