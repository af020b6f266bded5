"""The API's docs without a CDN, and the front door: ``/docs``, ``/redoc``, ``/static/...`` and ``/``.

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN, so offline (or
behind a firewall) they are blank pages. ``create_app`` turns those off and includes this router
instead: the same pages (``fastapi.openapi.docs``), pointing at the copies of the scripts vendored
in ``serving/static/`` (versions, sources and licences: ``serving/static/README.md``), which the
app serves itself, read with ``importlib.resources`` (package data, in the wheel and the image).

``GET /`` lists where to go: the docs, the OpenAPI document, the operations endpoints, the
dashboard when one has been built, and the API's operations — an HTML page, or JSON for a client
that prefers ``application/json``.

None of these routes is in the OpenAPI document (``include_in_schema=False``): they are not part
of the API that schemathesis and the contract tests check.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse

from basketcast.serving.errors import ApiError
from basketcast.serving.routers.dashboard import DashboardSettings, dashboard_path, get_dashboard_settings
from basketcast.serving.settings import Settings, get_settings

router = APIRouter()

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"  # FastAPI's default `swagger_ui_oauth2_redirect_url`
STATIC_URL = "/static"
DASHBOARD_URL = "/dashboard"  # basketcast.serving.routers.dashboard's page: a link once built, never an operation

SWAGGER_JS = "swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui/swagger-ui.css"
FAVICON = "swagger-ui/favicon-32x32.png"
REDOC_JS = "redoc/redoc.standalone.js"
# The only files served under /static (paths below serving/static/) and their content types.
ASSETS: dict[str, str] = {
    SWAGGER_JS: "text/javascript; charset=utf-8",
    SWAGGER_CSS: "text/css; charset=utf-8",
    FAVICON: "image/png",
    REDOC_JS: "text/javascript; charset=utf-8",
}
# URLs carry the content's hash (?v=), so a new file is a new URL: cache those for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"  # the same path without the current hash: ask again (ETag) every time
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}  # an OpenAPI path's operations


@dataclass(frozen=True)
class Asset:
    """A vendored file: its bytes, content type and content hash (hex SHA-256, first 16 digits)."""

    body: bytes
    media_type: str
    digest: str


@lru_cache(maxsize=len(ASSETS))
def asset(name: str) -> Asset:
    """The vendored file ``name`` (a key of ``ASSETS``), read once per process (about 3 MB in all)."""
    body = files("basketcast.serving").joinpath("static", *name.split("/")).read_bytes()
    return Asset(body=body, media_type=ASSETS[name], digest=hashlib.sha256(body).hexdigest()[:16])


def root_path(request: Request) -> str:
    """The prefix the app is mounted under (a proxy's ``--root-path``), "" when none; as FastAPI does."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def asset_url(request: Request, name: str) -> str:
    """The same-origin URL of the vendored file ``name``, versioned by its content."""
    return f"{root_path(request)}{STATIC_URL}/{name}?v={asset(name).digest}"


def openapi_url(request: Request) -> str:
    """Where the OpenAPI document is (404 when the app serves none)."""
    url = request.app.openapi_url
    if not url:
        raise ApiError(404, "not_found", "this app serves no OpenAPI document")
    return root_path(request) + str(url)


@router.get(DOCS_URL, include_in_schema=False)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the app's OpenAPI document, every script and style served by the app."""
    app = request.app
    return get_swagger_ui_html(
        openapi_url=openapi_url(request),
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=root_path(request) + OAUTH2_REDIRECT_URL,
        init_oauth=app.swagger_ui_init_oauth,
        swagger_js_url=asset_url(request, SWAGGER_JS),
        swagger_css_url=asset_url(request, SWAGGER_CSS),
        swagger_favicon_url=asset_url(request, FAVICON),
        # No validator badge: it would send the document to validator.swagger.io.
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
    )


@router.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """The page Swagger UI's OAuth2 flow returns to (FastAPI serves it next to its own /docs)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL, include_in_schema=False)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the app's OpenAPI document, its script served by the app (no Google Fonts)."""
    return get_redoc_html(
        openapi_url=openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=asset_url(request, REDOC_JS),
        redoc_favicon_url=asset_url(request, FAVICON),
        with_google_fonts=False,
    )


@router.get(STATIC_URL + "/{name:path}", include_in_schema=False)
def static_asset(name: str, request: Request) -> Response:
    """A vendored file of ``ASSETS`` (404 for anything else); 304 when the client's ETag matches."""
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no static file {name!r}")
    found = asset(name)
    etag = f'"{found.digest}"'
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE if request.query_params.get("v") == found.digest else REVALIDATE,
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


@dataclass(frozen=True)
class Link:
    href: str
    title: str


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str


def front_door_links(request: Request, settings: Settings, dashboard: DashboardSettings) -> list[Link]:
    """The pages worth opening: docs, OpenAPI document, operations, and the dashboard if built."""
    links = [Link(DOCS_URL, "API docs (Swagger UI)"), Link(REDOC_URL, "API docs (ReDoc)")]
    if request.app.openapi_url:
        links.append(Link(str(request.app.openapi_url), "OpenAPI document (JSON)"))
    links += [
        Link("/health", "Liveness"),
        Link("/ready", "Readiness: the served model, or why none is"),
        Link("/metrics", "Prometheus metrics"),
    ]
    path = dashboard_path(settings, dashboard)
    if path is not None and path.is_file():
        links.append(Link(DASHBOARD_URL, "Insights dashboard"))
    prefix = root_path(request)
    return [Link(prefix + link.href, link.title) for link in links]


def api_operations(request: Request, exclude: set[str]) -> list[Operation]:
    """The operations of the app's OpenAPI document, bar the paths in ``exclude``, by path and method."""
    prefix = root_path(request)
    document: dict[str, Any] = request.app.openapi() if request.app.openapi_url else {}
    operations = [
        Operation(method.upper(), prefix + path, str(operation.get("summary") or operation.get("operationId", "")))
        for path, methods in document.get("paths", {}).items()
        if prefix + path not in exclude
        for method, operation in methods.items()
        if method in HTTP_METHODS
    ]
    return sorted(operations, key=lambda op: (op.path, op.method))


def prefers_json(accept: str) -> bool:
    """Whether an ``Accept`` header ranks ``application/json`` above ``text/html``.

    Each type takes the q of its most specific matching range (``application/json`` over
    ``application/*`` over ``*/*``); a tie, ``*/*`` or no header means HTML.
    """
    ranges: dict[str, float] = {}
    for part in accept.lower().split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media:
            ranges[media] = max(q, ranges.get(media, 0.0))

    def quality(kind: str, subtype: str) -> float:
        for media in (f"{kind}/{subtype}", f"{kind}/*", "*/*"):
            if media in ranges:
                return ranges[media]
        return 0.0

    return quality("application", "json") > quality("text", "html")


@router.get("/", include_in_schema=False)
def front_door(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    dashboard: Annotated[DashboardSettings, Depends(get_dashboard_settings)],
) -> Response:
    """Links to the docs, the operations endpoints, the dashboard and the API's operations.

    HTML, or JSON (``{"title", "version", "links": [{"href", "title"}], "operations": [{"method",
    "path", "summary"}]}``) when the ``Accept`` header prefers ``application/json``.
    """
    links = front_door_links(request, settings, dashboard)
    pages = {link.href for link in links} | {root_path(request) + DASHBOARD_URL}
    operations = api_operations(request, exclude=pages)
    headers = {"Cache-Control": "no-cache", "Vary": "Accept"}  # the dashboard link comes and goes
    title, version = str(request.app.title), str(request.app.version)
    if prefers_json(request.headers.get("accept", "")):
        body: dict[str, Any] = {
            "title": title,
            "version": version,
            "links": [{"href": link.href, "title": link.title} for link in links],
            "operations": [{"method": op.method, "path": op.path, "summary": op.summary} for op in operations],
        }
        return JSONResponse(body, headers=headers)
    return HTMLResponse(front_door_html(title, version, links, operations), headers=headers)


def front_door_html(title: str, version: str, links: list[Link], operations: list[Operation]) -> str:
    """The front door as a small self-contained page (no script, no external resource)."""
    e = html.escape
    items = "\n".join(f'<li><a href="{e(link.href)}">{e(link.href)}</a> — {e(link.title)}</li>' for link in links)
    rows = "\n".join(
        f"<tr><td><code>{e(op.method)}</code></td><td><code>{e(op.path)}</code></td><td>{e(op.summary)}</td></tr>"
        for op in operations
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} {e(version)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; line-height: 1.5; }}
table {{ border-collapse: collapse; }}
td {{ padding: 0.2rem 0.8rem 0.2rem 0; vertical-align: top; }}
</style>
</head>
<body>
<h1>{e(title)} <small>{e(version)}</small></h1>
<h2>Links</h2>
<ul id="links">
{items}
</ul>
<h2>Operations</h2>
<table id="operations">
{rows}
</table>
</body>
</html>
"""
