//! Exposes the catalog's state tables to DataFusion as schema `hakiri`. Each query reads a
//! fresh snapshot of the table, so `hakiri.runs` always shows the committed state.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::DateTime;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;

use super::Catalog;
use hakiri_core::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int,
    Float,
    /// RFC 3339 text in the catalog, a UTC timestamp in SQL.
    Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

/// A column of a state table: its name, how it reads in SQL, and its SQLite declaration.
#[derive(Debug)]
pub struct ColumnDecl {
    pub name: &'static str,
    pub ty: ColumnType,
    pub sqlite: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, sqlite: &'static str) -> ColumnDecl {
    ColumnDecl { name, ty, sqlite }
}

/// A state table, `hakiri.<name>`.
#[derive(Debug)]
pub struct TableDecl {
    pub name: &'static str,
    pub columns: &'static [ColumnDecl],
    /// Table constraints after the columns (a composite primary key).
    pub constraints: &'static str,
}

impl TableDecl {
    /// The SQLite `CREATE TABLE` of a new catalog.
    pub fn create_sql(&self) -> String {
        let mut parts: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.sqlite))
            .collect();
        if !self.constraints.is_empty() {
            parts.push(self.constraints.to_string());
        }
        format!(
            "CREATE TABLE {} (\n    {}\n);",
            self.name,
            parts.join(",\n    ")
        )
    }

    /// `SELECT <every column, in declared order> FROM <name>`: the order is the
    /// declaration's whatever order migrations added columns in.
    pub fn select_sql(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        format!("SELECT {} FROM {}", names.join(", "), self.name)
    }

    /// The columns as `hakiri.<name>` shows them.
    pub fn columns(&self) -> Vec<(String, ColumnType)> {
        self.columns
            .iter()
            .map(|c| (c.name.to_string(), c.ty))
            .collect()
    }
}

use ColumnType::{Int, Text, Timestamp};

/// The state tables, declared once: the SQLite DDL of a new catalog, the columns both
/// adapters show as `hakiri.<name>` and the conformance suite's checks all come from here.
/// A change here needs a migration in `sqlite.rs` (a test compares the two).
pub const STATE_TABLES: &[TableDecl] = &[
    TableDecl {
        name: "sources",
        columns: &[
            col("name", Text, "TEXT PRIMARY KEY"),
            col("type", Text, "TEXT NOT NULL"),
            col("options", Text, "TEXT NOT NULL"),
            col("origin", Text, "TEXT NOT NULL"),
            col("created_at", Timestamp, "TEXT NOT NULL"),
            col("updated_at", Timestamp, "TEXT NOT NULL"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "pipelines",
        columns: &[
            col("name", Text, "TEXT PRIMARY KEY"),
            col("target_table", Text, "TEXT NOT NULL"),
            col("cursor_kind", Text, "TEXT"),
            col("cursor_column", Text, "TEXT"),
            col("cursor_initial", Text, "TEXT"),
            col("write_mode", Text, "TEXT NOT NULL"),
            col("merge_key", Text, "TEXT"),
            col("on_schema_change", Text, "TEXT"),
            col("sql", Text, "TEXT NOT NULL"),
            col("definition", Text, "TEXT"),
            col("origin", Text, "TEXT NOT NULL"),
            col("created_at", Timestamp, "TEXT NOT NULL"),
            col("updated_at", Timestamp, "TEXT NOT NULL"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "runs",
        columns: &[
            col("run_id", Text, "TEXT PRIMARY KEY"),
            col("pipeline", Text, "TEXT NOT NULL"),
            col("status", Text, "TEXT NOT NULL"),
            col("started_at", Timestamp, "TEXT NOT NULL"),
            col("ended_at", Timestamp, "TEXT"),
            col("rows_read", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("rows_written", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("pages", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("bytes", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("rows_skipped", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("rows_discarded", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("cursor_start", Text, "TEXT"),
            col("cursor_end", Text, "TEXT"),
            col("error", Text, "TEXT"),
            col("pid", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("host", Text, "TEXT NOT NULL DEFAULT ''"),
            col("heartbeat_at", Timestamp, "TEXT"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "cursors",
        columns: &[
            col("pipeline", Text, "TEXT PRIMARY KEY"),
            col("kind", Text, "TEXT NOT NULL"),
            col("value", Text, "TEXT"),
            col("run_id", Text, "TEXT"),
            col("updated_at", Timestamp, "TEXT NOT NULL"),
            col("boundary", Text, "TEXT"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "cursor_history",
        columns: &[
            col("id", Int, "INTEGER PRIMARY KEY AUTOINCREMENT"),
            col("pipeline", Text, "TEXT NOT NULL"),
            col("kind", Text, "TEXT NOT NULL"),
            col("value", Text, "TEXT NOT NULL"),
            col("run_id", Text, "TEXT NOT NULL"),
            col("committed_at", Timestamp, "TEXT NOT NULL"),
            col("boundary", Text, "TEXT"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "tables",
        columns: &[
            col("name", Text, "TEXT PRIMARY KEY"),
            col("rows", Int, "INTEGER NOT NULL"),
            col("files", Int, "INTEGER NOT NULL"),
            col("schema_version", Int, "INTEGER"),
            col("created_at", Timestamp, "TEXT NOT NULL"),
            col("updated_at", Timestamp, "TEXT NOT NULL"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "files",
        columns: &[
            col("path", Text, "TEXT PRIMARY KEY"),
            col("table_name", Text, "TEXT NOT NULL"),
            col("run_id", Text, "TEXT NOT NULL"),
            col("rows", Int, "INTEGER NOT NULL"),
            col("bytes", Int, "INTEGER NOT NULL"),
            col("created_at", Timestamp, "TEXT NOT NULL"),
            col("retired_at", Timestamp, "TEXT"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "schema_versions",
        columns: &[
            col("table_name", Text, "TEXT NOT NULL"),
            col("version", Int, "INTEGER NOT NULL"),
            col("schema", Text, "TEXT NOT NULL"),
            col("run_id", Text, "TEXT"),
            col("created_at", Timestamp, "TEXT NOT NULL"),
        ],
        constraints: "PRIMARY KEY (table_name, version)",
    },
    TableDecl {
        name: "events",
        columns: &[
            col("id", Int, "INTEGER PRIMARY KEY AUTOINCREMENT"),
            col("at", Timestamp, "TEXT NOT NULL"),
            col("kind", Text, "TEXT NOT NULL"),
            col("subject", Text, "TEXT NOT NULL"),
            col("message", Text, "TEXT NOT NULL"),
            col("run_id", Text, "TEXT"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "schedules",
        columns: &[
            col("pipeline", Text, "TEXT PRIMARY KEY"),
            col("schedule", Text, "TEXT NOT NULL"),
            col("next_fire_at", Timestamp, "TEXT NOT NULL"),
            col("slot_at", Timestamp, "TEXT NOT NULL"),
            col("attempt", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("consecutive_failures", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("suspended", Int, "INTEGER NOT NULL DEFAULT 0"),
            col("suspended_reason", Text, "TEXT"),
            col("last_run_id", Text, "TEXT"),
            col("last_status", Text, "TEXT"),
            col("last_fired_at", Timestamp, "TEXT"),
            col("updated_at", Timestamp, "TEXT NOT NULL"),
        ],
        constraints: "",
    },
    TableDecl {
        name: "source_schemas",
        columns: &[
            col("source", Text, "TEXT NOT NULL"),
            col("table_name", Text, "TEXT NOT NULL"),
            col("columns", Text, "TEXT NOT NULL"),
            col("discovered_at", Timestamp, "TEXT NOT NULL"),
        ],
        constraints: "PRIMARY KEY (source, table_name)",
    },
];

/// The declaration of `hakiri.<name>`.
pub fn state_table(name: &str) -> Option<&'static TableDecl> {
    STATE_TABLES.iter().find(|t| t.name == name)
}

/// A state table read from the catalog, before conversion to Arrow.
#[derive(Debug, Clone, Default)]
pub struct RawTable {
    pub columns: Vec<(String, ColumnType)>,
    pub rows: Vec<Vec<RawValue>>,
}

impl RawTable {
    pub fn to_record_batch(&self) -> Result<RecordBatch> {
        let tz: Arc<str> = Arc::from("UTC");
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (i, (name, ty)) in self.columns.iter().enumerate() {
            let values = self.rows.iter().map(|r| &r[i]);
            let (dt, array): (DataType, ArrayRef) = match ty {
                ColumnType::Int => {
                    let mut b = Int64Builder::new();
                    for v in values {
                        b.append_option(match v {
                            RawValue::Int(x) => Some(*x),
                            RawValue::Float(x) => Some(*x as i64),
                            RawValue::Text(t) => t.parse().ok(),
                            RawValue::Null => None,
                        });
                    }
                    (DataType::Int64, Arc::new(b.finish()))
                }
                ColumnType::Float => {
                    let mut b = Float64Builder::new();
                    for v in values {
                        b.append_option(match v {
                            RawValue::Int(x) => Some(*x as f64),
                            RawValue::Float(x) => Some(*x),
                            RawValue::Text(t) => t.parse().ok(),
                            RawValue::Null => None,
                        });
                    }
                    (DataType::Float64, Arc::new(b.finish()))
                }
                ColumnType::Timestamp => {
                    let mut b = TimestampMicrosecondBuilder::new().with_timezone(tz.clone());
                    for v in values {
                        b.append_option(match v {
                            RawValue::Text(t) => DateTime::parse_from_rfc3339(t)
                                .ok()
                                .map(|t| t.timestamp_micros()),
                            _ => None,
                        });
                    }
                    (
                        DataType::Timestamp(TimeUnit::Microsecond, Some(tz.clone())),
                        Arc::new(b.finish()),
                    )
                }
                ColumnType::Text => {
                    let mut b = StringBuilder::new();
                    for v in values {
                        match v {
                            RawValue::Null => b.append_null(),
                            RawValue::Int(x) => b.append_value(x.to_string()),
                            RawValue::Float(x) => b.append_value(x.to_string()),
                            RawValue::Text(t) => b.append_value(t),
                        }
                    }
                    (DataType::Utf8, Arc::new(b.finish()))
                }
            };
            fields.push(Field::new(name, dt, true));
            arrays.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        RecordBatch::try_new(schema, arrays)
            .map_err(|e| Error::Internal(format!("building state table batch: {e}")))
    }
}

/// The `hakiri` schema: one table per catalog state table.
#[derive(Debug)]
pub struct StateSchemaProvider {
    catalog: Arc<dyn Catalog>,
}

impl StateSchemaProvider {
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        StateSchemaProvider { catalog }
    }
}

#[async_trait]
impl SchemaProvider for StateSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        STATE_TABLES.iter().map(|t| t.name.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if state_table(name).is_none() {
            return Ok(None);
        }
        let batch = self.catalog.state_table(name)?.to_record_batch()?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        state_table(name).is_some()
    }
}
