//! `hakiri.toml`: the project's declared sources and pipelines, turned into the engine's
//! `SourceSpec`s and `PipelineSpec`s.
//!
//! ```toml
//! [project]
//! name = "demo"
//!
//! [sources.httpbin]
//! type = "http"
//! base_url = "${HAKIRI_HTTPBIN_URL:-https://httpbin.org}"
//! tables.anything.path = "/anything"
//!
//! [pipelines.httpbin]
//! sql = "INSERT INTO context.httpbin_anything SELECT * FROM httpbin.anything"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hakiri_engine::schedule::{Cadence, Interval, MissedPolicy, ScheduleSpec};
use hakiri_engine::sql::parse_pipeline_body;
use hakiri_engine::types::{
    CursorKind, CursorSpec, NullRule, Origin, PipelineSpec, Role, SchemaPolicy, ServeSpec,
    SourceSpec, UserSpec, WriteMode, validate_name,
};
use hakiri_engine::{Error, Result};

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "hakiri.toml";
/// The same manifest as JSON (same structure, same specs), for tools that write JSON.
pub const JSON_MANIFEST_FILE: &str = "hakiri.json";

/// A parsed manifest.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub project: String,
    pub sources: Vec<SourceSpec>,
    pub pipelines: Vec<PipelineSpec>,
    /// `[serve]`: the endpoints and users of `hakiri serve`.
    pub serve: ServeSpec,
}

/// Whether `dir` holds a manifest (`hakiri.toml` or `hakiri.json`).
pub fn is_project(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file() || dir.join(JSON_MANIFEST_FILE).is_file()
}

/// Finds the project folder: `start` or the nearest parent holding a manifest.
pub fn find_project(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| is_project(d))
        .map(Path::to_path_buf)
}

/// The manifest file of the project in `dir`.
///
/// # Errors
/// `Config` when `dir` holds both `hakiri.toml` and `hakiri.json` (which one counts would
/// be a guess) or neither.
pub fn manifest_path(dir: &Path) -> Result<PathBuf> {
    let (toml, json) = (dir.join(MANIFEST_FILE), dir.join(JSON_MANIFEST_FILE));
    match (toml.is_file(), json.is_file()) {
        (true, true) => Err(bad(format!(
            "{} holds both {MANIFEST_FILE} and {JSON_MANIFEST_FILE}: a project has one manifest; remove or rename one of them",
            dir.display()
        ))),
        (true, false) => Ok(toml),
        (false, true) => Ok(json),
        (false, false) => Err(bad(format!(
            "{} holds no {MANIFEST_FILE} (or {JSON_MANIFEST_FILE}): create a project with `hakiri init NAME`",
            dir.display()
        ))),
    }
}

/// Reads and checks the project's manifest, `<dir>/hakiri.toml` or `<dir>/hakiri.json`.
///
/// # Errors
/// `Config` naming the file, the place and the fix.
pub fn load(dir: &Path) -> Result<Manifest> {
    let path = manifest_path(dir)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let parsed = if path.extension().is_some_and(|x| x == "json") {
        parse_json(&text)
    } else {
        parse(&text)
    };
    parsed.map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Parses a JSON manifest: the same structure as the TOML one, read into the same table,
/// so both give the same specs.
pub fn parse_json(text: &str) -> Result<Manifest> {
    let doc: toml::Table = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "invalid JSON manifest: {e} (it is an object with the sections of hakiri.toml: project, sources, pipelines, serve; null is not a value)"
        ))
    })?;
    parse_table(&doc)
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

fn scalar_text(key: &str, v: &toml::Value) -> Result<String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(bad(format!(
            "option '{key}' must be a string, number or boolean, found {}",
            other.type_str()
        ))),
    }
}

/// Flattens nested tables into dotted option keys: `tables.anything.path`.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) -> Result<()> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out)?,
            other => {
                out.insert(key.clone(), scalar_text(&key, other)?);
            }
        }
    }
    Ok(())
}

/// Parses manifest text.
pub fn parse(text: &str) -> Result<Manifest> {
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(format!("invalid TOML: {e}")))?;
    parse_table(&doc)
}

fn parse_table(doc: &toml::Table) -> Result<Manifest> {
    let mut m = Manifest::default();
    for (key, value) in doc {
        match key.as_str() {
            "project" => {
                let t = value
                    .as_table()
                    .ok_or_else(|| bad("[project] must be a table"))?;
                for (k, v) in t {
                    match k.as_str() {
                        "name" => m.project = scalar_text("project.name", v)?,
                        other => {
                            return Err(bad(format!(
                                "unknown key 'project.{other}': valid keys are name"
                            )));
                        }
                    }
                }
            }
            "sources" => {
                let t = value
                    .as_table()
                    .ok_or_else(|| bad("[sources] must be a table of sources"))?;
                for (name, body) in t {
                    m.sources.push(source(name, body)?);
                }
            }
            "pipelines" => {
                let t = value
                    .as_table()
                    .ok_or_else(|| bad("[pipelines] must be a table of pipelines"))?;
                for (name, body) in t {
                    m.pipelines.push(pipeline(name, body)?);
                }
            }
            "serve" => m.serve = serve(value)?,
            other => {
                return Err(bad(format!(
                    "unknown section '{other}': valid sections are project, sources, pipelines, serve"
                )));
            }
        }
    }
    Ok(m)
}

fn source(name: &str, body: &toml::Value) -> Result<SourceSpec> {
    validate_name("source", name).map_err(|e| bad(e.to_string()))?;
    let t = body
        .as_table()
        .ok_or_else(|| bad(format!("[sources.{name}] must be a table")))?;
    let mut options = BTreeMap::new();
    flatten("", t, &mut options)?;
    let connector = options.remove("type").ok_or_else(|| {
        bad(format!(
            "source '{name}' needs a type, e.g. type = \"http\""
        ))
    })?;
    Ok(SourceSpec {
        name: name.to_string(),
        connector,
        options,
        origin: Origin::Manifest,
    })
}

fn pipeline(name: &str, body: &toml::Value) -> Result<PipelineSpec> {
    validate_name("pipeline", name).map_err(|e| bad(e.to_string()))?;
    let t = body
        .as_table()
        .ok_or_else(|| bad(format!("[pipelines.{name}] must be a table")))?;
    let in_pipeline = |e: Error| bad(format!("pipeline '{name}': {e}"));
    let mut sql = None;
    let mut cursor: Option<CursorSpec> = None;
    let mut mode = None;
    let mut key = Vec::new();
    let mut on_schema_change = SchemaPolicy::Evolve;
    let mut checkpoint_pages = None;
    let mut schedule = None;
    for (k, v) in t {
        match k.as_str() {
            "sql" => sql = Some(scalar_text("sql", v)?),
            "mode" => mode = Some(WriteMode::parse(&scalar_text("mode", v)?).map_err(in_pipeline)?),
            "key" => {
                key = match v {
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| scalar_text("key", i))
                        .collect::<Result<Vec<_>>>()?,
                    other => vec![scalar_text("key", other)?],
                }
            }
            "on_schema_change" => {
                on_schema_change = SchemaPolicy::parse(&scalar_text("on_schema_change", v)?)
                    .map_err(in_pipeline)?
            }
            "checkpoint_pages" => {
                let text = scalar_text("checkpoint_pages", v)?;
                checkpoint_pages = Some(text.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(
                    || bad(format!("pipeline '{name}': checkpoint_pages must be a positive whole number, got '{text}'")),
                )?);
            }
            "cursor" => {
                let c = v.as_table().ok_or_else(|| {
                    bad(format!("pipeline '{name}': cursor must be a table, e.g. cursor = {{ kind = \"monotonic\", column = \"id\", initial = \"0\" }}"))
                })?;
                let mut spec = CursorSpec::default();
                for (ck, cv) in c {
                    let text = scalar_text(&format!("cursor.{ck}"), cv)?;
                    match ck.as_str() {
                        "kind" => spec.kind = CursorKind::parse(&text).map_err(in_pipeline)?,
                        "column" => spec.column = Some(text),
                        "initial" => spec.initial = Some(text),
                        "lag" => spec.lag = Some(text),
                        "on_null" => spec.on_null = NullRule::parse(&text).map_err(in_pipeline)?,
                        other => {
                            return Err(bad(format!(
                                "pipeline '{name}': unknown cursor key '{other}': valid keys are kind, column, initial, lag, on_null"
                            )));
                        }
                    }
                }
                cursor = Some(spec);
            }
            "schedule" => schedule = Some(schedule_spec(name, v)?),
            other => {
                return Err(bad(format!(
                    "pipeline '{name}': unknown key '{other}': valid keys are sql, cursor, mode, key, on_schema_change, checkpoint_pages, schedule"
                )));
            }
        }
    }
    let sql = sql.ok_or_else(|| {
        bad(format!("pipeline '{name}' needs sql = \"INSERT INTO context.<table> SELECT ... FROM <source>.<table>\""))
    })?;
    let body = parse_pipeline_body(&sql).map_err(in_pipeline)?;
    let snapshot = cursor
        .as_ref()
        .is_some_and(|c| c.kind == CursorKind::SnapshotId);
    let spec = PipelineSpec {
        name: name.to_string(),
        sql,
        target: body.target,
        cursor,
        mode: mode.unwrap_or(if snapshot {
            WriteMode::Replace
        } else {
            WriteMode::Append
        }),
        key,
        on_schema_change,
        checkpoint_pages,
        schedule,
        origin: Origin::Manifest,
    };
    spec.check().map_err(|e| bad(e.to_string()))?;
    Ok(spec)
}

/// `schedule = { every = "15 minutes" }` or `{ cron = "0 * * * *", tz = "Europe/Berlin" }`,
/// with the optional `jitter`, `on_missed` (skip | run_once), `retries`, `backoff` and
/// `suspend_after_failures`: the keys mirror `CREATE PIPELINE ... SCHEDULE`.
fn schedule_spec(name: &str, v: &toml::Value) -> Result<ScheduleSpec> {
    const KEYS: &str =
        "every, cron, tz, jitter, on_missed, retries, backoff, suspend_after_failures";
    let t = v.as_table().ok_or_else(|| {
        bad(format!("pipeline '{name}': schedule must be a table, e.g. schedule = {{ every = \"15 minutes\" }} or schedule = {{ cron = \"0 * * * *\", tz = \"Europe/Berlin\" }}"))
    })?;
    let in_pipeline = |e: Error| bad(format!("pipeline '{name}': {e}"));
    let text = |k: &str| -> Result<Option<String>> {
        t.get(k)
            .map(|v| scalar_text(&format!("schedule.{k}"), v))
            .transpose()
    };
    let count = |k: &str| -> Result<Option<u32>> {
        text(k)?
            .map(|s| {
                s.parse::<u32>().map_err(|_| {
                    bad(format!(
                        "pipeline '{name}': schedule.{k} must be a whole number, got '{s}'"
                    ))
                })
            })
            .transpose()
    };
    if let Some(k) = t
        .keys()
        .find(|k| !KEYS.split(", ").any(|x| x == k.as_str()))
    {
        return Err(bad(format!(
            "pipeline '{name}': unknown schedule key '{k}': valid keys are {KEYS}"
        )));
    }
    let cadence = match (text("every")?, text("cron")?) {
        (Some(every), None) => {
            if t.contains_key("tz") {
                return Err(bad(format!(
                    "pipeline '{name}': schedule.tz goes with cron, not every"
                )));
            }
            Cadence::Every(Interval::parse("schedule.every", &every).map_err(in_pipeline)?)
        }
        (None, Some(expr)) => Cadence::Cron {
            expr,
            tz: text("tz")?,
        },
        _ => {
            return Err(bad(format!(
                "pipeline '{name}': a schedule has either every = \"15 minutes\" or cron = \"0 * * * *\""
            )));
        }
    };
    let mut spec = ScheduleSpec::new(cadence);
    if let Some(j) = text("jitter")? {
        spec.jitter = Some(Interval::parse("schedule.jitter", &j).map_err(in_pipeline)?);
    }
    if let Some(m) = text("on_missed")? {
        spec.on_missed = match m.to_ascii_lowercase().replace(' ', "_").as_str() {
            "skip" => MissedPolicy::Skip,
            "run_once" => MissedPolicy::RunOnce,
            _ => {
                return Err(bad(format!(
                    "pipeline '{name}': schedule.on_missed is skip or run_once, got '{m}'"
                )));
            }
        };
    }
    spec.retries = count("retries")?.unwrap_or(0);
    if let Some(b) = text("backoff")? {
        spec.backoff = Some(Interval::parse("schedule.backoff", &b).map_err(in_pipeline)?);
    }
    spec.suspend_after = count("suspend_after_failures")?;
    Ok(spec)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"
[project]
name = "demo"

[sources.httpbin]
type = "http"
base_url = "${HAKIRI_HTTPBIN_URL:-https://httpbin.org}"
tables.anything.path = "/anything"
header = { Accept = "application/json" }

[pipelines.events]
cursor = { kind = "monotonic", column = "id", initial = 0 }
sql = "INSERT INTO context.events SELECT * FROM samples.events WHERE id > $cursor"
"#;

    #[test]
    fn parses_sources_and_pipelines() {
        let m = parse(DEMO).unwrap();
        assert_eq!(m.project, "demo");
        let s = &m.sources[0];
        assert_eq!(s.connector, "http");
        assert_eq!(s.options["tables.anything.path"], "/anything");
        assert_eq!(s.options["header.Accept"], "application/json");
        let p = &m.pipelines[0];
        assert_eq!(p.target, "events");
        assert_eq!(p.cursor.as_ref().unwrap().initial.as_deref(), Some("0"));
    }

    /// A JSON manifest with the TOML one's structure gives the same specs.
    #[test]
    fn json_manifests_give_the_same_specs_as_toml() {
        let doc: toml::Table = DEMO.parse().unwrap();
        let json = serde_json::to_string_pretty(&doc).unwrap();
        let (t, j) = (parse(DEMO).unwrap(), parse_json(&json).unwrap());
        assert_eq!(t.project, j.project);
        assert_eq!(t.sources, j.sources);
        assert_eq!(format!("{:?}", t.pipelines), format!("{:?}", j.pipelines));
        let e = parse_json(r#"{"pipelines": {"p": {"sqll": "x"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key 'sqll'"), "{e}");
        let e = parse_json("{\"project\": \n  {\"name\": }}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid JSON manifest") && e.contains("line 2"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), DEMO).unwrap();
        std::fs::write(dir.path().join(JSON_MANIFEST_FILE), &json).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("holds both hakiri.toml and hakiri.json"), "{e}");
        std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
        assert_eq!(load(dir.path()).unwrap().sources, t.sources);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse("[pipelines.p]\nsqll = 'x'").unwrap_err().to_string();
        assert!(
            e.contains("unknown key 'sqll'") && e.contains("valid keys are sql"),
            "{e}"
        );
        let e = parse("[sources.s]\nbase_url = 'x'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a type"), "{e}");
        let e = parse("[pipelines.p\nsql = 1").unwrap_err().to_string();
        assert!(e.contains("invalid TOML"), "{e}");
    }
}

/// `[serve]`: `pg_listen`, `tls_cert`, `tls_key` and `users.<name> = { password, role }`.
fn serve(value: &toml::Value) -> Result<ServeSpec> {
    let t = value
        .as_table()
        .ok_or_else(|| bad("[serve] must be a table"))?;
    let mut spec = ServeSpec::default();
    for (k, v) in t {
        match k.as_str() {
            "pg_listen" => spec.pg_listen = Some(scalar_text("serve.pg_listen", v)?),
            "tls_cert" => spec.tls_cert = Some(scalar_text("serve.tls_cert", v)?),
            "tls_key" => spec.tls_key = Some(scalar_text("serve.tls_key", v)?),
            "users" => {
                let users = v
                    .as_table()
                    .ok_or_else(|| bad("[serve.users] must be a table of users"))?;
                for (name, body) in users {
                    validate_name("user", name)?;
                    let body = body.as_table().ok_or_else(|| {
                        bad(format!(
                            "serve.users.{name} must be a table: {{ password = \"env:VAR\", role = \"read_only\" }}"
                        ))
                    })?;
                    let mut password = None;
                    let mut role = Role::ReadOnly;
                    for (key, value) in body {
                        let path = format!("serve.users.{name}.{key}");
                        match key.as_str() {
                            "password" => password = Some(scalar_text(&path, value)?),
                            "role" => role = Role::parse(&scalar_text(&path, value)?)?,
                            other => {
                                return Err(bad(format!(
                                    "unknown key 'serve.users.{name}.{other}': valid keys are password, role"
                                )));
                            }
                        }
                    }
                    let password = password.ok_or_else(|| {
                        bad(format!(
                            "serve.users.{name} needs a password (a secret reference such as 'env:HAKIRI_{}_PASSWORD')",
                            name.to_ascii_uppercase()
                        ))
                    })?;
                    spec.users.push(UserSpec {
                        name: name.clone(),
                        password,
                        role,
                    });
                }
            }
            other => {
                return Err(bad(format!(
                    "unknown key 'serve.{other}': valid keys are pg_listen, tls_cert, tls_key, users"
                )));
            }
        }
    }
    Ok(spec)
}
