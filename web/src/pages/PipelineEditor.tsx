// The pipeline editor: a form for every clause of a pipeline, each control bound live to the
// shared document (a change is committed and sent at once; remote changes re-render the
// form), a SQL editor bound character by character to the pipeline's LoroText, presence
// (who edits which field), and inline problems from the manifest's JSON Schema.
import { useEffect, useState } from "preact/hooks";
import type { LoroMap } from "loro-crdt";
import { api, type Status } from "../api";
import { ensureList, ensureMap, ensureMovableList, ensureText, LoroMap as LMap, LoroMovableList, LoroText, setField, type ProjectDoc } from "../doc";
import { href, navigate } from "../router";
import { describeField, enumOf, queryStart, validatePipeline, type Problem } from "../schema";
import { ErrorState, Loading, useAsync, useModule } from "../ui";
import { Editors } from "./docpages";

const loadSqlEditor = () => import("../components/SqlEditor");

export function problemsOf(name: string, json: Record<string, unknown>): Problem[] {
  return validatePipeline(name, json);
}

type Kind = "text" | "select" | "int";
interface FieldDef {
  path: string;
  label: string;
  kind: Kind;
  /** $def of the parent, for the description and the enum. */
  schemaDef: string;
  placeholder?: string;
  defaultLabel?: string;
  list?: string;
}

const WRITING: FieldDef[] = [
  { path: "mode", label: "Write mode", kind: "select", schemaDef: "PipelineDoc", defaultLabel: "default (replace for a snapshot cursor, else append)" },
  { path: "on_schema_change", label: "On schema change", kind: "select", schemaDef: "PipelineDoc", defaultLabel: "default (evolve)" },
  { path: "checkpoint_pages", label: "Checkpoint every N pages", kind: "int", schemaDef: "PipelineDoc", placeholder: "10" },
];
const CURSOR: FieldDef[] = [
  { path: "cursor.kind", label: "Cursor kind", kind: "select", schemaDef: "CursorDoc", defaultLabel: "none" },
  { path: "cursor.column", label: "Cursor column", kind: "text", schemaDef: "CursorDoc", placeholder: "id" },
  { path: "cursor.initial", label: "Initial value", kind: "text", schemaDef: "CursorDoc", placeholder: "0" },
  { path: "cursor.lag", label: "Lag", kind: "text", schemaDef: "CursorDoc", placeholder: "1 hour" },
  { path: "cursor.on_null", label: "On NULL cursor", kind: "select", schemaDef: "CursorDoc", defaultLabel: "default (fail)" },
];
const SCHEDULE: FieldDef[] = [
  { path: "schedule.every", label: "Every", kind: "text", schemaDef: "Schedule", placeholder: "15 minutes" },
  { path: "schedule.cron", label: "Cron", kind: "text", schemaDef: "Schedule", placeholder: "0 * * * *" },
  { path: "schedule.tz", label: "Time zone", kind: "text", schemaDef: "Schedule", placeholder: "Europe/Berlin" },
  { path: "schedule.jitter", label: "Jitter", kind: "text", schemaDef: "Schedule", placeholder: "30 seconds" },
  { path: "schedule.on_missed", label: "On missed slots", kind: "select", schemaDef: "Schedule", defaultLabel: "default (skip)" },
  { path: "schedule.retries", label: "Retries", kind: "int", schemaDef: "Schedule", placeholder: "0" },
  { path: "schedule.backoff", label: "Backoff", kind: "text", schemaDef: "Schedule", placeholder: "1 minute" },
  { path: "schedule.suspend_after_failures", label: "Suspend after failures", kind: "int", schemaDef: "Schedule" },
];
const PLACEMENT: FieldDef = { path: "placement", label: "Placement", kind: "text", schemaDef: "PipelineDoc", placeholder: "any", list: "placements" };
const KNOWN = new Set(["sql", "transforms", "key", "mode", "on_schema_change", "checkpoint_pages", "cursor", "schedule", "placement"]);

const fid = (path: string) => `field-${path.replace(/\./g, "-")}`;

interface Ctx {
  conn: ProjectDoc;
  p: LoroMap;
  name: string;
  json: Record<string, unknown>;
  problems: Problem[];
  readOnly: boolean;
}

function read(json: Record<string, unknown>, path: string): unknown {
  let cur: unknown = json;
  for (const k of path.split(".")) cur = cur && typeof cur === "object" ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

function problemsAt(problems: Problem[], path: string): Problem[] {
  return problems.filter((p) => {
    const j = p.path.join(".");
    return j === path || j.startsWith(`${path}.`);
  });
}

function write(ctx: Ctx, path: string, value: string | number | undefined) {
  const { conn, p } = ctx;
  const [head, tail] = path.split(".");
  if (!tail) {
    setField(conn.doc, p, head, value);
    return;
  }
  const cur = p.get(head);
  if ((value === undefined || value === "") && !(cur instanceof LMap)) return;
  const m = ensureMap(p, head);
  setField(conn.doc, m, tail, value);
  if (m.size === 0) {
    // The last clause of the group went: the group goes too (an empty table is noise).
    p.delete(head);
    conn.doc.commit({ origin: "ui" });
  }
}

function FieldProblems({ id, problems }: { id: string; problems: Problem[] }) {
  if (!problems.length) return null;
  return (
    <ul id={id} class="field-problems" role="alert">
      {problems.map((p, i) => (
        <li key={i}>{p.message}</li>
      ))}
    </ul>
  );
}

function Field({ ctx, def }: { ctx: Ctx; def: FieldDef }) {
  const id = fid(def.path);
  const raw = read(ctx.json, def.path);
  const value = raw === undefined || raw === null ? "" : String(raw);
  const probs = problemsAt(ctx.problems, def.path);
  const key = def.path.split(".").pop()!;
  const help = describeField(def.schemaDef, key);
  const helpId = `${id}-help`;
  const errId = `${id}-problems`;
  const describedBy = [help ? helpId : "", probs.length ? errId : ""].filter(Boolean).join(" ") || undefined;
  const focus = () => ctx.conn.setFocus(ctx.name, def.path, "editor");
  const blur = () => ctx.conn.setFocus(ctx.name, null, "editor");
  const onInput = (e: Event) => {
    const v = (e.target as HTMLInputElement | HTMLSelectElement).value;
    if (def.kind === "int") write(ctx, def.path, /^\s*\d+\s*$/.test(v) ? Number(v) : v);
    else write(ctx, def.path, v);
  };
  const common = {
    id,
    name: def.path,
    disabled: ctx.readOnly,
    "aria-describedby": describedBy,
    "aria-invalid": probs.length ? ("true" as const) : undefined,
    onFocus: focus,
    onBlur: blur,
  };
  let control;
  if (def.kind === "select") {
    const options = enumOf(def.schemaDef, key);
    control = (
      <select {...common} value={value} onChange={onInput}>
        <option value="">{def.defaultLabel ?? "default"}</option>
        {options.map((o) => (
          <option key={o} value={o}>
            {o}
          </option>
        ))}
        {value && !options.includes(value) && <option value={value}>{value} (not valid)</option>}
      </select>
    );
  } else {
    control = (
      <input
        {...common}
        type="text"
        inputMode={def.kind === "int" ? "numeric" : undefined}
        autocomplete="off"
        spellcheck={false}
        placeholder={def.placeholder}
        list={def.list}
        value={value}
        onInput={onInput}
      />
    );
  }
  return (
    <div class={`field${probs.length ? " has-problems" : ""}`} data-field={def.path}>
      <label for={id}>
        {def.label} <Editors conn={ctx.conn} pipeline={ctx.name} field={def.path} />
      </label>
      {control}
      {help && (
        <p id={helpId} class="help">
          {help}
        </p>
      )}
      <FieldProblems id={errId} problems={probs} />
    </div>
  );
}

/** `key`: a list of columns, edited as "a, b" and written when the field is left. */
function KeyField({ ctx }: { ctx: Ctx }) {
  const raw = ctx.json.key;
  const shown = Array.isArray(raw) ? raw.join(", ") : typeof raw === "string" ? raw : "";
  const [draft, setDraft] = useState<string | null>(null);
  const probs = problemsAt(ctx.problems, "key");
  const id = fid("key");
  const commit = () => {
    if (draft === null) return;
    const cols = draft
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    if (cols.length === 0) {
      if (ctx.p.get("key") !== undefined) ctx.p.delete("key");
    } else {
      const l = ensureList(ctx.p, "key");
      const cur = l.toJSON() as unknown[];
      if (JSON.stringify(cur) !== JSON.stringify(cols)) {
        l.clear();
        for (const c of cols) l.push(c);
      }
    }
    ctx.conn.doc.commit({ origin: "ui" });
    setDraft(null);
  };
  return (
    <div class={`field${probs.length ? " has-problems" : ""}`} data-field="key">
      <label for={id}>
        Key columns <Editors conn={ctx.conn} pipeline={ctx.name} field="key" />
      </label>
      <input
        id={id}
        type="text"
        autocomplete="off"
        disabled={ctx.readOnly}
        placeholder="id, region"
        value={draft ?? shown}
        aria-describedby={`${id}-help${probs.length ? ` ${id}-problems` : ""}`}
        aria-invalid={probs.length ? "true" : undefined}
        onFocus={() => ctx.conn.setFocus(ctx.name, "key", "editor")}
        onInput={(e) => setDraft((e.target as HTMLInputElement).value)}
        onBlur={() => {
          commit();
          ctx.conn.setFocus(ctx.name, null, "editor");
        }}
        onKeyDown={(e) => e.key === "Enter" && (e.preventDefault(), commit())}
      />
      <p id={`${id}-help`} class="help">
        For write mode merge: the columns that identify a row, comma-separated (saved when you leave the field or press Enter).
      </p>
      <FieldProblems id={`${id}-problems`} problems={probs} />
    </div>
  );
}

function Transforms({ ctx }: { ctx: Ctx }) {
  const cur = ctx.p.get("transforms");
  const list = cur instanceof LoroMovableList ? cur : undefined;
  const items = (list ? list.toJSON() : []) as unknown[];
  const [adding, setAdding] = useState("");
  const probs = problemsAt(ctx.problems, "transforms");
  const commit = () => ctx.conn.doc.commit({ origin: "ui" });
  const add = (e: Event) => {
    e.preventDefault();
    if (!adding.trim()) return;
    ensureMovableList(ctx.p, "transforms").push(adding.trim());
    commit();
    setAdding("");
  };
  const move = (from: number, to: number) => {
    if (!list || to < 0 || to >= items.length) return;
    list.move(from, to);
    commit();
    // Keep the focus on the moved item's same button.
    requestAnimationFrame(() => document.getElementById(`transform-${to}-${to < from ? "up" : "down"}`)?.focus());
  };
  return (
    <fieldset class="group transforms" data-field="transforms">
      <legend>
        Transforms <Editors conn={ctx.conn} pipeline={ctx.name} field="transforms" />
      </legend>
      <p class="help" id="transforms-help">
        Computed columns apply adds to the query's output, in this order: <code>upper(name) AS name_upper</code>.
      </p>
      {items.length > 0 && (
        <ol class="transform-list">
          {items.map((t, i) => {
            const ip = problemsAt(ctx.problems, `transforms.${i}`);
            return (
              <li key={i}>
                <label class="sr-only" for={`transform-${i}`}>
                  Transform {i + 1}
                </label>
                <input
                  id={`transform-${i}`}
                  type="text"
                  value={String(t ?? "")}
                  disabled={ctx.readOnly}
                  aria-invalid={ip.length ? "true" : undefined}
                  onFocus={() => ctx.conn.setFocus(ctx.name, "transforms", "editor")}
                  onBlur={() => ctx.conn.setFocus(ctx.name, null, "editor")}
                  onInput={(e) => {
                    list?.set(i, (e.target as HTMLInputElement).value);
                    commit();
                  }}
                />
                <button type="button" id={`transform-${i}-up`} aria-label={`Move transform ${i + 1} up`} disabled={i === 0 || ctx.readOnly} onClick={() => move(i, i - 1)}>
                  ↑
                </button>
                <button
                  type="button"
                  id={`transform-${i}-down`}
                  aria-label={`Move transform ${i + 1} down`}
                  disabled={i === items.length - 1 || ctx.readOnly}
                  onClick={() => move(i, i + 1)}
                >
                  ↓
                </button>
                <button
                  type="button"
                  aria-label={`Remove transform ${i + 1}`}
                  disabled={ctx.readOnly}
                  onClick={() => {
                    list?.delete(i, 1);
                    commit();
                  }}
                >
                  Remove
                </button>
                {ip.length > 0 && <FieldProblems id={`transform-${i}-problems`} problems={ip} />}
              </li>
            );
          })}
        </ol>
      )}
      <form class="inline-form" onSubmit={add}>
        <label for="transform-new">Add a transform</label>
        <input id="transform-new" type="text" value={adding} disabled={ctx.readOnly} placeholder="expression AS name" onInput={(e) => setAdding((e.target as HTMLInputElement).value)} />
        <button type="submit" disabled={!adding.trim() || ctx.readOnly}>
          Add
        </button>
      </form>
      <FieldProblems id="transforms-problems" problems={probs.filter((p) => p.path.length === 1)} />
    </fieldset>
  );
}

function SqlField({ ctx }: { ctx: Ctx }) {
  const { mod, error } = useModule(loadSqlEditor);
  const probs = problemsAt(ctx.problems, "sql");
  const [text, setText] = useState<LoroText | undefined>(() => {
    const cur = ctx.p.get("sql");
    return cur instanceof LoroText ? cur : undefined;
  });
  useEffect(() => {
    // A pipeline's sql is a LoroText; make it one if it is missing or a plain string.
    const cur = ctx.p.get("sql");
    if (cur instanceof LoroText) {
      if (cur.id !== text?.id) setText(cur);
    } else if (!ctx.readOnly) {
      const t = ensureText(ctx.p, "sql");
      ctx.conn.doc.commit({ origin: "ui" });
      setText(t);
    }
  }, [ctx.json.sql === undefined, ctx.p.id]);
  return (
    <div class={`field sql-field${probs.length ? " has-problems" : ""}`} data-field="sql">
      <label for={fid("sql")} id="sql-label">
        SQL <Editors conn={ctx.conn} pipeline={ctx.name} field="sql" />
      </label>
      <p class="help" id="sql-help">
        <code>INSERT INTO context.&lt;table&gt; SELECT … FROM &lt;source&gt;.&lt;table&gt;</code>, with <code>$cursor</code> where the cursor goes. Edits merge
        character by character with everyone else's.
      </p>
      {error && <ErrorState error={error} />}
      {!mod && !error && <Loading what="the SQL editor" />}
      {mod && text && (
        <mod.SqlEditor
          id={fid("sql")}
          label="SQL"
          describedBy={`sql-help${probs.length ? " sql-problems" : ""}`}
          invalid={probs.length > 0}
          doc={ctx.conn.doc}
          text={text}
          readOnly={ctx.readOnly}
          minLines={4}
          onFocus={() => ctx.conn.setFocus(ctx.name, "sql", "editor")}
          onBlur={() => ctx.conn.setFocus(ctx.name, null, "editor")}
        />
      )}
      <FieldProblems id="sql-problems" problems={probs} />
    </div>
  );
}

function Unknown({ ctx }: { ctx: Ctx }) {
  const extra = Object.keys(ctx.json).filter((k) => !KNOWN.has(k));
  if (!extra.length) return null;
  return (
    <fieldset class="group">
      <legend>Other fields</legend>
      <ul>
        {extra.map((k) => (
          <li key={k} data-field={k}>
            <code>{k}</code> = <code>{JSON.stringify(ctx.json[k])}</code>{" "}
            <button
              type="button"
              aria-label={`Remove field ${k}`}
              disabled={ctx.readOnly}
              onClick={() => {
                ctx.p.delete(k);
                ctx.conn.doc.commit({ origin: "ui" });
              }}
            >
              Remove
            </button>
            <FieldProblems id={`unknown-${k}`} problems={problemsAt(ctx.problems, k)} />
          </li>
        ))}
      </ul>
    </fieldset>
  );
}

function composed(json: Record<string, unknown>): string | null {
  const sql = typeof json.sql === "string" ? json.sql : "";
  const t = Array.isArray(json.transforms) ? (json.transforms as string[]) : [];
  if (!t.length) return null;
  const at = queryStart(sql);
  if (at === undefined) return null;
  return `${sql.slice(0, at).trimEnd()} SELECT input.*, ${t.join(", ")} FROM (${sql.slice(at).trim()}) AS input`;
}

export function PipelineEditor({ conn, project, name }: { conn: ProjectDoc; project: string; name: string }) {
  const p = conn.pipeline(name);
  const [status] = useAsync<Status>(() => api.status(project), [project], 15000);
  if (!p) {
    const exists = conn.pipelines.get(name) !== undefined;
    return (
      <section class="error-state" role="alert" aria-labelledby="missing-title">
        <h1 id="missing-title">No pipeline {name}</h1>
        <p>{exists ? `pipelines.${name} is not a table in the document.` : `The document of ${project} has no pipeline named ${name} (it may have been deleted by someone else).`}</p>
        {!exists && (
          <button
            type="button"
            onClick={() => {
              conn.createPipeline(name, `INSERT INTO context.${name} SELECT * FROM source.table`);
            }}
          >
            Create {name}
          </button>
        )}{" "}
        <a href={href.pipelines(project)}>All pipelines</a>
      </section>
    );
  }
  const json = (p.toJSON() ?? {}) as Record<string, unknown>;
  const problems = problemsOf(name, json);
  const readOnly = conn.readOnly;
  const ctx: Ctx = { conn, p, name, json, problems, readOnly };
  const nodes = status.data?.nodes.map((n) => n.id) ?? [];
  const stray = problems.filter((pr) => {
    const h = pr.path[0];
    return h === undefined || h === "name";
  });
  const asApplied = composed(json);

  return (
    <section class="editor" aria-labelledby="editor-title" data-pipeline={name}>
      <div class="page-head">
        <h1 id="editor-title">
          Pipeline <code>{name}</code>
        </h1>
        <Editors conn={conn} pipeline={name} />
        <span class="spacer" />
        <a href={href.runs(project, name)}>Runs</a>
        <a href={href.apply(project)}>Apply…</a>
        <button
          type="button"
          class="danger"
          disabled={readOnly}
          onClick={() => {
            if (confirm(`Delete pipeline ${name} from the shared document? (Applied versions keep it until the next apply.)`)) {
              conn.deletePipeline(name);
              navigate(href.pipelines(project));
            }
          }}
        >
          Delete pipeline
        </button>
      </div>
      <div class={`validity ${problems.length ? "bad" : "ok"}`} role="status" aria-live="polite" data-valid={problems.length ? "false" : "true"}>
        {problems.length === 0 ? (
          "Valid: this pipeline passes the manifest schema."
        ) : (
          <>
            {problems.length} problem{problems.length > 1 ? "s" : ""}:{" "}
            {problems.map((pr, i) => (
              <span key={i}>
                {i > 0 && "; "}
                <a href={`#${fid(pr.path[0] === "cursor" || pr.path[0] === "schedule" ? pr.path.slice(0, 2).join(".") : pr.path[0] ?? "sql")}`}>{pr.path.join(".") || "pipeline"}</a> {pr.message}
              </span>
            ))}
          </>
        )}
      </div>
      {stray.length > 0 && <FieldProblems id="pipeline-problems" problems={stray} />}
      <form class="pipeline-form" onSubmit={(e) => e.preventDefault()} aria-label={`Clauses of ${name}`}>
        <SqlField ctx={ctx} />
        {asApplied && (
          <details class="as-applied">
            <summary>The query as apply composes it</summary>
            <pre>{asApplied}</pre>
          </details>
        )}
        <Transforms ctx={ctx} />
        <div class="groups">
          <fieldset class="group">
            <legend>Writing</legend>
            {WRITING.slice(0, 1).map((d) => (
              <Field key={d.path} ctx={ctx} def={d} />
            ))}
            <KeyField ctx={ctx} />
            {WRITING.slice(1).map((d) => (
              <Field key={d.path} ctx={ctx} def={d} />
            ))}
          </fieldset>
          <fieldset class="group">
            <legend>Cursor</legend>
            {CURSOR.map((d) => (
              <Field key={d.path} ctx={ctx} def={d} />
            ))}
          </fieldset>
          <fieldset class="group">
            <legend>Schedule</legend>
            {SCHEDULE.map((d) => (
              <Field key={d.path} ctx={ctx} def={d} />
            ))}
          </fieldset>
          <fieldset class="group">
            <legend>Placement</legend>
            <Field ctx={ctx} def={PLACEMENT} />
            <datalist id="placements">
              <option value="any" />
              {nodes.map((n) => (
                <option key={n} value={`node:${n}`} />
              ))}
            </datalist>
          </fieldset>
        </div>
        <Unknown ctx={ctx} />
      </form>
    </section>
  );
}
