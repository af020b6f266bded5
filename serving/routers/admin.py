"""Administration: hot reload of the model folder.

Who may call ``/admin/*``: with ``BASKETCAST_ADMIN_TOKEN`` set, requests carrying it as a Bearer
token (401 otherwise); without one, only requests that arrive on a loopback address (403
otherwise) — ``basketcast serve`` refuses to listen on anything but loopback without a token,
and this check covers an app run another way (``uvicorn basketcast.serving.main:app --host 0.0.0.0``). The
OpenAPI document says which of the two applies (:func:`document_security`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from basketcast.serving.errors import ApiError
from basketcast.serving.schemas import ErrorResponse, ReloadResponse
from basketcast.serving.settings import Settings, get_settings, is_loopback_host
from basketcast.serving.state import ModelHolder, get_holder, notify_other_workers

router = APIRouter(prefix="/admin", tags=["admin"])
bearer = HTTPBearer(auto_error=False, description="Needed only when BASKETCAST_ADMIN_TOKEN is set.")
SCHEME = "HTTPBearer"  # the security scheme FastAPI names after `bearer`
UNAUTHORIZED = {"model": ErrorResponse, "description": "Missing or wrong admin token."}
FORBIDDEN = {
    "model": ErrorResponse,
    "description": "No admin token is configured and the request did not arrive on a loopback address.",
}


def arrived_on_loopback(request: Request) -> bool:
    """Whether the request came in on a loopback address of this server.

    The local address of the connection (ASGI ``server``) is what counts: a server bound to
    ``0.0.0.0`` sees ``127.0.0.1`` for a local client and the interface's address for a remote
    one. No address (a Unix socket) or a name rather than an address (an in-process test client)
    is local.
    """
    server = request.scope.get("server")
    if not server or server[0] is None:
        return True
    host = str(server[0])
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return is_loopback_host(host)


def require_admin(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 without the configured token; 403 from off-loopback when no token is configured."""
    if settings.admin_token is None:
        if not arrived_on_loopback(request):
            raise ApiError(
                403,
                "forbidden",
                "/admin is open only on loopback when no admin token is configured: set BASKETCAST_ADMIN_TOKEN",
            )
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
        401: UNAUTHORIZED,
        403: FORBIDDEN,
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


def document_security(openapi: dict[str, Any], token_configured: bool) -> None:
    """Make the document say what ``require_admin`` does with this configuration.

    With a token: the admin operations need the Bearer scheme, 401 without it. Without one: no
    security requirement (a request without ``Authorization`` is answered), 403 off loopback.
    """
    for path, operations in openapi.get("paths", {}).items():
        if not path.startswith(router.prefix + "/"):
            continue
        for operation in operations.values():
            responses = operation.get("responses", {})
            if token_configured:
                operation["security"] = [{SCHEME: []}]
                responses.pop("403", None)
            else:
                operation.pop("security", None)
                responses.pop("401", None)
    if not token_configured:
        schemes = openapi.get("components", {}).get("securitySchemes", {})
        schemes.pop(SCHEME, None)
        if not schemes:
            openapi.get("components", {}).pop("securitySchemes", None)
