//! The Postgres wire endpoint: serves a ready Hakiri session to `psql`, drivers and BI
//! tools through `datafusion-postgres` (protocol and `pg_catalog`). Authentication, roles
//! and the `hakiri serve` command come with the pgwire issue.

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
pub use datafusion_postgres::ServerOptions;

/// Serves `ctx` over the Postgres wire protocol until the listener fails.
///
/// # Errors
/// When the address cannot be bound or TLS files cannot be read.
pub async fn serve(ctx: Arc<SessionContext>, opts: &ServerOptions) -> std::io::Result<()> {
    datafusion_postgres::serve(ctx, opts).await
}
