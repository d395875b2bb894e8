//! Roles: a read-only user may read (queries, `EXPLAIN`, `SHOW`) and set up its session
//! (`SET`, transactions, cursors); anything else is refused with SQLSTATE 42501.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use hakiri_engine::sql::{Access, statement_access};
use hakiri_engine::types::Role;

use crate::User;

/// SQLSTATE insufficient_privilege.
pub(crate) const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// The role of the connection's user (read-only for a name not configured: it cannot have
/// logged in, but nothing is granted by accident).
pub(crate) fn role_of(users: &[User], client: &(dyn ClientInfo + Send + Sync)) -> Role {
    let name = client.metadata().get("user").map(String::as_str);
    users
        .iter()
        .find(|u| Some(u.name.as_str()) == name)
        .map_or(Role::ReadOnly, |u| u.role)
}

/// The refusal of `statement` (its text) for a read-only user, named by its first words.
pub(crate) fn refuse(user: &str, statement: &str) -> PgWireError {
    let what = statement
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    crate::sql_error(
        INSUFFICIENT_PRIVILEGE,
        format!(
            "permission denied: user \"{user}\" has the read_only role, which may run SELECT, EXPLAIN and SHOW but not {what}; connect as a user with role = \"admin\""
        ),
    )
}

/// Whether a read-only user may run `statement`: it reads or only sets up the session.
fn readable(statement: &Statement) -> bool {
    statement_access(statement) != Access::Write
}

/// The first hook of every statement, on both protocols.
pub(crate) struct RoleHook {
    pub(crate) users: Arc<Vec<User>>,
}

impl RoleHook {
    fn check(
        &self,
        statement: &Statement,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<()> {
        if role_of(&self.users, client) == Role::Admin || readable(statement) {
            return Ok(());
        }
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        Err(refuse(&user, &statement.to_string()))
    }
}

#[async_trait]
impl QueryHook for RoleHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.check(statement, &*client).err().map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        self.check(statement, client).err().map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.check(statement, &*client).err().map(Err)
    }
}
