"""Text from the data stays text in the dashboard: no script runs, the names are shown as written.

A data set is built from the suite's real excerpt with a catalogue whose names are attacks: the
most bought product is named ``<img src=x onerror=window.__xss=1>``, others carry a ``<script>``
element, an attribute break-out and a ``</script>`` that would close the page's embedded JSON;
the aisle and department names too. It is ingested, trained (the suite's fast config) and
reported; then, in headless Chromium (Debian's, via Playwright, no network):

- the page opened from disk (file://): every chart renders, no ``window.__xss*`` is set, no
  element the names describe exists, and the explorer's table shows the names as text;
- the same page served by a real uvicorn (free loopback port, stopped at the end) at
  ``/dashboard``: the explorer asks the live API, whose JSON carries the same names, for an
  unknown user (the popular list, headed by the ``<img>`` product) — same checks.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from basketcast.pipeline.dashboard.report import TOP_K
from basketcast.serving.bundle import DASHBOARD
from basketcast.serving.model import Context, ServingModel
from tests.conftest import EXCERPT, FAST_TRAIN
from tests.pipeline.dashboard.conftest import Page
from tests.serving.conftest import UvicornProcess, uvicorn_serving

pytestmark = pytest.mark.integration

IMG = "<img src=x onerror=window.__xss=1>"
NASTY = [
    IMG,
    "<script>window.__xss2=1</script>",
    '"><svg onload=window.__xss3=1>',
    "</script><script>window.__xss4=1</script>",
    "<iframe srcdoc='<script>parent.__xss5=1</script>'>",
]
AISLE = "<img src=y onerror=window.__xss6=1>"
DEPARTMENT = "</script><img src=z onerror=window.__xss7=1>"
FLAGS = [f"__xss{i}" for i in ("", 2, 3, 4, 5, 6, 7)]


@dataclass(frozen=True)
class XssReport:
    html: Path
    run: Path
    names: dict[int, str]  # product id → its (hostile) name
    top: int  # the most bought product: named IMG


def write_source(folder: Path) -> tuple[dict[int, str], int]:
    """The excerpt's orders with a hand-written catalogue of hostile names."""
    folder.mkdir(parents=True)
    for path in EXCERPT.iterdir():
        shutil.copy(path, folder / path.name)
    lines = pl.concat(
        [pl.read_csv(folder / "order_products__prior.csv.gz"), pl.read_csv(folder / "order_products__train.csv.gz")]
    )
    counts = lines.group_by("product_id").len().sort(["len", "product_id"], descending=[True, False])
    ranked = counts["product_id"].to_list()
    names = {p: f"product {p}" for p in ranked}
    for product, name in zip(ranked, NASTY, strict=False):
        names[product] = name
    with (folder / "products.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["product_id", "product_name", "aisle_id", "department_id"])
        for product in sorted(names):
            w.writerow([product, names[product], 1 if product == ranked[0] else 2, 1 if product == ranked[0] else 2])
    with (folder / "aisles.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["aisle_id", "aisle"], [1, AISLE], [2, "fresh fruits"]])
    with (folder / "departments.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["department_id", "department"], [1, DEPARTMENT], [2, "produce"]])
    return names, ranked[0]


@pytest.fixture(scope="module")
def xss_report(tmp_path_factory: pytest.TempPathFactory) -> XssReport:
    from basketcast.pipeline.config import TrainConfig
    from basketcast.pipeline.dashboard.report import build_report
    from basketcast.pipeline.data.ingest import ingest
    from basketcast.pipeline.workflows.run import train

    root = tmp_path_factory.mktemp("xss")
    names, top = write_source(root / "source")
    ingest(root / "source", root / "data")
    train(root / "data", root / "run", TrainConfig.model_validate(FAST_TRAIN))
    html = root / "run" / DASHBOARD
    build_report(root / "data", root / "run", html)
    return XssReport(html=html, run=root / "run", names=names, top=top)


def assert_no_script_ran(p: Any) -> None:
    for flag in FLAGS:
        assert p.evaluate(f"typeof window.{flag}") == "undefined", flag
    assert p.evaluate("typeof parent.__xss5") == "undefined"
    # None of the elements the names describe was created (the page has no <img>/<iframe>/<svg onload>).
    assert p.locator("img[src='x'], img[src='y'], img[src='z'], iframe, svg[onload]").count() == 0
    # No script element holds code from the data (the JSON blocks are data, not code).
    code = "Array.from(document.scripts).filter(s => s.type !== 'application/json').map(s => s.text).join('')"
    assert "__xss" not in p.evaluate(code)


def rows(p: Any) -> dict[int, list[str]]:
    """The explorer's recommendation table: product id → its cells' text."""
    out = {}
    for tr in p.locator("#explorer-recs tbody tr").all():
        out[int(tr.get_attribute("data-product"))] = [td.inner_text() for td in tr.locator("td").all()]
    return out


def assert_names_shown_as_text(p: Any, report: XssReport, shown: dict[int, list[str]]) -> None:
    hostile = [product for product in shown if report.names[product] in NASTY]
    assert report.top in hostile, "the <img> product is not among the recommendations shown"
    for product in hostile:
        cells = " | ".join(shown[product])
        assert report.names[product] in cells, (report.names[product], cells)  # the characters, as text
    cells = " | ".join(shown[report.top])
    assert AISLE in cells and DEPARTMENT in cells, cells


def test_names_stay_text_in_the_page_opened_from_disk(xss_report: XssReport, page: Page) -> None:
    html = xss_report.html.read_text()
    # The names sit in JSON data blocks, where only "</script" could end the block: escaped as "<\/".
    assert "</script><script>window.__xss" not in html and "</script><img" not in html
    p = page.open(xss_report.html.as_uri())
    assert p.locator(".chart.js-plotly-plot").count() > 3  # the page works (a broken JSON block would not)
    assert_no_script_ran(p)

    model = ServingModel.load(xss_report.run)
    ex = page.page.evaluate("JSON.parse(document.getElementById('bc-explorer').textContent)")
    ctx = Context(dow=ex["context"]["dow"], hour=ex["context"]["hour"])
    users = [u for u in ex["users"] if xss_report.top in model.recommend(int(u), TOP_K, ctx).products.tolist()]
    assert users, "no embedded user is recommended the <img> product"
    assert ex["products"][str(xss_report.top)][0] == IMG  # the data round-trips exactly
    page.choose(users[0], "file")
    assert_names_shown_as_text(p, xss_report, rows(p))
    p.hover("#explorer-timeline")  # hover labels hold names too
    assert_no_script_ran(p)
    assert page.errors == []


@pytest.fixture
def served(xss_report: XssReport, tmp_path: Path) -> Iterator[UvicornProcess]:
    with uvicorn_serving(xss_report.run, tmp_path / "server.log") as server:
        yield server


def test_names_stay_text_in_the_live_explorer(xss_report: XssReport, served: UvicornProcess, page: Page) -> None:
    p = page.open(f"{served.url}/dashboard")
    assert "Live" in p.locator("#explorer-mode").inner_text()
    assert_no_script_ran(p)
    page.choose(4_000_000_000, "api")  # unknown to everyone: the popular list, headed by the <img> product
    shown = rows(p)
    assert next(iter(shown)) == xss_report.top
    assert_names_shown_as_text(p, xss_report, shown)
    assert_no_script_ran(p)
    assert page.errors == []
