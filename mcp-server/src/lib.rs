//! Hakiri's MCP server: the agent operating surface. Thirteen tools (`tools.rs`) over one
//! engine, served on stdio (`hakiri mcp`) or streamable HTTP (`hakiri serve --mcp-listen`).
//!
//! The handler implements rmcp's `ServerHandler` by hand rather than with its `#[tool]`
//! macros: the tool names carry dots (`context.query`), and one table of definitions plus one
//! dispatch `match` reads more plainly than thirteen annotated methods.

mod query;
mod runs;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

use hakiri_engine::Engine;
use hakiri_engine::sources::resolve_value;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, Content, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerInfo,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use serde_json::Value;

pub use tools::definitions;

/// `context.query`'s read-only SQL for other front ends (the control plane's query console
/// runs on a node through it): one statement that only reads, at most `limit` rows, as
/// `{columns, rows, row_count, truncated}`; refusals say what to do instead.
pub async fn read_only_query(
    engine: &hakiri_engine::Engine,
    sql: &str,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<serde_json::Value, String> {
    query::read_only(engine, sql, limit, timeout)
        .await
        .map_err(|e| e.message)
}

/// The environment variable holding the bearer token HTTP clients must send.
pub const TOKEN_VAR: &str = "HAKIRI_MCP_TOKEN";

/// One MCP server over an engine; clones share the engine and the runs it started.
#[derive(Clone)]
pub struct HakiriMcp {
    engine: Arc<Engine>,
    runs: Arc<runs::Runs>,
}

impl HakiriMcp {
    pub fn new(engine: Arc<Engine>) -> Self {
        HakiriMcp {
            engine,
            runs: Arc::new(runs::Runs::default()),
        }
    }

    /// Calls a tool; errors become tool errors (`isError`) with the message a person needs.
    pub async fn call(&self, tool: &str, arguments: rmcp::model::JsonObject) -> CallToolResult {
        let secrets = self.secrets();
        match tools::call(&self.engine, &self.runs, tool, arguments).await {
            Ok((mut value, text)) => {
                redact_value(&mut value, &secrets);
                let mut result = CallToolResult::structured(value);
                result.content = vec![Content::text(redact(&text, &secrets))];
                result
            }
            Err(e) => {
                let message = redact(&e.message, &secrets);
                let category = e.category.as_str();
                let mut result =
                    CallToolResult::error(vec![Content::text(format!("{message} [{category}]"))]);
                result.structured_content = Some(serde_json::json!({
                    "error": {"category": category, "message": message}
                }));
                result
            }
        }
    }

    /// Values of the project's secrets, so no tool result can carry one (an error quoting a
    /// connection string, a header echoed by an API): secret references resolved, and
    /// literal values of options named like secrets.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        for source in self.engine.sources() {
            for (option, value) in &source.options {
                let lower = option.to_lowercase();
                let secret_named = ["token", "password", "secret", "key", "credential"]
                    .iter()
                    .any(|s| lower.contains(s));
                if let Ok(resolved) = resolve_value(option, value)
                    && (resolved != *value || secret_named)
                {
                    secrets.push(resolved);
                }
            }
        }
        secrets.retain(|s| s.len() >= 4);
        // Longest first, so a secret containing another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }
}

fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

fn redact_value(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(s) => *s = redact(s, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| redact_value(v, secrets)),
        _ => {}
    }
}

impl ServerHandler for HakiriMcp {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("hakiri", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Hakiri ingests data from sources into a local context store. Discover with \
                 catalog.list_connectors, source.list_tables, context.tables and \
                 context.schema; answer questions with context.query (read-only SQL; \
                 hakiri.runs and hakiri.events hold the ingestion history, and every context \
                 row has _hakiri_loaded_at); load data with pipeline.run and follow it with \
                 run.tail.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            tools::definitions().to_vec(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if !tools::definitions().iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                tools::unknown_tool(&request.name),
                None,
            ));
        }
        Ok(self
            .call(&request.name, request.arguments.unwrap_or_default())
            .await)
    }
}

/// Serves MCP on stdin/stdout until the client closes them.
pub async fn serve_stdio(engine: Arc<Engine>) -> Result<(), String> {
    let service = HakiriMcp::new(engine)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP on stdio: {e}"))?;
    service
        .waiting()
        .await
        .map_err(|e| format!("MCP on stdio: {e}"))?;
    Ok(())
}

/// The largest MCP request body accepted: tool calls are small JSON-RPC messages.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// A bound streamable-HTTP endpoint (`/mcp`), served by [`HttpServer::serve`].
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

impl HttpServer {
    /// Binds `listen`. A loopback address needs no token unless `token` is set; any other
    /// address requires one, so the data is never open to the network by accident.
    pub async fn bind(
        engine: Arc<Engine>,
        listen: &str,
        token: Option<String>,
    ) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            format!("cannot listen on {listen} for MCP: {e} (choose another with --mcp-listen)")
        })?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let loopback = addr.ip().is_loopback();
        if !loopback && token.is_none() {
            return Err(format!(
                "MCP on {addr} would be reachable from other machines without a token: set \
                 {TOKEN_VAR} (clients then send 'Authorization: Bearer <token>'), or listen on \
                 127.0.0.1"
            ));
        }
        let mut config = StreamableHttpServerConfig::default();
        if !loopback {
            // The token guards the endpoint; the Host check is for loopback servers.
            config = config.disable_allowed_hosts();
        }
        let handler = HakiriMcp::new(engine);
        let service = StreamableHttpService::new(
            move || Ok(handler.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        // rmcp reads a request's whole body: a limit keeps a hostile client from making the
        // server buffer gigabytes (413 Payload Too Large).
        let mut router = axum::Router::new().nest_service("/mcp", service).layer(
            tower_http::limit::RequestBodyLimitLayer::new(MAX_REQUEST_BYTES),
        );
        if let Some(token) = token {
            let expected = format!("Bearer {token}");
            router = router.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let ok = request
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        == Some(expected.as_str());
                    async move {
                        if ok {
                            next.run(request).await
                        } else {
                            axum::response::IntoResponse::into_response((
                                axum::http::StatusCode::UNAUTHORIZED,
                                "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the token in HAKIRI_MCP_TOKEN\n",
                            ))
                        }
                    }
                },
            ));
        }
        Ok(HttpServer { listener, router })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, String> {
        self.listener.local_addr().map_err(|e| e.to_string())
    }

    /// Serves until the future is dropped.
    pub async fn serve(self) -> Result<(), String> {
        axum::serve(self.listener, self.router)
            .await
            .map_err(|e| format!("MCP over HTTP: {e}"))
    }
}
