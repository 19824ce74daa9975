// The dashboard: polls /dashboard/data (one request at a time) and redraws tables and charts.
"use strict";

const REFRESH_MS = 5000; // between the end of one poll and the start of the next
const TIMEOUT_MS = 20000; // a poll that gets no answer by then is abandoned
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
const charts = {};
const variantColors = {};
let refreshes = 0;

function colorOf(variant) {
  if (!(variant in variantColors)) {
    const known = { base: PALETTE[0], fine_tuned: PALETTE[1] };
    variantColors[variant] = known[variant] || PALETTE[2 + (Object.keys(variantColors).length % 4)];
  }
  return variantColors[variant];
}

// After each draw, the canvas carries how many observations the chart shows (tests read it).
Chart.register({
  id: "renderedMarker",
  afterRender(chart, _args, options) {
    chart.canvas.dataset.rendered = String(options.count || 0);
  },
});

function drawChart(id, type, data, count, options) {
  const config = {
    type: type,
    data: data,
    options: Object.assign(
      { animation: false, maintainAspectRatio: false, responsive: true,
        plugins: { renderedMarker: { count: count }, legend: { position: "bottom" } } },
      options,
    ),
  };
  if (charts[id]) {
    charts[id].data = data;
    charts[id].options.plugins.renderedMarker.count = count;
    charts[id].update();
  } else {
    charts[id] = new Chart(document.getElementById(id), config);
  }
}

function cell(row, text) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  row.appendChild(td);
}

function weightsBar(weights) {
  const bar = document.createElement("div");
  bar.className = "weights";
  for (const [variant, weight] of Object.entries(weights)) {
    if (weight <= 0) continue;
    const part = document.createElement("span");
    part.style.width = (weight * 100).toFixed(1) + "%";
    part.style.background = colorOf(variant);
    part.textContent = variant + " " + Math.round(weight * 100) + "%";
    part.title = part.textContent;
    bar.appendChild(part);
  }
  return bar;
}

function fmt(value, digits, signed) {
  if (value === null || value === undefined) return "-";
  const text = value.toFixed(digits);
  return signed && value >= 0 ? "+" + text : text;
}

function pct(value) {
  return value === null || value === undefined ? "-" : (100 * value).toFixed(1) + "%";
}

function fillRows(id, items, cells, empty) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of items) {
    const row = body.insertRow();
    for (const text of cells(item)) cell(row, text);
  }
  if (!items.length) {
    const row = body.insertRow();
    cell(row, empty);
    row.cells[0].colSpan = document.querySelectorAll("#" + id + " thead th").length;
    row.cells[0].className = "muted";
  }
  document.getElementById(id).dataset.rows = String(items.length);
}

function decisionCell(v) {
  const span = document.createElement("span");
  const word = /better/.test(v.decision) ? "better" : /worse/.test(v.decision) ? "worse" : "";
  span.className = "decision " + word;
  span.textContent = v.decision;
  return span;
}

function planText(plan) {
  if (!plan) return "none";
  const steps = plan.steps.map((s, i) => (i === plan.step ? "[" + s + "%]" : s + "%")).join(" → ");
  return plan.status + " " + steps + ": " + plan.state;
}

function guardrailsCell(ok) {
  const span = document.createElement("span");
  span.className = ok ? "" : "breached";
  span.textContent = ok ? "ok" : "BREACHED";
  return span;
}

function renderAb(data) {
  // The verdict first: decision, its always-valid estimate and interval, guardrails, plan.
  fillRows("verdicts", data.verdicts, (v) => [
    v.advisor, v.variant, decisionCell(v),
    fmt(v.estimate, 2, true) + " [" + fmt(v.ci_low, 2, true) + ", " + fmt(v.ci_high, 2, true) + "]",
    guardrailsCell(v.guardrails_ok), planText(v.plan), v.metric + " (" + v.method + ")",
    v.n_variant + " / " + v.n_base, fmt(v.p, 3),
  ], "no split traffic on a candidate yet");
  fillRows("feedback", data.feedback, (f) => [
    f.variant, String(f.ratings), String(f.simulated),
    fmt(f.mean_rating, 2) + " [" + fmt(f.ci_low, 2) + ", " + fmt(f.ci_high, 2) + "]",
    pct(f.helpful_rate),
  ], "no feedback yet");
  fillRows("paired", data.paired, (p) => [
    p.advisor, p.variant, String(p.pairs),
    fmt(p.mean_difference, 2, true) + " [" + fmt(p.sequence_low, 2, true) + ", " + fmt(p.sequence_high, 2, true) + "]",
    fmt(p.sequential_p, 3), pct(p.candidate_higher),
    "[" + fmt(p.descriptive.paired_t_low, 2, true) + ", " + fmt(p.descriptive.paired_t_high, 2, true) + "] / " + fmt(p.descriptive.wilcoxon_p, 3),
  ], "no shadow pairs (rollout --shadow)");
}

function weightsText(weights) {
  return Object.entries(weights || {}).map(([v, w]) => v + " " + Math.round(w * 100) + "%").join(", ");
}

function eventText(e) {
  let text = "v" + e.version + " " + weightsText(e.weights) + " · " + e.actor + ": " + e.reason;
  if (e.kind === "plan-step" && e.metric) {
    text += " · " + e.metric + " " + fmt(e.estimate, 2, true) +
      " [" + fmt(e.ci_low, 2, true) + ", " + fmt(e.ci_high, 2, true) + "]";
  }
  return text;
}

function renderTimeline(data) {
  const box = document.getElementById("timeline");
  box.replaceChildren();
  const advisors = Object.keys(data.timeline || {});
  for (const advisor of advisors) {
    const section = document.createElement("div");
    section.className = "timeline-advisor";
    section.dataset.advisor = advisor;
    const title = document.createElement("h3");
    const plan = data.plans[advisor];
    title.textContent = advisor + (plan ? " · plan " + planText(plan) : "");
    section.appendChild(title);
    const list = document.createElement("ol");
    for (const e of data.timeline[advisor]) {
      const item = document.createElement("li");
      const kind = document.createElement("span");
      kind.className = "kind " + e.kind;
      kind.textContent = e.kind;
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = " " + new Date(e.at).toLocaleString() + " ";
      item.append(kind, when, document.createTextNode(eventText(e)));
      list.appendChild(item);
    }
    section.appendChild(list);
    box.appendChild(section);
  }
  if (!advisors.length) {
    box.textContent = "no rollout change yet";
    box.className = "muted";
  }
  box.dataset.advisors = String(advisors.length);
  box.dataset.events = String(advisors.reduce((n, a) => n + data.timeline[a].length, 0));
}

// Tables whose content is wider than their card (columns cut off or behind a scrollbar),
// or the page wider than the window: listed in body[data-clipped] (tests read it).
function clippedColumns() {
  const clipped = [];
  for (const table of document.querySelectorAll("table")) {
    if (table.scrollWidth > table.parentElement.clientWidth + 1) clipped.push(table.id);
    for (const c of table.querySelectorAll("th, td")) {
      if (c.scrollWidth > c.clientWidth + 1) { clipped.push(table.id + ":" + c.textContent); break; }
    }
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) clipped.push("page");
  return clipped;
}

function renderTables(data) {
  const split = document.querySelector("#split tbody");
  split.replaceChildren();
  for (const s of data.split) {
    const row = split.insertRow();
    cell(row, s.advisor);
    cell(row, weightsBar(s.weights));
    cell(row, "v" + s.version);
    cell(row, s.live.join(", ") || "none");
  }
  const byVariant = Object.fromEntries(data.failures.map((f) => [f.variant, f]));
  const queues = document.querySelector("#queues tbody");
  queues.replaceChildren();
  for (const q of data.health.queues) {
    const f = byVariant[q.variant] || { succeeded: 0, failed: 0, in_flight: 0 };
    const row = queues.insertRow();
    row.dataset.queue = q.queue;
    cell(row, q.queue);
    cell(row, q.live_workers === null ? "?" : String(q.live_workers));
    cell(row, q.slots === null || q.slots === undefined ? "?" : q.slots_in_use + " / " + q.slots);
    cell(row, q.depth === null ? "?" : String(q.depth));
    cell(row, String(f.succeeded));
    cell(row, String(f.failed));
    cell(row, String(f.in_flight));
  }
  const h = data.health;
  document.getElementById("dependencies").textContent =
    "database: " + (h.database.ok ? "ok" : "DOWN") + " (" + h.database.detail + ") · broker: " +
    (h.broker.ok ? "ok" : "DOWN") + " (" + h.broker.detail + ")";
  const status = document.getElementById("status");
  status.textContent = h.status;
  status.className = "pill " + h.status;
}

function renderCharts(data) {
  const scoreSets = Object.entries(data.scores.variants).map(([variant, counts]) => ({
    label: variant, data: counts, backgroundColor: colorOf(variant),
  }));
  const scored = scoreSets.reduce((n, ds) => n + ds.data.reduce((a, b) => a + b, 0), 0);
  drawChart("chart-scores", "bar", { labels: data.scores.bins, datasets: scoreSets }, scored, {
    scales: { x: { title: { display: true, text: "overall score" } },
              y: { beginAtZero: true, title: { display: true, text: "jobs" }, ticks: { precision: 0 } } },
  });

  const timingSets = Object.entries(data.inference).map(([variant, points]) => ({
    label: variant, showLine: true, borderColor: colorOf(variant), backgroundColor: colorOf(variant),
    data: points.map((p) => ({ x: Date.parse(p.at), y: p.seconds })),
  }));
  const timed = timingSets.reduce((n, ds) => n + ds.data.length, 0);
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  drawChart("chart-inference", "scatter", { datasets: timingSets }, timed, {
    scales: { x: { title: { display: true, text: "completed at" },
                   ticks: { maxTicksLimit: 6, callback: (value) => clock(value) } },
              y: { beginAtZero: true, title: { display: true, text: "inference seconds" } } },
  });

  const rated = data.failures.filter((f) => f.failure_rate !== null);
  drawChart("chart-failures", "bar", {
    labels: rated.map((f) => f.variant),
    datasets: [{
      label: "failed / finished", data: rated.map((f) => 100 * f.failure_rate),
      backgroundColor: rated.map((f) => colorOf(f.variant)),
    }],
  }, rated.length, {
    plugins: { renderedMarker: { count: rated.length }, legend: { display: false } },
    scales: { y: { beginAtZero: true, suggestedMax: 10, title: { display: true, text: "% of finished jobs" } } },
  });
}

// Once the gateway has API keys, /dashboard/data needs a read-only key (or the operator
// token): open /dashboard#key=KEY once; the key stays in this tab's session storage only.
function readKey() {
  const match = window.location.hash.match(/key=([^&]+)/);
  if (match) {
    sessionStorage.setItem("advisor-key", decodeURIComponent(match[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem("advisor-key");
}

// One poll at a time: the next starts REFRESH_MS after the previous answer arrived or timed
// out, so a slow gateway is never asked again while it is still answering.
let inFlight = 0;
let maxInFlight = 0;
let polling = false;
let again = false;
let timer = null;

async function refresh() {
  const hours = document.getElementById("hours").value;
  const key = readKey();
  const headers = key ? { Authorization: "Bearer " + key } : {};
  let data;
  inFlight += 1;
  maxInFlight = Math.max(maxInFlight, inFlight);
  document.body.dataset.maxInFlight = String(maxInFlight);
  try {
    const response = await fetch("/dashboard/data?hours=" + hours, {
      cache: "no-store", headers, signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    if (response.status === 401 || response.status === 403) {
      const status = document.getElementById("status");
      status.textContent = "needs a read-only key: open /dashboard#key=KEY";
      status.className = "pill unreachable";
      return;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error("HTTP " + response.status + ": " + (body.message || response.statusText));
    }
    data = await response.json();
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = "unreachable";
    status.className = "pill unreachable";
    console.error("dashboard refresh failed:", err.message);
    return;
  } finally {
    inFlight -= 1;
  }
  renderAb(data);
  renderTimeline(data);
  renderTables(data);
  renderCharts(data);
  refreshes += 1;
  document.body.dataset.refreshes = String(refreshes);
  document.body.dataset.clipped = clippedColumns().join("|");
  document.getElementById("updated").textContent =
    "updated " + new Date(data.generated_at).toLocaleTimeString();
}

async function poll() {
  if (polling) {
    again = true; // e.g. the window changed mid-poll: poll once more right after this one
    return;
  }
  polling = true;
  clearTimeout(timer);
  try {
    await refresh();
  } finally {
    polling = false;
  }
  if (again) {
    again = false;
    poll();
    return;
  }
  timer = setTimeout(poll, REFRESH_MS);
}

document.getElementById("hours").addEventListener("change", poll);
window.addEventListener("resize", () => {
  document.body.dataset.clipped = clippedColumns().join("|");
});
poll();
