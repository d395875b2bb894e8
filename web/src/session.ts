// Who is signed in, as far as the page can tell: the token is an HttpOnly cookie, so the
// name comes from GET /api/me when the control plane serves it, else a name the person
// picks (kept in localStorage) for presence.
import { useEffect, useState } from "preact/hooks";
import { api } from "./api";

const NAME_KEY = "hakiri.displayName";
let name: string | null = null;
let fromServer = false;
const listeners = new Set<() => void>();

function fallbackName(): string {
  try {
    const stored = localStorage.getItem(NAME_KEY);
    if (stored) return stored;
    const n = `guest-${Math.random().toString(36).slice(2, 6)}`;
    localStorage.setItem(NAME_KEY, n);
    return n;
  } catch {
    return "guest";
  }
}

export function displayName(): string {
  return (name ??= fallbackName());
}

export function nameFromServer(): boolean {
  return fromServer;
}

export function setDisplayName(n: string): void {
  name = n.trim() || fallbackName();
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    /* not kept */
  }
  for (const l of listeners) l();
}

let asked: Promise<void> | null = null;
/** Asks the server who this is (once). */
export function loadMe(): Promise<void> {
  asked ??= api
    .me()
    .then((me) => {
      name = me.name || me.email || me.sub;
      fromServer = true;
      for (const l of listeners) l();
    })
    .catch(() => {
      /* not served yet (404) or not signed in: keep the local name */
    });
  return asked;
}

export function useDisplayName(): string {
  const [, set] = useState(0);
  useEffect(() => {
    const l = () => set((x) => x + 1);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return displayName();
}
