//! Pagination: which URL to fetch next and when to stop.
//!
//! Stop rules, checked after each page in this order:
//! 1. a request that still fails after its retries fails the scan;
//! 2. a page with no records stops;
//! 3. `has_more_path` present and false stops;
//! 4. `total_path` present and the records read so far reach it stops;
//! 5. the style finds no next page: no next URL in the body (`next_url`), no `rel="next"`
//!    in the `Link` header (`link_header`), a short page with fewer than `page_size` records
//!    (`offset`, `page`), no token in the body (`cursor`); `none` always stops here;
//! 6. `max_pages` pages read stops.
//!
//! Resume tokens (for `CURSOR TOKEN` pipelines): after each page the pager knows the token
//! that fetches the page after it: the body's token (`cursor`), the next URL (`next_url`,
//! `link_header`), or the next offset or page number (`offset`, `page`). When the source
//! gives none (the last page of `next_url`, `link_header`, `cursor`), the token stays the
//! one that fetched the last page, so the next run reads that page again: use MODE MERGE
//! with those styles, or an API whose last page still hands out a token.

use std::ops::Range;
use std::sync::Arc;

use reqwest::Client;
use reqwest::header::{HeaderMap, LINK};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use super::client;
use super::options::{HttpTableOptions, Pagination};
use crate::error::{Error, Result, upstream};

/// One page's records and its size on the wire. The records are only located in the body
/// (checked to be valid JSON, not built as values): the common page, whose records fit the
/// table's schema, decodes from this text straight into Arrow (`json::decode_fitting`).
pub struct PageRecords {
    body: String,
    /// Where each record lies in `body`.
    spans: Vec<Range<usize>>,
    pub bytes: u64,
    /// HTTP requests the page took, retries included.
    pub requests: u64,
}

impl PageRecords {
    /// Each record's JSON text.
    pub fn texts(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.spans.iter().map(|r| &self.body[r.clone()])
    }

    /// The records as values (schema inference, drift checks).
    pub fn values(&self) -> Result<Vec<Value>> {
        self.texts()
            .map(|t| {
                serde_json::from_str(t)
                    .map_err(|e| Error::Internal(format!("re-reading a located record: {e}")))
            })
            .collect()
    }
}

/// A JSON object's members in order, values unparsed.
struct RawMembers<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(RawMembers(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses `raw` into a value except the part at `path`, which is left null and returned as
/// text: the records of a page are located, not built (`None`: the path is not there).
fn split_at<'a>(
    raw: &'a RawValue,
    path: &[&str],
) -> serde_json::Result<(Value, Option<&'a RawValue>)> {
    let Some((head, rest)) = path.split_first() else {
        return Ok((Value::Null, Some(raw)));
    };
    if !raw.get().starts_with('{') {
        return Ok((serde_json::from_str(raw.get())?, None));
    }
    let RawMembers(members) = serde_json::from_str(raw.get())?;
    let mut out = serde_json::Map::with_capacity(members.len());
    let mut found = None;
    for (key, value) in members {
        if key == *head {
            let (v, f) = split_at(value, rest)?;
            found = f;
            out.insert(key, v);
        } else {
            out.insert(key, serde_json::from_str(value.get())?);
        }
    }
    Ok((Value::Object(out), found))
}

pub struct Pager {
    client: Client,
    opts: Arc<HttpTableOptions>,
    base: Url,
    /// Query parameters from pushed filters.
    extra: Vec<(String, String)>,
    next: Option<Url>,
    pages: u64,
    records: u64,
    offset: u64,
    page: u64,
    /// The token that resumes after the pages read so far.
    token: Option<String>,
    /// ETag of a committed snapshot: the first request is conditional.
    if_none_match: Option<String>,
    /// The first response's ETag.
    etag: Option<String>,
    not_modified: bool,
    /// Pages requested ahead of `next` (offset and page styles with `max_in_flight` > 1),
    /// in order; dropped and aborted when a stop rule fires.
    ahead: std::collections::VecDeque<(Url, tokio::task::JoinHandle<Result<client::Page>>)>,
}

impl Drop for Pager {
    fn drop(&mut self) {
        for (_, task) in self.ahead.drain(..) {
            task.abort();
        }
    }
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |v, p| v.get(p))
}

/// The `rel="next"` target of a `Link` header.
fn link_next(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            if pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            }) {
                return Some(
                    target
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string(),
                );
            }
        }
    }
    None
}

impl Pager {
    pub fn new(
        client: Client,
        opts: Arc<HttpTableOptions>,
        extra: Vec<(String, String)>,
    ) -> Result<Self> {
        let base = Url::parse(&opts.url)
            .map_err(|e| Error::InvalidInput(format!("'{}' is not a valid URL: {e}", opts.url)))?;
        let start = match &opts.pagination {
            Pagination::Page { start, .. } => *start,
            _ => 0,
        };
        let mut pager = Pager {
            client,
            opts,
            base,
            extra,
            next: None,
            pages: 0,
            records: 0,
            offset: 0,
            page: start,
            token: None,
            if_none_match: None,
            etag: None,
            not_modified: false,
            ahead: Default::default(),
        };
        pager.next = Some(pager.url_with_style());
        Ok(pager)
    }

    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The token that resumes after the pages read so far.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether a stop rule has fired: no page follows.
    pub fn exhausted(&self) -> bool {
        self.next.is_none()
    }

    /// The first response's ETag, as a snapshot id.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Whether the conditional first request came back `304 Not Modified`.
    pub fn not_modified(&self) -> bool {
        self.not_modified
    }

    /// Makes the first request conditional on the snapshot's ETag.
    pub fn if_none_match(&mut self, etag: &str) {
        self.if_none_match = Some(etag.to_string());
    }

    /// Starts from a resume token instead of the first page.
    pub fn resume(&mut self, token: &str) -> Result<()> {
        let bad = |e: String| {
            Error::InvalidInput(format!(
                "resume token '{token}' does not fit pagination '{}': {e}; reset the pipeline's cursor if the table's pagination changed",
                self.opts.pagination.name()
            ))
        };
        self.next = Some(match &self.opts.pagination {
            Pagination::Cursor { param, .. } => {
                let mut u = self.url_with_style();
                u.query_pairs_mut().append_pair(param, token);
                u
            }
            Pagination::NextUrl { .. } | Pagination::LinkHeader => {
                Url::parse(token).map_err(|e| bad(e.to_string()))?
            }
            Pagination::Offset { .. } => {
                self.offset = token.parse().map_err(|e| bad(format!("{e}")))?;
                self.url_with_style()
            }
            Pagination::Page { .. } => {
                self.page = token.parse().map_err(|e| bad(format!("{e}")))?;
                self.url_with_style()
            }
            Pagination::None => return Err(bad("a single request has nothing to resume".into())),
        });
        self.token = Some(token.to_string());
        Ok(())
    }

    /// Keeps up to `max_in_flight` requests running for the pages from `next` on, where
    /// their URLs are known in advance (offset and page styles). Pages past the end are
    /// requested in vain at most `max_in_flight - 1` times.
    fn request_ahead(&mut self) {
        let n = self.opts.max_in_flight;
        let step_size = match &self.opts.pagination {
            Pagination::Offset { page_size, .. } => *page_size,
            Pagination::Page { .. } => 1,
            _ => return,
        };
        if n <= 1 || self.next.is_none() {
            for (_, task) in self.ahead.drain(..) {
                task.abort();
            }
            return;
        }
        for k in self.ahead.len() as u64..n {
            // The URL `k` pages after `next`.
            let url = self.url_at(self.offset + k * step_size, self.page + k);
            let (client, opts, u) = (self.client.clone(), Arc::clone(&self.opts), url.clone());
            let task = tokio::spawn(async move { client::get(&client, &u, &opts, None).await });
            self.ahead.push_back((url, task));
        }
    }

    /// The token that fetches the page after this one, if the source gives one.
    fn token_after(&self, url: &Url, headers: &HeaderMap, body: &Value) -> Option<String> {
        match &self.opts.pagination {
            Pagination::None => None,
            Pagination::Cursor { path, .. } => match lookup(body, path) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            Pagination::NextUrl { path } => match lookup(body, path) {
                Some(Value::String(s)) if !s.is_empty() => url.join(s).ok().map(|u| u.to_string()),
                _ => None,
            },
            Pagination::LinkHeader => link_next(headers)
                .and_then(|s| url.join(&s).ok())
                .map(|u| u.to_string()),
            Pagination::Offset { .. } => Some(self.offset.to_string()),
            Pagination::Page { .. } => Some(self.page.to_string()),
        }
    }

    fn url_with_style(&self) -> Url {
        self.url_at(self.offset, self.page)
    }

    /// The request URL for a position: `offset` for the offset style, `page` for the page
    /// style (the other styles ignore both).
    fn url_at(&self, offset: u64, page: u64) -> Url {
        let mut url = self.base.clone();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in self.opts.query.iter().chain(self.extra.iter()) {
                q.append_pair(k, v);
            }
            match &self.opts.pagination {
                Pagination::Offset {
                    offset_param,
                    limit_param,
                    page_size,
                } => {
                    q.append_pair(offset_param, &offset.to_string());
                    q.append_pair(limit_param, &page_size.to_string());
                }
                Pagination::Page {
                    page_param,
                    size_param,
                    page_size,
                    ..
                } => {
                    q.append_pair(page_param, &page.to_string());
                    if let Some(p) = size_param {
                        q.append_pair(p, &page_size.to_string());
                    }
                }
                _ => {}
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// Fetches the next page, or `None` when a stop rule has fired.
    pub async fn next_page(&mut self) -> Result<Option<PageRecords>> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let conditional = if self.pages == 0 {
            self.if_none_match.clone()
        } else {
            None
        };
        let page = match self.ahead.pop_front() {
            Some((queued, task)) if queued == url => task
                .await
                .map_err(|e| Error::Internal(format!("a page request task failed: {e}")))??,
            stale => {
                if let Some((_, task)) = stale {
                    task.abort();
                }
                client::get(&self.client, &url, &self.opts, conditional.as_deref()).await?
            }
        };
        if page.not_modified {
            self.not_modified = true;
            return Ok(None);
        }
        if self.pages == 0 {
            self.etag = page
                .headers
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        self.pages += 1;
        let n = self.pages;
        let not_json = |e: &dyn std::fmt::Display| {
            upstream(format!(
                "page {n} (GET {url}) is not valid JSON: {e}; check that the endpoint returns JSON"
            ))
        };
        let text = String::from_utf8(page.body).map_err(|e| not_json(&e))?;
        let opts = Arc::clone(&self.opts);
        let path = opts.records.as_deref().unwrap_or("");
        let segments: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
        let (body, records) = serde_json::from_str::<&RawValue>(&text)
            .and_then(|raw| split_at(raw, &segments))
            .map_err(|e| not_json(&e))?;
        let at = |r: &RawValue| {
            let start = r.get().as_ptr() as usize - text.as_ptr() as usize;
            start..start + r.get().len()
        };
        let spans: Vec<Range<usize>> = match records {
            Some(r) if r.get().starts_with('[') => serde_json::from_str::<Vec<&RawValue>>(r.get())
                .map_err(|e| not_json(&e))?
                .into_iter()
                .map(at)
                .collect(),
            Some(r) if r.get() == "null" => Vec::new(),
            Some(r) => vec![at(r)],
            None if n == 1 => {
                let keys = body
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                return Err(Error::InvalidInput(format!(
                    "records path '{path}' is not in the response of GET {url}; the top-level keys are: {keys}; fix the records option"
                )));
            }
            None => Vec::new(),
        };
        let len = spans.len() as u64;
        self.records += len;
        if len > 0 {
            self.next = self.next_url(&url, &page.headers, &body, len)?;
            if let Some(t) = self.token_after(&url, &page.headers, &body) {
                self.token = Some(t);
            }
        }
        self.request_ahead();
        Ok(Some(PageRecords {
            bytes: text.len() as u64,
            body: text,
            spans,
            requests: page.requests,
        }))
    }

    /// Applies stop rules 3 to 6 to a page of `len` (> 0) records.
    fn next_url(
        &mut self,
        url: &Url,
        headers: &HeaderMap,
        body: &Value,
        len: u64,
    ) -> Result<Option<Url>> {
        let n = self.pages;
        if let Some(p) = &self.opts.has_more_path {
            if lookup(body, p).and_then(Value::as_bool) == Some(false) {
                return Ok(None);
            }
        }
        if let Some(p) = &self.opts.total_path {
            if lookup(body, p)
                .and_then(Value::as_u64)
                .is_some_and(|total| self.records >= total)
            {
                return Ok(None);
            }
        }
        let next = match &self.opts.pagination {
            Pagination::None => None,
            Pagination::NextUrl { path } => match lookup(body, path) {
                Some(Value::String(s)) if !s.is_empty() => Some(url.join(s).map_err(|e| {
                    upstream(format!("page {n}: next URL '{s}' is not a valid URL: {e}"))
                })?),
                _ => None,
            },
            Pagination::LinkHeader => match link_next(headers) {
                Some(s) => Some(url.join(&s).map_err(|e| {
                    upstream(format!("page {n}: Link next '{s}' is not a valid URL: {e}"))
                })?),
                None => None,
            },
            Pagination::Offset { page_size, .. } => {
                self.offset += len;
                (len >= *page_size).then(|| self.url_with_style())
            }
            Pagination::Page { page_size, .. } => {
                self.page += 1;
                (len >= *page_size).then(|| self.url_with_style())
            }
            Pagination::Cursor { path, param } => {
                let token = match lookup(body, path) {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(num)) => Some(num.to_string()),
                    _ => None,
                };
                token.map(|t| {
                    let mut u = self.url_with_style();
                    u.query_pairs_mut().append_pair(param, &t);
                    u
                })
            }
        };
        if self.opts.max_pages.is_some_and(|m| self.pages >= m) {
            return Ok(None);
        }
        Ok(next)
    }
}
