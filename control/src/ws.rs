//! The document socket (`GET /sync`): the Loro sync protocol (`loro-protocol` 0.3 framing,
//! as the npm `loro-websocket` client speaks it) over a websocket.
//!
//! A connection joins rooms (a room is a project; `%LOR` is its document, `%EPH` its
//! presence, relayed and never stored). A join is authorised by the token in the join's
//! `auth` bytes, else by the connection's (`Authorization`, `?token=` or the sign-in
//! cookie): `read` to join, `edit` to write. The server answers with its version and sends
//! what the client lacks; from then on accepted updates are relayed to the room. Messages
//! over the protocol's 256 KiB limit are fragmented both ways. A malformed or oversized
//! message closes that connection only.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use loro::VersionVector;
use loro_protocol::{
    BatchId, CrdtType, JoinErrorCode, MAX_MESSAGE_SIZE, Permission, ProtocolMessage,
    UpdateStatusCode, decode, encode,
};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::App;
use crate::room::{Refused, Relay, Room};
use crate::token::Right;

/// Fragment payload size: the JS client's own limit (room for the envelope below 256 KiB).
const FRAGMENT: usize = 240 * 1024;
/// A fragmented batch not complete after this is dropped (the protocol's 10 s).
const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reassembled update accepted (a whole document import fits many times over).
const MAX_BATCH: u64 = 64 * 1024 * 1024;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

struct Joined {
    permission: Permission,
    token: Option<String>,
    forward: JoinHandle<()>,
}

struct Partial {
    crdt: CrdtType,
    room: String,
    parts: Vec<Option<Vec<u8>>>,
    received: u64,
    total: u64,
    started: Instant,
}

struct Conn {
    id: u64,
    app: Arc<App>,
    token: Option<String>,
    out: mpsc::Sender<Message>,
    rooms: HashMap<([u8; 4], String), Joined>,
    partial: HashMap<[u8; 8], Partial>,
}

/// Why the loop closes the socket: (close code, reason).
type Close = (u16, String);

pub async fn serve_socket(socket: WebSocket, app: Arc<App>, token: Option<String>) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut rx) = mpsc::channel::<Message>(4096);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let closing = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut conn = Conn {
        id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        app,
        token,
        out: out.clone(),
        rooms: HashMap::new(),
        partial: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let close: Option<Close> = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                None => break None,
                Some(Err(e)) => break Some((1009, format!("message refused: {e}"))),
                Some(Ok(Message::Text(t))) => {
                    if t.as_str() == "ping" {
                        let _ = out.send(Message::Text("pong".into())).await;
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if b.len() > MAX_MESSAGE_SIZE {
                        break Some((1009, format!("message of {} bytes is over the protocol's {MAX_MESSAGE_SIZE}", b.len())));
                    }
                    match decode(&b) {
                        Ok(m) => if let Err(c) = conn.handle(m).await { break Some(c) },
                        Err(e) => break Some((1002, format!("malformed message: {e}"))),
                    }
                }
                Some(Ok(Message::Close(_))) => break None,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => conn.expire_fragments().await,
        }
    };
    for (_, j) in conn.rooms.drain() {
        j.forward.abort();
    }
    if let Some((code, reason)) = close {
        tracing::info!(conn = conn.id, code, "closing a document socket: {reason}");
        let mut reason = reason;
        reason.truncate(120);
        let _ = out
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    drop(out);
    drop(conn);
    let _ = writer.await;
}

impl Conn {
    async fn send(&self, m: &ProtocolMessage) -> Result<(), Close> {
        let bytes = encode(m).map_err(|e| (1011, format!("encode: {e}")))?;
        self.out
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|_| (1011, "connection gone".to_string()))
    }

    async fn ack(
        &self,
        crdt: CrdtType,
        room: &str,
        batch: [u8; 8],
        status: UpdateStatusCode,
    ) -> Result<(), Close> {
        self.send(&ProtocolMessage::Ack {
            crdt,
            room_id: room.to_string(),
            ref_id: BatchId(batch),
            status,
        })
        .await
    }

    async fn handle(&mut self, m: ProtocolMessage) -> Result<(), Close> {
        match m {
            ProtocolMessage::JoinRequest {
                crdt,
                room_id,
                auth,
                version,
            } => self.join(crdt, room_id, auth, version).await,
            ProtocolMessage::DocUpdate {
                crdt,
                room_id,
                updates,
                batch_id,
            } => self.update(crdt, &room_id, updates, batch_id.0).await,
            ProtocolMessage::DocUpdateFragmentHeader {
                crdt,
                room_id,
                batch_id,
                fragment_count,
                total_size_bytes,
            } => {
                if !self
                    .rooms
                    .contains_key(&(crdt.magic_bytes(), room_id.clone()))
                {
                    return self
                        .ack(
                            crdt,
                            &room_id,
                            batch_id.0,
                            UpdateStatusCode::PermissionDenied,
                        )
                        .await;
                }
                if total_size_bytes > MAX_BATCH
                    || fragment_count == 0
                    || fragment_count > MAX_BATCH / 1024
                {
                    return self
                        .ack(
                            crdt,
                            &room_id,
                            batch_id.0,
                            UpdateStatusCode::PayloadTooLarge,
                        )
                        .await;
                }
                self.partial.insert(
                    batch_id.0,
                    Partial {
                        crdt,
                        room: room_id,
                        parts: vec![None; fragment_count as usize],
                        received: 0,
                        total: total_size_bytes,
                        started: Instant::now(),
                    },
                );
                Ok(())
            }
            ProtocolMessage::DocUpdateFragment {
                crdt,
                room_id,
                batch_id,
                index,
                fragment,
            } => {
                let Some(p) = self.partial.get_mut(&batch_id.0) else {
                    return self
                        .ack(
                            crdt,
                            &room_id,
                            batch_id.0,
                            UpdateStatusCode::FragmentTimeout,
                        )
                        .await;
                };
                let Some(slot) = p.parts.get_mut(index as usize) else {
                    self.partial.remove(&batch_id.0);
                    return self
                        .ack(crdt, &room_id, batch_id.0, UpdateStatusCode::InvalidUpdate)
                        .await;
                };
                if slot.is_none() {
                    p.received += 1;
                }
                *slot = Some(fragment);
                if p.received < p.parts.len() as u64 {
                    return Ok(());
                }
                let p = self.partial.remove(&batch_id.0).expect("present");
                let whole: Vec<u8> = p.parts.into_iter().flatten().flatten().collect();
                if whole.len() as u64 != p.total {
                    return self
                        .ack(p.crdt, &p.room, batch_id.0, UpdateStatusCode::InvalidUpdate)
                        .await;
                }
                self.update(p.crdt, &p.room, vec![whole], batch_id.0).await
            }
            ProtocolMessage::Leave { crdt, room_id } => {
                if let Some(j) = self.rooms.remove(&(crdt.magic_bytes(), room_id)) {
                    j.forward.abort();
                }
                Ok(())
            }
            ProtocolMessage::Ack { status, .. } => {
                if status != UpdateStatusCode::Ok {
                    tracing::debug!(conn = self.id, ?status, "a client refused an update");
                }
                Ok(())
            }
            // Server-to-client messages sent by a client: a protocol error.
            other => Err((
                1002,
                format!("unexpected message from a client: {other:?}")
                    .chars()
                    .take(100)
                    .collect(),
            )),
        }
    }

    async fn join(
        &mut self,
        crdt: CrdtType,
        room_id: String,
        auth: Vec<u8>,
        version: Vec<u8>,
    ) -> Result<(), Close> {
        let join_error = |code, message: String, receiver_version| ProtocolMessage::JoinError {
            crdt,
            room_id: room_id.clone(),
            code,
            message,
            receiver_version,
            app_code: None,
        };
        let token = if auth.is_empty() {
            self.token.clone()
        } else {
            String::from_utf8(auth).ok()
        };
        let app = self.app.clone();
        let checked = match token.as_deref() {
            None => Err(crate::token::TokenError::Missing),
            Some(t) => app.keys.authorize(t, &room_id, Right::Read).map(|_| t),
        };
        if let Err(e) = checked {
            return self
                .send(&join_error(JoinErrorCode::AuthFailed, e.to_string(), None))
                .await;
        }
        let permission = match token
            .as_deref()
            .map(|t| app.keys.authorize(t, &room_id, Right::Edit))
        {
            Some(Ok(_)) => Permission::Write,
            _ => Permission::Read,
        };
        match app.store.project_exists(&room_id) {
            Ok(true) => {}
            Ok(false) => {
                let m =
                    format!("no project {room_id}: create it with `hakiri team init {room_id}`");
                return self
                    .send(&join_error(JoinErrorCode::Unknown, m, None))
                    .await;
            }
            Err(e) => {
                return self
                    .send(&join_error(JoinErrorCode::Unknown, e.to_string(), None))
                    .await;
            }
        }
        let room = match app.rooms.get(&room_id, &app.store) {
            Ok(r) => r,
            Err(e) => {
                return self
                    .send(&join_error(JoinErrorCode::Unknown, e.to_string(), None))
                    .await;
            }
        };
        if let Some(old) = self.rooms.remove(&(crdt.magic_bytes(), room_id.clone())) {
            old.forward.abort();
        }
        match crdt {
            CrdtType::Loro => {
                let vv = if version.is_empty() {
                    VersionVector::default()
                } else {
                    match VersionVector::decode(&version) {
                        Ok(v) => v,
                        Err(_) => {
                            let mine = Some(room.version().encode());
                            let m =
                                "the version vector does not decode: join with an empty version"
                                    .to_string();
                            return self
                                .send(&join_error(JoinErrorCode::VersionUnknown, m, mine))
                                .await;
                        }
                    }
                };
                let (server_version, missing) =
                    room.join(&vv).map_err(|e| (1011, e.to_string()))?;
                // Subscribe before answering, so nothing accepted in between is missed.
                let rx = room.relay.subscribe();
                self.send(&ProtocolMessage::JoinResponseOk {
                    crdt,
                    room_id: room_id.clone(),
                    permission,
                    version: server_version,
                    extra: None,
                })
                .await?;
                if let Some(m) = missing {
                    for f in frames(crdt, &room_id, vec![m], crate::room::rand_batch()) {
                        self.out
                            .send(Message::Binary(f.into()))
                            .await
                            .map_err(|_| (1011, "gone".to_string()))?;
                    }
                }
                let forward = forward(self.id, crdt, room_id.clone(), rx, self.out.clone());
                self.rooms.insert(
                    (crdt.magic_bytes(), room_id),
                    Joined {
                        permission,
                        token,
                        forward,
                    },
                );
                Ok(())
            }
            CrdtType::LoroEphemeralStore => {
                let rx = room.presence.subscribe();
                self.send(&ProtocolMessage::JoinResponseOk {
                    crdt,
                    room_id: room_id.clone(),
                    permission,
                    version: Vec::new(),
                    extra: None,
                })
                .await?;
                let forward = forward(self.id, crdt, room_id.clone(), rx, self.out.clone());
                self.rooms.insert(
                    (crdt.magic_bytes(), room_id),
                    Joined {
                        permission,
                        token,
                        forward,
                    },
                );
                Ok(())
            }
            other => {
                let m = format!(
                    "{other:?} rooms are not served here: use %LOR (the document) or %EPH (presence)"
                );
                self.send(&join_error(JoinErrorCode::Unknown, m, None))
                    .await
            }
        }
    }

    async fn update(
        &mut self,
        crdt: CrdtType,
        room_id: &str,
        updates: Vec<Vec<u8>>,
        batch: [u8; 8],
    ) -> Result<(), Close> {
        let Some(joined) = self.rooms.get(&(crdt.magic_bytes(), room_id.to_string())) else {
            return self
                .ack(crdt, room_id, batch, UpdateStatusCode::PermissionDenied)
                .await;
        };
        // The token is checked again on every write: it may have expired since the join.
        let still = joined.permission == Permission::Write
            && joined
                .token
                .as_deref()
                .is_some_and(|t| self.app.keys.authorize(t, room_id, Right::Edit).is_ok());
        if !still {
            return self
                .ack(crdt, room_id, batch, UpdateStatusCode::PermissionDenied)
                .await;
        }
        let room: Arc<Room> = match self.app.rooms.get(room_id, &self.app.store) {
            Ok(r) => r,
            Err(_) => {
                return self
                    .ack(crdt, room_id, batch, UpdateStatusCode::Unknown)
                    .await;
            }
        };
        if crdt == CrdtType::LoroEphemeralStore {
            let _ = room.presence.send(Relay {
                from: self.id,
                updates: Arc::new(updates),
                batch_id: batch,
            });
            return self.ack(crdt, room_id, batch, UpdateStatusCode::Ok).await;
        }
        let app = self.app.clone();
        let id = self.id;
        // SQLite's fsync blocks: off the async workers.
        let result =
            tokio::task::spawn_blocking(move || room.apply(&app.store, id, updates, batch))
                .await
                .map_err(|e| (1011, e.to_string()))?;
        let status = match result {
            Ok(()) => UpdateStatusCode::Ok,
            Err(Refused::Invalid(e)) => {
                tracing::info!(
                    conn = id,
                    room = room_id,
                    "refused an update that does not decode: {e}"
                );
                UpdateStatusCode::InvalidUpdate
            }
            Err(Refused::Store(e)) => {
                tracing::error!(conn = id, room = room_id, "could not log an update: {e}");
                UpdateStatusCode::Unknown
            }
        };
        self.ack(crdt, room_id, batch, status).await
    }

    async fn expire_fragments(&mut self) {
        let expired: Vec<[u8; 8]> = self
            .partial
            .iter()
            .filter(|(_, p)| p.started.elapsed() > FRAGMENT_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(p) = self.partial.remove(&k) {
                let _ = self
                    .ack(p.crdt, &p.room, k, UpdateStatusCode::FragmentTimeout)
                    .await;
            }
        }
    }
}

/// Relays a room's accepted updates to one connection (not back to their sender).
fn forward(
    me: u64,
    crdt: CrdtType,
    room: String,
    mut rx: broadcast::Receiver<Relay>,
    out: mpsc::Sender<Message>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(r) if r.from == me => {}
                Ok(r) => {
                    for f in frames(crdt, &room, r.updates.to_vec(), r.batch_id) {
                        if out.send(Message::Binary(f.into())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // It missed updates: closing makes the client rejoin with its version
                    // and be sent what it lacks.
                    let reason = format!("fell {n} updates behind: rejoin");
                    let _ = out
                        .send(Message::Close(Some(CloseFrame {
                            code: 1013,
                            reason: reason.into(),
                        })))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

/// The wire messages carrying `updates`: one `DocUpdate` when it fits the protocol's
/// limit, else one per update, each too-large update as a header and its fragments.
pub fn frames(crdt: CrdtType, room: &str, updates: Vec<Vec<u8>>, batch: [u8; 8]) -> Vec<Vec<u8>> {
    let whole = ProtocolMessage::DocUpdate {
        crdt,
        room_id: room.to_string(),
        updates,
        batch_id: BatchId(batch),
    };
    if let Ok(b) = encode(&whole) {
        return vec![b];
    }
    let ProtocolMessage::DocUpdate { updates, .. } = whole else {
        unreachable!()
    };
    let mut out = Vec::new();
    for u in updates {
        let batch_id = BatchId(crate::room::rand_batch());
        let single = ProtocolMessage::DocUpdate {
            crdt,
            room_id: room.to_string(),
            updates: vec![u],
            batch_id,
        };
        if let Ok(b) = encode(&single) {
            out.push(b);
            continue;
        }
        let ProtocolMessage::DocUpdate { mut updates, .. } = single else {
            unreachable!()
        };
        let u = updates.pop().expect("one update");
        let chunks: Vec<&[u8]> = u.chunks(FRAGMENT).collect();
        out.extend(encode(&ProtocolMessage::DocUpdateFragmentHeader {
            crdt,
            room_id: room.to_string(),
            batch_id,
            fragment_count: chunks.len() as u64,
            total_size_bytes: u.len() as u64,
        }));
        for (i, c) in chunks.iter().enumerate() {
            out.extend(encode(&ProtocolMessage::DocUpdateFragment {
                crdt,
                room_id: room.to_string(),
                batch_id,
                index: i as u64,
                fragment: c.to_vec(),
            }));
        }
    }
    out
}
