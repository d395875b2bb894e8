//! JSON records to Arrow: schema inference over sample pages (nested objects as Struct,
//! arrays as List, conflicting values as JSON text) and decoding a page into a batch. The
//! `http` connector uses all of it; the WASM host decodes NDJSON pages with
//! `decode_fitting`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::reader::ReaderBuilder;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub use crate::types::JSON_TEXT_KEY;

/// The inferred type of a JSON value, merged over many values.
#[derive(Debug, Clone, PartialEq)]
enum JType {
    Null,
    Bool,
    Int,
    Float,
    Str,
    List(Box<JType>),
    Object(Vec<(String, JType)>),
    /// Values disagree: kept as JSON text.
    Json,
}

fn of(v: &Value) -> JType {
    match v {
        Value::Null => JType::Null,
        Value::Bool(_) => JType::Bool,
        Value::Number(n) if n.is_i64() => JType::Int,
        Value::Number(_) => JType::Float,
        Value::String(_) => JType::Str,
        Value::Array(items) => JType::List(Box::new(items.iter().map(of).fold(JType::Null, merge))),
        Value::Object(m) => JType::Object(m.iter().map(|(k, v)| (k.clone(), of(v))).collect()),
    }
}

fn merge(a: JType, b: JType) -> JType {
    use JType::*;
    match (a, b) {
        (Null, x) | (x, Null) => x,
        (Int, Float) | (Float, Int) => Float,
        (List(a), List(b)) => List(Box::new(merge(*a, *b))),
        (Object(mut a), Object(b)) => {
            for (k, t) in b {
                match a.iter_mut().find(|(ak, _)| *ak == k) {
                    Some((_, at)) => *at = merge(std::mem::replace(at, Null), t),
                    None => a.push((k, t)),
                }
            }
            Object(a)
        }
        (a, b) if a == b => a,
        _ => Json,
    }
}

fn json_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true).with_metadata(HashMap::from([(
        JSON_TEXT_KEY.to_string(),
        "true".to_string(),
    )]))
}

fn to_field(name: &str, t: &JType) -> Field {
    let dt = match t {
        JType::Bool => DataType::Boolean,
        JType::Int => DataType::Int64,
        JType::Float => DataType::Float64,
        JType::Str => DataType::Utf8,
        JType::List(inner) => DataType::List(Arc::new(to_field("item", inner))),
        JType::Object(fields) if !fields.is_empty() => DataType::Struct(Fields::from(
            fields
                .iter()
                .map(|(k, t)| to_field(k, t))
                .collect::<Vec<_>>(),
        )),
        // Never-seen values and empty objects have no columnar shape yet: JSON text.
        JType::Null | JType::Object(_) | JType::Json => return json_field(name),
    };
    Field::new(name, dt, true)
}

/// A record's type: a record that is not an object is read as `{"value": ...}`.
fn record_type(r: &Value) -> JType {
    match r {
        Value::Object(_) => of(r),
        other => JType::Object(vec![("value".to_string(), of(other))]),
    }
}

/// Infers a schema from records. A record that is not an object becomes `{"value": ...}`.
pub fn infer_schema<'a>(records: impl IntoIterator<Item = &'a Value>) -> SchemaRef {
    let merged = records
        .into_iter()
        .fold(JType::Object(Vec::new()), |acc, r| {
            merge(acc, record_type(r))
        });
    let JType::Object(fields) = merged else {
        unreachable!("records are merged as objects")
    };
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(k, t)| to_field(k, t))
            .collect::<Vec<_>>(),
    ))
}

/// A field's type as the JSON lattice sees it; declared types JSON has no literal for
/// (timestamps, dates) come from strings.
fn jtype_of_field(f: &Field) -> JType {
    if f.metadata().contains_key(JSON_TEXT_KEY) {
        return JType::Json;
    }
    match f.data_type() {
        DataType::Boolean => JType::Bool,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => JType::Int,
        DataType::Float32 | DataType::Float64 => JType::Float,
        DataType::List(item) => JType::List(Box::new(jtype_of_field(item))),
        DataType::Struct(fields) => JType::Object(
            fields
                .iter()
                .map(|f| (f.name().clone(), jtype_of_field(f)))
                .collect(),
        ),
        _ => JType::Str,
    }
}

fn describe(t: &JType) -> &'static str {
    match t {
        JType::Null => "null",
        JType::Bool => "boolean",
        JType::Int => "integer",
        JType::Float => "number",
        JType::Str => "string",
        JType::List(_) => "array",
        JType::Object(_) => "object",
        JType::Json => "mixed JSON",
    }
}

/// What a page's records mean for the table's schema, under a pipeline's policy.
#[derive(Debug, Default)]
pub struct PageCheck {
    /// Records that fit (all of them unless the policy discards some).
    pub records: Vec<Value>,
    pub discarded: u64,
    /// New fields or wider types: the schema that covers this page, and what changed.
    pub evolved: Option<(SchemaRef, Vec<String>)>,
}

/// Compares a page's records with the table's schema. New fields and widening changes
/// (integer to number, a struct gaining a field) evolve the schema; a value of another
/// kind (a string where numbers were) follows `policy`: evolve into a JSON-text variant
/// column, freeze (an error), or discard the records that do not fit.
pub fn check_page(
    records: Vec<Value>,
    schema: &SchemaRef,
    policy: crate::types::SchemaPolicy,
    page: u64,
) -> Result<PageCheck> {
    use crate::types::SchemaPolicy;
    // The page's type, field by field, without building a type per record: fields the table
    // keeps as JSON text take any value, so their values are not looked into.
    let json_text: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| f.metadata().contains_key(JSON_TEXT_KEY))
        .map(|f| f.name().as_str())
        .collect();
    let mut page_fields: Vec<(String, JType)> = Vec::new();
    let mut add = |name: &str, t: JType| match page_fields.iter_mut().find(|(k, _)| k == name) {
        Some((_, at)) => *at = merge(std::mem::replace(at, JType::Null), t),
        None => page_fields.push((name.to_string(), t)),
    };
    for r in &records {
        match r {
            Value::Object(m) => {
                for (name, v) in m {
                    if json_text.contains(&name.as_str()) {
                        add(name, JType::Json);
                    } else {
                        add(name, of(v));
                    }
                }
            }
            other => add("value", of(other)),
        }
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut changes = Vec::new();
    let mut misfits: Vec<(String, JType)> = Vec::new();
    for (name, t) in &page_fields {
        match fields.iter_mut().find(|f| f.name() == name) {
            None if *t == JType::Null => {}
            None => {
                let f = to_field(name, t);
                changes.push(format!(
                    "new field '{name}' ({}) on page {page}",
                    f.data_type()
                ));
                fields.push(f);
            }
            Some(f) => {
                let was = jtype_of_field(f);
                let merged = merge(was.clone(), t.clone());
                if merged == was {
                    continue;
                }
                if merged == JType::Json {
                    match policy {
                        SchemaPolicy::Evolve => {
                            changes.push(format!(
                                "field '{name}' holds {} values on page {page} where it held {}: it becomes a JSON text (variant) column",
                                describe(t),
                                describe(&was)
                            ));
                            *f = json_field(name);
                        }
                        SchemaPolicy::Freeze => {
                            return Err(Error::InvalidInput(format!(
                                "page {page}: field '{name}' holds {} values but the table has {} ({}); ON SCHEMA CHANGE FREEZE fails the run: fix the source, or use EVOLVE or DISCARD",
                                describe(t),
                                f.data_type(),
                                describe(&was)
                            )));
                        }
                        SchemaPolicy::Discard => misfits.push((name.clone(), was)),
                    }
                } else {
                    let widened = to_field(name, &merged);
                    changes.push(format!(
                        "field '{name}' widened from {} to {} on page {page}",
                        f.data_type(),
                        widened.data_type()
                    ));
                    *f = widened;
                }
            }
        }
    }
    let evolved =
        (!changes.is_empty()).then(|| (Arc::new(Schema::new(fields)) as SchemaRef, changes));
    let mut discarded = 0;
    let records = if misfits.is_empty() {
        records
    } else {
        records
            .into_iter()
            .filter(|r| {
                let fits = misfits.iter().all(|(name, was)| {
                    r.get(name)
                        .is_none_or(|v| merge(was.clone(), of(v)) == *was)
                });
                if !fits {
                    discarded += 1;
                }
                fits
            })
            .collect()
    };
    Ok(PageCheck {
        records,
        discarded,
        evolved,
    })
}

/// Parses a declared schema: `name type, ...` with types bigint/int, double/float, text/
/// string/varchar, boolean, timestamp, date, json.
pub fn parse_declared_schema(text: &str) -> Result<SchemaRef> {
    let mut fields = Vec::new();
    for col in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let (name, ty) = col.split_once(char::is_whitespace).ok_or_else(|| {
            Error::InvalidInput(format!(
                "schema column '{col}' needs a name and a type, e.g. 'id bigint'"
            ))
        })?;
        let field = match ty.trim().to_ascii_lowercase().as_str() {
            "bigint" | "int" | "integer" | "int64" => Field::new(name, DataType::Int64, true),
            "double" | "float" | "real" | "float64" => Field::new(name, DataType::Float64, true),
            "text" | "string" | "varchar" | "utf8" => Field::new(name, DataType::Utf8, true),
            "boolean" | "bool" => Field::new(name, DataType::Boolean, true),
            "timestamp" | "timestamptz" => Field::new(
                name,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            "date" => Field::new(name, DataType::Date32, true),
            "json" => json_field(name),
            other => {
                return Err(Error::InvalidInput(format!(
                    "schema column '{name}' has unknown type '{other}': valid types are bigint, double, text, boolean, timestamp, date, json"
                )));
            }
        };
        fields.push(field);
    }
    if fields.is_empty() {
        return Err(Error::InvalidInput(
            "the schema option declares no columns".into(),
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Rewrites a value to fit a field: JSON-text fields get the value's JSON text, numbers
/// headed for text become strings; other mismatches are left for the decoder to report.
fn normalize(v: Value, field: &Field) -> Value {
    if v.is_null() {
        return v;
    }
    if field.metadata().contains_key(JSON_TEXT_KEY) {
        return Value::String(v.to_string());
    }
    match (field.data_type(), v) {
        (DataType::Utf8, Value::String(s)) => Value::String(s),
        (DataType::Utf8, other) => Value::String(other.to_string()),
        (DataType::Struct(fields), Value::Object(mut m)) => {
            let mut out = Map::with_capacity(fields.len());
            for f in fields {
                if let Some(x) = m.remove(f.name()) {
                    out.insert(f.name().clone(), normalize(x, f));
                }
            }
            Value::Object(out)
        }
        (DataType::List(item), Value::Array(items)) => {
            Value::Array(items.into_iter().map(|x| normalize(x, item)).collect())
        }
        (_, other) => other,
    }
}

/// Decodes records into a batch of `schema`. Fields missing from a record are NULL; fields
/// the schema does not name are ignored.
///
/// # Errors
/// `Upstream` naming the field when a value does not fit its declared or inferred type.
pub fn decode(records: Vec<Value>, schema: &SchemaRef) -> Result<RecordBatch> {
    // Values are normalized where they lie; fields the schema does not name stay in the
    // record and the decoder (not strict) skips them. No per-record map is rebuilt.
    let mut rows = records;
    for r in &mut rows {
        if !r.is_object() {
            *r = Value::Object(Map::from_iter([("value".to_string(), std::mem::take(r))]));
        }
        if let Value::Object(m) = r {
            for f in schema.fields() {
                if let Some(v) = m.get_mut(f.name()) {
                    *v = normalize(std::mem::take(v), f);
                }
            }
        }
    }
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(|e| Error::Internal(format!("building JSON decoder: {e}")))?;
    decoder.serialize(&rows).map_err(does_not_fit)?;
    let batch = decoder
        .flush()
        .map_err(does_not_fit)?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    Ok(batch)
}

/// Whether a JSON value fits a shape as it is: `merge(shape, type of value) == shape`, the
/// test `check_page` applies, made while parsing the value's text, without building it.
/// A misfit ends the parse with an error.
#[derive(Clone, Copy)]
struct Fits<'a>(&'a JType);

const MISFIT: &str = "misfit";

fn misfit<E: serde::de::Error>() -> E {
    E::custom(MISFIT)
}

impl<'de> DeserializeSeed<'de> for Fits<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Fits<'_> {
    fn is<E: serde::de::Error>(&self, ok: bool) -> std::result::Result<(), E> {
        if ok { Ok(()) } else { Err(misfit()) }
    }
}

impl<'de> Visitor<'de> for Fits<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<(), E> {
        self.is(*self.0 == JType::Bool)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<(), E> {
        self.is(matches!(self.0, JType::Int | JType::Float))
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<(), E> {
        // serde_json's `is_i64` is false above i64::MAX: such a number is a float to `of`.
        self.is(*self.0 == JType::Float || (*self.0 == JType::Int && n <= i64::MAX as u64))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<(), E> {
        self.is(*self.0 == JType::Float)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<(), E> {
        self.is(*self.0 == JType::Str)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let JType::List(item) = self.0 else {
            return Err(misfit());
        };
        while seq.next_element_seed(Fits(item))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let JType::Object(fields) = self.0 else {
            return Err(misfit());
        };
        // A field the shape does not know is a change of shape below the top level.
        while let Some(index) = map.next_key_seed(FieldIndex(fields))? {
            let i = index.ok_or_else(misfit)?;
            map.next_value_seed(Fits(&fields[i].1))?;
        }
        Ok(())
    }
}

/// A key's place among a shape's fields.
struct FieldIndex<'a>(&'a [(String, JType)]);

impl<'de> DeserializeSeed<'de> for FieldIndex<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldIndex<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> std::result::Result<Option<usize>, E> {
        Ok(self.0.iter().position(|(name, _)| name == key))
    }
}

/// A column the text path fills while it reads the records: the flat types, and JSON text.
/// Other columns (lists, structs, dates, narrower numbers) are left to arrow-json's decoder.
enum Column {
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Bool(BooleanBuilder),
    /// Epoch values in the column's unit, parsed as arrow-json parses them.
    Timestamp {
        values: Int64Builder,
        unit: TimeUnit,
        tz: Option<Tz>,
    },
    /// JSON text, as the value path writes it: serde_json's compact text.
    Text(StringBuilder),
}

impl Column {
    /// The column for a field, if the text path fills that type.
    fn for_field(f: &Field, rows: usize) -> Option<Column> {
        if f.metadata().contains_key(JSON_TEXT_KEY) {
            return Some(Column::Text(StringBuilder::with_capacity(rows, rows * 32)));
        }
        Some(match f.data_type() {
            DataType::Int64 => Column::Int64(Int64Builder::with_capacity(rows)),
            DataType::Float64 => Column::Float64(Float64Builder::with_capacity(rows)),
            DataType::Utf8 => Column::Utf8(StringBuilder::with_capacity(rows, rows * 16)),
            DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(rows)),
            DataType::Timestamp(unit, tz) => Column::Timestamp {
                values: Int64Builder::with_capacity(rows),
                unit: *unit,
                tz: match tz {
                    Some(tz) => Some(tz.parse().ok()?),
                    None => None,
                },
            },
            _ => return None,
        })
    }

    fn append_null(&mut self) {
        match self {
            Column::Int64(b) | Column::Timestamp { values: b, .. } => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Utf8(b) | Column::Text(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
        }
    }

    fn finish(self, field: &Field) -> Result<ArrayRef> {
        Ok(match self {
            Column::Int64(mut b) => Arc::new(b.finish()),
            Column::Float64(mut b) => Arc::new(b.finish()),
            Column::Utf8(mut b) | Column::Text(mut b) => Arc::new(b.finish()),
            Column::Bool(mut b) => Arc::new(b.finish()),
            // Epoch values take the column's timestamp type (a cast that keeps the values).
            Column::Timestamp { mut values, .. } => cast(&values.finish(), field.data_type())
                .map_err(|e| Error::Internal(format!("timestamp column: {e}")))?,
        })
    }
}

/// A timestamp string as arrow-json's decoder reads it: `string_to_datetime` in the
/// column's time zone, then the epoch value in the column's unit.
fn parse_timestamp(s: &str, unit: TimeUnit, tz: Option<&Tz>) -> Option<i64> {
    fn epoch<T: chrono::TimeZone>(date: chrono::DateTime<T>, unit: TimeUnit) -> Option<i64> {
        match unit {
            TimeUnit::Second => Some(date.timestamp()),
            TimeUnit::Millisecond => Some(date.timestamp_millis()),
            TimeUnit::Microsecond => Some(date.timestamp_micros()),
            TimeUnit::Nanosecond => date.timestamp_nanos_opt(),
        }
    }
    match tz {
        Some(tz) => epoch(string_to_datetime(tz, s).ok()?, unit),
        None => epoch(string_to_datetime(&chrono::Utc, s).ok()?, unit),
    }
}

/// Appends one field's value to its column; a value the column does not take as it is
/// (which the value path would convert, evolve or report) is a misfit.
struct Append<'a> {
    column: &'a mut Column,
    scratch: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        let Column::Text(b) = self.column else {
            return d.deserialize_any(self);
        };
        // Transcoding straight from the record's parser: the value is read once.
        self.scratch.clear();
        serde_transcode::transcode(d, &mut serde_json::Serializer::new(&mut *self.scratch))
            .map_err(serde::de::Error::custom)?;
        if self.scratch.as_slice() == b"null" {
            b.append_null();
        } else {
            let text = std::str::from_utf8(self.scratch).map_err(serde::de::Error::custom)?;
            b.append_value(text);
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Append<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.column.append_null();
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<(), E> {
        let Column::Bool(b) = self.column else {
            return Err(misfit());
        };
        b.append_value(v);
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<(), E> {
        match self.column {
            Column::Int64(b) => b.append_value(v),
            Column::Float64(b) => b.append_value(v as f64),
            _ => return Err(misfit()),
        }
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<(), E> {
        match self.column {
            Column::Int64(b) => b.append_value(i64::try_from(v).map_err(|_| misfit::<E>())?),
            Column::Float64(b) => b.append_value(v as f64),
            _ => return Err(misfit()),
        }
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<(), E> {
        let Column::Float64(b) = self.column else {
            return Err(misfit());
        };
        b.append_value(v);
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<(), E> {
        match self.column {
            Column::Utf8(b) => b.append_value(v),
            // A string that is no timestamp: the value path reports it.
            Column::Timestamp { values, unit, tz } => {
                values.append_value(parse_timestamp(v, *unit, tz.as_ref()).ok_or_else(misfit)?)
            }
            _ => return Err(misfit()),
        }
        Ok(())
    }
}

/// One record on the text path: its fields are checked against the table's shape, and the
/// values of the columns the text path fills are appended to them.
struct Record<'a> {
    fields: &'a [(String, JType)],
    /// For each field, its column on the text path, if it has one.
    slots: &'a [Option<usize>],
    columns: &'a mut [Column],
    /// Fields met in this record.
    seen: &'a mut [bool],
    scratch: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Record<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Record<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        self.seen.fill(false);
        while let Some(index) = map.next_key_seed(FieldIndex(self.fields))? {
            let Some(i) = index else {
                // A field the table does not know may be null (ignored, as in `check_page`).
                map.next_value_seed(Fits(&JType::Null))?;
                continue;
            };
            if std::mem::replace(&mut self.seen[i], true) {
                return Err(misfit()); // a repeated key: the value path keeps the last one
            }
            match self.slots[i] {
                Some(k) => map.next_value_seed(Append {
                    column: &mut self.columns[k],
                    scratch: &mut *self.scratch,
                })?,
                None => map.next_value_seed(Fits(&self.fields[i].1))?,
            }
        }
        for (seen, slot) in self.seen.iter().zip(self.slots) {
            if let (false, Some(k)) = (seen, slot) {
                self.columns[*k].append_null();
            }
        }
        Ok(())
    }
}

fn has_json_text(t: &JType) -> bool {
    match t {
        JType::Json | JType::Null => true,
        JType::List(item) => has_json_text(item),
        JType::Object(fields) => fields.iter().any(|(_, t)| has_json_text(t)),
        _ => false,
    }
}

fn does_not_fit(e: impl std::fmt::Display) -> Error {
    Error::Upstream(format!(
        "records do not fit the table's schema: {e}; declare the column as json in the schema option, or fix the schema"
    ))
}

/// Decodes records from their JSON text when every one fits `schema` as it is (the page
/// brings no new field and no other kind of value), the common page, with no
/// `serde_json::Value` per record: one pass checks each record and appends its flat and
/// JSON-text values to their columns; arrow-json's decoder reads the other columns (lists,
/// structs, dates) from the same text. `None` when a record does not fit (or has JSON text
/// nested in a struct or list): the caller then takes `check_page` and `decode`, which
/// evolve, discard or explain. For records that fit, both paths give the same batch.
pub fn decode_fitting<'t>(
    records: impl ExactSizeIterator<Item = &'t str> + Clone,
    schema: &SchemaRef,
) -> Result<Option<RecordBatch>> {
    let rows = records.len();
    let fields: Vec<(String, JType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), jtype_of_field(f)))
        .collect();
    let mut slots = Vec::with_capacity(fields.len());
    let mut columns = Vec::new();
    let mut others = Vec::new();
    for (f, (_, t)) in schema.fields().iter().zip(&fields) {
        if let Some(column) = Column::for_field(f, rows) {
            slots.push(Some(columns.len()));
            columns.push(column);
        } else if has_json_text(t) {
            return Ok(None);
        } else {
            slots.push(None);
            others.push(f.clone());
        }
    }
    let (mut seen, mut scratch) = (vec![false; fields.len()], Vec::new());
    for text in records.clone() {
        if !text.starts_with('{') {
            return Ok(None);
        }
        let record = Record {
            fields: &fields,
            slots: &slots,
            columns: &mut columns,
            seen: &mut seen,
            scratch: &mut scratch,
        };
        if record
            .deserialize(&mut serde_json::Deserializer::from_str(text))
            .is_err()
        {
            return Ok(None);
        }
    }
    // The columns the text path does not fill: arrow-json's decoder reads them from the
    // same text (skipped when every column is filled, as for flat records).
    let others = Arc::new(Schema::new(others));
    let mut decoded = Vec::new();
    if !others.fields().is_empty() {
        let mut decoder = ReaderBuilder::new(others.clone())
            .with_batch_size(rows.max(1))
            .build_decoder()
            .map_err(|e| Error::Internal(format!("building JSON decoder: {e}")))?;
        for text in records {
            decoder.decode(text.as_bytes()).map_err(does_not_fit)?;
        }
        if let Some(batch) = decoder.flush().map_err(does_not_fit)? {
            decoded = batch.columns().to_vec();
        }
    }
    let (mut decoded, mut filled) = (decoded.into_iter(), columns.into_iter());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.len());
    for (f, slot) in schema.fields().iter().zip(&slots) {
        let array = match slot {
            Some(_) => filled.next().map(|c| c.finish(f)).transpose()?,
            None => decoded.next(),
        };
        arrays.push(array.unwrap_or_else(|| new_null_array(f.data_type(), rows)));
    }
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(does_not_fit)?;
    Ok(Some(batch))
}

#[cfg(test)]
#[path = "fuzz_json.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SchemaPolicy;
    use datafusion::arrow::array::Array;
    use serde_json::json;

    #[test]
    fn records_that_are_not_objects_become_a_value_column() {
        // Regression: a body of plain values (`[1, 2]`) made inference panic.
        let schema = infer_schema(&[json!(1), json!(2)]);
        assert_eq!(
            schema.field_with_name("value").unwrap().data_type(),
            &DataType::Int64
        );
        let batch = decode(vec![json!(1), json!(2)], &schema).unwrap();
        assert_eq!(batch.num_rows(), 2);
    }

    #[test]
    fn page_drift_follows_the_policy() {
        let schema = infer_schema(&[json!({"id": 1, "score": 2})]);
        // A new field and a widened type evolve whatever the policy.
        let c = check_page(
            vec![json!({"id": 2, "score": 2.5, "extra": "x"})],
            &schema,
            SchemaPolicy::Freeze,
            2,
        )
        .unwrap();
        let (evolved, changes) = c.evolved.unwrap();
        assert_eq!(
            evolved.field_with_name("score").unwrap().data_type(),
            &DataType::Float64
        );
        assert_eq!(
            evolved.field_with_name("extra").unwrap().data_type(),
            &DataType::Utf8
        );
        assert_eq!(changes.len(), 2, "{changes:?}");
        // Same kinds of values: nothing to do.
        assert!(
            check_page(
                vec![json!({"id": 3, "score": null})],
                &schema,
                SchemaPolicy::Freeze,
                2
            )
            .unwrap()
            .evolved
            .is_none()
        );
        let bad = vec![
            json!({"id": 4, "score": "n/a"}),
            json!({"id": 5, "score": 7}),
        ];
        assert!(check_page(bad.clone(), &schema, SchemaPolicy::Freeze, 3).is_err());
        let d = check_page(bad.clone(), &schema, SchemaPolicy::Discard, 3).unwrap();
        assert_eq!((d.records.len(), d.discarded), (1, 1));
        let e = check_page(bad, &schema, SchemaPolicy::Evolve, 3).unwrap();
        let (evolved, _) = e.evolved.unwrap();
        assert!(
            evolved
                .field_with_name("score")
                .unwrap()
                .metadata()
                .contains_key(JSON_TEXT_KEY)
        );
    }

    #[test]
    fn infers_nested_and_conflicting() {
        let rows = vec![
            json!({"id": 1, "user": {"login": "a"}, "tags": ["x"], "v": 1, "empty": {}}),
            json!({"id": 2, "user": {"login": "b", "site_admin": true}, "tags": [], "v": "one", "empty": {}}),
            json!({"id": 3, "amount": 1.5}),
        ];
        let schema = infer_schema(&rows);
        assert_eq!(
            schema.field_with_name("id").unwrap().data_type(),
            &DataType::Int64
        );
        assert!(
            matches!(schema.field_with_name("user").unwrap().data_type(), DataType::Struct(f) if f.len() == 2)
        );
        assert!(matches!(
            schema.field_with_name("tags").unwrap().data_type(),
            DataType::List(_)
        ));
        assert!(
            schema
                .field_with_name("v")
                .unwrap()
                .metadata()
                .contains_key(JSON_TEXT_KEY)
        );
        assert!(
            schema
                .field_with_name("empty")
                .unwrap()
                .metadata()
                .contains_key(JSON_TEXT_KEY)
        );
        let batch = decode(rows, &schema).unwrap();
        assert_eq!(batch.num_rows(), 3);
        let v = batch.column_by_name("v").unwrap();
        let v = v
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        assert_eq!(v.value(0), "1");
        assert_eq!(v.value(1), "\"one\"");
    }

    /// Decodes `texts` on both paths: the text path must take them and agree with the
    /// value path.
    fn both_paths(texts: &[&str], schema: &SchemaRef) -> RecordBatch {
        let fast = decode_fitting(texts.iter().copied(), schema)
            .unwrap()
            .unwrap_or_else(|| panic!("records that fit took the value path: {texts:?}"));
        let values = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect::<Vec<Value>>();
        let check = check_page(values, schema, SchemaPolicy::Freeze, 1).unwrap();
        assert!(check.evolved.is_none() && check.discarded == 0);
        assert_eq!(fast, decode(check.records, schema).unwrap());
        fast
    }

    /// Regression (found by fuzz_http_page_records): the value path read some floats one
    /// unit in the last place off (serde_json's fast float parser; `float_roundtrip` is
    /// now on), so a page's values depended on which path decoded it.
    #[test]
    fn both_paths_read_floats_to_the_same_value() {
        let schema = infer_schema(&[json!({"x": 1.5})]);
        let batch = both_paths(
            &[r#"{"x": -3.815592643996193e226}"#, r#"{"x": 0.1}"#],
            &schema,
        );
        let x = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>()
            .unwrap();
        assert_eq!(x.value(0), -3.815592643996193e226);
    }

    #[test]
    fn records_that_fit_decode_from_their_text_as_from_values() {
        let sample = [
            json!({"id": 1, "amount": 1.5, "who": {"login": "a", "admin": true}, "tags": ["x", "y"]}),
        ];
        let schema = infer_schema(&sample);
        let batch = both_paths(
            &[
                r#"{"id": 1, "amount": 1.5, "who": {"login": "a", "admin": true}, "tags": ["x", "y"]}"#,
                // integers in a float column, nulls, missing fields, an empty list, escapes,
                // and a field the table does not know that is null.
                r#"{"id": 2, "amount": 3, "who": null, "tags": [], "later": null}"#,
                r#"{"id": -3, "who": {"login": "\u00e9\"q\"\n"}, "tags": [null, "z"]}"#,
                "{}",
            ],
            &schema,
        );
        assert_eq!(batch.num_rows(), 4);
        let declared =
            parse_declared_schema("id bigint, at timestamp, day date, ok boolean").unwrap();
        let batch = both_paths(
            &[
                r#"{"id": 9223372036854775807, "at": "2024-01-02T03:04:05Z", "day": "2024-01-02", "ok": false}"#,
                r#"{"id": null, "at": null}"#,
            ],
            &declared,
        );
        assert_eq!(batch.num_rows(), 2);
        // JSON-text columns hold serde_json's compact text of any value, whatever the
        // spacing, escapes and number forms of the page.
        let json_text = parse_declared_schema("id bigint, tags json, payload json").unwrap();
        let batch = both_paths(
            &[
                r#"{"id": 1, "tags": [ "a" , "\u00e9\t" ], "payload": { "z": 1e2, "a": [ true, null ], "s": "x\/y" }}"#,
                r#"{"payload": "text", "tags": null}"#,
                r#"{"id": 3, "payload": 12345678901234567890, "tags": -0.5}"#,
                r#"{"id": 4}"#,
            ],
            &json_text,
        );
        let payload = batch.column_by_name("payload").unwrap();
        let payload = payload
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        assert_eq!(payload.value(0), r#"{"z":100.0,"a":[true,null],"s":"x/y"}"#);
        assert!(datafusion::arrow::array::Array::is_null(payload, 3));
        let only_text = parse_declared_schema("payload json").unwrap();
        assert_eq!(
            both_paths(&[r#"{"payload": {}}"#, "{}"], &only_text).num_rows(),
            2
        );
    }

    #[test]
    fn flat_columns_filled_while_reading_match_the_decoder() {
        // Every column here is filled by the text path itself (no arrow-json pass): each
        // value form must give what arrow-json gives on the value path.
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new(
                "us",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("ns", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new(
                "ms",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())),
                true,
            ),
            Field::new("sec", DataType::Timestamp(TimeUnit::Second, None), true),
        ]));
        let batch = both_paths(
            &[
                r#"{"i": -9223372036854775808, "f": -0, "s": "a\"\u00e9\n", "b": true, "us": "2024-01-02T03:04:05.123456Z", "ns": "2024-01-02 03:04:05.987654321", "ms": "2024-01-02T03:04:05+05:30", "sec": "2024-01-02"}"#,
                r#"{"i": 9223372036854775807, "f": 18446744073709551615, "s": "", "b": false, "us": "1969-12-31T23:59:59.5Z", "ns": null, "ms": "2024-01-02T03:04:05", "sec": "2024-01-02T03:04:05.999Z"}"#,
                r#"{"f": 1e-7, "us": "2024-06-30 12:00:00 +01:00"}"#,
                r#"{"f": 12345678901234567890123, "i": null, "s": null, "b": null}"#,
            ],
            &schema,
        );
        assert_eq!(batch.num_rows(), 4);
        let f = batch
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>();
        assert!(
            f.unwrap().value(0).is_sign_negative(),
            "-0 stays negative zero"
        );
        // A string that is no timestamp: the value path reports it, as it always did.
        let declared = parse_declared_schema("at timestamp").unwrap();
        let texts = [
            r#"{"at": "2024-01-02T03:04:05Z"}"#,
            r#"{"at": "not a time"}"#,
        ];
        assert!(
            decode_fitting(texts.into_iter(), &declared)
                .unwrap()
                .is_none()
        );
        let values = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let err = decode(values, &declared).unwrap_err().to_string();
        assert!(err.contains("not a time"), "{err}");
    }

    #[test]
    fn records_that_do_not_fit_take_the_value_path() {
        let schema = infer_schema(&[json!({"id": 1, "who": {"login": "a"}, "tags": [1]})]);
        for misfit in [
            r#"{"id": 1.5}"#,                        // a float where integers were (widens)
            r#"{"id": "7"}"#,                        // a string where integers were
            r#"{"id": 9223372036854775808}"#,        // beyond i64: a float to the value path
            r#"{"id": 1, "new": 2}"#,                // a new field
            r#"{"who": {"login": "a", "x": null}}"#, // a struct gaining a field
            r#"{"who": "a"}"#,                       // a string where an object was
            r#"{"tags": [1, "a"]}"#,                 // a list item of another kind
            r#"[1]"#,                                // not an object
        ] {
            let texts = [r#"{"id": 2}"#, misfit];
            let got = decode_fitting(texts.iter().copied(), &schema).unwrap();
            assert!(got.is_none(), "{misfit} was taken as fitting");
        }
        // A repeated JSON-text field, and JSON text inside a struct: left to the value path.
        let json_text = parse_declared_schema("id bigint, payload json").unwrap();
        let repeated = [r#"{"id": 1, "payload": 1, "payload": 2}"#];
        assert!(
            decode_fitting(repeated.into_iter(), &json_text)
                .unwrap()
                .is_none()
        );
        let nested = infer_schema(&[json!({"s": {"v": 1}}), json!({"s": {"v": "x"}})]);
        assert!(
            decode_fitting([r#"{"s": {"v": 1}}"#].into_iter(), &nested)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn declared_schema_mismatch_is_reported() {
        let schema = parse_declared_schema("id bigint, name text").unwrap();
        let err = decode(vec![json!({"id": "abc"})], &schema).unwrap_err();
        assert!(err.to_string().contains("schema"), "{err}");
    }
}
