// modelserve live dashboard: polls /v2/dashboard/summary once a second and updates the page in place.
//
// No framework and no build step: the DOM is created once per model version and then only its text and
// chart data change, so a tick costs a few hundred microseconds however long the page stays open. Every
// string from the server goes through textContent (never innerHTML). A failed or slow poll marks the page
// stale and says why; the next poll is scheduled whatever happened, so the page recovers on its own.
//
// Stable hooks for tests and scripts: #alerts[data-firing], li[data-alert][data-state],
// #models tr[data-model][data-version] td[data-field], .panel[data-model][data-version]
// [data-metric][data-value], .drift tr[data-feature][data-drifted].
"use strict";

(function () {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 3000;
  const MAX_POINTS = 120; // two minutes of one-second points
  const CHART_HEIGHT = 160;
  const SUMMARY_URL = "/v2/dashboard/summary";

  const COLORS = {
    throughput: "#2563eb",
    p50: "#16a34a",
    p95: "#d97706",
    p99: "#dc2626",
  };

  const TILES = [
    ["throughput", "Throughput", "req/s", (v) => fmtNumber(v)],
    ["p50_ms", "p50", "ms", (v) => fmtMs(v)],
    ["p95_ms", "p95", "ms", (v) => fmtMs(v)],
    ["p99_ms", "p99", "ms", (v) => fmtMs(v)],
    ["error_rate", "Errors", "", (v) => fmtPercent(v)],
    ["queue_depth", "Queue", "", (v) => fmtInteger(v)],
    ["mean_batch_size", "Mean batch", "rows", (v) => fmtNumber(v)],
  ];

  const panels = new Map(); // "model/version" -> panel state
  let windowS = 10;

  // ---- small helpers --------------------------------------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  function fmtNumber(v) {
    if (v == null) return "–";
    if (v === 0) return "0";
    if (Math.abs(v) >= 100) return v.toFixed(0);
    if (Math.abs(v) >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  function fmtMs(v) {
    if (v == null) return "–";
    return v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toFixed(3);
  }

  function fmtPercent(v) {
    if (v == null) return "–";
    return (v * 100).toFixed(v === 0 ? 0 : 2) + " %";
  }

  function fmtInteger(v) {
    return v == null ? "–" : String(Math.round(v));
  }

  function fmtTime(ms) {
    return ms ? new Date(ms).toLocaleTimeString() : "";
  }

  function fmtClock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function fmtPvalue(v) {
    if (v == null) return "–";
    return v < 0.0001 ? "<0.0001" : v.toPrecision(2);
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function key(model, version) {
    return model + "/" + version;
  }

  // ---- status line ----------------------------------------------------------------------------------

  function setStatus(state, text) {
    const status = document.getElementById("status");
    status.dataset.state = state;
    status.className = "status status-" + state;
    setText(status, text);
    document.body.classList.toggle("stale", state === "error");
  }

  // ---- alerts ---------------------------------------------------------------------------------------

  function alertItem(alert) {
    const value = alert.value == null ? "–" : fmtNumber(alert.value);
    const since = alert.resolved_ms ? "resolved " + fmtTime(alert.resolved_ms) : "since " + fmtTime(alert.since_ms);
    return el(
      "li",
      {
        class: "alert alert-" + alert.state,
        "data-alert": alert.name,
        "data-state": alert.state,
        "data-model": alert.model || "",
      },
      [
        el("span", { class: "severity", text: alert.severity || "warning" }),
        el("strong", { text: alert.name }),
        el("span", { class: "alert-model", text: alert.model || "" }),
        el("span", { text: `${alert.metric} ${value} (threshold ${fmtNumber(alert.threshold)})` }),
        el("span", { class: "muted", text: since }),
      ],
    );
  }

  function fillList(list, alerts) {
    list.replaceChildren(...alerts.map(alertItem));
  }

  function renderAlerts(doc) {
    const firing = doc.firing || [];
    const pending = doc.pending || [];
    const resolved = doc.resolved || [];
    const box = document.getElementById("alerts");
    box.dataset.firing = String(firing.length);
    box.classList.toggle("has-firing", firing.length > 0);
    fillList(document.getElementById("alerts-firing"), firing);
    fillList(document.getElementById("alerts-pending"), pending);
    document.getElementById("alerts-none").hidden = firing.length + pending.length > 0;
    fillList(document.getElementById("alerts-resolved"), resolved);
    document.getElementById("alerts-resolved-box").hidden = resolved.length === 0;
  }

  // ---- models table ---------------------------------------------------------------------------------

  const MODEL_FIELDS = [
    ["throughput", (w) => fmtNumber(w.throughput)],
    ["p50_ms", (w) => fmtMs(w.p50_ms)],
    ["p95_ms", (w) => fmtMs(w.p95_ms)],
    ["p99_ms", (w) => fmtMs(w.p99_ms)],
    ["error_rate", (w) => fmtPercent(w.error_rate)],
    ["queue_depth", (w) => fmtInteger(w.queue_depth)],
    ["mean_batch_size", (w) => (w.requests ? fmtNumber(w.mean_batch_size) : "–")],
  ];

  function renderModels(models, windows) {
    const tbody = document.querySelector("#models tbody");
    const rows = new Map();
    for (const row of tbody.rows) rows.set(row.dataset.key, row);
    const seen = new Set();
    let previous = null;
    for (const model of models) {
      const k = key(model.name, model.version);
      seen.add(k);
      let row = rows.get(k);
      if (!row) {
        row = el("tr", { "data-key": k, "data-model": model.name, "data-version": model.version }, [
          el("td", { class: "name", text: model.name }),
          el("td", { text: model.version || "–" }),
          el("td", { "data-field": "state" }, [el("span", { class: "state" })]),
          ...MODEL_FIELDS.map(([field]) => el("td", { class: "num", "data-field": field })),
          el("td", { class: "reason muted", "data-field": "reason" }),
        ]);
      }
      // Keep the server's order (sorted by name, then version) without moving rows that are in place.
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (row !== expected) tbody.insertBefore(row, expected);
      previous = row;
      const badge = row.querySelector('[data-field="state"] .state');
      setText(badge, model.state);
      badge.className = "state state-" + model.state;
      row.dataset.state = model.state;
      const stats = windows.get(k);
      for (const [field, format] of MODEL_FIELDS) {
        setText(row.querySelector(`[data-field="${field}"]`), stats ? format(stats) : "");
      }
      setText(row.querySelector('[data-field="reason"]'), model.reason || "");
    }
    for (const [k, row] of rows) if (!seen.has(k)) row.remove();
  }

  // ---- per-version panels ---------------------------------------------------------------------------

  function chartOptions(title, series, width) {
    return {
      title,
      width,
      height: CHART_HEIGHT,
      cursor: { drag: { x: false, y: false } },
      // Labels only: the tiles above show the current values, and a live legend jumps as the mouse moves.
      legend: { show: series.length > 1, live: false },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] } },
      axes: [
        // Whole seconds on a wall clock: sub-second ticks (":39.500") and the date line are noise here.
        {
          stroke: "#64748b",
          space: 70,
          incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600],
          values: (u, ticks) => ticks.map(fmtClock),
        },
        { stroke: "#64748b", size: 56 },
      ],
      series: [{}, ...series],
    };
  }

  function lineSeries(label, color, format) {
    return {
      label,
      stroke: color,
      width: 2,
      fill: color + "14",
      points: { show: false },
      value: (u, v) => format(v),
    };
  }

  function createPanel(stats) {
    const tiles = TILES.map(([metric, label, unit]) =>
      el("div", { class: "tile", "data-metric": metric }, [
        el("span", { class: "tile-label", text: label }),
        el("span", { class: "tile-value value", text: "–" }),
        el("span", { class: "tile-unit", text: unit }),
      ]),
    );
    const throughputBox = el("div", { class: "chart", "data-chart": "throughput" });
    const latencyBox = el("div", { class: "chart", "data-chart": "latency" });
    const batchBox = el("div", { class: "batches", "data-chart": "batch" });
    const driftBody = el("tbody");
    const driftCaption = el("p", { class: "drift-caption muted", text: "No drift window yet." });
    const driftTable = el("table", { class: "drift", "data-model": stats.model }, [
      el("thead", {}, [
        el("tr", {}, [
          el("th", { text: "Feature" }),
          el("th", { class: "num", text: "PSI" }),
          el("th", { class: "num", text: "KS" }),
          el("th", { class: "num", text: "p-value" }),
        ]),
      ]),
      driftBody,
    ]);
    const stateBadge = el("span", { class: "state" });
    const node = el(
      "section",
      { class: "panel card", "data-model": stats.model, "data-version": stats.version },
      [
        el("header", { class: "panel-head" }, [
          el("h2", { text: stats.model }),
          el("span", { class: "version", text: "v" + stats.version }),
          stateBadge,
          el("span", { class: "spacer" }),
          el("span", { class: "span muted" }),
        ]),
        el("p", { class: "idle-note muted", text: "Idle: no requests since this page opened." }),
        el("div", { class: "tiles" }, tiles),
        el("div", { class: "panel-body" }, [
          throughputBox,
          latencyBox,
          el("div", { class: "side" }, [
            el("h3", { text: "Batch sizes (rows per execution)" }),
            batchBox,
            el("h3", { text: "Input drift" }),
            driftCaption,
            driftTable,
          ]),
        ]),
      ],
    );
    document.getElementById("panels").appendChild(node);
    const width = Math.max(throughputBox.clientWidth, 240);
    const panel = {
      node,
      stateBadge,
      tiles: new Map(TILES.map(([metric], i) => [metric, tiles[i]])),
      batchBox,
      driftBody,
      driftCaption,
      driftTable,
      active: false,
      data: { x: [], throughput: [], p50: [], p95: [], p99: [] },
      throughputChart: new uPlot(
        chartOptions("Throughput (req/s)", [lineSeries("req/s", COLORS.throughput, fmtNumber)], width),
        [[], []],
        throughputBox,
      ),
      latencyChart: new uPlot(
        chartOptions(
          "Latency (ms)",
          [
            lineSeries("p50", COLORS.p50, fmtMs),
            lineSeries("p95", COLORS.p95, fmtMs),
            lineSeries("p99", COLORS.p99, fmtMs),
          ],
          width,
        ),
        [[], [], [], []],
        latencyBox,
      ),
    };
    panel.resizer = new ResizeObserver(() => {
      const w = Math.max(throughputBox.clientWidth, 240);
      if (w !== panel.throughputChart.width) {
        panel.throughputChart.setSize({ width: w, height: CHART_HEIGHT });
        panel.latencyChart.setSize({ width: w, height: CHART_HEIGHT });
      }
    });
    panel.resizer.observe(throughputBox);
    panels.set(key(stats.model, stats.version), panel);
    return panel;
  }

  function destroyPanel(k) {
    const panel = panels.get(k);
    panel.resizer.disconnect();
    panel.throughputChart.destroy();
    panel.latencyChart.destroy();
    panel.node.remove();
    panels.delete(k);
  }

  function batchLabel(le, previous) {
    if (le === "+Inf") return ">" + previous;
    const upper = Number(le);
    const lower = previous == null ? upper : Number(previous) + 1;
    return lower === upper ? String(upper) : lower + "–" + upper;
  }

  function renderBatches(box, buckets) {
    const used = buckets.filter((b) => b.count > 0);
    const total = used.reduce((sum, b) => sum + b.count, 0);
    if (total === 0) {
      box.replaceChildren(el("p", { class: "muted", text: "No executions in the window." }));
      return;
    }
    const max = Math.max(...used.map((b) => b.count));
    const bars = [];
    let previous = null;
    for (const bucket of buckets) {
      const label = batchLabel(bucket.le, previous);
      previous = bucket.le;
      if (bucket.count === 0) continue;
      const bar = el("span", { class: "bar-fill" });
      bar.style.width = ((100 * bucket.count) / max).toFixed(1) + "%";
      bars.push(
        el("div", { class: "bar", "data-batch": bucket.le, "data-count": String(bucket.count) }, [
          el("span", { class: "bar-label", text: label }),
          el("span", { class: "bar-track" }, [bar]),
          el("span", { class: "bar-count", text: ((100 * bucket.count) / total).toFixed(0) + " %" }),
        ]),
      );
    }
    box.replaceChildren(...bars);
  }

  function renderDrift(panel, drift) {
    panel.driftTable.hidden = !drift;
    if (!drift) {
      setText(panel.driftCaption, "No drift window yet (needs a reference profile and a full window).");
      panel.node.dataset.drifted = "false";
      return;
    }
    panel.node.dataset.drifted = String(drift.drifted);
    setText(
      panel.driftCaption,
      `Window #${drift.window} (${drift.rows} rows, ${fmtTime(drift.ended_ms)}): max PSI ` +
        `${fmtNumber(drift.max_psi)}, threshold ${drift.threshold}` +
        (drift.prediction_psi == null ? "" : `, predictions PSI ${fmtNumber(drift.prediction_psi)}`),
    );
    panel.driftCaption.classList.toggle("drifted", drift.drifted);
    panel.driftBody.replaceChildren(
      ...drift.features.map((f) => {
        const psi = el("td", { class: "num psi", text: f.psi == null ? "∞" : f.psi.toFixed(3) });
        psi.classList.toggle("psi-high", f.drifted);
        return el("tr", { "data-feature": f.feature, "data-drifted": String(f.drifted) }, [
          el("td", { text: f.feature }),
          psi,
          el("td", { class: "num", text: f.ks_statistic == null ? "–" : f.ks_statistic.toFixed(3) }),
          el("td", { class: "num", text: fmtPvalue(f.ks_pvalue) }),
        ]);
      }),
    );
  }

  function push(array, value) {
    array.push(value);
    if (array.length > MAX_POINTS) array.shift();
  }

  function renderPanel(panel, stats, state, nowS) {
    for (const [metric, , , format] of TILES) {
      const tile = panel.tiles.get(metric);
      const value = stats[metric];
      tile.dataset.value = value == null ? "" : String(value);
      setText(tile.querySelector(".value"), format(value));
    }
    panel.tiles.get("error_rate").classList.toggle("bad", stats.error_rate > 0);
    panel.tiles.get("queue_depth").classList.toggle("warn", stats.queue_depth > 0);
    setText(panel.stateBadge, state || "");
    panel.stateBadge.className = "state state-" + (state || "UNKNOWN");
    setText(panel.node.querySelector(".panel-head .span"), `${stats.requests} requests in ${fmtNumber(stats.span_s)} s`);

    // A version nobody has called since the page opened shows one line, not empty charts; it opens for good
    // at its first request (or drift result), so the layout does not jump back and forth.
    if (!panel.active && (stats.requests > 0 || stats.drift)) {
      panel.active = true;
      panel.node.classList.add("active");
    }
    const d = panel.data;
    push(d.x, nowS);
    push(d.throughput, stats.throughput);
    push(d.p50, stats.p50_ms);
    push(d.p95, stats.p95_ms);
    push(d.p99, stats.p99_ms);
    panel.throughputChart.setData([d.x, d.throughput]);
    panel.latencyChart.setData([d.x, d.p50, d.p95, d.p99]);
    renderBatches(panel.batchBox, stats.batch_sizes);
    renderDrift(panel, stats.drift);
  }

  function renderPanels(doc, states) {
    const seen = new Set();
    const nowS = doc.server_time_ms / 1000;
    for (const stats of doc.versions) {
      const k = key(stats.model, stats.version);
      seen.add(k);
      const panel = panels.get(k) || createPanel(stats);
      renderPanel(panel, stats, states.get(k), nowS);
    }
    for (const k of [...panels.keys()]) if (!seen.has(k)) destroyPanel(k);
  }

  // ---- polling --------------------------------------------------------------------------------------

  function render(doc) {
    setText(document.getElementById("server-time"), "server time " + fmtTime(doc.server_time_ms));
    const windows = new Map(doc.versions.map((w) => [key(w.model, w.version), w]));
    const states = new Map(doc.models.map((m) => [key(m.name, m.version), m.state]));
    renderAlerts(doc.alerts);
    renderModels(doc.models, windows);
    renderPanels(doc, states);
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error;
    } catch (ignored) {
      // Not JSON (a proxy's error page): the status line says enough.
    }
    return response.statusText;
  }

  async function poll() {
    const controller = new AbortController();
    const abort = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(`${SUMMARY_URL}?window=${windowS}`, {
        signal: controller.signal,
        cache: "no-store",
        headers: { accept: "application/json" },
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}: ${await errorText(response)}`);
      render(await response.json());
      setStatus("live", "live · every " + POLL_MS / 1000 + " s · " + windowS + " s window");
    } catch (error) {
      const reason = error.name === "AbortError" ? `no answer in ${TIMEOUT_MS / 1000} s` : error.message;
      setStatus("error", "not updating: " + reason + " (retrying)");
    } finally {
      clearTimeout(abort);
      setTimeout(poll, POLL_MS);
    }
  }

  // The next poll (within a second) uses the new window; polling again now could run two loops at once.
  document.getElementById("window").addEventListener("change", (event) => {
    windowS = Number(event.target.value);
  });

  if (typeof uPlot === "undefined") {
    setStatus("error", "the chart library did not load (/dashboard/uPlot.iife.min.js)");
    return;
  }
  poll();
})();
