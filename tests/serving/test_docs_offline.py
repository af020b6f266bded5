"""The API docs work offline, and ``GET /`` is a front door (serving/routers/docs.py).

With a TestClient: ``/docs`` and ``/redoc`` reference only same-origin ``/static/...`` files (the
copies vendored in serving/static/), each of which answers with its bytes, content type and cache
headers; nothing else is served under /static; none of these routes is in the OpenAPI document;
``/`` lists the links (HTML, or JSON when asked) and each of them answers.

In a real browser (headless Debian Chromium driven by Playwright, never ``playwright install``)
against a real uvicorn on loopback, every request off 127.0.0.1 refused: Swagger UI and ReDoc
render the API's operations without a console error and without any request leaving loopback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from basketcast.serving.bundle import DASHBOARD, run_dir_of
from basketcast.serving.main import create_app
from basketcast.serving.routers.docs import ASSETS, IMMUTABLE, prefers_json
from basketcast.serving.settings import Settings
from tests.browser import headless_chromium
from tests.serving.conftest import UvicornProcess, uvicorn_serving

TIMEOUT_MS = 30_000
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# GET pages the front door always lists; /dashboard only once `basketcast report` has written one.
ALWAYS = ["/docs", "/redoc", "/openapi.json", "/health", "/ready", "/metrics"]
MAIN_ROUTES = {
    ("GET", "/v1/users/{user_id}/recommendations"),
    ("GET", "/v1/users/{user_id}/basket"),
    ("GET", "/v1/products/{product_id}/related"),
    ("POST", "/v1/recommendations"),
    ("POST", "/v1/orders"),
}


class References(HTMLParser):
    """Every URL an HTML page refers to (src/href attributes, ReDoc's spec-url)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


def front_door_hrefs(html: str) -> list[str]:
    links = re.search(r'<ul id="links">(.*?)</ul>', html, re.S)
    assert links, html
    return references(links.group(1))


@pytest.fixture(scope="module")
def no_model_client() -> Iterator[TestClient]:
    """An app started without a model (/ready 503)."""
    app = create_app(Settings(model_dir=None, reload_on_sighup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_same_origin_static_files(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", r.text), "the page names another host"  # no CDN, no Google Fonts
    urls = references(r.text)
    assets = [url for url in urls if url != "/openapi.json"]
    assert len(assets) == (3 if page == "/docs" else 2), urls  # Swagger UI: js, css, favicon; ReDoc: js, favicon
    for url in assets:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and parts.path.startswith("/static/"), url
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"].startswith(CONTENT_TYPES[Path(parts.path).suffix]), url
        assert answer.headers["cache-control"] == IMMUTABLE  # the URL carries the content's hash
        assert (
            answer.content
            == files("basketcast.serving").joinpath("static", parts.path.removeprefix("/static/")).read_bytes()
        )
    if page == "/docs":
        assert "url: '/openapi.json'" in r.text and '"validatorUrl": null' in r.text
    else:
        assert '<redoc spec-url="/openapi.json">' in r.text


def test_every_vendored_file_ships_with_its_licence() -> None:
    static = files("basketcast.serving").joinpath("static")
    for name in ASSETS:
        folder = static.joinpath(name.split("/")[0])
        assert folder.joinpath(name.split("/")[1]).is_file(), name
        assert folder.joinpath("LICENSE").is_file(), name
    readme = static.joinpath("README.md").read_text()
    assert "swagger-ui-dist 5." in readme and "redoc 2." in readme


def test_static_serves_the_vendored_files_only(client: TestClient) -> None:
    for name in ("redoc/LICENSE", "../main.py", "swagger-ui/nope.js", "", "%2e%2e/main.py"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", name
    r = client.get("/static/swagger-ui/swagger-ui.css")  # no (or a stale) hash: revalidate
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    again = client.get("/static/swagger-ui/swagger-ui.css", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_docs_routes_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert not paths & {"/", "/docs", "/redoc", "/docs/oauth2-redirect"}
    assert not [path for path in paths if path.startswith("/static")]
    r = client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "oauth2" in r.text.lower()


def test_front_door_html_links_answer(client: TestClient) -> None:
    r = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", r.text)
    hrefs = front_door_hrefs(r.text)
    assert hrefs[: len(ALWAYS)] == ALWAYS and set(hrefs) <= {*ALWAYS, "/dashboard"}
    for href in hrefs:
        assert client.get(href).status_code == 200, href
    for method, path in MAIN_ROUTES:
        assert f"<code>{method}</code></td><td><code>{path}</code>" in r.text, path


@pytest.mark.parametrize("accept", ["application/json", "application/json, text/html;q=0.5"])
def test_front_door_json_links_answer(client: TestClient, accept: str) -> None:
    r = client.get("/", headers={"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["title"] == "basketcast" and body["version"]
    hrefs = [link["href"] for link in body["links"]]
    assert hrefs[: len(ALWAYS)] == ALWAYS and all(link["title"] for link in body["links"])
    for href in hrefs:
        assert client.get(href).status_code == 200, href
    operations = {(op["method"], op["path"]) for op in body["operations"]}
    assert operations >= MAIN_ROUTES and all(op["summary"] for op in body["operations"])
    assert not {path for _, path in operations} & {*hrefs, "/dashboard"}  # pages are links, not operations


def test_front_door_without_a_model(no_model_client: TestClient) -> None:
    """Every link still answers; /ready says 503 (no model), the docs work all the same."""
    body = no_model_client.get("/", headers={"Accept": "application/json"}).json()
    hrefs = [link["href"] for link in body["links"]]
    assert hrefs == ALWAYS  # no model folder: no dashboard
    for href in hrefs:
        assert no_model_client.get(href).status_code == (503 if href == "/ready" else 200), href


def test_front_door_links_the_dashboard_once_built(model_dir: Path) -> None:
    if os.environ.get("BASKETCAST_DASHBOARD_PATH"):
        pytest.skip("BASKETCAST_DASHBOARD_PATH set in the environment")
    client = TestClient(create_app(Settings(model_dir=model_dir, reload_on_sighup=False)))  # no lifespan needed
    page = run_dir_of(model_dir) / DASHBOARD
    page.unlink(missing_ok=True)

    def hrefs() -> list[str]:
        return [link["href"] for link in client.get("/", headers={"Accept": "application/json"}).json()["links"]]

    assert "/dashboard" not in hrefs()
    page.write_text("<!DOCTYPE html><title>dashboard</title>")
    assert hrefs()[-1] == "/dashboard" and "/dashboard" in front_door_hrefs(client.get("/").text)
    assert client.get("/dashboard").status_code == 200


def test_pages_follow_the_root_path(trained_run: Path) -> None:
    """Behind a proxy that mounts the app under a prefix, every URL the pages give carries it."""
    app = create_app(Settings(model_dir=trained_run, reload_on_sighup=False))
    client = TestClient(app, root_path="/api")
    docs = client.get("/api/docs").text
    assert all(url.startswith("/api/") for url in references(docs)) and "url: '/api/openapi.json'" in docs
    assert all(url.startswith("/api/") for url in references(client.get("/api/redoc").text))
    assert all(href.startswith("/api/") for href in front_door_hrefs(client.get("/api/").text))


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        ("", False),
        ("*/*", False),
        ("text/html", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("application/json", True),
        ("application/*", True),
        ("application/json;q=0.9, text/html", False),
        ("application/json, */*;q=0.1", True),
        ("text/html;q=0.2, application/json;q=0.5", True),
        ("application/json;q=bogus", False),
    ],
)
def test_prefers_json(accept: str, json: bool) -> None:
    assert prefers_json(accept) is json


# --- in a real browser, offline ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium; skipped only where it is not installed, never in CI."""
    yield from headless_chromium()


@pytest.fixture(scope="module")
def served(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornProcess]:
    """A real uvicorn on loopback serving the suite's trained run."""
    with uvicorn_serving(trained_run, tmp_path_factory.mktemp("docs-server") / "server.log") as server:
        yield server


class OfflinePage:
    """A browser page that can only reach 127.0.0.1: any other request is aborted and recorded,
    as are console errors and uncaught exceptions."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.left_loopback: list[str] = []
        self.requested: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.context.on("request", lambda request: self.requested.append(request.url))  # workers' too
        self.page = self.context.new_page()
        self.page.on(
            "console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.left_loopback.append(url)
            route.abort()

    def settle(self, quiet_ms: int = 1000) -> None:
        """Wait until no new request has started for ``quiet_ms`` (late ones: images, workers)."""
        seen = -1
        while len(self.requested) != seen:
            seen = len(self.requested)
            self.page.wait_for_timeout(quiet_ms)

    def assert_stayed_home(self) -> None:
        self.settle()
        assert self.left_loopback == []
        off = [url for url in self.requested if urlsplit(url).scheme not in ("data", "blob")]
        assert all(urlsplit(url).hostname == "127.0.0.1" for url in off), off
        assert self.errors == []

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: Any) -> Iterator[OfflinePage]:
    page = OfflinePage(browser)
    yield page
    page.close()


def operations_of(server: UvicornProcess) -> list[tuple[str, str, str]]:
    """(method, path, summary) of every operation of the served OpenAPI document."""
    import httpx

    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    return [(method, path, op["summary"]) for path, ops in document["paths"].items() for method, op in ops.items()]


@pytest.mark.integration
def test_swagger_ui_renders_offline(served: UvicornProcess, offline: OfflinePage) -> None:
    page = offline.page
    page.goto(f"{served.url}/docs", timeout=TIMEOUT_MS)
    for path in ("/v1/users/{user_id}/recommendations", "/health"):
        page.wait_for_selector(f'.opblock .opblock-summary-path[data-path="{path}"]', timeout=TIMEOUT_MS)
    operations = operations_of(served)
    assert page.locator(".opblock").count() == len(operations)
    # Try one out: the browser calls the API (same origin) and shows the answer.
    page.click('.opblock-get .opblock-summary-path[data-path="/health"]')
    page.click(".opblock-get.is-open .try-out__btn")
    page.click(".opblock-get.is-open .execute")
    status = page.locator(".opblock-get.is-open .live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=TIMEOUT_MS)
    assert status.inner_text().strip() == "200"
    offline.assert_stayed_home()
    assert any(url.startswith(f"{served.url}/static/swagger-ui/swagger-ui-bundle.js") for url in offline.requested)


@pytest.mark.integration
def test_redoc_renders_offline(served: UvicornProcess, offline: OfflinePage) -> None:
    page = offline.page
    page.goto(f"{served.url}/redoc", timeout=TIMEOUT_MS)
    operations = operations_of(served)
    sections = "[data-section-id^='operation/']"  # one per operation, rendered as the spec is read
    page.wait_for_function(f"document.querySelectorAll({sections!r}).length >= {len(operations)}", timeout=TIMEOUT_MS)
    assert page.locator(sections).count() == len(operations)
    titles = {title.inner_text().strip() for title in page.locator(f"{sections} h2").all()}
    assert {summary for _, _, summary in operations} <= titles
    # The side menu's last line, whose logo upstream ReDoc loads from its CDN (serving/static/README.md).
    page.locator('a[href="https://redocly.com/redoc/"]').wait_for(timeout=TIMEOUT_MS)
    offline.assert_stayed_home()
    assert any(url.startswith(f"{served.url}/static/redoc/redoc.standalone.js") for url in offline.requested)
