"""The dashboard page: HTML skeleton, CSS and the small plain script that draws it.

The three are files of this package (``page.html``, ``page.css``, ``page.js``, read with
``importlib.resources``); ``render_page`` fills the skeleton. The page is one self-contained
file: plotly.js is inlined, the figures and the explorer's data are JSON blocks (``<script
type="application/json">``) that the script reads; it needs no network. Opened from a file, the
user explorer answers from the embedded sample of users; served by the API at ``/dashboard``
(http/https), it asks the live recommendation endpoint (``v1/users/{id}/recommendations``,
relative to the page) for any user id and falls back to the embedded answer only if the API does
not answer.
"""

from __future__ import annotations

import functools
import html
import json
from importlib import resources
from string import Template
from typing import Any, Final

_PACKAGE: Final = __name__.rpartition(".")[0]  # basketcast.pipeline.dashboard
PAGE_HTML: Final = "page.html"  # the skeleton: string.Template placeholders ${title}, ${css}, …
PAGE_CSS: Final = "page.css"
PAGE_JS: Final = "page.js"  # draws the figures and runs the user explorer


@functools.cache
def resource(name: str) -> str:
    """A file shipped next to this module (``page.html``, ``page.css``, ``page.js``), as text."""
    return resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def json_block(element_id: str, payload: Any) -> str:
    """A ``<script type="application/json">`` block; ``</`` is escaped so no string can close it."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def chart(chart_id: str, title: str, caption: str, wide: bool = False) -> str:
    """A chart card: title, one-line explanation and the container the script draws into."""
    cls = "card wide" if wide else "card"
    return (
        f'<div class="{cls}"><h3>{html.escape(title)}</h3><p class="cap">{caption}</p>'
        f'<div class="chart" id="{chart_id}"></div></div>'
    )


def render_page(
    *,
    title: str,
    meta: str,
    kpis: list[tuple[str, str]],
    sections: list[tuple[str, str, str, str]],
    figures_json: dict[str, Any],
    explorer_json: dict[str, Any],
    plotly_js: str,
    footer: str,
) -> str:
    """The whole page. ``sections``: (anchor id, heading, lead paragraph HTML, body HTML)."""
    nav = "".join(f'<a href="#{sid}">{html.escape(h)}</a>' for sid, h, _, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(h)}</h2><p class="lead">{lead}</p>{content}</section>'
        for sid, h, lead, content in sections
    )
    kpi_html = "".join(
        f'<div class="kpi"><div class="v">{html.escape(v)}</div><div class="l">{html.escape(label)}</div></div>'
        for label, v in kpis
    )
    return Template(resource(PAGE_HTML)).substitute(
        title=html.escape(title),
        css=resource(PAGE_CSS),
        meta=meta,
        nav=nav,
        kpis=kpi_html,
        sections=body,
        footer=footer,
        figures_json=json_block("bc-figures", figures_json),
        explorer_json=json_block("bc-explorer", explorer_json),
        plotly_js=plotly_js,
        script=resource(PAGE_JS),
    )
