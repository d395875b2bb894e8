//! Fuzz targets for the HTTP page decoder (a child of `json.rs`): hostile records must give
//! an error, never a panic, and the text path (`decode_fitting`) and the value path
//! (`check_page` + `decode`) must agree on every page the text path takes.
//! `HAKIRI_FUZZ_CASES` sets the cases (default 256); `scripts/fuzz` runs more.

use crate::fuzzing::config;
use crate::types::SchemaPolicy;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::json;

use super::*;

type Outcome = std::result::Result<(), TestCaseError>;

/// Flat columns of every type the text path fills, dates, nested structs and lists, and
/// JSON text nested in a struct (which the text path leaves to the value path).
fn schemas() -> Vec<SchemaRef> {
    let declared = |s: &str| parse_declared_schema(s).expect("a valid declared schema");
    vec![
        declared("id bigint, score double, name text, ok boolean, at timestamp, payload json"),
        declared("day date, id bigint, at timestamp"),
        infer_schema(&[json!({
            "id": 1,
            "who": {"login": "a", "admin": true, "tags": ["x"]},
            "pts": [1.5],
            "grid": [[1]]
        })]),
        infer_schema(&[json!({"s": {"v": 1}}), json!({"s": {"v": "x"}})]),
    ]
}

const KEYS: &[&str] = &[
    "id", "score", "name", "ok", "at", "payload", "day", "who", "login", "admin", "tags", "pts",
    "grid", "s", "v", "value", "extra",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(|k| k.to_string()),
        1 => "[a-z]{1,3}",
    ]
}

/// Timestamp- and date-like strings, well-formed and not.
fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9]{4}-[01][0-9]-[0-3][0-9]([T ][0-2][0-9]:[0-5][0-9](:[0-6][0-9](\\.[0-9]{1,9})?)?)?(Z| ?[+-][0-2][0-9]:?[0-5][0-9])?",
        1 => "[-+]?[0-9]{1,7}-[0-9]{1,3}-[0-9]{1,3}",
        1 => "\\PC{0,12}",
    ]
}

/// Any JSON value (finite numbers: JSON has no others).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        time_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A value of a field's type, mostly: sometimes NULL or any value.
fn typed(f: &Field) -> BoxedStrategy<Value> {
    let fitting = if f.metadata().contains_key(JSON_TEXT_KEY) {
        any_json().boxed()
    } else {
        match f.data_type() {
            DataType::Int64 => any::<i64>().prop_map(Value::from).boxed(),
            DataType::Float64 => prop_oneof![
                any::<f64>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
            ]
            .boxed(),
            DataType::Boolean => any::<bool>().prop_map(Value::from).boxed(),
            DataType::Timestamp(..) | DataType::Date32 => time_text().prop_map(Value::from).boxed(),
            DataType::Struct(fields) => object(fields.iter().map(|f| f.as_ref())),
            DataType::List(item) => prop::collection::vec(typed(item), 0..4)
                .prop_map(Value::Array)
                .boxed(),
            _ => any::<String>().prop_map(Value::from).boxed(),
        }
    };
    prop_oneof![8 => fitting, 1 => Just(Value::Null), 1 => any_json()].boxed()
}

/// An object with (most of) these fields, each of its type (mostly), now and then with a
/// field of another name.
fn object<'a>(fields: impl Iterator<Item = &'a Field>) -> BoxedStrategy<Value> {
    let parts: Vec<_> = fields
        .map(|f| {
            (
                Just(f.name().clone()),
                prop::option::weighted(0.8, typed(f)),
            )
        })
        .collect();
    let extra = prop::option::weighted(0.1, (key(), any_json()));
    (parts, extra)
        .prop_map(|(parts, extra)| {
            let mut m: Map<String, Value> = parts
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect();
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
        .boxed()
}

/// A schema and a page of records for it: mostly objects shaped like it, some anything.
fn page() -> impl Strategy<Value = (SchemaRef, Vec<Value>)> {
    prop::sample::select(schemas()).prop_flat_map(|schema| {
        let record = prop_oneof![
            6 => object(schema.fields().iter().map(|f| f.as_ref())),
            1 => any_json(),
        ];
        (Just(schema), prop::collection::vec(record, 1..6))
    })
}

const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"id\"",
    "\"who\"",
    "\"login\"",
    "\"tags\"",
    "\"at\"",
    "\"payload\"",
    "\"day\"",
    "1",
    "-0",
    "1e999",
    "1.5",
    "18446744073709551616",
    "true",
    "null",
    "\"2024-01-02T03:04:05Z\"",
    "\"2024-01-02\"",
    "\"\\u00e9\"",
    "\"\\ud800\"",
    " ",
    "\"x",
];

/// JSON-looking text, mostly not JSON.
fn raw_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => prop::sample::select(PIECES).prop_map(|p| p.to_string()),
        1 => "\\PC{1,4}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

/// The value path under every policy: counts add up, and a batch has a row per record.
fn value_path(values: &[Value], schema: &SchemaRef) -> Outcome {
    for policy in [
        SchemaPolicy::Evolve,
        SchemaPolicy::Freeze,
        SchemaPolicy::Discard,
    ] {
        let Ok(c) = check_page(values.to_vec(), schema, policy, 1) else {
            continue;
        };
        prop_assert_eq!(c.records.len() + c.discarded as usize, values.len());
        let target = c.evolved.as_ref().map_or(schema, |(s, _)| s);
        if let Ok(batch) = decode(c.records.clone(), target) {
            prop_assert_eq!(batch.num_rows(), c.records.len());
        }
    }
    Ok(())
}

/// The text path, and when it takes the page, the value path gives the same: the same batch,
/// or an error too.
fn both_paths(texts: &[String], schema: &SchemaRef) -> Outcome {
    let fast = match decode_fitting(texts.iter().map(String::as_str), schema) {
        Ok(None) => return Ok(()),
        Ok(Some(batch)) => {
            prop_assert_eq!(batch.num_rows(), texts.len());
            Ok(batch)
        }
        Err(e) => Err(e.to_string()),
    };
    // The caller hands the text path records located as JSON: only those are compared.
    let Ok(values) = texts
        .iter()
        .map(|t| serde_json::from_str(t))
        .collect::<std::result::Result<Vec<Value>, _>>()
    else {
        return Ok(());
    };
    let fail = |why: String| TestCaseError::fail(format!("taken by the text path, {why}"));
    let check = check_page(values, schema, SchemaPolicy::Freeze, 1)
        .map_err(|e| fail(format!("the page fails the value path's check: {e}")))?;
    if check.evolved.is_some() || check.discarded > 0 {
        return Err(fail(format!(
            "the page changes the schema: {:?}",
            check.evolved
        )));
    }
    let slow = decode(check.records, schema).map_err(|e| e.to_string());
    match (&fast, &slow) {
        (Ok(a), Ok(b)) => {
            prop_assert_eq!(a, b);
        }
        (Err(_), Err(_)) => {}
        _ => return Err(fail(format!("text path {fast:?}, value path {slow:?}"))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Generated records, as compact or pretty text, on both paths.
    #[test]
    fn fuzz_http_page_records((schema, values) in page(), pretty in any::<bool>()) {
        let texts: Vec<String> = values
            .iter()
            .map(|v| {
                if pretty {
                    serde_json::to_string_pretty(v)
                } else {
                    serde_json::to_string(v)
                }
            })
            .collect::<std::result::Result<_, _>>()
            .expect("a JSON value serializes");
        both_paths(&texts, &schema)?;
        value_path(&values, &schema)?;
    }

    /// Raw, mostly broken text on the text path (and, where it is JSON, on both).
    #[test]
    fn fuzz_http_page_raw_text(
        schema in prop::sample::select(schemas()),
        texts in prop::collection::vec(raw_text(), 0..5)
    ) {
        both_paths(&texts, &schema)?;
    }
}
