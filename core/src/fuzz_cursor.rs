//! Fuzz targets for cursor binding: a stored cursor value or a `LAG` that is nonsense for
//! the column's type must give an error, never a panic. `HAKIRI_FUZZ_CASES` sets the cases
//! (default 256); `scripts/fuzz` runs more.

use crate::fuzzing::config;
use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::cursor::{bind, render};

/// Types a cursor column may have (and some it should not).
fn any_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(vec![
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt64,
        DataType::Float32,
        DataType::Float64,
        DataType::Decimal128(10, 2),
        DataType::Decimal128(38, 10),
        DataType::Utf8,
        DataType::LargeUtf8,
        DataType::Utf8View,
        DataType::Boolean,
        DataType::Binary,
        DataType::Date32,
        DataType::Date64,
        DataType::Time64(TimeUnit::Microsecond),
        DataType::Interval(IntervalUnit::MonthDayNano),
        DataType::Timestamp(TimeUnit::Second, None),
        DataType::Timestamp(TimeUnit::Millisecond, Some("+05:30".into())),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        DataType::Timestamp(TimeUnit::Nanosecond, Some("America/New_York".into())),
    ])
}

/// The types cursors are documented to round-trip through their stored text.
fn stored_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(vec![
        DataType::Int32,
        DataType::Int64,
        DataType::Float64,
        DataType::Utf8,
        DataType::Date32,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Timestamp(TimeUnit::Microsecond, None),
    ])
}

const SPECIAL: &[&str] = &[
    "NaN", "-NaN", "inf", "-inf", "infinity", "true", "t", "yes", "",
];

/// Text that looks like a number, a date or time, a boolean, or anything.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[-+]?[0-9]{0,40}(\\.[0-9]{0,20})?([eE][-+]?[0-9]{1,5})?",
        3 => "[-+]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,12})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?",
        1 => prop::sample::select(SPECIAL).prop_map(|s| s.to_string()),
        1 => any::<String>(),
    ]
}

/// A `LAG`: a number, an interval, or anything.
fn lag_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "-?[0-9]{1,20}(\\.[0-9]{1,3})?",
        3 => "-?[0-9]{1,20}(\\.[0-9]{1,3})?( ?(years?|months?|weeks?|days?|hours?|minutes?|seconds?|ms|us|ns))?( -?[0-9]{1,5} (hours?|minutes?))?",
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any value and lag against any type: an error or a value of the column's type.
    #[test]
    fn fuzz_cursor_bind(
        value in value_text(),
        ty in any_type(),
        lag in prop::option::of(lag_text())
    ) {
        match bind(&value, &ty, lag.as_deref(), "p") {
            Ok(v) if lag.is_none() => {
                prop_assert_eq!(v.data_type(), ty);
            }
            Ok(_) => {}
            Err(e) => drop(e.to_string()),
        }
    }

    /// A value that binds is stored as its rendered text, which binds back to the same
    /// value (else the next run cannot bind its cursor).
    #[test]
    fn fuzz_cursor_rendered_values_bind_back(value in value_text(), ty in stored_type()) {
        if let Ok(v) = bind(&value, &ty, None, "p") {
            let text = match render(&v) {
                Ok(text) => text,
                Err(e) => return Err(TestCaseError::fail(format!("{v:?} does not render: {e}"))),
            };
            match bind(&text, &ty, None, "p") {
                // NaN's sign does not survive its text, and need not.
                Ok(back) => {
                    prop_assert!(
                        back == v || render(&back).ok().as_ref() == Some(&text),
                        "{value:?} bound as {v:?}, stored as {text:?}, bound back as {back:?}"
                    );
                }
                Err(e) => {
                    let why = format!("{value:?} bound as {v:?}, stored as {text:?}: {e}");
                    return Err(TestCaseError::fail(why));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// A stored boundary (hand-edited or damaged catalog) is read back or refused, never a
    /// panic; a written one always reads back the same.
    #[test]
    fn fuzz_boundary_rows_parse(text in ".{0,200}", hashes in prop::collection::vec(any::<u64>(), 0..50)) {
        let _ = crate::cursor::BoundaryRows::parse(&text, "p");
        let b = crate::cursor::BoundaryRows { hashes };
        prop_assert_eq!(crate::cursor::BoundaryRows::parse(&b.to_text(), "p").unwrap(), b);
    }
}
