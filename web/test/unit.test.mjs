// Unit tests of the parts of the app that need no browser: the JSON Schema validator
// against the real manifest schema (docs/hakiri.schema.json), the CSV export, the routes.
// The TypeScript sources are bundled with esbuild (Vite's) first.  npm run test:unit
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const out = mkdtempSync(join(tmpdir(), "hakiri-web-unit-"));
await build({
  entryPoints: { schema: join(WEB, "src/schema.ts"), csv: join(WEB, "src/csv.ts"), router: join(WEB, "src/router.ts") },
  bundle: true,
  format: "esm",
  platform: "node",
  outdir: out,
  logLevel: "error",
});
const schema = await import(pathToFileURL(join(out, "schema.js")));
const csv = await import(pathToFileURL(join(out, "csv.js")));
const router = await import(pathToFileURL(join(out, "router.js")));
rmSync(out, { recursive: true, force: true });

const paths = (problems) => problems.map((p) => p.path.join("."));

test("a complete pipeline validates", () => {
  const p = {
    sql: "INSERT INTO context.orders SELECT id, amount FROM files.orders WHERE id > $cursor",
    cursor: { kind: "monotonic", column: "id", initial: "0", on_null: "skip" },
    mode: "merge",
    key: ["id"],
    schedule: { every: "15 minutes", retries: 2, on_missed: "run_once" },
    placement: "node:a",
    checkpoint_pages: 5,
    on_schema_change: "freeze",
    transforms: ["upper(name) AS name_upper"],
  };
  assert.deepEqual(schema.validatePipeline("orders", p), []);
});

test("problems name their field", () => {
  const p = {
    sql: "INSERT INTO context.t SELECT 1",
    mode: "upsert",
    placement: "moon:1",
    cursor: { kind: "monotonic", colum: "id" },
    schedule: { every: "1 hour", retries: -1 },
    checkpoint_pages: "abc",
    mdoe: "append",
  };
  const got = paths(schema.validatePipeline("p", p));
  for (const want of ["mode", "placement", "cursor.colum", "schedule.retries", "checkpoint_pages", "mdoe"]) {
    assert.ok(got.includes(want), `${want} in ${got}`);
  }
  const mode = schema.validatePipeline("p", p).find((x) => x.path.join(".") === "mode");
  assert.match(mode.message, /one of "append", "merge", "replace"/);
});

test("sql is required, a pipeline name follows the pattern, key is a string or a non-empty list", () => {
  assert.ok(paths(schema.validatePipeline("p", {})).includes("sql"));
  assert.ok(paths(schema.validatePipeline("1bad", { sql: "INSERT INTO context.t SELECT 1" })).includes("name"));
  assert.deepEqual(schema.validatePipeline("p", { sql: "INSERT INTO context.t SELECT 1", key: "id" }), []);
  assert.ok(paths(schema.validatePipeline("p", { sql: "INSERT INTO context.t SELECT 1", key: [] })).includes("key"));
  assert.ok(paths(schema.validatePipeline("p", { sql: "INSERT INTO context.t SELECT 1", key: 3 })).includes("key"));
});

test("transforms need an INSERT INTO ... SELECT query, as apply composes them", () => {
  assert.ok(paths(schema.validatePipeline("p", { sql: "INSERT INTO context.t(a) SELECT 1", transforms: ["1 AS one"] })).includes("transforms"));
  assert.ok(paths(schema.validatePipeline("p", { sql: "INSERT INTO context.t SELECT 1", transforms: [3] })).includes("transforms.0"));
  assert.equal(schema.queryStart("INSERT INTO context.t SELECT a FROM s.x"), "INSERT INTO context.t ".length);
  // Same answer as control/src/doc.rs query_start, including its quirk: the column list's
  // "(" counts as the query's start (reported; the server composes that as a subquery).
  assert.equal(schema.queryStart("INSERT INTO context.t (a) SELECT a FROM s.x"), "INSERT INTO context.t ".length);
});

test("sources: type is required, options are scalars or tables of them", () => {
  const SourceDoc = schema.def("SourceDoc");
  assert.deepEqual(schema.validate({ type: "file", tables: { orders: { path: "/x/*.csv" } } }, SourceDoc), []);
  assert.ok(paths(schema.validate({ tables: {} }, SourceDoc)).includes("type"));
  assert.ok(paths(schema.validate({ type: "file", opts: [1] }, SourceDoc)).includes("opts"));
});

test("the whole manifest: unknown sections and bad names are problems", () => {
  const got = paths(schema.validate({ pipelines: { "bad name": { sql: "INSERT INTO context.t SELECT 1" } }, extra: 1 }));
  assert.ok(got.includes("pipelines.bad name"), got.join(","));
  assert.ok(got.includes("extra"), got.join(","));
});

test("enums and descriptions come from the schema", () => {
  assert.deepEqual(schema.enumOf("PipelineDoc", "mode"), ["append", "merge", "replace"]);
  assert.deepEqual(schema.enumOf("CursorDoc", "kind"), ["monotonic", "token", "opaque_token", "snapshot", "snapshot_id"]);
  assert.match(schema.describeField("PipelineDoc", "placement"), /node:<id>/);
});

test("CSV: header, quoting, nulls, nested values, object rows", () => {
  const text = csv.toCsv({
    columns: [{ name: "id", type: "Int64" }, { name: "name" }, "tags"],
    rows: [
      [1, 'say "hi", ok', null],
      [2, "two\nlines", { a: 1 }],
    ],
  });
  assert.equal(text, 'id,name,tags\r\n1,"say ""hi"", ok",\r\n2,"two\nlines","{""a"":1}"\r\n');
  assert.equal(csv.toCsv({ columns: ["a", "b"], rows: [{ a: 1, b: "x" }] }), "a,b\r\n1,x\r\n");
});

test("routes", () => {
  const at = (pathname, search = "") => router.parse({ pathname, search });
  assert.deepEqual(at("/"), { page: "projects" });
  assert.deepEqual(at("/projects/shop"), { page: "pipelines", project: "shop" });
  assert.deepEqual(at("/projects/shop/pipelines/orders"), { page: "editor", project: "shop", pipeline: "orders" });
  assert.deepEqual(at("/projects/shop/runs", "?pipeline=orders"), { page: "runs", project: "shop", pipeline: "orders" });
  assert.deepEqual(at("/signin", "?reason=expired&next=%2Fprojects"), { page: "signin", reason: "expired", next: "/projects" });
  assert.equal(at("/nope").page, "notfound");
  assert.equal(router.href.editor("a b", "c"), "/projects/a%20b/pipelines/c");
  assert.equal(router.href.signin("expired", "/projects/x"), "/signin?reason=expired&next=%2Fprojects%2Fx");
});
