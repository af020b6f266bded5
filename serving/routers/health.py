"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from basketcast.serving.metrics import Metrics
from basketcast.serving.realtime import Realtime, open_realtime
from basketcast.serving.schemas import Health, LastReload, ModelFolder, OnlineStatus, Readiness, RegistryModel
from basketcast.serving.settings import resolve_settings
from basketcast.serving.state import ModelHolder, get_holder

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers (always 200)")
async def health() -> Health:
    """Always 200 while the process serves HTTP, model or not."""
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: 200 while a model is served, 503 otherwise",
    responses={503: {"model": Readiness, "description": "No model loaded (the reason is in `error`)."}},
)
def ready(holder: Annotated[ModelHolder | None, Depends(get_holder)], request: Request) -> JSONResponse:
    """200 with the served version while a model is served; 503 with the load error otherwise.

    A plain ``def`` (run in the thread pool): it looks at the model folder on disk. When the folder
    is deleted or replaced by something broken, the loaded model keeps answering, so this stays 200
    and says what happened in ``folder``, ``last_reload`` and ``warnings``.
    """
    model = holder.model if holder is not None else None
    folder = holder.folder() if holder is not None else None
    realtime: Realtime | None = getattr(request.app.state, "realtime", None)
    if realtime is None and getattr(request.app.state, "realtime_error", None) is not None:
        realtime = open_realtime(request.app, resolve_settings(request.app))  # a store that came up since
    online, online_warnings = None, []
    if realtime is not None:
        log_up, store_up = realtime.order_log.ping(), realtime.online_store.ping()
        online = OnlineStatus(
            order_log=realtime.order_log.url,
            online_store=realtime.online_store.url,
            order_log_up=log_up,
            online_store_up=store_up,
            degraded=not store_up,
            refreshes_rows=model is not None and model.online is not None,
        )
        online_warnings = realtime.warnings(log_up=log_up, store_up=store_up)
    elif (error := getattr(request.app.state, "realtime_error", None)) is not None:
        online_warnings = [f"order log / online store not opened ({error}): orders cannot be recorded"]
    last = holder.last_reload if holder is not None else None
    body = Readiness(
        status="ready" if model is not None else "unavailable",
        model_version=model.version if model is not None else None,
        model_dir=str(holder.model_dir) if holder is not None and holder.model_dir is not None else None,
        loaded_at=holder.loaded_at if holder is not None and model is not None else None,
        error=None if model is not None else (holder.error if holder is not None else "the server is starting"),
        pid=os.getpid(),
        folder=ModelFolder(state=folder.state, version=folder.version) if folder is not None else None,
        last_reload=LastReload(status=last.status, at=last.at, model_version=last.model_version, error=last.error)
        if last is not None
        else None,
        warnings=(holder.warnings(folder) if holder is not None else []) + online_warnings,
        online=online,
        registry=RegistryModel(**source.info()) if (source := getattr(request.app.state, "registry", None)) else None,
    )
    return JSONResponse(body.model_dump(), status_code=200 if model is not None else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition."}},
)
def metrics(request: Request) -> Response:
    """Request counts and latency histograms by route and status, reloads, model version."""
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render()
    return Response(body, media_type=content_type)
