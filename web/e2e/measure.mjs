#!/usr/bin/env node
// Measures the web UI with 200 pipelines in the document, in headless Chromium against a
// real control plane on 127.0.0.1 (issue 20, Performance):
// - the built JavaScript's size gzipped (the Loro WASM on its own);
// - first load of the Pipelines page: bytes transferred, first contentful paint, and time
//   to interactive (the 200-row table rendered and the main thread free for input), cold
//   cache, median of 5 loads;
// - keystroke-to-display between two browsers: a key typed in one browser's SQL editor
//   until the character is painted in the other's (p50/p95 over 100 keystrokes), and the
//   same for a form field.
// Results: e2e/artifacts/measurements.json and a summary on stdout.
//
//   npm run build && npm run measure
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { WEB, launchBrowser, startStack } from "./harness.mjs";

const ARTIFACTS = join(WEB, "e2e/artifacts");
mkdirSync(ARTIFACTS, { recursive: true });
const N_PIPELINES = 200;
const LOADS = 5;
const KEYS = 100;

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const median = (xs) => pct(xs, 50);
const r1 = (x) => Math.round(x * 10) / 10;

function bundleSizes() {
  const dir = join(WEB, "dist/assets");
  const out = { js_raw: 0, js_gzip: 0, css_gzip: 0, wasm_raw: 0, wasm_gzip: 0, files: [] };
  for (const f of readdirSync(dir)) {
    const buf = readFileSync(join(dir, f));
    const gz = gzipSync(buf, { level: 9 }).length;
    out.files.push({ file: f, raw: buf.length, gzip: gz });
    if (f.endsWith(".js")) {
      out.js_raw += buf.length;
      out.js_gzip += gz;
    } else if (f.endsWith(".css")) out.css_gzip += gz;
    else if (f.endsWith(".wasm")) {
      out.wasm_raw += buf.length;
      out.wasm_gzip += gz;
    }
  }
  out.files.sort((a, b) => b.gzip - a.gzip);
  return out;
}

const stack = await startStack();
const browser = await launchBrowser();
const results = { when: new Date().toISOString(), pipelines: N_PIPELINES, chromium: browser.version() };
try {
  results.bundle = bundleSizes();

  // A project with 200 pipelines, applied.
  const boot = stack.token("perf");
  const { token } = await stack.api("/api/projects", { token: boot, body: { id: "perf" } });
  const pipelines = {};
  for (let i = 0; i < N_PIPELINES; i++) {
    const n = `p${String(i).padStart(3, "0")}`;
    pipelines[n] = {
      sql: `INSERT INTO context.${n} SELECT id, customer, amount /* note */ FROM files.orders WHERE id > $cursor`,
      cursor: { kind: "monotonic", column: "id", initial: "0" },
      schedule: { every: "1 hour" },
      placement: i % 2 ? "any" : "node:a",
      mode: "append",
    };
  }
  const manifest = { project: { name: "perf" }, sources: { files: { type: "file", tables: { orders: { path: "/tmp/none/*.csv" } } } }, pipelines };
  await stack.api("/api/projects/perf/import", { token, body: { manifest } });
  await stack.api("/api/projects/perf/apply", { token, body: { note: "200 pipelines" } });
  const doc = await stack.api("/api/projects/perf/document", { token });
  results.document = { snapshot_bytes: doc.snapshot_bytes, ops: doc.ops };

  const newCtx = async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await ctx.addCookies([{ name: "hakiri_token", value: token, url: stack.base }]);
    await ctx.route("**/*", (r) => (new URL(r.request().url()).hostname === "127.0.0.1" ? r.continue() : r.abort()));
    return ctx;
  };

  // --- first load, cold cache
  async function firstLoad(path, ready) {
    const ctx = await newCtx();
    const page = await ctx.newPage();
    const cdp = await ctx.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
    const reqs = new Map();
    cdp.on("Network.responseReceived", (e) => reqs.set(e.requestId, { url: e.response.url, type: e.type, mime: e.response.mimeType, encoding: e.response.headers["content-encoding"] ?? e.response.headers["Content-Encoding"] ?? "" }));
    cdp.on("Network.loadingFinished", (e) => {
      const r = reqs.get(e.requestId);
      if (r) r.bytes = e.encodedDataLength;
    });
    await page.addInitScript(() => {
      globalThis.__longTasks = 0;
      try {
        new PerformanceObserver((l) => {
          for (const e of l.getEntries()) globalThis.__longTasks += e.duration;
        }).observe({ type: "longtask", buffered: true });
      } catch {
        /* not supported */
      }
    });
    await page.goto(stack.base + path, { waitUntil: "commit" });
    const t = await page.evaluate(async (readySrc) => {
      const ready = new Function(`return (${readySrc})`)();
      await new Promise((res) => {
        const check = () => (ready() ? res() : requestAnimationFrame(check));
        check();
      });
      const rendered = performance.now();
      await new Promise((r) => setTimeout(r, 0));
      const interactive = performance.now();
      await new Promise((r) => setTimeout(r, 300));
      const nav = performance.getEntriesByType("navigation")[0];
      const fcp = performance.getEntriesByName("first-contentful-paint")[0];
      return {
        rendered_ms: rendered,
        tti_ms: interactive,
        fcp_ms: fcp ? fcp.startTime : null,
        dom_content_loaded_ms: nav?.domContentLoadedEventEnd ?? null,
        load_ms: nav?.loadEventEnd ?? null,
        long_tasks_ms: globalThis.__longTasks,
      };
    }, ready.toString());
    await page.waitForTimeout(200);
    const by = { js: 0, css: 0, wasm: 0, html: 0, api: 0, other: 0 };
    let encodings = new Set();
    for (const r of reqs.values()) {
      const b = r.bytes ?? 0;
      const u = new URL(r.url);
      if (u.pathname.endsWith(".js")) (by.js += b), encodings.add(r.encoding || "identity");
      else if (u.pathname.endsWith(".css")) by.css += b;
      else if (u.pathname.endsWith(".wasm")) by.wasm += b;
      else if (u.pathname.startsWith("/api/")) by.api += b;
      else if (r.type === "Document") by.html += b;
      else by.other += b;
    }
    const total = Object.values(by).reduce((a, b) => a + b, 0);
    await ctx.close();
    return { ...t, bytes: { ...by, total }, js_content_encoding: [...encodings].join(",") };
  }

  const loads = { pipelines: [], projects: [] };
  for (let i = 0; i < LOADS; i++) {
    loads.pipelines.push(await firstLoad("/projects/perf/pipelines", () => document.querySelectorAll("tr[data-pipeline]").length === 200));
    loads.projects.push(await firstLoad("/projects", () => document.querySelector("a.project-link") !== null));
  }
  const summarize = (xs) => ({
    loads: xs.length,
    tti_ms_median: r1(median(xs.map((x) => x.tti_ms))),
    tti_ms_max: r1(Math.max(...xs.map((x) => x.tti_ms))),
    fcp_ms_median: r1(median(xs.map((x) => x.fcp_ms ?? 0))),
    long_tasks_ms_median: r1(median(xs.map((x) => x.long_tasks_ms))),
    bytes: xs[0].bytes,
    js_content_encoding: xs[0].js_content_encoding,
  });
  results.first_load = { pipelines_page: summarize(loads.pipelines), projects_page: summarize(loads.projects), raw: loads };

  // --- keystroke to display, two browsers on the same pipeline
  const [ctxA, ctxB] = [await newCtx(), await newCtx()];
  const [A, B] = [await ctxA.newPage(), await ctxB.newPage()];
  const url = `${stack.base}/projects/perf/pipelines/p100`;
  await Promise.all([A.goto(url), B.goto(url)]);
  await Promise.all([A.waitForSelector(".sql-editor .cm-content"), B.waitForSelector(".sql-editor .cm-content")]);
  await Promise.all([A, B].map((p) => p.waitForFunction(() => globalThis.hakiriDebug?.synced?.())));

  async function keystrokes(kind) {
    // B: note when each new length first shows, at the next frame (the paint).
    await B.evaluate((kind) => {
      globalThis.__seen = [];
      const read = kind === "sql" ? () => document.querySelector(".sql-editor .cm-content").textContent.length : () => document.getElementById("field-schedule-tz").value.length;
      globalThis.__base = read();
      let last = globalThis.__base;
      const note = () => {
        const n = read();
        if (n !== last) {
          last = n;
          const seenAt = performance.timeOrigin + performance.now();
          requestAnimationFrame(() => globalThis.__seen.push({ n, seenAt, paintAt: performance.timeOrigin + performance.now() }));
        }
      };
      if (kind === "sql") {
        globalThis.__obs?.disconnect();
        globalThis.__obs = new MutationObserver(note);
        globalThis.__obs.observe(document.querySelector(".sql-editor .cm-content"), { subtree: true, childList: true, characterData: true });
      } else {
        const loop = () => {
          note();
          if (!globalThis.__stop) requestAnimationFrame(loop);
        };
        globalThis.__stop = false;
        loop();
      }
    }, kind);
    await A.evaluate(() => {
      globalThis.__keys = [];
      if (!globalThis.__keyListener) {
        globalThis.__keyListener = () => globalThis.__keys.push(performance.timeOrigin + performance.now());
        window.addEventListener("keydown", globalThis.__keyListener, { capture: true });
      }
    });
    if (kind === "sql") {
      await A.click(".sql-editor .cm-content");
      await A.keyboard.press("Control+End");
    } else {
      await A.click("#field-schedule-tz");
    }
    const base = await B.evaluate(() => globalThis.__base);
    const alphabet = "abcdefghijklmnopqrstuvwxyz";
    for (let i = 0; i < KEYS; i++) {
      await A.keyboard.press(alphabet[i % 26]);
      await B.waitForFunction((n) => globalThis.__seen.some((s) => s.n >= n), base + i + 1, { polling: 5, timeout: 10_000 });
    }
    const keys = await A.evaluate(() => globalThis.__keys.slice(-100));
    const seen = await B.evaluate(() => {
      globalThis.__stop = true;
      return globalThis.__seen;
    });
    const lat = [];
    const latDom = [];
    for (let i = 0; i < KEYS; i++) {
      const s = seen.find((x) => x.n >= base + i + 1);
      lat.push(s.paintAt - keys[keys.length - KEYS + i]);
      latDom.push(s.seenAt - keys[keys.length - KEYS + i]);
    }
    const final = kind === "sql" ? await B.evaluate(() => document.querySelector(".sql-editor .cm-content").textContent) : await B.inputValue("#field-schedule-tz");
    return {
      keystrokes: KEYS,
      p50_ms: r1(pct(lat, 50)),
      p95_ms: r1(pct(lat, 95)),
      max_ms: r1(Math.max(...lat)),
      mean_ms: r1(lat.reduce((a, b) => a + b, 0) / lat.length),
      dom_p50_ms: r1(pct(latDom, 50)),
      dom_p95_ms: r1(pct(latDom, 95)),
      converged_tail: final.slice(-12),
    };
  }
  results.keystroke_to_display = { sql_editor: await keystrokes("sql"), form_field: await keystrokes("field") };
  await ctxA.close();
  await ctxB.close();
} finally {
  await browser.close().catch(() => {});
  await stack.stop();
}

writeFileSync(join(ARTIFACTS, "measurements.json"), JSON.stringify(results, null, 2));
const b = results.bundle;
const fl = results.first_load;
console.log(`JavaScript: ${(b.js_gzip / 1024).toFixed(1)} KiB gzipped (${(b.js_raw / 1024).toFixed(1)} KiB raw), CSS ${(b.css_gzip / 1024).toFixed(1)} KiB gzipped`);
console.log(`Loro WASM:  ${(b.wasm_gzip / 1024).toFixed(1)} KiB gzipped (${(b.wasm_raw / 1024).toFixed(1)} KiB raw)`);
for (const [name, s] of Object.entries({ "Pipelines page (200)": fl.pipelines_page, "Projects page": fl.projects_page })) {
  console.log(
    `${name}: TTI median ${s.tti_ms_median} ms (max ${s.tti_ms_max}), FCP ${s.fcp_ms_median} ms, long tasks ${s.long_tasks_ms_median} ms; transferred ${(s.bytes.total / 1024).toFixed(1)} KiB (JS ${(s.bytes.js / 1024).toFixed(1)}, WASM ${(s.bytes.wasm / 1024).toFixed(1)}, CSS ${(s.bytes.css / 1024).toFixed(1)}, API ${(s.bytes.api / 1024).toFixed(1)}; JS encoding ${s.js_content_encoding})`,
  );
}
for (const [k, v] of Object.entries(results.keystroke_to_display)) {
  console.log(`keystroke→display (${k}): p50 ${v.p50_ms} ms, p95 ${v.p95_ms} ms, max ${v.max_ms} ms over ${v.keystrokes} keys (DOM updated: p50 ${v.dom_p50_ms}, p95 ${v.dom_p95_ms})`);
}
