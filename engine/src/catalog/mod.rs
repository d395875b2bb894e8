//! The `Catalog` port: all of Hakiri's state (sources, pipelines, runs, cursors, tables,
//! files, schema versions, events) as SQL tables, plus the one-transaction run commit.

mod sqlite;
pub mod state_tables;

pub use sqlite::SqliteCatalog;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::types::{PipelineSpec, RunCounters, RunStatus, SourceSpec};

/// The names of the state tables, each readable as `hakiri.<name>`.
pub const STATE_TABLES: &[&str] = &[
    "sources",
    "pipelines",
    "runs",
    "cursors",
    "tables",
    "files",
    "schema_versions",
    "events",
];

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

/// One run as stored in `hakiri.runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub counters: RunCounters,
    pub cursor_start: Option<String>,
    pub cursor_end: Option<String>,
    pub error: Option<String>,
}

/// Everything a successful run commits, applied in one catalog transaction: the files, the
/// cursor, the table's schema and the run's final state. Nothing else advances a cursor.
#[derive(Debug, Clone)]
pub struct RunCommit {
    pub run_id: String,
    pub pipeline: String,
    pub table: String,
    pub files: Vec<FileEntry>,
    /// When true the table's earlier files leave the manifest (write mode replace).
    pub replace: bool,
    /// The new cursor value; `None` leaves the cursor as it is.
    pub cursor: Option<(String, String)>,
    /// The table's Arrow schema rendered as text, recorded as a new schema version if it
    /// differs from the latest one.
    pub schema: Option<String>,
    pub counters: RunCounters,
    pub ended_at: DateTime<Utc>,
}

/// What `RunCommit` left behind that the caller must clean up after the transaction.
#[derive(Debug, Default)]
pub struct CommitOutcome {
    /// Files that left the manifest (replace) and can be deleted from disk.
    pub removed_files: Vec<String>,
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

/// The catalog port. Every method is one transaction.
pub trait Catalog: std::fmt::Debug + Send + Sync {
    fn upsert_source(&self, spec: &SourceSpec, now: DateTime<Utc>) -> Result<()>;
    fn drop_source(&self, name: &str) -> Result<bool>;
    fn list_sources(&self) -> Result<Vec<SourceSpec>>;

    fn upsert_pipeline(&self, spec: &PipelineSpec, now: DateTime<Utc>) -> Result<()>;
    fn drop_pipeline(&self, name: &str) -> Result<bool>;
    fn list_pipelines(&self) -> Result<Vec<PipelineSpec>>;

    /// The committed cursor value of a pipeline, if any run committed one.
    fn cursor(&self, pipeline: &str) -> Result<Option<String>>;

    /// Records a new run in state `running`.
    fn begin_run(
        &self,
        run_id: &str,
        pipeline: &str,
        started_at: DateTime<Utc>,
        cursor_start: Option<&str>,
    ) -> Result<()>;
    /// Ends a run that failed: no file, no cursor change.
    fn fail_run(
        &self,
        run_id: &str,
        ended_at: DateTime<Utc>,
        counters: &RunCounters,
        error: &str,
    ) -> Result<()>;
    /// Commits a successful run in one transaction (see [`RunCommit`]).
    fn commit_run(&self, commit: &RunCommit) -> Result<CommitOutcome>;
    fn runs(&self, pipeline: Option<&str>) -> Result<Vec<RunRecord>>;

    /// Marks runs left `running` by a dead process as `status` and returns their ids.
    fn recover_runs(&self, status: RunStatus, now: DateTime<Utc>) -> Result<Vec<String>>;

    fn tables(&self) -> Result<Vec<TableEntry>>;
    /// The committed files of a table, oldest first.
    fn table_files(&self, table: &str) -> Result<Vec<FileEntry>>;
    /// Every committed file path (for removing orphans).
    fn all_files(&self) -> Result<Vec<String>>;

    fn add_event(
        &self,
        at: DateTime<Utc>,
        kind: &str,
        subject: &str,
        message: &str,
        run_id: Option<&str>,
    ) -> Result<()>;

    /// The rows of one state table (one of [`STATE_TABLES`]) as strings, integers, floats
    /// or nulls, with the column names, for exposing it through DataFusion.
    fn state_table(&self, name: &str) -> Result<state_tables::RawTable>;
}
