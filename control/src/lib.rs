//! `hakiri control serve`: the self-hosted control plane of a team.
//!
//! - Each project's configuration is a Loro document ([`room`], layout in [`doc`]) that
//!   clients edit together over the Loro sync protocol ([`ws`]), logged durably in SQLite
//!   ([`store`]).
//! - People sign in through any OIDC provider ([`oidc`], authorization code with PKCE) and
//!   get biscuit tokens holding their rights per project ([`token`]).
//! - `apply` turns the document into a validated, versioned manifest; nodes (`hakiri serve
//!   --control`) pull the applied version, and the dispatcher ([`dispatch`]) hands each
//!   scheduled run to exactly one eligible node.
//!
//! HTTP routes are in [`http`]; the CLI's side (team commands, the node loop) in [`client`].

pub mod bench;
pub mod client;
pub mod dispatch;
pub mod doc;
pub mod http;
pub mod oidc;
pub mod room;
pub mod store;
pub mod token;
pub mod web;
pub mod ws;

// The document's and the wire's crates, for clients of this one (tests, tools).
pub use loro;
pub use loro_protocol;
pub use tokio_tungstenite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by kind: each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or document is not valid (422).
    #[error("{0}")]
    Invalid(String),
    /// No such project, version or run (404).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error("sign-in failed: {0}")]
    Oidc(#[from] oidc::OidcError),
    /// The database (500).
    #[error("control plane store: {0}")]
    Store(String),
    /// The control plane could not be reached or answered an error (CLI side).
    #[error("{0}")]
    Remote(String),
    #[error("{0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// `hakiri control serve`'s settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where control.db lives.
    pub data: PathBuf,
    /// The URL people and nodes reach this server at (the OIDC redirect is built on it);
    /// default `http://` and the bound address.
    pub public_url: Option<String>,
    /// OIDC; without it only tokens minted by `hakiri control token` sign in.
    pub oidc: Option<OidcConfig>,
    /// How long a signed-in user's token lasts.
    pub token_ttl: Duration,
    /// A node that has not heartbeated for this long is gone: its runs are reassigned.
    pub node_timeout: Duration,
    /// How often the dispatcher looks for due runs.
    pub dispatch_every: Duration,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
}

/// The server's shared state.
pub struct App {
    pub config: Config,
    pub store: store::Store,
    pub keys: token::Keys,
    pub rooms: room::Rooms,
    pub oidc: Option<oidc::Oidc>,
    pub queue: dispatch::Queue,
    pub queries: dispatch::Queries,
}

impl App {
    pub async fn open(config: Config) -> Result<Arc<App>> {
        let store = store::Store::open(&config.data)?;
        let key = store.root_key(|| token::Keys::generate().to_private_bytes())?;
        let keys = token::Keys::from_private_bytes(&key)?;
        let oidc = match &config.oidc {
            None => None,
            Some(o) => Some(
                oidc::Oidc::discover(
                    &o.issuer,
                    &o.client_id,
                    o.client_secret.as_deref(),
                    &format!(
                        "{}/auth/callback",
                        config
                            .public_url
                            .as_deref()
                            .unwrap_or_default()
                            .trim_end_matches('/')
                    ),
                )
                .await?,
            ),
        };
        Ok(Arc::new(App {
            config,
            store,
            keys,
            rooms: room::Rooms::default(),
            oidc,
            queue: dispatch::Queue::default(),
            queries: dispatch::Queries::default(),
        }))
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut config = config;
    let listen = config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{local}"));
    }
    let app = App::open(config).await?;
    // The tests and scripts read this line for the port.
    println!("hakiri control listening on http://{local}");
    let dispatcher = tokio::spawn(dispatch::run(app.clone()));
    let result = axum::serve(listener, http::router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Internal(format!("server: {e}")));
    dispatcher.abort();
    result
}
