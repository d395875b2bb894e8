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
                writer.write(&b).map_err(arrow_err)?;
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
