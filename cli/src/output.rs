//! Query output in the formats `--format` names, streamed where the format allows.

use std::io::Write;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use hakiri_engine::Error;

use crate::Failure;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An aligned table (collects the result first).
    Table,
    /// CSV with a header line.
    Csv,
    /// Newline-delimited JSON, one object per row.
    Json,
}

fn arrow_err(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: format!("formatting output: {e}"),
    }
}

/// CSV has no nested values: lists, structs and maps are written as their display text
/// (`[1, 2]`, `{a: 1}`), the same the table format shows.
fn nested_as_text(batch: RecordBatch) -> Result<RecordBatch, Failure> {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    use std::sync::Arc;
    let nested = |t: &DataType| t.is_nested();
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| nested(f.data_type()))
    {
        return Ok(batch);
    }
    let opts = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if nested(f.data_type()) {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts).map_err(arrow_err)?;
            let text: StringArray = (0..c.len())
                .map(|i| c.is_valid(i).then(|| fmt.value(i).to_string()))
                .collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow_err)
}

/// Writes a query's rows to stdout and returns the row count.
pub async fn print_stream(
    mut stream: SendableRecordBatchStream,
    format: Format,
) -> Result<usize, Failure> {
    let stdout = std::io::stdout();
    let mut rows = 0;
    match format {
        Format::Table => {
            let schema = stream.schema();
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(b) = stream.next().await {
                let b = b.map_err(Error::from)?;
                rows += b.num_rows();
                batches.push(b);
            }
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
            let table = pretty_format_batches(&batches).map_err(arrow_err)?;
            let mut out = stdout.lock();
            writeln!(out, "{table}")?;
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(stdout.lock());
            while let Some(b) = stream.next().await {
                let b = b.map_err(Error::from)?;
                rows += b.num_rows();
                writer.write(&nested_as_text(b)?).map_err(arrow_err)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(stdout.lock());
            while let Some(b) = stream.next().await {
                let b = b.map_err(Error::from)?;
                rows += b.num_rows();
                writer.write(&b).map_err(arrow_err)?;
            }
            writer.finish().map_err(arrow_err)?;
        }
    }
    Ok(rows)
}
