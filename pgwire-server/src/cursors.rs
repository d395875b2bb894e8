//! SQL cursors that drivers can describe: `DECLARE` with parameters, and the column
//! descriptions of a cursor and of its `FETCH`es.
//!
//! datafusion-postgres 0.19's `CursorStatementHook` keeps a cursor as a portal without a
//! plan and ignores bound parameters. A driver's server-side cursor (psycopg's named cursor:
//! a parameterized `DECLARE` on the extended protocol, a Describe of the cursor's portal,
//! then `FETCH`es whose rows it decodes with that description) then gets no columns, and
//! psycopg's C decoder crashes on rows it has no loaders for. [`DeclareHook`] plans the
//! cursor's query with its parameters and keeps the plan on the cursor's portal;
//! [`Described`] tells `service.rs` what a Describe of a cursor statement must answer.
//! `FETCH` and `CLOSE` stay with datafusion-postgres's hook.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Declare, DeclareType, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};

use crate::{api_error as api, plan_statement, sql_error as error};

/// What a statement of the extended protocol is, as far as describing it goes.
pub enum Described<'a> {
    /// `DECLARE` and `CLOSE` return no rows (psycopg checks for a command result).
    NoRows,
    /// `FETCH ... FROM name`: the rows of cursor `name`.
    CursorRows(&'a str),
    /// Anything else: described from its plan as usual.
    Plan,
}

impl<'a> Described<'a> {
    pub fn of(statement: &'a Option<(Statement, LogicalPlan)>) -> Self {
        match statement {
            Some((Statement::Declare { .. } | Statement::Close { .. }, _)) => Described::NoRows,
            Some((Statement::Fetch { name, .. }, _)) => Described::CursorRows(&name.value),
            _ => Described::Plan,
        }
    }
}

/// A cursor's portal: its query and its plan, so the cursor's columns can be described.
pub type CursorStatement = (String, Option<(Statement, LogicalPlan)>);

/// The error PostgreSQL gives for a cursor name nobody declared (SQLSTATE 34000).
pub fn no_such_cursor(name: &str) -> PgWireError {
    error("34000", format!("cursor \"{name}\" does not exist"))
}

/// The one cursor a `DECLARE` declares, and its query.
fn cursor(
    stmts: &[Declare],
) -> PgWireResult<(String, Box<datafusion::sql::sqlparser::ast::Query>)> {
    let [declare] = stmts else {
        return Err(error("0A000", "DECLARE declares one cursor at a time"));
    };
    if declare.declare_type != Some(DeclareType::Cursor) {
        return Err(error(
            "42601",
            "only DECLARE name CURSOR FOR query is supported",
        ));
    }
    let name = declare
        .names
        .first()
        .ok_or_else(|| error("42601", "DECLARE needs a cursor name"))?;
    let query = declare
        .for_query
        .clone()
        .ok_or_else(|| error("42601", "DECLARE CURSOR needs FOR <query>"))?;
    Ok((name.value.clone(), query))
}

/// Starts the cursor: its rows are produced as `FETCH`es ask for them, never all at once.
async fn declare(
    client: &mut dyn HookClient,
    stmts: &[Declare],
    ctx: &SessionContext,
    bound: Option<(&LogicalPlan, &ParamValues)>,
) -> PgWireResult<Response> {
    let (name, query) = cursor(stmts)?;
    let text = query.to_string();
    let plan = match bound {
        Some((plan, params)) => plan
            .clone()
            .replace_params_with_values(params)
            .map_err(api)?,
        None => plan_statement(ctx, Statement::Query(query.clone())).await?,
    };
    let df = ctx.execute_logical_plan(plan.clone()).await.map_err(api)?;
    let rows = encode_dataframe(df, &Format::UnifiedText, None).await?;
    let statement: CursorStatement = (text, Some((Statement::Query(query), plan)));
    let portal = Portal::new_cursor(
        name.clone(),
        Arc::new(StoredStatement::new(name, statement, vec![])),
    );
    portal.start(rows).await;
    client.portal_store().put_portal(Arc::new(portal));
    Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
}

/// Handles `DECLARE` on both protocols; must come before datafusion-postgres's cursor hook.
#[derive(Debug)]
pub struct DeclareHook;

#[async_trait]
impl QueryHook for DeclareHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let Statement::Declare { stmts } = statement else {
            return None;
        };
        Some(declare(client, stmts, ctx, None).await)
    }

    /// The plan of the cursor's query: the parameters' types come from it.
    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let Statement::Declare { stmts } = statement else {
            return None;
        };
        Some(match cursor(stmts) {
            Ok((_, query)) => plan_statement(ctx, Statement::Query(query)).await,
            Err(e) => Err(e),
        })
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let Statement::Declare { stmts } = statement else {
            return None;
        };
        Some(declare(client, stmts, ctx, Some((plan, params))).await)
    }
}
