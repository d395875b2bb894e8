// Tables: each context table's columns and schema history (its schema versions and schema
// events), from GET /api/projects/{p}/tables (the shape of MCP's context.describe).
import { useState } from "preact/hooks";
import { api, type TableHistory } from "../api";
import { ErrorState, Loading, NotAvailable, fmtTime, useAsync, TableHead } from "../ui";

export function Tables({ project }: { project: string }) {
  const [tables, reload] = useAsync<TableHistory[]>(() => api.tables(project), [project]);
  const [filter, setFilter] = useState("");
  const list = (tables.data ?? []).filter((t) => !filter || t.table.includes(filter));
  return (
    <section aria-labelledby="tables-title">
      <div class="page-head">
        <h1 id="tables-title">Tables</h1>
        <label for="tables-filter">Filter</label>
        <input id="tables-filter" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
      </div>
      {tables.state === "loading" && !tables.data && <Loading what="tables" />}
      {tables.state === "error" &&
        (tables.error.routeMissing ? (
          <NotAvailable feature="Table schema history" route={`GET /api/projects/${project}/tables`} />
        ) : (
          <ErrorState error={tables.error} retry={reload} />
        ))}
      {tables.data && tables.data.length === 0 && <p class="empty">No context tables yet: a table appears after its pipeline's first run.</p>}
      {list.map((t) => (
        <article key={t.table} class="card table-history" aria-labelledby={`t-${t.table}`}>
          <h2 id={`t-${t.table}`}>
            <code>context.{t.table}</code>
          </h2>
          <table>
            <caption>Columns</caption>
            <TableHead cols={["Column", "Type", "Nullable"]} />
            <tbody>
              {t.columns.map((c) => (
                <tr key={c.name}>
                  <td>{c.name}</td>
                  <td>
                    <code>{c.type}</code>
                  </td>
                  <td>{c.nullable === undefined ? "—" : c.nullable ? "yes" : "no"}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {t.versions && t.versions.length > 0 && (
            <table>
              <caption>Schema versions</caption>
              <TableHead cols={["Version", "Created", "Run", "Schema"]} />
              <tbody>
                {t.versions.map((v) => (
                  <tr key={v.version}>
                    <td>{v.version}</td>
                    <td>{fmtTime(v.created_at)}</td>
                    <td>{v.run_id ?? "—"}</td>
                    <td>
                      <code class="wrap">{v.schema}</code>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <h3>Schema events</h3>
          {t.schema_events.length === 0 ? (
            <p class="muted">None.</p>
          ) : (
            <ol class="timeline">
              {t.schema_events.map((e, i) => (
                <li key={i}>
                  <time dateTime={e.at}>{fmtTime(e.at)}</time> <span class="badge">{e.kind}</span> {e.message}
                  {e.run_id !== undefined && e.run_id !== null && <span class="muted"> (run {e.run_id})</span>}
                </li>
              ))}
            </ol>
          )}
        </article>
      ))}
    </section>
  );
}
