//! The `Catalog` port: all of Hakiri's state (sources, pipelines, runs, cursors, tables,
//! files, schema versions, events) as SQL tables, plus the one-transaction run commit.
//!
//! The crate holds the port and its records, the declaration of the `hakiri.*` tables
//! (`state_tables`), the SQLite adapter (a project's `.hakiri/catalog.db`, with its
//! migrations), the Postgres one (`[catalog] url`, shared by several project folders) and
//! the memory one (for tests), and, behind the `conformance` feature, the
//! suite every adapter passes. It depends on the core only: the engine gets a catalog
//! injected (`EngineOptions.catalog`), so its tests run on the memory catalog.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod memory;
mod pg;
mod sqlite;
pub mod state_tables;

pub use memory::MemoryCatalog;
pub use pg::{Connect as PostgresConnect, PostgresCatalog};
pub use sqlite::SqliteCatalog;

use chrono::{DateTime, Utc};

use hakiri_core::error::Result;
use hakiri_core::types::{EventKind, PipelineSpec, RunCounters, RunStatus, SourceSpec};

pub use state_tables::{STATE_TABLES, TableDecl, state_table};

/// A committed Parquet file of the context store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the project's store folder: `<table>/<file>.parquet`.
    pub path: String,
    pub table: String,
    pub run_id: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The process running a run: it holds the pipeline's run lock while the run is `running`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHolder {
    pub pid: u32,
    pub host: String,
}

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_id: String,
    pub pipeline: String,
    pub started_at: DateTime<Utc>,
    pub cursor_start: Option<String>,
    pub holder: RunHolder,
}

/// One run as stored in `hakiri.runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub counters: RunCounters,
    pub cursor_start: Option<String>,
    pub cursor_end: Option<String>,
    pub error: Option<String>,
    pub holder: RunHolder,
    /// Last sign of life from the holder (start, checkpoints and a periodic heartbeat).
    pub heartbeat_at: DateTime<Utc>,
}

/// Says whether a `running` run's holder is still alive; decided by the engine (process
/// table, heartbeat age), applied by the adapter inside its transaction.
pub type IsAlive<'a> = &'a (dyn Fn(&RunRecord) -> bool + Send + Sync);

/// Everything a commit applies in one catalog transaction: the files, the cursor, the
/// table's schema, events and the run's counters. Nothing else advances a cursor.
#[derive(Debug, Clone)]
pub struct RunCommit {
    pub run_id: String,
    pub pipeline: String,
    pub table: String,
    pub files: Vec<FileEntry>,
    /// When true the table's earlier files leave the manifest (replace, merge).
    pub replace: bool,
    /// These files of the table leave the manifest (compaction, whose new files hold their
    /// rows). The commit is refused, with nothing applied, if one of them is not current:
    /// a replace or another compaction retired it first.
    pub retire: Vec<String>,
    /// The new cursor (kind, value); `None` leaves the cursor as it is.
    pub cursor: Option<(String, String)>,
    /// The records already written at the new cursor's boundary
    /// ([`hakiri_core::cursor::BoundaryRows::to_text`]), stored with it; ignored without `cursor`.
    pub boundary: Option<String>,
    /// The table's schema rendered as text, recorded as a new schema version if it differs
    /// from the latest one.
    pub schema: Option<String>,
    /// Events recorded with this commit: (kind, message), for example one per column added.
    pub events: Vec<(EventKind, String)>,
    /// The run's counters so far (they replace the stored ones).
    pub counters: RunCounters,
    pub at: DateTime<Utc>,
    /// `Some(status)` ends the run (succeeded or skipped); `None` is a checkpoint and the
    /// run stays `running`.
    pub finish: Option<RunStatus>,
}

impl RunCommit {
    /// A checkpoint that changes nothing but the run's heartbeat: the base the fields a
    /// commit sets are added to (`RunCommit { files, finish, ..RunCommit::new(...) }`).
    pub fn new(run_id: &str, pipeline: &str, table: &str, at: DateTime<Utc>) -> Self {
        RunCommit {
            run_id: run_id.to_string(),
            pipeline: pipeline.to_string(),
            table: table.to_string(),
            files: Vec::new(),
            replace: false,
            retire: Vec::new(),
            cursor: None,
            boundary: None,
            schema: None,
            events: Vec::new(),
            counters: RunCounters::default(),
            at,
            finish: None,
        }
    }
}

/// A cursor moved on purpose (`ALTER PIPELINE name RESET CURSOR [TO 'v']`), applied with
/// its event in one transaction.
#[derive(Debug, Clone)]
pub struct CursorMove {
    pub pipeline: String,
    /// The cursor kind, as stored (`monotonic`, `opaque_token`, `snapshot_id`).
    pub kind: String,
    /// The new value; `None` forgets the cursor (the next run starts afresh).
    pub to: Option<String>,
    /// The event recorded with it: (kind, message).
    pub event: (EventKind, String),
    pub at: DateTime<Utc>,
}

/// What a commit left behind for the caller.
#[derive(Debug, Default)]
pub struct CommitOutcome {
    /// The schema version recorded by this commit, if the schema changed.
    pub new_schema_version: Option<i64>,
}

/// A row of `hakiri.tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    pub name: String,
    pub rows: u64,
    pub files: u64,
}

/// A row of `hakiri.cursor_history`: one per committed cursor value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorEntry {
    pub pipeline: String,
    pub kind: String,
    pub value: String,
    pub run_id: String,
}

/// A scheduled pipeline's state, as stored in `hakiri.schedules`: what the scheduler needs
/// to resume after a restart. The schedule itself is part of the pipeline's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub pipeline: String,
    /// The pipeline's `SCHEDULE ...` clauses as text: a changed schedule starts afresh.
    pub schedule: String,
    /// When the scheduler fires the pipeline next (a slot, or a retry's time).
    pub next_fire_at: DateTime<Utc>,
    /// The slot the next fire serves: a retry serves its failed slot.
    pub slot_at: DateTime<Utc>,
    /// Retries already made for `slot_at`.
    pub attempt: u32,
    /// Failed slots in a row (a slot fails when its run and its retries failed).
    pub consecutive_failures: u32,
    pub suspended: bool,
    pub suspended_reason: Option<String>,
    pub last_run_id: Option<String>,
    pub last_status: Option<RunStatus>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A source table's schema as last discovered (a row of `hakiri.source_schemas`), kept so
/// catalog listings (`\dt`, `information_schema`, `pg_catalog`) never ask the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSchema {
    pub source: String,
    pub table: String,
    /// The columns as JSON text, as the engine's `schema::columns_text` writes them.
    pub columns: String,
    pub discovered_at: DateTime<Utc>,
}

/// The catalog port. Every method is one transaction; an adapter passes the conformance
/// suite in [`conformance`].
pub trait Catalog: std::fmt::Debug + Send + Sync {
    /// Creates or replaces a source; a change of its type or options forgets the schemas
    /// discovered for its tables.
    fn upsert_source(&self, spec: &SourceSpec, now: DateTime<Utc>) -> Result<()>;
    /// Drops a source and its discovered schemas.
    fn drop_source(&self, name: &str) -> Result<bool>;
    fn list_sources(&self) -> Result<Vec<SourceSpec>>;
    /// The discovered schemas of a source's tables.
    fn source_schemas(&self, source: &str) -> Result<Vec<SourceSchema>>;
    /// Keeps a table's discovered schema (replacing the one before).
    fn put_source_schema(&self, schema: &SourceSchema) -> Result<()>;

    /// Creates or replaces a pipeline; one without a schedule loses its schedule state.
    fn upsert_pipeline(&self, spec: &PipelineSpec, now: DateTime<Utc>) -> Result<()>;
    /// Drops a pipeline, its cursor and its schedule state (its runs stay as history).
    fn drop_pipeline(&self, name: &str) -> Result<bool>;
    fn list_pipelines(&self) -> Result<Vec<PipelineSpec>>;

    /// The committed cursor value of a pipeline, if any commit set one.
    fn cursor(&self, pipeline: &str) -> Result<Option<String>>;
    /// The boundary records committed with the cursor, if the last commit kept any.
    fn cursor_boundary(&self, pipeline: &str) -> Result<Option<String>>;
    /// Every value the pipeline's cursor took, oldest first.
    fn cursor_history(&self, pipeline: &str) -> Result<Vec<CursorEntry>>;

    /// Records a new run in state `running`: the pipeline's run lock. If another run of the
    /// pipeline is `running` and `is_alive` says its holder lives, nothing is written and
    /// the error (`AlreadyExists`) names that run and its holder; a dead holder's run is
    /// marked `partial_failure` first.
    fn begin_run(&self, run: &NewRun, is_alive: IsAlive<'_>) -> Result<()>;
    /// Renews the holder's heartbeat of a running run.
    fn heartbeat(&self, run_id: &str, at: DateTime<Utc>) -> Result<()>;
    /// Ends a run that failed. Checkpoints it committed stay; the counters are stored as
    /// given.
    fn fail_run(
        &self,
        run_id: &str,
        ended_at: DateTime<Utc>,
        counters: &RunCounters,
        error: &str,
    ) -> Result<()>;
    /// Moves a pipeline's cursor (and clears its boundary) with the move's event. Refused,
    /// with nothing applied, while a run of the pipeline whose holder `is_alive` is
    /// `running` (its commit would overwrite the move); a dead holder's run is marked
    /// `partial_failure` first.
    fn move_cursor(&self, m: &CursorMove, is_alive: IsAlive<'_>) -> Result<()>;
    /// Applies a commit in one transaction (see [`RunCommit`]). Refused, with nothing
    /// applied, when the run is no longer `running` (another process judged it dead).
    fn commit(&self, commit: &RunCommit) -> Result<CommitOutcome>;
    fn runs(&self, pipeline: Option<&str>) -> Result<Vec<RunRecord>>;

    /// Marks `running` runs whose holder `is_alive` says is dead as `partial_failure` and
    /// returns their ids.
    fn recover_runs(&self, is_alive: IsAlive<'_>, now: DateTime<Utc>) -> Result<Vec<String>>;

    fn tables(&self) -> Result<Vec<TableEntry>>;
    /// The committed, current files of a table, oldest first.
    fn table_files(&self, table: &str) -> Result<Vec<FileEntry>>;
    /// Every file path the catalog names: current ones and those retired by a replace
    /// or merge but not purged yet (a reader may still be reading them).
    fn all_files(&self) -> Result<Vec<String>>;
    /// Forgets files retired before `before` and returns their paths, to delete from disk.
    fn purge_retired(&self, before: DateTime<Utc>) -> Result<Vec<String>>;

    /// Every scheduled pipeline's state, by pipeline name.
    fn schedules(&self) -> Result<Vec<ScheduleState>>;
    /// Writes a pipeline's schedule state (insert or replace). The state goes when the
    /// pipeline is dropped or upserted without a schedule.
    fn put_schedule(&self, state: &ScheduleState) -> Result<()>;

    fn add_event(
        &self,
        at: DateTime<Utc>,
        kind: EventKind,
        subject: &str,
        message: &str,
        run_id: Option<&str>,
    ) -> Result<()>;

    /// Deletes state rows older than the cutoffs, in one transaction. Kept whatever their
    /// age: running runs, each pipeline's latest run and latest succeeded run (status and
    /// freshness read them), each pipeline's latest cursor history row, and each subject's
    /// latest event.
    fn prune(&self, cutoffs: &PruneCutoffs) -> Result<Pruned>;

    /// `DROP CONTEXT TABLE`: in one transaction, forgets the table, retires its files, its schema
    /// versions, and the cursors and cursor history of the pipelines writing into it, and
    /// records a `table_dropped` event. `None` when there is no such table. Refused while a
    /// live run of one of those pipelines is running ([`table_in_use`]).
    fn drop_table(
        &self,
        table: &str,
        at: DateTime<Utc>,
        is_alive: IsAlive<'_>,
    ) -> Result<Option<DroppedTable>>;

    /// The rows of one state table (one of [`STATE_TABLES`]) as strings, integers, floats
    /// or nulls, with the column names, for exposing it through DataFusion.
    fn state_table(&self, name: &str) -> Result<state_tables::RawTable>;

    /// Replaces every row of the given state tables with the given rows, in one
    /// transaction (`hakiri sync pull`): the project is as before or as after, never a
    /// mix. Refused while a run is running.
    fn replace_state(&self, tables: &[(String, state_tables::RawTable)]) -> Result<()>;
}

/// What `[retention]` prunes: state rows older than each cutoff (`None` keeps them all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCutoffs {
    pub runs: Option<DateTime<Utc>>,
    pub events: Option<DateTime<Utc>>,
    pub cursor_history: Option<DateTime<Utc>>,
}

/// How many rows a prune deleted, per state table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub events: u64,
    pub cursor_history: u64,
}

/// What `DROP CONTEXT TABLE` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DroppedTable {
    /// The table's current files, now retired: the purge deletes them after the grace
    /// period, so a query reading them meanwhile completes.
    pub files: Vec<String>,
    /// The pipelines writing into the table, whose cursors were forgotten with it: their
    /// next run loads from the start again into a new table.
    pub pipelines: Vec<String>,
}

/// The error for dropping a table a live run is writing.
pub fn table_in_use(table: &str, r: &RunRecord) -> hakiri_core::error::Error {
    hakiri_core::error::Error::TableInUse {
        table: table.to_string(),
        pipeline: r.pipeline.clone(),
        run_id: r.run_id.clone(),
        holder: format!("process {} on host '{}'", r.holder.pid, r.holder.host),
    }
}

/// The error text of a run found dead.
pub const DEAD_RUN_ERROR: &str = "the process running this run stopped before the run ended; its committed checkpoints stay, nothing after them was committed";

/// The error for a pipeline whose run lock is held by a live run.
pub fn already_running(r: &RunRecord) -> hakiri_core::error::Error {
    hakiri_core::error::Error::RunLockHeld {
        pipeline: r.pipeline.clone(),
        run_id: r.run_id.clone(),
        holder: format!("process {} on host '{}'", r.holder.pid, r.holder.host),
        started_at: r.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        heartbeat_at: r.heartbeat_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

/// The error for a state table name that is not one of [`STATE_TABLES`].
pub fn unknown_state_table(name: &str) -> hakiri_core::error::Error {
    hakiri_core::error::Error::Unknown {
        kind: hakiri_core::error::Thing::StateTable,
        name: name.to_string(),
        known: STATE_TABLES.iter().map(|t| t.name.to_string()).collect(),
    }
}

/// The error for a commit of a run that is no longer `running` (`status`, if it exists).
pub fn commit_refused(run_id: &str, status: Option<&str>) -> hakiri_core::error::Error {
    hakiri_core::error::Error::Internal(format!(
        "run {run_id} is {} in the catalog, not running; its commit was abandoned",
        status.unwrap_or("missing")
    ))
}

/// The error for a commit whose `retire` names a file that is no longer current.
pub fn retire_conflict(table: &str, path: &str) -> hakiri_core::error::Error {
    hakiri_core::error::Error::Context {
        category: hakiri_core::error::ErrorCategory::AlreadyExists,
        message: format!(
            "file {path} of context table '{table}' was retired by another commit while this one was written (a replace, merge or another compaction): nothing was committed; run the command again"
        ),
        source: Box::new(hakiri_core::error::Error::NotFound(path.to_string())),
    }
}
