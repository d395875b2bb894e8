//! One HTTP GET with retries: 5xx and timeouts back off exponentially, 429 and 503 honour
//! `Retry-After`; a rate limit (403 or 429 with `X-RateLimit-Remaining: 0`, GitHub's primary
//! limit, or `Retry-After`, its secondary one) is waited out until `X-RateLimit-Reset`;
//! other 4xx fail at once with a hint.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Client, StatusCode};

use super::options::HttpTableOptions;
use crate::error::{Error, Result};

/// The longest `Retry-After` honoured; a longer one fails the request rather than stall.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A fetched page.
pub struct Page {
    pub body: Vec<u8>,
    pub headers: HeaderMap,
    /// `304 Not Modified` to a conditional request: the body is empty.
    pub not_modified: bool,
    /// HTTP requests this page took, retries included.
    pub requests: u64,
}

pub fn build_client(opts: &HttpTableOptions) -> Result<Client> {
    Client::builder()
        .timeout(opts.timeout)
        .user_agent(concat!("hakiri/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Internal(format!("building HTTP client: {e}")))
}

/// How long a response says to wait before the next request: `Retry-After`, or, when
/// `X-RateLimit-Remaining` is 0, until `X-RateLimit-Reset` (epoch seconds).
fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    if let Some(after) = retry_after(headers) {
        return Some(after);
    }
    let header = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
    if header("x-ratelimit-remaining")? != 0 {
        return None;
    }
    let reset = header("x-ratelimit-reset")?;
    let secs = (reset - chrono::Utc::now().timestamp()).max(0) as u64;
    // One extra second: the reset is whole seconds and clocks differ.
    Some(Duration::from_secs(secs + 1))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64;
    Some(Duration::from_secs(secs))
}

/// What to do after one request that did not give a page.
enum Retry {
    /// Send it again after the backoff (or `wait`), counting an attempt; `why` says why,
    /// with the response's status, or the transport error, kept for the final error.
    After {
        wait: Option<Duration>,
        why: String,
        status: Option<StatusCode>,
        source: Option<reqwest::Error>,
    },
    /// A rate limit was waited out: send it again, not counted as an attempt.
    Now,
}

/// GETs `url` with the table's headers, retrying what can succeed later: 5xx, 429, 503,
/// timeouts, failed connections and bodies cut short or stalled (a GET is safe to send
/// again). With `if_none_match` the request is conditional and a 304 comes back as
/// `not_modified`.
pub async fn get(
    client: &Client,
    url: &url::Url,
    opts: &HttpTableOptions,
    if_none_match: Option<&str>,
) -> Result<Page> {
    use tracing::Instrument;
    // One span per page fetched (its retries inside), a child of the run's part.
    // Without the query and credentials: API keys and signed tokens travel there, and
    // spans go to a collector.
    let span = tracing::info_span!(
        "http.request",
        http.request.method = "GET",
        server.address = url.host_str().unwrap_or(""),
        url.path = url.path(),
        otel.kind = "client"
    );
    get_page(client, url, opts, if_none_match)
        .instrument(span)
        .await
}

async fn get_page(
    client: &Client,
    url: &url::Url,
    opts: &HttpTableOptions,
    if_none_match: Option<&str>,
) -> Result<Page> {
    let mut attempt: u32 = 0;
    let mut rate_limited: u32 = 0;
    let mut requests: u64 = 0;
    loop {
        if let Some(limiter) = &opts.limiter {
            limiter.acquire().await;
        }
        let mut req = client.get(url.clone());
        for (k, v) in &opts.headers {
            req = req.header(k, v);
        }
        if let Some(etag) = if_none_match {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        requests += 1;
        let retry = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                if status == StatusCode::NOT_MODIFIED && if_none_match.is_some() {
                    return Ok(Page {
                        body: Vec::new(),
                        headers: resp.headers().clone(),
                        not_modified: true,
                        requests,
                    });
                }
                if !status.is_success() {
                    retry_status(url, opts, resp, &mut rate_limited).await?
                } else {
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) => {
                            // The last request of the window: wait for the reset before the
                            // next (after the body: the timeout covers the body's reading).
                            if let Some(wait) =
                                rate_limit_wait(&headers).filter(|w| *w <= MAX_RETRY_AFTER)
                                && headers.get("x-ratelimit-remaining").is_some()
                            {
                                tracing::warn!(%url, ?wait, "rate limit exhausted; waiting for the reset");
                                tokio::time::sleep(wait).await;
                            }
                            return Ok(Page {
                                body: body.to_vec(),
                                headers,
                                not_modified: false,
                                requests,
                            });
                        }
                        // The timeout covers the whole body: a stalled body times out.
                        Err(e) if e.is_timeout() => Retry::After {
                            wait: None,
                            why: format!(
                                "reading the response body timed out after {:?}",
                                opts.timeout
                            ),
                            status: Some(status),
                            source: Some(e),
                        },
                        Err(e) => Retry::After {
                            wait: None,
                            why: format!("the response body was cut short: {}", error_chain(&e)),
                            status: Some(status),
                            source: Some(e),
                        },
                    }
                }
            }
            Err(e) if e.is_timeout() => Retry::After {
                wait: None,
                why: format!("timed out after {:?}", opts.timeout),
                status: None,
                source: Some(e),
            },
            Err(e) if e.is_connect() || e.is_request() => Retry::After {
                wait: None,
                why: error_chain(&e),
                status: None,
                source: Some(e),
            },
            Err(e) => {
                let message = format!("GET {url} failed: {}", error_chain(&e));
                return Err(http_error(url, None, message, Some(e)));
            }
        };
        let Retry::After {
            wait,
            why,
            status,
            source,
        } = retry
        else {
            continue;
        };
        if attempt >= opts.max_retries {
            let message = format!(
                "GET {url} failed after {} attempts: {why}; the API may be down: run again later or raise max_retries",
                attempt + 1
            );
            return Err(http_error(url, status, message, source));
        }
        let backoff = opts
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(Duration::from_secs(30));
        let delay = wait.unwrap_or(backoff);
        tracing::warn!(%url, attempt, ?delay, "retrying after {why}");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// A failed request as [`Error::Http`]: the status if the server answered, the transport
/// error as the source.
fn http_error(
    url: &url::Url,
    status: Option<StatusCode>,
    message: String,
    source: Option<reqwest::Error>,
) -> Error {
    Error::Http {
        url: url.to_string(),
        status: status.map(|s| s.as_u16()),
        message,
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

/// An error with its sources ("error sending request: connection reset by peer"):
/// reqwest's own message names only the outermost one.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let s = inner.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = inner.source();
    }
    text
}

/// A response that is neither a success nor a 304: whether and when to retry it, or the
/// error that ends the request (other 4xx, limits longer than Hakiri waits).
async fn retry_status(
    url: &url::Url,
    opts: &HttpTableOptions,
    resp: reqwest::Response,
    rate_limited: &mut u32,
) -> Result<Retry> {
    let status = resp.status();
    let after = retry_after(resp.headers());
    let limit_wait = rate_limit_wait(resp.headers());
    let text = resp.text().await.unwrap_or_default();
    let snippet: String = text.chars().take(200).collect();
    let limited = matches!(status.as_u16(), 403 | 429) && limit_wait.is_some();
    if limited {
        let wait = limit_wait.unwrap_or_default();
        if wait > MAX_RETRY_AFTER || *rate_limited >= opts.max_retries.max(3) {
            let message = format!(
                "GET {url} is rate limited ({status}) for another {}s; run again after the limit resets",
                wait.as_secs()
            );
            return Err(http_error(url, Some(status), message, None));
        }
        tracing::warn!(%url, ?wait, "rate limited ({status}); waiting");
        *rate_limited += 1;
        tokio::time::sleep(wait).await;
        return Ok(Retry::Now);
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        if let Some(a) = after.filter(|a| *a > MAX_RETRY_AFTER) {
            let message = format!(
                "GET {url} returned {status} with Retry-After {}s, longer than the {}s Hakiri waits; run again later",
                a.as_secs(),
                MAX_RETRY_AFTER.as_secs()
            );
            return Err(http_error(url, Some(status), message, None));
        }
        return Ok(Retry::After {
            wait: after,
            why: format!("{status}"),
            status: Some(status),
            source: None,
        });
    }
    if status.is_server_error() {
        return Ok(Retry::After {
            wait: None,
            why: format!("{status}: {snippet}"),
            status: Some(status),
            source: None,
        });
    }
    let hint = match status.as_u16() {
        401 | 403 => {
            "check the credentials: the source's token option (github) or its header options (http)"
        }
        404 => "check the base_url and path options",
        _ => "check the request options (query.*, header.*)",
    };
    let message = format!("GET {url} returned {status}: {snippet}; {hint}");
    Err(http_error(url, Some(status), message, None))
}
