"""The dashboard's Monitoring section on synthetic histories: what it reads, draws and says."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from basketcast.pipeline.dashboard import monitoring as MON
from basketcast.pipeline.dashboard.page import render_page
from basketcast.pipeline.dashboard.report import _with_monitoring
from basketcast.pipeline.evaluation import figures as EF
from basketcast.pipeline.evaluation.monitor import KAGGLE_F1, NDCG_K, RECALL_K
from basketcast.pipeline.workflows.monitor import DRIFT_HISTORY_FILE, HISTORY_FILE, MONITORING


def quality_entry(created: str, recall: float, ndcg: float, f1: float, users: int) -> dict[str, object]:
    return {
        "created_at": created,
        "model_version": "v1",
        "users": users,
        "metrics": {RECALL_K: recall, NDCG_K: ndcg, KAGGLE_F1: f1},
        "intervals": {},
        "predictions": "/x/scores.parquet",
        "data": "/x/data",
        "out": "/x/run/monitoring/t",
    }


def drift_entry(created: str, score_psi: float, features: dict[str, float], flagged: list[str]) -> dict[str, object]:
    return {
        "created_at": created,
        "model_version": "v1",
        "score_psi": score_psi,
        "flagged": flagged,
        "features": {name: {"psi": psi, "status": "drift" if psi > 0.25 else "ok"} for name, psi in features.items()},
    }


@pytest.fixture
def run_with_history(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    folder = run / MONITORING
    folder.mkdir(parents=True)
    entries = [
        quality_entry("2026-12-03T08:00:00+00:00", 0.40, 0.42, 0.38, 200),
        quality_entry("2026-12-01T08:00:00+00:00", 0.45, 0.47, 0.41, 180),  # out of order: sorted by time
        quality_entry("2026-12-05T09:30:00Z", 0.35, 0.37, 0.33, 210),
    ]
    lines = [json.dumps(entries[0]), json.dumps(entries[1]), "", '{"created_at": "2026-12-04T08:00:0', "[1, 2]"]
    lines.append(json.dumps(entries[2]))
    lines.append(json.dumps({"created_at": "2026-12-06T00:00:00Z", "metrics": {}}))  # nothing to draw
    (folder / HISTORY_FILE).write_text("\n".join(lines) + "\n")
    drift = [
        drift_entry("2026-12-01T07:00:00+00:00", 0.02, {"u_days_mean": 0.01, "up_orders": 0.05, "p_buyers": 0.3}, []),
        drift_entry("2026-12-02T07:00:00+00:00", 0.12, {"u_days_mean": 0.2, "up_orders": 0.04}, ["p_buyers"]),
    ]
    # drift.json itself has the scores' PSI as score.psi
    drift[1]["score"] = {"psi": drift[1].pop("score_psi"), "status": "moderate"}
    (folder / DRIFT_HISTORY_FILE).write_text("\n".join(json.dumps(d) for d in drift) + "\nnot json\n")
    return run


def test_histories_are_read_in_time_order_and_bad_lines_skipped_with_a_warning(
    run_with_history: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=MON.__name__):
        h = MON.load_histories(run_with_history)
    assert h.quality[MON.CREATED].to_list() == ["2026-12-01 08:00:00", "2026-12-03 08:00:00", "2026-12-05 09:30:00"]
    assert h.quality[RECALL_K].to_list() == [0.45, 0.40, 0.35]
    assert h.quality[MON.USERS].to_list() == [180, 200, 210]
    assert h.drift.height == 2 and h.drift[MON.SCORE_PSI].to_list() == [0.02, 0.12]
    warned = [r.getMessage() for r in caplog.records]
    assert any("history.jsonl, line 4" in m for m in warned)  # the half-written line
    assert any("history.jsonl, line 5" in m for m in warned)  # a JSON value that is not an object
    assert any("entry 4: no created_at or no metrics" in m for m in warned)
    assert any("drift-history.jsonl, line 3" in m for m in warned)


def test_figures_draw_every_run(run_with_history: Path) -> None:
    h = MON.load_histories(run_with_history)
    figures = MON.monitoring_figures(h)
    assert set(figures) == {MON.QUALITY_CHART, MON.DRIFT_CHART}
    quality = {t.name: list(t.y) for t in figures[MON.QUALITY_CHART].data}
    assert quality == {"Recall@10": [0.45, 0.40, 0.35], "NDCG@10": [0.47, 0.42, 0.37], "Kaggle F1": [0.41, 0.38, 0.33]}
    drift = {t.name: list(t.y) for t in figures[MON.DRIFT_CHART].data}
    # The score, then the features by their largest PSI; a feature missing from a run is a gap.
    assert list(drift) == ["ranker score", "p_buyers", "u_days_mean", "up_orders"]
    assert drift["ranker score"] == [0.02, 0.12]
    assert drift["p_buyers"] == [0.3, None]
    for fig in figures.values():
        json.dumps(EF.figure_json(fig))  # what the page embeds


def test_section_shows_the_charts_and_the_last_values(run_with_history: Path) -> None:
    h = MON.load_histories(run_with_history)
    sid, title, lead, body = MON.section(h, "artifacts/model")
    assert (sid, title) == ("monitoring", "Monitoring")
    assert f'id="{MON.QUALITY_CHART}"' in body and f'id="{MON.DRIFT_CHART}"' in body
    assert "2026-12-05 09:30:00 UTC" in lead and "Recall@10 0.350" in lead
    assert "score PSI 0.120, 1 feature flagged (p_buyers)" in lead
    assert "basketcast monitor" in body  # the caption says where the points come from


def test_without_history_the_section_says_how_to_produce_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    h = MON.load_histories(run)
    assert h.quality.height == 0 and h.drift.height == 0
    assert MON.monitoring_figures(h) == {}
    _, _, lead, body = MON.section(h, "artifacts/model")
    assert "nothing recorded" in lead
    assert "basketcast score --model artifacts/model --out SCORES.parquet" in body
    assert "basketcast monitor --data NEW_DATA --model artifacts/model --predictions SCORES.parquet" in body
    assert "drift-history.jsonl" in body and 'class="chart"' not in body


def test_only_drift_recorded(run_with_history: Path) -> None:
    (run_with_history / MONITORING / HISTORY_FILE).unlink()
    h = MON.load_histories(run_with_history)
    assert set(MON.monitoring_figures(h)) == {MON.DRIFT_CHART}
    _, _, _, body = MON.section(h, "run")
    assert "nothing monitored yet" in body and f'id="{MON.DRIFT_CHART}"' in body


def test_the_section_comes_after_model_performance_on_the_page(run_with_history: Path) -> None:
    h = MON.load_histories(run_with_history)
    parts = [(s, s.title(), "lead", "") for s in ("patterns", "segments", "model", "explorer")]
    ordered = _with_monitoring(parts, MON.section(h, "run"))
    assert [s for s, *_ in ordered] == ["patterns", "segments", "model", "monitoring", "explorer"]
    page = render_page(
        title="t",
        meta="m",
        kpis=[],
        sections=ordered,
        figures_json={"figures": {k: EF.figure_json(v) for k, v in MON.monitoring_figures(h).items()}},
        explorer_json={},
        plotly_js="",
        footer="",
    )
    assert '<a href="#monitoring">Monitoring</a>' in page
    assert page.index('<section id="model">') < page.index('<section id="monitoring">')
