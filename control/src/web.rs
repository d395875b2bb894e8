//! The web UI (`web/`, a TypeScript app), built into the binary from `web/dist` and served
//! at every path the API does not own, so the app's own routes load `index.html`.
//!
//! Hashed assets are cached for good; `index.html` is revalidated. A `.gz` twin written by
//! the web build is sent instead when the browser accepts gzip (the Loro WASM is 3.5 MB,
//! 1.2 MB gzipped).

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "../web/dist/"]
#[allow_missing = true]
struct Assets;

/// Whether this binary carries the web UI (`npm --prefix web run build` before the build).
pub fn built() -> bool {
    Assets::get("index.html").is_some()
}

pub async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    // A route this server does not have answers in plain text; a JSON 404 means a missing
    // project or version (the app tells "not served by this version" from "not found").
    if ["api/", "auth/", "sync"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        return (StatusCode::NOT_FOUND, format!("no such endpoint: /{path}")).into_response();
    }
    let name = match path {
        "" => "index.html",
        p if Assets::get(p).is_some() => p,
        _ => "index.html",
    };
    let Some(file) = Assets::get(name) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this hakiri binary was built without the web UI: run `npm --prefix web ci && npm --prefix web run build`, then build hakiri again",
        )
            .into_response();
    };
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let (body, encoded) = match Assets::get(&format!("{name}.gz")) {
        Some(gz) if gzip => (gz.data, true),
        _ => (file.data, false),
    };
    let mut resp = body.into_owned().into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(file.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}
