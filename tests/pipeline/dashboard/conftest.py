"""Dashboard fixtures: one report built per session from the suite's excerpt run, a headless
Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright; never ``playwright install``) and
a page of it that records console errors (``Page``, the ``page`` fixture)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from basketcast.pipeline.dashboard.report import ReportResult, build_report
from basketcast.serving.bundle import DASHBOARD
from tests.browser import headless_chromium


@dataclass(frozen=True)
class BuiltReport:
    data: Path
    run: Path  # a private copy of the excerpt run, with the dashboard at run/dashboard.html
    html: Path
    segments: Path
    result: ReportResult

    def embedded(self, element_id: str) -> Any:
        """The JSON block ``element_id`` of the page."""
        text = self.html.read_text()
        match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', text, re.S)
        assert match, element_id
        return json.loads(match.group(1))


@pytest.fixture(scope="session")
def built_report(excerpt_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> BuiltReport:
    """``build_report`` on the excerpt run (a copy of it), written where ``make dashboard`` writes it."""
    run = tmp_path_factory.mktemp("dashboard") / "run"
    shutil.copytree(excerpt_run["run"], run)
    html = run / DASHBOARD
    result = build_report(excerpt_run["data"], run, html)
    return BuiltReport(data=excerpt_run["data"], run=run, html=html, segments=result.segments_out, result=result)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (each page gets a fresh context; Playwright gives the browser a new,
    temporary --user-data-dir). Skipped only where Chromium is not installed, never in CI."""
    yield from headless_chromium()


TIMEOUT_MS = 30_000


class Page:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def open(self, url: str) -> Any:
        self.page.goto(url, timeout=TIMEOUT_MS)
        self.page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
        return self.page

    def choose(self, user: int | str, source: str) -> list[int]:
        """Type ``user`` in the explorer, press Show; the product ids of the recommendations shown."""
        p = self.page
        p.fill("#explorer-user", str(user))
        p.click("#explorer-show")
        p.wait_for_selector(f"body[data-explorer-user='{user}'][data-explorer-source='{source}']", timeout=TIMEOUT_MS)
        return [int(r.get_attribute("data-product")) for r in p.locator("#explorer-recs tbody tr").all()]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    yield p
    p.close()
