"""The page template: its files ship with the package and ``render_page`` fills every placeholder."""

from __future__ import annotations

import re
from string import Template

from basketcast.pipeline.dashboard import page

FILLED = {"title", "css", "meta", "nav", "kpis", "sections", "footer", "figures_json", "explorer_json"}
FILLED |= {"plotly_js", "script"}


def test_the_template_files_are_package_resources() -> None:
    for name in (page.PAGE_HTML, page.PAGE_CSS, page.PAGE_JS):
        assert page.resource(name).strip(), name
    assert set(Template(page.resource(page.PAGE_HTML)).get_identifiers()) == FILLED
    assert "Plotly.newPlot" in page.resource(page.PAGE_JS) and ".kpis" in page.resource(page.PAGE_CSS)


def test_render_page_fills_the_skeleton() -> None:
    text = page.render_page(
        title="shop <insights>",
        meta="data <b>d</b>",
        kpis=[("orders", "1,234")],
        sections=[("patterns", "Shopping patterns", "lead", page.chart("c1", "A chart", "caption"))],
        figures_json={"figures": {"c1": {"data": [], "layout": {}}}, "template": {}},
        explorer_json={"users": {}, "note": "</script><b>"},
        plotly_js="/* plotly.js v0 */",
        footer="made here",
    )
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "<title>shop &lt;insights&gt;</title>" in text and "<h1>shop &lt;insights&gt;</h1>" in text
    assert '<nav><a href="#patterns">Shopping patterns</a></nav>' in text
    assert '<section id="patterns"><h2>Shopping patterns</h2><p class="lead">lead</p>' in text
    assert '<div class="chart" id="c1"></div>' in text and "<footer>made here</footer>" in text
    assert page.resource(page.PAGE_CSS) in text and page.resource(page.PAGE_JS) in text
    assert "<script>/* plotly.js v0 */</script>" in text
    assert "${" not in text.replace(page.resource(page.PAGE_JS), "")
    # A JSON string cannot close its block.
    blocks = re.findall(r'<script type="application/json" id="(bc-[a-z]+)">(.*?)</script>', text, re.S)
    assert [b[0] for b in blocks] == ["bc-figures", "bc-explorer"] and "<\\/script>" in blocks[1][1]
