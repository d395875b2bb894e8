// History-API routing: the control plane answers index.html for every path it does not
// serve itself (/api, /auth, /sync, /healthz and /assets are its own).
import { useEffect, useState } from "preact/hooks";

export type Route =
  | { page: "signin"; reason?: string; next?: string }
  | { page: "projects" }
  | { page: "pipelines"; project: string }
  | { page: "editor"; project: string; pipeline: string }
  | { page: "sources"; project: string }
  | { page: "apply"; project: string }
  | { page: "runs"; project: string; pipeline?: string }
  | { page: "query"; project: string }
  | { page: "tables"; project: string }
  | { page: "notfound"; path: string };

const dec = (s: string) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

export function parse(loc: { pathname: string; search: string }): Route {
  const parts = loc.pathname.split("/").filter(Boolean).map(dec);
  const q = new URLSearchParams(loc.search);
  if (parts.length === 0) return { page: "projects" };
  if (parts[0] === "signin") return { page: "signin", reason: q.get("reason") ?? undefined, next: q.get("next") ?? undefined };
  if (parts[0] !== "projects") return { page: "notfound", path: loc.pathname };
  if (parts.length === 1) return { page: "projects" };
  const project = parts[1];
  const section = parts[2] ?? "pipelines";
  switch (section) {
    case "pipelines":
      if (parts[3]) return { page: "editor", project, pipeline: parts[3] };
      return { page: "pipelines", project };
    case "sources":
      return { page: "sources", project };
    case "apply":
      return { page: "apply", project };
    case "runs":
      return { page: "runs", project, pipeline: q.get("pipeline") ?? undefined };
    case "query":
      return { page: "query", project };
    case "tables":
      return { page: "tables", project };
  }
  return { page: "notfound", path: loc.pathname };
}

const enc = encodeURIComponent;
export const href = {
  projects: () => "/projects",
  pipelines: (p: string) => `/projects/${enc(p)}/pipelines`,
  editor: (p: string, name: string) => `/projects/${enc(p)}/pipelines/${enc(name)}`,
  sources: (p: string) => `/projects/${enc(p)}/sources`,
  apply: (p: string) => `/projects/${enc(p)}/apply`,
  runs: (p: string, pipeline?: string) => `/projects/${enc(p)}/runs${pipeline ? `?pipeline=${enc(pipeline)}` : ""}`,
  query: (p: string) => `/projects/${enc(p)}/query`,
  tables: (p: string) => `/projects/${enc(p)}/tables`,
  signin: (reason?: string, next?: string) => {
    const q = new URLSearchParams();
    if (reason) q.set("reason", reason);
    if (next) q.set("next", next);
    const s = q.toString();
    return `/signin${s ? `?${s}` : ""}`;
  },
};

const listeners = new Set<() => void>();
export function navigate(to: string, replace = false): void {
  if (to === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  for (const l of listeners) l();
}
if (typeof window !== "undefined") {
  window.addEventListener("popstate", () => {
    for (const l of listeners) l();
  });
}

/** The current route; re-renders on navigation. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location));
  useEffect(() => {
    const l = () => setRoute(parse(location));
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return route;
}

/** Same-origin <a> clicks navigate in the app (modifier clicks keep the browser's meaning). */
export function interceptLinks(root: HTMLElement): void {
  root.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element).closest?.("a");
    if (!a || a.target || a.hasAttribute("download")) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin) return;
    if (/^\/(api|auth|sync|healthz)(\/|$)/.test(url.pathname)) return;
    e.preventDefault();
    navigate(url.pathname + url.search);
  });
}
