"""``GET /dashboard``: the insights dashboard written by ``basketcast report``, when one exists.

The page is a static file; this route only streams it (no plotting library is imported here).
Which file: ``BASKETCAST_DASHBOARD_PATH`` if set, else ``dashboard.html`` in the served run folder
(the model folder, or the folder holding it when ``BASKETCAST_MODEL_DIR`` names the ``serving/``
bundle itself) — where ``make dashboard`` writes it. The file is looked up on every request, so a
rebuilt report is served at once; without one the answer is the usual 404 error envelope. Served
here, the page's user explorer asks this API (``v1/users/{id}/recommendations``) for any user.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from basketcast.serving.bundle import DASHBOARD, run_dir_of
from basketcast.serving.errors import ApiError
from basketcast.serving.schemas import ErrorResponse
from basketcast.serving.settings import ENV_PREFIX, Settings, get_settings

router = APIRouter(tags=["dashboard"])


class DashboardSettings(BaseSettings):
    """``BASKETCAST_DASHBOARD_PATH``: the dashboard HTML to serve (default: see the module doc)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    dashboard_path: Path | None = Field(default=None, description="The HTML file served at /dashboard.")


@lru_cache
def get_dashboard_settings() -> DashboardSettings:
    """The dashboard settings from the environment (read once, then cached)."""
    return DashboardSettings()


def dashboard_path(settings: Settings, dashboard: DashboardSettings) -> Path | None:
    """The file to serve at /dashboard, None when neither a path nor a model folder is configured."""
    if dashboard.dashboard_path is not None:
        return dashboard.dashboard_path
    if settings.model_dir is None:
        return None
    return run_dir_of(settings.model_dir) / DASHBOARD


@router.get(
    "/dashboard",
    response_class=FileResponse,
    summary="The insights dashboard (HTML), when `basketcast report` has written one",
    responses={
        200: {"content": {"text/html": {}}, "description": "The dashboard page."},
        404: {"model": ErrorResponse, "description": "No dashboard has been built for the served model."},
    },
)
def dashboard(
    settings: Annotated[Settings, Depends(get_settings)],
    dashboard: Annotated[DashboardSettings, Depends(get_dashboard_settings)],
) -> FileResponse:
    """The dashboard page; 404 (JSON error envelope) when it has not been built."""
    path = dashboard_path(settings, dashboard)
    if path is None or not path.is_file():
        where = f"at {path}" if path is not None else "configured (no model folder, no BASKETCAST_DASHBOARD_PATH)"
        raise ApiError(
            404,
            "not_found",
            f"no dashboard {where}; build it with `basketcast report --data DATA --model RUN --out "
            f"RUN/{DASHBOARD}` (or `make dashboard`)",
        )
    return FileResponse(path, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})
