// The dashboard in a real browser: Debian's Chromium, driven by playwright-core.
// Run by `cargo xtask browser`, which starts a seeded server and passes
//   TALLY_URL   the dashboard's URL (with the simulated days in its fragment)
//   TALLY_TOKEN a reader token
//   TALLY_SHOTS where the screenshots go
// Every panel is compared with the JSON API, read here with the same token;
// a wrong token must show an error; the console must stay free of errors.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.TALLY_URL;
const token = process.env.TALLY_TOKEN;
const shots = process.env.TALLY_SHOTS;
assert.ok(url && token && shots, "TALLY_URL, TALLY_TOKEN and TALLY_SHOTS must be set");
mkdirSync(shots, { recursive: true });
const origin = new URL(url).origin;
const READY_MS = 60000;

let passed = 0;
let failed = 0;
async function check(name, body) {
  try {
    await body();
    passed += 1;
    console.log(`ok: ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAILED: ${name}\n${e.stack || e}`);
  }
}

async function apiJson(path) {
  const response = await fetch(origin + path, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(response.status, 200, `${path}: ${response.status} ${await response.clone().text()}`);
  return response.json();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // As root in a container, on a machine without a GPU or outside network.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

/** A fresh tab at this width, recording console errors, page errors and
 * every API request the page makes. */
async function open(width, height) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const problems = [];
  const requests = [];
  const statusAnswers = [];
  page.on("console", (m) => m.type() === "error" && problems.push({ text: m.text(), url: m.location().url }));
  page.on("pageerror", (e) => problems.push({ text: `page error: ${e.message}` }));
  page.on("requestfailed", (r) => problems.push({ text: `request failed: ${r.url()} ${r.failure()?.errorText}` }));
  page.on("request", (r) => r.url().includes("/api/") && requests.push(r));
  page.on("response", async (r) => {
    if (new URL(r.url()).pathname === "/api/v2/status" && r.ok()) statusAnswers.push(await r.json());
  });
  await page.goto(url);
  return { context, page, problems, requests, statusAnswers };
}

async function signIn(page, value) {
  await page.fill("#token", value);
  await page.click("#token-form button[type=submit]");
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, { timeout: READY_MS });
}

/** Compares every panel of a loaded page with the JSON API. */
async function comparePanels(tab) {
  const { page, requests, statusAnswers } = tab;
  const asked = (path) => {
    const r = requests.find((req) => new URL(req.url()).pathname === path);
    assert.ok(r, `the page never asked for ${path}`);
    const u = new URL(r.url());
    assert.equal(r.headers().authorization, `Bearer ${token}`, `${path}: the token goes in a header`);
    assert.ok(!u.search.includes(token), `${path}: the token is not in the URL`);
    return u.pathname + u.search;
  };
  const usage = await apiJson(asked("/api/v2/insights/app-usage"));
  const active = await apiJson(asked("/api/v2/insights/active-users"));
  const snapshots = await apiJson(asked("/api/v2/telemetry/snapshots"));
  const status = await apiJson("/api/v2/status");

  await check("the seeded server has figures to show", () => {
    assert.ok(usage.apps.length > 0, "no apps");
    assert.ok(usage.intervals.length >= 2, `${usage.intervals.length} day intervals`);
    assert.ok(active.active_users > 0, "no active users");
    assert.ok(snapshots.snapshots.length > 0, "no snapshots");
  });

  await check("health panel shows /api/v2/status", async () => {
    const shown = await page.$$eval("#panel-health [data-field]", (dds) =>
      Object.fromEntries(dds.map((d) => [d.dataset.field, d.dataset.value ?? null])),
    );
    assert.equal(shown.store, status.store);
    assert.equal(shown.store_up, String(status.store_up));
    assert.equal(shown.backlog_reports, String(status.backlog_reports));
    assert.equal(shown.buffered_sessions, String(status.buffered_sessions));
    assert.equal(shown.version, status.version);
    // Flushes go on while the test runs: the page shows the answer it got.
    const seen = statusAnswers.at(-1);
    assert.ok(seen, "the page's own status answer");
    assert.equal(shown.last_flush, seen.last_flush ?? "");
    assert.ok((seen.last_flush ?? "") <= (status.last_flush ?? ""), "flush times only move forward");
    assert.ok(await page.isVisible('#panel-health [data-field="store_up"]'));
  });

  await check("top apps table shows the app-usage totals in the API's order", async () => {
    const rows = await page.$$eval("#panel-apps tbody tr", (trs) =>
      trs.map((tr) => ({ app: tr.dataset.app, values: [...tr.querySelectorAll("td[data-value]")].map((td) => Number(td.dataset.value)), text: tr.innerText })),
    );
    const expected = usage.apps.slice(0, 15);
    assert.equal(rows.length, expected.length);
    rows.forEach((row, i) => {
      const app = expected[i];
      assert.equal(row.app, `${app.access_method}:${app.slug_or_port}`, `row ${i}`);
      assert.deepEqual(row.values, [app.usage_seconds, app.sessions, app.unique_users, app.requests], `row ${i}`);
      const name = app.slug_or_port || app.access_method;
      assert.ok(row.text.includes(name) && row.text.includes(app.sessions.toLocaleString("en-US")), row.text);
    });
  });

  await check("usage chart has one bar per day with the intervals' hours", async () => {
    const chart = await page.evaluate(() => {
      const c = Chart.getChart("chart-usage");
      return c && { labels: c.data.labels, datasets: c.data.datasets.map((d) => ({ label: d.label, data: d.data })) };
    });
    assert.ok(chart, "a chart on #chart-usage");
    assert.deepEqual(chart.labels, usage.intervals.map((i) => i.start_time.slice(0, 10)));
    usage.intervals.forEach((interval, day) => {
      const want = interval.apps.reduce((s, a) => s + a.usage_seconds, 0) / 3600;
      const got = chart.datasets.reduce((s, d) => s + d.data[day], 0);
      assert.ok(Math.abs(want - got) < 1e-6, `${chart.labels[day]}: ${got} h drawn, ${want} h in the API`);
    });
    const top = [...usage.apps].sort((a, b) => b.usage_seconds - a.usage_seconds)[0];
    assert.equal(chart.datasets[0].label, top.slug_or_port || top.access_method, "the most used app comes first");
  });

  await check("active users panel shows the total and each day", async () => {
    assert.equal(await page.getAttribute('#panel-active [data-field="active_users"]', "data-value"), String(active.active_users));
    const chart = await page.evaluate(() => {
      const c = Chart.getChart("chart-active");
      return c && { labels: c.data.labels, data: c.data.datasets[0].data };
    });
    assert.ok(chart, "a chart on #chart-active");
    assert.deepEqual(chart.labels, active.intervals.map((i) => i.start_time.slice(0, 10)));
    assert.deepEqual(chart.data, active.intervals.map((i) => i.active_users));
  });

  await check("snapshots panel shows allowed and denied per period of the range", async () => {
    const u = new URL(requests.find((r) => r.url().includes("/insights/app-usage")).url());
    const from = Date.parse(u.searchParams.get("start_time"));
    const to = Date.parse(u.searchParams.get("end_time"));
    const inRange = snapshots.snapshots
      .filter((s) => Date.parse(s.period_start) >= from && Date.parse(s.period_end) <= to)
      .sort((a, b) => Date.parse(a.period_start) - Date.parse(b.period_start));
    assert.ok(inRange.length > 0, "snapshots in the range");
    const chart = await page.evaluate(() => {
      const c = Chart.getChart("chart-snapshots");
      return c && Object.fromEntries(c.data.datasets.map((d) => [d.label, d.data]));
    });
    assert.ok(chart, "a chart on #chart-snapshots");
    assert.deepEqual(chart.allowed, inRange.map((s) => s.allowed_requests));
    assert.deepEqual(chart.denied, inRange.map((s) => s.denied_requests));
    const rows = await page.$$eval("#panel-snapshots tbody tr", (trs) => trs.map((tr) => tr.dataset.snapshot));
    assert.deepEqual(rows, [...inRange].reverse().map((s) => s.id));
  });

  await check("every panel is on screen with a drawn chart", async () => {
    for (const id of ["panel-health", "panel-usage", "panel-apps", "panel-active", "panel-snapshots"]) {
      assert.equal(await page.getAttribute(`#${id}`, "data-loaded"), "true", id);
      const box = await page.locator(`#${id}`).boundingBox();
      assert.ok(box && box.width > 100 && box.height > 50, `${id}: ${JSON.stringify(box)}`);
    }
    for (const id of ["chart-usage", "chart-active", "chart-snapshots"]) {
      const box = await page.locator(`#${id}`).boundingBox();
      assert.ok(box && box.width > 100 && box.height > 100, `${id}: ${JSON.stringify(box)}`);
    }
    assert.ok(await page.isHidden("#error"), `error shown: ${await page.textContent("#error")}`);
  });
}

function noProblems(tab, allowed = () => false) {
  const left = tab.problems.filter((p) => !allowed(p));
  assert.deepEqual(left, [], `console errors: ${JSON.stringify(left, null, 1)}`);
}

try {
  // A wrong token: a clear error, not a blank page.
  const wrong = await open(1280, 900);
  await check("without a token the page asks for one", async () => {
    assert.equal(await wrong.page.getAttribute("body", "data-state"), "no-token");
    assert.ok(await wrong.page.isVisible("#prompt"));
    assert.ok(await wrong.page.isVisible("#token"));
  });
  await signIn(wrong.page, "not-a-token");
  await check("a wrong token shows an error naming the refusal", async () => {
    assert.equal(await wrong.page.getAttribute("body", "data-state"), "error");
    assert.ok(await wrong.page.isVisible("#error"), "the error banner is visible");
    const text = await wrong.page.textContent("#error");
    assert.match(text, /refused this token \(401: Invalid API token\./);
    assert.ok(await wrong.page.isVisible("#token"), "the token can be typed in again");
    assert.ok(await wrong.page.isHidden("#panels"), "no empty panels");
    assert.equal(await wrong.page.evaluate(() => sessionStorage.length), 0, "a refused token is not kept");
    await wrong.page.screenshot({ path: join(shots, "wrong-token-1280.png"), fullPage: true });
  });
  await check("console: only the browser's own line for the refused request", () =>
    // Chromium logs every 4xx fetch as a console error; that one is expected.
    noProblems(wrong, (p) => /status of 401/.test(p.text) && p.url.endsWith("/api/v2/status")),
  );
  await wrong.context.close();

  for (const [width, height] of [[1280, 900], [390, 844]]) {
    const tab = await open(width, height);
    await signIn(tab.page, token);
    await check(`${width} px: the dashboard loads`, async () => {
      const state = await tab.page.getAttribute("body", "data-state");
      assert.equal(state, "ready", `state ${state}: ${await tab.page.textContent("#error")}`);
      assert.equal(await tab.page.evaluate(() => sessionStorage.getItem("tally.reader-token")), token);
      assert.ok(!tab.page.url().includes(token), "the token is not in the URL");
    });
    await comparePanels(tab);
    await check(`${width} px: nothing wider than the window`, async () => {
      const scroll = await tab.page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(scroll <= width, `page is ${scroll} px wide in a ${width} px window`);
    });
    await tab.page.screenshot({ path: join(shots, `dashboard-${width}.png`), fullPage: true });
    await check(`${width} px: no console errors`, () => noProblems(tab));
    await tab.context.close();
  }
} finally {
  await browser.close();
}

console.log(`screenshots in ${shots}`);
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
