//! `SET` statements: one connection must never change another's settings.
//!
//! datafusion-postgres's `SetShowHook` keeps the variables clients set on connect
//! (`DateStyle`, `TimeZone`, `statement_timeout`, ...) per connection, and hands every other
//! `SET` to DataFusion, which changes the one session all of `hakiri serve`'s connections
//! share: a read-only user's `SET datafusion.execution.batch_size = 1` would slow everyone.
//! This hook, placed before it, answers those other `SET`s with a notice and changes nothing.

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::messages::response::NoticeResponse;

/// The variables `SetShowHook` keeps per connection.
const PER_CONNECTION: &[&str] = &[
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

/// The variable a `SET` would change in the shared session; `None` when it is kept per
/// connection (or the statement is not a `SET`).
fn shared_variable(statement: &Statement) -> Option<String> {
    let Statement::Set(set) = statement else {
        return None;
    };
    match set {
        Set::SingleAssignment {
            scope: None,
            hivevar: false,
            variable,
            values,
        } => {
            let name = variable.to_string().to_lowercase();
            (values.is_empty() || !PER_CONNECTION.contains(&name.as_str())).then_some(name)
        }
        Set::SetTimeZone { local: false, .. } => None,
        other => Some(other.to_string()),
    }
}

#[derive(Debug)]
pub struct SharedSettingsHook;

impl SharedSettingsHook {
    async fn ignore(
        statement: &Statement,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let variable = shared_variable(statement)?;
        let notice = ErrorInfo::new(
            "NOTICE".into(),
            "01000".into(),
            format!(
                "SET {variable} was ignored: hakiri serve shares one query session among all \
                 connections, so only per-connection settings apply here (TimeZone, DateStyle, \
                 statement_timeout, search_path, application_name, bytea_output, \
                 IntervalStyle, extra_float_digits)"
            ),
        );
        if let Err(e) = client
            .send_message(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                notice,
            )))
            .await
        {
            return Some(Err(e));
        }
        Some(Ok(Response::Execution(Tag::new("SET"))))
    }
}

#[async_trait]
impl QueryHook for SharedSettingsHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::ignore(statement, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // SetShowHook gives SET statements their (empty) plan.
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::ignore(statement, client).await
    }
}
