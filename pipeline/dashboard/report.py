"""``basketcast report``: the insights dashboard as one self-contained HTML file.

``build_report(DATA_DIR, RUN_DIR, OUT)`` writes ``OUT`` (HTML; plotly.js inlined, no network needed
to view it) with five sections —

- **Shopping patterns** (``basketcast.pipeline.dashboard.insights``): orders by day × hour, basket sizes, days between
  orders, reorder rate by department and aisle, top and top-reordered products, and how the chance
  of a rebuy falls with the orders since the last purchase;
- **Customer segments** (``basketcast.pipeline.dashboard.segments``): silhouette by k, segment sizes, profiles (colour =
  standard deviations from the average user, text = the segment's mean) with a generated sentence
  each, and NDCG@10 / recall@10 per segment of the ranker and the best baseline on the run's
  held-out users (the same per-user metrics as ``basketcast.pipeline.evaluation.evaluate``);
- **Model performance**: the run's evaluation report (ranker vs every baseline) as charts, the
  table, precision/recall@K curves, calibration, Kaggle F1 and feature importance;
- **Monitoring** (``basketcast.pipeline.dashboard.monitoring``): the run's delayed quality over time
  (``RUN/monitoring/history.jsonl``, one line per ``basketcast monitor``) and the drift of each
  batch scoring (``RUN/monitoring/drift-history.jsonl``), or how to produce them;
- **User explorer**: for a seeded sample of users (500 by default) their order timeline and the
  serving bundle's top-10 (``basketcast.serving.model.ServingModel``: the answer the API gives for the same
  context), repeats and new products marked; served at ``/dashboard`` it asks the live API.

and the segment labels next to it (``segments.parquet``: user_id, segment, segment_name). Both
files are written atomically, after every input has been read and checked.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import plotly
import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs

from basketcast.features.history import order_lines
from basketcast.pipeline.dashboard import caveats as C
from basketcast.pipeline.dashboard import figures as F
from basketcast.pipeline.dashboard import insights as I
from basketcast.pipeline.dashboard import monitoring as MON
from basketcast.pipeline.dashboard import sections
from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.dashboard.explorer import EXPLORER_USERS, TOP_K, explorer_payload, peak_context
from basketcast.pipeline.dashboard.page import render_page
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.publish import Kind, check_output, publish_bytes, text_starting_with
from basketcast.pipeline.data.storage import DataManifest, Dataset, read_dataset, read_manifest
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.evaluation import figures as EF
from basketcast.pipeline.evaluation.bootstrap import Difference, paired_bootstrap
from basketcast.pipeline.evaluation.evaluate import BASELINES, RANKER, baseline_rankings
from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.pipeline.metrics import per_key_metrics
from basketcast.pipeline.model.windows import rows_of
from basketcast.pipeline.progress import Timings
from basketcast.pipeline.ranking import top_k
from basketcast.pipeline.workflows.run_folder import Run, load_run
from basketcast.pipeline.workflows.validation import evaluation_window
from basketcast.serving.bundle import is_run_folder
from basketcast.serving.model import Context, ServingModel

log = logging.getLogger(__name__)

__all__ = [
    "EXPLORER_USERS",
    "SEGMENTS_FILE",
    "TOP_K",
    "ReportResult",
    "best_baseline",
    "build_report",
    "explorer_payload",
    "peak_context",
    "segment_quality",
    "validation_metrics",
]

SEGMENTS_FILE: Final = "segments.parquet"
GENERATOR_META: Final = '<meta name="generator" content="basketcast report">'  # in page.html
DASHBOARD_PAGE = Kind("dashboard page (HTML)", folder=False, recognise=text_starting_with(GENERATOR_META))
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
    data_manifest: DataManifest
    run: Run
    report: EvaluationReport
    model: ServingModel


def _load(data_dir: Path, run_dir: Path) -> _Inputs:
    """Read and check every input first, so that a bad one fails before anything is computed or written."""
    data = read_dataset(data_dir)
    data_manifest = read_manifest(data_dir)
    run = load_run(run_dir)
    report = run.report()
    if not is_run_folder(run.path):
        raise DataError(
            f"{run.folder.bundle}: no serving bundle (the explorer needs it; `basketcast export --model {run_dir}`)"
        )
    model = ServingModel.load(run_dir)
    return _Inputs(data, data_manifest, run, report, model)


def validation_metrics(data: Dataset, lines: pl.DataFrame, run: Run, baseline: str) -> pl.DataFrame:
    """Per evaluated held-out user of the run (``evaluation_users``): NDCG@10 and recall@10 of the
    ranker and of ``baseline``.

    The run's window-0 evaluation rebuilt as ``basketcast.pipeline.workflows.run.evaluate`` does (features cut before
    each user's last labelled order, the run's evaluation ALS), scored with the run's ranker and
    measured with ``basketcast.pipeline.metrics.per_key_metrics``. Columns: USER, ``ranker_ndcg@10``,
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


def best_baseline(report: EvaluationReport) -> str:
    """The baseline with the highest NDCG@10 in the run's report."""
    present = [b for b in BASELINES if b in report.methods]
    return max(present, key=lambda b: report.methods[b][NDCG])


def build_report(
    data_dir: Path,
    run_dir: Path,
    out: Path,
    *,
    segments_out: Path | None = None,
    explorer_users: int = EXPLORER_USERS,
    segment_config: G.SegmentConfig | None = None,
    force: bool = False,
) -> ReportResult:
    """Write the dashboard of ``run_dir`` on ``data_dir`` to ``out`` and the segment labels to
    ``segments_out`` (default: ``segments.parquet`` next to ``out``). See the module doc."""
    out = Path(out)
    segments_out = Path(segments_out) if segments_out else out.parent / SEGMENTS_FILE
    sources = [Path(data_dir), Path(run_dir)]
    check_output(out, DASHBOARD_PAGE, force, sources)
    check_output(segments_out, G.SEGMENT_LABELS, force, sources)
    if explorer_users < 1:
        raise DataError(f"--explorer-users must be at least 1, got {explorer_users}")
    config = segment_config or G.SegmentConfig()
    timings = Timings()

    with timings.stage("load data, run and serving bundle"):
        inputs = _load(data_dir, run_dir)
        lines = order_lines(inputs.data)
    with timings.stage("shopping patterns"):
        grid = I.orders_by_dow_hour(inputs.data.orders)
        head = I.headline(inputs.data.orders, inputs.data.order_products)
        patterns = _pattern_figures(inputs.data, lines, grid)
    with timings.stage("customer segments (k-means, k by silhouette)"):
        seg = G.segment_users(inputs.data, config)
    baseline = best_baseline(inputs.report)
    with timings.stage("model quality per segment (held-out users)"):
        quality, lead, note = _model_quality(Path(data_dir), Path(run_dir), inputs, lines, seg, baseline, config.seed)
    with timings.stage("user explorer (serving bundle)"):
        ctx = peak_context(grid)
        explorer = explorer_payload(inputs.data, inputs.model, seg.labels, ctx, explorer_users, config.seed)
    with timings.stage("monitoring history"):
        histories = MON.load_histories(Path(run_dir))
    with timings.stage("figures and page"):
        figures = {
            **patterns,
            **_segment_figures(seg, quality, baseline),
            **F.model_figures(inputs.report, inputs.run.rankers.importance()),
            **MON.monitoring_figures(histories),
        }
        page = _page(
            _Page(
                Path(data_dir),
                Path(run_dir),
                inputs,
                head,
                seg,
                baseline,
                note,
                ctx,
                explorer,
                config,
                histories,
                caveats={
                    "model": C.model_caveats(inputs.report.methods, inputs.report.users, lead, baseline),
                    "segments": C.segment_caveats(seg, quality),
                },
            ),
            figures,
        )
        payload = page.encode()
        G.write_labels(seg, segments_out, force=force, inputs=sources)
        publish_bytes(out, payload, DASHBOARD_PAGE, force=force, inputs=sources)
    notes = [note] if note else []
    for message in notes:
        log.warning("%s", message)
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


def _pattern_figures(data: Dataset, lines: pl.DataFrame, grid: pl.DataFrame) -> dict[str, go.Figure]:
    """The shopping-pattern charts by chart id (``grid``: ``insights.orders_by_dow_hour``)."""
    return {
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


def _model_quality(
    data_dir: Path,
    run_dir: Path,
    inputs: _Inputs,
    lines: pl.DataFrame,
    seg: G.Segmentation,
    baseline: str,
    seed: int,
) -> tuple[pl.DataFrame | None, Difference | None, str | None]:
    """The model quality per segment and the ranker's lead over ``baseline`` (mean NDCG@10
    difference over the held-out users, paired bootstrap interval), or None, None and why they are
    left out (the data is not the run's)."""
    if inputs.data_manifest.fingerprint == inputs.run.manifest.data.fingerprint:
        per_user = validation_metrics(inputs.data, lines, inputs.run, baseline)
        scored = per_user.drop_nulls([f"ranker_{NDCG}", f"baseline_{NDCG}"])
        lead = (
            paired_bootstrap(scored[f"ranker_{NDCG}"].to_numpy(), scored[f"baseline_{NDCG}"].to_numpy(), seed=seed)
            if scored.height
            else None
        )
        return segment_quality(seg.labels, per_user), lead, None
    return (
        None,
        None,
        (
            f"{data_dir} is not the data {run_dir} was trained on: model quality per segment is left out "
            "(it needs the run's held-out users)."
        ),
    )


def _segment_figures(seg: G.Segmentation, quality: pl.DataFrame | None, baseline: str) -> dict[str, go.Figure]:
    figures = {
        "segment_silhouette": F.silhouette_line(seg.silhouette, seg.k),
        "segment_sizes": F.segment_sizes(seg.profiles),
        "segment_profiles": F.segment_profile_heatmap(seg.profiles, seg.zscores, seg.feature_names),
    }
    if quality is not None:
        figures["segment_quality"] = F.segment_quality_bars(quality, baseline)
    return figures


@dataclass(frozen=True)
class _Page:
    """What the page says besides its charts."""

    data_dir: Path
    run_dir: Path
    inputs: _Inputs
    head: dict[str, float]
    seg: G.Segmentation
    baseline: str
    quality_note: str | None  # why the per-segment model quality is left out (None: it is shown)
    ctx: Context
    explorer: dict[str, Any]
    config: G.SegmentConfig
    histories: MON.Histories  # RUN/monitoring: delayed quality and drift over time
    caveats: dict[str, list[str]] = field(default_factory=dict)  # section id → where its numbers are weak


def _with_monitoring(
    parts: list[tuple[str, str, str, str]], monitoring: tuple[str, str, str, str]
) -> list[tuple[str, str, str, str]]:
    """The page's sections with the Monitoring section after Model performance (last if absent)."""
    ids = [sid for sid, *_ in parts]
    at = ids.index("model") + 1 if "model" in ids else len(parts)
    return [*parts[:at], monitoring, *parts[at:]]


def _page(p: _Page, figures: dict[str, go.Figure]) -> str:
    """The whole HTML page: ``sections``' words around ``figures``, the explorer's data embedded."""
    report, run = p.inputs.report, p.inputs.run
    methods = F.ordered_methods(report.methods)
    built = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    trained = str(run.manifest.created)
    leads = sections.leads(p.head, p.seg, report.ranking_objective or RANKER)
    bodies = {
        "patterns": sections.patterns_section(),
        "segments": sections.segments_section(p.seg, p.baseline, p.quality_note, p.caveats.get("segments", [])),
        "model": sections.model_section(report, methods, p.caveats.get("model", [])),
        "explorer": sections.explorer_section(list(p.explorer["users"]), p.ctx),
    }
    segment_names = dict(
        zip(map(str, p.seg.profiles[G.SEGMENT].to_list()), p.seg.profiles[G.SEGMENT_NAME].to_list(), strict=True)
    )
    return render_page(
        title="basketcast insights",
        meta=sections.meta_line(
            str(p.data_dir), p.inputs.data_manifest, str(p.run_dir), trained, p.inputs.model.version, built
        ),
        kpis=sections.kpis(p.head, p.seg.k, methods[RANKER][NDCG], methods[p.baseline][NDCG]),
        sections=_with_monitoring(
            [(sid, title, leads[sid], bodies[sid]) for sid, title in sections.SECTION_TITLES],
            MON.section(p.histories, str(p.run_dir)),
        ),
        figures_json={
            "figures": {k: EF.figure_json(v) for k, v in figures.items()},
            "template": EF.template_json(),
        },
        explorer_json={**p.explorer, "segments": segment_names},
        plotly_js=get_plotlyjs(),
        footer=sections.footer(p.config, p.seg, len(p.explorer["users"]), p.ctx, plotly.__version__),
    )
