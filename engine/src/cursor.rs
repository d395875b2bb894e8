//! Cursor mechanics: the `$cursor` predicate in a pipeline's query (its boundary and the
//! NULL rule), the value bound to it (with `LAG`), the maximum a run saw, and the content
//! hash that identifies a snapshot.

use std::hash::Hasher;
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
    scalar.sub(&lag_value).map_err(|e| {
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
    converter: Option<RowConverter>,
    sum: u64,
    rows: u64,
}

impl ContentHash {
    pub fn new() -> Self {
        ContentHash {
            converter: None,
            sum: 0,
            rows: 0,
        }
    }

    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.converter.is_none() {
            let fields = batch
                .schema()
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        let conv = self.converter.as_ref().expect("set above");
        let rows = conv.convert_columns(batch.columns())?;
        for row in rows.iter() {
            let mut h = twox_hash::XxHash64::with_seed(0);
            h.write(row.as_ref());
            self.sum = self.sum.wrapping_add(h.finish());
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
