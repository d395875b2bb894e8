//! The engine's ports: the core's (`Source`, `RunContext`, `Clock`, `Transform`), re-exported
//! so `hakiri_engine::ports` names them all, and the ones that deal in catalog records
//! (`Destination`, `StagedWrite`, and the `Catalog` port itself).

use std::fmt::Debug;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

pub use crate::catalog::Catalog;
use crate::catalog::FileEntry;
use crate::error::Result;
pub use hakiri_core::ports::*;

/// Asked before each run of a pipeline: an error refuses the run, before anything starts.
/// A synced project's single-writer lease (`hakiri sync`) is one.
#[async_trait::async_trait]
pub trait RunGuard: Debug + Send + Sync {
    async fn before_run(&self, pipeline: &str) -> Result<()>;
}

/// Told when a run starts and when it ends (OpenLineage events). Called on the run's
/// task: an implementation that sends something hands it to a task of its own, so an
/// observer never slows or fails a run.
pub trait RunObserver: Debug + Send + Sync {
    /// Whether this observer reads [`RunStarted::lineage`]. Extracting it walks the run's
    /// plan, so a run does that only when some observer asks (OpenLineage does; metrics
    /// do not).
    fn wants_lineage(&self) -> bool {
        false
    }
    /// Once the run's query is planned (its lineage is read off that plan); a run that
    /// fails before that is started as it ends, just before [`RunObserver::ended`].
    fn started(&self, run: &RunStarted);
    /// `Ok` with the summary, or the run's error.
    fn ended(
        &self,
        run: &RunStarted,
        outcome: std::result::Result<&crate::RunSummary, &crate::Error>,
    );
}

/// A run as its observers see it.
#[derive(Debug, Clone)]
pub struct RunStarted {
    pub run_id: String,
    /// The run as a UUID (OpenLineage's runId), the same in every event of the run.
    pub uuid: String,
    pub pipeline: String,
    pub sql: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// What the run reads and writes, read off the run's own logical plan; `None` when no
    /// observer wants it or the run failed before its query was planned.
    pub lineage: Option<crate::lineage::Lineage>,
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

/// Streams a query's result into `writer` and finishes it; on an error the staged data is
/// removed and nothing is left behind.
pub async fn write_all(
    mut writer: Box<dyn StagedWrite>,
    df: datafusion::dataframe::DataFrame,
) -> Result<Vec<FileEntry>> {
    use futures::StreamExt;
    let result: Result<()> = async {
        let mut stream = df.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            writer.write(&batch?)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => writer.finish(),
        Err(e) => {
            writer.abort();
            Err(e)
        }
    }
}

/// Where a run's rows go: the context store.
pub trait Destination: Debug + Send + Sync {
    /// Starts part `part` of a run's output for `table` (a run that checkpoints writes
    /// several parts).
    fn begin(
        &self,
        table: &str,
        run_id: &str,
        part: u32,
        schema: SchemaRef,
    ) -> Result<Box<dyn StagedWrite>>;
}
