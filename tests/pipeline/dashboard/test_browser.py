"""The dashboard in a real browser (headless Debian Chromium driven by Playwright).

Static: the file opened from disk renders every chart without a console error, looks like a page
(not blank) and its explorer shows the chosen user's recommendations — those the serving model
gives. Live: served by a real uvicorn at ``/dashboard``, the explorer asks the API for any id.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from basketcast.pipeline.dashboard.report import TOP_K
from basketcast.serving.model import Context, ServingModel
from tests.pipeline.dashboard.conftest import BuiltReport, Page
from tests.serving.conftest import UvicornProcess, uvicorn_serving

pytestmark = pytest.mark.integration


def assert_every_chart_rendered(page: Any, expected: int) -> None:
    charts = page.locator(".chart")
    assert charts.count() == expected
    assert page.locator(".chart.js-plotly-plot").count() == expected  # Plotly took every container
    for i in range(expected):
        chart = charts.nth(i)
        assert chart.locator("svg.main-svg").count() >= 1, chart.get_attribute("id")
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 150, chart.get_attribute("id")


def assert_not_blank(png: bytes) -> None:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    assert image.shape[0] > 500 and image.shape[1] > 500
    assert image.std() > 20  # a blank or single-colour page is near 0
    colours = np.unique(image.reshape(-1, 3)[::7], axis=0).shape[0]
    assert colours > 200  # charts, text and colour scales, not a flat fill


def test_static_page_renders_and_explores(built_report: BuiltReport, page: Page, tmp_path: Path) -> None:
    p = page.open(built_report.html.as_uri())
    assert_every_chart_rendered(p, built_report.result.charts)
    assert "Offline" in p.locator("#explorer-mode").inner_text()
    png = p.screenshot(full_page=True)
    (tmp_path / "dashboard.png").write_bytes(png)
    assert_not_blank(png)

    ex = built_report.embedded("bc-explorer")
    model = ServingModel.load(built_report.run)
    ctx = Context(dow=ex["context"]["dow"], hour=ex["context"]["hour"])
    # The first embedded user is shown on load; pick two others by typing their ids.
    first = next(iter(ex["users"]))
    assert p.get_attribute("body", "data-explorer-user") == first
    for uid in list(ex["users"])[1:3]:
        shown = page.choose(uid, "file")
        assert shown == model.recommend(int(uid), TOP_K, ctx).products.tolist()
        assert uid in p.locator("#explorer-summary").inner_text()
        # Repeat/new marks agree with the model, and the timeline holds the user's purchases.
        kinds = [b.inner_text() for b in p.locator("#explorer-recs tbody .badge").all()]
        assert kinds == ["repeat" if r else "new" for r in model.recommend(int(uid), TOP_K, ctx).repeat.tolist()]
        bought = p.evaluate("document.getElementById('explorer-timeline').data[0].x.length")
        assert bought > 0
    # An id that is not embedded is explained, not an error.
    p.fill("#explorer-user", "4000000000")
    p.click("#explorer-show")
    assert "not among the" in p.locator("#explorer-status").inner_text()
    assert page.errors == []


@pytest.fixture
def served(built_report: BuiltReport, tmp_path: Path) -> Iterator[UvicornProcess]:
    """A real uvicorn serving the run folder, whose dashboard.html is served at /dashboard."""
    with uvicorn_serving(built_report.run, tmp_path / "server.log") as server:
        yield server


def test_served_page_asks_the_live_api(built_report: BuiltReport, served: UvicornProcess, page: Page) -> None:
    p = page.open(f"{served.url}/dashboard")
    assert_every_chart_rendered(p, built_report.result.charts)
    assert "Live" in p.locator("#explorer-mode").inner_text()
    ex = built_report.embedded("bc-explorer")
    query = {"k": TOP_K, "dow": ex["context"]["dow"], "hour": ex["context"]["hour"]}

    def api(user: int) -> list[int]:
        r = httpx.get(f"{served.url}/v1/users/{user}/recommendations", params=query, timeout=10)
        r.raise_for_status()
        return [item["product_id"] for item in r.json()["items"]]

    users = [int(u) for u in ex["users"]]
    for user in (users[-1], 4_000_000_000):  # an embedded user and one unknown to everyone
        shown = page.choose(user, "api")
        assert shown == api(user)
        assert "live API" in p.locator("#explorer-summary").inner_text()
    assert "cold-start" in p.locator("#explorer-summary").inner_text()
    assert page.errors == []
