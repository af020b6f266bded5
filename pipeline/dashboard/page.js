(function () {
  "use strict";
  var figs = JSON.parse(document.getElementById("bc-figures").textContent);
  var ex = JSON.parse(document.getElementById("bc-explorer").textContent);
  // No mode bar: Plotly's toolbar floats over the top right of a chart, where titles and labels sit.
  var CONFIG = {responsive: true, displaylogo: false, displayModeBar: false};
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
  function day(dow) { return ex.day_names[dow] || "day " + dow; }
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
      var prod = cell(tr, it.name === "product " + it.product_id ? it.name : it.name + "  ·" + it.product_id);
      var aisle = document.createElement("div"); aisle.className = "sub"; aisle.textContent = it.aisle;
      prod.appendChild(aisle);
      cell(tr, it.reason || "", "why");
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
        bt.push("order " + o[0] + " (" + day(o[1]) + ", " + o[2] + ":00" +
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
      return {product_id: r[0], score: r[1], repeat: !!r[2], reason: r[3], rank: i + 1, name: p[0], aisle: p[1],
              department: p[2]};
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
