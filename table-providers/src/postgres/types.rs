//! PostgreSQL column types to Arrow, and binary `COPY` rows into Arrow builders.
//!
//! Types read in their binary form: int2/4/8, float4/8, bool, text, varchar, char, name,
//! bytea, date, time, timestamp, timestamptz, interval, uuid, and one-dimensional arrays of
//! the numeric, boolean and text types. Types without an exact binary decoder here
//! (numeric, json, jsonb, inet, anything else) are selected as `::text`: numeric with a
//! declared precision becomes Decimal128, json/jsonb JSON text, the rest text.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, ListBuilder,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use tokio_postgres::binary_copy::BinaryCopyOutRow;
use tokio_postgres::types::{FromSql, Type};

use crate::error::{Error, Result};

/// How a column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    I16,
    I32,
    I64,
    F32,
    F64,
    Bool,
    Text,
    Bytes,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    ListI16,
    ListI32,
    ListI64,
    ListF32,
    ListF64,
    ListBool,
    ListText,
    /// Selected as `::text`.
    AsText,
}

/// A column of a PostgreSQL table as Hakiri reads it.
#[derive(Debug, Clone)]
pub struct PgColumn {
    pub name: String,
    /// `format_type()` of the column, e.g. `numeric(10,2)`.
    pub pg_type: String,
    pub kind: Kind,
    pub field: Field,
    /// The type of the value in the binary COPY stream.
    pub wire: Type,
    /// Whether a filter on the column means the same in SQL as in DataFusion (false for
    /// columns read as text, whose ordering differs).
    pub filterable: bool,
}

impl PgColumn {
    /// Maps a column from its type's oid and `format_type()` text.
    pub fn new(name: &str, oid: u32, pg_type: &str, not_null: bool) -> Self {
        let ty = Type::from_oid(oid).unwrap_or(Type::TEXT);
        let (kind, dt) = match ty {
            Type::INT2 => (Kind::I16, DataType::Int16),
            Type::INT4 => (Kind::I32, DataType::Int32),
            Type::INT8 => (Kind::I64, DataType::Int64),
            Type::FLOAT4 => (Kind::F32, DataType::Float32),
            Type::FLOAT8 => (Kind::F64, DataType::Float64),
            Type::BOOL => (Kind::Bool, DataType::Boolean),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => (Kind::Text, DataType::Utf8),
            Type::BYTEA => (Kind::Bytes, DataType::Binary),
            Type::DATE => (Kind::Date, DataType::Date32),
            Type::TIME => (Kind::Time, DataType::Time64(TimeUnit::Microsecond)),
            Type::TIMESTAMP => (
                Kind::Timestamp,
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            Type::TIMESTAMPTZ => (
                Kind::TimestampTz,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            Type::INTERVAL => (
                Kind::Interval,
                DataType::Interval(IntervalUnit::MonthDayNano),
            ),
            Type::UUID => (Kind::Uuid, DataType::Utf8),
            Type::INT2_ARRAY => (Kind::ListI16, list(DataType::Int16)),
            Type::INT4_ARRAY => (Kind::ListI32, list(DataType::Int32)),
            Type::INT8_ARRAY => (Kind::ListI64, list(DataType::Int64)),
            Type::FLOAT4_ARRAY => (Kind::ListF32, list(DataType::Float32)),
            Type::FLOAT8_ARRAY => (Kind::ListF64, list(DataType::Float64)),
            Type::BOOL_ARRAY => (Kind::ListBool, list(DataType::Boolean)),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
                (Kind::ListText, list(DataType::Utf8))
            }
            Type::NUMERIC => (Kind::AsText, numeric_type(pg_type)),
            _ => (Kind::AsText, DataType::Utf8),
        };
        let mut field = Field::new(name, dt, !not_null);
        if matches!(ty, Type::JSON | Type::JSONB) {
            // The same marker the HTTP connector puts on JSON-text columns.
            field = field.with_metadata(HashMap::from([("hakiri.json".into(), "true".into())]));
        }
        let filterable = !matches!(kind, Kind::AsText | Kind::Uuid | Kind::Bytes)
            && !matches!(field.data_type(), DataType::List(_));
        PgColumn {
            name: name.to_string(),
            pg_type: pg_type.to_string(),
            kind,
            wire: if kind == Kind::AsText { Type::TEXT } else { ty },
            field,
            filterable,
        }
    }

    /// The expression that selects the column.
    pub fn select_expr(&self) -> String {
        let q = quote_ident(&self.name);
        if self.kind == Kind::AsText {
            format!("{q}::text")
        } else {
            q
        }
    }
}

fn list(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// `numeric(p,s)` with p <= 38 as Decimal128(p, s); unconstrained numeric stays exact text.
fn numeric_type(pg_type: &str) -> DataType {
    let inner = pg_type
        .strip_prefix("numeric(")
        .and_then(|s| s.strip_suffix(')'));
    if let Some((p, s)) = inner.and_then(|i| i.split_once(',')) {
        if let (Ok(p), Ok(s)) = (p.trim().parse::<u8>(), s.trim().parse::<i8>()) {
            if (1..=38).contains(&p) {
                return DataType::Decimal128(p, s);
            }
        }
    }
    DataType::Utf8
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// PostgreSQL's binary interval: microseconds, days, months.
struct PgInterval(IntervalMonthDayNano);

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("an interval is 16 bytes".into());
        }
        let micros = i64::from_be_bytes(raw[0..8].try_into()?);
        let days = i32::from_be_bytes(raw[8..12].try_into()?);
        let months = i32::from_be_bytes(raw[12..16].try_into()?);
        Ok(PgInterval(IntervalMonthDayNano::new(
            months,
            days,
            micros * 1000,
        )))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

/// One builder per column; rows are appended as they stream in.
pub enum Builder {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder),
    TsTz(TimestampMicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    ListI16(ListBuilder<Int16Builder>),
    ListI32(ListBuilder<Int32Builder>),
    ListI64(ListBuilder<Int64Builder>),
    ListF32(ListBuilder<Float32Builder>),
    ListF64(ListBuilder<Float64Builder>),
    ListBool(ListBuilder<BooleanBuilder>),
    ListText(ListBuilder<StringBuilder>),
}

impl Builder {
    pub fn new(kind: Kind) -> Self {
        match kind {
            Kind::I16 => Builder::I16(Int16Builder::new()),
            Kind::I32 => Builder::I32(Int32Builder::new()),
            Kind::I64 => Builder::I64(Int64Builder::new()),
            Kind::F32 => Builder::F32(Float32Builder::new()),
            Kind::F64 => Builder::F64(Float64Builder::new()),
            Kind::Bool => Builder::Bool(BooleanBuilder::new()),
            Kind::Text | Kind::Uuid | Kind::AsText => Builder::Text(StringBuilder::new()),
            Kind::Bytes => Builder::Bytes(BinaryBuilder::new()),
            Kind::Date => Builder::Date(Date32Builder::new()),
            Kind::Time => Builder::Time(Time64MicrosecondBuilder::new()),
            Kind::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::new()),
            Kind::TimestampTz => {
                Builder::TsTz(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            Kind::Interval => Builder::Interval(IntervalMonthDayNanoBuilder::new()),
            Kind::ListI16 => Builder::ListI16(ListBuilder::new(Int16Builder::new())),
            Kind::ListI32 => Builder::ListI32(ListBuilder::new(Int32Builder::new())),
            Kind::ListI64 => Builder::ListI64(ListBuilder::new(Int64Builder::new())),
            Kind::ListF32 => Builder::ListF32(ListBuilder::new(Float32Builder::new())),
            Kind::ListF64 => Builder::ListF64(ListBuilder::new(Float64Builder::new())),
            Kind::ListBool => Builder::ListBool(ListBuilder::new(BooleanBuilder::new())),
            Kind::ListText => Builder::ListText(ListBuilder::new(StringBuilder::new())),
        }
    }

    /// Appends column `i` of `row`.
    pub fn append(&mut self, row: &BinaryCopyOutRow, i: usize, col: &PgColumn) -> Result<()> {
        let bad = |e: tokio_postgres::Error| {
            Error::Upstream(format!(
                "column '{}' ({}) holds a value Hakiri cannot read: {e}",
                col.name, col.pg_type
            ))
        };
        macro_rules! list {
            ($b:expr, $t:ty) => {{
                match row.try_get::<Option<Vec<Option<$t>>>>(i).map_err(bad)? {
                    Some(items) => {
                        for item in items {
                            $b.values().append_option(item);
                        }
                        $b.append(true);
                    }
                    None => $b.append(false),
                }
            }};
        }
        match self {
            Builder::I16(b) => b.append_option(row.try_get::<Option<i16>>(i).map_err(bad)?),
            Builder::I32(b) => b.append_option(row.try_get::<Option<i32>>(i).map_err(bad)?),
            Builder::I64(b) => b.append_option(row.try_get::<Option<i64>>(i).map_err(bad)?),
            Builder::F32(b) => b.append_option(row.try_get::<Option<f32>>(i).map_err(bad)?),
            Builder::F64(b) => b.append_option(row.try_get::<Option<f64>>(i).map_err(bad)?),
            Builder::Bool(b) => b.append_option(row.try_get::<Option<bool>>(i).map_err(bad)?),
            Builder::Text(b) => {
                if col.kind == Kind::Uuid {
                    let v = row.try_get::<Option<uuid::Uuid>>(i).map_err(bad)?;
                    b.append_option(v.map(|u| u.to_string()))
                } else {
                    b.append_option(row.try_get::<Option<&str>>(i).map_err(bad)?)
                }
            }
            Builder::Bytes(b) => b.append_option(row.try_get::<Option<&[u8]>>(i).map_err(bad)?),
            Builder::Date(b) => {
                let v = row.try_get::<Option<NaiveDate>>(i).map_err(bad)?;
                b.append_option(v.map(|d| (d - epoch()).num_days() as i32))
            }
            Builder::Time(b) => {
                let v = row.try_get::<Option<NaiveTime>>(i).map_err(bad)?;
                b.append_option(v.map(|t| {
                    t.num_seconds_from_midnight() as i64 * 1_000_000
                        + (t.nanosecond() / 1000) as i64
                }))
            }
            Builder::Ts(b) => {
                let v = row.try_get::<Option<NaiveDateTime>>(i).map_err(bad)?;
                b.append_option(v.map(|t| t.and_utc().timestamp_micros()))
            }
            Builder::TsTz(b) => {
                let v = row.try_get::<Option<DateTime<Utc>>>(i).map_err(bad)?;
                b.append_option(v.map(|t| t.timestamp_micros()))
            }
            Builder::Interval(b) => b.append_option(
                row.try_get::<Option<PgInterval>>(i)
                    .map_err(bad)?
                    .map(|v| v.0),
            ),
            Builder::ListI16(b) => list!(b, i16),
            Builder::ListI32(b) => list!(b, i32),
            Builder::ListI64(b) => list!(b, i64),
            Builder::ListF32(b) => list!(b, f32),
            Builder::ListF64(b) => list!(b, f64),
            Builder::ListBool(b) => list!(b, bool),
            Builder::ListText(b) => list!(b, String),
        }
        Ok(())
    }

    /// The built column, cast to the field's type where it was read as text (numeric).
    pub fn finish(&mut self, field: &Field) -> Result<ArrayRef> {
        use datafusion::arrow::array::ArrayBuilder;
        let array: ArrayRef = match self {
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bytes(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::TsTz(b) => Arc::new(b.finish()),
            Builder::Interval(b) => Arc::new(b.finish()),
            Builder::ListI16(b) => ArrayBuilder::finish(b),
            Builder::ListI32(b) => ArrayBuilder::finish(b),
            Builder::ListI64(b) => ArrayBuilder::finish(b),
            Builder::ListF32(b) => ArrayBuilder::finish(b),
            Builder::ListF64(b) => ArrayBuilder::finish(b),
            Builder::ListBool(b) => ArrayBuilder::finish(b),
            Builder::ListText(b) => ArrayBuilder::finish(b),
        };
        if array.data_type() == field.data_type() {
            Ok(array)
        } else {
            cast(&array, field.data_type()).map_err(|e| {
                Error::Upstream(format!(
                    "column '{}' as {}: {e}",
                    field.name(),
                    field.data_type()
                ))
            })
        }
    }
}
