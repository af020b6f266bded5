"""The dashboard's Monitoring section: delayed quality and drift of the run, over time.

Two append-only histories in ``RUN/monitoring/`` feed it:

- ``history.jsonl`` — one line per ``basketcast monitor`` run
  (``basketcast.pipeline.workflows.monitor.HistoryEntry``): when, how many users were scored, their Recall@10,
  NDCG@10 and Kaggle F1 against the orders that arrived after the predictions;
- ``drift-history.jsonl`` — one drift summary per ``basketcast score`` run (the ``SCORES.drift.json``
  written beside each scores output: ``created_at``, ``model_version``, ``score_psi`` or
  ``score: {psi, …}``, ``flagged`` feature names, ``features`` {name: {psi, status, …}}).

Either may be absent (nothing monitored yet) and a line that cannot be read — a half-written last
line, a summary of another version — is skipped with a warning: the page is still built. Without
either, the section says how to produce them.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import plotly.graph_objects as go
import polars as pl

from basketcast.pipeline.dashboard.page import chart
from basketcast.pipeline.evaluation import figures as EF
from basketcast.pipeline.evaluation.monitor import KAGGLE_F1, NDCG_K, QUALITY, RECALL_K
from basketcast.pipeline.workflows.monitor import DRIFT_HISTORY_FILE, HISTORY_FILE, MONITORING, monitoring_dir

log = logging.getLogger(__name__)

SECTION_ID: Final = "monitoring"
SECTION_TITLE: Final = "Monitoring"
QUALITY_CHART: Final = "monitoring_quality"
DRIFT_CHART: Final = "monitoring_drift"
# Columns of the history frames.
CREATED: Final = "created_at"  # "YYYY-MM-DD HH:MM:SS", UTC (what plotly.js reads as a date)
VERSION: Final = "model_version"
USERS: Final = "users"
SCORE_PSI: Final = "score_psi"
FLAGGED: Final = "flagged"  # List[str]: the features the drift run flagged
FEATURE_PSI: Final = "feature_psi"  # String: the JSON object {feature: psi} of the run
DRIFT_FEATURES_SHOWN: Final = 8  # the features with the largest PSI get a line each
# The usual reading of a population stability index: below 0.1 stable, above 0.25 a large shift.
PSI_LINES: Final = ((0.1, "0.1: moderate shift"), (0.25, "0.25: large shift"))
QUALITY_COLORS: Final[dict[str, str]] = {RECALL_K: "#1f77b4", NDCG_K: EF.RANKER_COLOR, KAGGLE_F1: "#2ca02c"}
# The features' lines (D3's palette without the red of the scores' line).
FEATURE_COLORS: Final = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
QUALITY_LABELS: Final[dict[str, str]] = {RECALL_K: "Recall@10", NDCG_K: "NDCG@10", KAGGLE_F1: "Kaggle F1"}

e = html.escape


@dataclass(frozen=True)
class Histories:
    """What ``RUN/monitoring`` holds: the delayed quality and the drift runs, oldest first."""

    folder: Path
    quality: pl.DataFrame  # CREATED, VERSION, USERS, *QUALITY
    drift: pl.DataFrame  # CREATED, VERSION, SCORE_PSI, FLAGGED, FEATURE_PSI


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; [] when it does not exist. A line that is
    not a JSON object is skipped with a warning naming the file and the line."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("%s: unreadable, left out of the dashboard (%s)", path, exc)
        return []
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            out.append(value)
        else:
            log.warning("%s, line %d: not a JSON object, skipped", path, number)
    return out


def _utc(value: object) -> str | None:
    """An ISO 8601 time as ``YYYY-MM-DD HH:MM:SS`` UTC (naive = UTC); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def quality_history(path: Path) -> pl.DataFrame:
    """``history.jsonl`` as a frame (CREATED, VERSION, USERS, *QUALITY), oldest first; entries
    without a time or any metric are skipped with a warning."""
    rows = []
    for i, entry in enumerate(read_jsonl(path), start=1):
        created = _utc(entry.get("created_at"))
        metrics = entry.get("metrics")
        values = {m: _number(metrics.get(m)) for m in QUALITY} if isinstance(metrics, dict) else {}
        if created is None or not any(v is not None for v in values.values()):
            log.warning("%s, entry %d: no created_at or no metrics, skipped", path, i)
            continue
        users = _number(entry.get("users"))
        rows.append(
            {
                CREATED: created,
                VERSION: str(entry.get("model_version", "")),
                USERS: None if users is None else int(users),
                **values,
            }
        )
    schema: dict[str, pl.DataType] = {CREATED: pl.String(), VERSION: pl.String(), USERS: pl.Int64()}
    schema.update({m: pl.Float64() for m in QUALITY})
    return pl.DataFrame(rows, schema=schema, orient="row").sort(CREATED)


def drift_history(path: Path) -> pl.DataFrame:
    """``drift-history.jsonl`` as a frame (CREATED, VERSION, SCORE_PSI, FLAGGED, FEATURE_PSI),
    oldest first; summaries without a time are skipped with a warning."""
    rows = []
    for i, entry in enumerate(read_jsonl(path), start=1):
        created = _utc(entry.get("created_at"))
        if created is None:
            log.warning("%s, entry %d: no created_at, skipped", path, i)
            continue
        features = entry.get("features")
        psi = {}
        if isinstance(features, dict):
            for name, info in features.items():
                value = _number(info.get("psi")) if isinstance(info, dict) else _number(info)
                if value is not None:
                    psi[str(name)] = value
        flagged = entry.get("flagged")
        score = entry.get("score")  # drift.json's {"psi", "status", …} of the scores, when no score_psi
        score_psi = entry.get("score_psi", score.get("psi") if isinstance(score, dict) else None)
        rows.append(
            {
                CREATED: created,
                VERSION: str(entry.get("model_version", "")),
                SCORE_PSI: _number(score_psi),
                FLAGGED: [str(f) for f in flagged] if isinstance(flagged, list) else [],
                FEATURE_PSI: json.dumps(psi, sort_keys=True),
            }
        )
    schema: dict[str, pl.DataType] = {
        CREATED: pl.String(),
        VERSION: pl.String(),
        SCORE_PSI: pl.Float64(),
        FLAGGED: pl.List(pl.String),
        FEATURE_PSI: pl.String(),
    }
    return pl.DataFrame(rows, schema=schema, orient="row").sort(CREATED)


def load_histories(run_dir: Path) -> Histories:
    """Both histories of the run folder (empty frames where there is none)."""
    folder = monitoring_dir(Path(run_dir))
    return Histories(folder, quality_history(folder / HISTORY_FILE), drift_history(folder / DRIFT_HISTORY_FILE))


# --- figures ------------------------------------------------------------------------------
def quality_figure(quality: pl.DataFrame) -> go.Figure:
    """Recall@10, NDCG@10 and Kaggle F1 of each monitor run over time (``quality_history``)."""
    fig = EF.new_figure(320, legend={"orientation": "h", "y": 1.12, "x": 0})
    custom = list(zip(quality[USERS].to_list(), quality[VERSION].to_list(), strict=True))
    for name in QUALITY:
        fig.add_trace(
            go.Scatter(
                x=quality[CREATED].to_list(),
                y=quality[name].to_list(),
                name=QUALITY_LABELS[name],
                mode="lines+markers",
                line={"color": QUALITY_COLORS[name], "width": 3 if name == NDCG_K else 2},
                customdata=custom,
                hovertemplate=f"%{{x}} UTC: {QUALITY_LABELS[name]} %{{y:.4f}} "
                "(%{customdata[0]:,} users, model %{customdata[1]})<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="monitor run (UTC)", type="date")
    fig.update_yaxes(title_text="mean over users scored", rangemode="tozero")
    return fig


def top_features(drift: pl.DataFrame, n: int = DRIFT_FEATURES_SHOWN) -> list[str]:
    """The ``n`` features with the largest PSI in any drift run (ties by name)."""
    best: dict[str, float] = {}
    for text in drift[FEATURE_PSI].to_list():
        for name, value in json.loads(text).items():
            best[name] = max(best.get(name, float("-inf")), value)
    return sorted(best, key=lambda name: (-best[name], name))[:n]


def drift_figure(drift: pl.DataFrame) -> go.Figure:
    """The score's PSI and the most drifting features' PSI per scoring run (``drift_history``)."""
    fig = EF.new_figure(340, legend={"orientation": "h", "y": 1.15, "x": 0})
    x = drift[CREATED].to_list()
    flagged = [len(f) for f in drift[FLAGGED].to_list()]
    custom = list(zip(flagged, drift[VERSION].to_list(), strict=True))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=drift[SCORE_PSI].to_list(),
            name="ranker score",
            mode="lines+markers",
            line={"color": EF.RANKER_COLOR, "width": 3},
            customdata=custom,
            hovertemplate="%{x} UTC: score PSI %{y:.3f} (%{customdata[0]} features flagged, "
            "model %{customdata[1]})<extra></extra>",
        )
    )
    per_run = [json.loads(text) for text in drift[FEATURE_PSI].to_list()]
    for i, name in enumerate(top_features(drift)):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[psi.get(name) for psi in per_run],
                name=name,
                mode="lines+markers",
                line={"width": 1.5, "color": FEATURE_COLORS[i % len(FEATURE_COLORS)]},
                marker={"size": 5},
                hovertemplate=f"%{{x}} UTC: {e(name)} PSI %{{y:.3f}}<extra></extra>",
            )
        )
    for y, label in PSI_LINES:
        fig.add_hline(
            y=y,
            line={"dash": "dot", "color": EF.BASELINE_COLOR, "width": 1},
            annotation_text=label,
            annotation_position="top left",
        )
    fig.update_xaxes(title_text="scoring run (UTC)", type="date")
    fig.update_yaxes(title_text="population stability index", rangemode="tozero")
    return fig


def monitoring_figures(h: Histories) -> dict[str, go.Figure]:
    """The section's charts by chart id: only those with a history to draw."""
    figures = {}
    if h.quality.height:
        figures[QUALITY_CHART] = quality_figure(h.quality)
    if h.drift.height:
        figures[DRIFT_CHART] = drift_figure(h.drift)
    return figures


# --- words ----------------------------------------------------------------------------------
def _howto(title: str, text: str) -> str:
    return f'<div class="card wide"><h3>{e(title)}</h3><p class="cap">{text}</p></div>'


def monitoring_section(h: Histories, run_dir: str) -> str:
    """The section's HTML: a chart card per history, or how to produce it where there is none."""
    run = e(run_dir)
    cards = []
    if h.quality.height:
        last = h.quality.row(-1, named=True)
        cards.append(
            chart(
                QUALITY_CHART,
                "Delayed quality: the predictions against the orders that came after them",
                f"Each point is a <code>basketcast monitor</code> run ({h.quality.height} so far; the last scored "
                f"{last[USERS] or 0:,} users): the scores file's top 10 against each user's first order after the "
                "snapshot (Recall@10, NDCG@10) and the bundle's F1-optimal basket against its reordered products "
                f"(Kaggle F1). From <code>{e(str(h.folder / HISTORY_FILE))}</code>.",
                wide=True,
            )
        )
    else:
        cards.append(
            _howto(
                "Delayed quality: nothing monitored yet",
                f"Score the users with <code>basketcast score --model {run} --out SCORES.parquet</code>; once "
                f"their next orders have arrived (e.g. <code>basketcast orders merge --data DATA --out NEW_DATA</code>"
                f"), run <code>basketcast monitor --data NEW_DATA --model {run} --predictions SCORES.parquet</code>. "
                f"Each run appends a line to <code>{MONITORING}/{HISTORY_FILE}</code> in the run folder, drawn here "
                "over time.",
            )
        )
    if h.drift.height:
        cards.append(
            chart(
                DRIFT_CHART,
                "Drift of each batch scoring",
                "Population stability index of the ranker's scores and of the "
                f"{min(DRIFT_FEATURES_SHOWN, len(top_features(h.drift)))} features that drifted most, per "
                f"<code>basketcast score</code> run ({h.drift.height} so far), against the training data; "
                f"hover for the number of flagged features. From <code>{e(str(h.folder / DRIFT_HISTORY_FILE))}</code>.",
                wide=True,
            )
        )
    else:
        cards.append(
            _howto(
                "Drift: no scoring run recorded yet",
                f"Every <code>basketcast score --model {run} --out SCORES.parquet</code> writes a drift summary beside "
                f"its output (<code>SCORES.drift.json</code>) and lists it in "
                f"<code>{MONITORING}/{DRIFT_HISTORY_FILE}</code> in the run folder, drawn here over time.",
            )
        )
    return "".join(['<div class="grid">', *cards, "</div>"])


def monitoring_lead(h: Histories) -> str:
    """The section's lead paragraph."""
    parts = []
    if h.quality.height:
        last = h.quality.row(-1, named=True)
        values = ", ".join(
            f"{QUALITY_LABELS[m]} {last[m]:.3f}" for m in QUALITY if isinstance(last[m], float) and last[m] == last[m]
        )
        parts.append(f"Last monitor run {e(last[CREATED])} UTC: {values}.")
    if h.drift.height:
        last = h.drift.row(-1, named=True)
        psi = last[SCORE_PSI]
        flagged = last[FLAGGED] or []
        score = "n/a" if psi is None else f"{psi:.3f}"
        parts.append(
            f"Last scoring run {e(last[CREATED])} UTC: score PSI {score}, {len(flagged)} feature"
            f"{'' if len(flagged) == 1 else 's'} flagged"
            + (f" ({e(', '.join(flagged[:5]))}{', …' if len(flagged) > 5 else ''})" if flagged else "")
            + "."
        )
    if not parts:
        return "How the model does after it was trained: nothing recorded for this run yet."
    return " ".join(parts)


def section(h: Histories, run_dir: str) -> tuple[str, str, str, str]:
    """(anchor id, heading, lead, body) of the section, as ``page.render_page`` takes it."""
    return SECTION_ID, SECTION_TITLE, monitoring_lead(h), monitoring_section(h, run_dir)
