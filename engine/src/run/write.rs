//! The write strategy of each mode: what a part stages and what its commit does to the
//! table. Pure; the engine does the staging and the merge's query.
//!
//! - append: the part's file is added to the table's;
//! - replace: the part's file becomes the table (an empty part empties it);
//! - merge: the part's rows are staged numbered in arrival order, then merged with the
//!   table's (the last row of a key wins) into a file that replaces the table's.

use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::track::column_index;
use crate::error::{Error, Result};
use crate::types::{PipelineSpec, WriteMode};

/// Column numbering a merge run's rows in arrival order: the last one of a key wins.
pub(crate) const SEQ_COLUMN: &str = "__hakiri_seq";

pub(crate) struct WriteStrategy {
    pipeline: String,
    mode: WriteMode,
    /// Merge: the key columns in the plan's output, by index and name.
    keys: Vec<(usize, String)>,
    /// Merge: the next row's number.
    seq: i64,
}

impl WriteStrategy {
    /// The strategy of `spec`'s mode over rows of `input` (the plan's output).
    ///
    /// # Errors
    /// `InvalidInput` when a key column is not in the SELECT's output.
    pub fn new(spec: &PipelineSpec, input: &SchemaRef) -> Result<Self> {
        let keys = spec
            .key
            .iter()
            .map(|k| Ok((column_index(spec, input, k, "key")?, k.clone())))
            .collect::<Result<Vec<_>>>()?;
        Ok(WriteStrategy {
            pipeline: spec.name.clone(),
            mode: spec.mode,
            keys,
            seq: 0,
        })
    }

    fn merges(&self) -> bool {
        self.mode == WriteMode::Merge
    }

    /// The staged file's schema: the table's row (`rows`, lineage columns included), plus
    /// the arrival number for a merge.
    pub fn staged_schema(&self, rows: SchemaRef) -> SchemaRef {
        if !self.merges() {
            return rows;
        }
        let mut fields: Vec<Field> = rows.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(SEQ_COLUMN, DataType::Int64, false));
        Arc::new(Schema::new(fields))
    }

    /// The name the part's file is staged under: a merge's rows are input to the merge,
    /// staged under their own name.
    pub fn staged_run(&self, run_id: &str) -> String {
        if self.merges() {
            format!("{run_id}-input")
        } else {
            run_id.to_string()
        }
    }

    /// Checks a batch as read: a merge needs every key value.
    ///
    /// # Errors
    /// `InvalidInput` for a NULL in a key column.
    pub fn check(&self, batch: &RecordBatch) -> Result<()> {
        for (k, name) in &self.keys {
            let n = batch.column(*k).null_count();
            if n > 0 {
                return Err(Error::InvalidInput(format!(
                    "pipeline '{}': {n} row(s) have a NULL in key column '{name}'; MODE MERGE needs every key value to identify its row: filter them out or COALESCE the key in the SELECT",
                    self.pipeline
                )));
            }
        }
        Ok(())
    }

    /// The batch as staged (with lineage columns already): numbered for a merge.
    pub fn stage(&mut self, batch: RecordBatch, staged: &SchemaRef) -> Result<RecordBatch> {
        if !self.merges() {
            return Ok(batch);
        }
        let n = batch.num_rows() as i64;
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(Int64Array::from_iter_values(
            self.seq..self.seq + n,
        )));
        self.seq += n;
        RecordBatch::try_new(staged.clone(), columns)
            .map_err(|e| Error::Internal(format!("numbering merge rows: {e}")))
    }

    /// Whether a part that read no rows still commits a file: the first one creates the
    /// table, and a replace empties it. Otherwise it adds nothing.
    pub fn keeps_empty_part(&self, table_exists: bool) -> bool {
        !table_exists || self.mode == WriteMode::Replace
    }

    /// Whether the commit swaps the table's files for the part's (`has_files`: the part
    /// wrote some): a replace always, a merge when it merged rows, an append never.
    pub fn replaces(mode: WriteMode, has_files: bool) -> bool {
        match mode {
            WriteMode::Replace => true,
            WriteMode::Merge => has_files,
            WriteMode::Append => false,
        }
    }
}

/// The query that merges the staged rows (`merge_input`: the table's files and the part's)
/// into one row per key, the last one delivered; `columns` are the table's.
pub(crate) fn merge_query(columns: &[String], keys: &[String]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let cols: Vec<String> = columns
        .iter()
        .filter(|c| *c != SEQ_COLUMN)
        .map(|c| quote(c))
        .collect();
    let keys: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    format!(
        "SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY {seq} DESC NULLS LAST) AS __hakiri_rn FROM merge_input) WHERE __hakiri_rn = 1",
        cols = cols.join(", "),
        keys = keys.join(", "),
        seq = quote(SEQ_COLUMN),
    )
}
