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

use std::path::{Path, PathBuf};

use hakiri_core::types::{
    AlertKind, AlertSpec, CatalogSpec, PipelineSpec, RetentionSpec, ServeSpec, SourceSpec,
    StoreSpec, SyncSpec,
};
use hakiri_core::{Error, Result};

mod doc;

use doc::ManifestDoc as Doc;
pub use doc::{ManifestDoc, json_schema};

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
    /// `[sync]`: where `hakiri sync` shares the store, when the project does.
    pub sync: Option<SyncSpec>,
    /// `[retention]`: how long state rows are kept.
    pub retention: RetentionSpec,
    /// `[store]`: compaction's target size, cadence and sort keys.
    pub store: StoreSpec,
    /// `[alerts.<name>]`: the webhooks `serve` posts alerts to.
    pub alerts: Vec<AlertSpec>,
    /// `[catalog]`: a shared Postgres catalog instead of `.hakiri/catalog.db`.
    pub catalog: Option<CatalogSpec>,
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
        (true, true) => Err(Error::Config(format!(
            "{} holds both {MANIFEST_FILE} and {JSON_MANIFEST_FILE}: a project has one manifest; remove or rename one of them",
            dir.display()
        ))),
        (true, false) => Ok(toml),
        (false, true) => Ok(json),
        (false, false) => Err(Error::Config(format!(
            "{} holds no {MANIFEST_FILE} (or {JSON_MANIFEST_FILE}): create a project with `hakiri init NAME`",
            dir.display()
        ))),
    }
}

/// Reads and checks the project's manifest, `<dir>/hakiri.toml` or `<dir>/hakiri.json`.
///
/// # Errors
/// `Manifest` naming the file, the line and column and the valid choices; `Config` when
/// the file cannot be read.
pub fn load(dir: &Path) -> Result<Manifest> {
    let path = manifest_path(dir)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let format = if path.extension().is_some_and(|x| x == "json") {
        Format::Json
    } else {
        Format::Toml
    };
    read(&path.display().to_string(), &text, format)
}

/// Parses TOML manifest text (errors name the file `hakiri.toml`).
pub fn parse(text: &str) -> Result<Manifest> {
    read(MANIFEST_FILE, text, Format::Toml)
}

/// Parses a JSON manifest: the same structure as the TOML one, read by the same types, so
/// both give the same specs (errors name the file `hakiri.json`).
pub fn parse_json(text: &str) -> Result<Manifest> {
    read(JSON_MANIFEST_FILE, text, Format::Json)
}

#[derive(Clone, Copy)]
enum Format {
    Toml,
    Json,
}

fn read(path: &str, text: &str, format: Format) -> Result<Manifest> {
    let doc = match format {
        Format::Toml => read_toml(text),
        Format::Json => read_json(text),
    }
    .map_err(|(line, column, message)| Error::Manifest {
        path: path.to_string(),
        line,
        column,
        message,
    })?;
    let serve = doc.serve.map(|s| ServeSpec {
        pg_listen: s.pg_listen,
        tls_cert: s.tls_cert,
        tls_key: s.tls_key,
        users: s.users.0,
    });
    if doc.sync.is_some()
        && let Some(store) = &doc.store
        && store.encryption_key.is_some()
    {
        // Sync publishes Delta tables for engines that have no store key.
        return Err(Error::Config(format!(
            "{path}: [sync] and [store] encryption_key cannot be used together: sync shares the store as Delta Lake tables that Spark, Trino and DuckDB read without a key, so encrypted files would be unreadable there; remove one of them"
        )));
    }
    if doc.sync.is_some() && doc.catalog.is_some() {
        // Pulling replaces the catalog's state: with a shared catalog, everyone's.
        return Err(Error::Config(format!(
            "{path}: [sync] and [catalog] cannot be used together: a shared Postgres catalog already shares the project's state, and sync pull would replace it for every folder using it; use one of them"
        )));
    }
    if let Some(store) = &doc.store
        && store.encryption_key.is_none()
        && !store.previous_keys.is_empty()
    {
        return Err(Error::Config(format!(
            "{path}: [store] previous_keys needs encryption_key, the key files are written with now: to decrypt the store for good, rotate to a new key first"
        )));
    }
    let mut alerts = Vec::new();
    for (name, a) in doc.alerts {
        let bad = |m: String| Error::Config(format!("{path}: [alerts.{name}]: {m}"));
        let url = webhook_url(&a.url).map_err(bad)?;
        let on = match a.on {
            None => vec![AlertKind::Failed, AlertKind::Suspended, AlertKind::Stale],
            Some(on) => on
                .into_iter()
                .map(|k| match k {
                    doc::AlertOn::Failed => AlertKind::Failed,
                    doc::AlertOn::Suspended => AlertKind::Suspended,
                    doc::AlertOn::Stale => AlertKind::Stale,
                })
                .collect(),
        };
        let stale_after = match a.stale_after {
            Some(i) => i,
            None => hakiri_core::schedule::Interval::parse("stale_after", "2 hours")?,
        };
        alerts.push(AlertSpec {
            name,
            url,
            on,
            stale_after,
        });
    }
    Ok(Manifest {
        alerts,
        catalog: doc.catalog.map(|c| CatalogSpec {
            url: c.url,
            schema: c.schema.unwrap_or_else(|| "hakiri".to_string()),
        }),
        project: doc.project.and_then(|p| p.name).unwrap_or_default(),
        sources: doc.sources.0,
        pipelines: doc.pipelines.0,
        serve: serve.unwrap_or_default(),
        sync: doc.sync.map(|s| SyncSpec {
            url: s.url,
            endpoint: s.endpoint,
            region: s.region,
            access_key_id: s.access_key_id,
            secret_access_key: s.secret_access_key,
            session_token: s.session_token,
            lease_ttl: s.lease_ttl,
        }),
        retention: doc
            .retention
            .map(|r| RetentionSpec {
                runs: r.runs,
                events: r.events,
                cursor_history: r.cursor_history,
            })
            .unwrap_or_default(),
        store: doc
            .store
            .map(|s| StoreSpec {
                compact_target_mb: s.compact_target_mb,
                compact_every: s.compact_every,
                encryption_key: s.encryption_key,
                previous_keys: s.previous_keys,
                sort_by: s
                    .sort_by
                    .into_iter()
                    .map(|(t, cols)| {
                        let cols = cols
                            .split(',')
                            .map(|c| c.trim().to_string())
                            .filter(|c| !c.is_empty())
                            .collect();
                        (t, cols)
                    })
                    .collect(),
            })
            .unwrap_or_default(),
    })
}

/// (line, column, message) of a failed read.
type Located = (usize, usize, String);

fn read_toml(text: &str) -> std::result::Result<Doc, Located> {
    let at = |e: &toml::de::Error| {
        let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
        (line, column, e.message().trim_end().to_string())
    };
    // Syntax first, so a broken file says "invalid TOML" rather than a key's complaint.
    if let Err(e) = text.parse::<toml::Table>() {
        let (line, column, message) = at(&e);
        return Err((line, column, format!("invalid TOML: {message}")));
    }
    toml::from_str(text).map_err(|e| at(&e))
}

fn read_json(text: &str) -> std::result::Result<Doc, Located> {
    serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        let message = match e.classify() {
            serde_json::error::Category::Data => message,
            _ => format!(
                "invalid JSON manifest: {message} (it is an object with the sections of hakiri.toml: project, sources, pipelines, serve)"
            ),
        };
        (e.line(), e.column(), message)
    })
}

/// The 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod fuzz;

/// A webhook URL must be http(s) with a host, or a secret reference (`env:NAME`).
fn webhook_url(url: &str) -> std::result::Result<String, String> {
    if url.starts_with("env:") {
        return Ok(url.to_string());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("url '{url}' must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("url '{url}' has no host"));
    }
    Ok(url.to_string())
}

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
        assert!(e.contains("unknown field `sqll`"), "{e}");
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

    /// Regression: an encrypted store could be synced, publishing Delta tables no reader
    /// without the key can open.
    #[test]
    fn an_encrypted_store_cannot_be_synced() {
        let e = parse(
            "[sync]\nurl = \"file:///tmp/x\"\n[store]\nencryption_key = \"env:HAKIRI_STORE_KEY\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[sync] and [store] encryption_key cannot be used together"),
            "{e}"
        );
        assert!(parse("[store]\nencryption_key = \"env:K\"\n").is_ok());
        assert!(parse("[sync]\nurl = \"file:///tmp/x\"\n").is_ok());
        let e = parse("[sync]\nurl = \"file:///tmp/x\"\n[catalog]\nurl = \"postgres://h/db\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[sync] and [catalog] cannot be used together"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse("[pipelines.p]\nsqll = 'x'").unwrap_err().to_string();
        assert!(
            e.contains("unknown field `sqll`, expected one of `sql`, `cursor`"),
            "{e}"
        );
        let e = parse("[sources.s]\nbase_url = 'x'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1 column 1: missing field `type`"), "{e}");
        let e = parse("[pipelines.p\nsql = 1").unwrap_err().to_string();
        assert!(e.contains("invalid TOML"), "{e}");
        let e = parse("[sources.\"bad name\"]\ntype = 'http'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid source name 'bad name'"), "{e}");
    }

    /// The three mistakes the issue names, in TOML and JSON: each error gives the file, the
    /// line and column, and the valid choices.
    #[test]
    fn errors_give_file_line_column_and_choices_in_both_formats() {
        let sql = "INSERT INTO context.t SELECT * FROM s.t WHERE id > $cursor";
        let cases = [
            // An unknown key.
            (
                format!("[pipelines.p]\nsql = \"{sql}\"\nmodee = \"merge\"\n"),
                format!(
                    "{{\n  \"pipelines\": {{\"p\": {{\"sql\": \"{sql}\",\n    \"modee\": \"merge\"}}}}}}"
                ),
                "unknown field `modee`, expected one of `sql`, `cursor`, `mode`",
            ),
            // A wrong type.
            (
                format!("[pipelines.p]\nsql = \"{sql}\"\ncheckpoint_pages = \"ten\"\n"),
                format!(
                    "{{\n  \"pipelines\": {{\"p\": {{\"sql\": \"{sql}\",\n    \"checkpoint_pages\": \"ten\"}}}}}}"
                ),
                "invalid type: string \"ten\", expected u64",
            ),
            // A bad cursor clause.
            (
                format!(
                    "[pipelines.p]\nsql = \"{sql}\"\ncursor = {{ kind = \"montonic\", column = \"id\" }}\n"
                ),
                format!(
                    "{{\n  \"pipelines\": {{\"p\": {{\"sql\": \"{sql}\",\n    \"cursor\": {{\"kind\": \"montonic\", \"column\": \"id\"}}}}}}}}"
                ),
                "unknown cursor kind 'montonic': valid kinds are monotonic, token",
            ),
        ];
        for (toml, json, want) in cases {
            let t = parse(&toml).unwrap_err();
            let j = parse_json(&json).unwrap_err();
            for (e, file) in [(&t, MANIFEST_FILE), (&j, JSON_MANIFEST_FILE)] {
                let Error::Manifest {
                    path,
                    line,
                    column,
                    message,
                } = e
                else {
                    panic!("not a manifest error: {e:?}");
                };
                assert_eq!(path, file);
                assert!(message.contains(want), "{file}: {message}");
                assert_eq!(*line, 3, "{file}: {e}");
                assert!(*column >= 1, "{file}: {e}");
                assert!(
                    e.to_string()
                        .starts_with(&format!("{file}, line 3 column ")),
                    "{e}"
                );
            }
        }
    }

    /// The builder's checks (clauses that do not fit together) point at the pipeline.
    #[test]
    fn builder_errors_point_at_the_pipeline() {
        let toml = "[project]\nname = 'x'\n\n[pipelines.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t WHERE id > $cursor\"\ncursor = { column = \"id\", lag = \"5\" }\n";
        let e = parse(toml).unwrap_err();
        let Error::Manifest { line, message, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(
            message.contains("pipeline 'p': LAG reads rows again"),
            "{e}"
        );
        assert!(*line >= 4, "{e}");
        // A snapshot cursor implies MODE REPLACE, from the same builder as SQL.
        let m = parse("[pipelines.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\ncursor = { kind = \"snapshot\" }\n").unwrap();
        assert_eq!(m.pipelines[0].mode, hakiri_core::types::WriteMode::Replace);
        // Regression: `suspend_after_failures = 0` was stored as SUSPEND AFTER 0 FAILURES,
        // which the SQL parser refuses, so the next open failed; BACKOFF without RETRY was
        // dropped from the stored definition, so every open saw the pipeline as changed.
        let sql = "sql = \"INSERT INTO context.t SELECT * FROM s.t\"";
        for (schedule, want) in [
            (
                "{ every = \"1 hour\", suspend_after_failures = 0 }",
                "SUSPEND AFTER",
            ),
            (
                "{ every = \"1 hour\", backoff = \"1 minute\" }",
                "BACKOFF goes with RETRY",
            ),
        ] {
            let e = parse(&format!("[pipelines.p]\n{sql}\nschedule = {schedule}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        // `$schema` is allowed at the top of a JSON manifest, for editors.
        parse_json(r#"{"$schema": "./hakiri.schema.json", "project": {"name": "x"}}"#).unwrap();
    }
}
