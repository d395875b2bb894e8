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

pub use crate::catalog::Catalog;
use crate::catalog::FileEntry;
use crate::error::{Error, Result};
use crate::types::SourceSpec;

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
    /// The table names the source declares.
    fn table_names(&self, spec: &SourceSpec) -> Vec<String>;
    /// Builds the table provider for `table`; may do I/O (schema inference).
    ///
    /// # Errors
    /// `NotFound` naming the declared tables when `table` is not one of them.
    async fn table(&self, spec: &SourceSpec, table: &str) -> Result<Arc<dyn TableProvider>>;
}

/// A staged write into the destination: nothing is visible until the catalog commit that
/// records the files returned by [`StagedWrite::finish`].
pub trait StagedWrite: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Flushes and fsyncs the staged data and renames it into place.
    fn finish(self: Box<Self>) -> Result<Vec<FileEntry>>;
    /// Removes the staged data.
    fn abort(self: Box<Self>);
}

/// Where a run's rows go: the context store.
pub trait Destination: Debug + Send + Sync {
    fn begin(&self, table: &str, run_id: &str, schema: SchemaRef) -> Result<Box<dyn StagedWrite>>;
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
