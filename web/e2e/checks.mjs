// What both browser suites (run.mjs in Chromium, firefox.mjs in Firefox) check with: a small
// test runner, non-blank screenshots and accessible names. Works with playwright-core's and
// puppeteer-core's pages alike (only screenshot and evaluate are used).
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { PNG } from "pngjs";
import { WEB, sleep } from "./harness.mjs";

export const ARTIFACTS = join(WEB, "e2e/artifacts");

export class Skip extends Error {}
export const skip = (why) => {
  throw new Skip(why);
};

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

export async function waitFor(fn, what, timeoutMs = 15_000, stepMs = 100) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < timeoutMs) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await sleep(stepMs);
  }
  throw new Error(`timed out waiting for ${what} (last: ${typeof last === "string" ? last : JSON.stringify(last)})`);
}

/**
 * A suite: `test(name, fn, {critical})` runs a step and records it; a failed critical step
 * skips the rest. `pages()` names the pages to screenshot when a step fails. Screenshots
 * whose name starts with `prefix` are this suite's: the last run's are removed first.
 */
export function suite({ prefix = "", pages = () => [] } = {}) {
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of readdirSync(ARTIFACTS)) {
    const mine = prefix ? f.startsWith(prefix) : !f.startsWith("firefox-");
    if (mine && (f.endsWith(".png") || f.endsWith("results.json") || f.endsWith("screenshots.json"))) rmSync(join(ARTIFACTS, f));
  }
  const results = [];
  const shots = [];
  let stopAll = false;
  return {
    results,
    shots,
    async test(name, fn, { critical = false } = {}) {
      if (stopAll) {
        results.push({ name, status: "skipped", detail: "an earlier step this depends on failed" });
        console.log(`- SKIP ${name}: an earlier step this depends on failed`);
        return;
      }
      const t0 = Date.now();
      try {
        await fn();
        results.push({ name, status: "passed", ms: Date.now() - t0 });
        console.log(`✓ ${name} (${Date.now() - t0} ms)`);
      } catch (e) {
        if (e instanceof Skip) {
          results.push({ name, status: "skipped", detail: e.message });
          console.log(`- SKIP ${name}: ${e.message}`);
          return;
        }
        results.push({ name, status: "failed", detail: e?.stack ?? String(e) });
        for (const [who, pg] of pages()) {
          if (pg && !pg.isClosed()) {
            const slug = name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60);
            await pg.screenshot({ path: join(ARTIFACTS, `${prefix}FAILED-${slug}-${who}.png`), fullPage: true }).catch(() => {});
          }
        }
        console.log(`✗ ${name}\n   ${String(e?.stack ?? e).split("\n").slice(0, 6).join("\n   ")}`);
        if (critical) stopAll = true;
      }
    },
    /** Saves a screenshot and checks it is not blank (luminance spread and colour count). */
    async shot(page, name) {
      name = prefix + name;
      const path = join(ARTIFACTS, `${name}.png`);
      await sleep(150);
      const buf = await page.screenshot({ path, fullPage: true });
      const png = PNG.sync.read(Buffer.from(buf));
      let n = 0,
        sum = 0,
        sum2 = 0;
      const colours = new Set();
      for (let i = 0; i < png.data.length; i += 4 * 7) {
        const l = 0.2126 * png.data[i] + 0.7152 * png.data[i + 1] + 0.0722 * png.data[i + 2];
        sum += l;
        sum2 += l * l;
        n++;
        if (colours.size < 5000) colours.add((png.data[i] << 16) | (png.data[i + 1] << 8) | png.data[i + 2]);
      }
      const mean = sum / n;
      const std = Math.sqrt(Math.max(0, sum2 / n - mean * mean));
      const info = { name, path: `e2e/artifacts/${name}.png`, width: png.width, height: png.height, luminance_std: +std.toFixed(1), colours: colours.size };
      shots.push(info);
      assert(std > 5 && colours.size > 8, `screenshot ${name} looks blank (luminance std ${std.toFixed(1)}, ${colours.size} colours)`);
      return info;
    },
    counts() {
      const count = (s) => results.filter((r) => r.status === s).length;
      return { passed: count("passed"), failed: count("failed"), skipped: count("skipped") };
    },
  };
}

/** Every control on the page has an accessible name, and none is out of the tab order. */
export async function checkLabels(page, where) {
  const problems = await page.evaluate(() => {
    const out = [];
    const name = (el) => {
      if (el.getAttribute("aria-label")) return el.getAttribute("aria-label");
      const by = el.getAttribute("aria-labelledby");
      if (by) return by.split(/\s+/).map((id) => document.getElementById(id)?.textContent ?? "").join(" ").trim();
      if (el.labels && el.labels.length) return [...el.labels].map((l) => l.textContent).join(" ").trim();
      if (el.title) return el.title;
      if (["BUTTON", "A", "SUMMARY"].includes(el.tagName)) return el.textContent.trim();
      return "";
    };
    for (const el of document.querySelectorAll("button, a[href], input:not([type=hidden]), select, textarea, summary, [contenteditable=true]")) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue; // not rendered (closed <details>, sr-only links count as rendered)
      if (!name(el)) out.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ""}${el.className ? `.${String(el.className).split(" ")[0]}` : ""} has no label`);
      if (el.getAttribute("tabindex") === "-1") out.push(`${el.tagName.toLowerCase()}#${el.id} is out of the tab order`);
    }
    return out;
  });
  assert(problems.length === 0, `${where}: ${problems.join("; ")}`);
}

/** The shared document as canonical JSON (sorted keys), read through the app's debug hook. */
export async function docJson(page) {
  return page.evaluate(() => JSON.stringify(globalThis.hakiriDebug?.docJson?.() ?? null, (k, v) => (v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort()) : v)));
}
