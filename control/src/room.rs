//! A project's live document: the `LoroDoc` every client converges on, its durable update
//! log, and the channel that relays each accepted update to the room's other connections.
//!
//! An update is imported, then written to the log (`synchronous = FULL`), and only then
//! acknowledged and relayed: an acknowledged update survives `kill -9`. Every
//! [`COMPACT_EVERY`] updates the log is folded into a snapshot in one transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use loro::{ExportMode, LoroDoc, VersionVector};
use tokio::sync::broadcast;

use crate::store::Store;
use crate::{Error, Result};

/// Log length after which the document is snapshotted and the log truncated.
pub const COMPACT_EVERY: i64 = 1000;

/// An accepted update, relayed to the room's connections other than `from`.
#[derive(Debug, Clone)]
pub struct Relay {
    pub from: u64,
    pub updates: Arc<Vec<Vec<u8>>>,
    pub batch_id: [u8; 8],
}

pub struct Room {
    pub project: String,
    state: Mutex<RoomState>,
    pub relay: broadcast::Sender<Relay>,
    /// Presence (`%EPH`): relayed, never stored.
    pub presence: broadcast::Sender<Relay>,
}

struct RoomState {
    doc: LoroDoc,
    /// The last logged sequence number.
    seq: i64,
    /// Updates logged since the last snapshot.
    since_snapshot: i64,
}

/// Why an update was refused (mapped to the protocol's status codes by the socket).
#[derive(Debug)]
pub enum Refused {
    Invalid(String),
    Store(Error),
}

impl Room {
    fn load(project: &str, store: &Store) -> Result<Room> {
        let (snapshot, updates, seq) = store.load_doc(project)?;
        let doc = LoroDoc::new();
        if let Some(s) = snapshot {
            doc.import(&s).map_err(|e| {
                Error::Store(format!(
                    "project {project}: its snapshot does not load: {e}"
                ))
            })?;
        }
        if !updates.is_empty() {
            doc.import_batch(&updates).map_err(|e| {
                Error::Store(format!(
                    "project {project}: its update log does not load: {e}"
                ))
            })?;
        }
        let (relay, _) = broadcast::channel(1024);
        let (presence, _) = broadcast::channel(1024);
        Ok(Room {
            project: project.to_string(),
            state: Mutex::new(RoomState {
                since_snapshot: updates.len() as i64,
                doc,
                seq,
            }),
            relay,
            presence,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server's version and what a client at `client` lacks (`None` when nothing).
    pub fn join(&self, client: &VersionVector) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let st = self.lock();
        let version = st.doc.oplog_vv();
        if client >= &version {
            return Ok((version.encode(), None));
        }
        let missing = st
            .doc
            .export(ExportMode::updates(client))
            .map_err(|e| Error::Internal(format!("export: {e}")))?;
        Ok((version.encode(), Some(missing)))
    }

    /// Imports, logs durably and relays `updates` from connection `from`.
    pub fn apply(
        &self,
        store: &Store,
        from: u64,
        updates: Vec<Vec<u8>>,
        batch_id: [u8; 8],
    ) -> std::result::Result<(), Refused> {
        let updates: Vec<Vec<u8>> = updates.into_iter().filter(|u| !u.is_empty()).collect();
        if updates.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        // A blob that does not decode is refused (Loro decodes before it changes anything);
        // what was imported before it is still logged, so the log matches the document.
        let before = st.doc.oplog_vv();
        let mut refused = None;
        let mut updates = updates;
        for (i, u) in updates.iter().enumerate() {
            if let Err(e) = st.doc.import(u) {
                refused = Some((i, e.to_string()));
                break;
            }
        }
        if let Some((i, _)) = &refused {
            updates.truncate(*i);
        }
        if st.doc.oplog_vv() == before {
            // Nothing new (a client re-sending what we have): relay nothing.
            return refused.map_or(Ok(()), |(_, e)| Err(Refused::Invalid(e)));
        }
        let seq = store
            .append_updates(&self.project, st.seq, &updates)
            .map_err(Refused::Store)?;
        st.seq = seq;
        st.since_snapshot += updates.len() as i64;
        if st.since_snapshot >= COMPACT_EVERY {
            match st.doc.export(ExportMode::Snapshot) {
                Ok(snap) => match store.compact_doc(&self.project, seq, &snap) {
                    Ok(()) => st.since_snapshot = 0,
                    Err(e) => {
                        tracing::warn!(project = %self.project, "snapshot failed (the log stays): {e}")
                    }
                },
                Err(e) => tracing::warn!(project = %self.project, "snapshot export failed: {e}"),
            }
        }
        drop(st);
        let _ = self.relay.send(Relay {
            from,
            updates: Arc::new(updates),
            batch_id,
        });
        refused.map_or(Ok(()), |(_, e)| Err(Refused::Invalid(e)))
    }

    /// A copy of the document as it is now (apply reads a fork, never the live doc).
    pub fn fork(&self) -> LoroDoc {
        self.lock().doc.fork()
    }

    /// The snapshot bytes and their SHA-256 (tests compare clients with it).
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        self.lock()
            .doc
            .export(ExportMode::Snapshot)
            .map_err(|e| Error::Internal(format!("export: {e}")))
    }

    pub fn version(&self) -> VersionVector {
        self.lock().doc.oplog_vv()
    }

    /// Applies a server-side change (`team push` imports a manifest) as one logged update.
    pub fn edit(&self, store: &Store, f: impl FnOnce(&LoroDoc) -> Result<()>) -> Result<()> {
        let bytes = {
            let mut st = self.lock();
            let vv = st.doc.oplog_vv();
            f(&st.doc)?;
            st.doc.commit();
            if st.doc.oplog_vv() == vv {
                return Ok(());
            }
            let bytes = st
                .doc
                .export(ExportMode::updates(&vv))
                .map_err(|e| Error::Internal(format!("export: {e}")))?;
            st.seq = store.append_updates(&self.project, st.seq, std::slice::from_ref(&bytes))?;
            st.since_snapshot += 1;
            bytes
        };
        let _ = self.relay.send(Relay {
            from: 0,
            updates: Arc::new(vec![bytes]),
            batch_id: rand_batch(),
        });
        Ok(())
    }
}

pub fn rand_batch() -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    b
}

/// The open rooms, loaded from the store on first use.
#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

impl Rooms {
    pub fn get(&self, project: &str, store: &Store) -> Result<Arc<Room>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = rooms.get(project) {
            return Ok(r.clone());
        }
        let room = Arc::new(Room::load(project, store)?);
        rooms.insert(project.to_string(), room.clone());
        Ok(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A room reloaded from the store (snapshot plus the log after it) equals the live one,
    /// across a compaction, and a blob that does not decode is refused without a trace.
    #[test]
    fn a_reloaded_room_equals_the_live_one_across_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let room = Room::load("p", &store).unwrap();
        let peer = LoroDoc::new();
        for i in 0..(COMPACT_EVERY + 250) {
            let vv = peer.oplog_vv();
            peer.get_map("pipelines")
                .insert(&format!("k{}", i % 7), i)
                .unwrap();
            peer.get_text("t").insert(0, "x").unwrap();
            peer.commit();
            let u = peer.export(ExportMode::updates(&vv)).unwrap();
            room.apply(&store, 1, vec![u], [0; 8]).unwrap();
        }
        assert!(matches!(
            room.apply(&store, 1, vec![vec![1, 2, 3, 4, 5]], [0; 8]),
            Err(Refused::Invalid(_))
        ));
        let (snapshot, log, _) = store.load_doc("p").unwrap();
        assert!(
            snapshot.is_some(),
            "no snapshot after {COMPACT_EVERY} updates"
        );
        assert!(
            log.len() < COMPACT_EVERY as usize,
            "the log was not truncated"
        );
        let again = Room::load("p", &store).unwrap();
        assert_eq!(again.version(), peer.oplog_vv());
        assert_eq!(
            again.fork().get_deep_value(),
            peer.get_deep_value(),
            "the reloaded document differs"
        );
        assert_eq!(room.version(), again.version());
    }
}
