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

use super::{Catalog, STATE_TABLES};
use crate::error::{Error, Result};

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
        STATE_TABLES.iter().map(|s| s.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !STATE_TABLES.contains(&name) {
            return Ok(None);
        }
        let batch = self.catalog.state_table(name)?.to_record_batch()?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        STATE_TABLES.contains(&name)
    }
}
