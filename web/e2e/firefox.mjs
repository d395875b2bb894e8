#!/usr/bin/env node
// The web UI in Firefox (issue 20: "it works in Chromium and Firefox"): Debian's firefox-esr
// driven by puppeteer-core over WebDriver BiDi (playwright-core drives only its own patched
// Firefox builds, so it cannot be used here). The same real stack as run.mjs: control plane,
// OIDC provider and one node on 127.0.0.1. The main journeys are done in Firefox, with
// the keyboard where the Chromium suite uses the mouse, and one pipeline is edited at
// once from Firefox and from Chromium: both must converge on the same document.
//
//   npm run build && npm run test:e2e:firefox     (FIREFOX=/path/to/firefox overrides)
//
// Screenshots go to e2e/artifacts/firefox-*.png and are checked to be non-blank.
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import { freePort, launchBrowser, sleep, start, startStack } from "./harness.mjs";
import { ARTIFACTS, assert, checkLabels, docJson, suite, waitFor } from "./checks.mjs";

const FIREFOX = process.env.FIREFOX ?? "/usr/bin/firefox-esr";
if (!existsSync(FIREFOX)) {
  console.error(`no Firefox at ${FIREFOX}: apt-get install -y firefox-esr, or set FIREFOX`);
  process.exit(1);
}

let F; // the Firefox page
const { test, shot, results, shots, counts } = suite({ prefix: "firefox-", pages: () => [["firefox", F]] });

const pageErrors = [];
/** The errors a page's own listeners kept (this tab's session, across navigations). */
async function errorsOf(page, who) {
  const all = await page.evaluate(() => JSON.parse(sessionStorage.getItem("e2e.errors") ?? "[]")).catch(() => []);
  for (const e of all) pageErrors.push(`${who}: ${e}`);
}
/** A private Firefox context whose requests never leave 127.0.0.1. */
async function firefoxPage(browser, displayName) {
  const ctx = await browser.createBrowserContext();
  const page = await ctx.newPage();
  await page.setRequestInterception(true);
  page.on("request", (r) => {
    if (r.isInterceptResolutionHandled()) return;
    const host = new URL(r.url()).hostname;
    if (r.url().startsWith("data:") || ["127.0.0.1", "localhost"].includes(host)) r.continue();
    else r.abort();
  });
  // Errors are collected by the page itself: puppeteer's "pageerror" over BiDi also reports
  // errors of its own injected helpers in Firefox ("Permission denied to access property"),
  // which are not the app's.
  page.on("pageerror", (e) => console.log(`   [${displayName} pageerror, not counted] ${e.message}`));
  page.on("dialog", (d) => d.accept());
  await page.evaluateOnNewDocument((n) => {
    try {
      localStorage.setItem("hakiri.displayName", n);
      const keep = (what) => {
        const all = JSON.parse(sessionStorage.getItem("e2e.errors") ?? "[]");
        all.push(`${location.pathname}: ${what}`);
        sessionStorage.setItem("e2e.errors", JSON.stringify(all));
      };
      addEventListener("error", (e) => keep(`${e.message} at ${e.filename}:${e.lineno}`));
      addEventListener("unhandledrejection", (e) => keep(`unhandled rejection: ${e.reason?.stack ?? e.reason}`));
    } catch {
      /* opaque origins have no storage */
    }
  }, displayName);
  return { ctx, page };
}

/** Presses a chord such as "Control+a" (puppeteer's press takes one key). */
async function chord(page, keys) {
  const parts = keys.split("+");
  for (const k of parts.slice(0, -1)) await page.keyboard.down(k);
  await page.keyboard.press(parts.at(-1));
  for (const k of parts.slice(0, -1).reverse()) await page.keyboard.up(k);
}

/** Tabs from where the focus is until `pred(document.activeElement)` holds. */
async function tabTo(page, pred, what, max = 80) {
  for (let i = 0; i < max; i++) {
    if (await page.evaluate(pred)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`Tab never reached ${what}`);
}

const fill = (page, sel, value) => page.locator(sel).fill(value);
const byId = (id) => () => document.activeElement?.id === id;
const sqlOf = (page, name) => page.evaluate((n) => globalThis.hakiriDebug?.docJson?.()?.pipelines?.[n]?.sql ?? null, name);

const stack = await startStack({ keep: !!process.env.E2E_KEEP, controlArgs: ["--dispatch-every", "300ms"] });
const base = stack.base;
console.log(`stack: control ${stack.controlUrl}, oidc ${stack.oidcUrl}`);
const firefox = await puppeteer.launch({
  browser: "firefox",
  executablePath: FIREFOX,
  headless: true,
  // Firefox ESR 140's BiDi has no viewport emulation command: size the window instead.
  defaultViewport: null,
  args: ["--width=1280", "--height=900"],
});
console.log(`browser: ${await firefox.version()}`);
let chromium;

const csvDir = join(stack.dir, "data");
mkdirSync(csvDir, { recursive: true });
writeFileSync(join(csvDir, "orders.csv"), "id,customer,amount\n1,ada,120\n2,grace,75\n3,linus,300\n");
const SQL = "INSERT INTO context.orders SELECT id, customer, amount FROM files.orders WHERE id > $cursor";

try {
  ({ page: F } = await firefoxPage(firefox, "alice"));

  await test("firefox: a visitor gets the sign-in page and signs in through the OIDC provider", async () => {
    await F.goto(`${base}/projects`);
    await F.waitForSelector("#signin-title");
    await checkLabels(F, "sign-in");
    await shot(F, "signin");
    // The page's own error listener works: a thrown error is kept, then cleared.
    await F.evaluate(() => setTimeout(() => { throw new Error("e2e probe"); }));
    await waitFor(() => F.evaluate(() => (sessionStorage.getItem("e2e.errors") ?? "").includes("e2e probe")), "the probe error kept");
    await F.evaluate(() => sessionStorage.removeItem("e2e.errors"));
    // With the keyboard: the sign-in button has the focus order's first stop on the form.
    await F.focus("#signin-button");
    await Promise.all([F.waitForNavigation(), F.keyboard.press("Enter")]);
    await waitFor(() => F.url().includes("/oauth2/authorize"), "the provider's form");
    await fill(F, 'input[name="sub"]', "alice");
    await Promise.all([F.waitForNavigation(), F.click('button[type="submit"]')]);
    await F.waitForSelector("#projects-title");
    assert(F.url().startsWith(`${base}/projects`), `back on /projects, at ${F.url()}`);
  }, { critical: true });

  await test("firefox: creates a project, a source and a pipeline with the keyboard; the pipeline validates", async () => {
    await F.focus("#project-name");
    await F.keyboard.type("shop");
    await F.keyboard.press("Enter");
    await F.waitForSelector("#pipelines-title");
    await F.click('nav[aria-label="Project sections"] a::-p-text(Sources)');
    await F.waitForSelector("#sources-title");
    await F.focus("#new-source-name");
    await F.keyboard.type("files");
    await F.keyboard.press("Tab");
    await F.keyboard.type("file");
    await F.keyboard.press("Enter");
    await F.waitForSelector("[data-source=files]");
    await F.focus("#source-files-new-key");
    await F.keyboard.type("tables.orders.path");
    await F.keyboard.press("Tab");
    await F.keyboard.type(join(csvDir, "*.csv"));
    await F.keyboard.press("Enter");
    await F.waitForSelector("#source-files-tables\\.orders\\.path");
    await shot(F, "sources");
    await F.click('nav[aria-label="Project sections"] a::-p-text(Pipelines)');
    await F.focus("#new-pipeline-name");
    await F.keyboard.type("orders");
    await F.keyboard.press("Enter");
    await F.waitForSelector("#editor-title");
    await F.waitForSelector(".sql-editor .cm-content");
    // Tab into the SQL editor (CodeMirror) and type the query there.
    await F.focus(".sql-editor .cm-content");
    await chord(F, "Control+a");
    await F.keyboard.type(SQL);
    await waitFor(async () => (await sqlOf(F, "orders")) === SQL, "the typed SQL in the document");
    await F.select("#field-mode", "append");
    await F.select("#field-cursor-kind", "monotonic");
    await fill(F, "#field-cursor-column", "id");
    await fill(F, "#field-cursor-initial", "0");
    await fill(F, "#field-schedule-every", "1 hour");
    await F.waitForSelector('[data-valid="true"]');
    await fill(F, "#field-placement", "moon:1");
    await F.waitForSelector('[data-field="placement"] .field-problems');
    await F.waitForSelector('[data-valid="false"]');
    await shot(F, "editor-invalid");
    await fill(F, "#field-placement", "any");
    await F.waitForSelector('[data-valid="true"]');
    await checkLabels(F, "editor");
    await shot(F, "editor");
  }, { critical: true });

  await test("firefox and chromium edit the same pipeline at once and converge", async () => {
    chromium = await launchBrowser();
    const ctx = await chromium.newContext({ viewport: { width: 1280, height: 900 } });
    await ctx.route("**/*", (r) => (["127.0.0.1", "localhost"].includes(new URL(r.request().url()).hostname) ? r.continue() : r.abort()));
    await ctx.addCookies([{ name: "hakiri_token", value: stack.token("alice"), url: base }]);
    const C = await ctx.newPage();
    C.on("pageerror", (e) => pageErrors.push(`chromium: ${e.message}`));
    await C.goto(`${base}/projects/shop/pipelines/orders`);
    await C.waitForSelector(".sql-editor .cm-content");
    await waitFor(async () => (await sqlOf(C, "orders")) === SQL, "chromium has the document");
    const head = "INSERT INTO context.orders SELECT id, customer, amount";
    await F.focus(".sql-editor .cm-content");
    await chord(F, "Control+End");
    await C.click(".sql-editor .cm-content");
    await C.keyboard.press("Control+Home");
    for (let i = 0; i < head.length; i++) await C.keyboard.press("ArrowRight");
    await Promise.all([F.keyboard.type(" /* firefox */", { delay: 25 }), C.keyboard.type(" /* chromium */", { delay: 30 })]);
    await Promise.all([
      (async () => {
        await fill(F, "#transform-new", "upper(customer) AS customer_upper");
        await F.focus("#transform-new");
        await F.keyboard.press("Enter");
      })(),
      (async () => {
        await C.fill("#field-schedule-retries", "2");
      })(),
    ]);
    const [jf, jc] = await waitFor(async () => {
      const [a, b] = [await docJson(F), await docJson(C)];
      return a === b ? [a, b] : null;
    }, "both documents equal");
    const p = JSON.parse(jf).pipelines.orders;
    assert(p.sql === `${head} /* chromium */ FROM files.orders WHERE id > $cursor /* firefox */`, `merged SQL: ${p.sql}`);
    assert(p.transforms?.includes("upper(customer) AS customer_upper") && p.schedule.retries === 2, `both clauses: ${JSON.stringify(p)}`);
    const shown = await Promise.all([F, C].map((pg) => pg.evaluate(() => document.querySelector(".sql-editor .cm-content").innerText.trim())));
    assert(shown[0] === shown[1] && shown[0] === p.sql, `both editors show the merged SQL: ${JSON.stringify(shown)}`);
    assert(jf === jc, "documents equal");
    await shot(F, "editor-with-chromium");
    await ctx.close();
  });

  await test("firefox: applies, a node runs the pipeline, the run chart has a point", async () => {
    await F.click('nav[aria-label="Project sections"] a::-p-text(Apply)');
    await F.waitForSelector("#apply-title");
    await F.focus("#apply-note");
    await F.keyboard.type("orders from the CSV exports");
    await F.focus("#apply-button");
    await F.keyboard.press("Enter");
    await F.waitForSelector("[data-apply=ok] ::-p-text(version 1)");
    await checkLabels(F, "apply");
    await shot(F, "apply");
    const { token } = await stack.api("/api/projects/shop/nodes/a/token", { token: stack.token("alice"), method: "POST" });
    const nodeDir = join(stack.dir, "node-a");
    mkdirSync(nodeDir, { recursive: true });
    const pg = await freePort();
    stack.procs.push(
      start("node-a", stack.bin, ["serve", "--control", stack.controlUrl, "--node-id", "a", "--team-project", "shop", "--heartbeat", "0.3", "--pg-listen", `127.0.0.1:${pg}`], {
        logDir: stack.logDir,
        cwd: nodeDir,
        env: { HAKIRI_NODE_TOKEN: token, HAKIRI_PROJECT: undefined },
      }),
    );
    await F.goto(`${base}/projects/shop/pipelines`);
    await waitFor(async () => (await F.$(".nodes ::-p-text(alive)")) || (await F.reload(), null), "node a alive", 20_000, 1000);
    await F.focus("button[aria-label='Run orders now']");
    await F.keyboard.press("Enter");
    await F.waitForSelector("::-p-text(Run of orders queued)");
    await F.goto(`${base}/projects/shop/runs`);
    await waitFor(
      async () => (await F.$("tr[data-state=succeeded]")) || (await F.click("button::-p-text(Refresh)"), null),
      "a succeeded run",
      60_000,
      1000,
    );
    await F.waitForSelector("[data-chart=rows]");
    const points = Number(await F.$eval("[data-chart=rows]", (e) => e.dataset.points));
    assert(points >= 1, `the rows chart has a point (${points})`);
    const span = Number(await F.$eval("[data-chart=rows] [data-x-span]", (e) => e.dataset.xSpan));
    assert(span >= 3600 && span < 86400, `the time axis spans hours around the runs, not years (${span} s)`);
    await checkLabels(F, "runs");
    await shot(F, "runs");
    await F.goto(`${base}/projects/shop/pipelines`);
    await F.waitForSelector("[data-pipeline=orders] .state-succeeded");
    await checkLabels(F, "pipelines");
    await shot(F, "pipelines");
  });

  await test("firefox: the query console returns the rows and shows a bad query's error", async () => {
    await F.goto(`${base}/projects/shop/query`);
    await F.waitForSelector(".sql-editor .cm-content");
    await F.focus(".sql-editor .cm-content");
    await chord(F, "Control+a");
    await F.keyboard.type("SELECT id, customer FROM context.orders ORDER BY id");
    await F.focus("#query-run");
    await F.keyboard.press("Enter");
    await F.waitForSelector(".result-table tbody tr");
    const rows = await F.$$eval(".result-table tbody tr", (r) => r.map((x) => x.textContent));
    assert(rows.length === 3 && rows[0].includes("ada"), `3 rows: ${rows}`);
    await checkLabels(F, "query");
    await shot(F, "query");
    await F.focus(".sql-editor .cm-content");
    await chord(F, "Control+a");
    await F.keyboard.type("SELECT nope FROM context.nothing");
    await F.focus("#query-run");
    await F.keyboard.press("Enter");
    await F.waitForSelector("[data-query=error]");
    await shot(F, "query-error");
    await F.goto(`${base}/projects/shop/tables`);
    await F.waitForSelector(".table-history");
    await shot(F, "tables");
  });

  await test("firefox: an expired token leads to the sign-in page", async () => {
    const expired = stack.token("alice", "1s");
    await sleep(2100);
    const { ctx, page } = await firefoxPage(firefox, "carol");
    await ctx.setCookie({ name: "hakiri_token", value: expired, domain: new URL(base).hostname, path: "/" });
    await page.goto(`${base}/projects/shop/pipelines/orders`);
    await page.waitForSelector("#signin-title");
    await page.waitForSelector("[data-reason=expired]");
    const at = await page.evaluate(() => location.href);
    assert(at.includes("reason=expired"), at);
    await shot(page, "signin-expired");
    await errorsOf(page, "carol");
    await ctx.close();
  });

  await test("firefox: no uncaught errors in the pages", async () => {
    await errorsOf(F, "alice");
    assert(pageErrors.length === 0, pageErrors.join("\n"));
  });
} finally {
  await firefox.close().catch(() => {});
  if (chromium) await chromium.close().catch(() => {});
  writeFileSync(join(ARTIFACTS, "firefox-screenshots.json"), JSON.stringify(shots, null, 2));
  writeFileSync(join(ARTIFACTS, "firefox-results.json"), JSON.stringify(results, null, 2));
  if (results.some((r) => r.status === "failed")) console.log(`logs: ${stack.logDir}`);
  await stack.stop();
}

const c = counts();
console.log(`\nscreenshots: ${shots.map((s) => s.name).join(", ")} (in e2e/artifacts/)`);
console.log(`${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`);
process.exit(c.failed ? 1 : 0);
