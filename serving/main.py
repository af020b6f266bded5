"""The FastAPI application: ``create_app()`` builds it, ``app`` is what uvicorn serves.

Nothing is loaded at import: the lifespan reads the settings (``BASKETCAST_MODEL_DIR``...) and
loads the model when the server starts (a folder, ``BASKETCAST_MODEL_DIR``, or a registry
alias, ``BASKETCAST_MODEL_URI``, resolved again at every reload: ``basketcast.serving.registry``). If that
fails the app still starts: ``/health`` says 200, ``/ready`` and the recommendation routes 503
with the reason, and a later reload (POST /admin/reload or SIGHUP) can bring a model in. Run it
with ``basketcast serve`` (or ``basketcast.serving.server.serve``), or ``uvicorn basketcast.serving.main:app`` with the
env var set.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from basketcast.serving.errors import BodySizeLimitMiddleware, install_error_handlers
from basketcast.serving.metrics import Metrics, MetricsMiddleware
from basketcast.serving.realtime import open_realtime
from basketcast.serving.registry import RegistrySource
from basketcast.serving.routers import ROUTERS, admin, dashboard, docs
from basketcast.serving.schemas import not_null
from basketcast.serving.settings import Settings, get_settings, resolve_settings
from basketcast.serving.state import ModelHolder, ReloadResult, install_sighup_reload

log = logging.getLogger(__name__)

DESCRIPTION = """Next-basket recommendations for grocery e-commerce.

Errors are always `{"error": {"status", "code", "message", ...}}`. Unknown users are not an
error: they get the popular list, flagged `strategy: "popular"`.

Limits: `k` 1-100; ids 0-4294967295; up to 1,000 `user_ids` per batch and 1,000 ids per
`exclude` / `cart`; request bodies up to 1 MiB (413 above; `BASKETCAST_MAX_BODY_BYTES`).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model (a failure is kept for /ready), reload on SIGHUP, clean up at shutdown."""
    settings = resolve_settings(app)
    metrics: Metrics = app.state.metrics
    source = RegistrySource(settings.model_uri, settings.state_dir / "registry") if settings.model_uri else None

    def on_change(result: ReloadResult) -> None:
        metrics.observe_reload(result)
        if source is not None:
            source.settle(result.status != "refused", result.error)
            metrics.observe_registry(source.info())

    holder = ModelHolder(
        None if source is not None else settings.model_dir,
        on_change=on_change,
        locate=source.locate if source is not None else None,
    )
    app.state.registry = source
    # Before the first load: a SIGHUP arriving meanwhile then reloads right after it.
    uninstall = install_sighup_reload(holder) if settings.reload_on_sighup else None
    holder.load_initial()
    app.state.models = holder
    app.state.realtime, app.state.realtime_error = None, None
    # If a store's server is down now, the snapshot answers (flagged "degraded") and POST /v1/orders
    # is a 503 with the reason, until a later request opens the stores (open_realtime retries).
    open_realtime(app, settings)
    try:
        yield
    finally:
        if uninstall is not None:
            uninstall()
        if app.state.realtime is not None:
            app.state.realtime.close()
        metrics.process_exit()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` (else the environment's, read at startup) decide what it serves."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("basketcast")
    except PackageNotFoundError:
        app_version = "0"
    # /docs and /redoc are docs.router's: the same pages on the vendored scripts (no CDN).
    app = FastAPI(
        title="basketcast",
        version=app_version,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
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
    app.include_router(docs.router)  # /, /docs, /redoc, /static/...: not in the OpenAPI document

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = tell_the_truth(FastAPI.openapi(app), app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def tell_the_truth(document: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made to say exactly what the app does (checked by schemathesis).

    Optional query parameters are absent or a string, never null (pydantic's ``null`` branch is
    dropped), and ``/admin`` documents the security the settings give (token or loopback only).
    """
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and "schema" in parameter:
                    parameter["schema"] = not_null(parameter["schema"])
    admin.document_security(document, token_configured=resolve_settings(app).admin_token is not None)
    return document


app = create_app()
