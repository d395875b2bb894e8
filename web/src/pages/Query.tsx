// The query console: a read-only query over the context store, sent through the control
// plane to a node (POST /api/projects/{p}/query {sql}); results as a table, CSV download,
// and cancel (the request is aborted).
import { useRef, useState } from "preact/hooks";
import { ApiError, api, type QueryResult } from "../api";
import { SqlEditor } from "../components/SqlEditor";
import { ErrorState, NotAvailable, fmtDuration } from "../ui";
import { cell, columnNames, rowValues, toCsv } from "../csv";

const SHOWN = 1000;

const KEY = (p: string) => `hakiri.query.${p}`;

export function Query({ project }: { project: string }) {
  const [sql, setSql] = useState(() => {
    try {
      return localStorage.getItem(KEY(project)) ?? "SELECT * FROM context.tables";
    } catch {
      return "SELECT * FROM context.tables";
    }
  });
  const [state, setState] = useState<
    { kind: "idle" } | { kind: "running"; since: number } | { kind: "done"; result: QueryResult; ms: number } | { kind: "error"; error: ApiError } | { kind: "cancelled" }
  >({ kind: "idle" });
  const ctl = useRef<AbortController | null>(null);

  const run = async () => {
    if (state.kind === "running" || !sql.trim()) return;
    try {
      localStorage.setItem(KEY(project), sql);
    } catch {
      /* not kept */
    }
    const c = new AbortController();
    ctl.current = c;
    const since = performance.now();
    setState({ kind: "running", since });
    try {
      const result = await api.query(project, sql, c.signal);
      if (ctl.current === c) setState({ kind: "done", result, ms: Math.round(performance.now() - since) });
    } catch (e) {
      if (ctl.current !== c) return;
      const err = e instanceof ApiError ? e : new ApiError("internal", String(e));
      setState(err.kind === "aborted" ? { kind: "cancelled" } : { kind: "error", error: err });
    }
    ctl.current = null;
  };
  const cancel = () => {
    ctl.current?.abort();
  };
  const download = () => {
    if (state.kind !== "done") return;
    const blob = new Blob([toCsv(state.result)], { type: "text/csv;charset=utf-8" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${project}-query.csv`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  };

  const r = state.kind === "done" ? state.result : null;
  const names = r ? columnNames(r) : [];
  return (
    <section aria-labelledby="query-title" class="query">
      <h1 id="query-title">Query console</h1>
      <p class="help" id="query-help">
        Read-only SQL over {project}'s context store, run on one of its nodes. Ctrl+Enter runs.
      </p>
      <SqlEditor id="query-sql" label="Query" describedBy="query-help" value={sql} onChange={setSql} onSubmit={run} minLines={5} />
      <div class="toolbar">
        <button type="button" class="primary" onClick={run} disabled={state.kind === "running" || !sql.trim()} id="query-run">
          Run
        </button>
        <button type="button" onClick={cancel} disabled={state.kind !== "running"} id="query-cancel">
          Cancel
        </button>
        <button type="button" onClick={download} disabled={!r} id="query-csv">
          Download CSV
        </button>
        <span role="status" aria-live="polite" class="muted" data-query-state={state.kind}>
          {state.kind === "running" && "Running…"}
          {state.kind === "cancelled" && "Cancelled."}
          {r && `${r.row_count ?? r.rows.length} row(s)${r.truncated ? " (truncated by the server)" : ""} in ${fmtDuration(state.kind === "done" ? state.ms : null)}`}
        </span>
      </div>
      {state.kind === "error" &&
        (state.error.routeMissing ? (
          <NotAvailable feature="The query console" route={`POST /api/projects/${project}/query`} />
        ) : (
          <div class="error-state" role="alert" data-query="error">
            <h2>{state.error.kind === "unreachable" ? "The control plane is unreachable" : "The query failed"}</h2>
            <p class="error-message">{state.error.message}</p>
          </div>
        ))}
      {state.kind === "error" && state.error.kind === "unauthenticated" && <ErrorState error={state.error} />}
      {r && (
        <div class="table-wrap result">
          <table class="result-table">
            <caption class="sr-only">Query result</caption>
            <thead>
              <tr>
                {r.columns.map((c, i) => (
                  <th key={i} scope="col" title={typeof c === "string" ? undefined : c.type}>
                    {typeof c === "string" ? c : c.name}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {r.rows.slice(0, SHOWN).map((row, i) => (
                <tr key={i}>
                  {rowValues(r, row, names).map((v, j) => (
                    <td key={j} class={v === null ? "null" : typeof v === "number" ? "num" : ""}>
                      {v === null ? "NULL" : cell(v)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
          {r.rows.length > SHOWN && <p class="muted">Showing the first {SHOWN} of {r.rows.length} rows; the CSV has them all.</p>}
        </div>
      )}
    </section>
  );
}
