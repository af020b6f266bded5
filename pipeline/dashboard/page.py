"""The dashboard page: HTML skeleton, CSS and the small plain script that draws it.

``render_page`` fills the skeleton. The page is one self-contained file: plotly.js is inlined,
the figures and the explorer's data are JSON blocks (``<script type="application/json">``) that
the script reads; it needs no network. Opened from a file, the user explorer answers from the
embedded sample of users; served by the API at ``/dashboard`` (http/https), it asks the live
recommendation endpoint (``v1/users/{id}/recommendations``, relative to the page) for any user
id and falls back to the embedded answer only if the API does not answer.
"""

from __future__ import annotations

import html
import json
from typing import Any

CSS = """
:root { --ink:#1d2430; --muted:#5b6675; --line:#dfe3ea; --bg:#f5f7fa; --card:#fff; --accent:#d62728;
        --repeat:#1f77b4; --new:#ff7f0e; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#1d2430; color:#fff; padding:18px 28px 14px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .meta { color:#c9d1dc; font-size:12.5px; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 28px; display:flex; gap:22px; }
nav a { color:var(--ink); text-decoration:none; font-weight:600; font-size:13.5px; }
nav a:hover { color:var(--accent); }
main { padding:8px 28px 40px; max-width:1500px; margin:0 auto; }
section { margin-top:22px; }
section > h2 { font-size:19px; margin:10px 0 4px; }
section > p.lead { color:var(--muted); margin:0 0 12px; max-width:1100px; }
.kpis { display:grid; grid-template-columns:repeat(auto-fit, minmax(150px, 1fr)); gap:12px; margin-top:16px; }
.kpi { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.kpi .v { font-size:21px; font-weight:650; }
.kpi .l { color:var(--muted); font-size:12px; }
.grid { display:grid; grid-template-columns:repeat(2, minmax(0, 1fr)); gap:16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px 8px; min-width:0; }
.card.wide { grid-column:1 / -1; }
.card h3 { margin:0 0 2px; font-size:14.5px; }
.card p.cap { margin:0 0 6px; color:var(--muted); font-size:12.5px; }
.chart { width:100%; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:12.5px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); }
table.metrics { font-size:12px; } table.metrics th, table.metrics td { padding:4px 6px; white-space:nowrap; }
th { background:#f0f3f7; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
ul.segments { margin:4px 0 0; padding-left:18px; }
ul.segments li { margin:4px 0; }
.controls { display:flex; flex-wrap:wrap; gap:8px; align-items:center; margin:6px 0 10px; }
.controls input { font-size:14px; padding:6px 8px; width:180px; border:1px solid #b9c2cf; border-radius:6px; }
.controls button { font-size:13.5px; padding:6px 12px; border-radius:6px; border:1px solid #1d2430;
                   background:#1d2430; color:#fff; cursor:pointer; }
.controls button.ghost { background:#fff; color:#1d2430; }
#explorer-status { color:var(--muted); font-size:12.5px; }
#explorer-status.warn { color:#a5460a; }
.badge { display:inline-block; padding:0 7px; border-radius:9px; font-size:11.5px; font-weight:600; color:#fff; }
.badge.repeat { background:var(--repeat); } .badge.new { background:var(--new); }
.scorebar { display:inline-block; height:9px; background:#9fb7d3; border-radius:2px; vertical-align:middle;
            margin-right:6px; }
footer { color:var(--muted); font-size:12px; padding:0 28px 30px; max-width:1500px; margin:0 auto; }
@media (max-width: 1000px) { .grid { grid-template-columns:1fr; } }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var figs = JSON.parse(document.getElementById("bc-figures").textContent);
  var ex = JSON.parse(document.getElementById("bc-explorer").textContent);
  var CONFIG = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]};
  Object.keys(figs.figures).forEach(function (id) {
    var fig = figs.figures[id], el = document.getElementById(id);
    fig.layout.template = figs.template;
    Plotly.newPlot(el, fig.data, fig.layout, CONFIG);
  });

  var live = location.protocol === "http:" || location.protocol === "https:";
  var input = document.getElementById("explorer-user");
  var status = document.getElementById("explorer-status");
  var summary = document.getElementById("explorer-summary");
  var tbody = document.querySelector("#explorer-recs tbody");
  var timeline = document.getElementById("explorer-timeline");
  var ids = Object.keys(ex.users);

  function info(pid) { return ex.products[String(pid)] || ["product " + pid, "unknown", "unknown"]; }
  function setStatus(text, warn) { status.textContent = text; status.className = warn ? "warn" : ""; }
  function cell(tr, text, cls) {
    var td = document.createElement("td"); td.textContent = text; if (cls) { td.className = cls; }
    tr.appendChild(td); return td;
  }

  function drawTable(items) {
    tbody.textContent = "";
    var scores = items.map(function (it) { return it.score; });
    var hi = Math.max.apply(null, scores), lo = Math.min.apply(null, scores);
    items.forEach(function (it) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-product", String(it.product_id));
      cell(tr, String(it.rank), "num");
      cell(tr, it.name === "product " + it.product_id ? it.name : it.name + "  ·" + it.product_id);
      cell(tr, it.aisle);
      cell(tr, it.department);
      var sc = cell(tr, "", "num"), bar = document.createElement("span");
      bar.className = "scorebar";
      bar.style.width = Math.round(8 + 52 * (hi > lo ? (it.score - lo) / (hi - lo) : 1)) + "px";
      sc.appendChild(bar); sc.appendChild(document.createTextNode(it.score.toFixed(3)));
      var kind = cell(tr, ""), b = document.createElement("span");
      b.className = "badge " + (it.repeat ? "repeat" : "new"); b.textContent = it.repeat ? "repeat" : "new";
      kind.appendChild(b);
      tbody.appendChild(tr);
    });
  }

  function drawTimeline(user, items) {
    var orders = user ? user.orders : [];
    var recIds = items.map(function (it) { return it.product_id; });
    var counts = {};
    orders.forEach(function (o) { o[4].forEach(function (p) { counts[p] = (counts[p] || 0) + 1; }); });
    var others = Object.keys(counts).map(Number).filter(function (p) { return recIds.indexOf(p) < 0; })
      .sort(function (a, b) { return counts[b] - counts[a] || a - b; }).slice(0, ex.timeline_extra);
    var rows = recIds.concat(others);
    var label = {};
    rows.forEach(function (p, i) {
      var n = info(p)[0], own = n !== "product " + p;
      if (n.length > 30) { n = n.slice(0, 29) + "…"; }
      label[p] = (i < recIds.length ? "#" + (i + 1) + " " : "") + n + (own ? " ·" + p : "");
    });
    var bx = [], by = [], bt = [];
    orders.forEach(function (o) {
      o[4].forEach(function (p) {
        if (label[p] === undefined) { return; }
        bx.push(o[0]); by.push(label[p]);
        bt.push("order " + o[0] + " (day " + o[1] + ", " + o[2] + ":00" +
                (o[3] === null ? ", first order" : ", " + o[3] + " days after the previous") + ")<br>" + info(p)[0]);
      });
    });
    var next = orders.length ? orders[orders.length - 1][0] + 1 : 1;
    function stars(repeat, name, color) {
      var chosen = items.filter(function (it) { return it.repeat === repeat; });
      return {
        type: "scatter", mode: "markers", name: name, hoverinfo: "text",
        x: chosen.map(function () { return next; }),
        y: chosen.map(function (it) { return label[it.product_id]; }),
        text: chosen.map(function (it) { return "#" + it.rank + " " + it.name + ", score " + it.score.toFixed(3); }),
        marker: {symbol: "star", size: 14, color: color}
      };
    }
    var traces = [
      {type: "scatter", mode: "markers", name: "bought", x: bx, y: by, text: bt, hoverinfo: "text",
       marker: {symbol: "square", size: 9, color: "#7f8a99"}},
      stars(true, "recommended: repeat", "#1f77b4"),
      stars(false, "recommended: new", "#ff7f0e")
    ];
    var first = orders.length ? orders[0][0] : next;
    var layout = {
      template: figs.template, height: Math.max(260, 19 * rows.length + 110),
      margin: {l: 10, r: 20, t: 10, b: 10}, hovermode: "closest",
      xaxis: {title: {text: "order number (★ = the recommended next order)"}, range: [first - 0.8, next + 0.8],
              dtick: (next - first) > 24 ? 5 : 1, zeroline: false},
      yaxis: {categoryorder: "array", categoryarray: rows.map(function (p) { return label[p]; }).reverse(),
              automargin: true, tickfont: {size: 11}},
      legend: {orientation: "h", y: 1.06, x: 0},
      shapes: [{type: "line", x0: next - 0.5, x1: next - 0.5, y0: 0, y1: 1, yref: "paper",
                line: {color: "#d62728", dash: "dot", width: 1}}]
    };
    Plotly.react(timeline, traces, layout, CONFIG);
  }

  function describe(id, user, strategy, source) {
    var parts = ["User " + id];
    if (user) {
      var seg = ex.segments[String(user.segment)];
      if (seg) { parts.push("segment " + user.segment + ": " + seg); }
      parts.push(user.n_orders + " orders (the last " + user.orders.length + " shown)");
    } else {
      parts.push("order history not embedded (only " + ids.length + " sampled users carry it)");
    }
    if (strategy === "popular") { parts.push("unknown to the model: the cold-start popular list"); }
    parts.push("recommendations from " + source);
    summary.textContent = parts.join(" · ");
  }

  function staticItems(user) {
    return user.recs.map(function (r, i) {
      var p = info(r[0]);
      return {product_id: r[0], score: r[1], repeat: !!r[2], rank: i + 1, name: p[0], aisle: p[1], department: p[2]};
    });
  }

  function show(raw) {
    var id = String(raw).trim();
    if (!/^[0-9]{1,10}$/.test(id)) { setStatus("A user id is a whole number.", true); return; }
    id = String(Number(id));
    var user = ex.users[id];
    if (live) {
      setStatus("Asking the live API…", false);
      var url = "v1/users/" + id + "/recommendations?k=" + ex.k + "&dow=" + ex.context.dow + "&hour=" + ex.context.hour;
      fetch(url, {headers: {accept: "application/json"}}).then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      }).then(function (body) {
        drawTable(body.items); drawTimeline(user, body.items);
        describe(id, user, body.strategy, "the live API (model " + body.model_version + ")");
        setStatus("", false);
        document.body.setAttribute("data-explorer-user", id);
        document.body.setAttribute("data-explorer-source", "api");
      }).catch(function (err) {
        var why = "The live API did not answer (" + err.message + ")";
        if (user) { fromFile(id, user); setStatus(why + "; showing the embedded answer.", true); }
        else { setStatus(why + " and user " + id + " is not embedded.", true); }
      });
      return;
    }
    if (!user) {
      setStatus("User " + id + " is not among the " + ids.length + " users embedded in this file; " +
                "serve the model (basketcast serve) and open /dashboard to look up any user.", true);
      return;
    }
    fromFile(id, user);
    setStatus("", false);
  }

  function fromFile(id, user) {
    var items = staticItems(user);
    drawTable(items); drawTimeline(user, items);
    describe(id, user, user.strategy, "this file (model " + ex.model_version + ")");
    document.body.setAttribute("data-explorer-user", id);
    document.body.setAttribute("data-explorer-source", "file");
  }

  document.getElementById("explorer-form").addEventListener("submit", function (e) {
    e.preventDefault(); show(input.value);
  });
  document.getElementById("explorer-random").addEventListener("click", function () {
    if (!ids.length) { return; }
    input.value = ids[Math.floor(Math.random() * ids.length)]; show(input.value);
  });
  document.getElementById("explorer-mode").textContent = live
    ? "Live: any user id is answered by the recommendation API serving this page."
    : "Offline: " + ids.length + " sampled users are embedded in this file.";
  if (ids.length) { input.value = ids[0]; show(ids[0]); }
  document.body.setAttribute("data-ready", "1");
})();
"""


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
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{html.escape(title)}</h1><div class="meta">{meta}</div></header>'
        f'<nav>{nav}</nav><main><div class="kpis">{kpi_html}</div>{body}</main>'
        f"<footer>{footer}</footer>"
        f"{json_block('bc-figures', figures_json)}{json_block('bc-explorer', explorer_json)}"
        f"<script>{plotly_js}</script><script>{SCRIPT}</script></body></html>\n"
    )
