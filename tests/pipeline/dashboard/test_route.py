"""``GET /dashboard``: the page when one was built, the 404 envelope when not; no plotting in serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from basketcast.serving.bundle import BUNDLE, DASHBOARD
from basketcast.serving.main import create_app
from basketcast.serving.routers.dashboard import DashboardSettings, get_dashboard_settings
from basketcast.serving.settings import Settings
from tests.pipeline.dashboard.conftest import BuiltReport

PAGE = b"<!DOCTYPE html><html><body>dashboard</body></html>\n"


def client_for(model_dir: Path | None, dashboard: Path | None = None) -> TestClient:
    app = create_app(Settings(model_dir=model_dir, reload_on_sighup=False))
    app.dependency_overrides[get_dashboard_settings] = lambda: DashboardSettings(dashboard_path=dashboard)
    return TestClient(app, raise_server_exceptions=False)


def test_missing_dashboard_is_a_404_envelope(tmp_path: Path) -> None:
    with client_for(tmp_path / "run") as c:
        r = c.get("/dashboard")
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "not_found" and str(tmp_path / "run" / DASHBOARD) in error["message"]
    assert "basketcast report" in error["message"]
    with client_for(None) as c:
        assert c.get("/dashboard").json()["error"]["status"] == 404


def test_serves_the_run_folders_dashboard(built_report: BuiltReport) -> None:
    with client_for(built_report.run) as c:
        r = c.get("/dashboard")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.content == built_report.html.read_bytes()
        assert r.headers["cache-control"] == "no-cache"
    # BASKETCAST_MODEL_DIR may name the bundle itself: the page is in the folder holding it.
    with client_for(built_report.run / BUNDLE) as c:
        assert c.get("/dashboard").content == built_report.html.read_bytes()


def test_configured_path_wins_and_is_read_per_request(tmp_path: Path) -> None:
    page = tmp_path / "elsewhere" / "page.html"
    with client_for(tmp_path / "run", dashboard=page) as c:
        assert c.get("/dashboard").status_code == 404
        page.parent.mkdir()
        page.write_bytes(PAGE)
        assert c.get("/dashboard").content == PAGE  # built after the server started: served at once
        page.write_bytes(PAGE.replace(b"dashboard", b"rebuilt"))
        assert b"rebuilt" in c.get("/dashboard").content


def test_dashboard_path_from_the_environment(tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    env = {"BASKETCAST_DASHBOARD_PATH": str(page)}
    code = "from basketcast.serving.routers.dashboard import DashboardSettings as D; print(D().dashboard_path)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(page)


def test_serving_imports_no_plotting_or_dataframe_library() -> None:
    code = (
        "import sys, basketcast.serving.main; "
        "print(sorted(m for m in ('plotly', 'pandas', 'sklearn', 'matplotlib', 'basketcast.pipeline.dashboard.report') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
