"""The dashboard speaks to the shop, checked in a real browser (headless Debian Chromium).

What a merchandiser sees, read from the rendered page: days by name (with the assumption said),
features in words, every metric explained, no Plotly toolbar over the charts, segment names made
only of plain statements, a reason beside every recommendation, and a visible caveat where the
numbers are weak — the suite's excerpt run has few held-out shoppers, so the model section must
say so.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from basketcast.features import glossary
from basketcast.features.build import FEATURE_NAMES
from basketcast.pipeline.dashboard import caveats as C
from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.dashboard.report import TOP_K
from basketcast.pipeline.data import schema as S
from basketcast.serving.model import Context, ServingModel
from tests.pipeline.dashboard.conftest import BuiltReport, Page

pytestmark = pytest.mark.integration


def ticks(p: Any, chart: str, axis: str) -> list[str]:
    """The tick labels Plotly drew on ``axis`` ("x" or "y") of chart ``chart``."""
    return [t.strip() for t in p.locator(f"#{chart} .{axis}tick text").all_text_contents()]


def test_the_page_speaks_to_the_shop(built_report: BuiltReport, page: Page) -> None:
    p = page.open(built_report.html.as_uri())

    # Days by name, and the assumption behind the names said next to the chart.
    assert sorted(ticks(p, "dow_hour", "y")) == sorted(S.DAY_NAMES)
    assert "0 = Sunday" in p.locator("#dow_hour").locator("xpath=..").inner_text()

    # Features in words: no column name on the importance chart's axis, the words instead.
    shown = ticks(p, "model_importance", "y")
    assert shown and not set(shown) & set(FEATURE_NAMES)
    assert set(shown) <= {glossary.words(n) for n in FEATURE_NAMES}

    # Every metric of the table explained in one line.
    words = p.locator("#metric-words")
    assert words.is_visible()
    text = words.inner_text()
    for term in ("precision@K", "recall@K", "NDCG@K", "MAP@K", "hit rate@K", "Kaggle F1"):
        assert term in text, term

    # No toolbar appears over a chart, even on hover.
    p.locator("#segment_sizes").hover()
    p.locator("#model_importance").hover()
    assert p.locator(".modebar").count() == 0 and p.locator(".modebar-btn").count() == 0

    # Segment names are plain statements, at most one per measured feature.
    phrase_of = {phrase: f for f, pair in G.TRAITS.items() for phrase in pair if phrase}
    for label in ticks(p, "segment_sizes", "y"):
        name = re.sub(r"^\d+\. ", "", label)
        name = re.sub(r" \(\d+\)$", "", name)  # the number a repeated name gets
        if name == "Close to the average shopper":
            continue
        parts = [w.strip().lower() for w in name.split(",")]
        owners = [phrase_of.get(w, "department" if w.startswith("more ") else None) for w in parts]
        assert None not in owners, (label, parts)
        assert len([o for o in owners if o != "department"]) == len({o for o in owners if o != "department"})

    # The model section carries its caveats, visibly: the excerpt has few held-out shoppers.
    caveat = p.locator("#model .caveat")
    assert caveat.is_visible() and "held-out shoppers" in caveat.inner_text()
    assert page.errors == []


def test_explorer_gives_a_reason_for_every_recommendation(built_report: BuiltReport, page: Page) -> None:
    p = page.open(built_report.html.as_uri())
    ex = built_report.embedded("bc-explorer")
    model = ServingModel.load(built_report.run)
    ctx = Context(dow=ex["context"]["dow"], hour=ex["context"]["hour"])
    assert S.DAY_NAMES[int(ctx.dow)] in p.locator("#explorer").inner_text()
    for uid in list(ex["users"])[:3]:
        page.choose(uid, "file")
        why = [w.strip() for w in p.locator("#explorer-recs tbody td.why").all_inner_texts()]
        assert why == list(model.recommend(int(uid), TOP_K, ctx).reasons)
        assert all(why)
        # The timeline's hover text names the day of each order.
        hover = p.evaluate("document.getElementById('explorer-timeline').data[0].text")
        assert hover and all(any(d in h for d in S.DAY_NAMES) for h in hover)
    assert page.errors == []


def test_weak_segments_are_flagged_on_the_page(built_report: BuiltReport, page: Page) -> None:
    """The segments section's caveat is on the page exactly when the chosen k's silhouette is weak
    (segmenting is seeded: the same data gives the page's segments)."""
    from basketcast.pipeline.data.storage import read_dataset

    seg = G.segment_users(read_dataset(built_report.data))
    p = page.open(built_report.html.as_uri())
    box = p.locator("#segments .caveat")
    if seg.silhouette[seg.k] < C.WEAK_SILHOUETTE:
        assert box.is_visible() and f"silhouette {seg.silhouette[seg.k]:.2f}" in box.inner_text()
    else:
        assert box.count() == 0 or "overlap" not in box.inner_text()
    assert page.errors == []
