//! Cursor mechanics: the `$cursor` predicate in a pipeline's query (its boundary and the
//! NULL rule), the value bound to it (with `LAG`), the maximum a run saw, and the content
//! hash that identifies a snapshot.

use std::ops::ControlFlow;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::{SortOptions, sort_to_indices};
use datafusion::arrow::datatypes::{DataType, IntervalUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Query, Value, visit_expressions_mut};

use crate::error::{Error, Result};

/// The placeholder a pipeline's query compares its cursor column with.
pub const PLACEHOLDER: &str = "$cursor";

fn is_placeholder(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(&v.value, Value::Placeholder(p) if p == PLACEHOLDER))
}

/// How a query compares with `$cursor`: `>` or `>=` (as `col > $cursor` or `$cursor < col`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    Exclusive,
    Inclusive,
}

/// Rewrites each `x > $cursor` (or `>=`) in `query` to `(x > $cursor OR x IS NULL)` so rows
/// with a NULL cursor reach the run, which applies the pipeline's NULL rule to them, and
/// returns the boundaries found.
///
/// # Errors
/// `InvalidInput` when `$cursor` is compared with anything but `>`/`>=` (`<`/`<=` when it
/// is on the left).
pub fn rewrite_predicate(query: &mut Query, pipeline: &str) -> Result<Vec<Boundary>> {
    let mut found = Vec::new();
    let mut bad: Option<String> = None;
    let _ = visit_expressions_mut(query, |e: &mut Expr| {
        let Expr::BinaryOp { left, op, right } = e else {
            return ControlFlow::<()>::Continue(());
        };
        let boundary = match (is_placeholder(left), is_placeholder(right), &*op) {
            (false, true, BinaryOperator::Gt) | (true, false, BinaryOperator::Lt) => {
                Boundary::Exclusive
            }
            (false, true, BinaryOperator::GtEq) | (true, false, BinaryOperator::LtEq) => {
                Boundary::Inclusive
            }
            (false, false, _) => return ControlFlow::Continue(()),
            _ => {
                bad = Some(e.to_string());
                return ControlFlow::Break(());
            }
        };
        let col = if is_placeholder(right) {
            left.as_ref().clone()
        } else {
            right.as_ref().clone()
        };
        found.push(boundary);
        let cmp = e.clone();
        *e = Expr::Nested(Box::new(Expr::BinaryOp {
            left: Box::new(cmp),
            op: BinaryOperator::Or,
            right: Box::new(Expr::IsNull(Box::new(col))),
        }));
        // The visitor calls this after the children: what was just built is not visited.
        ControlFlow::Continue(())
    });
    if let Some(expr) = bad {
        return Err(Error::InvalidInput(format!(
            "pipeline '{pipeline}' compares the cursor as '{expr}': a monotonic cursor reads rows past it, so write 'column > $cursor' (or >= with MODE MERGE)"
        )));
    }
    Ok(found)
}

/// The value bound to `$cursor`: the committed value minus `lag` (a number, or an interval
/// such as '1 hour' for dates and timestamps), typed as the query expects.
pub fn bind(value: &str, ty: &DataType, lag: Option<&str>, pipeline: &str) -> Result<ScalarValue> {
    let scalar = ScalarValue::try_from_string(value.to_string(), ty).map_err(|e| {
        Error::InvalidInput(format!(
            "pipeline '{pipeline}': cursor value '{value}' is not a valid {ty}: {e}"
        ))
    })?;
    let Some(lag) = lag else { return Ok(scalar) };
    let lag_ty = match ty {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            DataType::Interval(IntervalUnit::MonthDayNano)
        }
        other => other.clone(),
    };
    let lag_value = ScalarValue::try_from_string(lag.to_string(), &lag_ty).map_err(|e| {
        Error::InvalidInput(format!(
            "pipeline '{pipeline}': LAG '{lag}' is not a valid {lag_ty} to subtract from a {ty} cursor: {e}"
        ))
    })?;
    // Checked: a LAG past the type's range is an error, not a wrapped-around cursor.
    scalar.sub_checked(&lag_value).map_err(|e| {
        Error::InvalidInput(format!(
            "pipeline '{pipeline}': cannot subtract LAG '{lag}' from cursor '{value}': {e}"
        ))
    })
}

/// A cursor value as the text stored in the catalog: the value's display form, which
/// [`bind`] parses back to the same value (a timestamp as `2026-02-01T04:10:00Z`, not the
/// integer `ScalarValue`'s `Display` shows).
pub fn render(value: &ScalarValue) -> Result<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let array = value.to_array()?;
    let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())?;
    Ok(formatter.value(0).to_string())
}

/// The maximum non-null value of a column, found with a top-1 sort so any orderable type works.
pub fn column_max(array: &ArrayRef) -> Result<Option<ScalarValue>> {
    if array.len() == array.null_count() {
        return Ok(None);
    }
    let opts = SortOptions {
        descending: true,
        nulls_first: false,
    };
    let idx = sort_to_indices(array.as_ref(), Some(opts), Some(1))
        .map_err(|e| Error::InvalidInput(format!("cursor column cannot be ordered: {e}")))?;
    Ok(Some(ScalarValue::try_from_array(
        array,
        idx.value(0) as usize,
    )?))
}

/// An order-independent hash of a run's rows: the wrapping sum of each row's xxHash64 and
/// the row count. Two runs over the same rows, in any order and batching, agree.
pub struct ContentHash {
    hasher: Option<RowHasher>,
    sum: u64,
    rows: u64,
}

impl ContentHash {
    pub fn new() -> Self {
        ContentHash {
            hasher: None,
            sum: 0,
            rows: 0,
        }
    }

    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.hasher.is_none() {
            self.hasher = Some(RowHasher::new(&batch.schema())?);
        }
        let hasher = self.hasher.as_ref().expect("set above");
        for h in hasher.hashes(batch)? {
            self.sum = self.sum.wrapping_add(h);
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The snapshot id: `xxh64:<rows>:<sum>`.
    pub fn finish(&self) -> String {
        format!("xxh64:{}:{:016x}", self.rows, self.sum)
    }
}

impl Default for ContentHash {
    fn default() -> Self {
        Self::new()
    }
}

/// The records already loaded at a cursor's boundary, committed with the cursor so that a
/// run reading them again skips them: a token cursor's last page (the API gave no token
/// past it, so the next run fetches that page again) or the rows at a `>=` monotonic
/// cursor's committed value. Kept as dlt keeps boundary rows: their count and a hash of
/// each (xxHash64 of the record's text, or of the row's Arrow row encoding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundaryRows {
    /// One hash per record, in the order they were written.
    pub hashes: Vec<u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BoundaryText {
    rows: usize,
    xxh64: Vec<String>,
}

impl BoundaryRows {
    pub fn rows(&self) -> usize {
        self.hashes.len()
    }

    /// The text stored in the catalog: `{"rows":2,"xxh64":["<16 hex>",...]}`.
    pub fn to_text(&self) -> String {
        let text = BoundaryText {
            rows: self.hashes.len(),
            xxh64: self.hashes.iter().map(|h| format!("{h:016x}")).collect(),
        };
        serde_json::to_string(&text).expect("a boundary serializes")
    }

    /// Reads [`BoundaryRows::to_text`] back.
    ///
    /// # Errors
    /// `Internal` when the stored text is not a boundary (a damaged catalog).
    pub fn parse(text: &str, pipeline: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::Internal(format!(
                "pipeline '{pipeline}': the committed boundary rows '{text}' cannot be read ({why}); reset the cursor with ALTER PIPELINE {pipeline} RESET CURSOR"
            ))
        };
        let t: BoundaryText = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let hashes = t
            .xxh64
            .iter()
            .map(|h| u64::from_str_radix(h, 16).map_err(|e| bad(format!("hash '{h}': {e}"))))
            .collect::<Result<Vec<u64>>>()?;
        if hashes.len() != t.rows {
            return Err(bad(format!("{} hashes for {} rows", hashes.len(), t.rows)));
        }
        Ok(BoundaryRows { hashes })
    }

    /// A matcher that skips each committed record once (a multiset: two identical records
    /// written are two to skip).
    pub fn skipper(&self) -> Skipper {
        let mut left = std::collections::HashMap::with_capacity(self.hashes.len());
        for h in &self.hashes {
            *left.entry(*h).or_insert(0u32) += 1;
        }
        Skipper {
            left,
            committed: self.hashes.len() as u64,
            skipped: 0,
        }
    }
}

/// Skips records whose hash is one of a [`BoundaryRows`]'s, each at most as often as it was
/// written; says how many committed records were not seen again.
#[derive(Debug)]
pub struct Skipper {
    left: std::collections::HashMap<u64, u32>,
    committed: u64,
    skipped: u64,
}

impl Skipper {
    /// Whether the record with hash `h` was already written (and so is skipped).
    pub fn skip(&mut self, h: u64) -> bool {
        match self.left.get_mut(&h) {
            Some(n) if *n > 0 => {
                *n -= 1;
                self.skipped += 1;
                true
            }
            _ => false,
        }
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Committed records not found again: they vanished from the source or were rewritten.
    pub fn missing(&self) -> u64 {
        self.committed - self.skipped
    }
}

/// The hash of a record's text, as a [`BoundaryRows`] keeps it.
pub fn text_hash(text: &str) -> u64 {
    twox_hash::XxHash64::oneshot(0, text.as_bytes())
}

/// Hashes the rows of batches with one schema, each row's Arrow row encoding with xxHash64:
/// equal rows hash equally whatever their batch.
pub struct RowHasher {
    converter: RowConverter,
}

impl RowHasher {
    pub fn new(schema: &datafusion::arrow::datatypes::Schema) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(RowHasher {
            converter: RowConverter::new(fields)?,
        })
    }

    pub fn hashes(&self, batch: &RecordBatch) -> Result<Vec<u64>> {
        let rows = self.converter.convert_columns(batch.columns())?;
        Ok(rows
            .iter()
            .map(|r| twox_hash::XxHash64::oneshot(0, r.as_ref()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn query(sql: &str) -> Query {
        match Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0)
        {
            datafusion::sql::sqlparser::ast::Statement::Query(q) => *q,
            _ => panic!(),
        }
    }

    #[test]
    fn predicate_lets_nulls_through_and_reports_the_boundary() {
        let mut q = query("SELECT * FROM s.t WHERE id >= $cursor AND x = 1");
        assert_eq!(
            rewrite_predicate(&mut q, "p").unwrap(),
            vec![Boundary::Inclusive]
        );
        assert_eq!(
            q.to_string(),
            "SELECT * FROM s.t WHERE (id >= $cursor OR id IS NULL) AND x = 1"
        );
        let mut q = query("SELECT * FROM s.t WHERE $cursor < ts");
        assert_eq!(
            rewrite_predicate(&mut q, "p").unwrap(),
            vec![Boundary::Exclusive]
        );
        let mut q = query("SELECT * FROM s.t WHERE id < $cursor");
        assert!(rewrite_predicate(&mut q, "p").is_err());
    }

    #[test]
    fn lag_is_subtracted_in_the_cursor_type() {
        assert_eq!(
            bind("100", &DataType::Int64, Some("10"), "p").unwrap(),
            ScalarValue::Int64(Some(90))
        );
        let ts = DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        );
        let v = bind("2026-01-05T10:00:00Z", &ts, Some("1 hour"), "p").unwrap();
        assert_eq!(
            v.to_string(),
            bind("2026-01-05T09:00:00Z", &ts, None, "p")
                .unwrap()
                .to_string()
        );
        assert!(bind("abc", &DataType::Int64, None, "p").is_err());
        // Regression: a LAG past the type's range wrapped around to a huge cursor.
        let min = i64::MIN.to_string();
        assert!(bind(&min, &DataType::Int64, Some("1"), "p").is_err());
    }

    #[test]
    fn boundary_rows_round_trip_and_skip_each_written_record_once() {
        let b = BoundaryRows {
            hashes: vec![text_hash("a"), text_hash("b"), text_hash("a")],
        };
        let text = b.to_text();
        assert_eq!(BoundaryRows::parse(&text, "p").unwrap(), b);
        let mut skip = b.skipper();
        // "a" was written twice: two copies are skipped, a third is new.
        assert!(skip.skip(text_hash("a")));
        assert!(skip.skip(text_hash("a")));
        assert!(!skip.skip(text_hash("a")));
        assert!(!skip.skip(text_hash("c")));
        assert_eq!((skip.skipped(), skip.missing()), (2, 1));
        for bad in [
            "",
            "{}",
            "{\"rows\":2,\"xxh64\":[\"zz\"]}",
            "{\"rows\":2,\"xxh64\":[]}",
        ] {
            assert!(BoundaryRows::parse(bad, "p").is_err(), "{bad}");
        }
    }

    #[test]
    fn rendered_cursors_bind_back_to_the_same_value() {
        // Regression: a timestamp cursor was stored as its integer microseconds, which
        // could not be bound on the next run.
        let ts = DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        );
        let v = ScalarValue::TimestampMicrosecond(Some(1_769_919_000_000_000), Some("UTC".into()));
        let text = render(&v).unwrap();
        assert_eq!(text, "2026-02-01T04:10:00Z");
        assert_eq!(bind(&text, &ts, None, "p").unwrap(), v);
        for v in [
            ScalarValue::Int64(Some(42)),
            ScalarValue::Date32(Some(20_000)),
            ScalarValue::Utf8(Some("a b".into())),
        ] {
            assert_eq!(
                bind(&render(&v).unwrap(), &v.data_type(), None, "p").unwrap(),
                v
            );
        }
    }

    #[test]
    fn content_hash_ignores_order() {
        use datafusion::arrow::array::Int64Array;
        use std::sync::Arc;
        let b = |v: Vec<i64>| {
            RecordBatch::try_from_iter(vec![("a", Arc::new(Int64Array::from(v)) as ArrayRef)])
                .unwrap()
        };
        let mut h1 = ContentHash::new();
        h1.update(&b(vec![1, 2, 3])).unwrap();
        let mut h2 = ContentHash::new();
        h2.update(&b(vec![3])).unwrap();
        h2.update(&b(vec![2, 1])).unwrap();
        assert_eq!(h1.finish(), h2.finish());
        let mut h3 = ContentHash::new();
        h3.update(&b(vec![1, 2, 4])).unwrap();
        assert_ne!(h1.finish(), h3.finish());
    }
}
