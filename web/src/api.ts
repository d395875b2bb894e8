// The control plane's HTTP API (control/src/http.rs), same-origin.
//
// Authentication is the HttpOnly `hakiri_token` cookie the OIDC sign-in sets. Creating a
// project mints a token that also carries the new project's rights, but a page cannot
// replace an HttpOnly cookie: that token is kept for this tab (sessionStorage) and sent as
// `Authorization: Bearer` (and as the websocket join's auth bytes) until the cookie is
// renewed by the server (see the notes on POST /api/token in the README of web/).
//
// Every failure is an ApiError with a kind the pages show as a state:
// - unreachable: the control plane does not answer (network error, or a 5xx that is not the
//   server's JSON error, i.e. a proxy's or gateway's page);
// - unauthenticated (401): no token, a malformed one, or an expired one;
// - forbidden (403), not_found (404), invalid (422), and the server's other kinds.

export type ErrorKind =
  | "unreachable"
  | "unauthenticated"
  | "forbidden"
  | "not_found"
  | "invalid"
  | "aborted"
  | "internal"
  | string;

export class ApiError extends Error {
  constructor(
    public kind: ErrorKind,
    message: string,
    public status = 0,
    /** 404 without the server's JSON error: the route itself does not exist (yet). */
    public routeMissing = false,
  ) {
    super(message);
    this.name = "ApiError";
  }
  /** The token is missing (never signed in) rather than expired or broken. */
  get neverSignedIn(): boolean {
    return this.kind === "unauthenticated" && /^no token/i.test(this.message);
  }
}

const BEARER_KEY = "hakiri.bearer";

export function bearer(): string | null {
  try {
    return sessionStorage.getItem(BEARER_KEY);
  } catch {
    return null;
  }
}

export function setBearer(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(BEARER_KEY, token);
    else sessionStorage.removeItem(BEARER_KEY);
  } catch {
    /* storage disabled: the cookie alone is used */
  }
}

/** Listeners told about every 401, so the app can show the sign-in page. */
const unauthListeners = new Set<(e: ApiError) => void>();
export function onUnauthenticated(cb: (e: ApiError) => void): () => void {
  unauthListeners.add(cb);
  return () => unauthListeners.delete(cb);
}
export function reportUnauthenticated(e: ApiError): void {
  setBearer(null);
  for (const cb of unauthListeners) cb(e);
}

/** Listeners told whether the control plane answered the last request. */
const reachListeners = new Set<(ok: boolean) => void>();
export function onReachability(cb: (ok: boolean) => void): () => void {
  reachListeners.add(cb);
  return () => reachListeners.delete(cb);
}
function reach(ok: boolean) {
  for (const cb of reachListeners) cb(ok);
}

interface RequestOpts {
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
  /** Expect text/plain instead of JSON. */
  text?: boolean;
}

export async function request<T = unknown>(path: string, opts: RequestOpts = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: opts.text ? "text/plain" : "application/json" };
  const b = bearer();
  if (b) headers.Authorization = `Bearer ${b}`;
  let body: string | undefined;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  let res: Response;
  try {
    res = await fetch(path, {
      method: opts.method ?? (body ? "POST" : "GET"),
      headers,
      body,
      signal: opts.signal,
      credentials: "same-origin",
    });
  } catch (e) {
    if ((e as Error)?.name === "AbortError") throw new ApiError("aborted", "cancelled");
    reach(false);
    throw new ApiError(
      "unreachable",
      `The control plane at ${location.origin} cannot be reached (${(e as Error)?.message ?? e}).`,
    );
  }
  const type = res.headers.get("content-type") ?? "";
  const isJson = type.includes("application/json");
  // A gateway's or proxy's error page (no JSON): the control plane itself did not answer.
  // The control plane's own errors are JSON, whatever their status.
  if (res.status >= 500 && !isJson) {
    reach(false);
    throw new ApiError(
      "unreachable",
      `The control plane at ${location.origin} does not answer (HTTP ${res.status}).`,
      res.status,
    );
  }
  reach(true);
  if (!res.ok) {
    let message = `HTTP ${res.status} ${res.statusText}`;
    let kind: ErrorKind = res.status === 401 ? "unauthenticated" : res.status === 403 ? "forbidden" : res.status === 404 ? "not_found" : res.status === 422 ? "invalid" : "internal";
    if (isJson) {
      try {
        const j = (await res.json()) as { error?: string; kind?: string };
        if (j.error) message = j.error;
        if (j.kind) kind = j.kind;
      } catch {
        /* keep the status line */
      }
    } else {
      const t = await res.text().catch(() => "");
      if (t.trim()) message = t.trim().slice(0, 500);
    }
    if (res.status === 404 && kind !== "not_found") kind = "not_found";
    const routeMissing = (res.status === 404 || res.status === 405) && !isJson;
    if (routeMissing) kind = "not_found";
    const err = new ApiError(kind, message, res.status, routeMissing);
    if (res.status === 401) reportUnauthenticated(err);
    throw err;
  }
  if (res.status === 204) return undefined as T;
  if (opts.text) return (await res.text()) as T;
  if (!isJson) {
    // The SPA fallback answering index.html for an /api path means the route does not exist.
    throw new ApiError("not_found", `${path} is not served by this control plane`, 404, true);
  }
  return (await res.json()) as T;
}

// --- typed endpoints

export type Right = "read" | "edit" | "apply" | "run";
export interface ProjectInfo {
  id: string;
  rights: Right[];
}
export interface Version {
  version: number;
  applied_at: string;
  applied_by: string;
  note: string;
  current: boolean;
}
export interface RunRow {
  id: number;
  project: string;
  pipeline: string;
  slot: string;
  node: string;
  state: "assigned" | "succeeded" | "failed" | "lost" | string;
  assigned_at: string;
  finished_at: string | null;
  rows: number | null;
  error: string | null;
}
export interface NodeStatus {
  id: string;
  last_seen: string;
  alive: boolean;
  runs: number;
  running: string[];
  failed: number;
}
export interface PipelineStatus {
  name: string;
  placement: string;
  note: string | null;
  last_run: RunRow | null;
  /** Not served yet: asked for in web/README.md. */
  next_run?: string | null;
  lease?: { node: string; since?: string; until?: string } | null;
}
export interface Status {
  project?: string;
  applied_version: number | null;
  nodes: NodeStatus[];
  pipelines: PipelineStatus[];
}
export interface QueryColumn {
  name: string;
  type?: string;
  nullable?: boolean;
}
export interface QueryResult {
  columns: (QueryColumn | string)[];
  rows: (unknown[] | Record<string, unknown>)[];
  row_count?: number;
  truncated?: boolean;
}
export interface Me {
  sub: string;
  email?: string | null;
  name?: string | null;
}

const enc = encodeURIComponent;
const P = (p: string) => `/api/projects/${enc(p)}`;

export const api = {
  me: () => request<Me>("/api/me"),
  projects: () => request<ProjectInfo[]>("/api/projects"),
  createProject: (id: string) => request<{ id: string; token?: string }>("/api/projects", { body: { id } }),
  grant: (p: string, sub: string, rights: Right[]) => request<void>(`${P(p)}/grants`, { body: { sub, rights } }),
  refreshToken: () => request<{ token: string }>("/api/token", { method: "POST" }),
  logout: () => request<void>("/auth/logout", { method: "POST" }),
  apply: (p: string, note: string) => request<{ version: number; changed: boolean }>(`${P(p)}/apply`, { body: { note } }),
  versions: (p: string) => request<Version[]>(`${P(p)}/versions`),
  manifest: (p: string, v?: number) =>
    request<{ version: number; manifest: unknown }>(`${P(p)}/manifest${v === undefined ? "" : `?version=${v}`}`),
  diff: (p: string, from: number, to?: number) =>
    request<string>(`${P(p)}/diff?from=${from}${to === undefined ? "" : `&to=${to}`}`, { text: true }),
  rollback: (p: string, version: number) => request<{ version: number }>(`${P(p)}/rollback`, { body: { version } }),
  status: (p: string) => request<Status>(`${P(p)}/status`),
  runs: (p: string, limit = 500) => request<RunRow[]>(`${P(p)}/runs?limit=${limit}`),
  runDetail: (p: string, id: number) => request<RunDetail>(`${P(p)}/runs/${id}`),
  runNow: (p: string, name: string) => request<{ slot: string }>(`${P(p)}/pipelines/${enc(name)}/run`, { method: "POST" }),
  query: (p: string, sql: string, signal?: AbortSignal) => request<QueryResult>(`${P(p)}/query`, { body: { sql }, signal }),
  tables: (p: string) => request<TableHistory[]>(`${P(p)}/tables`),
  schema: () => request<Record<string, unknown>>("/api/schema"),
};

/** GET /api/projects/{p}/runs/{id}: not served yet (asked for in web/README.md). */
export interface RunDetail extends RunRow {
  log?: string;
  trace?: { name: string; start_ms: number; duration_ms: number }[];
}

/** GET /api/projects/{p}/tables: not served yet; the shape of MCP's context.describe. */
export interface TableHistory {
  table: string;
  columns: QueryColumn[];
  versions?: { version: number; schema: string; run_id?: string | number | null; created_at: string }[];
  schema_events: { at: string; kind: string; message: string; run_id?: string | number | null }[];
}

export function signInUrl(returnTo: string): string {
  return `/auth/login?return_to=${enc(returnTo)}`;
}
