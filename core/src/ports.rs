//! The ports: what the engine needs from the outside, as traits. Adapters live in other
//! crates (sources) or in `catalog`/`store` (the default catalog and destination).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;

use crate::cursor::BoundaryRows;
use crate::error::{Error, Result};
use crate::types::{SchemaPolicy, SourceSpec};

/// One option a connector accepts, declared as data so `OPTIONS (...)` can be checked
/// before any I/O and an unknown key answered with the list of valid ones.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The key; a trailing `*` makes it a prefix (`header.*` accepts `header.Accept`).
    pub name: &'static str,
    pub required: bool,
    /// The value may be a secret reference (`env:NAME`) and is never shown resolved.
    pub secret: bool,
    pub help: &'static str,
}

impl OptionSpec {
    pub fn matches(&self, key: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix) && key.len() > prefix.len(),
            None => self.name == key,
        }
    }
}

/// Checks `keys` against `specs`: unknown keys and missing required ones are errors that
/// list the valid names.
pub fn validate_options<'a>(
    what: &str,
    specs: &[OptionSpec],
    keys: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let keys: Vec<&String> = keys.into_iter().collect();
    for key in &keys {
        if !specs.iter().any(|s| s.matches(key)) {
            let valid: Vec<&str> = specs.iter().map(|s| s.name).collect();
            return Err(Error::InvalidInput(format!(
                "unknown option '{key}' for {what}: valid options are {}",
                valid.join(", ")
            )));
        }
    }
    for spec in specs.iter().filter(|s| s.required) {
        if !keys.iter().any(|k| spec.matches(k)) {
            return Err(Error::InvalidInput(format!(
                "{what} needs option '{}': {}",
                spec.name, spec.help
            )));
        }
    }
    Ok(())
}

/// A connector type (`http`, `file`, ...): turns a [`SourceSpec`] into DataFusion tables.
#[async_trait]
pub trait Source: Debug + Send + Sync {
    /// The connector's type name as written in `CREATE SOURCE ... TYPE <name>`.
    fn connector(&self) -> &'static str;
    /// The options a source of this type accepts.
    fn options(&self) -> &'static [OptionSpec];
    /// Checks a spec's options without doing any I/O.
    fn validate(&self, spec: &SourceSpec) -> Result<()> {
        validate_options(
            &format!("source '{}' (type {})", spec.name, self.connector()),
            self.options(),
            spec.options.keys(),
        )
    }
    /// The table names the source declares (no I/O).
    fn table_names(&self, spec: &SourceSpec) -> Vec<String>;
    /// The tables the source has, asking the remote system where it can tell (a database's
    /// catalog); by default the declared ones.
    async fn discover(&self, spec: &SourceSpec) -> Result<Vec<String>> {
        Ok(self.table_names(spec))
    }
    /// Whether building `table`'s provider may wait on a remote system (schema inference
    /// over the network). Catalog listings never build such a table: they use the schema
    /// last discovered. Local data and declared schemas answer at once (say `false`).
    fn remote_discovery(&self, spec: &SourceSpec, table: &str) -> bool {
        let _ = (spec, table);
        true
    }
    /// Builds the table provider for `table`; may do I/O (schema inference). `hint` is a
    /// schema a pipeline run learned from the source's data (new fields, wider types) that
    /// the table's own schema must cover.
    ///
    /// # Errors
    /// `NotFound` naming the declared tables when `table` is not one of them.
    async fn table(
        &self,
        spec: &SourceSpec,
        table: &str,
        hint: Option<SchemaRef>,
    ) -> Result<Arc<dyn TableProvider>>;
}

/// What a pipeline run tells the source scans it executes, and what they report back. The
/// engine puts it in the run's `SessionConfig` (`get_extension::<RunContext>()`); a scan
/// outside a pipeline run finds none and behaves as a plain query.
#[derive(Debug, Default)]
pub struct RunContext {
    /// The pipeline has a token cursor: the source resumes from `resume_token` and reports
    /// the token to resume from next.
    pub token_cursor: bool,
    /// Token cursor: the resume token to start from (`None`: the first page).
    pub resume_token: Option<String>,
    /// Token cursor: records of the page `resume_token` fetches that earlier runs already
    /// wrote (the API gave no token past that page). The source skips them, by hash.
    pub resume_boundary: Option<BoundaryRows>,
    /// Token cursor: stop after this many pages, so the run can checkpoint.
    pub page_budget: Option<u64>,
    /// Snapshot cursor: the committed snapshot id, for a conditional request.
    pub snapshot_id: Option<String>,
    /// What to do with values that do not fit the table's types.
    pub schema_policy: SchemaPolicy,
    report: Mutex<RunReport>,
}

/// What source scans reported during one execution of a run's plan.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// The token to resume from after the pages read so far.
    pub token: Option<String>,
    /// The source has no page after the ones read.
    pub exhausted: bool,
    /// Set when `token` fetches the last page read again (the source gave no token past
    /// it): that page's records, all of which are now written, for the next run to skip.
    /// `None` when `token` fetches a page not read yet.
    pub boundary: Option<BoundaryRows>,
    /// What changed on a re-read boundary page (records written before and no longer
    /// there), one message each, recorded as `boundary_changed` events.
    pub boundary_changes: Vec<String>,
    /// The source's id of the snapshot it returned (an ETag, a snapshot id).
    pub snapshot_id: Option<String>,
    /// The source says the snapshot is the committed one (for example HTTP 304).
    pub unchanged: bool,
    /// Schema drift that stopped a scan: the run plans again with these schemas.
    pub drift: Vec<SourceDrift>,
    /// Records a scan left out under `ON SCHEMA CHANGE DISCARD`.
    pub rows_discarded: u64,
    /// Records a scan left out because an earlier run wrote them (the resumed boundary).
    pub rows_skipped: u64,
}

/// A source table whose data outgrew the schema the run was planned with.
#[derive(Debug, Clone)]
pub struct SourceDrift {
    /// `<source>.<table>`.
    pub table: String,
    /// The schema that covers the data seen.
    pub evolved: SchemaRef,
    /// What changed, one line each (`new field 'x' (Utf8) on page 3`).
    pub changes: Vec<String>,
}

impl RunContext {
    /// A run context; a token cursor run is one with a `page_budget`.
    pub fn new(
        resume_token: Option<String>,
        resume_boundary: Option<BoundaryRows>,
        page_budget: Option<u64>,
        snapshot_id: Option<String>,
        schema_policy: SchemaPolicy,
    ) -> Self {
        RunContext {
            token_cursor: page_budget.is_some(),
            resume_token,
            resume_boundary,
            page_budget,
            snapshot_id,
            schema_policy,
            report: Mutex::default(),
        }
    }

    /// The run context of a scan's session, if it runs inside a pipeline run.
    pub fn of(config: &datafusion::execution::config::SessionConfig) -> Option<Arc<RunContext>> {
        config.get_extension::<RunContext>()
    }

    pub fn update(&self, f: impl FnOnce(&mut RunReport)) {
        f(&mut self.report.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn report(&self) -> RunReport {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A per-batch transformation applied between the plan's output and the destination.
pub trait Transform: Debug + Send + Sync {
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef>;
    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch>;
}

/// The source of "now", injectable so tests can drive time.
pub trait Clock: Debug + Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
