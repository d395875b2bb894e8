//! The control plane's clients: [`Api`] (HTTP, for the `hakiri team` commands), [`DocClient`]
//! (a Rust peer of the document socket, for tools, tests and benchmarks), and [`run_node`]
//! (the loop of `hakiri serve --control`).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use loro::{ExportMode, LoroDoc, VersionVector};
use loro_protocol::{CrdtType, Permission, ProtocolMessage, UpdateStatusCode, decode, encode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::store::RunRow;
use crate::{Error, Result};

/// The HTTP API with a token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a reqwest client builds"),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| {
            Error::Remote(format!(
                "cannot reach the control plane at {}: {e}; is `hakiri control serve` running there?",
                self.base
            ))
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| Error::Remote(e.to_string()))?;
        Ok((status, text))
    }

    /// Calls `path`, returning the JSON body, or the server's error message.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, text) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            if text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| Error::Remote(format!("{path}: {e}")));
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        Err(Error::Remote(format!("{} ({status})", message.trim())))
    }

    pub async fn text(&self, path: &str) -> Result<String> {
        let (status, text) = self.call(reqwest::Method::GET, path, None).await?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(Error::Remote(format!("{} ({status})", text.trim())))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.json(reqwest::Method::POST, path, Some(body)).await
    }
}

// --- the document peer

#[derive(Default)]
struct PeerState {
    connected: bool,
    permission: Option<Permission>,
    /// Updates sent and not acknowledged yet.
    unacked: usize,
    /// Local commits not sent yet (while connected).
    pending: usize,
    /// Non-Ok acknowledgements received.
    refused: Vec<UpdateStatusCode>,
    join_error: Option<String>,
}

/// A Rust peer of `GET /sync`: keeps `doc` in sync with the room while connected.
pub struct DocClient {
    pub doc: LoroDoc,
    url: String,
    room: String,
    token: String,
    state: Arc<Mutex<PeerState>>,
    /// Held by imports and by [`DocClient::edit`]: an edit that reads positions (a text
    /// offset, a list index) sees no import land between its read and its write.
    imports: Arc<Mutex<()>>,
    session: Option<(tokio::task::JoinHandle<()>, watch::Sender<bool>)>,
}

impl DocClient {
    /// Connects and joins; returns once joined (or with the join error).
    pub async fn connect(url: &str, room: &str, token: &str, doc: LoroDoc) -> Result<DocClient> {
        let mut c = DocClient {
            doc,
            url: url.into(),
            room: room.into(),
            token: token.into(),
            state: Arc::default(),
            imports: Arc::default(),
            session: None,
        };
        c.reconnect().await?;
        Ok(c)
    }

    /// Runs `f` on the document with imports held off, then commits.
    pub fn edit<T>(&self, f: impl FnOnce(&LoroDoc) -> T) -> T {
        let _g = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&self.doc);
        self.doc.commit();
        out
    }

    pub fn permission(&self) -> Option<Permission> {
        self.lock().permission
    }

    pub fn refused(&self) -> Vec<UpdateStatusCode> {
        self.lock().refused.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connected(&self) -> bool {
        self.lock().connected
    }

    /// Drops the connection (local edits go on and are sent on the next connect).
    pub async fn disconnect(&mut self) {
        if let Some((task, stop)) = self.session.take() {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let mut s = self.lock();
        s.connected = false;
        s.unacked = 0;
        s.pending = 0;
    }

    pub async fn reconnect(&mut self) -> Result<()> {
        self.disconnect().await;
        {
            let mut s = self.lock();
            s.join_error = None;
            s.permission = None;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (joined_tx, joined_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(session(
            (self.url.clone(), self.room.clone(), self.token.clone()),
            self.doc.clone(),
            self.state.clone(),
            self.imports.clone(),
            stop_rx,
            joined_tx,
        ));
        self.session = Some((task, stop_tx));
        match tokio::time::timeout(Duration::from_secs(20), joined_rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Error::Remote(e)),
            _ => Err(Error::Remote(format!(
                "joining room {} at {} timed out",
                self.room, self.url
            ))),
        }
    }

    /// Waits until every sent update is acknowledged and the doc has reached `version`.
    pub async fn settle(&self, version: Option<&VersionVector>, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let (unacked, connected) = {
                let s = self.lock();
                (s.unacked + s.pending, s.connected)
            };
            let reached = version.is_none_or(|v| &self.doc.oplog_vv() >= v);
            if connected && unacked == 0 && reached {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Remote(format!(
                    "not settled after {timeout:?}: connected {connected}, {unacked} unacknowledged, version reached {reached}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for DocClient {
    fn drop(&mut self) {
        if let Some((task, _)) = self.session.take() {
            task.abort();
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where a session connects: the socket's URL, the room, the token.
type Target = (String, String, String);

async fn session(
    (url, room, token): Target,
    doc: LoroDoc,
    state: Arc<Mutex<PeerState>>,
    imports: Arc<Mutex<()>>,
    mut stop: watch::Receiver<bool>,
    joined: tokio::sync::oneshot::Sender<std::result::Result<(), String>>,
) {
    let result = session_inner(
        &url,
        &room,
        &token,
        (&doc, &state, &imports),
        &mut stop,
        joined,
    )
    .await;
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.connected = false;
    s.pending = 0;
    if let Err(e) = result {
        tracing::debug!(room, "document session ended: {e}");
    }
}

async fn session_inner(
    url: &str,
    room: &str,
    token: &str,
    (doc, state, imports): (&LoroDoc, &Arc<Mutex<PeerState>>, &Mutex<()>),
    stop: &mut watch::Receiver<bool>,
    joined: tokio::sync::oneshot::Sender<std::result::Result<(), String>>,
) -> std::result::Result<(), String> {
    let (mut ws, _) = match tokio_tungstenite::connect_async(url).await {
        Ok(x) => x,
        Err(e) => {
            let _ = joined.send(Err(format!("cannot connect to {url}: {e}")));
            return Err(e.to_string());
        }
    };
    // Local edits from here on are queued; the join's diff covers the ones before.
    let (local_tx, mut local_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let counter = state.clone();
    let _sub = doc.subscribe_local_update(Box::new(move |u| {
        counter.lock().unwrap_or_else(|p| p.into_inner()).pending += 1;
        local_tx.send(u.clone()).is_ok()
    }));
    let join = ProtocolMessage::JoinRequest {
        crdt: CrdtType::Loro,
        room_id: room.into(),
        auth: token.as_bytes().to_vec(),
        version: doc.oplog_vv().encode(),
    };
    send(&mut ws, &join).await?;
    let mut joined = Some(joined);
    // Fragmented updates being reassembled: batch id → (parts, parts received).
    type Parts = (Vec<Option<Vec<u8>>>, usize);
    let mut partial: HashMap<[u8; 8], Parts> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            Some(u) = local_rx.recv(), if joined.is_none() => {
                send_updates(&mut ws, room, vec![u], state).await?;
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.pending = s.pending.saturating_sub(1);
            }
            msg = ws.next() => {
                let msg = match msg {
                    None => return Err("closed".into()),
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(m)) => m,
                };
                let bytes = match msg {
                    Message::Binary(b) => b,
                    Message::Text(t) if t.as_str() == "ping" => {
                        ws.send(Message::Text("pong".into())).await.map_err(|e| e.to_string())?;
                        continue;
                    }
                    Message::Close(f) => return Err(format!("closed by the server: {f:?}")),
                    _ => continue,
                };
                let m = decode(&bytes)?;
                match m {
                    ProtocolMessage::JoinResponseOk { permission, version, .. } => {
                        let server = VersionVector::decode(&version).map_err(|e| e.to_string())?;
                        // What was queued before now is in the diff below (an edit made
                        // in between is sent twice, which the server ignores).
                        while local_rx.try_recv().is_ok() {
                            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                            s.pending = s.pending.saturating_sub(1);
                        }
                        // Send what the server lacks (edits made while disconnected).
                        let server_has_all = matches!(
                            server.partial_cmp(&doc.oplog_vv()),
                            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                        );
                        if permission == Permission::Write && !server_has_all {
                            let u = doc.export(ExportMode::updates(&server)).map_err(|e| e.to_string())?;
                            send_updates(&mut ws, room, vec![u], state).await?;
                        }
                        {
                            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                            s.connected = true;
                            s.permission = Some(permission);
                        }
                        if let Some(j) = joined.take() {
                            let _ = j.send(Ok(()));
                        }
                    }
                    ProtocolMessage::JoinError { code, message, .. } => {
                        let e = format!("join refused ({code:?}): {message}");
                        state.lock().unwrap_or_else(|p| p.into_inner()).join_error = Some(e.clone());
                        if let Some(j) = joined.take() {
                            let _ = j.send(Err(e.clone()));
                        }
                        return Err(e);
                    }
                    ProtocolMessage::DocUpdate { updates, .. } => {
                        let _g = imports.lock().unwrap_or_else(|p| p.into_inner());
                        doc.import_batch(&updates).map_err(|e| e.to_string())?;
                    }
                    ProtocolMessage::DocUpdateFragmentHeader { batch_id, fragment_count, .. } => {
                        partial.insert(batch_id.0, (vec![None; fragment_count as usize], 0));
                    }
                    ProtocolMessage::DocUpdateFragment { batch_id, index, fragment, .. } => {
                        if let Some((parts, got)) = partial.get_mut(&batch_id.0) {
                            if let Some(slot) = parts.get_mut(index as usize) {
                                if slot.is_none() { *got += 1; }
                                *slot = Some(fragment);
                            }
                            if *got == parts.len() {
                                let (parts, _) = partial.remove(&batch_id.0).expect("present");
                                let whole: Vec<u8> = parts.into_iter().flatten().flatten().collect();
                                let _g = imports.lock().unwrap_or_else(|p| p.into_inner());
                                doc.import(&whole).map_err(|e| e.to_string())?;
                            }
                        }
                    }
                    ProtocolMessage::Ack { status, .. } => {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        s.unacked = s.unacked.saturating_sub(1);
                        if status != UpdateStatusCode::Ok {
                            s.refused.push(status);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn send(ws: &mut Ws, m: &ProtocolMessage) -> std::result::Result<(), String> {
    let b = encode(m)?;
    ws.send(Message::Binary(b.into()))
        .await
        .map_err(|e| e.to_string())
}

async fn send_updates(
    ws: &mut Ws,
    room: &str,
    updates: Vec<Vec<u8>>,
    state: &Arc<Mutex<PeerState>>,
) -> std::result::Result<(), String> {
    let batch = crate::room::rand_batch();
    let frames = crate::ws::frames(CrdtType::Loro, room, updates, batch);
    // One acknowledgement per batch: a whole DocUpdate, or a fragmented update.
    let batches = frames
        .iter()
        .filter(|f| {
            matches!(
                decode(f),
                Ok(ProtocolMessage::DocUpdate { .. }
                    | ProtocolMessage::DocUpdateFragmentHeader { .. })
            )
        })
        .count();
    state.lock().unwrap_or_else(|p| p.into_inner()).unacked += batches;
    for f in frames {
        ws.send(Message::Binary(f.into()))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

// --- the node loop

/// What a run on this node came to: rows or the error, and its run id on the node.
pub struct RunOutcome {
    pub result: std::result::Result<i64, String>,
    pub run_id: Option<String>,
}

/// Runs a pipeline on this node.
pub type RunFn =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = RunOutcome> + Send>> + Send + Sync>;
/// Answers a console query on this node: `context.query`'s JSON, or the error.
pub type QueryFn = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::result::Result<Value, String>> + Send>>
        + Send
        + Sync,
>;
/// Installs an applied manifest (version, JSON) on this node.
pub type InstallFn = Arc<dyn Fn(i64, Value) -> std::result::Result<(), String> + Send + Sync>;

pub struct NodeConfig {
    pub api: Api,
    pub project: String,
    pub node_id: String,
    pub heartbeat: Duration,
}

/// Heartbeats, installs each newly applied manifest, runs what the control plane assigns
/// and reports each run, until `stop`. Stops starting runs when heartbeats fail for longer
/// than the control plane's node timeout (it will have reassigned them).
pub async fn run_node(
    cfg: NodeConfig,
    install: InstallFn,
    (run, query): (RunFn, QueryFn),
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut installed: Option<i64> = None;
    let mut last_ok = Instant::now();
    let mut timeout = Duration::from_secs(30);
    let running: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let base = format!("/api/projects/{}/nodes/{}", cfg.project, cfg.node_id);
    loop {
        match cfg.api.post(&format!("{base}/heartbeat"), json!({})).await {
            Ok(beat) => {
                last_ok = Instant::now();
                if let Some(t) = beat["node_timeout_secs"].as_f64() {
                    timeout = Duration::from_secs_f64(t);
                }
                if let Some(v) = beat["applied_version"].as_i64()
                    && installed != Some(v)
                {
                    let m = cfg
                        .api
                        .get(&format!(
                            "/api/projects/{}/manifest?version={v}",
                            cfg.project
                        ))
                        .await?;
                    install(v, m["manifest"].clone()).map_err(Error::Config)?;
                    tracing::info!(version = v, "installed the applied manifest");
                    installed = Some(v);
                }
                for q in beat["queries"].as_array().cloned().unwrap_or_default() {
                    let (api, query) = (cfg.api.clone(), query.clone());
                    let (project, node) = (cfg.project.clone(), cfg.node_id.clone());
                    tokio::spawn(async move {
                        let (id, sql) = (
                            q["id"].as_str().unwrap_or_default().to_string(),
                            q["sql"].as_str().unwrap_or_default(),
                        );
                        let body = match query(sql.to_string()).await {
                            Ok(result) => json!({ "node": node, "ok": true, "result": result }),
                            Err(e) => json!({ "node": node, "ok": false, "error": e }),
                        };
                        if let Err(e) = api
                            .post(
                                &format!("/api/projects/{project}/queries/{id}/answer"),
                                body,
                            )
                            .await
                        {
                            tracing::warn!("answering query {id}: {e}");
                        }
                    });
                }
                let runs: Vec<RunRow> =
                    serde_json::from_value(beat["runs"].clone()).unwrap_or_default();
                for r in runs {
                    if installed.is_none()
                        || !running
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(r.id)
                    {
                        continue;
                    }
                    let (api, run, running) = (cfg.api.clone(), run.clone(), running.clone());
                    let (project, node) = (cfg.project.clone(), cfg.node_id.clone());
                    tokio::spawn(async move {
                        tracing::info!(pipeline = r.pipeline, run = r.id, slot = r.slot, "running");
                        let outcome = run(r.pipeline.clone()).await;
                        let body = match &outcome.result {
                            Ok(rows) => {
                                json!({ "node": node, "ok": true, "rows": rows, "run_id": outcome.run_id })
                            }
                            Err(e) => {
                                json!({ "node": node, "ok": false, "error": e, "run_id": outcome.run_id })
                            }
                        };
                        // Keep trying the report for a while: the run happened either way.
                        for _ in 0..20 {
                            match api
                                .post(
                                    &format!("/api/projects/{project}/runs/{}/report", r.id),
                                    body.clone(),
                                )
                                .await
                            {
                                Ok(_) => break,
                                Err(e) if e.to_string().contains("(409)") => break,
                                Err(e) => {
                                    tracing::warn!("reporting run {}: {e}", r.id);
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            }
                        }
                        running
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&r.id);
                    });
                }
            }
            Err(e) => {
                tracing::warn!("heartbeat failed: {e}");
                if last_ok.elapsed() > timeout {
                    tracing::warn!(
                        "no heartbeat for {timeout:?}: not starting runs until the control plane answers"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.heartbeat) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}
