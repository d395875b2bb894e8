//! The HTTP API. Every route but `/healthz` and the sign-in redirects checks a token: the
//! `Authorization: Bearer` header, else the `hakiri_token` cookie the sign-in sets (the
//! document socket also takes `?token=`, as browsers cannot set its headers).

use std::sync::Arc;

use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::token::{Right, Subject};
use crate::{App, Error, Result};

pub const COOKIE: &str = "hakiri_token";

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/api/token", post(refresh_token))
        .route("/api/me", get(me))
        .route(
            "/api/schema",
            get(|| async { Json(hakiri_manifests::json_schema()) }),
        )
        .route("/api/tokens/attenuate", post(attenuate))
        .route("/api/projects", get(list_projects).post(create_project))
        .route("/api/projects/{p}/grants", post(grant))
        .route("/api/projects/{p}/document", get(document))
        .route("/api/projects/{p}/import", post(import))
        .route("/api/projects/{p}/apply", post(apply))
        .route("/api/projects/{p}/versions", get(versions))
        .route("/api/projects/{p}/manifest", get(manifest))
        .route("/api/projects/{p}/diff", get(diff))
        .route("/api/projects/{p}/rollback", post(rollback))
        .route("/api/projects/{p}/nodes/{id}/token", post(node_token))
        .route("/api/projects/{p}/nodes/{id}/heartbeat", post(heartbeat))
        .route("/api/projects/{p}/runs/{run}/report", post(report))
        .route("/api/projects/{p}/pipelines/{name}/run", post(run_now))
        .route("/api/projects/{p}/runs", get(runs))
        .route("/api/projects/{p}/runs/{run}", get(run_detail))
        .route("/api/projects/{p}/query", post(query))
        .route("/api/projects/{p}/tables", get(tables))
        .route("/api/projects/{p}/queries/{id}/answer", post(query_answer))
        .route("/api/projects/{p}/status", get(status))
        .route("/sync", get(sync))
        .fallback(crate::web::asset)
        .with_state(app)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            Error::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Token(t) => (
                StatusCode::from_u16(t.http_status()).unwrap_or(StatusCode::FORBIDDEN),
                if t.http_status() == 401 {
                    "unauthenticated"
                } else {
                    "forbidden"
                },
            ),
            Error::Oidc(_) => (StatusCode::BAD_GATEWAY, "sign_in"),
            Error::Config(_) => (StatusCode::BAD_REQUEST, "config"),
            Error::Store(_) | Error::Internal(_) | Error::Remote(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        (
            status,
            Json(json!({ "error": self.to_string(), "kind": kind })),
        )
            .into_response()
    }
}

/// The request's token: the bearer header, else the sign-in cookie.
fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A response that also replaces the sign-in cookie when the request came with it (a
/// browser cannot replace an HttpOnly cookie itself, and a new project's rights are only
/// in the new token).
fn with_cookie(headers: &HeaderMap, token: &str, resp: impl IntoResponse) -> Result<Response> {
    let mut resp = resp.into_response();
    if headers.get(header::AUTHORIZATION).is_none() && token_of(headers).is_some() {
        let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/");
        resp.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).map_err(|e| Error::Internal(e.to_string()))?,
        );
    }
    Ok(resp)
}

fn authorize(app: &App, headers: &HeaderMap, project: &str, right: Right) -> Result<Subject> {
    let token = token_of(headers).ok_or(crate::token::TokenError::Missing)?;
    Ok(app.keys.authorize(&token, project, right)?)
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&App) -> Result<T> + Send + 'static,
) -> Result<T> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

fn user_of(s: &Subject) -> Result<&str> {
    match s {
        Subject::User(sub) => Ok(sub),
        Subject::Node(id) => Err(Error::Invalid(format!(
            "node {id}'s token is for running pipelines; this needs a person's token (`hakiri team login`)"
        ))),
    }
}

fn mint_for(app: &App, sub: &str) -> Result<String> {
    let grants: Vec<(String, Vec<Right>)> = app
        .store
        .grants_of(sub)?
        .into_iter()
        .map(|(p, rights)| (p, rights.split(',').filter_map(Right::parse).collect()))
        .collect();
    Ok(app.keys.mint_user(sub, &grants, app.config.token_ttl)?)
}

// --- sign-in

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

/// Where a sign-in may send its token back: a path of this server, or a loopback URL
/// (`hakiri team login` listens on one).
fn safe_return(to: &str) -> Option<String> {
    if to.starts_with('/') && !to.starts_with("//") {
        return Some(to.to_string());
    }
    let u = url::Url::parse(to).ok()?;
    let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    (u.scheme() == "http" && loopback).then(|| to.to_string())
}

async fn login(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Result<Response> {
    let oidc = app.oidc.as_ref().ok_or_else(|| {
        Error::Config("this control plane has no OIDC provider: start it with --oidc-issuer".into())
    })?;
    let return_to = match q.return_to.as_deref() {
        None => "/".to_string(),
        Some(t) => safe_return(t).ok_or_else(|| {
            Error::Invalid(format!(
                "return_to {t} is neither a path here nor a loopback URL"
            ))
        })?,
    };
    let (url, pending) = oidc.begin();
    let state = pending.state.clone();
    let pending = serde_json::to_string(&pending).map_err(|e| Error::Internal(e.to_string()))?;
    blocking(&app, move |a| {
        a.store.put_pending_login(&state, &pending, &return_to)
    })
    .await?;
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(State(app): State<Arc<App>>, Query(q): Query<CallbackQuery>) -> Result<Response> {
    let oidc = app
        .oidc
        .as_ref()
        .ok_or_else(|| Error::Config("no OIDC provider configured".into()))?;
    if let Some(e) = q.error {
        return Err(Error::Invalid(format!(
            "the identity provider refused the sign-in: {e} {}",
            q.error_description.unwrap_or_default()
        )));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(Error::Invalid(
            "the callback lacks code or state: start again at /auth/login".into(),
        ));
    };
    let st = state.clone();
    let (pending, return_to) = blocking(&app, move |a| a.store.take_pending_login(&st))
        .await?
        .ok_or_else(|| {
            Error::Invalid("unknown or used sign-in state (it is single-use and lasts an hour): start again at /auth/login".into())
        })?;
    let pending: crate::oidc::Pending =
        serde_json::from_str(&pending).map_err(|e| Error::Internal(e.to_string()))?;
    let claims = oidc.finish(&code, pending).await?;
    let token = blocking(&app, move |a| {
        a.store
            .upsert_user(&claims.sub, claims.email.as_deref(), claims.name.as_deref())?;
        mint_for(a, &claims.sub)
    })
    .await?;
    let target = if return_to.starts_with('/') {
        return_to
    } else {
        let mut u = url::Url::parse(&return_to).map_err(|e| Error::Internal(e.to_string()))?;
        u.query_pairs_mut().append_pair("token", &token);
        u.to_string()
    };
    let mut resp = Redirect::to(&target).into_response();
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| Error::Internal(e.to_string()))?,
    );
    Ok(resp)
}

async fn logout() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hakiri_token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"),
    );
    resp
}

/// A fresh token for the signed-in person, with their current grants (after `team init`).
async fn refresh_token(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response> {
    let token = token_of(&headers).ok_or(crate::token::TokenError::Missing)?;
    let subject = app.keys.subject(&token)?;
    let sub = user_of(&subject)?.to_string();
    let token = blocking(&app, move |a| mint_for(a, &sub)).await?;
    with_cookie(&headers, &token, Json(json!({ "token": token })))
}

/// Who the token speaks for, with what the sign-in told about them.
async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>> {
    let token = token_of(&headers).ok_or(crate::token::TokenError::Missing)?;
    match app.keys.subject(&token)? {
        Subject::Node(id) => Ok(Json(json!({ "node": id }))),
        Subject::User(sub) => {
            let s = sub.clone();
            let who = blocking(&app, move |a| a.store.user(&s)).await?;
            let (email, name) = who.unwrap_or_default();
            Ok(Json(json!({ "sub": sub, "email": email, "name": name })))
        }
    }
}

#[derive(Deserialize)]
struct AttenuateBody {
    keep: Vec<Right>,
    project: Option<String>,
    ttl_secs: Option<u64>,
}

/// The same attenuation `hakiri team token --read-only` does offline, for clients without
/// a biscuit library (the token never needs the server to be weakened).
async fn attenuate(headers: HeaderMap, Json(b): Json<AttenuateBody>) -> Result<Json<Value>> {
    let token = token_of(&headers).ok_or(crate::token::TokenError::Missing)?;
    let t = crate::token::attenuate(
        &token,
        &b.keep,
        b.project.as_deref(),
        b.ttl_secs.map(std::time::Duration::from_secs),
    )?;
    Ok(Json(json!({ "token": t })))
}

// --- projects

async fn list_projects(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>> {
    let token = token_of(&headers).ok_or(crate::token::TokenError::Missing)?;
    let mut out = Vec::new();
    for p in app.keys.projects(&token)? {
        let rights = app.keys.rights(&token, &p)?;
        if !rights.is_empty() {
            out.push(json!({ "id": p, "rights": rights }));
        }
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
struct CreateProject {
    id: String,
}

async fn create_project(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<CreateProject>,
) -> Result<Response> {
    let token = token_of(&headers).ok_or(crate::token::TokenError::Missing)?;
    let subject = app.keys.subject(&token)?;
    let sub = user_of(&subject)?.to_string();
    hakiri_core::types::validate_name("project", &body.id)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let id = body.id.clone();
    let (created, token) = blocking(&app, move |a| {
        let created = a.store.create_project(&id, &sub)?;
        Ok((created, mint_for(a, &sub)?))
    })
    .await?;
    if !created {
        return Err(Error::Invalid(format!(
            "project {} exists already",
            body.id
        )));
    }
    with_cookie(
        &headers,
        &token,
        (
            StatusCode::CREATED,
            Json(json!({ "id": body.id, "token": token })),
        ),
    )
}

#[derive(Deserialize)]
struct GrantBody {
    sub: String,
    rights: Vec<Right>,
}

async fn grant(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Json(b): Json<GrantBody>,
) -> Result<StatusCode> {
    authorize(&app, &headers, &p, Right::Apply)?;
    let rights: Vec<&str> = b.rights.iter().map(|r| r.as_str()).collect();
    let rights = rights.join(",");
    blocking(&app, move |a| a.store.grant(&p, &b.sub, &rights)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn existing(app: &App, p: &str) -> Result<()> {
    if app.store.project_exists(p)? {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "no project {p}: create it with `hakiri team init {p}`"
        )))
    }
}

async fn document(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Read)?;
    blocking(&app, move |a| {
        existing(a, &p)?;
        let room = a.rooms.get(&p, &a.store)?;
        let snapshot = room.snapshot()?;
        let doc = room.fork();
        let value = serde_json::to_value(doc.get_deep_value())
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Json(json!({
            "json": value,
            "version_hex": hex::encode(room.version().encode()),
            "snapshot_sha256": hex::encode(Sha256::digest(&snapshot)),
            "snapshot_bytes": snapshot.len(),
            "ops": doc.len_ops(),
        })))
    })
    .await
}

#[derive(Deserialize)]
struct ImportBody {
    manifest: Value,
}

async fn import(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Json(b): Json<ImportBody>,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Edit)?;
    let text = serde_json::to_string(&b.manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let manifest = crate::doc::manifest_json_from_json(&text)?;
    blocking(&app, move |a| {
        existing(a, &p)?;
        let room = a.rooms.get(&p, &a.store)?;
        room.edit(&a.store, |doc| crate::doc::write_manifest(doc, &manifest))?;
        Ok(Json(
            json!({ "version_hex": hex::encode(room.version().encode()) }),
        ))
    })
    .await
}

#[derive(Deserialize, Default)]
struct ApplyBody {
    note: Option<String>,
}

async fn apply(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Option<Json<ApplyBody>>,
) -> Result<Json<Value>> {
    let who = authorize(&app, &headers, &p, Right::Apply)?;
    let note = body.and_then(|b| b.0.note).unwrap_or_default();
    blocking(&app, move |a| {
        existing(a, &p)?;
        // A fork: edits arriving meanwhile are not half in the manifest.
        let doc = a.rooms.get(&p, &a.store)?.fork();
        let manifest = crate::doc::read_manifest(&doc).map_err(|e| {
            Error::Invalid(format!(
                "the document does not validate, nothing was applied: {e}"
            ))
        })?;
        let text =
            serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some((v, current)) = a.store.manifest(&p, None)?
            && current == text
        {
            return Ok(Json(json!({ "version": v, "changed": false })));
        }
        let v = a.store.add_version(&p, &text, &subject_name(&who), &note)?;
        Ok(Json(json!({ "version": v, "changed": true })))
    })
    .await
}

fn subject_name(s: &Subject) -> String {
    match s {
        Subject::User(u) => u.clone(),
        Subject::Node(n) => format!("node:{n}"),
    }
}

async fn versions(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Read)?;
    let v = blocking(&app, move |a| a.store.versions(&p)).await?;
    Ok(Json(
        serde_json::to_value(v).map_err(|e| Error::Internal(e.to_string()))?,
    ))
}

#[derive(Deserialize)]
struct VersionQuery {
    version: Option<i64>,
}

async fn manifest(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Query(q): Query<VersionQuery>,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Read)?;
    let (v, text) = blocking(&app, move |a| {
        a.store
            .manifest(&p, q.version)?
            .ok_or_else(|| match q.version {
                Some(v) => Error::NotFound(format!(
                    "project {p} has no version {v}: `hakiri team versions` lists them"
                )),
                None => Error::NotFound(format!(
                    "project {p} has no applied version yet: `hakiri team apply`"
                )),
            })
    })
    .await?;
    let manifest: Value =
        serde_json::from_str(&text).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Json(json!({ "version": v, "manifest": manifest })))
}

#[derive(Deserialize)]
struct DiffQuery {
    from: i64,
    to: Option<i64>,
}

async fn diff(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Query(q): Query<DiffQuery>,
) -> Result<Response> {
    authorize(&app, &headers, &p, Right::Read)?;
    let text = blocking(&app, move |a| {
        let get = |v: Option<i64>| {
            a.store.manifest(&p, v)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "project {p} has no version {}",
                    v.map_or("applied".into(), |v| v.to_string())
                ))
            })
        };
        let (fv, from) = get(Some(q.from))?;
        let (tv, to) = get(q.to)?;
        Ok(similar::TextDiff::from_lines(&from, &to)
            .unified_diff()
            .header(&format!("version {fv}"), &format!("version {tv}"))
            .to_string())
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[derive(Deserialize)]
struct RollbackBody {
    version: i64,
}

/// Applies an earlier version again (as a new version), and writes it back into the
/// document so the next apply does not bring the rolled-back change back.
async fn rollback(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Json(b): Json<RollbackBody>,
) -> Result<Json<Value>> {
    let who = authorize(&app, &headers, &p, Right::Apply)?;
    authorize(&app, &headers, &p, Right::Edit)?;
    blocking(&app, move |a| {
        let (_, text) = a
            .store
            .manifest(&p, Some(b.version))?
            .ok_or_else(|| Error::NotFound(format!("project {p} has no version {}", b.version)))?;
        let manifest: Value =
            serde_json::from_str(&text).map_err(|e| Error::Internal(e.to_string()))?;
        let room = a.rooms.get(&p, &a.store)?;
        room.edit(&a.store, |doc| crate::doc::write_manifest(doc, &manifest))?;
        let v = a.store.add_version(
            &p,
            &text,
            &subject_name(&who),
            &format!("rollback to version {}", b.version),
        )?;
        Ok(Json(json!({ "version": v })))
    })
    .await
}

// --- nodes and runs

async fn node_token(
    State(app): State<Arc<App>>,
    Path((p, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Apply)?;
    hakiri_core::types::Placement::parse(&format!("node:{id}"))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    existing(&app, &p)?;
    // A node's token lasts a year; revoke by rotating the control plane's key (docs).
    let token = app
        .keys
        .mint_node(&id, &p, std::time::Duration::from_secs(365 * 24 * 3600))?;
    Ok(Json(json!({ "token": token })))
}

fn node_of(app: &App, headers: &HeaderMap, p: &str, id: &str) -> Result<()> {
    match authorize(app, headers, p, Right::Run)? {
        Subject::Node(n) if n == id => Ok(()),
        other => Err(crate::token::TokenError::Forbidden {
            project: p.to_string(),
            right: "run",
        })
        .map_err(|e| {
            tracing::info!("heartbeat for node {id} with the token of {other:?}");
            e.into()
        }),
    }
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    Path((p, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    node_of(&app, &headers, &p, &id)?;
    blocking(&app, move |a| {
        existing(a, &p)?;
        a.store.heartbeat(&p, &id)?;
        let applied = a.store.manifest(&p, None)?.map(|(v, _)| v);
        let runs: Vec<_> = a
            .store
            .open_runs(&p)?
            .into_iter()
            .filter(|r| r.node == id)
            .collect();
        let queries: Vec<Value> = a
            .queries
            .take(&p, &id)
            .into_iter()
            .map(|(id, sql)| json!({ "id": id, "sql": sql }))
            .collect();
        Ok(Json(json!({
            "applied_version": applied,
            "node_timeout_secs": a.config.node_timeout.as_secs_f64(),
            "runs": runs,
            "queries": queries,
        })))
    })
    .await
}

#[derive(Deserialize)]
struct ReportBody {
    node: String,
    ok: bool,
    rows: Option<i64>,
    error: Option<String>,
    /// The run's id on the node.
    run_id: Option<String>,
}

async fn report(
    State(app): State<Arc<App>>,
    Path((p, run)): Path<(String, i64)>,
    headers: HeaderMap,
    Json(b): Json<ReportBody>,
) -> Result<StatusCode> {
    node_of(&app, &headers, &p, &b.node)?;
    let accepted = blocking(&app, move |a| {
        let report = crate::store::Report {
            ok: b.ok,
            rows: b.rows,
            error: b.error.as_deref(),
            engine_run: b.run_id.as_deref(),
        };
        a.store.finish_run(&p, run, &b.node, &report)
    })
    .await?;
    if accepted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        // Lost (reassigned after missed heartbeats) or not this node's.
        Ok(StatusCode::CONFLICT)
    }
}

async fn run_now(
    State(app): State<Arc<App>>,
    Path((p, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>)> {
    authorize(&app, &headers, &p, Right::Run)?;
    let planned = {
        let (a, p2) = (app.clone(), p.clone());
        blocking(&app, move |_| crate::dispatch::planned(&a, &p2)).await?
    };
    if !planned.iter().any(|x| x.name == name) {
        return Err(Error::NotFound(format!(
            "the applied manifest of {p} has no pipeline {name}"
        )));
    }
    let slot = format!("manual:{}", uuid::Uuid::new_v4().simple());
    app.queue.push(&p, &name, slot.clone());
    Ok((StatusCode::ACCEPTED, Json(json!({ "slot": slot }))))
}

#[derive(Deserialize)]
struct RunsQuery {
    limit: Option<i64>,
}

async fn runs(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Read)?;
    let r = blocking(&app, move |a| {
        a.store.runs(&p, q.limit.unwrap_or(100).clamp(1, 10_000))
    })
    .await?;
    Ok(Json(
        serde_json::to_value(r).map_err(|e| Error::Internal(e.to_string()))?,
    ))
}

async fn status(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Read)?;
    blocking(&app, move |a| {
        existing(a, &p)?;
        let now = chrono::Utc::now();
        let applied = a.store.manifest(&p, None)?.map(|(v, _)| v);
        let runs = a.store.runs(&p, 1000)?;
        let nodes: Vec<Value> = a
            .store
            .nodes(&p)?
            .into_iter()
            .map(|(id, seen)| {
                let mine: Vec<&crate::store::RunRow> = runs.iter().filter(|r| r.node == id).collect();
                json!({
                    "id": id,
                    "last_seen": seen,
                    "alive": crate::dispatch::alive(a, &seen, now),
                    "runs": mine.len(),
                    "running": mine.iter().filter(|r| r.state == "assigned").map(|r| &r.pipeline).collect::<Vec<_>>(),
                    "failed": mine.iter().filter(|r| r.state == "failed").count(),
                })
            })
            .collect();
        let pipelines: Vec<Value> = crate::dispatch::planned(a, &p)?
            .into_iter()
            .map(|pl| {
                let last = runs.iter().find(|r| r.pipeline == pl.name);
                let waiting = matches!(pl.placement, hakiri_core::types::Placement::Cloudflare(_));
                let next = pl
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_slot(&pl.name, now).ok())
                    .filter(|_| !waiting)
                    .map(|t| t.to_rfc3339());
                // The node a run of it is open on: it alone may run the pipeline now.
                let lease = runs
                    .iter()
                    .find(|r| r.pipeline == pl.name && r.state == "assigned")
                    .map(|r| json!({ "node": r.node, "since": r.assigned_at }));
                json!({
                    "name": pl.name,
                    "placement": pl.placement.to_string(),
                    "note": if waiting { Some("needs the Cloudflare substrate, which does not exist yet: not dispatched") } else { None },
                    "last_run": last,
                    "next_run": next,
                    "lease": lease,
                })
            })
            .collect();
        Ok(Json(json!({ "project": p, "applied_version": applied, "nodes": nodes, "pipelines": pipelines })))
    })
    .await
}

#[derive(Deserialize)]
struct SyncQuery {
    token: Option<String>,
}

async fn sync(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<SyncQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let token = q.token.or_else(|| token_of(&headers));
    ws.max_message_size(loro_protocol::MAX_MESSAGE_SIZE + 1024)
        .max_frame_size(loro_protocol::MAX_MESSAGE_SIZE + 1024)
        .on_upgrade(move |socket| crate::ws::serve_socket(socket, app, token))
}

#[derive(Deserialize)]
struct QueryBody {
    sql: String,
    /// The node to ask (default: the first heartbeating node).
    node: Option<String>,
}

/// Forgets a console query when its request goes away (the page's Cancel, a timeout).
struct Asked<'a>(&'a App, String);

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        self.0.queries.forget(&self.1);
    }
}

/// The heartbeating node `want`, or the first one.
async fn pick_node(app: &Arc<App>, p: &str, want: Option<String>) -> Result<String> {
    let pp = p.to_string();
    blocking(app, move |a| {
        existing(a, &pp)?;
        let now = chrono::Utc::now();
        let alive: Vec<String> = a
            .store
            .nodes(&pp)?
            .into_iter()
            .filter(|(_, seen)| crate::dispatch::alive(a, seen, now))
            .map(|(id, _)| id)
            .collect();
        match want {
            Some(n) if alive.contains(&n) => Ok(n),
            Some(n) => Err(Error::NotFound(format!(
                "node {n} of {pp} is not heartbeating: `hakiri team status` lists the nodes"
            ))),
            None => alive.into_iter().next().ok_or_else(|| {
                Error::NotFound(format!(
                    "no node of {pp} is heartbeating to answer: start one with `hakiri serve --control`"
                ))
            }),
        }
    })
    .await
}

/// Asks `node` a read-only query; its `{columns, rows, row_count, truncated}`.
async fn ask_node(app: &App, p: &str, node: &str, sql: &str) -> Result<Value> {
    let (id, rx) = app.queries.ask(p, node, sql);
    let _asked = Asked(app, id);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(120), rx)
        .await
        .map_err(|_| Error::Remote(format!("node {node} did not answer within 2 minutes")))?
        .map_err(|_| Error::Remote(format!("node {node} dropped the query")))?;
    if answer["ok"].as_bool() == Some(true) {
        Ok(answer["result"].clone())
    } else {
        Err(Error::Invalid(
            answer["error"]
                .as_str()
                .unwrap_or("the query failed")
                .to_string(),
        ))
    }
}

/// The query console: read-only SQL over a node's context store, handed to the node with
/// its next heartbeat; the answer is `context.query`'s `{columns, rows, row_count,
/// truncated}`.
async fn query(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Json(b): Json<QueryBody>,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Read)?;
    let node = pick_node(&app, &p, b.node).await?;
    Ok(Json(ask_node(&app, &p, &node, &b.sql).await?))
}

#[derive(Deserialize)]
struct NodeQuery {
    node: Option<String>,
}

/// Each context table of a node: its columns now, its schema versions and its schema
/// events (`hakiri.schema_versions`, `hakiri.events`), read on the node like a query.
async fn tables(
    State(app): State<Arc<App>>,
    Path(p): Path<String>,
    headers: HeaderMap,
    Query(q): Query<NodeQuery>,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Read)?;
    let node = pick_node(&app, &p, q.node).await?;
    let versions = ask_node(
        &app,
        &p,
        &node,
        "SELECT table_name, version, schema, run_id, CAST(created_at AS VARCHAR) AS created_at \
         FROM hakiri.schema_versions ORDER BY table_name, version",
    );
    let events = ask_node(
        &app,
        &p,
        &node,
        "SELECT CAST(at AS VARCHAR) AS at, kind, subject, message, run_id FROM hakiri.events \
         WHERE kind IN ('table_created', 'column_added', 'column_widened', 'column_variant', 'schema_drift') \
         ORDER BY at",
    );
    let (versions, events) = tokio::try_join!(versions, events)?;
    let rows = |v: &Value| v["rows"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = rows(&versions)
        .iter()
        .filter_map(|r| r[0].as_str().map(str::to_string))
        .collect();
    names.dedup();
    let mut out = Vec::new();
    for t in names {
        // Names come from the catalog (validated identifiers), quoted all the same.
        let columns = ask_node(&app, &p, &node, &format!("SELECT * FROM \"{t}\" LIMIT 0"))
            .await
            .map(|r| r["columns"].clone())
            .unwrap_or_else(|_| json!([]));
        let versions: Vec<Value> = rows(&versions)
            .iter()
            .filter(|r| r[0] == t.as_str())
            .map(|r| json!({ "version": r[1], "schema": r[2], "run_id": r[3], "created_at": r[4] }))
            .collect();
        let schema_events: Vec<Value> = rows(&events)
            .iter()
            .filter(|r| {
                r[2].as_str()
                    .is_some_and(|s| s == t || s == format!("context.{t}"))
            })
            .map(|r| json!({ "at": r[0], "kind": r[1], "message": r[3], "run_id": r[4] }))
            .collect();
        out.push(json!({ "table": t, "columns": columns, "versions": versions, "schema_events": schema_events }));
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
struct AnswerBody {
    node: String,
    ok: bool,
    result: Option<Value>,
    error: Option<String>,
}

async fn query_answer(
    State(app): State<Arc<App>>,
    Path((p, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(b): Json<AnswerBody>,
) -> Result<StatusCode> {
    node_of(&app, &headers, &p, &b.node)?;
    let answer = json!({ "ok": b.ok, "result": b.result, "error": b.error });
    if app.queries.answer(&p, &b.node, &id, answer) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Ok(StatusCode::GONE)
    }
}

/// One run, with its log (the node's events for it) and trace (the phases its `run_trace`
/// event measured), read on the node that ran it.
async fn run_detail(
    State(app): State<Arc<App>>,
    Path((p, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    authorize(&app, &headers, &p, Right::Read)?;
    let pp = p.clone();
    let run = blocking(&app, move |a| a.store.run(&pp, id))
        .await?
        .ok_or_else(|| Error::NotFound(format!("project {p} has no run {id}")))?;
    let mut out = serde_json::to_value(&run).map_err(|e| Error::Internal(e.to_string()))?;
    let Some(engine_run) = run.engine_run.clone() else {
        out["log"] = json!(format!("run {id} has not reported yet ({})", run.state));
        return Ok(Json(out));
    };
    let node = match pick_node(&app, &p, Some(run.node.clone())).await {
        Ok(n) => n,
        Err(e) => {
            out["log"] = json!(format!("the log is on node {}: {e}", run.node));
            return Ok(Json(out));
        }
    };
    // Run ids are the node's own (`name-time-hex`); quoted as a SQL string all the same.
    let sql = format!(
        "SELECT CAST(at AS VARCHAR) AS at, kind, message FROM hakiri.events WHERE run_id = '{}' ORDER BY at",
        engine_run.replace('\'', "''")
    );
    let events = ask_node(&app, &p, &node, &sql).await?;
    let rows = events["rows"].as_array().cloned().unwrap_or_default();
    let log: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r[0].as_str().unwrap_or(""),
                r[1].as_str().unwrap_or(""),
                r[2].as_str().unwrap_or("")
            )
        })
        .collect();
    // `plan=1.2ms fetch=...`: the phases one after another (fetch, decode and write overlap
    // in the run; the trace shows how long each took, not when).
    let mut trace = Vec::new();
    if let Some(msg) = rows
        .iter()
        .find(|r| r[1] == "run_trace")
        .and_then(|r| r[2].as_str())
    {
        let mut start = 0.0;
        for part in msg.split_whitespace() {
            let Some((name, v)) = part.split_once('=') else {
                continue;
            };
            let Some(ms) = v.strip_suffix("ms").and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            if name == "total" {
                continue;
            }
            trace.push(json!({ "name": name, "start_ms": start, "duration_ms": ms }));
            // Tenths of a millisecond, as the trace gives them (no float noise in the sum).
            start = ((start + ms) * 10.0).round() / 10.0;
        }
    }
    out["log"] = json!(log.join("\n"));
    out["trace"] = json!(trace);
    Ok(Json(out))
}
