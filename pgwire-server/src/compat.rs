//! Rewrites of catalog queries that drivers send on connect and DataFusion cannot run as
//! written; datafusion-pg-catalog's parser rules cover many, these cover what they miss
//! (found by replaying npgsql's type loading, which Power BI runs on connect).

use std::ops::ControlFlow;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, Query, SelectItem, SetExpr, Statement, Value,
    visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::QueryHook;

use crate::plan_statement;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::error::PgWireResult;

/// pg_type's `regproc` columns: function names in datafusion-pg-catalog, oids in Postgres.
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
];

/// `(SELECT col FROM t WHERE ...)` as `(SELECT max(col) ...)`: DataFusion runs a correlated
/// scalar subquery only when it aggregates; Postgres guarantees it yields at most one row.
fn aggregate_scalar_subquery(query: &mut Query) -> bool {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    // Correlated: the filter names a qualified column (`typ.oid`), as drivers write them.
    let correlated = select.selection.as_ref().is_some_and(|filter| {
        visit_expressions(filter, |e| match e {
            Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .is_break()
    });
    if !correlated || grouped || select.projection.len() != 1 {
        return false;
    }
    let (SelectItem::UnnamedExpr(column) | SelectItem::ExprWithAlias { expr: column, .. }) =
        &mut select.projection[0]
    else {
        return false;
    };
    if !matches!(column, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
        return false;
    }
    let Ok(max) = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("max({column})"))
        .and_then(|mut p| p.parse_expr())
    else {
        return false;
    };
    *column = max;
    true
}

/// `proc.oid = typ.typreceive` as `proc.proname = typ.typreceive`.
fn regproc_by_name(oid: &mut Expr, regproc: &Expr) -> bool {
    let (Expr::CompoundIdentifier(oid), Expr::CompoundIdentifier(_)) = (oid, regproc) else {
        return false;
    };
    match oid.last_mut() {
        Some(last) if is_regproc_column(regproc) && last.value.eq_ignore_ascii_case("oid") => {
            *last = Ident::new("proname");
            true
        }
        _ => false,
    }
}

/// Whether `expr` names one of pg_type's regproc columns.
fn is_regproc_column(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Identifier(i) => Some(i),
        Expr::CompoundIdentifier(parts) => parts.last(),
        _ => None,
    };
    name.is_some_and(|n| REGPROC_COLUMNS.contains(&n.value.to_lowercase().as_str()))
}

/// `typinput = 'pg_catalog.array_in'::regproc`: datafusion-pg-catalog turns the cast into
/// `(SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'pg_catalog.array_in')`, an oid
/// compared with a name; compare with the function's name instead (DBeaver's array check).
fn regproc_cast_by_name(column: &Expr, cast: &mut Expr) -> bool {
    if !is_regproc_column(column) {
        return false;
    }
    let Expr::Subquery(query) = cast else {
        return false;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let selects_oid = matches!(
        select.projection.as_slice(),
        [SelectItem::UnnamedExpr(Expr::Identifier(i))] if i.value.eq_ignore_ascii_case("oid")
    );
    let from_pg_proc = matches!(
        select.from.as_slice(),
        [t] if t.relation.to_string().to_lowercase().ends_with("pg_proc")
    );
    let Some(Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    }) = &select.selection
    else {
        return false;
    };
    let (Expr::Identifier(by), Expr::Value(name)) = (left.as_ref(), right.as_ref()) else {
        return false;
    };
    let Value::SingleQuotedString(name) = &name.value else {
        return false;
    };
    if !(selects_oid && from_pg_proc && by.value.eq_ignore_ascii_case("proname")) {
        return false;
    }
    let name = name.strip_prefix("pg_catalog.").unwrap_or(name).to_string();
    *cast = Expr::Value(Value::SingleQuotedString(name).with_empty_span());
    true
}

/// Applies the rewrites; true when the statement changed.
pub fn rewrite(statement: &mut Statement) -> bool {
    let mut changed = false;
    let _ = visit_expressions_mut(statement, |expr| {
        match expr {
            Expr::Subquery(query) => changed |= aggregate_scalar_subquery(query),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                changed |= regproc_by_name(left, right)
                    || regproc_by_name(right, left)
                    || regproc_cast_by_name(left, right)
                    || regproc_cast_by_name(right, left);
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// Plans rewritten statements itself; leaves every other statement to the next hooks.
#[derive(Debug)]
pub struct CompatHook;

#[async_trait]
impl QueryHook for CompatHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let mut statement = statement.clone();
        if !rewrite(&mut statement) {
            return None;
        }
        Some(
            async {
                let plan = plan_statement(ctx, statement).await?;
                let df = ctx
                    .execute_logical_plan(plan)
                    .await
                    .map_err(crate::api_error)?;
                Ok(Response::Query(
                    encode_dataframe(df, &Format::UnifiedText, None).await?,
                ))
            }
            .await,
        )
    }

    /// The rewritten statement's plan; datafusion-postgres executes it with the parameters.
    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let mut statement = statement.clone();
        if !rewrite(&mut statement) {
            return None;
        }
        Some(plan_statement(ctx, statement).await)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut statement);
        statement.to_string()
    }

    #[test]
    fn correlated_scalar_subqueries_aggregate_and_regproc_joins_use_names() {
        assert_eq!(
            rewritten(
                "SELECT (SELECT rngtypid FROM pg_range WHERE rngmultitypid = t.oid) FROM pg_type AS t"
            ),
            "SELECT (SELECT max(rngtypid) FROM pg_range WHERE rngmultitypid = t.oid) FROM pg_type AS t"
        );
        assert_eq!(
            rewritten("SELECT 1 FROM pg_type AS t LEFT JOIN pg_proc AS p ON p.oid = t.typreceive"),
            "SELECT 1 FROM pg_type AS t LEFT JOIN pg_proc AS p ON p.proname = t.typreceive"
        );
        assert_eq!(
            rewritten(
                "SELECT typinput = (SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'pg_catalog.array_in') FROM pg_type"
            ),
            "SELECT typinput = 'array_in' FROM pg_type"
        );
        // Left alone: aggregated or grouped subqueries, other joins on oid.
        for sql in [
            "SELECT (SELECT count(*) FROM pg_range WHERE rngtypid = t.oid) FROM pg_type AS t",
            "SELECT 1 FROM pg_class AS c JOIN pg_type AS t ON c.oid = t.typrelid",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
    }
}
