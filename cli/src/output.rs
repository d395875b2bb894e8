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

fn arrow_err(e: datafusion::arrow::error::ArrowError) -> Failure {
    use datafusion::arrow::error::ArrowError;
    // Writers report a closed stdout (`hakiri query ... | head`) as an I/O error.
    let broken_pipe = match &e {
        ArrowError::IoError(_, io) => io.kind() == std::io::ErrorKind::BrokenPipe,
        ArrowError::ExternalError(inner) => inner
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe),
        _ => false,
    };
    Failure {
        code: 1,
        message: format!("formatting output: {e}"),
        broken_pipe,
    }
}

/// [`arrow_err`], knowing whether the writer's stdout found its reader gone.
fn watched(
    e: datafusion::arrow::error::ArrowError,
    broken: &std::rc::Rc<std::cell::Cell<bool>>,
) -> Failure {
    let mut f = arrow_err(e);
    f.broken_pipe |= broken.get();
    f
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

/// stdout, noting whether a write failed because its reader went away: Arrow's CSV writer
/// keeps only the text of an I/O error, so the kind is taken here, where it is known.
struct Stdout {
    inner: std::io::StdoutLock<'static>,
    broken: std::rc::Rc<std::cell::Cell<bool>>,
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| self.note(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|e| self.note(e))
    }
}

impl Stdout {
    fn note(&self, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            self.broken.set(true);
        }
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
            let broken = std::rc::Rc::default();
            let out = Stdout {
                inner: stdout.lock(),
                broken: std::rc::Rc::clone(&broken),
            };
            let fail = |e| watched(e, &broken);
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            while let Some(b) = stream.next().await {
                let b = b.map_err(Error::from)?;
                rows += b.num_rows();
                writer.write(&nested_as_text(b)?).map_err(fail)?;
            }
        }
        Format::Json => {
            let broken = std::rc::Rc::default();
            let out = Stdout {
                inner: stdout.lock(),
                broken: std::rc::Rc::clone(&broken),
            };
            let fail = |e| watched(e, &broken);
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(out);
            while let Some(b) = stream.next().await {
                let b = b.map_err(Error::from)?;
                rows += b.num_rows();
                writer.write(&b).map_err(fail)?;
            }
            writer.finish().map_err(fail)?;
        }
    }
    Ok(rows)
}
