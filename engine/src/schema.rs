//! Schema evolution of context tables: new columns are added, widening type changes are
//! applied, and a change that loses information follows the pipeline's [`SchemaPolicy`].
//!
//! A table's schema is the fold of its files' schemas in commit order ([`fold`]); each file
//! keeps the types it was written with and DataFusion casts them when the table is read.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::kernels::cast::{can_cast_types, cast};
use datafusion::arrow::compute::{and, filter_record_batch, is_not_null, is_null};
use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::types::EventKind;
use crate::types::SchemaPolicy;

/// A schema's columns as JSON text (`[{"name", "type", "nullable"}]`, types as Arrow writes
/// them), for `hakiri.source_schemas`: readable in SQL and read back by [`parse_columns_text`].
pub fn columns_text(schema: &Schema) -> String {
    let columns: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "type": f.data_type().to_string(),
                "nullable": f.is_nullable(),
            })
        })
        .collect();
    serde_json::Value::Array(columns).to_string()
}

/// The schema [`columns_text`] wrote.
///
/// # Errors
/// `Internal` when the text is not such a list or names a type Arrow cannot read back.
pub fn parse_columns_text(text: &str) -> Result<SchemaRef> {
    let bad = |why: String| Error::Internal(format!("unreadable source schema {text}: {why}"));
    let columns: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let (Some(name), Some(ty)) = (c["name"].as_str(), c["type"].as_str()) else {
            return Err(bad("a column without name or type".into()));
        };
        let ty: DataType = ty.parse().map_err(|e| bad(format!("{e}")))?;
        fields.push(Field::new(
            name,
            ty,
            c["nullable"].as_bool().unwrap_or(true),
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The type both `a` and `b` fit in without loss, if there is one.
pub fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    if a == b {
        return Some(a.clone());
    }
    let int_rank = |t: &DataType| match t {
        Int8 => Some(1),
        Int16 => Some(2),
        Int32 => Some(3),
        Int64 => Some(4),
        _ => None,
    };
    match (a, b) {
        (Null, x) | (x, Null) => Some(x.clone()),
        _ if int_rank(a).is_some() && int_rank(b).is_some() => Some(if int_rank(a) > int_rank(b) {
            a.clone()
        } else {
            b.clone()
        }),
        (Float32 | Float64, Float32 | Float64) => Some(Float64),
        _ if (int_rank(a).is_some() && b.is_floating())
            || (a.is_floating() && int_rank(b).is_some()) =>
        {
            Some(Float64)
        }
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => Some(Utf8),
        _ => None,
    }
}

/// Whether values of `from` can be stored in a column of `to` without losing anything:
/// `to` is as wide, or it is text (every value has a text form).
fn fits(from: &DataType, to: &DataType) -> bool {
    widen(to, from).as_ref() == Some(to)
        || (matches!(to, DataType::Utf8) && can_cast_types(from, to))
}

/// One change to a table's schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Added {
        column: String,
        ty: DataType,
    },
    Widened {
        column: String,
        from: DataType,
        to: DataType,
    },
    /// An incompatible change turned the column into JSON text.
    Variant {
        column: String,
        from: DataType,
        to: DataType,
    },
}

impl Change {
    /// (event kind, message) for `hakiri.events`.
    pub fn event(&self, table: &str) -> (EventKind, String) {
        match self {
            Change::Added { column, ty } => (
                EventKind::ColumnAdded,
                format!(
                    "table '{table}': column '{column}' ({ty}) added; older rows read it as NULL"
                ),
            ),
            Change::Widened { column, from, to } => (
                EventKind::ColumnWidened,
                format!("table '{table}': column '{column}' widened from {from} to {to}"),
            ),
            Change::Variant { column, from, to } => (
                EventKind::ColumnVariant,
                format!(
                    "table '{table}': column '{column}' received {to} values but was {from}; it now holds text (a variant column) under ON SCHEMA CHANGE EVOLVE"
                ),
            ),
        }
    }
}

/// The schema that holds both `table` and `incoming`, and the changes from `table`.
/// Incompatible columns become text (variant): once a file with another type is committed
/// the change was accepted by the policy.
pub fn merge(table: &Schema, incoming: &Schema) -> (Schema, Vec<Change>) {
    let mut fields: Vec<Field> = table.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut changes = Vec::new();
    for f in incoming.fields() {
        match fields.iter_mut().find(|t| t.name() == f.name()) {
            None => {
                changes.push(Change::Added {
                    column: f.name().clone(),
                    ty: f.data_type().clone(),
                });
                // New columns go before the lineage columns, which stay last.
                let at = fields
                    .iter()
                    .position(|t| t.name().starts_with("_hakiri_"))
                    .unwrap_or(fields.len());
                fields.insert(at, f.as_ref().clone().with_nullable(true));
            }
            Some(t) if fits(f.data_type(), t.data_type()) => {}
            Some(t) => {
                let from = t.data_type().clone();
                match widen(&from, f.data_type()) {
                    Some(to) => {
                        changes.push(Change::Widened {
                            column: f.name().clone(),
                            from,
                            to: to.clone(),
                        });
                        *t = t.clone().with_data_type(to);
                    }
                    None => {
                        changes.push(Change::Variant {
                            column: f.name().clone(),
                            from,
                            to: f.data_type().clone(),
                        });
                        *t = t.clone().with_data_type(DataType::Utf8);
                    }
                }
            }
        }
        if let Some(t) = fields.iter_mut().find(|t| t.name() == f.name())
            && f.is_nullable()
            && !t.is_nullable()
        {
            *t = t.clone().with_nullable(true);
        }
    }
    (Schema::new(fields), changes)
}

/// A table's schema from its files' schemas, oldest first.
pub fn fold(schemas: impl IntoIterator<Item = SchemaRef>) -> Option<Schema> {
    schemas
        .into_iter()
        .fold(None, |acc: Option<Schema>, s| match acc {
            None => Some(s.as_ref().clone()),
            Some(t) => Some(merge(&t, &s).0),
        })
}

/// How a run's batches are made to fit its table under the pipeline's policy.
#[derive(Debug, Clone)]
pub struct Conform {
    /// The schema the run's file is written with.
    pub schema: SchemaRef,
    /// Columns cast to the table's type; rows whose value does not survive the cast are
    /// left out (policy discard) or the column is cast to text (policy evolve).
    casts: Vec<(usize, DataType, bool)>,
}

impl Conform {
    /// Plans how `incoming` batches fit `table` (none yet: as they are).
    ///
    /// # Errors
    /// `InvalidInput` under `FREEZE` when a column's type cannot hold the new values.
    pub fn plan(
        table: Option<&Schema>,
        incoming: &SchemaRef,
        policy: SchemaPolicy,
        pipeline: &str,
    ) -> Result<Self> {
        let mut casts = Vec::new();
        let mut fields: Vec<Field> = incoming
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Some(table) = table {
            for (i, f) in incoming.fields().iter().enumerate() {
                let Ok(t) = table.field_with_name(f.name()) else {
                    continue;
                };
                let (from, to) = (f.data_type(), t.data_type());
                if fits(from, to) || widen(to, from).is_some() {
                    continue;
                }
                match policy {
                    SchemaPolicy::Freeze => {
                        return Err(Error::InvalidInput(format!(
                            "pipeline '{pipeline}': column '{}' is {to} in the context table but the run produces {from}; ON SCHEMA CHANGE FREEZE fails the run (nothing was committed): fix the source, cast the column in the SELECT, or use EVOLVE or DISCARD",
                            f.name()
                        )));
                    }
                    SchemaPolicy::Discard => {
                        if !can_cast_types(from, to) {
                            return Err(Error::InvalidInput(format!(
                                "pipeline '{pipeline}': column '{}' is {to} in the context table and {from} values cannot be converted to it at all; cast it in the SELECT",
                                f.name()
                            )));
                        }
                        casts.push((i, to.clone(), true));
                        fields[i] = fields[i].clone().with_data_type(to.clone());
                    }
                    SchemaPolicy::Evolve => {
                        if can_cast_types(from, &DataType::Utf8) {
                            casts.push((i, DataType::Utf8, false));
                            fields[i] = fields[i].clone().with_data_type(DataType::Utf8);
                        }
                    }
                }
            }
        }
        // Parquet has no month-day-nanosecond interval: such columns are stored as text.
        for (i, f) in incoming.fields().iter().enumerate() {
            if matches!(
                f.data_type(),
                DataType::Interval(IntervalUnit::MonthDayNano)
            ) && !casts.iter().any(|(c, _, _)| *c == i)
            {
                casts.push((i, DataType::Utf8, false));
                fields[i] = fields[i].clone().with_data_type(DataType::Utf8);
            }
        }
        Ok(Conform {
            schema: Arc::new(Schema::new_with_metadata(
                fields,
                incoming.metadata().clone(),
            )),
            casts,
        })
    }

    /// Applies the casts; returns the batch and how many rows were discarded.
    pub fn apply(&self, batch: RecordBatch) -> Result<(RecordBatch, u64)> {
        if self.casts.is_empty() {
            return Ok((batch, 0));
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut keep: Option<datafusion::arrow::array::BooleanArray> = None;
        for (i, to, discard) in &self.casts {
            let before = &columns[*i];
            let after = cast(before.as_ref(), to)
                .map_err(|e| Error::InvalidInput(format!("converting column {i} to {to}: {e}")))?;
            if *discard {
                // A value that was there and is NULL after the cast did not fit.
                let lost = and(&is_not_null(before.as_ref())?, &is_null(after.as_ref())?)?;
                let ok = datafusion::arrow::compute::not(&lost)?;
                keep = Some(match keep {
                    Some(k) => and(&k, &ok)?,
                    None => ok,
                });
            }
            columns[*i] = after;
        }
        let out = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("conforming batch: {e}")))?;
        match keep {
            Some(k) => {
                let dropped = (k.len() - k.true_count()) as u64;
                Ok((filter_record_batch(&out, &k)?, dropped))
            }
            None => Ok((out, 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_text_reads_back() {
        use datafusion::arrow::datatypes::TimeUnit;
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("amount", DataType::Decimal128(10, 2), true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ]);
        let text = columns_text(&schema);
        assert_eq!(*parse_columns_text(&text).unwrap(), schema, "{text}");
        assert!(parse_columns_text("[{\"name\": \"x\"}]").is_err());
    }

    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn merge_adds_widens_and_turns_conflicts_into_text() {
        let old = schema(&[
            ("id", DataType::Int32),
            ("score", DataType::Int64),
            ("tag", DataType::Int64),
        ]);
        let new = schema(&[
            ("id", DataType::Int64),
            ("score", DataType::Float64),
            ("tag", DataType::Utf8),
            ("extra", DataType::Boolean),
        ]);
        let (merged, changes) = merge(&old, &new);
        let types: Vec<String> = merged
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            types,
            ["id Int64", "score Float64", "tag Utf8", "extra Boolean"]
        );
        assert_eq!(changes.len(), 4);
        // A narrower type fits a wider column: no change.
        assert!(merge(&merged, &old).1.is_empty());
    }

    #[test]
    fn discard_drops_rows_that_do_not_fit_and_freeze_fails() {
        let table = schema(&[("score", DataType::Int64)]);
        let incoming: SchemaRef = Arc::new(schema(&[("score", DataType::Utf8)]));
        let batch = RecordBatch::try_new(
            incoming.clone(),
            vec![Arc::new(StringArray::from(vec![
                Some("1"),
                Some("n/a"),
                None,
                Some("3"),
            ]))],
        )
        .unwrap();
        let c = Conform::plan(Some(&table), &incoming, SchemaPolicy::Discard, "p").unwrap();
        let (out, dropped) = c.apply(batch.clone()).unwrap();
        assert_eq!(dropped, 1);
        let v = out.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(v.iter().collect::<Vec<_>>(), vec![Some(1), None, Some(3)]);
        let err = Conform::plan(Some(&table), &incoming, SchemaPolicy::Freeze, "p").unwrap_err();
        assert!(err.to_string().contains("FREEZE"), "{err}");
        let (text, dropped) = Conform::plan(Some(&table), &incoming, SchemaPolicy::Evolve, "p")
            .unwrap()
            .apply(batch)
            .unwrap();
        assert_eq!((text.num_rows(), dropped), (4, 0));
    }
}
