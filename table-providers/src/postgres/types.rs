//! PostgreSQL column types to Arrow, and binary `COPY` rows into Arrow builders.
//!
//! Types read in their binary form: int2/4/8, float4/8, bool, text, varchar, char, name,
//! bytea, date, time, timestamp, timestamptz, interval, uuid, and one-dimensional arrays of
//! the numeric, boolean and text types. Types without an exact binary decoder here
//! (numeric, json, jsonb, inet, anything else) are selected as `::text`: numeric with a
//! declared precision becomes Decimal128, json/jsonb JSON text, the rest text.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, IntervalMonthDayNanoBuilder, ListBuilder,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use tokio_postgres::types::Type;

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
    if let Some((p, s)) = inner.and_then(|i| i.split_once(','))
        && let (Ok(p), Ok(s)) = (p.trim().parse::<u8>(), s.trim().parse::<i8>())
        && (1..=38).contains(&p)
    {
        return DataType::Decimal128(p, s);
    }
    DataType::Utf8
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// A fixed-size value's bytes.
fn fixed<const N: usize>(raw: &[u8]) -> std::result::Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("{} bytes where {N} were expected", raw.len()))
}

fn text(raw: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(raw).map_err(|e| format!("text that is not UTF-8 ({e})"))
}

/// Calls `each` with the elements of an array in binary form (dimensions, then each
/// element's length, -1 for NULL, and bytes); an empty array has no dimension.
fn for_each_element(
    raw: &[u8],
    mut each: impl FnMut(Option<&[u8]>) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if rest.len() < n {
            return Err("a truncated array".into());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn int(rest: &mut &[u8]) -> std::result::Result<i32, String> {
        Ok(i32::from_be_bytes(
            take(rest, 4)?.try_into().expect("4 bytes"),
        ))
    }
    let mut rest = raw;
    let dims = int(&mut rest)?;
    let (_has_nulls, _item_type) = (int(&mut rest)?, int(&mut rest)?);
    match dims {
        0 => return Ok(()),
        1 => {}
        _ => return Err("an array of more than one dimension".into()),
    }
    let (len, _lower_bound) = (int(&mut rest)?, int(&mut rest)?);
    for _ in 0..len {
        let n = int(&mut rest)?;
        each(if n < 0 {
            None
        } else {
            Some(take(&mut rest, n as usize)?)
        })?;
    }
    Ok(())
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
    /// UUIDs as their hyphenated text.
    Uuid(StringBuilder),
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
            Kind::Text | Kind::AsText => Builder::Text(StringBuilder::new()),
            Kind::Uuid => Builder::Uuid(StringBuilder::new()),
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

    /// Appends a value in its binary form (`None`: NULL).
    pub fn append(&mut self, raw: Option<&[u8]>, col: &PgColumn) -> Result<()> {
        let Some(raw) = raw else {
            self.append_null();
            return Ok(());
        };
        self.append_value(raw).map_err(|e| {
            Error::Upstream(format!(
                "column '{}' ({}) holds a value Hakiri cannot read: {e}",
                col.name, col.pg_type
            ))
        })
    }

    fn append_null(&mut self) {
        match self {
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Text(b) | Builder::Uuid(b) => b.append_null(),
            Builder::Bytes(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Ts(b) | Builder::TsTz(b) => b.append_null(),
            Builder::Interval(b) => b.append_null(),
            Builder::ListI16(b) => b.append_null(),
            Builder::ListI32(b) => b.append_null(),
            Builder::ListI64(b) => b.append_null(),
            Builder::ListF32(b) => b.append_null(),
            Builder::ListF64(b) => b.append_null(),
            Builder::ListBool(b) => b.append_null(),
            Builder::ListText(b) => b.append_null(),
        }
    }

    fn append_value(&mut self, raw: &[u8]) -> std::result::Result<(), String> {
        macro_rules! list {
            ($b:expr, $item:expr) => {{
                let values = $b.values();
                for_each_element(raw, |item| {
                    match item {
                        Some(v) => values.append_value($item(v)?),
                        None => values.append_null(),
                    }
                    Ok(())
                })?;
                $b.append(true);
            }};
        }
        match self {
            Builder::I16(b) => b.append_value(i16::from_be_bytes(fixed(raw)?)),
            Builder::I32(b) => b.append_value(i32::from_be_bytes(fixed(raw)?)),
            Builder::I64(b) => b.append_value(i64::from_be_bytes(fixed(raw)?)),
            Builder::F32(b) => b.append_value(f32::from_be_bytes(fixed(raw)?)),
            Builder::F64(b) => b.append_value(f64::from_be_bytes(fixed(raw)?)),
            Builder::Bool(b) => b.append_value(fixed::<1>(raw)?[0] != 0),
            Builder::Text(b) => b.append_value(text(raw)?),
            Builder::Uuid(b) => {
                let uuid = uuid::Uuid::from_slice(raw).map_err(|e| e.to_string())?;
                b.append_value(
                    uuid.hyphenated()
                        .encode_lower(&mut uuid::Uuid::encode_buffer()),
                )
            }
            Builder::Bytes(b) => b.append_value(raw),
            Builder::Date(b) => {
                // Days since 2000-01-01; the extremes are PostgreSQL's infinities.
                let days = i32::from_be_bytes(fixed(raw)?);
                if days == i32::MAX || days == i32::MIN {
                    return Err("an infinite date has no Arrow value".into());
                }
                let days = days.checked_add(PG_EPOCH_DAYS);
                b.append_value(days.ok_or("a date out of range")?)
            }
            Builder::Time(b) => b.append_value(i64::from_be_bytes(fixed(raw)?)),
            Builder::Ts(b) | Builder::TsTz(b) => {
                // Microseconds since 2000-01-01 00:00 (UTC for timestamptz).
                let micros = i64::from_be_bytes(fixed(raw)?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err("an infinite timestamp has no Arrow value".into());
                }
                let micros = micros.checked_add(PG_EPOCH_DAYS as i64 * 86_400_000_000);
                b.append_value(micros.ok_or("a timestamp out of range")?)
            }
            Builder::Interval(b) => {
                let raw: [u8; 16] = fixed(raw)?;
                let micros = i64::from_be_bytes(raw[0..8].try_into().expect("8 bytes"));
                let days = i32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
                let months = i32::from_be_bytes(raw[12..16].try_into().expect("4 bytes"));
                let nanos = micros.checked_mul(1000).ok_or("an interval out of range")?;
                b.append_value(IntervalMonthDayNano::new(months, days, nanos))
            }
            Builder::ListI16(b) => list!(b, |v| fixed(v).map(i16::from_be_bytes)),
            Builder::ListI32(b) => list!(b, |v| fixed(v).map(i32::from_be_bytes)),
            Builder::ListI64(b) => list!(b, |v| fixed(v).map(i64::from_be_bytes)),
            Builder::ListF32(b) => list!(b, |v| fixed(v).map(f32::from_be_bytes)),
            Builder::ListF64(b) => list!(b, |v| fixed(v).map(f64::from_be_bytes)),
            Builder::ListBool(b) => list!(b, |v| fixed::<1>(v).map(|v| v[0] != 0)),
            Builder::ListText(b) => list!(b, text),
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
            Builder::Text(b) | Builder::Uuid(b) => Arc::new(b.finish()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, StringArray, TimestampMicrosecondArray};

    #[test]
    fn binary_values_decode_and_bad_ones_are_explained() {
        let ts = PgColumn::new("at", 1184, "timestamptz", false);
        let mut b = Builder::new(ts.kind);
        // 2000-01-01 00:00:01 UTC, then NULL.
        b.append(Some(&1_000_000i64.to_be_bytes()), &ts).unwrap();
        b.append(None, &ts).unwrap();
        let err = b.append(Some(&i64::MAX.to_be_bytes()), &ts).unwrap_err();
        assert!(
            err.to_string().contains("column 'at' (timestamptz)"),
            "{err}"
        );
        assert!(err.to_string().contains("infinite"), "{err}");
        let array = b.finish(&ts.field).unwrap();
        let array = array
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(array.value(0), 946_684_801_000_000);
        assert!(array.is_null(1));

        let id = PgColumn::new("id", 2950, "uuid", false);
        let mut b = Builder::new(id.kind);
        b.append(Some(&[0xab; 16]), &id).unwrap();
        assert!(b.append(Some(&[1; 3]), &id).is_err());
        let array = b.finish(&id.field).unwrap();
        let array = array.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(array.value(0), "abababab-abab-abab-abab-abababababab");

        // text[]: one dimension of two elements, the second NULL; then a 2-D array.
        let tags = PgColumn::new("tags", 1009, "text[]", false);
        let mut b = Builder::new(tags.kind);
        let mut raw = Vec::new();
        for v in [1i32, 1, 25, 2, 1, 1] {
            raw.extend(v.to_be_bytes());
        }
        raw.push(b'x');
        raw.extend((-1i32).to_be_bytes());
        b.append(Some(&raw), &tags).unwrap();
        let mut two_dims = Vec::new();
        for v in [2i32, 0, 25, 1, 1, 1, 1] {
            two_dims.extend(v.to_be_bytes());
        }
        let err = b.append(Some(&two_dims), &tags).unwrap_err();
        assert!(err.to_string().contains("more than one dimension"), "{err}");
        let err = b.append(Some(&raw[..raw.len() - 2]), &tags).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
