// Starts what the browser tests need, on free 127.0.0.1 ports, and stops it again:
// - oidc-provider-mock (a real OIDC provider; docs/design/oidc-provider-mock.md),
// - `hakiri control serve` with it as the issuer and the preview server as its public URL,
// - `vite preview` serving web/dist with /api, /auth, /sync proxied to the control plane,
//   so the app is same-origin with the control plane, as when the control plane serves it.
//
// Environment:
//   HAKIRI_BIN          the hakiri binary (default: /tmp/hakiri-web/hakiri, else
//                       target/debug/hakiri of the repo, else ~/.cache/hakiri-target/debug/hakiri)
//   OIDC_PROVIDER_MOCK  the oidc-provider-mock executable (default: ~/.cache/hakiri-venv/bin/...)
//   CHROMIUM            the browser (default /usr/bin/chromium)
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { existsSync, mkdirSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(WEB, "..");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export function hakiriBin() {
  const candidates = [
    process.env.HAKIRI_BIN,
    "/tmp/hakiri-web/hakiri",
    join(REPO, "target/debug/hakiri"),
    join(homedir(), ".cache/hakiri-target/debug/hakiri"),
  ].filter(Boolean);
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`no hakiri binary: set HAKIRI_BIN (looked at ${candidates.join(", ")})`);
  return found;
}

export function oidcMockBin() {
  const candidates = [process.env.OIDC_PROVIDER_MOCK, join(homedir(), ".cache/hakiri-venv/bin/oidc-provider-mock")].filter(Boolean);
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`no oidc-provider-mock: set OIDC_PROVIDER_MOCK (pip install oidc-provider-mock)`);
  return found;
}

export function chromiumBin() {
  const c = process.env.CHROMIUM ?? "/usr/bin/chromium";
  if (!existsSync(c)) throw new Error(`no Chromium at ${c}: apt-get install -y chromium, or set CHROMIUM`);
  return c;
}

function withoutProject() {
  const env = { ...process.env };
  delete env.HAKIRI_PROJECT;
  return env;
}

export async function waitHttp(url, { timeoutMs = 30_000, ok = (s) => s < 500, proc } = {}) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < timeoutMs) {
    if (proc?.exited) throw new Error(`${proc.name} exited while starting: see ${proc.log}`);
    try {
      const r = await fetch(url, { redirect: "manual" });
      if (ok(r.status)) return r;
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = e.message;
    }
    await sleep(100);
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms (${last})`);
}

/** A child process with its output in a log file; stop() kills it (and only it). */
export function start(name, cmd, args, { env = {}, cwd, logDir }) {
  const log = join(logDir, `${name}.log`);
  const fd = openSync(log, "a");
  const fullEnv = { ...process.env, ...env };
  // undefined removes a variable (HAKIRI_PROJECT would point hakiri at a project folder).
  for (const [k, v] of Object.entries(fullEnv)) if (v === undefined) delete fullEnv[k];
  const child = spawn(cmd, args, { cwd, env: fullEnv, stdio: ["ignore", fd, fd], detached: true });
  const proc = {
    name,
    child,
    log,
    exited: false,
    async stop() {
      if (proc.exited) return;
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        /* gone */
      }
      for (let i = 0; i < 50 && !proc.exited; i++) await sleep(100);
      if (!proc.exited) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          /* gone */
        }
      }
    },
  };
  child.on("exit", () => {
    proc.exited = true;
  });
  return proc;
}

/**
 * Starts the OIDC provider, the control plane and the preview server.
 * Returns { base, controlUrl, oidcUrl, data, dir, procs, token(sub, ttl), hakiri(args), stop() }.
 */
export async function startStack({ keep = false, controlArgs = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "hakiri-web-e2e-"));
  const logDir = join(dir, "logs");
  mkdirSync(logDir);
  const data = join(dir, "control");
  const [oidcPort, controlPort, webPort] = [await freePort(), await freePort(), await freePort()];
  const oidcUrl = `http://127.0.0.1:${oidcPort}`;
  const controlUrl = `http://127.0.0.1:${controlPort}`;
  // The app as shipped: served by the control plane from the binary (web/dist embedded).
  // HAKIRI_WEB_PREVIEW=1 serves web/dist with `vite preview` and a proxy instead.
  const preview = process.env.HAKIRI_WEB_PREVIEW === "1";
  const base = preview ? `http://127.0.0.1:${webPort}` : controlUrl;
  const bin = hakiriBin();
  const procs = [];
  const stack = {
    dir,
    data,
    base,
    controlUrl,
    oidcUrl,
    bin,
    procs,
    logDir,
    async stop() {
      for (const p of [...procs].reverse()) await p.stop();
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
    /** A token from the control plane's own key (`hakiri control token`). */
    token(sub, ttl = "1h") {
      return execFileSync(bin, ["control", "token", "--data", data, "--sub", sub, "--ttl", ttl], { encoding: "utf8", env: withoutProject() }).trim();
    },
    async api(path, { token, method, body } = {}) {
      const r = await fetch(controlUrl + path, {
        method: method ?? (body ? "POST" : "GET"),
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body ? { "Content-Type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
      const text = await r.text();
      let json;
      try {
        json = JSON.parse(text);
      } catch {
        json = text;
      }
      if (!r.ok) throw new Error(`${method ?? "GET"} ${path}: HTTP ${r.status} ${text}`);
      return json;
    },
  };
  try {
    procs.push(start("oidc", oidcMockBin(), ["--port", String(oidcPort), "--host", "127.0.0.1"], { logDir }));
    await waitHttp(`${oidcUrl}/.well-known/openid-configuration`, { ok: (s) => s === 200, proc: procs[0] });
    mkdirSync(data, { recursive: true });
    procs.push(
      start(
        "control",
        bin,
        [
          "control",
          "serve",
          "--listen",
          `127.0.0.1:${controlPort}`,
          "--data",
          data,
          "--public-url",
          base,
          "--oidc-issuer",
          oidcUrl,
          "--oidc-client-id",
          "web",
          ...controlArgs,
        ],
        { logDir, cwd: dir, env: { HAKIRI_OIDC_CLIENT_SECRET: "x", HAKIRI_PROJECT: undefined } },
      ),
    );
    await waitHttp(`${controlUrl}/healthz`, { ok: (s) => s === 200, proc: procs[1] });
    const vite = join(WEB, "node_modules/vite/bin/vite.js");
    if (preview) procs.push(
      start("preview", process.execPath, [vite, "preview", "--port", String(webPort), "--strictPort", "--host", "127.0.0.1"], {
        logDir,
        cwd: WEB,
        env: { HAKIRI_CONTROL_URL: controlUrl },
      }),
    );
    await waitHttp(`${base}/`, { ok: (s) => s === 200, proc: procs[preview ? 2 : 1] });
    await waitHttp(`${base}/healthz`, { ok: (s) => s === 200 });
  } catch (e) {
    await stack.stop();
    throw e;
  }
  return stack;
}

/** Stops and starts the control plane again on the same port and data (for outage tests). */
export async function restartControl(stack, { downMs = 0 } = {}) {
  const i = stack.procs.findIndex((p) => p.name === "control");
  const old = stack.procs[i];
  await old.stop();
  if (downMs) await sleep(downMs);
  const port = new URL(stack.controlUrl).port;
  const p = start(
    "control",
    stack.bin,
    ["control", "serve", "--listen", `127.0.0.1:${port}`, "--data", stack.data, "--public-url", stack.base, "--oidc-issuer", stack.oidcUrl, "--oidc-client-id", "web"],
    { logDir: stack.logDir, cwd: stack.dir, env: { HAKIRI_OIDC_CLIENT_SECRET: "x", HAKIRI_PROJECT: undefined } },
  );
  stack.procs[i] = p;
  await waitHttp(`${stack.controlUrl}/healthz`, { ok: (s) => s === 200, proc: p });
}

export const CHROME_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * Launches Debian's Chromium through playwright-core (it downloads no browser). Playwright
 * gives every launch a fresh temporary --user-data-dir of its own (and refuses one in args).
 */
export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({ executablePath: chromiumBin(), headless: true, args: CHROME_ARGS });
}
