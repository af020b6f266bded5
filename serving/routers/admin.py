"""Administration: hot reload of the model folder."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.errors import ApiError
from serving.schemas import ErrorResponse, ReloadResponse
from serving.settings import Settings, get_settings
from serving.state import ModelHolder, get_holder, notify_other_workers

router = APIRouter(prefix="/admin", tags=["admin"])
bearer = HTTPBearer(auto_error=False, description="Needed only when BASKETCAST_ADMIN_TOKEN is set.")


def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless no admin token is configured or the request carries it as a Bearer token."""
    if settings.admin_token is None:
        return
    expected = settings.admin_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    if not secrets.compare_digest(given, expected):
        raise ApiError(401, "unauthorized", "admin token required", headers={"WWW-Authenticate": "Bearer"})


@router.post(
    "/reload",
    response_model=ReloadResponse,
    dependencies=[Depends(require_admin)],
    summary="Re-open the model folder and swap to its new version",
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong admin token."},
        409: {"model": ErrorResponse, "description": "The new version does not load: refused, old one kept."},
        503: {"model": ErrorResponse, "description": "The server has not started."},
    },
)
def reload(
    holder: Annotated[ModelHolder | None, Depends(get_holder)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> ReloadResponse:
    """Load the published version if it is new; requests in flight finish on the old model.

    200 "reloaded" (or "loaded" when no model was served before) / "unchanged" (same version);
    409 with the load error when the new version is broken — the old one keeps serving. With
    several workers (``basketcast serve --workers N``) this worker answers for itself and then
    asks the supervisor to send SIGHUP to every worker, which reloads each one the same way.
    """
    if holder is None:
        raise ApiError(503, "unavailable", "the server is starting")
    result = holder.reload()
    if result.status == "refused":
        raise ApiError(
            409,
            "reload_refused",
            f"new model refused, still serving {result.model_version}: {result.error}",
            model_version=result.model_version,
        )
    notified = notify_other_workers(settings.supervisor_pid)
    return ReloadResponse(
        status=result.status,  # type: ignore[arg-type]
        model_version=result.model_version,
        previous_version=result.previous_version,
        workers_notified=notified,
        pid=os.getpid(),
    )
