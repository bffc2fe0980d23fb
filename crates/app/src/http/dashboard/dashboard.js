// The tally dashboard: reads this server's JSON API with the reader token the
// user types in, kept in sessionStorage (this tab only, never in a URL), and
// draws the figures with Chart.js. Plain modern JavaScript, no build step.
"use strict";

const TOKEN_KEY = "tally.reader-token";
const DAY_MS = 86400000;
const HOUR_MS = 3600000;
// Apps drawn one by one in the usage chart; the rest are summed as "other".
const CHART_APPS = 8;
const TOP_APPS = 15;
const SNAPSHOT_LIMIT = 1000;
const HEALTH_REFRESH_MS = 10000;
const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#dc2626", "#6b7280"];

const $ = (selector, root = document) => root.querySelector(selector);
const charts = {};
let healthTimer = null;

/** An error answer of the API, in Coder's `codersdk.Response` shape. */
class ApiError extends Error {
  constructor(status, body, path) {
    const message = (body && body.message) || `HTTP ${status}`;
    const detail = body && (body.detail || (body.validations || []).map((v) => `${v.field}: ${v.detail}`).join("; "));
    super(detail ? `${message} ${detail}` : message);
    this.status = status;
    this.path = path;
  }
}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  let response;
  try {
    response = await fetch(path, { headers: { Authorization: `Bearer ${token}`, Accept: "application/json" } });
  } catch (e) {
    throw new Error(`Cannot reach the server (${path}): ${e.message}`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body, path.split("?")[0]);
  return body;
}

// ---- dates: UTC days, as the API's intervals are cut ----

const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);
const dayStart = (day) => Date.parse(`${day}T00:00:00Z`);
const todayUtc = () => isoDay(Date.now());
const rfc3339 = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");

/** The range the API is asked for: from the first day's midnight to the end
 * of the last day, or, when that is today, to the coming whole hour (the
 * latest end the insights routes take). */
function queryRange(start, end) {
  const from = dayStart(start);
  const today = todayUtc();
  const to = end >= today ? Math.floor(Date.now() / HOUR_MS) * HOUR_MS + HOUR_MS : dayStart(end) + DAY_MS;
  return { from, to, query: `start_time=${encodeURIComponent(rfc3339(from))}&end_time=${encodeURIComponent(rfc3339(to))}` };
}

function rangeFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const valid = (d) => /^\d{4}-\d{2}-\d{2}$/.test(d || "") && !Number.isNaN(dayStart(d));
  const end = valid(params.get("end")) ? params.get("end") : todayUtc();
  const start = valid(params.get("start")) ? params.get("start") : isoDay(dayStart(end) - 6 * DAY_MS);
  return { start, end };
}

// ---- formatting ----

const count = (n) => Number(n).toLocaleString("en-US");
function duration(seconds) {
  const minutes = Math.round(seconds / 60);
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return h > 0 ? `${count(h)} h ${m} min` : `${m} min`;
}
// A terminal has no slug: its access method names it.
const appName = (app) => app.slug_or_port || app.access_method;
const periodLabel = (iso) => iso.slice(5, 16).replace("T", " ");
function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function cell(text, value, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (value !== undefined) td.dataset.value = String(value);
  if (className) td.className = className;
  return td;
}

function appCell(app) {
  const td = cell(appName(app));
  const how = document.createElement("small");
  how.textContent = app.access_method;
  td.append(" ", how);
  return td;
}

function drawChart(id, config) {
  if (charts[id]) charts[id].destroy();
  config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options);
  charts[id] = new Chart(document.getElementById(id), config);
}

// ---- panels ----

function showHealth(status) {
  const panel = $("#panel-health");
  const set = (field, text, value) => {
    const dd = $(`[data-field="${field}"]`, panel);
    dd.textContent = text;
    dd.dataset.value = String(value);
    return dd;
  };
  set("store", status.store === "postgres" ? "PostgreSQL" : "in memory", status.store);
  set("store_up", status.store_up ? "up" : "DOWN", status.store_up).className = status.store_up ? "up" : "down";
  set("backlog_reports", count(status.backlog_reports), status.backlog_reports);
  set("buffered_sessions", count(status.buffered_sessions), status.buffered_sessions);
  const flush = set("last_flush", status.last_flush ? ago(status.last_flush) : "not yet", status.last_flush ?? "");
  flush.title = status.last_flush || "";
  set("version", status.version, status.version);
  const error = $('[data-field="last_flush_error"]', panel);
  error.hidden = !status.last_flush_error;
  error.textContent = status.last_flush_error ? `Last flush failed: ${status.last_flush_error}` : "";
  panel.dataset.loaded = "true";
}

function showAppUsage(usage) {
  const usagePanel = $("#panel-usage");
  const appsPanel = $("#panel-apps");
  const empty = usage.apps.length === 0;
  $(".empty", usagePanel).hidden = !empty;
  $(".empty", appsPanel).hidden = !empty;

  // Top apps, in the order the API gives (most unique users, then usage).
  const tbody = $("tbody", appsPanel);
  tbody.replaceChildren(
    ...usage.apps.slice(0, TOP_APPS).map((app) => {
      const tr = document.createElement("tr");
      tr.dataset.app = `${app.access_method}:${app.slug_or_port}`;
      tr.append(
        appCell(app),
        cell(duration(app.usage_seconds), app.usage_seconds, "num"),
        cell(count(app.sessions), app.sessions, "num"),
        cell(count(app.unique_users), app.unique_users, "num"),
        cell(count(app.requests), app.requests, "num optional"),
      );
      return tr;
    }),
  );

  // Usage per day: the most used apps each on their own, the rest together.
  const byUsage = [...usage.apps].sort((a, b) => b.usage_seconds - a.usage_seconds);
  const key = (a) => `${a.access_method}:${a.slug_or_port}`;
  const shown = byUsage.slice(0, CHART_APPS).map(key);
  const names = new Map(usage.apps.map((a) => [key(a), appName(a)]));
  const series = shown.map((k) => ({ key: k, label: names.get(k), data: [] }));
  const other = { key: "other", label: "other apps", data: [] };
  for (const interval of usage.intervals) {
    const seconds = new Map(interval.apps.map((a) => [key(a), a.usage_seconds]));
    for (const s of series) s.data.push((seconds.get(s.key) || 0) / 3600);
    other.data.push(interval.apps.filter((a) => !shown.includes(key(a))).reduce((sum, a) => sum + a.usage_seconds, 0) / 3600);
  }
  if (byUsage.length > CHART_APPS) series.push(other);
  drawChart("chart-usage", {
    type: "bar",
    data: {
      labels: usage.intervals.map((i) => i.start_time.slice(0, 10)),
      datasets: series.map((s, i) => ({ label: s.label, data: s.data, backgroundColor: COLORS[i % COLORS.length] })),
    },
    options: {
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: "hours" } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
  usagePanel.dataset.loaded = appsPanel.dataset.loaded = "true";
}

function showActiveUsers(active) {
  const panel = $("#panel-active");
  const total = $('[data-field="active_users"]', panel);
  total.textContent = count(active.active_users);
  total.dataset.value = String(active.active_users);
  drawChart("chart-active", {
    type: "line",
    data: {
      labels: active.intervals.map((i) => i.start_time.slice(0, 10)),
      datasets: [{ label: "active users", data: active.intervals.map((i) => i.active_users), borderColor: COLORS[0], backgroundColor: COLORS[0], tension: 0.2 }],
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } }, plugins: { legend: { display: false } } },
  });
  panel.dataset.loaded = "true";
}

function showSnapshots(list, range) {
  const panel = $("#panel-snapshots");
  const periods = list.snapshots
    .filter((s) => Date.parse(s.period_start) >= range.from && Date.parse(s.period_end) <= range.to)
    .sort((a, b) => Date.parse(a.period_start) - Date.parse(b.period_start));
  $(".empty", panel).hidden = periods.length > 0;
  drawChart("chart-snapshots", {
    type: "bar",
    data: {
      labels: periods.map((s) => periodLabel(s.period_start)),
      datasets: [
        { label: "allowed", data: periods.map((s) => s.allowed_requests), backgroundColor: "#16a34a" },
        { label: "denied", data: periods.map((s) => s.denied_requests), backgroundColor: "#dc2626" },
      ],
    },
    options: {
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      plugins: { legend: { position: "bottom" } },
    },
  });
  $("tbody", panel).replaceChildren(
    ...[...periods].reverse().map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.snapshot = s.id;
      tr.append(
        cell(periodLabel(s.period_start), s.period_start),
        cell(count(s.allowed_requests), s.allowed_requests, "num"),
        cell(count(s.denied_requests), s.denied_requests, "num"),
        cell(count(s.unique_workspaces), s.unique_workspaces, "num"),
        cell(s.published_at ? "yes" : "waiting", s.published_at ?? ""),
      );
      return tr;
    }),
  );
  panel.dataset.loaded = "true";
}

// ---- errors and state ----

function showError(message) {
  const banner = $("#error");
  banner.textContent = message;
  banner.hidden = !message;
}

function explain(error) {
  if (error.status === 401) return `The server refused this token (401: ${error.message}). Type in a valid reader token.`;
  if (error.status === 403) return `This token may not read these figures (403: ${error.message}). Use a reader or admin token.`;
  if (error.status === 404) return `This server has no ${error.path} route (404): is it an older tally?`;
  if (error.status) return `${error.path} failed (${error.status}: ${error.message})`;
  return error.message;
}

function setState(state) {
  document.body.dataset.state = state;
}

function tokenState(hasToken) {
  $("#panels").hidden = !hasToken;
  $("#prompt").hidden = hasToken;
  $("#forget").hidden = !hasToken;
}

async function refreshHealth() {
  try {
    showHealth(await api("/api/v2/status"));
  } catch (e) {
    showError(explain(e));
  }
}

async function load() {
  clearInterval(healthTimer);
  showError("");
  for (const panel of document.querySelectorAll(".panel")) delete panel.dataset.loaded;
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    tokenState(false);
    setState("no-token");
    return;
  }
  const { start, end } = rangeFromHash();
  $("#range-start").value = start;
  $("#range-end").value = end;
  if (start > end) {
    setState("error");
    showError(`The range starts (${start}) after it ends (${end}).`);
    return;
  }
  if (start > todayUtc()) {
    setState("error");
    showError(`The range starts in the future (${start}).`);
    return;
  }
  setState("loading");
  // The status call checks the token first, so a wrong one is one message.
  try {
    showHealth(await api("/api/v2/status"));
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      tokenState(false);
    }
    setState("error");
    showError(explain(e));
    return;
  }
  tokenState(true);
  const range = queryRange(start, end);
  const steps = [
    api(`/api/v2/insights/app-usage?${range.query}&interval=day`).then(showAppUsage),
    api(`/api/v2/insights/active-users?${range.query}&interval=day`).then(showActiveUsers),
    api(`/api/v2/telemetry/snapshots?limit=${SNAPSHOT_LIMIT}`).then((list) => showSnapshots(list, range)),
  ];
  const failures = (await Promise.allSettled(steps)).filter((r) => r.status === "rejected");
  if (failures.length) {
    setState("error");
    showError(failures.map((f) => explain(f.reason)).join(" "));
    return;
  }
  setState("ready");
  healthTimer = setInterval(refreshHealth, HEALTH_REFRESH_MS);
}

function start() {
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    load();
  });
  $("#forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    load();
  });
  $("#range-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const hash = `#start=${$("#range-start").value}&end=${$("#range-end").value}`;
    history.replaceState(null, "", hash);
    load();
  });
  window.addEventListener("hashchange", load);
  load();
}

document.addEventListener("DOMContentLoaded", start);
