"""Headless Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven by Playwright
(never ``playwright install``), no sandbox (root in CI), no GPU, nothing that reaches for the network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def headless_chromium() -> Iterator[Any]:
    """Yield a launched browser, closed afterwards (the body of a ``browser`` fixture). Skipped only
    where Chromium is not installed, never in CI (``CI`` set): there it is a failure."""
    if not CHROMIUM.exists():
        message = f"Debian's chromium is not installed ({CHROMIUM}); `apt-get install chromium` (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
