//! The HTTP connector's options, declared as data and parsed into [`HttpTableOptions`].

use std::collections::BTreeMap;
use std::time::Duration;

use hakiri_core::ports::{OptionSpec, validate_options};
use hakiri_core::sources::resolve_value;

use crate::error::{Error, Result};

const fn opt(name: &'static str, secret: bool, help: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        required: false,
        secret,
        help,
    }
}

/// Options a table accepts; on a source they are defaults for all of its tables.
pub const TABLE_OPTIONS: &[OptionSpec] = &[
    opt(
        "path",
        false,
        "path appended to base_url (default: /<table>)",
    ),
    opt(
        "url",
        false,
        "full URL of the endpoint; overrides base_url and path",
    ),
    opt(
        "records",
        false,
        "dot path to the array of records in the body (default: the body itself; an object is one row)",
    ),
    opt(
        "header.*",
        true,
        "an HTTP header, e.g. header.Authorization 'env:API_TOKEN'",
    ),
    opt(
        "query.*",
        false,
        "a query parameter sent with every request",
    ),
    opt(
        "pagination",
        false,
        "none | next_url | link_header | offset | page | cursor (default none)",
    ),
    opt(
        "next_url_path",
        false,
        "next_url: dot path of the next page's URL in the body (default next)",
    ),
    opt(
        "offset_param",
        false,
        "offset: query parameter for the offset (default offset)",
    ),
    opt(
        "limit_param",
        false,
        "offset: query parameter for the page size (default limit)",
    ),
    opt(
        "page_size",
        false,
        "offset/page: records per page (default 100)",
    ),
    opt(
        "page_param",
        false,
        "page: query parameter for the page number (default page)",
    ),
    opt(
        "page_size_param",
        false,
        "page: query parameter for the page size (not sent if unset)",
    ),
    opt(
        "start_page",
        false,
        "page: number of the first page (default 1)",
    ),
    opt(
        "cursor_path",
        false,
        "cursor: dot path of the next-page token in the body",
    ),
    opt(
        "cursor_param",
        false,
        "cursor: query parameter the token is sent in",
    ),
    opt(
        "has_more_path",
        false,
        "stop rule: dot path of a boolean; false stops",
    ),
    opt(
        "total_path",
        false,
        "stop rule: dot path of the total record count; reaching it stops",
    ),
    opt("max_pages", false, "stop rule: stop after this many pages"),
    opt(
        "schema",
        false,
        "declared schema, e.g. 'id bigint, name text, tags json' (default: inferred)",
    ),
    opt(
        "infer_pages",
        false,
        "pages read to infer the schema (default 1)",
    ),
    opt(
        "max_retries",
        false,
        "retries on 5xx, 429 and timeouts (default 5)",
    ),
    opt(
        "retry_backoff_ms",
        false,
        "first retry delay, doubled each retry (default 250)",
    ),
    opt("timeout_ms", false, "request timeout (default 30000)"),
    opt(
        "max_in_flight",
        false,
        "offset/page: requests for the next pages running at once (default 1)",
    ),
    opt(
        "requests_per_second",
        false,
        "most requests per second to this source, shared by its tables (default: no limit)",
    ),
    opt(
        "filter.*",
        false,
        "push a filter into a query parameter: filter.<column> '<param>' sends col > v, >= v or = v as <param>=v; filter.<column>.format 'rfc3339|unix|unix_ms|date|<strftime>' formats a timestamp value; filter.<column>.exact 'true' says the API applies the predicate exactly (reported Exact, not filtered again)",
    ),
];

/// Options only a source has.
pub const SOURCE_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "base_url",
        required: true,
        secret: false,
        help: "the API's base URL, e.g. 'https://api.example.com' or '${API_URL:-https://api.example.com}'",
    },
    opt(
        "tables.*",
        false,
        "tables.<name>.<option>: declares table <name> with a table option",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    None,
    NextUrl {
        path: String,
    },
    LinkHeader,
    Offset {
        offset_param: String,
        limit_param: String,
        page_size: u64,
    },
    Page {
        page_param: String,
        size_param: Option<String>,
        page_size: u64,
        start: u64,
    },
    Cursor {
        path: String,
        param: String,
    },
}

impl Pagination {
    pub fn name(&self) -> &'static str {
        match self {
            Pagination::None => "none",
            Pagination::NextUrl { .. } => "next_url",
            Pagination::LinkHeader => "link_header",
            Pagination::Offset { .. } => "offset",
            Pagination::Page { .. } => "page",
            Pagination::Cursor { .. } => "cursor",
        }
    }
}

/// A table's resolved options (secrets resolved, defaults applied).
#[derive(Debug, Clone)]
pub struct HttpTableOptions {
    pub url: String,
    pub records: Option<String>,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub pagination: Pagination,
    pub has_more_path: Option<String>,
    pub total_path: Option<String>,
    pub max_pages: Option<u64>,
    pub schema: Option<String>,
    pub infer_pages: u64,
    pub max_retries: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    /// column -> how a filter on it becomes a query parameter.
    pub filters: BTreeMap<String, FilterParam>,
    /// Paces requests to the source (`requests_per_second`), shared by its tables.
    pub limiter: Option<std::sync::Arc<RateLimiter>>,
    /// Offset and page styles: page requests running at once.
    pub max_in_flight: u64,
}

/// Spaces requests at least `interval` apart: a token bucket holding one token.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    /// The limiter of `key` (a source) at `per_second`, one per process so every table and
    /// scan of the source shares it.
    pub fn shared(key: &str, per_second: f64) -> std::sync::Arc<RateLimiter> {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex, OnceLock};
        static ALL: OnceLock<Mutex<HashMap<String, Arc<RateLimiter>>>> = OnceLock::new();
        let interval = Duration::from_secs_f64(1.0 / per_second);
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let entry = all.entry(format!("{key}@{per_second}")).or_insert_with(|| {
            Arc::new(RateLimiter {
                interval,
                next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            })
        });
        entry.clone()
    }

    /// Waits for the next slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// How a filter on a column is sent as a query parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterParam {
    pub param: String,
    /// rfc3339 (default), unix, unix_ms, date, or a strftime pattern, for timestamps.
    pub format: Option<String>,
    /// The API applies the predicate exactly as written (DataFusion need not filter again).
    pub exact: bool,
}

fn num(key: &str, v: Option<&String>, default: u64) -> Result<u64> {
    match v {
        None => Ok(default),
        Some(s) => s.trim().parse().map_err(|_| {
            Error::InvalidInput(format!("option '{key}' must be a whole number, got '{s}'"))
        }),
    }
}

/// What a rate limit is shared by: the source's base URL (all its tables), else the table.
fn limiter_key(table: &str, base_url: Option<&str>, raw: &BTreeMap<String, String>) -> String {
    base_url
        .map(str::to_string)
        .or_else(|| raw.get("url").cloned())
        .unwrap_or_else(|| table.to_string())
}

/// Checks raw option keys of a table.
pub fn validate_table_keys<'a>(
    what: &str,
    keys: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    validate_options(what, TABLE_OPTIONS, keys)
}

impl HttpTableOptions {
    /// Resolves a table's options. `base_url` is used with `path` unless `url` is given.
    pub fn parse(
        table: &str,
        base_url: Option<&str>,
        raw: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let get = |k: &str| -> Result<Option<String>> {
            raw.get(k).map(|v| resolve_value(k, v)).transpose()
        };
        let url = match get("url")? {
            Some(u) => u,
            None => {
                let base = base_url.ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "HTTP table '{table}' needs a base_url on its source or a url option"
                    ))
                })?;
                let path = get("path")?.unwrap_or_else(|| format!("/{table}"));
                format!(
                    "{}/{}",
                    base.trim_end_matches('/'),
                    path.trim_start_matches('/')
                )
            }
        };
        url::Url::parse(&url).map_err(|e| {
            Error::InvalidInput(format!(
                "HTTP table '{table}': '{url}' is not a valid URL: {e}"
            ))
        })?;
        let mut headers = Vec::new();
        let mut query = Vec::new();
        let mut filters = BTreeMap::new();
        for (k, v) in raw {
            if let Some(h) = k.strip_prefix("header.") {
                headers.push((h.to_string(), resolve_value(k, v)?));
            } else if let Some(q) = k.strip_prefix("query.") {
                query.push((q.to_string(), resolve_value(k, v)?));
            } else if let Some(c) = k.strip_prefix("filter.") {
                let (col, attr) = match c.rsplit_once('.') {
                    Some((col, a @ ("format" | "exact"))) => (col, Some(a)),
                    _ => (c, None),
                };
                let entry: &mut FilterParam = filters.entry(col.to_string()).or_default();
                match attr {
                    None => entry.param = v.clone(),
                    Some("format") => entry.format = Some(v.clone()),
                    _ => {
                        entry.exact = crate::parse_flag(k, v)?;
                    }
                }
            }
        }
        if let Some((col, _)) = filters.iter().find(|(_, f)| f.param.is_empty()) {
            return Err(Error::InvalidInput(format!(
                "HTTP table '{table}': filter.{col}.format or .exact is set but filter.{col} (the query parameter's name) is not"
            )));
        }
        let page_size = num("page_size", raw.get("page_size"), 100)?;
        let style = get("pagination")?.unwrap_or_else(|| "none".into());
        let pagination = match style.as_str() {
            "none" => Pagination::None,
            "next_url" => Pagination::NextUrl { path: get("next_url_path")?.unwrap_or_else(|| "next".into()) },
            "link_header" => Pagination::LinkHeader,
            "offset" => Pagination::Offset {
                offset_param: get("offset_param")?.unwrap_or_else(|| "offset".into()),
                limit_param: get("limit_param")?.unwrap_or_else(|| "limit".into()),
                page_size,
            },
            "page" => Pagination::Page {
                page_param: get("page_param")?.unwrap_or_else(|| "page".into()),
                size_param: get("page_size_param")?,
                page_size,
                start: num("start_page", raw.get("start_page"), 1)?,
            },
            "cursor" => Pagination::Cursor {
                path: get("cursor_path")?.ok_or_else(|| {
                    Error::InvalidInput(format!("HTTP table '{table}': pagination 'cursor' needs cursor_path (where the next token is in the body)"))
                })?,
                param: get("cursor_param")?.ok_or_else(|| {
                    Error::InvalidInput(format!("HTTP table '{table}': pagination 'cursor' needs cursor_param (the query parameter the token is sent in)"))
                })?,
            },
            other => {
                return Err(Error::InvalidInput(format!(
                    "HTTP table '{table}': unknown pagination '{other}': valid styles are none, next_url, link_header, offset, page, cursor"
                )));
            }
        };
        Ok(HttpTableOptions {
            url,
            records: get("records")?.filter(|s| !s.is_empty()),
            headers,
            query,
            pagination,
            has_more_path: get("has_more_path")?,
            total_path: get("total_path")?,
            max_pages: raw
                .get("max_pages")
                .map(|_| num("max_pages", raw.get("max_pages"), 0))
                .transpose()?,
            schema: get("schema")?,
            infer_pages: num("infer_pages", raw.get("infer_pages"), 1)?.max(1),
            max_retries: num("max_retries", raw.get("max_retries"), 5)? as u32,
            backoff: Duration::from_millis(num(
                "retry_backoff_ms",
                raw.get("retry_backoff_ms"),
                250,
            )?),
            timeout: Duration::from_millis(num("timeout_ms", raw.get("timeout_ms"), 30_000)?),
            filters,
            max_in_flight: num("max_in_flight", raw.get("max_in_flight"), 1)?.clamp(1, 64),
            limiter: match get("requests_per_second")? {
                None => None,
                Some(v) => {
                    let rps: f64 = v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|r: &f64| *r > 0.0)
                        .ok_or_else(|| {
                            Error::InvalidInput(format!(
                                "option 'requests_per_second' must be a positive number, got '{v}'"
                            ))
                        })?;
                    Some(RateLimiter::shared(&limiter_key(table, base_url, raw), rps))
                }
            },
        })
    }
}
