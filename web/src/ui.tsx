// Small shared pieces: loading data with every failure shown as a state, never a blank page.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError, signInUrl } from "./api";

export type Async<T> =
  | { state: "loading"; data?: T }
  | { state: "ok"; data: T }
  | { state: "error"; error: ApiError; data?: T };

/** Runs `load` now and whenever `deps` change; `reload()` runs it again. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[], pollMs?: number): [Async<T>, () => void] {
  const [s, set] = useState<Async<T>>({ state: "loading" });
  const gen = useRef(0);
  const run = useCallback(() => {
    const g = ++gen.current;
    set((prev) => ({ state: "loading", data: prev.data }));
    load().then(
      (data) => g === gen.current && set({ state: "ok", data }),
      (e) => g === gen.current && set((prev) => ({ state: "error", error: asApiError(e), data: prev.data })),
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(() => {
    run();
    if (!pollMs) return;
    const t = setInterval(() => {
      const g = ++gen.current;
      load().then(
        (data) => g === gen.current && set({ state: "ok", data }),
        (e) => g === gen.current && set((prev) => ({ state: "error", error: asApiError(e), data: prev.data })),
      );
    }, pollMs);
    return () => clearInterval(t);
  }, [run]);
  return [s, run];
}

export function asApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  return new ApiError("internal", (e as Error)?.message ?? String(e));
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="loading" role="status" aria-live="polite">
      Loading {what}…
    </p>
  );
}

/** An error as a page state: what happened and what to do. */
export function ErrorState({ error, retry, what }: { error: ApiError; retry?: () => void; what?: string }) {
  let title = "Something went wrong";
  let hint: ComponentChildren = null;
  switch (error.kind) {
    case "unreachable":
      title = "The control plane is unreachable";
      hint = "Check that `hakiri control serve` is running and reachable from this browser; the page retries when you ask.";
      break;
    case "unauthenticated":
      title = "Your session expired";
      hint = <a href={signInUrl(location.pathname + location.search)}>Sign in again</a>;
      break;
    case "forbidden":
      title = "Not allowed";
      hint = (
        <>
          Your sign-in does not carry this right on this project (rights are read when you sign in). Ask someone with <code>apply</code> on it to
          grant it, then <a href={signInUrl(location.pathname + location.search)}>sign in again</a>.
        </>
      );
      break;
    case "not_found":
      title = what ? `${what}: not found` : "Not found";
      break;
    case "invalid":
      title = "Refused";
      break;
  }
  return (
    <div class="error-state" role="alert" data-kind={error.kind}>
      <h2>{title}</h2>
      <p class="error-message">{error.message}</p>
      {hint && <p class="hint">{hint}</p>}
      {retry && (
        <button type="button" onClick={retry}>
          Retry
        </button>
      )}
    </div>
  );
}

/** A feature whose route the control plane does not serve yet (404). */
export function NotAvailable({ feature, route }: { feature: string; route: string }) {
  return (
    <div class="not-available" role="status" data-state="not-available">
      <h2>{feature} is not available yet</h2>
      <p>
        This control plane does not serve <code>{route}</code> yet. The page works as soon as it does.
      </p>
    </div>
  );
}

export function fmtTime(s: string | null | undefined): string {
  if (!s) return "—";
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return s;
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function fmtAgo(s: string | null | undefined): string {
  if (!s) return "—";
  const t = new Date(s).getTime();
  if (Number.isNaN(t)) return s;
  const d = (Date.now() - t) / 1000;
  const abs = Math.abs(d);
  const unit = abs < 60 ? [abs, "s"] : abs < 3600 ? [abs / 60, "min"] : abs < 86400 ? [abs / 3600, "h"] : [abs / 86400, "d"];
  const n = Math.round(unit[0] as number);
  return d >= 0 ? `${n} ${unit[1]} ago` : `in ${n} ${unit[1]}`;
}

export function durationMs(a: string | null | undefined, b: string | null | undefined): number | null {
  if (!a || !b) return null;
  const x = new Date(a).getTime();
  const y = new Date(b).getTime();
  return Number.isNaN(x) || Number.isNaN(y) ? null : y - x;
}

export function fmtDuration(ms: number | null): string {
  if (ms === null) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** Loads a lazily imported module (code splitting without preact/compat). */
export function useModule<T>(load: () => Promise<T>): { mod?: T; error?: ApiError } {
  const [s, set] = useState<{ mod?: T; error?: ApiError }>({});
  useEffect(() => {
    let live = true;
    load().then(
      (mod) => live && set({ mod }),
      (e) => live && set({ error: new ApiError("unreachable", `Could not load part of the app: ${(e as Error)?.message ?? e}`) }),
    );
    return () => {
      live = false;
    };
  }, []);
  return s;
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}

/** A table's header row: one column per name, then an unnamed actions column if `actions`
 * names it for screen readers. */
export function TableHead({ cols, actions }: { cols: string[]; actions?: string }) {
  return (
    <thead>
      <tr>
        {cols.map((c) => (
          <th scope="col" key={c}>
            {c}
          </th>
        ))}
        {actions && (
          <th scope="col">
            <span class="sr-only">{actions}</span>
          </th>
        )}
      </tr>
    </thead>
  );
}
