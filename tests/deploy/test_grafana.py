"""The Grafana dashboard (deploy/grafana/basketcast.json) against the series the code really exposes.

- The JSON model parses, is schemaVersion ≥ 39 and imports anywhere: every panel and query uses
  the ``${datasource}`` variable (a Prometheus data-source variable), no data source uid of ours.
- Every panel has PromQL targets, and every series a query names exists: the app is started
  in-process on the suite's trained model, requests of every kind are made (known and unknown
  users, a batch, a basket, a posted order, a cache hit, a 404 and a 422), ``GET /metrics`` is
  parsed with ``prometheus_client``'s parser and each series and each label the queries use
  (``by (…)``, matchers, ``{{label}}`` legends) must be on it. The drift series come from batch
  scoring (node_exporter textfile): they are checked against the text ``basketcast.serving.drift`` writes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from basketcast.serving.main import create_app
from basketcast.serving.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "basketcast.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Written by batch scoring (basketcast.serving.drift) as a node_exporter textfile, not by the API.
DRIFT_SERIES = (
    "basketcast_drift_psi",
    "basketcast_drift_score_psi",
    "basketcast_drift_flagged_features",
    "basketcast_drift_last_run_timestamp_seconds",
)
DRIFT_LABELS = {"basketcast_drift_psi": {"feature", "model_version"}}
# Series the dashboard must chart (the API's), besides the drift ones.
REQUIRED = (
    "basketcast_http_request_duration_seconds_bucket",
    "basketcast_http_requests_total",
    "basketcast_recommendations_total",
    "basketcast_prediction_cache_total",
    "basketcast_prediction_cache_hit_ratio",
    "basketcast_online_reads_total",
    "basketcast_order_write_seconds_bucket",
    "basketcast_orders_total",
    "basketcast_model_reloads_total",
    "basketcast_model_info",
)
# Labels Prometheus adds to every scraped series, and the histogram buckets' own.
SCRAPE_LABELS = {"job", "instance"}
UNKNOWN_USER = 4_000_000_000

METRIC = re.compile(r"\b(basketcast_[A-Za-z0-9_]+)\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\{([^{}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out += panel.get("panels", [])  # a collapsed row holds its panels
    return [p for p in out if p["type"] != "row"]


def queries() -> list[tuple[str, str, str]]:
    """(panel title, PromQL, legend format) of every target."""
    return [(p["title"], t["expr"], t.get("legendFormat", "")) for p in panels() for t in p["targets"]]


def labels_used(expr: str, legend: str) -> set[str]:
    """Label names a query groups by, matches on or shows in its legend."""
    used = {name.strip() for group in GROUPING.findall(expr) for name in group.split(",") if name.strip()}
    used |= {name for selector in SELECTOR.findall(expr) for name in MATCHER.findall(selector)}
    return used | set(LEGEND.findall(legend))


def exposition(text: str) -> dict[str, set[str]]:
    """Sample name → the label names its samples carry, from a Prometheus text exposition."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def drift_exposition() -> dict[str, set[str]]:
    """What ``basketcast score`` writes for node_exporter (``basketcast.serving.drift.prometheus_text``), or,
    before that module exists, the series it is to write."""
    try:
        from basketcast.serving import drift
    except ImportError:
        return {name: DRIFT_LABELS.get(name, {"model_version"}) for name in DRIFT_SERIES}
    # Only what the exposition reads (model_construct: no validation of the summary's other fields).
    feature: dict[str, Any] = {"psi": 0.3}
    values: dict[str, Any] = {
        "model_version": "v1",
        "features": {"u_days_mean": drift.FeatureDrift.model_construct(**feature)},
        "score": drift.FeatureDrift.model_construct(**feature),
        "score_psi": 0.3,
        "flagged": ["u_days_mean"],
        "scored_users": 500,
    }
    summary = drift.DriftSummary.model_construct(**values)
    return exposition(drift.prometheus_text(summary, time.time()).decode())


@pytest.fixture(scope="module")
def api_exposition(excerpt_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of the app on the suite's run after requests of every kind (its own stores)."""
    run = excerpt_run["run"]
    users = np.load(run / "serving" / "users.npy")[:3].tolist()
    state = tmp_path_factory.mktemp("grafana-state")
    app = create_app(Settings(model_dir=run, state_dir=state, reload_on_sighup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        for _ in range(2):  # the second answer comes from the prediction cache
            assert c.get(f"/v1/users/{users[0]}/recommendations?k=5").status_code == 200
        assert c.get(f"/v1/users/{UNKNOWN_USER}/recommendations").json()["strategy"] == "popular"
        assert c.post("/v1/recommendations", json={"user_ids": [*users, UNKNOWN_USER], "k": 3}).status_code == 200
        assert c.get(f"/v1/users/{users[1]}/basket").status_code == 200
        top = c.get(f"/v1/users/{users[2]}/recommendations?k=2").json()["items"]
        order = {"order_id": "grafana-1", "user_id": users[2], "products": [top[0]["product_id"]]}
        assert c.post("/v1/orders", json=order).status_code == 201
        assert c.get(f"/v1/users/{users[2]}/recommendations").json()["freshness"] == "fresh"
        assert c.get("/v1/users/1/recommendations?k=0").status_code == 422
        assert c.get("/no/such/route").status_code == 404
        r = c.get("/metrics")
        assert r.status_code == 200
        yield r.text


def test_the_dashboard_imports_anywhere() -> None:
    d = dashboard()
    assert d["schemaVersion"] >= 39 and d["title"] and d["uid"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["datasource"] == DATASOURCE
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)) and len(ids) >= 10
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel.get("description"), panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip() and target["refId"], panel["title"]
    # No data source uid of ours anywhere (only the variable and Grafana's built-in annotations).
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text()))
    assert uids <= {"${datasource}", "-- Grafana --", d["uid"]}


def test_queries_are_balanced() -> None:
    for title, expr, _ in queries():
        for open_, close in ("()", "{}", "[]"):
            depth = 0
            for ch in expr:
                depth += (ch == open_) - (ch == close)
                assert depth >= 0, (title, expr)
            assert depth == 0, (title, expr)


def test_every_series_and_label_the_queries_use_is_exposed(api_exposition: str) -> None:
    api = exposition(api_exposition)
    drift = drift_exposition()
    assert set(DRIFT_SERIES) <= set(drift)
    assert not set(drift) & set(api)  # the API does not serve them: the textfile collector does
    exposed = {**api, **drift}
    used: set[str] = set()
    for title, expr, legend in queries():
        names = set(METRIC.findall(expr))
        assert names, (title, expr)
        missing = names - set(exposed)
        assert not missing, f"{title}: {sorted(missing)} not exposed (have {sorted(exposed)})"
        available = set().union(*(exposed[n] for n in names)) | SCRAPE_LABELS
        unknown = labels_used(expr, legend) - available
        assert not unknown, f"{title}: labels {sorted(unknown)} are on none of {sorted(names)}"
        if names & set(DRIFT_SERIES):
            assert "$job" not in expr, f"{title}: drift series come from node_exporter's job"
        used |= names
    assert set(REQUIRED) | set(DRIFT_SERIES) <= used


def test_the_requests_were_counted_by_strategy(api_exposition: str) -> None:
    strategies = {
        (s.labels["route"], s.labels["strategy"]): s.value
        for family in text_string_to_metric_families(api_exposition)
        for s in family.samples
        if s.name == "basketcast_recommendations_total"
    }
    one, many = "/v1/users/{user_id}/recommendations", "/v1/recommendations"
    assert strategies[(one, "ranker")] == 4  # a miss, a hit (from the cache), two more
    assert strategies[(one, "popular")] == 1
    assert strategies[(many, "ranker")] == 3 and strategies[(many, "popular")] == 1
    assert strategies[("/v1/users/{user_id}/basket", "ranker")] == 1


def test_drift_panels_say_where_the_series_come_from() -> None:
    for panel in panels():
        if any(name in t["expr"] for t in panel["targets"] for name in DRIFT_SERIES):
            assert "textfile" in panel["description"] and "basketcast score" in panel["description"], panel["title"]
