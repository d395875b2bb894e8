// A project's shared document: a LoroDoc joined to the control plane's `/sync` room
// (loro-websocket + loro-adaptors, the same client the JS test fixtures use unchanged), and
// an EphemeralStore joined to the room's `%EPH` side for presence (who edits which field).
//
// Layout (control/src/doc.rs): root maps `project`, `sources`, `pipelines`; a pipeline is a
// map whose `sql` is a LoroText, `cursor` and `schedule` maps, `key` a list, `transforms` a
// movable list of strings; every other value is a scalar (last writer wins). Child
// containers are created with ensureMergeable*, so two people creating the same pipeline at
// once end up editing the same containers.
//
// This module imports loro-crdt (its WASM): it is loaded lazily, by the pages that need it.
import { EphemeralStore, LoroDoc, LoroList, LoroMap, LoroMovableList, LoroText } from "loro-crdt";
import { LoroWebsocketClient } from "loro-websocket";
import { LoroAdaptor, LoroEphemeralAdaptor } from "loro-adaptors/loro";
import { ApiError, bearer, reportUnauthenticated } from "./api";

export { LoroDoc, LoroList, LoroMap, LoroMovableList, LoroText };

export type ConnState =
  | { kind: "connecting" }
  | { kind: "joined"; synced: boolean }
  | { kind: "reconnecting" }
  | { kind: "offline"; message: string }
  | { kind: "error"; message: string };

export type Presence = {
  [k: string]: string | number | null | undefined;
  name: string;
  color: string;
  /** Pipeline being edited, and the field (e.g. "sql", "cursor.kind"). */
  pipeline?: string | null;
  field?: string | null;
  page?: string | null;
  at: number;
};

const COLORS = ["#b3261e", "#0b57d0", "#146c2e", "#8e24aa", "#e37400", "#00796b", "#c2185b", "#5d4037"];

function wsUrl(): string {
  const u = new URL("/sync", location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

export class ProjectDoc {
  readonly doc = new LoroDoc();
  readonly presence = new EphemeralStore(30_000);
  readonly me: string;
  state: ConnState = { kind: "connecting" };
  /** Bumped on every document change (local or remote). */
  version = 0;
  presenceVersion = 0;
  private client: LoroWebsocketClient;
  private docAdaptor?: LoroAdaptor;
  private ephAdaptor?: LoroEphemeralAdaptor;
  private listeners = new Set<() => void>();
  private presenceListeners = new Set<() => void>();
  private myPresence: Presence;
  private heartbeat?: ReturnType<typeof setInterval>;
  private destroyed = false;
  private unsubs: (() => void)[] = [];
  private notifyScheduled = false;

  constructor(
    readonly project: string,
    name: string,
  ) {
    this.me = this.doc.peerIdStr;
    let h = 0;
    for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    this.myPresence = { name, color: COLORS[h % COLORS.length], at: Date.now() };
    this.client = new LoroWebsocketClient({
      url: wsUrl(),
      reconnect: { initialDelayMs: 300, maxDelayMs: 5000 },
      onError: (e) => console.debug("[sync]", e?.message ?? e),
    });
    this.unsubs.push(
      this.client.onStatusChange((s) => {
        if (s === "disconnected" && this.state.kind !== "error") {
          this.setState({ kind: "offline", message: "The connection to the control plane is down; retrying." });
        } else if (s === "connected" && this.state.kind === "offline") {
          this.setState({ kind: "reconnecting" });
        }
      }),
    );
    this.unsubs.push(
      this.doc.subscribe(() => {
        this.version++;
        this.scheduleNotify();
      }),
    );
    this.unsubs.push(
      this.presence.subscribe((e) => {
        this.presenceVersion++;
        // Newcomers know nobody (presence is relayed, never stored): tell them who we are.
        if (e.by === "import" && e.added.some((k) => k !== this.me)) this.publishPresence();
        for (const l of this.presenceListeners) l();
      }),
    );
    this.heartbeat = setInterval(() => this.publishPresence(), 10_000);
    void this.join();
  }

  private auth(): Uint8Array {
    const b = bearer();
    return b ? new TextEncoder().encode(b) : new Uint8Array();
  }

  private async join(): Promise<void> {
    this.setState({ kind: "connecting" });
    const timer = setTimeout(() => {
      if (this.state.kind === "connecting") {
        this.setState({ kind: "offline", message: "The control plane does not answer on /sync; retrying." });
      }
    }, 5000);
    try {
      await this.client.waitConnected();
      this.docAdaptor = new LoroAdaptor(this.doc, {
        onUpdateError: (_u, code, reason) => {
          if (code === 3) {
            // PermissionDenied: no `edit` right, or the token expired since the join.
            this.refused = true;
            this.readOnly = true;
            this.scheduleNotify(true);
          } else console.warn("update refused", code, reason);
        },
      });
      await this.client.join({
        roomId: this.project,
        crdtAdaptor: this.docAdaptor,
        auth: () => this.auth(),
        onStatusChange: (s) => {
          if (this.destroyed) return;
          if (s === "joined") this.setState({ kind: "joined", synced: this.synced });
          else if (s === "reconnecting") this.setState({ kind: "reconnecting" });
        },
      });
      this.ephAdaptor = new LoroEphemeralAdaptor(this.presence as unknown as ConstructorParameters<typeof LoroEphemeralAdaptor>[0]);
      await this.client.join({ roomId: this.project, crdtAdaptor: this.ephAdaptor, auth: () => this.auth() });
      clearTimeout(timer);
      this.setState({ kind: "joined", synced: false });
      await this.docAdaptor.waitForReachingServerVersion();
      this.synced = true;
      this.setState({ kind: "joined", synced: true });
      this.publishPresence();
    } catch (e) {
      clearTimeout(timer);
      const msg = (e as Error)?.message ?? String(e);
      const m = /Join failed: (\d+) - (.*)$/s.exec(msg);
      if (m && m[1] === "2") {
        const err = new ApiError("unauthenticated", m[2], 401);
        if (/does not allow/.test(m[2])) {
          this.setState({ kind: "error", message: m[2] });
        } else {
          this.setState({ kind: "error", message: m[2] });
          reportUnauthenticated(err);
        }
      } else {
        this.setState({ kind: "error", message: m ? m[2] : msg });
      }
    }
  }

  synced = false;
  /** No `edit` right here (from the project's rights, or an edit the server refused). */
  readOnly = false;
  /** The server refused an edit: what is on screen has changes it does not have. */
  refused = false;

  setReadOnly(b: boolean): void {
    if (this.readOnly !== b) {
      this.readOnly = b;
      this.scheduleNotify(true);
    }
  }

  private setState(s: ConnState) {
    if (this.destroyed) return;
    this.state = s;
    this.scheduleNotify(true);
  }

  private scheduleNotify(now = false) {
    if (now) {
      for (const l of this.listeners) l();
      return;
    }
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    // Changes that arrive together (one import, one commit) render once; Preact batches
    // the renders themselves. The SQL editor follows its text directly, without a render.
    queueMicrotask(() => {
      this.notifyScheduled = false;
      for (const l of this.listeners) l();
    });
  }

  retry(): void {
    this.client.connect({ resetBackoff: true }).catch(() => {});
    if (this.state.kind === "error") void this.join();
  }

  subscribe(cb: () => void): () => void {
    this.listeners.add(cb);
    return () => void this.listeners.delete(cb);
  }

  subscribePresence(cb: () => void): () => void {
    this.presenceListeners.add(cb);
    return () => void this.presenceListeners.delete(cb);
  }

  /** Says where this user is (pipeline, field); null clears the field. */
  setFocus(pipeline: string | null, field: string | null, page: string | null = null): void {
    this.myPresence = { ...this.myPresence, pipeline, field, page };
    this.publishPresence();
  }

  setName(name: string): void {
    this.myPresence = { ...this.myPresence, name };
    this.publishPresence();
  }

  private publishPresence() {
    if (this.destroyed) return;
    this.myPresence = { ...this.myPresence, at: Date.now() };
    this.presence.set(this.me, this.myPresence as never);
  }

  /** Everyone else present, by peer. */
  others(): [string, Presence][] {
    const all = this.presence.getAllStates() as unknown as Record<string, Presence>;
    return Object.entries(all).filter(([k, v]) => k !== this.me && v && typeof v === "object");
  }

  // --- document access

  get pipelines(): LoroMap {
    return this.doc.getMap("pipelines");
  }
  get sources(): LoroMap {
    return this.doc.getMap("sources");
  }

  pipeline(name: string): LoroMap | undefined {
    const p = this.pipelines.get(name);
    return p instanceof LoroMap ? p : undefined;
  }

  pipelineNames(): string[] {
    return this.pipelines.keys().sort();
  }

  /** The pipeline as the manifest would carry it (JSON), transforms still separate. */
  pipelineJson(name: string): Record<string, unknown> | undefined {
    const p = this.pipeline(name);
    return p ? (p.toJSON() as Record<string, unknown>) : undefined;
  }

  /** Creates pipeline `name` with a starting query. */
  createPipeline(name: string, sql: string, extra: Record<string, unknown> = {}): void {
    const p = this.pipelines.ensureMergeableMap(name) as LoroMap;
    const t = p.ensureMergeableText("sql") as LoroText;
    if (t.length === 0) t.insert(0, sql);
    for (const [k, v] of Object.entries(extra)) {
      if (v && typeof v === "object" && !Array.isArray(v)) {
        const m = p.ensureMergeableMap(k) as LoroMap;
        for (const [k2, v2] of Object.entries(v)) m.set(k2, v2 as never);
      } else p.set(k, v as never);
    }
    this.doc.commit({ origin: "ui" });
  }

  deletePipeline(name: string): void {
    this.pipelines.delete(name);
    this.doc.commit({ origin: "ui" });
  }

  destroy(): void {
    this.destroyed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    try {
      this.presence.delete(this.me);
    } catch {
      /* gone */
    }
    for (const u of this.unsubs) u();
    try {
      this.ephAdaptor?.destroy();
      this.docAdaptor?.destroy();
    } catch {
      /* gone */
    }
    this.client.destroy();
    this.presence.destroy();
    this.listeners.clear();
  }
}

// --- helpers on containers (lib.mjs's ensure* with the same layout rules)

export function ensureMap(parent: LoroMap, key: string): LoroMap {
  const cur = parent.get(key);
  if (cur instanceof LoroMap) return cur;
  return parent.ensureMergeableMap(key) as LoroMap;
}
export function ensureText(parent: LoroMap, key: string): LoroText {
  const cur = parent.get(key);
  if (cur instanceof LoroText) return cur;
  if (typeof cur === "string") {
    // A scalar string where the layout wants a text: replace it, keeping its content.
    parent.delete(key);
    const t = parent.ensureMergeableText(key) as LoroText;
    t.insert(0, cur);
    return t;
  }
  return parent.ensureMergeableText(key) as LoroText;
}
export function ensureMovableList(parent: LoroMap, key: string): LoroMovableList {
  const cur = parent.get(key);
  if (cur instanceof LoroMovableList) return cur;
  return parent.ensureMergeableMovableList(key) as LoroMovableList;
}
export function ensureList(parent: LoroMap, key: string): LoroList {
  const cur = parent.get(key);
  if (cur instanceof LoroList) return cur;
  if (cur !== undefined) parent.delete(key);
  return parent.ensureMergeableList(key) as LoroList;
}

/** Sets a scalar field; "" or undefined deletes it (absent = the manifest's default). */
export function setField(doc: LoroDoc, map: LoroMap, key: string, value: string | number | boolean | undefined): void {
  if (value === undefined || value === "") {
    if (map.get(key) !== undefined) map.delete(key);
  } else if (map.get(key) !== value) {
    map.set(key, value);
  }
  doc.commit({ origin: "ui" });
}

let current: ProjectDoc | null = null;
/** One open document at a time: the project the user is in. */
export function openProject(project: string, name: string): ProjectDoc {
  if (current && current.project === project) return current;
  current?.destroy();
  current = new ProjectDoc(project, name);
  return current;
}

// Read-only hooks for the browser tests and measurements (nothing here is secret: the
// page shows the same document).
(globalThis as Record<string, unknown>).hakiriDebug = {
  docJson: () => current?.doc.toJSON(),
  state: () => current?.state,
  synced: () => current?.synced ?? false,
  others: () => current?.others(),
};
export function currentProject(): ProjectDoc | null {
  return current;
}
