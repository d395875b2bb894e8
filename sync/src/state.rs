//! The project's state as sync moves it: read from the catalog's state tables, written to
//! the remote as `state/<version>.json`, merged per table and per pipeline, and written
//! back to a catalog in one transaction.
//!
//! A table's state is its active files and schema versions; a pipeline's is its cursor
//! (value or token, and the boundary rows) and cursor history. Runs and events are history:
//! both sides' are kept (union).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use hakiri_catalog::Catalog;
use hakiri_catalog::state_tables::{RawTable, RawValue, state_table};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, SyncError};
use crate::project::Holder;

/// The format of `state/<version>.json` this build writes and reads.
pub const FORMAT: u32 = 1;

/// A state-table row, by column name.
pub type Row = BTreeMap<String, Value>;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TableState {
    /// Its `hakiri.tables` row.
    pub row: Option<Row>,
    /// Its active files (`hakiri.files` rows without `retired_at`).
    pub files: Vec<Row>,
    pub schema_versions: Vec<Row>,
    /// The Delta table's version that holds exactly these files.
    #[serde(default)]
    pub delta_version: Option<u64>,
}

impl TableState {
    /// Its active files as the store names them.
    pub fn file_entries(&self) -> Vec<hakiri_catalog::FileEntry> {
        self.files
            .iter()
            .map(|f| hakiri_catalog::FileEntry {
                path: text(f, "path").to_string(),
                table: text(f, "table_name").to_string(),
                run_id: text(f, "run_id").to_string(),
                rows: f.get("rows").and_then(Value::as_u64).unwrap_or_default(),
                bytes: f.get("bytes").and_then(Value::as_u64).unwrap_or_default(),
            })
            .collect()
    }

    pub fn paths(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .filter_map(|r| r.get("path").and_then(Value::as_str).map(str::to_string))
            .collect()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PipelineState {
    pub cursor: Option<Row>,
    pub history: Vec<Row>,
}

/// The state of a project, as pushed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub version: u64,
    pub pushed_by: Option<Holder>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub tables: BTreeMap<String, TableState>,
    pub pipelines: BTreeMap<String, PipelineState>,
    /// `hakiri.sources` and `hakiri.pipelines` rows: the definitions.
    pub source_defs: Vec<Row>,
    pub pipeline_defs: Vec<Row>,
    pub runs: Vec<Row>,
    pub events: Vec<Row>,
}

/// What tells two states apart: per table its file paths and schema versions, per pipeline
/// its cursor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Fingerprint {
    pub tables: BTreeMap<String, (BTreeSet<String>, usize)>,
    pub pipelines: BTreeMap<String, Option<Row>>,
}

fn to_json(v: &RawValue) -> Value {
    match v {
        RawValue::Null => Value::Null,
        RawValue::Int(i) => Value::from(*i),
        RawValue::Float(f) => Value::from(*f),
        RawValue::Text(t) => Value::from(t.clone()),
    }
}

fn from_json(v: Option<&Value>) -> RawValue {
    match v {
        None | Some(Value::Null) => RawValue::Null,
        Some(Value::Bool(b)) => RawValue::Int(i64::from(*b)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => RawValue::Int(i),
            None => RawValue::Float(n.as_f64().unwrap_or_default()),
        },
        Some(Value::String(s)) => RawValue::Text(s.clone()),
        Some(other) => RawValue::Text(other.to_string()),
    }
}

fn rows(catalog: &dyn Catalog, table: &str) -> Result<Vec<Row>> {
    let raw = catalog.state_table(table)?;
    Ok(raw
        .rows
        .iter()
        .map(|r| {
            raw.columns
                .iter()
                .zip(r)
                .map(|((name, _), v)| (name.clone(), to_json(v)))
                .collect()
        })
        .collect())
}

fn text<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or_default()
}

impl State {
    /// The committed state of a project's catalog.
    pub fn of_catalog(catalog: &dyn Catalog) -> Result<State> {
        let mut state = State {
            format: FORMAT,
            ..State::default()
        };
        for row in rows(catalog, "tables")? {
            let name = text(&row, "name").to_string();
            state.tables.entry(name).or_default().row = Some(row);
        }
        for row in rows(catalog, "files")? {
            if row.get("retired_at").is_some_and(|v| !v.is_null()) {
                continue;
            }
            let t = text(&row, "table_name").to_string();
            state.tables.entry(t).or_default().files.push(row);
        }
        for row in rows(catalog, "schema_versions")? {
            let t = text(&row, "table_name").to_string();
            state.tables.entry(t).or_default().schema_versions.push(row);
        }
        for row in rows(catalog, "cursors")? {
            let p = text(&row, "pipeline").to_string();
            state.pipelines.entry(p).or_default().cursor = Some(row);
        }
        for row in rows(catalog, "cursor_history")? {
            let p = text(&row, "pipeline").to_string();
            state.pipelines.entry(p).or_default().history.push(row);
        }
        state.source_defs = rows(catalog, "sources")?;
        state.pipeline_defs = rows(catalog, "pipelines")?;
        // A run still running is this project's business: its row is shared once it ends
        // (another project would read it as a live run of its own).
        state.runs = rows(catalog, "runs")?
            .into_iter()
            .filter(|r| text(r, "status") != "running")
            .collect();
        state.events = rows(catalog, "events")?;
        Ok(state)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            tables: self
                .tables
                .iter()
                .filter(|(_, t)| !t.files.is_empty() || !t.schema_versions.is_empty())
                .map(|(name, t)| (name.clone(), (t.paths(), t.schema_versions.len())))
                .collect(),
            pipelines: self
                .pipelines
                .iter()
                .filter(|(_, p)| p.cursor.is_some())
                .map(|(name, p)| (name.clone(), p.cursor.clone()))
                .collect(),
        }
    }

    /// The remote state at `key`.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<State> {
        let state: State = serde_json::from_slice(bytes).map_err(|e| SyncError::State {
            key: key.to_string(),
            message: format!("does not read ({e})"),
        })?;
        if state.format > FORMAT {
            return Err(SyncError::State {
                key: key.to_string(),
                message: format!(
                    "has format {}, newer than this Hakiri reads ({FORMAT}): upgrade Hakiri",
                    state.format
                ),
            }
            .into());
        }
        Ok(state)
    }
}

/// What a side changed since the base: tables and pipelines.
#[derive(Debug, Default)]
pub struct Changes {
    pub tables: BTreeSet<String>,
    pub pipelines: BTreeSet<String>,
}

impl Changes {
    pub fn between(base: &Fingerprint, now: &Fingerprint) -> Changes {
        let keys = |a: Vec<&String>, b: Vec<&String>| -> BTreeSet<String> {
            a.into_iter().chain(b).cloned().collect()
        };
        Changes {
            tables: keys(base.tables.keys().collect(), now.tables.keys().collect())
                .into_iter()
                .filter(|t| base.tables.get(t) != now.tables.get(t))
                .collect(),
            pipelines: keys(
                base.pipelines.keys().collect(),
                now.pipelines.keys().collect(),
            )
            .into_iter()
            .filter(|p| base.pipelines.get(p) != now.pipelines.get(p))
            .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.pipelines.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.tables.is_empty() {
            let t: Vec<&str> = self.tables.iter().map(String::as_str).collect();
            parts.push(format!("table(s) {}", t.join(", ")));
        }
        if !self.pipelines.is_empty() {
            let p: Vec<&str> = self.pipelines.iter().map(String::as_str).collect();
            parts.push(format!("pipeline(s) {}", p.join(", ")));
        }
        parts.join(" and ")
    }
}

/// Rows of both sides, `ours` first, without repeats by `key`.
fn union(ours: &[Row], theirs: &[Row], key: impl Fn(&Row) -> String) -> Vec<Row> {
    let mut seen = BTreeSet::new();
    ours.iter()
        .chain(theirs)
        .filter(|r| seen.insert(key(r)))
        .cloned()
        .collect()
}

fn event_key(r: &Row) -> String {
    ["at", "kind", "subject", "message", "run_id"]
        .iter()
        .map(|c| r.get(*c).map(Value::to_string).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// `ours` with what `theirs` changed since `base` (tables and pipelines ours did not
/// change), history of both, and definitions ours lacks.
///
/// # Errors
/// `Conflict` when both sides changed one table or pipeline, differently.
pub fn merge(base: &Fingerprint, ours: &State, theirs: &State, theirs_by: &str) -> Result<State> {
    let (of, tf) = (ours.fingerprint(), theirs.fingerprint());
    let (mine, other) = (Changes::between(base, &of), Changes::between(base, &tf));
    let mut out = ours.clone();
    for t in &other.tables {
        if mine.tables.contains(t) && of.tables.get(t) != tf.tables.get(t) {
            return Err(SyncError::Conflict {
                what: format!("table '{t}'"),
                pusher: theirs_by.to_string(),
            }
            .into());
        }
        match theirs.tables.get(t) {
            Some(ts) => out.tables.insert(t.clone(), ts.clone()),
            None => out.tables.remove(t),
        };
    }
    for p in &other.pipelines {
        if mine.pipelines.contains(p) && of.pipelines.get(p) != tf.pipelines.get(p) {
            return Err(SyncError::Conflict {
                what: format!("pipeline '{p}'"),
                pusher: theirs_by.to_string(),
            }
            .into());
        }
        match theirs.pipelines.get(p) {
            Some(ps) => out.pipelines.insert(p.clone(), ps.clone()),
            None => out.pipelines.remove(p),
        };
    }
    // A table whose files both sides agree on keeps the Delta version theirs recorded.
    for (t, ts) in &theirs.tables {
        if let Some(o) = out.tables.get_mut(t)
            && o.delta_version.is_none()
            && o.paths() == ts.paths()
        {
            o.delta_version = ts.delta_version;
        }
    }
    with_history_of_both(&mut out, ours, theirs);
    Ok(out)
}

/// `out` gets the runs and events of both sides and the definitions of both, `ours`
/// first.
fn with_history_of_both(out: &mut State, ours: &State, theirs: &State) {
    out.runs = union(&ours.runs, &theirs.runs, |r| text(r, "run_id").to_string());
    out.events = union(&ours.events, &theirs.events, event_key);
    out.source_defs = union(&ours.source_defs, &theirs.source_defs, |r| {
        text(r, "name").to_string()
    });
    out.pipeline_defs = union(&ours.pipeline_defs, &theirs.pipeline_defs, |r| {
        text(r, "name").to_string()
    });
}

/// `theirs`' tables and pipelines, with the history (runs, events) of both and the
/// definitions of both (`ours` first): a pull.
pub fn adopt(theirs: &State, ours: &State) -> State {
    let mut out = theirs.clone();
    with_history_of_both(&mut out, ours, theirs);
    out
}

fn raw(table: &str, rows: &[Row]) -> Result<RawTable> {
    let decl = state_table(table)
        .ok_or_else(|| hakiri_core::Error::Internal(format!("no state table '{table}'")))?;
    // A state pushed by an older build lacks the columns added since: they are left out of
    // the insert, so the catalog gives them their declared defaults (not NULL).
    let columns: Vec<_> = decl
        .columns()
        .into_iter()
        .filter(|(c, _)| rows.is_empty() || rows.iter().any(|r| r.contains_key(c)))
        .collect();
    Ok(RawTable {
        rows: rows
            .iter()
            .map(|r| columns.iter().map(|(c, _)| from_json(r.get(c))).collect())
            .collect(),
        columns,
    })
}

/// Renumbers an `id` column (autoincrement ids of two projects collide), ordered by `by`.
fn renumber(mut rows: Vec<Row>, by: &str) -> Vec<Row> {
    rows.sort_by(|a, b| text(a, by).cmp(text(b, by)));
    for (i, r) in rows.iter_mut().enumerate() {
        r.insert("id".into(), Value::from(i as i64 + 1));
    }
    rows
}

impl State {
    /// The state tables to write into a catalog for this state; `retired` are the local
    /// file rows to keep (retired, on disk for their grace period).
    pub fn to_raw(&self, retired: Vec<Row>) -> Result<Vec<(String, RawTable)>> {
        let mut files = retired;
        let mut tables = Vec::new();
        let mut schema_versions = Vec::new();
        for t in self.tables.values() {
            files.extend(t.files.iter().cloned());
            tables.extend(t.row.iter().cloned());
            schema_versions.extend(t.schema_versions.iter().cloned());
        }
        let mut cursors = Vec::new();
        let mut history = Vec::new();
        for p in self.pipelines.values() {
            cursors.extend(p.cursor.iter().cloned());
            history.extend(p.history.iter().cloned());
        }
        Ok(vec![
            ("sources".into(), raw("sources", &self.source_defs)?),
            ("pipelines".into(), raw("pipelines", &self.pipeline_defs)?),
            ("runs".into(), raw("runs", &self.runs)?),
            ("tables".into(), raw("tables", &tables)?),
            ("files".into(), raw("files", &files)?),
            (
                "schema_versions".into(),
                raw("schema_versions", &schema_versions)?,
            ),
            ("cursors".into(), raw("cursors", &cursors)?),
            (
                "cursor_history".into(),
                raw("cursor_history", &renumber(history, "committed_at"))?,
            ),
            (
                "events".into(),
                raw("events", &renumber(self.events.clone(), "at"))?,
            ),
        ])
    }
}

/// The local file rows that stay as retired after the local state becomes `new`: those
/// retired already, and active ones `new` drops (retired now, so readers keep them for the
/// grace period).
pub fn retired_rows(catalog: &dyn Catalog, new: &State, now: DateTime<Utc>) -> Result<Vec<Row>> {
    let keep: BTreeSet<String> = new.tables.values().flat_map(|t| t.paths()).collect();
    let stamp = Value::from(now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    Ok(rows(catalog, "files")?
        .into_iter()
        .filter(|r| !keep.contains(text(r, "path")))
        .map(|mut r| {
            if r.get("retired_at").is_none_or(Value::is_null) {
                r.insert("retired_at".into(), stamp.clone());
            }
            r
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(table: &str, path: &str) -> Row {
        [
            ("path".to_string(), json!(path)),
            ("table_name".to_string(), json!(table)),
        ]
        .into_iter()
        .collect()
    }

    fn state(tables: &[(&str, &[&str])], cursors: &[(&str, &str)]) -> State {
        let mut s = State::default();
        for (t, files) in tables {
            s.tables.insert(
                t.to_string(),
                TableState {
                    files: files.iter().map(|f| file(t, f)).collect(),
                    ..Default::default()
                },
            );
        }
        for (p, v) in cursors {
            s.pipelines.insert(
                p.to_string(),
                PipelineState {
                    cursor: Some([("value".to_string(), json!(v))].into_iter().collect()),
                    history: vec![],
                },
            );
        }
        s
    }

    /// Each side keeps what it changed and takes what the other changed; a table both
    /// changed is a conflict.
    #[test]
    fn merge_takes_each_sides_changes_and_refuses_a_shared_one() {
        let base = state(
            &[("a", &["a/1"]), ("b", &["b/1"])],
            &[("pa", "1"), ("pb", "1")],
        );
        let ours = state(
            &[("a", &["a/1", "a/2"]), ("b", &["b/1"])],
            &[("pa", "2"), ("pb", "1")],
        );
        let theirs = state(
            &[("a", &["a/1"]), ("b", &["b/1", "b/2"])],
            &[("pa", "1"), ("pb", "5")],
        );
        let merged = merge(&base.fingerprint(), &ours, &theirs, "B").unwrap();
        assert_eq!(merged.tables["a"].paths().len(), 2);
        assert_eq!(merged.tables["b"].paths().len(), 2);
        assert_eq!(
            merged.pipelines["pa"].cursor.as_ref().unwrap()["value"],
            "2"
        );
        assert_eq!(
            merged.pipelines["pb"].cursor.as_ref().unwrap()["value"],
            "5"
        );

        let theirs = state(
            &[("a", &["a/1", "a/3"]), ("b", &["b/1"])],
            &[("pa", "1"), ("pb", "1")],
        );
        let err = merge(&base.fingerprint(), &ours, &theirs, "B").unwrap_err();
        assert!(
            err.to_string()
                .contains("table 'a' changed here and on the remote (pushed by B)"),
            "{err}"
        );
        // The same change on both sides is no conflict.
        assert!(merge(&base.fingerprint(), &ours, &ours.clone(), "B").is_ok());
    }

    /// Columns an older build's state lacks are left out, for the catalog's defaults.
    #[test]
    fn columns_a_state_lacks_are_left_to_their_defaults() {
        let row: Row = [
            ("run_id".to_string(), json!("r1")),
            ("status".to_string(), json!("succeeded")),
        ]
        .into_iter()
        .collect();
        let t = raw("runs", &[row]).unwrap();
        let names: Vec<&str> = t.columns.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, vec!["run_id", "status"]);
        assert_eq!(t.rows[0].len(), 2);
        assert!(raw("runs", &[]).unwrap().columns.len() > 2);
    }

    #[test]
    fn changes_name_what_moved() {
        let base = state(&[("a", &["a/1"])], &[("pa", "1")]);
        let now = state(&[("a", &["a/1"]), ("c", &["c/1"])], &[("pa", "2")]);
        let c = Changes::between(&base.fingerprint(), &now.fingerprint());
        assert_eq!(c.describe(), "table(s) c and pipeline(s) pa");
        assert!(Changes::between(&base.fingerprint(), &base.fingerprint()).is_empty());
    }
}
