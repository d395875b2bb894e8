//! Core types shared by every crate: cursors, write modes, pipeline and source specs, runs.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};
use crate::schedule::{ScheduleBuilder, ScheduleSpec};

/// Makes a keyword enum readable from a manifest: deserialized with its `parse` (the one
/// reader of its spellings, also used by SQL, so both accept the same words) and described
/// in the JSON Schema by its `SPELLINGS` (a unit test checks each one parses).
macro_rules! keyword_enum {
    ($ty:ty, $doc:literal) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$ty>::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "enum": <$ty>::SPELLINGS,
                    "description": $doc,
                })
            }
        }
    };
}
pub(crate) use keyword_enum;

/// How a pipeline remembers where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CursorKind {
    /// A column whose committed maximum is stored; the next run reads rows past it.
    #[default]
    Monotonic,
    /// A resume token handed back by the source (next-page token, sync token).
    OpaqueToken,
    /// Each run is a full snapshot identified by an ETag, content hash or snapshot id.
    SnapshotId,
}

keyword_enum!(
    CursorKind,
    "How the pipeline remembers where it stopped: monotonic (a column's maximum), token (the source's resume token) or snapshot (a full snapshot per change)."
);

impl CursorKind {
    pub const SPELLINGS: &[&str] = &[
        "monotonic",
        "token",
        "opaque_token",
        "snapshot",
        "snapshot_id",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CursorKind::Monotonic => "monotonic",
            CursorKind::OpaqueToken => "opaque_token",
            CursorKind::SnapshotId => "snapshot_id",
        }
    }

    /// The keyword in `CREATE PIPELINE ... CURSOR <keyword>`.
    pub fn keyword(self) -> &'static str {
        match self {
            CursorKind::Monotonic => "MONOTONIC",
            CursorKind::OpaqueToken => "TOKEN",
            CursorKind::SnapshotId => "SNAPSHOT",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "monotonic" => Ok(CursorKind::Monotonic),
            "opaque_token" | "token" => Ok(CursorKind::OpaqueToken),
            "snapshot_id" | "snapshot" => Ok(CursorKind::SnapshotId),
            other => Err(Error::InvalidInput(format!(
                "unknown cursor kind '{other}': valid kinds are monotonic, token (also opaque_token) and snapshot (also snapshot_id)"
            ))),
        }
    }
}

/// What a monotonic cursor does with rows whose cursor column is NULL. Such rows never
/// compare greater than a cursor, so without a rule they would vanish; Hakiri lets them
/// through the cursor predicate and applies the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NullRule {
    /// The run fails, naming how many rows had a NULL cursor (the default).
    #[default]
    Fail,
    /// The rows are left out, counted in `hakiri.runs.rows_skipped` and reported in an event.
    Skip,
    /// The rows are loaded; they do not move the cursor (every run loads them again, so use
    /// it with MODE MERGE).
    Load,
}

keyword_enum!(
    NullRule,
    "What happens to rows whose cursor column is NULL: fail the run (default), skip them, or load them without moving the cursor."
);

impl NullRule {
    pub const SPELLINGS: &[&str] = &["fail", "skip", "load"];

    pub fn as_str(self) -> &'static str {
        match self {
            NullRule::Fail => "fail",
            NullRule::Skip => "skip",
            NullRule::Load => "load",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(NullRule::Fail),
            "skip" => Ok(NullRule::Skip),
            "load" => Ok(NullRule::Load),
            other => Err(Error::InvalidInput(format!(
                "unknown NULL cursor rule '{other}': valid rules are fail, skip, load"
            ))),
        }
    }
}

/// A pipeline's cursor declaration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CursorSpec {
    pub kind: CursorKind,
    /// For `Monotonic`: the column of the SELECT's output whose maximum is stored.
    pub column: Option<String>,
    /// The value bound to `$cursor` before the first committed run.
    pub initial: Option<String>,
    /// For `Monotonic`: `$cursor` is bound to the committed value minus this (a number, or an
    /// interval such as '1 hour' for timestamps), so a window is read again.
    pub lag: Option<String>,
    /// For `Monotonic`: what happens to rows whose cursor is NULL.
    pub on_null: NullRule,
}

/// What a run does when its rows do not fit the context table's column types. New columns
/// are always added and widening changes (int to bigint, int to double) always applied;
/// the policy decides the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaPolicy {
    /// The column becomes a variant: JSON text holding every value (the default).
    #[default]
    Evolve,
    /// The run fails and nothing is committed.
    Freeze,
    /// Rows whose value does not fit are left out and counted in `rows_discarded`.
    Discard,
}

keyword_enum!(
    SchemaPolicy,
    "What a run does with rows that do not fit the table's column types: evolve (the column becomes JSON text, default), freeze (fail) or discard (leave the rows out)."
);

impl SchemaPolicy {
    pub const SPELLINGS: &[&str] = &["evolve", "freeze", "discard"];

    pub fn as_str(self) -> &'static str {
        match self {
            SchemaPolicy::Evolve => "evolve",
            SchemaPolicy::Freeze => "freeze",
            SchemaPolicy::Discard => "discard",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "evolve" => Ok(SchemaPolicy::Evolve),
            "freeze" => Ok(SchemaPolicy::Freeze),
            "discard" => Ok(SchemaPolicy::Discard),
            other => Err(Error::InvalidInput(format!(
                "unknown schema change policy '{other}': valid policies are evolve, freeze, discard"
            ))),
        }
    }
}

/// A cursor's committed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub pipeline: String,
    pub kind: CursorKind,
    pub value: Option<String>,
}

/// How a run's rows land in its context table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// New rows are added next to the existing ones.
    #[default]
    Append,
    /// Rows are merged on the pipeline's key: the latest row of a key wins, also among
    /// duplicates within one run.
    Merge,
    /// The run's rows replace the table's contents in one catalog transaction.
    Replace,
}

keyword_enum!(
    WriteMode,
    "How rows land in the context table: append, merge (on key) or replace (default replace for a snapshot cursor, append otherwise)."
);

impl WriteMode {
    pub const SPELLINGS: &[&str] = &["append", "merge", "replace"];

    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Append => "append",
            WriteMode::Merge => "merge",
            WriteMode::Replace => "replace",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "append" => Ok(WriteMode::Append),
            "replace" => Ok(WriteMode::Replace),
            "merge" => Ok(WriteMode::Merge),
            other => Err(Error::InvalidInput(format!(
                "unknown write mode '{other}': valid modes are append, merge, replace"
            ))),
        }
    }
}

/// Where a pipeline or source definition came from; a manifest sync only touches its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    #[default]
    Manifest,
    Sql,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Manifest => "manifest",
            Origin::Sql => "sql",
        }
    }
    pub fn parse(s: &str) -> Self {
        if s == "sql" {
            Origin::Sql
        } else {
            Origin::Manifest
        }
    }
}

/// A named connection of one connector type. Option values may hold secret references
/// (`env:NAME`), which are resolved only when a connector is built, never stored resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub name: String,
    pub connector: String,
    pub options: BTreeMap<String, String>,
    pub origin: Origin,
}

/// A pipeline: `INSERT INTO context.<target> SELECT ...` plus its cursor and write mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSpec {
    pub name: String,
    /// The pipeline body: `INSERT INTO context.t SELECT ...`, possibly using `$cursor`.
    pub sql: String,
    /// The context table the body inserts into (derived from `sql`).
    pub target: String,
    pub cursor: Option<CursorSpec>,
    pub mode: WriteMode,
    /// For `Merge`: the columns that identify a row.
    pub key: Vec<String>,
    pub on_schema_change: SchemaPolicy,
    /// For a token cursor: commit data and token every this many pages (default 10).
    pub checkpoint_pages: Option<u64>,
    /// When `hakiri serve` runs the pipeline on its own.
    pub schedule: Option<ScheduleSpec>,
    pub origin: Origin,
}

/// A pipeline's clauses as given, by `CREATE PIPELINE` or by a manifest: the one place that
/// owns the defaults (a snapshot cursor implies MODE REPLACE, otherwise APPEND; ON SCHEMA
/// CHANGE EVOLVE) and, through [`PipelineSpec::check`], every check across clauses.
#[derive(Debug, Clone)]
pub struct PipelineBuilder {
    pub name: String,
    /// `INSERT INTO context.<table> SELECT ...`, kept as given.
    pub sql: String,
    pub cursor: Option<CursorSpec>,
    pub mode: Option<WriteMode>,
    pub key: Vec<String>,
    pub on_schema_change: Option<SchemaPolicy>,
    pub checkpoint_pages: Option<u64>,
    pub schedule: ScheduleBuilder,
    pub origin: Origin,
}

impl PipelineBuilder {
    pub fn new(name: impl Into<String>, sql: impl Into<String>, origin: Origin) -> Self {
        PipelineBuilder {
            name: name.into(),
            sql: sql.into(),
            cursor: None,
            mode: None,
            key: Vec::new(),
            on_schema_change: None,
            checkpoint_pages: None,
            schedule: ScheduleBuilder::default(),
            origin,
        }
    }

    /// The checked spec. Errors name the pipeline.
    pub fn build(self) -> Result<PipelineSpec> {
        validate_name("pipeline", &self.name)?;
        let name = self.name;
        let in_pipeline = |e: Error| e.context(|e| format!("pipeline '{name}': {e}"));
        let body = crate::sql::parse_pipeline_body(&self.sql).map_err(in_pipeline)?;
        // A snapshot replaces the table: that is its only sensible write mode.
        let snapshot = self
            .cursor
            .as_ref()
            .is_some_and(|c| c.kind == CursorKind::SnapshotId);
        let default_mode = if snapshot {
            WriteMode::Replace
        } else {
            WriteMode::Append
        };
        let schedule = self.schedule.build().map_err(in_pipeline)?;
        let spec = PipelineSpec {
            sql: self.sql,
            target: body.target,
            cursor: self.cursor,
            mode: self.mode.unwrap_or(default_mode),
            key: self.key,
            on_schema_change: self.on_schema_change.unwrap_or_default(),
            checkpoint_pages: self.checkpoint_pages,
            schedule,
            origin: self.origin,
            name,
        };
        spec.check()?;
        Ok(spec)
    }
}

impl PipelineSpec {
    /// Checks the clauses fit together (no I/O, no look at the query's tables).
    pub fn check(&self) -> Result<()> {
        validate_name("pipeline", &self.name)?;
        let err = |m: String| {
            Err(Error::InvalidInput(format!(
                "pipeline '{}': {m}",
                self.name
            )))
        };
        match (self.mode, self.key.is_empty()) {
            (WriteMode::Merge, true) => {
                return err(
                    "MODE MERGE needs the columns that identify a row: MODE MERGE KEY (id)".into(),
                );
            }
            (m, false) if m != WriteMode::Merge => {
                return err("KEY (...) goes with MODE MERGE only".into());
            }
            _ => {}
        }
        if let Some(s) = &self.schedule {
            s.check()
                .map_err(|e| Error::InvalidInput(format!("pipeline '{}': {e}", self.name)))?;
        }
        let kind = self.cursor.as_ref().map(|c| c.kind);
        if self.checkpoint_pages == Some(0) {
            return err("CHECKPOINT EVERY n PAGES needs a positive number of pages".into());
        }
        if self.checkpoint_pages.is_some() && kind != Some(CursorKind::OpaqueToken) {
            return err("CHECKPOINT EVERY n PAGES goes with CURSOR TOKEN: only a token cursor can resume in the middle of a run".into());
        }
        let Some(c) = &self.cursor else {
            return Ok(());
        };
        match c.kind {
            CursorKind::Monotonic => {
                if c.column.is_none() {
                    return err(
                        "a monotonic cursor needs a column: CURSOR MONOTONIC (column)".into(),
                    );
                }
                if c.lag.is_some() && self.mode != WriteMode::Merge {
                    return err("LAG reads rows again, which would duplicate them: use it with MODE MERGE KEY (...)".into());
                }
            }
            CursorKind::OpaqueToken | CursorKind::SnapshotId => {
                if c.lag.is_some() || c.on_null != NullRule::Fail || c.column.is_some() {
                    return err(format!(
                        "a {} cursor takes no column, LAG or ON NULL: those belong to CURSOR MONOTONIC (column)",
                        c.kind.keyword()
                    ));
                }
            }
        }
        // Regression: each page group of a token run committed as a replace, so the table
        // kept only the run's last page group.
        if c.kind == CursorKind::OpaqueToken && self.mode == WriteMode::Replace {
            return err("a token cursor reads only the pages after its token, so MODE REPLACE would keep only the last page group: use MODE APPEND (or leave MODE out) or MODE MERGE KEY (...)".into());
        }
        if c.kind == CursorKind::SnapshotId {
            if self.mode != WriteMode::Replace {
                return err("a snapshot cursor replaces the table on every changed snapshot: use MODE REPLACE (or leave MODE out)".into());
            }
            if c.initial.is_some() {
                return err("a snapshot cursor takes no INITIAL value".into());
            }
        }
        Ok(())
    }
}

/// Pages per checkpoint of a token-cursor run when the pipeline does not say.
pub const DEFAULT_CHECKPOINT_PAGES: u64 = 10;

/// A column name as SQL: quoted unless it is a plain identifier (`"a b"`, `"x""y"`).
/// Regression (found by fuzz_sql_hakiri_statements_round_trip): `SHOW CREATE PIPELINE`
/// printed `CURSOR MONOTONIC (a b)` for the column `"a b"`, which does not parse back.
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

impl fmt::Display for PipelineSpec {
    /// Renders the spec as the `CREATE PIPELINE` statement that recreates it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CREATE PIPELINE {}", self.name)?;
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        if let Some(c) = &self.cursor {
            write!(f, " CURSOR {}", c.kind.keyword())?;
            if let Some(col) = &c.column {
                write!(f, " ({})", ident(col))?;
            }
            if let Some(init) = &c.initial {
                write!(f, " INITIAL {}", quote(init))?;
            }
            if let Some(lag) = &c.lag {
                write!(f, " LAG {}", quote(lag))?;
            }
            if c.kind == CursorKind::Monotonic && c.on_null != NullRule::Fail {
                write!(f, " ON NULL {}", c.on_null.as_str().to_ascii_uppercase())?;
            }
        }
        if let Some(n) = self.checkpoint_pages {
            write!(f, " CHECKPOINT EVERY {n} PAGES")?;
        }
        write!(f, " MODE {}", self.mode.as_str().to_ascii_uppercase())?;
        if !self.key.is_empty() {
            let key: Vec<String> = self.key.iter().map(|k| ident(k)).collect();
            write!(f, " KEY ({})", key.join(", "))?;
        }
        if self.on_schema_change != SchemaPolicy::Evolve {
            write!(
                f,
                " ON SCHEMA CHANGE {}",
                self.on_schema_change.as_str().to_ascii_uppercase()
            )?;
        }
        if let Some(s) = &self.schedule {
            write!(f, " {s}")?;
        }
        write!(f, " AS {}", self.sql)
    }
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// A run whose process died while it was running, found at the next open. Checkpoints
    /// it committed before dying stay.
    PartialFailure,
    /// A snapshot run that found the source unchanged and wrote nothing.
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::PartialFailure,
        RunStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::PartialFailure => "partial_failure",
            RunStatus::Skipped => "skipped",
        }
    }

    /// The status as the catalog stores it.
    ///
    /// # Errors
    /// `Internal` for text no version of Hakiri wrote (a damaged catalog).
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::Internal(format!("unknown run status '{s}' in the catalog")))
    }

    /// Whether the run is over (anything but `running`).
    pub fn is_final(self) -> bool {
        self != RunStatus::Running
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event in `hakiri.events` records. The catalog stores [`EventKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A context table's first commit.
    TableCreated,
    /// A column appeared in a table.
    ColumnAdded,
    /// A column's type was widened (int to bigint, int to double).
    ColumnWidened,
    /// A column's values no longer fit one type: it became a variant (JSON text).
    ColumnVariant,
    /// A run saw the source's schema drift between pages.
    SchemaDrift,
    /// Records at a token cursor's boundary were rewritten upstream.
    BoundaryChanged,
    /// A snapshot run found the source unchanged.
    SnapshotUnchanged,
    NullCursorRowsSkipped,
    NullCursorRowsLoaded,
    RowsDiscarded,
    Backfill,
    CursorReset,
    /// A run's timings and request counts (`run.trace`).
    RunTrace,
    SlotSkipped,
    ScheduleMissed,
    RunRetry,
    PipelineSuspended,
    PipelineResumed,
    /// `DROP CONTEXT TABLE` removed a table.
    TableDropped,
    /// `hakiri context compact` merged a table's small files.
    TableCompacted,
}

impl EventKind {
    pub const ALL: [EventKind; 20] = [
        EventKind::TableCreated,
        EventKind::ColumnAdded,
        EventKind::ColumnWidened,
        EventKind::ColumnVariant,
        EventKind::SchemaDrift,
        EventKind::BoundaryChanged,
        EventKind::SnapshotUnchanged,
        EventKind::NullCursorRowsSkipped,
        EventKind::NullCursorRowsLoaded,
        EventKind::RowsDiscarded,
        EventKind::Backfill,
        EventKind::CursorReset,
        EventKind::RunTrace,
        EventKind::SlotSkipped,
        EventKind::ScheduleMissed,
        EventKind::RunRetry,
        EventKind::PipelineSuspended,
        EventKind::PipelineResumed,
        EventKind::TableDropped,
        EventKind::TableCompacted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TableCreated => "table_created",
            EventKind::ColumnAdded => "column_added",
            EventKind::ColumnWidened => "column_widened",
            EventKind::ColumnVariant => "column_variant",
            EventKind::SchemaDrift => "schema_drift",
            EventKind::BoundaryChanged => "boundary_changed",
            EventKind::SnapshotUnchanged => "snapshot_unchanged",
            EventKind::NullCursorRowsSkipped => "null_cursor_rows_skipped",
            EventKind::NullCursorRowsLoaded => "null_cursor_rows_loaded",
            EventKind::RowsDiscarded => "rows_discarded",
            EventKind::Backfill => "backfill",
            EventKind::CursorReset => "cursor_reset",
            EventKind::RunTrace => "run_trace",
            EventKind::SlotSkipped => "slot_skipped",
            EventKind::ScheduleMissed => "schedule_missed",
            EventKind::RunRetry => "run_retry",
            EventKind::PipelineSuspended => "pipeline_suspended",
            EventKind::PipelineResumed => "pipeline_resumed",
            EventKind::TableDropped => "table_dropped",
            EventKind::TableCompacted => "table_compacted",
        }
    }

    /// Events about a table's schema: its history, with `hakiri.schema_versions`.
    pub fn is_schema_change(self) -> bool {
        matches!(
            self,
            EventKind::TableCreated
                | EventKind::ColumnAdded
                | EventKind::ColumnWidened
                | EventKind::ColumnVariant
                | EventKind::SchemaDrift
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Field metadata marking a column that holds JSON text (a value with no single type):
/// connectors write a nested value there as its JSON text.
pub const JSON_TEXT_KEY: &str = "hakiri.json";

/// The names of the metrics source scans report (DataFusion `MetricsSet`), which the run
/// loop sums into its counters and trace.
pub mod metric {
    /// Pages (responses, files, COPY chunks) read.
    pub const PAGES: &str = "pages";
    /// Bytes read from the source.
    pub const BYTES: &str = "bytes";
    /// Requests sent.
    pub const REQUESTS: &str = "requests";
    /// Time waiting on the source, in nanoseconds.
    pub const FETCH_TIME: &str = "fetch_time";
    /// Time decoding pages into Arrow, in nanoseconds.
    pub const DECODE_TIME: &str = "decode_time";
    /// Rows produced.
    pub const ROWS: &str = "rows";
    /// Reads tried again after a rate-limited or transient failure.
    pub const RETRIES: &str = "retries";
    /// Log lines a sandboxed connector wrote past its log rate, dropped.
    pub const LOG_LINES_DROPPED: &str = "log_lines_dropped";
}

/// Counters a run keeps while it streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounters {
    pub rows_read: u64,
    pub rows_written: u64,
    pub pages: u64,
    pub bytes: u64,
    /// Rows left out by `ON NULL SKIP`.
    pub rows_skipped: u64,
    /// Rows left out by `ON SCHEMA CHANGE DISCARD`.
    pub rows_discarded: u64,
}

/// Where the control plane (`hakiri control`) may run a pipeline: `placement = "any"`,
/// `"node:<id>"`, `"self-hosted:<id>"` or `"cf:<name>"` in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// Any node of the project.
    #[default]
    Any,
    /// The node registered with this id.
    Node(String),
    /// A self-hosted node with this id (the same as `node:` until hosted nodes exist).
    SelfHosted(String),
    /// The Cloudflare substrate, which does not exist yet: accepted, never dispatched.
    Cloudflare(String),
}

impl Placement {
    /// Parses a placement, naming the valid forms when it is none of them.
    pub fn parse(text: &str) -> Result<Placement> {
        let bad = || {
            Error::InvalidInput(format!(
                "placement '{text}' is not one of \"any\", \"node:<id>\", \"self-hosted:<id>\" or \"cf:<name>\""
            ))
        };
        if text == "any" {
            return Ok(Placement::Any);
        }
        let (kind, id) = text.split_once(':').ok_or_else(bad)?;
        if id.is_empty()
            || id.len() > 128
            || id.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        match kind {
            "node" => Ok(Placement::Node(id.into())),
            "self-hosted" => Ok(Placement::SelfHosted(id.into())),
            "cf" => Ok(Placement::Cloudflare(id.into())),
            _ => Err(bad()),
        }
    }

    /// Whether the node `node_id` may run the pipeline.
    pub fn allows(&self, node_id: &str) -> bool {
        match self {
            Placement::Any => true,
            Placement::Node(id) | Placement::SelfHosted(id) => id == node_id,
            Placement::Cloudflare(_) => false,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Any => f.write_str("any"),
            Placement::Node(id) => write!(f, "node:{id}"),
            Placement::SelfHosted(id) => write!(f, "self-hosted:{id}"),
            Placement::Cloudflare(id) => write!(f, "cf:{id}"),
        }
    }
}

/// Validates an identifier used as a source, table or pipeline name: it ends up in paths
/// and generated SQL, so only `[A-Za-z_][A-Za-z0-9_]*` is accepted.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid {kind} name '{name}': use letters, digits and underscores, starting with a letter (at most 63 characters)"
        )))
    }
}

/// What a user of `hakiri serve` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `SELECT`, `EXPLAIN`, `SHOW` (and session statements such as `SET`).
    ReadOnly,
    /// Also source and pipeline DDL and `RUN PIPELINE`.
    Admin,
}

keyword_enum!(
    Role,
    "What the user may do: read_only (SELECT, EXPLAIN, SHOW) or admin (also DDL and RUN PIPELINE)."
);

impl Role {
    pub const SPELLINGS: &[&str] = &["read_only", "readonly", "admin"];

    pub fn parse(text: &str) -> Result<Role> {
        match text.to_ascii_lowercase().as_str() {
            "read_only" | "readonly" => Ok(Role::ReadOnly),
            "admin" => Ok(Role::Admin),
            other => Err(Error::Config(format!(
                "unknown role '{other}': a user's role is read_only or admin"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read_only",
            Role::Admin => "admin",
        }
    }
}

/// A user of the served endpoints. The password is kept as written (usually a secret
/// reference such as `env:HAKIRI_ADMIN_PASSWORD`) and resolved when the server starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub password: String,
    pub role: Role,
}

/// The `[serve]` section of the manifest: endpoints, TLS and users of `hakiri serve`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeSpec {
    /// The Postgres wire address, default `127.0.0.1:5433`.
    pub pg_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub users: Vec<UserSpec>,
}

/// The `[retention]` section: how long state rows are kept (`hakiri context prune`, and
/// daily by `serve`). `None` keeps them all. The latest row per pipeline is always kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionSpec {
    pub runs: Option<crate::schedule::Interval>,
    pub events: Option<crate::schedule::Interval>,
    pub cursor_history: Option<crate::schedule::Interval>,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    /// A run failed (or its process died: `partial_failure`).
    Failed,
    /// A pipeline's schedule was suspended after failures in a row.
    Suspended,
    /// A scheduled pipeline has had no successful run for `stale_after`.
    Stale,
}

impl AlertKind {
    pub const SPELLINGS: [&'static str; 3] = ["failed", "suspended", "stale"];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failed => "failed",
            AlertKind::Suspended => "suspended",
            AlertKind::Stale => "stale",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "failed" => Ok(AlertKind::Failed),
            "suspended" => Ok(AlertKind::Suspended),
            "stale" => Ok(AlertKind::Stale),
            other => Err(Error::InvalidInput(format!(
                "unknown alert '{other}': use failed, suspended or stale"
            ))),
        }
    }
}

/// `[alerts.<name>]`: a webhook `serve` posts alerts to, as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSpec {
    pub name: String,
    pub url: String,
    /// Which alerts go to it (default: all three).
    pub on: Vec<AlertKind>,
    /// For `stale`: how long a scheduled pipeline may go without a successful run
    /// (default "2 hours").
    pub stale_after: crate::schedule::Interval,
}

/// The `[store]` section: how the context store is kept compact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSpec {
    /// The size compaction aims at for a table's files (default 128 MiB).
    pub compact_target_mb: Option<u64>,
    /// How often `serve` compacts every table (default "1 hour"; "0 seconds" turns it off).
    pub compact_every: Option<crate::schedule::Interval>,
    /// Per table, the columns compaction sorts its files by.
    pub sort_by: BTreeMap<String, Vec<String>>,
    /// A secret reference (`env:HAKIRI_STORE_KEY`) to the key every file of the context
    /// store is encrypted with: 32 or 64 hex digits.
    pub encryption_key: Option<String>,
    /// Secret references to keys files were written with before `encryption_key`: still
    /// read, until `hakiri context rekey` rewrites those files.
    pub previous_keys: Vec<String>,
}

/// The `[catalog]` section: the project's state in a PostgreSQL schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSpec {
    /// `postgres://...`, or a secret reference (`env:NAME`) to it, resolved when opened.
    pub url: String,
    /// The schema holding the catalog's tables (default `hakiri`).
    pub schema: String,
}

/// The `[sync]` section: the bucket (or folder) `hakiri sync` shares the store through.
/// Credentials are secret references (`env:NAME`), resolved when a command uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSpec {
    /// `s3://bucket/prefix` or `file:///path`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// How long a lease lasts unless renewed, e.g. `"15 minutes"` (the default).
    pub lease_ttl: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's spellings are exactly what `parse` reads.
    #[test]
    fn every_spelling_parses() {
        for s in CursorKind::SPELLINGS {
            CursorKind::parse(s).unwrap();
        }
        for s in NullRule::SPELLINGS {
            NullRule::parse(s).unwrap();
        }
        for s in SchemaPolicy::SPELLINGS {
            SchemaPolicy::parse(s).unwrap();
        }
        for s in WriteMode::SPELLINGS {
            WriteMode::parse(s).unwrap();
        }
        for s in Role::SPELLINGS {
            Role::parse(s).unwrap();
        }
        for s in crate::schedule::MissedPolicy::SPELLINGS {
            crate::schedule::MissedPolicy::parse(s).unwrap();
        }
    }
}
