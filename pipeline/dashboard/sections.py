"""The words of the dashboard page: header line, KPI tiles, the four sections' HTML (chart cards with
their titles and captions, the evaluation table, the explorer's controls) and the footer.

Every function returns HTML (``page.chart`` cards; names and numbers escaped); ``report._page``
puts them together and ``page.render_page`` lays them into the page template.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Final

from basketcast.pipeline.dashboard import figures as F
from basketcast.pipeline.dashboard import segments as G
from basketcast.pipeline.dashboard.explorer import TIMELINE_EXTRA, TOP_K
from basketcast.pipeline.dashboard.page import chart
from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import DataManifest
from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.serving.model import Context

NDCG: Final = f"ndcg@{TOP_K}"
TABLE_METRICS: Final = ("precision", "recall", "f1", "ndcg", "map", "hit_rate")
# One line per metric, for a reader who has not met it: what it measures for one shopper's next
# order, K being the length of the recommended list. Every number is the mean over held-out shoppers.
METRIC_WORDS: Final[dict[str, str]] = {
    "precision": "of the K products recommended, the share the shopper bought",
    "recall": "of the products the shopper bought, the share found in the K recommended",
    "f1": "precision and recall in one number (their harmonic mean)",
    "ndcg": "like recall, but a bought product near the top of the list counts more (1 = all of them on top)",
    "map": "mean average precision: the precision at each bought product's place in the list, averaged",
    "hit_rate": "the share of shoppers with at least one bought product among the K",
    "kaggle_f1": "the Instacart competition's score: F1 of the predicted basket (a set of products, or "
    "\u201cNone\u201d when no rebuy is expected) against the products the shopper bought again",
}
METRIC_TERMS: Final[dict[str, str]] = {  # how the glossary names each metric of METRIC_WORDS
    "precision": "precision@K",
    "recall": "recall@K",
    "f1": "F1@K",
    "ndcg": "NDCG@K",
    "map": "MAP@K",
    "hit_rate": "hit rate@K",
    "kaggle_f1": "Kaggle F1",
}
SECTION_TITLES: Final = (
    ("patterns", "Shopping patterns"),
    ("segments", "Customer segments"),
    ("model", "Model performance"),
    ("explorer", "User explorer"),
)

e = html.escape


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.1%}"


def _grid(*cards: str) -> str:
    return "".join(['<div class="grid">', *cards, "</div>"])


def meta_line(data_dir: str, data_manifest: DataManifest, run_dir: str, trained: str, version: str, built: str) -> str:
    """The header's line under the title: which data and model, and when the page was built."""
    return (
        f"data <b>{e(data_dir)}</b> ({e(data_manifest.source)}, fingerprint "
        f"{e(data_manifest.fingerprint)}) · model <b>{e(run_dir)}</b> (trained "
        f"{e(trained)}, serving version {e(version)}) · built {built}"
    )


def caveat_box(notes: list[str]) -> str:
    """The caveats of a section (``caveats``) as one highlighted note; empty when there are none."""
    if not notes:
        return ""
    items = "".join(f"<li>{e(n)}</li>" for n in notes)
    return f'<div class="caveat" role="note"><b>Read with care</b><ul>{items}</ul></div>'


def metric_glossary() -> str:
    """How to read the model section's numbers: one line per metric (``METRIC_WORDS``)."""
    rows = "".join(f"<dt>{e(METRIC_TERMS[m])}</dt><dd>{e(w)}</dd>" for m, w in METRIC_WORDS.items())
    return (
        '<div class="card wide"><h3>How to read these numbers</h3><p class="cap">Each is measured on a held-out '
        "shopper's next order and averaged over held-out shoppers; higher is better, 1 is perfect.</p>"
        f'<dl class="glossary" id="metric-words">{rows}</dl></div>'
    )


def kpis(head: Mapping[str, float], k: int, ranker_ndcg: float, base_ndcg: float) -> list[tuple[str, str]]:
    """The KPI tiles, (label, value): ``insights.headline``, the number of segments, the ranker's NDCG@10."""
    return [
        ("shoppers", f"{head['users']:,.0f}"),
        ("orders", f"{head['orders']:,.0f}"),
        ("products bought", f"{head['products']:,.0f}"),
        ("mean basket", f"{head['basket_size']:.1f} items"),
        ("of items are reorders", _pct(head["reorder_rate"])),
        ("median days between orders", f"{head['days_between_median']:.0f}"),
        ("customer segments", str(k)),
        (f"ranking quality, NDCG@10 (best simple method {base_ndcg:.3f})", f"{ranker_ndcg:.3f}"),
    ]


def patterns_section() -> str:
    """Shopping patterns: the cards of ``figures``' pattern charts."""
    return _grid(
        chart(
            "dow_hour",
            "When people shop: orders by day of week × hour",
            f"Every order counted at its day and hour of day ({S.DAY_NAMES_NOTE}; Sunday and Monday carry "
            "the weekend peak).",
            wide=True,
        ),
        chart("basket_sizes", "Basket size", "Orders by number of products (axis cut at the 99th percentile)."),
        chart(
            "days_between",
            "Days between orders",
            "Orders by days since the same shopper's previous order; Instacart caps the value at 30.",
        ),
        chart(
            "reorder_department",
            "Reorder rate by department",
            "Share of order lines that are reorders (the shopper bought the product before).",
        ),
        chart("reorder_aisle", "Reorder rate by aisle", "The 25 aisles with the most order lines."),
        chart("top_products", "Top products", "The 20 products in the most orders."),
        chart(
            "top_reordered",
            "Top reordered products",
            "The 20 products with the most reorders, labelled with their reorder rate.",
        ),
        chart(
            "reorder_decay",
            "The longer since the last purchase, the less likely a rebuy",
            "For every shopper × product: the chance it is in the next order when it has not been bought for "
            "n orders (pairs that reached n orders without a rebuy; points with under 20 pairs left out).",
            wide=True,
        ),
    )


def _quality_card(baseline: str, note: str | None) -> str:
    """The per-segment model quality chart, or ``note`` (why it is left out) in its place."""
    if note is not None:
        return (
            f'<div class="card wide"><h3>How well the model does in each segment</h3><p class="cap">{e(note)}</p></div>'
        )
    return chart(
        "segment_quality",
        "How well the model does in each segment",
        f"Mean NDCG@10 and recall@10 of the LightGBM ranker and the best baseline ({e(F.method_label(baseline))}) "
        "on the run's held-out users, by their segment (n = held-out users in it).",
        wide=True,
    )


def segments_section(seg: G.Segmentation, baseline: str, quality_note: str | None, notes: list[str]) -> str:
    """Customer segments: the caveats (``notes``), sentences, sizes, silhouette, profiles and
    (unless ``quality_note`` says why not) the model quality per segment."""
    sentences = "".join(
        f"<li><b>{int(r[G.SEGMENT])}.</b> {e(r[G.DESCRIPTION])}</li>" for r in seg.profiles.iter_rows(named=True)
    )
    return caveat_box(notes) + _grid(
        f'<div class="card wide"><h3>The segments in words</h3><ul class="segments">{sentences}</ul></div>',
        chart("segment_sizes", "Segment sizes", "Users per segment; segments are numbered by size."),
        chart(
            "segment_silhouette",
            "Choosing the number of segments",
            f"k-means for k = {min(seg.silhouette)}..{max(seg.silhouette)}; the k with the best silhouette "
            "(how much closer users are to their own segment than to the next) is kept.",
        ),
        chart(
            "segment_profiles",
            "What makes each segment different",
            "Colour: the segment's mean in standard deviations from the average user (red above, blue below; "
            "order counts and basket sizes on a log scale); text: the segment's mean.",
            wide=True,
        ),
        _quality_card(baseline, quality_note),
    )


def methods_table(methods: Mapping[str, Mapping[str, float]], ks: list[int]) -> str:
    """The evaluation table: one row per metric@K, one column per method; the best of each row underlined."""
    names = list(methods)
    head = "".join(f'<th class="num">{e(F.method_label(n))}</th>' for n in names)
    rows = []
    for k in ks:
        for metric in TABLE_METRICS:
            col = f"{metric}@{k}"
            if not all(col in methods[n] for n in names):
                continue
            best = max(methods[n][col] for n in names)
            cells = "".join(
                f'<td class="num">{"<u>" if methods[n][col] == best else ""}{methods[n][col]:.4f}'
                f"{'</u>' if methods[n][col] == best else ''}</td>"
                for n in names
            )
            rows.append(f'<tr><td title="{e(METRIC_WORDS[metric])}">{col}</td>{cells}</tr>')
    return (
        f'<div class="scroll"><table class="metrics"><thead><tr><th>metric</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def repeat_explore_table(split: Mapping[str, Mapping[str, float]], order: list[str]) -> str:
    """Each method's NDCG@10 and Recall@10 on the products the shopper bought before (repeat) and
    on the products new to them (explore); the best of each column underlined."""
    cols = [
        c
        for c in ("repeat_ndcg@10", "repeat_recall@10", "explore_ndcg@10", "explore_recall@10")
        if c in next(iter(split.values()))
    ]
    names = [n for n in order if n in split] + [n for n in split if n not in order]
    best = {c: max(split[n][c] for n in names if split[n][c] == split[n][c]) for c in cols}
    head = "".join(f'<th class="num">{e(c.replace("_", " "))}</th>' for c in cols)
    rows = []
    for n in names:
        cells = "".join(
            f'<td class="num">{"<u>" if split[n][c] == best[c] else ""}{split[n][c]:.4f}'
            f"{'</u>' if split[n][c] == best[c] else ''}</td>"
            for c in cols
        )
        rows.append(f"<tr><td>{e(F.method_label(n))}</td>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="metrics"><thead><tr><th>method</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def model_section(report: EvaluationReport, methods: Mapping[str, Mapping[str, float]], notes: list[str]) -> str:
    """Model performance: the caveats (``notes``), the run's evaluation (``methods`` in reading
    order) as charts and the table, and how to read the metrics."""
    ks = sorted({int(c.split("@")[1]) for c in next(iter(methods.values()))})
    return caveat_box(notes) + _grid(
        chart(
            "model_methods",
            "Ranker vs every baseline at K = 10",
            f"Held-out users ({report.users}, never trained on), their last labelled order predicted "
            "from the history before it.",
            wide=True,
        ),
        metric_glossary(),
        f'<div class="card wide"><h3>The evaluation table</h3><p class="cap">Mean over held-out users; '
        f"the best value of each row underlined.</p>{methods_table(methods, ks)}</div>",
        *(
            [
                f'<div class="card wide"><h3>Repeat and explore</h3><p class="cap">The held-out order split into '
                "products the shopper bought before (repeat) and products new to them (explore), each method "
                f"scored on each part.</p>{repeat_explore_table(report.repeat_explore, list(methods))}</div>"
            ]
            if report.repeat_explore
            else []
        ),
        chart("model_precision", "Precision@K", "Of the K products recommended, the share the shopper bought."),
        chart("model_recall", "Recall@K", "Of the products the shopper bought, the share found in the top K."),
        chart(
            "model_calibration",
            "Calibration of the basket probabilities",
            "Candidates in ten equal-count bins of predicted probability: predicted vs observed share bought.",
        ),
        chart(
            "model_kaggle_f1",
            "Kaggle F1 of the predicted baskets",
            "How well a predicted basket matches what the shopper bought again (the Instacart competition's "
            "score, 1 = exact): baskets sized to maximise the expected F1 from the calibrated probabilities, "
            "against the best fixed-size list of the shopper's most frequent products.",
        ),
        chart(
            "model_importance",
            "Feature importance",
            "The 20 signals the ranker leans on most (share of its total split gain); hover for the column name.",
            wide=True,
        ),
    )


def explorer_section(user_ids: list[str], ctx: Context) -> str:
    """The user explorer: the user picker, the timeline's container and the recommendations table
    (``page.js`` fills both)."""
    options = "".join(f'<option value="{u}">' for u in user_ids)
    return (
        '<div class="card wide">'
        '<form id="explorer-form" class="controls">'
        '<label for="explorer-user"><b>User id</b></label>'
        '<input id="explorer-user" name="user" list="explorer-ids" inputmode="numeric" autocomplete="off">'
        f'<datalist id="explorer-ids">{options}</datalist>'
        '<button type="submit" id="explorer-show">Show</button>'
        '<button type="button" class="ghost" id="explorer-random">Random user</button>'
        '<span id="explorer-mode"></span> <span id="explorer-status"></span>'
        "</form>"
        '<p id="explorer-summary" class="cap"></p>'
        '<div class="grid">'
        '<div><h3>Order timeline</h3><p class="cap">Each square is a purchase; rows are the recommended products '
        f"(ranked) and the user's {TIMELINE_EXTRA} other most frequent ones; ★ marks the recommended next order "
        '(blue: bought before, orange: new to the user).</p><div class="chart" id="explorer-timeline"></div></div>'
        f'<div><h3>Recommended next basket (top {TOP_K})</h3><p class="cap">For an order on '
        f"{S.DAY_NAMES[int(ctx.dow)]} at {int(ctx.hour)}:00 (the busiest slot) after the user's usual gap; "
        "why: the reason the numbers give; score: the ranker's, higher is better (not a probability).</p>"
        '<table id="explorer-recs"><thead><tr><th class="num">#</th><th>product</th><th>why</th>'
        '<th>department</th><th class="num">score</th><th>kind</th></tr></thead><tbody></tbody></table></div>'
        "</div></div>"
    )


def leads(head: Mapping[str, float], seg: G.Segmentation, objective: str) -> dict[str, str]:
    """The lead paragraph (HTML) of each section, by section id."""
    return {
        "patterns": f"{head['orders']:,.0f} orders of {head['users']:,.0f} shoppers, {head['lines']:,.0f} order lines.",
        "segments": f"{seg.k} segments from k-means on {len(seg.feature_names)} standardised behavioural features: "
        + e(", ".join(F.feature_label(f) for f in seg.feature_names))
        + ". Labels for every user are in the segments Parquet file next to this page.",
        "model": f"The run's validation report ({e(objective)} ranking objective).",
        "explorer": "Pick or type a user id to see what they bought when, next to the model's recommended next basket.",
    }


def footer(config: G.SegmentConfig, seg: G.Segmentation, explorer_users: int, ctx: Context, plotly_version: str) -> str:
    """How the segments and the explorer were made, and the Plotly version embedded."""
    return (
        f"Segments: k-means (scikit-learn, {config.n_init} restarts, seed {config.seed}) on standardised features, "
        f"department shares weighted to count as {config.department_weight:g} features together, fitted on up to "
        f"{config.fit_users:,} users; silhouette on up to {config.silhouette_users:,} (seeded). "
        f"Silhouette by k: {', '.join(f'{k}: {v:.3f}' for k, v in sorted(seg.silhouette.items()))}. "
        f"Explorer: {explorer_users} users sampled with seed {config.seed}; recommendations from the serving "
        f"bundle (ONNX), as GET /v1/users/{{id}}/recommendations?k={TOP_K}&amp;dow={int(ctx.dow)}"
        f"&amp;hour={int(ctx.hour)} "
        f"answers. Charts: Plotly {e(plotly_version)}, embedded; this page needs no network."
    )
