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
//! gives none (the last page of `next_url`, `link_header`, `cursor`, a short last page of
//! `page`, the one page of `none`), the token stays the one that fetched the last page and
//! the pager says it is [at the boundary](Pager::at_boundary): the next run reads that page
//! again (records may have been added to it) and skips the records already written, which
//! the run commits as the cursor's boundary.

use std::ops::Range;
use std::sync::Arc;

use reqwest::Client;
use reqwest::header::{HeaderMap, LINK};
use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
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
    /// Keeps the records for which `keep(index)` is true (the others were already written).
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mut i = 0;
        self.spans.retain(|_| {
            i += 1;
            keep(i - 1)
        });
    }

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

/// What a page body holds at the records path.
enum Located<'a> {
    /// An array: each element's text.
    Items(Vec<&'a RawValue>),
    /// Another value: one record (its text once asked for with `whole_leaf`).
    One(Option<&'a RawValue>),
    Null,
    Missing,
}

/// Reads a page body in one pass: the value of everything but the records at `path` (left
/// null there, for the pagination rules) and where each record lies; a record is checked to
/// be JSON but not built. `whole_leaf`: take the value at `path` whole (a single record).
#[derive(Clone, Copy)]
struct Body<'p> {
    path: &'p [&'p str],
    whole_leaf: bool,
}

fn locate<'a>(
    text: &'a str,
    path: &[&str],
    whole_leaf: bool,
) -> serde_json::Result<(Value, Located<'a>)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let found = Body { path, whole_leaf }.deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = (Value, Located<'de>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        if self.path.is_empty() && self.whole_leaf {
            let raw = <&RawValue>::deserialize(d)?;
            return Ok((Value::Null, Located::One(Some(raw))));
        }
        d.deserialize_any(self)
    }
}

impl Body<'_> {
    /// A value that is neither an object on the path nor the records' array.
    fn other(self) -> (Value, Located<'static>) {
        if self.path.is_empty() {
            (Value::Null, Located::One(None))
        } else {
            // Not an object: the path is not there (pagination lookups find nothing in it).
            (Value::Null, Located::Missing)
        }
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = (Value, Located<'de>);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
        let located = if self.path.is_empty() {
            Located::Null
        } else {
            Located::Missing
        };
        Ok((Value::Null, located))
    }
    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        if self.path.is_empty() {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                items.push(item);
            }
            return Ok((Value::Null, Located::Items(items)));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.other())
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let Some((head, rest)) = self.path.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(self.other());
        };
        let mut out = serde_json::Map::new();
        let mut found = Located::Missing;
        while let Some(key) = map.next_key::<String>()? {
            if key == *head {
                let (value, located) = map.next_value_seed(Body {
                    path: rest,
                    whole_leaf: self.whole_leaf,
                })?;
                found = located;
                out.insert(key, value);
            } else {
                let value = map.next_value::<Value>()?;
                out.insert(key, value);
            }
        }
        Ok((Value::Object(out), found))
    }
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
    /// The last page gave no token past it: `token` fetches that page again.
    at_boundary: bool,
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
            at_boundary: false,
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

    /// Whether the last page read gave no token past it, so [`Pager::token`] is the one
    /// that fetched it (`None`: the first page) and a resumed run reads it again.
    pub fn at_boundary(&self) -> bool {
        self.at_boundary
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
            // In the current span: a page fetched ahead belongs to the run's trace too.
            let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
                client::get(&client, &u, &opts, None).await
            }));
            self.ahead.push_back((url, task));
        }
    }

    /// The token that fetches the page after this one (of `len` records), if the source
    /// gives one. A short page of the `page` style gives none: the records added to it
    /// later are read by fetching it again.
    fn token_after(
        &self,
        url: &Url,
        headers: &HeaderMap,
        body: &Value,
        len: u64,
    ) -> Option<String> {
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
            Pagination::Page { page_size, .. } => {
                (len >= *page_size).then(|| self.page.to_string())
            }
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
        let (body, mut records) = locate(&text, &segments, false).map_err(|e| not_json(&e))?;
        if let Located::One(None) = records {
            // One record, not an array (rare): a second pass takes its text.
            records = locate(&text, &segments, true).map_err(|e| not_json(&e))?.1;
        }
        let at = |r: &RawValue| {
            let start = r.get().as_ptr() as usize - text.as_ptr() as usize;
            start..start + r.get().len()
        };
        let spans: Vec<Range<usize>> = match records {
            Located::Items(items) => items.into_iter().map(at).collect(),
            Located::One(record) => record.into_iter().map(at).collect(),
            Located::Null => Vec::new(),
            Located::Missing if n == 1 => {
                let keys = body
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                return Err(Error::InvalidInput(format!(
                    "records path '{path}' is not in the response of GET {url}; the top-level keys are: {keys}; fix the records option"
                )));
            }
            Located::Missing => Vec::new(),
        };
        let len = spans.len() as u64;
        self.records += len;
        if len > 0 {
            self.next = self.next_url(&url, &page.headers, &body, len)?;
            match self.token_after(&url, &page.headers, &body, len) {
                Some(t) => {
                    self.token = Some(t);
                    self.at_boundary = false;
                }
                None => self.at_boundary = true,
            }
        } else {
            // An empty page: the token that fetched it stays, with nothing to skip.
            self.at_boundary = true;
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
        if let Some(p) = &self.opts.has_more_path
            && lookup(body, p).and_then(Value::as_bool) == Some(false)
        {
            return Ok(None);
        }
        if let Some(p) = &self.opts.total_path
            && lookup(body, p)
                .and_then(Value::as_u64)
                .is_some_and(|total| self.records >= total)
        {
            return Ok(None);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(found: &Located<'a>) -> Vec<&'a str> {
        match found {
            Located::Items(items) => items.iter().map(|r| r.get()).collect(),
            Located::One(Some(r)) => vec![r.get()],
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_body_is_read_in_one_pass_with_its_records_located() {
        let text =
            r#"{"next": "/p2", "data": {"items": [{"a": 1}, [2], "x"], "more": true}, "n": 3}"#;
        let (body, found) = locate(text, &["data", "items"], false).unwrap();
        assert_eq!(texts(&found), vec![r#"{"a": 1}"#, "[2]", r#""x""#]);
        // The rest of the body is there for the pagination rules; the records are not.
        assert_eq!(
            body,
            serde_json::json!({"next": "/p2", "data": {"items": null, "more": true}, "n": 3})
        );
        let (_, found) = locate(" [ {\"a\": 1} ] ", &[], false).unwrap();
        assert_eq!(texts(&found), vec![r#"{"a": 1}"#]);
        // A single record is only marked; the second pass takes its text.
        let (_, found) = locate(r#"{"data": {"a": 1}}"#, &["data"], false).unwrap();
        assert!(matches!(found, Located::One(None)));
        let (_, found) = locate(r#"{"data": {"a": 1}}"#, &["data"], true).unwrap();
        assert_eq!(texts(&found), vec![r#"{"a": 1}"#]);
        assert!(matches!(
            locate(r#"{"data": null}"#, &["data"], false).unwrap().1,
            Located::Null
        ));
        assert!(matches!(
            locate(r#"{"x": 1}"#, &["data"], false).unwrap().1,
            Located::Missing
        ));
        assert!(matches!(
            locate("[1]", &["data"], false).unwrap().1,
            Located::Missing
        ));
        // Invalid JSON anywhere, records included, and trailing text are errors.
        assert!(locate(r#"{"data": [{"a": }]}"#, &["data"], false).is_err());
        assert!(locate(r#"{"data": []} x"#, &["data"], false).is_err());
    }

    /// Fuzz target: a committed resume token (any text: a hand-edited catalog, an API's
    /// opaque token) for every pagination style resumes or is refused, never a panic.
    #[test]
    fn fuzz_resume_tokens() {
        use proptest::prelude::*;
        let config = hakiri_core::fuzzing::config();
        let styles: Vec<Vec<(&str, &str)>> = vec![
            vec![
                ("pagination", "cursor"),
                ("cursor_path", "next"),
                ("cursor_param", "after"),
            ],
            vec![("pagination", "next_url")],
            vec![("pagination", "link_header")],
            vec![("pagination", "offset"), ("page_size", "10")],
            vec![("pagination", "page"), ("page_size", "10")],
            vec![("pagination", "none")],
        ];
        proptest!(config, |(style in 0..6usize, token in ".{0,80}")| {
            let raw: std::collections::BTreeMap<String, String> = styles[style]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let opts = HttpTableOptions::parse("t", Some("http://127.0.0.1:9/api"), &raw).unwrap();
            let mut pager = Pager::new(Client::new(), Arc::new(opts), Vec::new()).unwrap();
            if pager.resume(&token).is_ok() {
                prop_assert_eq!(pager.token(), Some(token.as_str()));
            }
        });
    }
}
