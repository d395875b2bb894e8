//! The host side of a call: the store's state and the imports a guest may call
//! (`http-request` within the grant, `log` within its rate, `now`, `env` within the grant).

use std::sync::Arc;
use std::time::Instant;

use crate::bindings::hakiri::connector::host::{self, Level, Request, Response};
use crate::bindings::hakiri::connector::types::{self, Error as GuestError};
use crate::error::WasmError;
use crate::grant::Grant;
use crate::limits::Limits;

/// What one call's store holds.
pub(crate) struct State {
    pub source_name: String,
    pub connector: String,
    pub grant: Arc<Grant>,
    pub http: reqwest::Client,
    pub limits: Limits,
    pub memory: MemoryCap,
    pub log: LogBudget,
    /// A request the host refused: the call fails with it even if the guest went on.
    pub denied: Option<WasmError>,
}

/// The memory cap, remembering that it refused a growth so the error can name it.
pub(crate) struct MemoryCap {
    pub max: usize,
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            wasmtime::bail!("the memory cap of {} bytes was reached", self.max);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table element is a pointer: a million is 8 MiB, far more than a connector needs.
        Ok(desired <= 1_000_000)
    }
}

/// The log rate: bytes per second, the excess dropped and counted.
pub(crate) struct LogBudget {
    window: Instant,
    used: usize,
    pub dropped_lines: u64,
    pub dropped_bytes: u64,
}

impl LogBudget {
    pub fn new() -> Self {
        LogBudget {
            window: Instant::now(),
            used: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    /// Whether a line of `len` bytes fits this second's budget of `per_sec`.
    fn admit(&mut self, len: usize, per_sec: usize) -> bool {
        if self.window.elapsed().as_secs() >= 1 {
            self.window = Instant::now();
            self.used = 0;
        }
        if self.used + len > per_sec {
            self.dropped_lines += 1;
            self.dropped_bytes += len as u64;
            return false;
        }
        self.used += len;
        true
    }
}

impl types::Host for State {}

impl host::Host for State {
    async fn http_request(
        &mut self,
        req: Request,
    ) -> wasmtime::Result<Result<Response, GuestError>> {
        let url = match url::Url::parse(&req.url) {
            Ok(u) => u,
            Err(e) => {
                return Ok(Err(GuestError::InvalidConfig(format!(
                    "'{}' is not a URL: {e}",
                    req.url
                ))));
            }
        };
        if let Err(reached) = self.grant.allows_url(&url) {
            let denied = WasmError::CapabilityDenied {
                source_name: self.source_name.clone(),
                connector: self.connector.clone(),
                asked: "tried to reach",
                what: "host",
                name: reached,
                option: "allow_hosts",
            };
            let msg = denied.to_string();
            self.denied.get_or_insert(denied);
            return Ok(Err(GuestError::CapabilityDenied(msg)));
        }
        let method = match reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return Ok(Err(GuestError::InvalidConfig(format!(
                    "'{}' is not an HTTP method",
                    req.method
                ))));
            }
        };
        let mut builder = self.http.request(method, url);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let resp = match builder.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Err(GuestError::Transient(transport(&e)))),
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        match resp.bytes().await {
            Ok(body) => Ok(Ok(Response {
                status,
                headers,
                body: body.to_vec(),
            })),
            Err(e) => Ok(Err(GuestError::Transient(transport(&e)))),
        }
    }

    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.log.admit(message.len(), self.limits.log_bytes_per_sec) {
            return Ok(());
        }
        let (source, connector) = (&self.source_name, &self.connector);
        match level {
            Level::Trace => tracing::trace!(source, connector, "{message}"),
            Level::Debug => tracing::debug!(source, connector, "{message}"),
            Level::Info => tracing::info!(source, connector, "{message}"),
            Level::Warn => tracing::warn!(source, connector, "{message}"),
            Level::Error => tracing::error!(source, connector, "{message}"),
        }
        Ok(())
    }

    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64))
    }

    fn env(&mut self, name: String) -> wasmtime::Result<Result<Option<String>, GuestError>> {
        match self.grant.env.get(&name) {
            Some(v) => Ok(Ok(v.clone())),
            None => {
                let denied = WasmError::CapabilityDenied {
                    source_name: self.source_name.clone(),
                    connector: self.connector.clone(),
                    asked: "tried to read",
                    what: "environment variable",
                    name,
                    option: "allow_env",
                };
                let msg = denied.to_string();
                self.denied.get_or_insert(denied);
                Ok(Err(GuestError::CapabilityDenied(msg)))
            }
        }
    }
}

/// A transport failure in words, with its causes.
fn transport(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}
