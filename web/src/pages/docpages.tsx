// The pages that edit the shared document: Pipelines (list + status), the pipeline editor,
// and Sources. Loaded lazily: this module pulls in loro-crdt (WASM) and loro-websocket.
import { useEffect, useMemo, useState } from "preact/hooks";
import { ApiError, api, type PipelineStatus, type Status } from "../api";
import { currentProject, openProject, type ConnState, type ProjectDoc } from "../doc";
import { href, navigate, type Route } from "../router";
import { loadSchema, schemaSource } from "../schema";
import { useDisplayName } from "../session";
import { ErrorState, Loading, StateBadge, fmtAgo, fmtTime, useAsync, TableHead } from "../ui";
import { PipelineEditor, problemsOf } from "./PipelineEditor";
import { SourcesPage } from "./Sources";

/** Re-renders on document, presence and connection changes. */
export function useProjectDoc(project: string): ProjectDoc {
  const name = useDisplayName();
  const conn = useMemo(() => openProject(project, name), [project]);
  const [, force] = useState(0);
  useEffect(() => {
    const a = conn.subscribe(() => force((x) => x + 1));
    const b = conn.subscribePresence(() => force((x) => x + 1));
    return () => {
      a();
      b();
    };
  }, [conn]);
  useEffect(() => conn.setName(name), [conn, name]);
  return conn;
}

function ConnBanner({ conn, retry }: { conn: ProjectDoc; retry: () => void }) {
  const state: ConnState = conn.state;
  if (conn.refused) {
    return (
      <div class="banner banner-error" role="alert" data-banner="refused">
        The control plane refused your edits: your token does not allow editing this project, or it expired. Your last changes are not
        saved. <a href={href.signin("expired", location.pathname)}>Sign in again</a>
      </div>
    );
  }
  switch (state.kind) {
    case "joined":
      return conn.readOnly ? (
        <p class="banner" role="status" data-banner="read-only">
          Read-only: you may read this project but not edit it.
        </p>
      ) : null;
    case "offline":
      return (
        <div class="banner banner-error" role="alert" data-banner="sync-offline">
          {state.message} Your edits are kept and sent when the connection is back.{" "}
          <button type="button" onClick={retry}>
            Retry now
          </button>
        </div>
      );
    case "reconnecting":
      return (
        <p class="banner banner-warn" role="status" data-banner="sync-reconnecting">
          Reconnecting to the shared document…
        </p>
      );
    default:
      return null;
  }
}

export function DocPage({ route }: { route: Route & { project: string } }) {
  const conn = useProjectDoc(route.project);
  const [, setSchemaReady] = useState(false);
  useEffect(() => {
    void loadSchema().then(() => setSchemaReady(true));
  }, []);
  useEffect(() => {
    const pipeline = route.page === "editor" ? route.pipeline : null;
    conn.setFocus(pipeline, null, route.page);
  }, [conn, route]);
  useEffect(() => () => currentProject()?.setFocus(null, null, null), []);
  // Without `edit` the form is read-only (the server would refuse the edits anyway).
  useEffect(() => {
    let live = true;
    api.projects().then(
      (ps) => {
        const mine = ps.find((p) => p.id === route.project);
        if (live && mine) conn.setReadOnly(!mine.rights.includes("edit"));
      },
      () => {},
    );
    return () => {
      live = false;
    };
  }, [conn]);

  const st = conn.state;
  if (st.kind === "error") {
    return (
      <ErrorState
        error={new ApiError(/not allow/.test(st.message) ? "forbidden" : /expired|not a valid|no token/.test(st.message) ? "unauthenticated" : "internal", st.message)}
        retry={() => conn.retry()}
      />
    );
  }
  if (!conn.synced) {
    if (st.kind === "offline") {
      return (
        <div class="error-state" role="alert" data-kind="unreachable">
          <h2>The control plane is unreachable</h2>
          <p class="error-message">{st.message}</p>
          <button type="button" onClick={() => conn.retry()}>
            Retry
          </button>
        </div>
      );
    }
    return <Loading what={`the shared document of ${route.project}`} />;
  }
  return (
    <>
      <ConnBanner conn={conn} retry={() => conn.retry()} />
      {route.page === "pipelines" && <PipelinesPage conn={conn} project={route.project} />}
      {route.page === "editor" && <PipelineEditor conn={conn} project={route.project} name={route.pipeline} />}
      {route.page === "sources" && <SourcesPage conn={conn} project={route.project} />}
    </>
  );
}

export function Editors({ conn, pipeline, field }: { conn: ProjectDoc; pipeline: string; field?: string }) {
  const here = conn.others().filter(([, p]) => p.pipeline === pipeline && (field === undefined || p.field === field));
  if (!here.length) return null;
  return (
    <span class="presence" aria-live="polite">
      {here.map(([peer, p]) => (
        <span key={peer} class="presence-chip" style={{ "--c": p.color } as never} title={p.field ? `${p.name} is editing ${p.field}` : `${p.name} is here`}>
          {p.name}
          {field !== undefined ? " is editing" : p.field ? ` · ${p.field}` : ""}
        </span>
      ))}
    </span>
  );
}

const TEMPLATE = (name: string, source?: string, table?: string) =>
  `INSERT INTO context.${name} SELECT * FROM ${source ?? "source"}.${table ?? "table"}`;

function NewPipeline({ conn, project }: { conn: ProjectDoc; project: string }) {
  const [name, setName] = useState("");
  const [err, setErr] = useState<string | null>(null);
  const sources = conn.sources.keys();
  const create = (e: Event) => {
    e.preventDefault();
    const n = name.trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(n)) {
      setErr("A pipeline name is letters, digits and underscores, starting with a letter or underscore (at most 63).");
      return;
    }
    if (conn.pipeline(n)) {
      setErr(`There is a pipeline ${n} already.`);
      return;
    }
    const src = sources[0];
    let table: string | undefined;
    if (src) {
      const t = conn.sources.get(src);
      const tables = t && typeof t === "object" && "get" in (t as object) ? (t as { get(k: string): unknown }).get("tables") : undefined;
      if (tables && typeof tables === "object" && "keys" in (tables as object)) table = (tables as { keys(): string[] }).keys()[0];
    }
    conn.createPipeline(n, TEMPLATE(n, src, table));
    navigate(href.editor(project, n));
  };
  return (
    <form class="new-pipeline card" onSubmit={create} aria-labelledby="new-pipeline-title">
      <h2 id="new-pipeline-title">New pipeline</h2>
      <label for="new-pipeline-name">Name</label>
      <input
        id="new-pipeline-name"
        value={name}
        required
        aria-invalid={err ? "true" : undefined}
        aria-describedby={err ? "new-pipeline-error" : undefined}
        onInput={(e) => {
          setName((e.target as HTMLInputElement).value);
          setErr(null);
        }}
      />
      <button type="submit" class="primary" disabled={conn.readOnly}>
        Create pipeline
      </button>
      {err && (
        <p id="new-pipeline-error" class="error-message" role="alert">
          {err}
        </p>
      )}
    </form>
  );
}

function runCell(r: PipelineStatus["last_run"]) {
  if (!r) return <span class="muted">never</span>;
  return (
    <span title={r.error ?? undefined}>
      <StateBadge state={r.state} /> {fmtAgo(r.finished_at ?? r.assigned_at)}
      {r.rows !== null && r.rows !== undefined ? ` · ${r.rows} rows` : ""}
    </span>
  );
}

function PipelinesPage({ conn, project }: { conn: ProjectDoc; project: string }) {
  const [status, reloadStatus] = useAsync<Status>(() => api.status(project), [project], 5000);
  const [runMsg, setRunMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const names = conn.pipelineNames();
  const all = (conn.pipelines.toJSON() ?? {}) as Record<string, Record<string, unknown>>;
  const byName = new Map((status.data?.pipelines ?? []).map((p) => [p.name, p]));
  const runningOn = new Map<string, string>();
  for (const n of status.data?.nodes ?? []) for (const p of n.running) runningOn.set(p, n.id);

  const runNow = async (name: string) => {
    setRunMsg(null);
    try {
      const r = await api.runNow(project, name);
      setRunMsg({ ok: true, text: `Run of ${name} queued (${r.slot}).` });
      reloadStatus();
    } catch (e) {
      setRunMsg({ ok: false, text: `${name}: ${(e as Error).message}` });
    }
  };

  return (
    <section aria-labelledby="pipelines-title">
      <div class="page-head">
        <h1 id="pipelines-title">Pipelines</h1>
        <span class="muted">
          {names.length} in the document
          {status.data ? ` · applied version ${status.data.applied_version ?? "none yet"}` : ""}
          {` · schema: ${schemaSource}`}
        </span>
      </div>
      {status.state === "error" && status.error.kind !== "not_found" && (
        <div class="banner banner-warn" role="alert">
          Status unavailable: {status.error.message}{" "}
          <button type="button" onClick={reloadStatus}>
            Retry
          </button>
        </div>
      )}
      {runMsg && (
        <p role={runMsg.ok ? "status" : "alert"} class={runMsg.ok ? "ok-message" : "error-message"}>
          {runMsg.text}
        </p>
      )}
      {names.length === 0 ? (
        <p class="empty">No pipelines yet: create one below.</p>
      ) : (
        <div class="table-wrap">
          <table class="pipelines">
            <caption class="sr-only">Pipelines of {project}, their placement, last run, node and lease</caption>
            <TableHead cols={["Name", "Check", "Applied", "Placement", "Schedule", "Last run", "Next run", "Node", "Lease", "Editing"]} actions="Actions" />
            <tbody>
              {names.map((n) => {
                const doc = all[n] ?? {};
                const st = byName.get(n);
                const problems = problemsOf(n, doc);
                const sched = doc.schedule as Record<string, unknown> | undefined;
                const lease = st?.lease?.node ?? runningOn.get(n);
                return (
                  <tr key={n} data-pipeline={n}>
                    <th scope="row">
                      <a href={href.editor(project, n)}>{n}</a>
                    </th>
                    <td>
                      {problems.length === 0 ? (
                        <span class="ok" data-valid="true">
                          valid
                        </span>
                      ) : (
                        <span class="bad" data-valid="false" title={problems.map((p) => `${p.path.join(".")}: ${p.message}`).join("\n")}>
                          {problems.length} problem{problems.length > 1 ? "s" : ""}
                        </span>
                      )}
                    </td>
                    <td>{st ? "yes" : <span class="muted">not yet</span>}</td>
                    <td>{String(doc.placement ?? st?.placement ?? "any")}</td>
                    <td>{sched ? String(sched.every ?? sched.cron ?? "—") : <span class="muted">manual</span>}</td>
                    <td>{st ? runCell(st.last_run) : <span class="muted">—</span>}</td>
                    <td>{st?.next_run ? fmtTime(st.next_run) : <span class="muted" title="The control plane does not report next runs yet">—</span>}</td>
                    <td>{st?.last_run?.node ?? <span class="muted">—</span>}</td>
                    <td>{lease ?? <span class="muted">—</span>}</td>
                    <td>
                      <Editors conn={conn} pipeline={n} />
                    </td>
                    <td class="actions">
                      {st && !st.note && (
                        <button type="button" onClick={() => runNow(n)} aria-label={`Run ${n} now`}>
                          Run now
                        </button>
                      )}
                      {st?.note && <span class="muted" title={st.note}>not dispatched</span>}
                      <a href={href.runs(project, n)} aria-label={`Runs of ${n}`}>
                        Runs
                      </a>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <NewPipeline conn={conn} project={project} />
      {status.data && status.data.nodes.length > 0 && (
        <section aria-labelledby="nodes-title" class="card">
          <h2 id="nodes-title">Nodes</h2>
          <ul class="nodes">
            {status.data.nodes.map((n) => (
              <li key={n.id}>
                <strong>{n.id}</strong> <StateBadge state={n.alive ? "alive" : "gone"} /> last seen {fmtAgo(n.last_seen)} · {n.runs} runs ·{" "}
                {n.failed} failed{n.running.length ? ` · running ${n.running.join(", ")}` : ""}
              </li>
            ))}
          </ul>
        </section>
      )}
    </section>
  );
}
