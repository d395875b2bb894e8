//! Cancelling a running query: the client's CancelRequest (psql's Ctrl-C, psycopg's
//! `cancel()`, a BI tool's stop button).
//!
//! pgwire aborts a query only while the handler builds its response, but DataFusion does
//! its work while the rows stream out, after that. So every response's row stream watches
//! a token of its connection's, which a cancel request with the right secret key fires;
//! the stream then ends with SQLSTATE 57014 and dropping it stops DataFusion's tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::results::{Response, SendableRowStream};
use datafusion_postgres::pgwire::api::{ClientInfo, ConnectionManager};
use datafusion_postgres::pgwire::error::PgWireError;
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::startup::SecretKey;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The token of a connection's current query; kept in the connection's session extensions,
/// so it goes away with the connection.
#[derive(Default)]
struct Running(Mutex<CancellationToken>);

/// A connection's process id and secret key, as the client was given them at startup (the
/// process id alone is not unique: pgwire numbers each connection's startup handler's).
type ConnectionKey = (i32, Vec<u8>);

fn key(pid: i32, secret: &SecretKey) -> ConnectionKey {
    (pid, secret.to_bytes().to_vec())
}

/// Every connection's running query.
pub struct Cancels {
    manager: Arc<ConnectionManager>,
    by_connection: Mutex<HashMap<ConnectionKey, Weak<Running>>>,
}

impl Cancels {
    pub fn new(manager: Arc<ConnectionManager>) -> Self {
        Cancels {
            manager,
            by_connection: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh token for the query `client` is starting.
    fn start<C: ClientInfo + ?Sized>(&self, client: &C) -> CancellationToken {
        let extensions = client.session_extensions();
        let running = match extensions.get::<Running>() {
            Some(running) => running,
            None => {
                let running = extensions.get_or_insert_with(Running::default);
                let (pid, secret) = client.pid_and_secret_key();
                let mut by_connection =
                    self.by_connection.lock().unwrap_or_else(|e| e.into_inner());
                by_connection.retain(|_, r| r.strong_count() > 0);
                by_connection.insert(key(pid, &secret), Arc::downgrade(&running));
                running
            }
        };
        let token = CancellationToken::new();
        *running.0.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        token
    }

    /// Ties the row streams of `responses` to a fresh token of `client`'s.
    pub fn watch<C: ClientInfo + ?Sized>(&self, client: &C, responses: &mut [Response]) {
        let token = self.start(client);
        for response in responses {
            if let Response::Query(query) = response {
                let rows =
                    std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
                query.data_rows = until_cancelled(rows, token.clone());
            }
        }
    }
}

fn canceled() -> PgWireError {
    crate::sql_error("57014", "canceling statement due to user request")
}

/// The rows of `rows` until `token` fires, then the cancel error, then nothing.
fn until_cancelled(rows: SendableRowStream, token: CancellationToken) -> SendableRowStream {
    Box::pin(futures::stream::unfold(
        Some((rows, token)),
        |state| async move {
            let (mut rows, token) = state?;
            tokio::select! {
                biased;
                _ = token.cancelled() => Some((Err(canceled()), None)),
                item = rows.next() => item.map(|row| (row, Some((rows, token)))),
            }
        },
    ))
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        // The manager checks the secret key, and aborts a response still being built.
        if !self.manager.cancel(request.pid, &request.secret_key).await {
            return;
        }
        let running = self
            .by_connection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key(request.pid, &request.secret_key))
            .and_then(Weak::upgrade);
        if let Some(running) = running {
            running.0.lock().unwrap_or_else(|e| e.into_inner()).cancel();
        }
    }
}
