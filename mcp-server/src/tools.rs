//! The thirteen tools: their input schemas and annotations, and each one's call mapped onto
//! the engine. Every result is a JSON object (`structuredContent`) plus a short text.

use std::sync::Arc;
use std::time::Duration;

use hakiri_engine::types::{EventKind, validate_name};
use hakiri_engine::{Engine, ErrorCategory};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::query;
use crate::runs::Runs;

/// A tool's answer: the structured result and its text rendering, or an error message.
pub type Answer = Result<(Value, String), ToolError>;

/// A tool's failure: the message a person needs and the engine's error category
/// (`not_found`, `upstream`, ...), so an agent can tell a typo from an outage.
#[derive(Debug)]
pub struct ToolError {
    pub category: ErrorCategory,
    pub message: String,
}

impl From<hakiri_engine::Error> for ToolError {
    fn from(e: hakiri_engine::Error) -> Self {
        ToolError {
            category: e.category(),
            message: e.to_string(),
        }
    }
}

impl ToolError {
    fn not_found(message: String) -> Self {
        ToolError {
            category: ErrorCategory::NotFound,
            message,
        }
    }
}

/// The tools' own refusals (bad arguments, writes through context.query).
impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError {
            category: ErrorCategory::InvalidInput,
            message,
        }
    }
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

fn schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let Value::Object(object) = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    }) else {
        unreachable!("a JSON object literal")
    };
    Arc::new(object)
}

fn name_property(what: &str) -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "description": what})
}

/// The tools, in the order `tools/list` gives them; built once.
pub fn definitions() -> &'static [Tool] {
    static TOOLS: std::sync::LazyLock<Vec<Tool>> = std::sync::LazyLock::new(build_definitions);
    &TOOLS
}

/// What a call of a tool this server does not have is told.
pub fn unknown_tool(name: &str) -> String {
    format!("unknown tool '{name}': tools/list gives the thirteen tools this server has")
}

fn build_definitions() -> Vec<Tool> {
    let read = || ToolAnnotations::new().read_only(true).destructive(false);
    let tool = |name: &'static str, description: &'static str, input: Arc<JsonObject>| {
        Tool::new(name, description, input).with_annotations(read())
    };
    let none = || schema(json!({}), &[]);
    let source =
        || name_property("A source's name (see catalog.list_connectors / pipeline.describe).");
    let pipeline = || name_property("A pipeline's name (see pipeline.list).");
    let run_id = json!({"type": "string", "pattern": "^[A-Za-z0-9_.:-]+$", "description": "A run id (from pipeline.run, or hakiri.runs)."});
    vec![
        tool(
            "catalog.list_connectors",
            "The connector types this Hakiri can read (http, postgres, file, s3, github, ...) and the sources declared in the project.",
            none(),
        ),
        tool(
            "source.list_tables",
            "The tables of a source; a database's are discovered from the server.",
            schema(json!({"source": source()}), &["source"]),
        ),
        tool(
            "source.sample_table",
            "A few rows of a source table, read live from the source.",
            schema(
                json!({
                    "source": source(),
                    "table": name_property("The table's name (see source.list_tables)."),
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                }),
                &["source", "table"],
            ),
        ),
        tool(
            "source.discover",
            "A source's tables with their columns and types.",
            schema(json!({"source": source()}), &["source"]),
        ),
        tool(
            "context.tables",
            "The tables of the context store (what pipelines loaded): rows, files, last load.",
            none(),
        ),
        tool(
            "context.schema",
            "The columns and types of a context table, lineage columns (_hakiri_run_id, _hakiri_loaded_at) included, and its schema history: every schema version (with the run that made it) and the schema events (table_created, column_added, column_widened, column_variant, schema_drift).",
            schema(json!({"table": name_property("A context table's name (see context.tables).")}), &["table"]),
        ),
        tool(
            "context.query",
            "Runs one read-only SQL query (SELECT, EXPLAIN, SHOW) over the context store, the hakiri state tables (hakiri.runs, hakiri.events, ...) and live source tables. Returns columns with types and rows as JSON arrays, cut at `limit` rows (truncated says so).",
            schema(
                json!({
                    "sql": {"type": "string", "description": "One SQL statement (DataFusion's dialect)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                    "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 600000, "default": DEFAULT_TIMEOUT_MS},
                }),
                &["sql"],
            ),
        ),
        tool("pipeline.list", "The project's pipelines with their targets, cursors and last runs.", none()),
        tool(
            "pipeline.describe",
            "A pipeline's definition, its committed cursor and its recent runs.",
            schema(json!({"name": pipeline()}), &["name"]),
        ),
        tool(
            "pipeline.dry_run",
            "What a run of the pipeline would do, without running it: the cursor it starts from, the filters pushed into the source, the physical plan.",
            schema(json!({"name": pipeline()}), &["name"]),
        ),
        Tool::new(
            "pipeline.run",
            "Starts a run of the pipeline and returns its run id at once; follow it with run.tail. The only tool that writes data (it appends to the pipeline's context table and moves its cursor, atomically).",
            schema(json!({"name": pipeline()}), &["name"]),
        )
        .with_annotations(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false),
        ),
        tool(
            "run.tail",
            "The progress and log lines of a run from `offset` (0 for all); poll with the returned next_offset until done is true.",
            schema(
                json!({"run_id": run_id, "offset": {"type": "integer", "minimum": 0, "default": 0}}),
                &["run_id"],
            ),
        ),
        tool(
            "run.trace",
            "Where a finished run's time went: plan, fetch, decode, write and commit times, and the requests it sent.",
            schema(json!({"run_id": run_id}), &["run_id"]),
        ),
    ]
}

fn args<T: DeserializeOwned>(tool: &str, arguments: JsonObject) -> Result<T, String> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| format!("invalid arguments for {tool}: {e}"))
}

fn valid_run_id(run_id: &str) -> Result<(), String> {
    let ok = !run_id.is_empty()
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{run_id}' is not a run id: run ids are letters, digits and _ . : - (see pipeline.run or hakiri.runs)"
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Nothing {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceArgs {
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleArgs {
    source: String,
    table: String,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableArgs {
    table: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryArgs {
    sql: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineArgs {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailArgs {
    run_id: String,
    #[serde(default)]
    offset: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    run_id: String,
}

/// Rows of a query over the state tables as JSON objects (names are validated before they
/// are spliced into `sql`).
async fn objects(engine: &Engine, sql: &str) -> Result<Vec<Value>, ToolError> {
    let stream = engine.query(sql).await?;
    let table = query::collect(stream, MAX_LIMIT).await?;
    let names: Vec<String> = table["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    Ok(table["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    let values = row.as_array().cloned().unwrap_or_default();
                    Value::Object(names.iter().cloned().zip(values).collect())
                })
                .collect()
        })
        .unwrap_or_default())
}

fn fields(schema: &datafusion::arrow::datatypes::Schema) -> Vec<Value> {
    schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
        .collect()
}

/// Calls one tool.
pub async fn call(engine: &Arc<Engine>, runs: &Runs, tool: &str, arguments: JsonObject) -> Answer {
    match tool {
        "catalog.list_connectors" => {
            let Nothing {} = args(tool, arguments)?;
            let connectors = engine.connector_names();
            let sources: Vec<Value> = engine
                .sources()
                .iter()
                .map(|s| json!({"name": s.name, "connector": s.connector}))
                .collect();
            let text = format!(
                "connectors: {}; sources: {}",
                connectors.join(", "),
                sources
                    .iter()
                    .map(|s| format!(
                        "{} ({})",
                        s["name"].as_str().unwrap_or(""),
                        s["connector"].as_str().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok((json!({"connectors": connectors, "sources": sources}), text))
        }
        "source.list_tables" => {
            let SourceArgs { source } = args(tool, arguments)?;
            validate_name("source", &source)?;
            let tables = engine.source_tables(&source).await?;
            let text = format!("{source}: {}", tables.join(", "));
            Ok((json!({"source": source, "tables": tables}), text))
        }
        "source.sample_table" => {
            let SampleArgs {
                source,
                table,
                limit,
            } = args(tool, arguments)?;
            validate_name("source", &source)?;
            validate_name("table", &table)?;
            let limit = limit.unwrap_or(10);
            if !(1..=1000).contains(&limit) {
                return Err(format!("limit must be between 1 and 1000, not {limit}").into());
            }
            let stream = engine.sample(&format!("{source}.{table}"), limit).await?;
            let result = query::collect(stream, limit).await?;
            let text = format!("{} row(s) of {source}.{table}", result["row_count"]);
            Ok((result, text))
        }
        "source.discover" => {
            let SourceArgs { source } = args(tool, arguments)?;
            validate_name("source", &source)?;
            let mut tables = Vec::new();
            for table in engine.source_tables(&source).await? {
                let described = match engine.session().table(format!("{source}.{table}")).await {
                    Ok(df) => json!({"name": table, "columns": fields(df.schema().as_arrow())}),
                    Err(e) => json!({"name": table, "error": e.to_string()}),
                };
                tables.push(described);
            }
            let text = tables
                .iter()
                .map(|t| {
                    let n = t["columns"].as_array().map_or(0, Vec::len);
                    format!("{} ({n} columns)", t["name"].as_str().unwrap_or(""))
                })
                .collect::<Vec<_>>()
                .join(", ");
            Ok((
                json!({"source": source, "tables": tables}),
                format!("{source}: {text}"),
            ))
        }
        "context.tables" => {
            let Nothing {} = args(tool, arguments)?;
            let tables = objects(engine, "SELECT * FROM hakiri.tables ORDER BY 1").await?;
            let text = format!("{} context table(s)", tables.len());
            Ok((json!({"tables": tables}), text))
        }
        "context.schema" => {
            let TableArgs { table } = args(tool, arguments)?;
            validate_name("table", &table)?;
            let df = engine
                .session()
                .table(format!("context.{table}"))
                .await
                .map_err(|_| {
                    ToolError::not_found(format!("no context table named '{table}': context.tables lists them (a table appears after its pipeline's first run)"))
                })?;
            let columns = fields(df.schema().as_arrow());
            let text = format!(
                "context.{table}: {}",
                columns
                    .iter()
                    .map(|c| format!(
                        "{} {}",
                        c["name"].as_str().unwrap_or(""),
                        c["type"].as_str().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // `table` passed validate_name: safe to splice.
            let versions = objects(
                engine,
                &format!(
                    "SELECT version, schema, run_id, created_at FROM hakiri.schema_versions \
                     WHERE table_name = '{table}' ORDER BY version"
                ),
            )
            .await?;
            let kinds: Vec<String> = EventKind::ALL
                .iter()
                .filter(|k| k.is_schema_change())
                .map(|k| format!("'{}'", k.as_str()))
                .collect();
            let events = objects(
                engine,
                &format!(
                    "SELECT at, kind, message, run_id FROM hakiri.events \
                     WHERE subject = '{table}' AND kind IN ({}) ORDER BY id",
                    kinds.join(", ")
                ),
            )
            .await?;
            let text = format!(
                "{text} ({} schema version(s), {} schema event(s))",
                versions.len(),
                events.len()
            );
            Ok((
                json!({"table": table, "columns": columns, "versions": versions, "schema_events": events}),
                text,
            ))
        }
        "context.query" => {
            let QueryArgs {
                sql,
                limit,
                timeout_ms,
            } = args(tool, arguments)?;
            let limit = limit.unwrap_or(DEFAULT_LIMIT);
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(format!("limit must be between 1 and {MAX_LIMIT}, not {limit}").into());
            }
            let timeout = Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).max(1));
            let result = query::read_only(engine, &sql, limit, timeout).await?;
            let text = format!(
                "{} row(s){}: {}",
                result["row_count"],
                if result["truncated"] == json!(true) {
                    " (truncated)"
                } else {
                    ""
                },
                serde_json::to_string(&result["rows"]).unwrap_or_default()
            );
            Ok((result, text))
        }
        "pipeline.list" => {
            let Nothing {} = args(tool, arguments)?;
            let pipelines = objects(
                engine,
                "SELECT p.name, p.target_table, p.write_mode, p.cursor_kind, p.cursor_column, \
                 r.status AS last_run_status, r.started_at AS last_run_started_at \
                 FROM hakiri.pipelines p LEFT JOIN (SELECT pipeline, status, started_at, \
                 row_number() OVER (PARTITION BY pipeline ORDER BY started_at DESC) AS k \
                 FROM hakiri.runs) r ON r.pipeline = p.name AND r.k = 1 ORDER BY p.name",
            )
            .await?;
            let text = pipelines
                .iter()
                .map(|p| {
                    format!(
                        "{} -> context.{}",
                        p["name"].as_str().unwrap_or(""),
                        p["target_table"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            Ok((json!({"pipelines": pipelines}), text))
        }
        "pipeline.describe" => {
            let PipelineArgs { name } = args(tool, arguments)?;
            validate_name("pipeline", &name)?;
            let spec = engine.pipeline(&name)?;
            let cursor = objects(
                engine,
                &format!("SELECT * FROM hakiri.cursors WHERE pipeline = '{name}'"),
            )
            .await?;
            let runs = objects(
                engine,
                &format!(
                    "SELECT run_id, status, started_at, ended_at, rows_read, rows_written, pages, cursor_start, cursor_end, error \
                     FROM hakiri.runs WHERE pipeline = '{name}' ORDER BY started_at DESC LIMIT 5"
                ),
            )
            .await?;
            let value = json!({
                "name": spec.name,
                "sql": spec.sql,
                "target_table": spec.target,
                "write_mode": spec.mode.as_str(),
                "key": spec.key,
                "cursor": spec.cursor.as_ref().map(|c| json!({
                    "kind": c.kind.as_str(),
                    "column": c.column,
                    "initial": c.initial,
                })),
                "committed_cursor": cursor.first().cloned(),
                "origin": spec.origin.as_str(),
                "recent_runs": runs,
            });
            let text = format!("{}: {}", name, spec.sql);
            Ok((value, text))
        }
        "pipeline.dry_run" => {
            let PipelineArgs { name } = args(tool, arguments)?;
            validate_name("pipeline", &name)?;
            let plan = engine.plan_pipeline(&name).await?;
            let pushdown: Vec<Value> = plan
                .pushdown
                .iter()
                .map(|f| json!({"table": f.table, "filter": f.filter, "exact": f.exact}))
                .collect();
            let value = json!({
                "pipeline": name,
                "cursor": plan.cursor,
                "cursor_is_initial": plan.cursor_is_initial,
                "pushdown": pushdown,
                "physical_plan": plan.physical_plan,
            });
            let text = format!(
                "{name} would start from cursor {} and push down {} filter(s)",
                plan.cursor.as_deref().unwrap_or("(none)"),
                pushdown.len()
            );
            Ok((value, text))
        }
        "pipeline.run" => {
            let PipelineArgs { name } = args(tool, arguments)?;
            validate_name("pipeline", &name)?;
            engine.pipeline(&name)?;
            let run_id = runs.start(engine.clone(), &name);
            let text = format!("run {run_id} started; follow it with run.tail");
            Ok((
                json!({"run_id": run_id, "pipeline": name, "status": "running"}),
                text,
            ))
        }
        "run.tail" => {
            let TailArgs { run_id, offset } = args(tool, arguments)?;
            valid_run_id(&run_id)?;
            let record = run_record(engine, &run_id).await?;
            let status = record
                .as_ref()
                .and_then(|r| r["status"].as_str())
                .map(str::to_string);
            let (lines, next_offset, done) = match runs.tail(&run_id, offset) {
                Some(tail) => tail,
                None => {
                    // A run this process did not start: its record and events.
                    let record = record.as_ref().ok_or_else(|| no_such_run(&run_id))?;
                    let mut lines = vec![format!(
                        "run {run_id} of pipeline '{}' started at {}",
                        record["pipeline"].as_str().unwrap_or(""),
                        record["started_at"].as_str().unwrap_or("")
                    )];
                    for e in objects(
                        engine,
                        &format!("SELECT kind, message FROM hakiri.events WHERE run_id = '{run_id}' AND kind <> 'run_trace' ORDER BY id"),
                    )
                    .await?
                    {
                        lines.push(format!("{}: {}", e["kind"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")));
                    }
                    let done = status.as_deref() != Some("running");
                    if done {
                        lines.push(format!(
                            "{}: {} rows written{}",
                            status.as_deref().unwrap_or(""),
                            record["rows_written"],
                            record["error"]
                                .as_str()
                                .map(|e| format!("; {e}"))
                                .unwrap_or_default()
                        ));
                    }
                    let total = lines.len();
                    (lines.into_iter().skip(offset).collect(), total, done)
                }
            };
            let text = lines.join("\n");
            Ok((
                json!({"run_id": run_id, "status": status, "lines": lines, "next_offset": next_offset, "done": done}),
                text,
            ))
        }
        "run.trace" => {
            let RunArgs { run_id } = args(tool, arguments)?;
            valid_run_id(&run_id)?;
            let record = run_record(engine, &run_id)
                .await?
                .ok_or_else(|| no_such_run(&run_id))?;
            let trace = objects(
                engine,
                &format!("SELECT message FROM hakiri.events WHERE run_id = '{run_id}' AND kind = 'run_trace' ORDER BY id DESC LIMIT 1"),
            )
            .await?;
            let Some(message) = trace.first().and_then(|t| t["message"].as_str()) else {
                return Err(format!(
                    "run {run_id} has no trace yet (status {}): a run's trace is recorded when it ends; poll run.tail until done",
                    record["status"].as_str().unwrap_or("unknown")
                ).into());
            };
            let mut stages = serde_json::Map::new();
            let mut counts = serde_json::Map::new();
            for part in message.split_whitespace() {
                let Some((key, value)) = part.split_once('=') else {
                    continue;
                };
                if let Some(ms) = value.strip_suffix("ms") {
                    stages.insert(format!("{key}_ms"), json!(ms.parse::<f64>().unwrap_or(0.0)));
                } else {
                    counts.insert(key.to_string(), json!(value.parse::<u64>().unwrap_or(0)));
                }
            }
            let value = json!({
                "run_id": run_id,
                "pipeline": record["pipeline"],
                "status": record["status"],
                "stages": stages,
                "requests": counts.get("requests"),
                "pages": counts.get("pages"),
                "rows": counts.get("rows"),
            });
            Ok((value, message.to_string()))
        }
        other => Err(unknown_tool(other).into()),
    }
}

fn no_such_run(run_id: &str) -> ToolError {
    ToolError::not_found(format!(
        "no run with id '{run_id}': pipeline.describe lists a pipeline's recent runs, hakiri.runs all of them"
    ))
}

async fn run_record(engine: &Engine, run_id: &str) -> Result<Option<Value>, ToolError> {
    let mut rows = objects(
        engine,
        &format!("SELECT * FROM hakiri.runs WHERE run_id = '{run_id}'"),
    )
    .await?;
    Ok(rows.pop())
}
