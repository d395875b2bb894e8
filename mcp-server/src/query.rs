//! Read-only queries for agents: DataFusion checks the plan (no DDL, DML, COPY or
//! statements), rows are cut at a limit with a `truncated` flag, and the whole query has a
//! timeout. Results are columns with their types plus rows as JSON arrays.

use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::ArrayWriter;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SQLOptions;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;
use hakiri_engine::sql::{Access, HakiriStatement, parse_statements};
use hakiri_engine::{Engine, Output};

use crate::tools::ToolError;
use serde_json::{Value, json};

/// An engine, DataFusion or Arrow error as a tool error, keeping its category.
fn engine_err(e: impl Into<hakiri_engine::Error>) -> ToolError {
    ToolError::from(e.into())
}

/// What an agent may not do through `context.query`, and what to use instead.
fn refusal(statement: &HakiriStatement) -> String {
    let what = statement.to_string();
    let verb: String = what
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "context.query runs read-only queries (SELECT, EXPLAIN, SHOW); '{verb} ...' changes \
         state. Pipelines are defined in hakiri.toml or by a person; run one with the \
         pipeline.run tool"
    )
}

fn write_kind(statement: &DFStatement) -> Option<&'static str> {
    match statement {
        DFStatement::CopyTo(_) => Some("COPY"),
        DFStatement::CreateExternalTable(_) => Some("CREATE EXTERNAL TABLE"),
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Insert(_) => Some("INSERT"),
            Statement::Update(_) => Some("UPDATE"),
            Statement::Delete(_) => Some("DELETE"),
            Statement::Merge(_) => Some("MERGE"),
            Statement::Copy { .. } => Some("COPY"),
            _ => None,
        },
        _ => None,
    }
}

/// Runs `sql` if its plan only reads, returning at most `limit` rows.
pub async fn read_only(
    engine: &Engine,
    sql: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Value, ToolError> {
    let statements = parse_statements(sql).map_err(|e| format!("invalid SQL: {e}"))?;
    let [statement] = statements.as_slice() else {
        return Err(format!(
            "context.query runs one statement at a time; this text holds {}",
            statements.len()
        )
        .into());
    };
    // Decided by the statement's access, as for pgwire's read-only role; session
    // statements are refused too: every call shares the engine's one session.
    match (statement.access(), statement) {
        (Access::Read, HakiriStatement::DataFusion(_)) => {}
        (Access::Read, hakiri) => {
            let work = hakiri_read(engine, hakiri.clone(), limit);
            return tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| too_slow(timeout))?;
        }
        (Access::Session, s) => {
            return Err(format!(
                "context.query runs read-only queries (SELECT, EXPLAIN, SHOW); '{s}' sets up a \
                 session, and every call shares one: leave it out"
            )
            .into());
        }
        (Access::Write, HakiriStatement::DataFusion(s)) => {
            // The message says why rather than what planning the write found wrong.
            let write = write_kind(s).unwrap_or("this statement");
            return Err(format!(
                "context.query runs read-only queries (SELECT, EXPLAIN, SHOW); {write} writes. \
                 Context tables change only through pipelines: run one with the pipeline.run tool"
            )
            .into());
        }
        (Access::Write, hakiri) => return Err(refusal(hakiri).into()),
    }
    let HakiriStatement::DataFusion(statement) = statement else {
        unreachable!("Hakiri's statements are answered above");
    };
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let work = async {
        let state = engine.session().state();
        let plan = state
            .statement_to_plan(statement.as_ref().clone())
            .await
            .map_err(engine_err)?;
        options.verify_plan(&plan).map_err(|e| {
            format!(
                "context.query runs read-only queries (SELECT, EXPLAIN, SHOW): {e}. Pipelines \
                 write data: run one with the pipeline.run tool"
            )
        })?;
        let df = engine
            .session()
            .execute_logical_plan(plan)
            .await
            .map_err(engine_err)?;
        let stream = df.execute_stream().await.map_err(engine_err)?;
        collect(stream, limit).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| too_slow(timeout))?
}

fn too_slow(timeout: Duration) -> String {
    format!(
        "the query did not finish within {} ms: add filters or a LIMIT, or raise timeout_ms",
        timeout.as_millis()
    )
}

/// A read among Hakiri's statements (`SHOW PIPELINES`, `PLAN PIPELINE`, ...), as rows.
async fn hakiri_read(
    engine: &Engine,
    statement: HakiriStatement,
    limit: usize,
) -> Result<Value, ToolError> {
    match engine
        .execute_statement(statement)
        .await
        .map_err(engine_err)?
    {
        Output::Stream(stream) => collect(stream, limit).await,
        Output::Plan(plan) => {
            let rows: Vec<Value> = plan
                .physical_plan
                .lines()
                .take(limit)
                .map(|l| json!([l]))
                .collect();
            Ok(json!({
                "columns": [{"name": "plan", "type": "Utf8", "nullable": false}],
                "row_count": rows.len(),
                "truncated": plan.physical_plan.lines().count() > limit,
                "rows": rows,
            }))
        }
        Output::Message(m) => Ok(json!({
            "columns": [{"name": "message", "type": "Utf8", "nullable": false}],
            "row_count": 1,
            "truncated": false,
            "rows": [[m]],
        })),
        Output::Run(_) => Err(String::from(
            "context.query does not run pipelines: use the pipeline.run tool",
        )
        .into()),
    }
}

/// Up to `limit` rows of the stream, as `{columns, rows, row_count, truncated}`; the rest of
/// the stream is never read.
pub async fn collect(
    mut stream: SendableRecordBatchStream,
    limit: usize,
) -> Result<Value, ToolError> {
    let schema = stream.schema();
    let mut rows = Vec::new();
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(engine_err)?;
        let room = limit - rows.len();
        if batch.num_rows() > room {
            truncated = true;
        }
        rows.extend(json_rows(&batch.slice(0, batch.num_rows().min(room)))?);
        if rows.len() >= limit {
            // A batch that exactly filled the limit: whether more rows follow is unknown
            // without reading on, which the limit is there to avoid; look at one more batch.
            if !truncated {
                truncated = next_has_rows(&mut stream).await?;
            }
            break;
        }
    }
    Ok(json!({
        "columns": columns(&schema),
        "row_count": rows.len(),
        "truncated": truncated,
        "rows": rows,
    }))
}

async fn next_has_rows(stream: &mut SendableRecordBatchStream) -> Result<bool, ToolError> {
    while let Some(batch) = stream.next().await {
        if batch.map_err(engine_err)?.num_rows() > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Column names with their Arrow types, as DataFusion names them.
pub fn columns(schema: &SchemaRef) -> Vec<Value> {
    schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
        .collect()
}

/// The rows of a batch as JSON arrays in column order: numbers stay numbers, nested
/// values become arrays and objects, NULL is null. Each column is encoded on its own so
/// repeated column names (`select a.id, b.id`) keep their values.
fn json_rows(batch: &RecordBatch) -> Result<Vec<Value>, ToolError> {
    let mut rows: Vec<Vec<Value>> = vec![Vec::with_capacity(batch.num_columns()); batch.num_rows()];
    for (i, field) in batch.schema().fields().iter().enumerate() {
        let single = RecordBatch::try_new(
            std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
                field.as_ref().clone().with_name("v"),
            ])),
            vec![batch.column(i).clone()],
        )
        .map_err(engine_err)?;
        let mut writer = ArrayWriter::new(Vec::new());
        writer.write(&single).map_err(engine_err)?;
        writer.finish().map_err(engine_err)?;
        let encoded = writer.into_inner();
        let values: Vec<Value> = if encoded.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&encoded).map_err(|e| {
                ToolError::from(hakiri_engine::Error::Internal(format!(
                    "reading back a row's JSON: {e}"
                )))
            })?
        };
        for (row, value) in rows.iter_mut().zip(values) {
            row.push(value.get("v").cloned().unwrap_or(Value::Null));
        }
    }
    Ok(rows.into_iter().map(Value::Array).collect())
}
