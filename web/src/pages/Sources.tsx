// Sources: `sources.<name>` maps of the shared document, `{type, <option>: value | map}`.
// Options are edited as dotted keys (`tables.orders.path`), which are nested maps in the
// document and nested tables in the manifest.
import { useState } from "preact/hooks";
import type { LoroMap } from "loro-crdt";
import { ensureMap, LoroMap as LMap, setField, type ProjectDoc } from "../doc";
import { def, validate, type Problem } from "../schema";
import { TableHead } from "../ui";

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
const TYPES = ["http", "postgres", "file", "s3", "github", "wasm", "delta"];

function flatten(o: Record<string, unknown>, prefix = ""): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const [k, v] of Object.entries(o)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v as Record<string, unknown>, key));
    else out.push([key, v]);
  }
  return out.sort((a, b) => a[0].localeCompare(b[0]));
}

function setOption(conn: ProjectDoc, src: LoroMap, dotted: string, value: string | undefined) {
  const parts = dotted.split(".").filter(Boolean);
  if (!parts.length) return;
  const chain: [LoroMap, string][] = [];
  let m = src;
  for (const part of parts.slice(0, -1)) {
    if (value === undefined) {
      const next = m.get(part);
      if (!(next instanceof LMap)) return;
      chain.push([m, part]);
      m = next;
    } else {
      chain.push([m, part]);
      m = ensureMap(m, part);
    }
  }
  setField(conn.doc, m, parts[parts.length - 1], value);
  // Drop the maps a deletion left empty.
  for (let i = chain.length - 1; i >= 0; i--) {
    const [parent, key] = chain[i];
    const child = parent.get(key);
    if (child instanceof LMap && child.size === 0) parent.delete(key);
    else break;
  }
  conn.doc.commit({ origin: "ui" });
}

function Source({ conn, name, json }: { conn: ProjectDoc; name: string; json: Record<string, unknown> }) {
  const src = conn.sources.get(name);
  const [k, setK] = useState("");
  const [v, setV] = useState("");
  if (!(src instanceof LMap)) return null;
  const problems: Problem[] = validate(json, def("SourceDoc"));
  const opts = flatten(json).filter(([key]) => key !== "type");
  const base = `source-${name}`;
  const readOnly = conn.readOnly;
  return (
    <fieldset class="group source" data-source={name}>
      <legend>
        <code>{name}</code>
      </legend>
      <div class="field">
        <label for={`${base}-type`}>Type</label>
        <input
          id={`${base}-type`}
          list="source-types"
          value={String(json.type ?? "")}
          disabled={readOnly}
          aria-invalid={problems.some((p) => p.path[0] === "type") ? "true" : undefined}
          onInput={(e) => setField(conn.doc, src, "type", (e.target as HTMLInputElement).value)}
        />
      </div>
      {opts.length > 0 && (
        <table class="options">
          <caption class="sr-only">Options of {name}</caption>
          <TableHead cols={["Option", "Value"]} actions="Actions" />
          <tbody>
            {opts.map(([key, val]) => (
              <tr key={key}>
                <th scope="row">
                  <label for={`${base}-${key}`}>{key}</label>
                </th>
                <td>
                  <input
                    id={`${base}-${key}`}
                    value={String(val ?? "")}
                    disabled={readOnly}
                    onInput={(e) => setOption(conn, src, key, (e.target as HTMLInputElement).value || undefined)}
                  />
                </td>
                <td>
                  <button type="button" aria-label={`Remove option ${key} of ${name}`} disabled={readOnly} onClick={() => setOption(conn, src, key, undefined)}>
                    Remove
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          if (!k.trim()) return;
          setOption(conn, src, k.trim(), v);
          setK("");
          setV("");
        }}
      >
        <label for={`${base}-new-key`}>Option</label>
        <input id={`${base}-new-key`} placeholder="tables.orders.path" value={k} disabled={readOnly} onInput={(e) => setK((e.target as HTMLInputElement).value)} />
        <label for={`${base}-new-value`}>Value</label>
        <input id={`${base}-new-value`} value={v} disabled={readOnly} onInput={(e) => setV((e.target as HTMLInputElement).value)} />
        <button type="submit" disabled={!k.trim() || readOnly}>
          Add option
        </button>
      </form>
      {problems.length > 0 && (
        <ul class="field-problems" role="alert">
          {problems.map((p, i) => (
            <li key={i}>
              {p.path.join(".") || name}: {p.message}
            </li>
          ))}
        </ul>
      )}
      <button
        type="button"
        class="danger"
        disabled={readOnly}
        onClick={() => {
          if (confirm(`Delete source ${name} from the shared document?`)) {
            conn.sources.delete(name);
            conn.doc.commit({ origin: "ui" });
          }
        }}
      >
        Delete source {name}
      </button>
    </fieldset>
  );
}

export function SourcesPage({ conn, project }: { conn: ProjectDoc; project: string }) {
  const all = (conn.sources.toJSON() ?? {}) as Record<string, Record<string, unknown>>;
  const names = Object.keys(all).sort();
  const [name, setName] = useState("");
  const [type, setType] = useState("file");
  const [err, setErr] = useState<string | null>(null);
  const readOnly = conn.readOnly;
  const create = (e: Event) => {
    e.preventDefault();
    const n = name.trim();
    if (!NAME.test(n)) return setErr("A source name is letters, digits and underscores, starting with a letter or underscore.");
    if (all[n]) return setErr(`There is a source ${n} already.`);
    const m = conn.sources.ensureMergeableMap(n) as LoroMap;
    m.set("type", type);
    conn.doc.commit({ origin: "ui" });
    setName("");
    setErr(null);
  };
  return (
    <section aria-labelledby="sources-title">
      <div class="page-head">
        <h1 id="sources-title">Sources</h1>
        <span class="muted">
          {names.length} source{names.length === 1 ? "" : "s"} in {project}'s document
        </span>
      </div>
      <datalist id="source-types">
        {TYPES.map((t) => (
          <option key={t} value={t} />
        ))}
      </datalist>
      {names.length === 0 && <p class="empty">No sources yet: a pipeline reads from a source, so add one below.</p>}
      {names.map((n) => (
        <Source key={n} conn={conn} name={n} json={all[n]} />
      ))}
      <form class="card" onSubmit={create} aria-labelledby="new-source-title">
        <h2 id="new-source-title">New source</h2>
        <label for="new-source-name">Name</label>
        <input id="new-source-name" value={name} required disabled={readOnly} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <label for="new-source-type">Type</label>
        <input id="new-source-type" list="source-types" value={type} required disabled={readOnly} onInput={(e) => setType((e.target as HTMLInputElement).value)} />
        <button type="submit" class="primary" disabled={readOnly}>
          Add source
        </button>
        {err && (
          <p class="error-message" role="alert">
            {err}
          </p>
        )}
      </form>
    </section>
  );
}
