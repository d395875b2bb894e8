// The manifest's JSON Schema (what `hakiri schema export` prints) and a small validator for
// the part of JSON Schema 2020-12 it uses: $ref to #/$defs, type, enum, pattern, properties,
// additionalProperties, required, propertyNames, anyOf, items, minItems, minimum.
//
// The schema is GET /api/schema when the control plane serves it, else the copy bundled at
// build time (docs/hakiri.schema.json), so the form checks what the server's version checks.
import bundled from "../../docs/hakiri.schema.json";
import { api } from "./api";

export type Schema = { [k: string]: unknown };
export interface Problem {
  /** Path of keys from the validated value, e.g. ["cursor", "kind"]. */
  path: string[];
  message: string;
}

let current: Schema = bundled as Schema;
let loaded: Promise<Schema> | null = null;
export let schemaSource: "bundled" | "server" = "bundled";

/** The server's schema if it serves one, else the bundled copy. */
export function loadSchema(): Promise<Schema> {
  loaded ??= api
    .schema()
    .then((s) => {
      if (s && typeof s === "object" && "$defs" in s) {
        current = s as Schema;
        schemaSource = "server";
      }
      return current;
    })
    .catch(() => current);
  return loaded;
}

export function schema(): Schema {
  return current;
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function typeMatches(v: unknown, t: string): boolean {
  const actual = typeOf(v);
  if (t === actual) return true;
  if (t === "number" && actual === "integer") return true;
  return false;
}

function resolve(root: Schema, s: Schema): Schema {
  let cur = s;
  for (let i = 0; i < 32 && typeof cur.$ref === "string"; i++) {
    const ref = cur.$ref as string;
    if (!ref.startsWith("#/")) break;
    let target: unknown = root;
    for (const part of ref.slice(2).split("/")) target = (target as Schema)?.[part.replace(/~1/g, "/").replace(/~0/g, "~")];
    if (!target || typeof target !== "object") break;
    // Keep sibling keywords of the $ref (descriptions) out: only the target validates.
    const { $ref: _r, ...rest } = cur;
    cur = { ...(target as Schema), ...(Object.keys(rest).length ? rest : {}) };
    if (!("$ref" in (target as Schema))) delete cur.$ref;
  }
  return cur;
}

function describe(t: unknown): string {
  return Array.isArray(t) ? t.join(" or ") : String(t);
}

/** Every problem of `value` against `s` (a sub-schema of `root`). */
export function validate(value: unknown, s: Schema = current, root: Schema = current, path: string[] = []): Problem[] {
  const out: Problem[] = [];
  const sch = resolve(root, s);
  const push = (message: string, p = path) => out.push({ path: p, message });

  if (Array.isArray(sch.anyOf)) {
    const branches = (sch.anyOf as Schema[]).map((b) => validate(value, b, root, path));
    if (!branches.some((b) => b.length === 0)) {
      // Report the branch that got furthest (fewest problems) when types match, else a summary.
      const typed = (sch.anyOf as Schema[]).map((b) => resolve(root, b));
      const types = typed.map((b) => b.type).filter(Boolean).flat();
      const best = branches.reduce((a, b) => (b.length < a.length ? b : a));
      const bestTypeOk = typed.some((b, i) => branches[i] === best && (!b.type || [b.type].flat().some((t) => typeMatches(value, t as string))));
      if (bestTypeOk) out.push(...best);
      else push(`must be ${describe([...new Set(types)])}`);
    }
  }

  if (sch.type !== undefined) {
    const types = [sch.type].flat() as string[];
    if (!types.some((t) => typeMatches(value, t))) {
      push(`must be ${describe(types.map((t) => (t === "integer" ? "a whole number" : t === "object" ? "a table" : t === "array" ? "a list" : `a ${t}`)))}`);
      return out;
    }
  }
  if (Array.isArray(sch.enum) && !sch.enum.some((e) => e === value)) {
    push(`must be one of ${(sch.enum as unknown[]).map((e) => JSON.stringify(e)).join(", ")}`);
  }
  if (typeof value === "string" && typeof sch.pattern === "string" && !new RegExp(sch.pattern as string, "u").test(value)) {
    push(`does not match the expected form ${sch.pattern}`);
  }
  if (typeof value === "number" && typeof sch.minimum === "number" && value < sch.minimum) {
    push(`must be at least ${sch.minimum}`);
  }
  if (Array.isArray(value)) {
    if (typeof sch.minItems === "number" && value.length < sch.minItems) push(`needs at least ${sch.minItems} item(s)`);
    if (sch.items && typeof sch.items === "object") {
      value.forEach((item, i) => out.push(...validate(item, sch.items as Schema, root, [...path, String(i)])));
    }
  }
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const obj = value as Record<string, unknown>;
    const props = (sch.properties ?? {}) as Record<string, Schema>;
    for (const r of (sch.required ?? []) as string[]) {
      if (!(r in obj)) push(`is required`, [...path, r]);
    }
    for (const [k, v] of Object.entries(obj)) {
      const kp = [...path, k];
      if (sch.propertyNames && typeof sch.propertyNames === "object") {
        const pn = resolve(root, sch.propertyNames as Schema);
        if (typeof pn.pattern === "string" && !new RegExp(pn.pattern as string, "u").test(k)) {
          push(`name ${JSON.stringify(k)}: ${(pn.description as string) ?? `must match ${pn.pattern}`}`, kp);
        }
      }
      if (k in props) {
        out.push(...validate(v, props[k], root, kp));
      } else if (sch.additionalProperties === false) {
        const known = Object.keys(props);
        push(`unknown field ${JSON.stringify(k)}${known.length ? ` (known: ${known.join(", ")})` : ""}`, kp);
      } else if (sch.additionalProperties && typeof sch.additionalProperties === "object") {
        out.push(...validate(v, sch.additionalProperties as Schema, root, kp));
      }
    }
  }
  return out;
}

/** The sub-schema of a $def, e.g. "PipelineDoc". */
export function def(name: string): Schema {
  return ((current.$defs as Record<string, Schema>)?.[name] ?? {}) as Schema;
}

/** A field's description from the schema, for help text. */
export function describeField(defName: string, field: string): string | undefined {
  const d = resolve(current, def(defName));
  const p = (d.properties as Record<string, Schema> | undefined)?.[field];
  if (!p) return undefined;
  const desc = (p.description as string | undefined) ?? (resolve(current, p).description as string | undefined);
  return desc?.replace(/\s+/g, " ");
}

/** The enum values of a field, following $refs. */
export function enumOf(defName: string, field: string): string[] {
  const d = resolve(current, def(defName));
  const p = (d.properties as Record<string, Schema> | undefined)?.[field];
  if (!p) return [];
  const r = resolve(current, p);
  return Array.isArray(r.enum) ? (r.enum as string[]) : [];
}

/**
 * Checks a pipeline as apply composes it (control/src/doc.rs): `transforms` are a list of
 * strings wrapped around an `INSERT INTO ... SELECT` query, and leave the manifest before
 * it is validated.
 */
export function validatePipeline(name: string, p: Record<string, unknown>): Problem[] {
  const out: Problem[] = [];
  const { transforms, ...rest } = p;
  const namePattern = resolve(current, def("pipelines")).propertyNames as Schema | undefined;
  if (namePattern && typeof namePattern.pattern === "string" && !new RegExp(namePattern.pattern).test(name)) {
    out.push({ path: ["name"], message: `name: ${(namePattern.description as string) ?? "invalid"}` });
  }
  out.push(...validate(rest, def("PipelineDoc")));
  if (transforms !== undefined && transforms !== null) {
    if (!Array.isArray(transforms)) out.push({ path: ["transforms"], message: "must be a list of select-list items" });
    else {
      transforms.forEach((t, i) => {
        if (typeof t !== "string") out.push({ path: ["transforms", String(i)], message: "each item must be a string" });
        else if (!t.trim()) out.push({ path: ["transforms", String(i)], message: "is empty" });
      });
      if (transforms.length && typeof rest.sql === "string" && queryStart(rest.sql) === undefined) {
        out.push({ path: ["transforms"], message: "transforms need `INSERT INTO context.<table> SELECT ...` in sql" });
      }
    }
  }
  if (typeof rest.sql === "string" && !/^\s*(?:\/\*[\s\S]*?\*\/\s*|--[^\n]*\n\s*)*insert\s+into\s/i.test(rest.sql)) {
    out.push({ path: ["sql"], message: "must start with INSERT INTO context.<table>" });
  }
  return out;
}

/** doc.rs query_start: where the query starts in `INSERT INTO <table> [(<cols>)] <query>`. */
export function queryStart(sql: string): number | undefined {
  const lower = sql.toLowerCase();
  let best: number | undefined;
  for (const kw of ["select", "with", "("]) {
    let i = lower.indexOf(kw);
    while (i >= 0) {
      if (i > 0 && lower.slice(0, i).trimStart().startsWith("insert") && /\s/.test(lower[i - 1]) && !lower.slice(0, i).includes("(")) {
        if (best === undefined || i < best) best = i;
        break;
      }
      i = lower.indexOf(kw, i + 1);
    }
  }
  return best;
}
