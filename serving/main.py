"""The FastAPI application: ``create_app()`` builds it, ``app`` is what uvicorn serves.

Nothing is loaded at import: the lifespan reads the settings (``BASKETCAST_MODEL_DIR``...) and
loads the model when the server starts. If that fails the app still starts: ``/health`` says
200, ``/ready`` and the recommendation routes 503 with the reason, and a later reload (POST
/admin/reload or SIGHUP) can bring a model in. Run it with ``basketcast serve`` (or
``serving.server.serve``), or ``uvicorn serving.main:app`` with the env var set.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving.errors import BodySizeLimitMiddleware, install_error_handlers
from serving.metrics import Metrics, MetricsMiddleware
from serving.routers import ROUTERS, dashboard
from serving.settings import Settings, get_settings, resolve_settings
from serving.state import ModelHolder, install_sighup_reload

log = logging.getLogger(__name__)

DESCRIPTION = """Next-basket recommendations for grocery e-commerce.

Errors are always `{"error": {"status", "code", "message", ...}}`. Unknown users are not an
error: they get the popular list, flagged `strategy: "popular"`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model (a failure is kept for /ready), reload on SIGHUP, clean up at shutdown."""
    settings = resolve_settings(app)
    metrics: Metrics = app.state.metrics
    holder = ModelHolder(settings.model_dir, on_change=metrics.observe_reload)
    # Before the first load: a SIGHUP arriving meanwhile then reloads right after it.
    uninstall = install_sighup_reload(holder) if settings.reload_on_sighup else None
    holder.load_initial()
    app.state.models = holder
    try:
        yield
    finally:
        if uninstall is not None:
            uninstall()
        metrics.process_exit()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` (else the environment's, read at startup) decide what it serves."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("basketcast")
    except PackageNotFoundError:
        app_version = "0"
    app = FastAPI(title="basketcast", version=app_version, description=DESCRIPTION, lifespan=lifespan)
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    # Added last = outermost: the metrics see every answer, 413s included.
    app.add_middleware(BodySizeLimitMiddleware, limit=lambda: resolve_settings(app).max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(dashboard.router)  # GET /dashboard: the page `basketcast report` wrote, if any
    return app


app = create_app()
