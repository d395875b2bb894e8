//! The Postgres wire endpoint of `hakiri serve`: `psql`, drivers and BI tools query the
//! context store, the `hakiri` state schema and live source tables.
//!
//! The protocol, `pg_catalog` and the query path are `datafusion-postgres`'s. Hakiri adds:
//! SCRAM-SHA-256 logins for the users of the manifest's `[serve]` section, roles
//! ([`roles`]: read-only users may only read), Hakiri's own statements (`CREATE PIPELINE`,
//! `RUN PIPELINE`, ...) over the simple query protocol, and its own accept loop so the
//! bound address (port 0 in tests) is known.

mod auth;
mod cancel;
mod compat;
mod cursors;
mod listing;
mod roles;
mod service;
mod settings;

use std::net::SocketAddr;
use std::sync::Arc;

use datafusion_postgres::pgwire::api::PgWireServerHandlers;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::{ConnectionManager, ErrorHandler};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};
use datafusion_postgres::pgwire::tokio::process_socket;
use datafusion_postgres::pgwire::tokio::tokio_rustls::TlsAcceptor;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::{self, ServerConfig};
use hakiri_engine::types::{Role, UserSpec};
use hakiri_engine::{Engine, Error, Result};
use tokio::net::TcpListener;

use cancel::Cancels;
pub use service::HakiriService;

/// An error the client sees as `ERROR` with SQLSTATE `code`.
pub(crate) fn sql_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// Plans a statement the Postgres-compatible parser already read (hooks get statements,
/// not text: no reparse).
pub(crate) async fn plan_statement(
    ctx: &datafusion::prelude::SessionContext,
    statement: datafusion::sql::sqlparser::ast::Statement,
) -> datafusion_postgres::pgwire::error::PgWireResult<datafusion::logical_expr::LogicalPlan> {
    ctx.state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement,
        )))
        .await
        .map_err(api_error)
}

/// A DataFusion (or other library) error passed to the client as it is.
pub(crate) fn api_error(e: impl std::error::Error + Send + Sync + 'static) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

/// The default Postgres wire address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";

/// A user allowed to log in, with the password resolved.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub role: Role,
}

impl std::fmt::Debug for User {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User({}, {})", self.name, self.role.as_str())
    }
}

impl User {
    /// Resolves the password reference of a manifest user.
    pub fn from_spec(spec: &UserSpec) -> Result<User> {
        Ok(User {
            name: spec.name.clone(),
            password: hakiri_engine::sources::resolve_value(
                &format!("serve.users.{}.password", spec.name),
                &spec.password,
            )?,
            role: spec.role,
        })
    }
}

/// How the endpoint is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    pub users: Vec<User>,
    /// PEM certificate chain and PKCS#8 key: TLS is offered when both are set.
    pub tls: Option<(String, String)>,
}

struct Handlers {
    service: Arc<HakiriService>,
    users: Arc<Vec<User>>,
    connections: Arc<ConnectionManager>,
    cancel: Arc<Cancels>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    /// A new handler per connection: it holds that connection's SASL exchange.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(auth::startup(self.users.clone(), self.connections.clone()))
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut datafusion_postgres::pgwire::error::PgWireError)
    where
        C: datafusion_postgres::pgwire::api::ClientInfo,
    {
        use datafusion_postgres::pgwire::error::PgWireError;
        match error {
            // A refused login is worth an operator's eye (guessing, a stale password): it
            // names the peer and the user, never the password tried.
            PgWireError::InvalidPassword(user) => tracing::warn!(
                peer = %client.socket_addr(),
                user = %user,
                "login refused: wrong password or unknown user"
            ),
            _ => tracing::debug!(peer = %client.socket_addr(), "sending error: {error}"),
        }
    }
}

fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bad = |what: &str, path: &str, e: &dyn std::fmt::Display| {
        Error::Config(format!(
            "cannot read the TLS {what} {path}: {e} (serve.tls_cert is a PEM certificate chain, serve.tls_key a PEM private key)"
        ))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate", cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, &e))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| Error::Config(format!("TLS certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds the endpoint; `serve` on the result accepts connections until the task ends.
pub struct Server {
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Checks the options and binds the address.
    ///
    /// # Errors
    /// No users, unreadable TLS files, or an address that cannot be bound.
    pub async fn bind(engine: Arc<Engine>, options: ServeOptions) -> Result<Server> {
        if options.users.is_empty() {
            return Err(Error::Config(
                "hakiri serve needs at least one user: add to hakiri.toml\n  [serve.users.admin]\n  password = \"env:HAKIRI_ADMIN_PASSWORD\"\n  role = \"admin\"".into(),
            ));
        }
        let tls = match &options.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let listener = TcpListener::bind(&options.listen).await.map_err(|e| {
            Error::Config(format!(
                "cannot listen on {} for the Postgres endpoint: {e} (choose another with --pg-listen)",
                options.listen
            ))
        })?;
        let connections = Arc::new(ConnectionManager::new());
        let users = Arc::new(options.users);
        let cancels = Arc::new(Cancels::new(connections.clone()));
        let handlers = Arc::new(Handlers {
            service: Arc::new(HakiriService::new(engine, users.clone(), cancels.clone())),
            users,
            cancel: cancels,
            connections,
        });
        Ok(Server {
            listener,
            handlers,
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections, each served on its own task, until the future is dropped.
    pub async fn serve(self) {
        loop {
            match self.listener.accept().await {
                Ok((socket, addr)) => {
                    let handlers = self.handlers.clone();
                    let tls = self.tls.clone();
                    tokio::spawn(async move {
                        if let Err(e) = process_socket(socket, tls, handlers).await {
                            tracing::debug!("connection from {addr} ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}
