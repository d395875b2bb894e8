//! One part's rows, from the plan's batches to what is staged: the cursor's rules, the
//! mode's checks, conforming to the table's schema (`ON SCHEMA CHANGE`), the lineage
//! columns, the merge numbering. Pure: the engine writes what `push` returns.

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::track::{CursorState, Tracked, Tracker};
use super::write::WriteStrategy;
use crate::error::Result;
use crate::ports::Transform;
use crate::schema::Conform;
use crate::store::LineageColumns;
use crate::types::{PipelineSpec, RunCounters};

pub(crate) struct PartRows {
    pub tracker: Tracker,
    pub strategy: WriteStrategy,
    conform: Conform,
    lineage: LineageColumns,
    staged: SchemaRef,
    /// Rows staged so far (for a merge, its input rows: the merge may write fewer).
    pub rows: u64,
}

impl PartRows {
    /// How a part of `spec`'s run shapes rows of `input` (the plan's output) for a table
    /// that has `table` as its schema (none yet: the first part creates it).
    ///
    /// # Errors
    /// `InvalidInput` for a cursor or key column not in the SELECT's output, a column
    /// named like a lineage column, or rows `ON SCHEMA CHANGE FREEZE` cannot take.
    pub fn new(
        spec: &PipelineSpec,
        state: &CursorState,
        lineage: LineageColumns,
        input: &SchemaRef,
        table: Option<&Schema>,
    ) -> Result<Self> {
        let tracker = Tracker::new(spec, state, input)?;
        let strategy = WriteStrategy::new(spec, input)?;
        let conform = Conform::plan(table, input, spec.on_schema_change, &spec.name)?;
        let staged = strategy.staged_schema(lineage.output_schema(&conform.schema)?);
        Ok(PartRows {
            tracker,
            strategy,
            conform,
            lineage,
            staged,
            rows: 0,
        })
    }

    /// The staged file's schema.
    pub fn staged_schema(&self) -> SchemaRef {
        self.staged.clone()
    }

    /// A batch as read becomes the batch to stage; `counters` gain what was left out.
    pub fn push(&mut self, batch: RecordBatch, counters: &mut RunCounters) -> Result<RecordBatch> {
        let (batch, skipped) = self.tracker.observe(batch)?;
        counters.rows_skipped += skipped;
        self.strategy.check(&batch)?;
        let (batch, dropped) = self.conform.apply(batch)?;
        counters.rows_discarded += dropped;
        self.tracker.written(&batch)?;
        let out = self.lineage.apply(&batch)?;
        let out = self.strategy.stage(out, &self.staged)?;
        self.rows += out.num_rows() as u64;
        Ok(out)
    }

    /// Whether the part commits its staged file (`table_exists`: the table has files): one
    /// with rows always; an empty one only to create or empty the table.
    pub fn keeps_file(&self, table_exists: bool) -> bool {
        self.rows > 0 || self.strategy.keeps_empty_part(table_exists)
    }

    pub fn finish(self, state: &CursorState) -> Tracked {
        self.tracker.finish(state)
    }
}
