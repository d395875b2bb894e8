//! The control plane's SQLite database: projects and grants, each project document's update
//! log and snapshot, applied manifest versions, nodes and runs, pending sign-ins.
//!
//! One connection behind a mutex: every statement is short, and SQLite serialises writers
//! anyway. `synchronous = FULL` because an acknowledged document update must survive
//! `kill -9` and a power cut.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys(id INTEGER PRIMARY KEY CHECK (id = 1), private_key BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS projects(id TEXT PRIMARY KEY, created_at TEXT NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grants(project TEXT NOT NULL, sub TEXT NOT NULL, rights TEXT NOT NULL,
    PRIMARY KEY (project, sub));
CREATE TABLE IF NOT EXISTS users(sub TEXT PRIMARY KEY, email TEXT, name TEXT, last_login TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS doc_updates(project TEXT NOT NULL, seq INTEGER NOT NULL, bytes BLOB NOT NULL,
    PRIMARY KEY (project, seq));
CREATE TABLE IF NOT EXISTS doc_snapshots(project TEXT PRIMARY KEY, upto INTEGER NOT NULL, bytes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS versions(project TEXT NOT NULL, version INTEGER NOT NULL, manifest TEXT NOT NULL,
    applied_at TEXT NOT NULL, applied_by TEXT NOT NULL, note TEXT NOT NULL,
    PRIMARY KEY (project, version));
CREATE TABLE IF NOT EXISTS applied(project TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes(project TEXT NOT NULL, id TEXT NOT NULL, registered_at TEXT NOT NULL,
    last_seen TEXT NOT NULL, PRIMARY KEY (project, id));
CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL,
    pipeline TEXT NOT NULL, slot TEXT NOT NULL, node TEXT NOT NULL, state TEXT NOT NULL,
    assigned_at TEXT NOT NULL, finished_at TEXT, rows INTEGER, error TEXT, engine_run TEXT);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs(project, pipeline, slot);
CREATE TABLE IF NOT EXISTS pending_logins(state TEXT PRIMARY KEY, pending TEXT NOT NULL,
    return_to TEXT NOT NULL, created_at TEXT NOT NULL);
";

pub struct Store {
    conn: Mutex<Connection>,
}

/// A run the control plane handed to a node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub project: String,
    pub pipeline: String,
    /// The schedule slot (RFC 3339) the run is for, or `manual:<n>`.
    pub slot: String,
    pub node: String,
    /// assigned, succeeded, failed or lost (its node stopped heartbeating).
    pub state: String,
    pub assigned_at: String,
    pub finished_at: Option<String>,
    pub rows: Option<i64>,
    pub error: Option<String>,
    /// The run's id on its node (`hakiri.runs`, its events), once reported.
    #[serde(default)]
    pub engine_run: Option<String>,
}

/// A node's report of a run.
pub struct Report<'a> {
    pub ok: bool,
    pub rows: Option<i64>,
    pub error: Option<&'a str>,
    /// The run's id on the node.
    pub engine_run: Option<&'a str>,
}

/// One applied manifest version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VersionRow {
    pub version: i64,
    pub applied_at: String,
    pub applied_by: String,
    pub note: String,
    pub current: bool,
}

/// A document as stored: its snapshot, the updates logged after it, the last sequence number.
pub type LoggedDoc = (Option<Vec<u8>>, Vec<Vec<u8>>, i64);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn db(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Store(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("control.db");
        let conn = Connection::open(&path)
            .map_err(|e| Error::Store(format!("cannot open {}: {e}", path.display())))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        // control.db files from before runs kept the node's run id.
        let _ = conn.execute_batch("ALTER TABLE runs ADD COLUMN engine_run TEXT");
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(db)
    }

    /// The token root key's private bytes, made by `make` on first start.
    pub fn root_key(&self, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        self.with(|c| {
            if let Some(k) = c
                .query_row("SELECT private_key FROM keys WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()?
            {
                return Ok(k);
            }
            let k = make();
            c.execute("INSERT INTO keys(id, private_key) VALUES (1, ?1)", [&k])?;
            Ok(k)
        })
    }

    // --- projects, users and grants

    /// Creates the project with `sub` holding every right; false when it exists.
    pub fn create_project(&self, id: &str, sub: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO projects(id, created_at, created_by) VALUES (?1, ?2, ?3)",
                params![id, now(), sub],
            )?;
            if n == 1 {
                tx.execute(
                    "INSERT OR REPLACE INTO grants(project, sub, rights) VALUES (?1, ?2, 'read,edit,apply,run')",
                    params![id, sub],
                )?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
    }

    pub fn project_exists(&self, id: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row("SELECT 1 FROM projects WHERE id = ?1", [id], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })
    }

    pub fn projects(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut s = c.prepare("SELECT id FROM projects ORDER BY id")?;
            s.query_map([], |r| r.get(0))?.collect()
        })
    }

    pub fn grant(&self, project: &str, sub: &str, rights: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO grants(project, sub, rights) VALUES (?1, ?2, ?3)",
                params![project, sub, rights],
            )
            .map(|_| ())
        })
    }

    /// `(project, "read,edit,...")` for each project the user holds rights on.
    pub fn grants_of(&self, sub: &str) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut s =
                c.prepare("SELECT project, rights FROM grants WHERE sub = ?1 ORDER BY project")?;
            s.query_map([sub], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    pub fn upsert_user(&self, sub: &str, email: Option<&str>, name: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO users(sub, email, name, last_login) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(sub) DO UPDATE SET email = excluded.email, name = excluded.name,
                 last_login = excluded.last_login",
                params![sub, email, name, now()],
            )
            .map(|_| ())
        })
    }

    /// `(email, name)` of a signed-in person.
    pub fn user(&self, sub: &str) -> Result<Option<(Option<String>, Option<String>)>> {
        self.with(|c| {
            c.query_row("SELECT email, name FROM users WHERE sub = ?1", [sub], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
    }

    // --- sign-in

    pub fn put_pending_login(&self, state: &str, pending: &str, return_to: &str) -> Result<()> {
        self.with(|c| {
            // Abandoned sign-ins are dropped after an hour.
            c.execute(
                "DELETE FROM pending_logins WHERE created_at < ?1",
                [(chrono::Utc::now() - chrono::Duration::hours(1))
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)],
            )?;
            c.execute(
                "INSERT INTO pending_logins(state, pending, return_to, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![state, pending, return_to, now()],
            )
            .map(|_| ())
        })
    }

    /// The pending sign-in for `state`, removed so a callback cannot be replayed.
    pub fn take_pending_login(&self, state: &str) -> Result<Option<(String, String)>> {
        self.with(|c| {
            let row = c
                .query_row(
                    "SELECT pending, return_to FROM pending_logins WHERE state = ?1",
                    [state],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            c.execute("DELETE FROM pending_logins WHERE state = ?1", [state])?;
            Ok(row)
        })
    }

    // --- the document

    /// The snapshot (if any) and the updates logged after it, in order.
    pub fn load_doc(&self, project: &str) -> Result<LoggedDoc> {
        self.with(|c| {
            let snap: Option<(i64, Vec<u8>)> = c
                .query_row(
                    "SELECT upto, bytes FROM doc_snapshots WHERE project = ?1",
                    [project],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let upto = snap.as_ref().map_or(0, |s| s.0);
            let mut s = c.prepare(
                "SELECT seq, bytes FROM doc_updates WHERE project = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let mut last = upto;
            let mut updates = Vec::new();
            for row in s.query_map(params![project, upto], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })? {
                let (seq, bytes) = row?;
                last = seq;
                updates.push(bytes);
            }
            Ok((snap.map(|s| s.1), updates, last))
        })
    }

    /// Appends updates to the log in one durable transaction; returns the last sequence number.
    pub fn append_updates(&self, project: &str, seq: i64, updates: &[Vec<u8>]) -> Result<i64> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut n = seq;
            for u in updates {
                n += 1;
                tx.execute(
                    "INSERT INTO doc_updates(project, seq, bytes) VALUES (?1, ?2, ?3)",
                    params![project, n, u],
                )?;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    /// Replaces the snapshot with one covering the log up to `upto`, and drops those updates.
    pub fn compact_doc(&self, project: &str, upto: i64, snapshot: &[u8]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO doc_snapshots(project, upto, bytes) VALUES (?1, ?2, ?3)",
                params![project, upto, snapshot],
            )?;
            tx.execute(
                "DELETE FROM doc_updates WHERE project = ?1 AND seq <= ?2",
                params![project, upto],
            )?;
            tx.commit()
        })
    }

    // --- applied versions

    pub fn add_version(&self, project: &str, manifest: &str, by: &str, note: &str) -> Result<i64> {
        self.with(|c| {
            let tx = c.transaction()?;
            let v: i64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE project = ?1",
                [project],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO versions(project, version, manifest, applied_at, applied_by, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![project, v, manifest, now(), by, note],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO applied(project, version) VALUES (?1, ?2)",
                params![project, v],
            )?;
            tx.commit()?;
            Ok(v)
        })
    }

    pub fn versions(&self, project: &str) -> Result<Vec<VersionRow>> {
        self.with(|c| {
            let current: Option<i64> = c
                .query_row("SELECT version FROM applied WHERE project = ?1", [project], |r| r.get(0))
                .optional()?;
            let mut s = c.prepare(
                "SELECT version, applied_at, applied_by, note FROM versions WHERE project = ?1 ORDER BY version",
            )?;
            s.query_map([project], |r| {
                let version: i64 = r.get(0)?;
                Ok(VersionRow {
                    version,
                    applied_at: r.get(1)?,
                    applied_by: r.get(2)?,
                    note: r.get(3)?,
                    current: current == Some(version),
                })
            })?
            .collect()
        })
    }

    /// `(version, manifest JSON)`: the given version, or the applied one.
    pub fn manifest(&self, project: &str, version: Option<i64>) -> Result<Option<(i64, String)>> {
        self.with(|c| {
            let v = match version {
                Some(v) => Some(v),
                None => c
                    .query_row(
                        "SELECT version FROM applied WHERE project = ?1",
                        [project],
                        |r| r.get(0),
                    )
                    .optional()?,
            };
            let Some(v) = v else { return Ok(None) };
            c.query_row(
                "SELECT manifest FROM versions WHERE project = ?1 AND version = ?2",
                params![project, v],
                |r| Ok((v, r.get(0)?)),
            )
            .optional()
        })
    }

    // --- nodes and runs

    pub fn heartbeat(&self, project: &str, node: &str) -> Result<()> {
        self.with(|c| {
            let t = now();
            c.execute(
                "INSERT INTO nodes(project, id, registered_at, last_seen) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(project, id) DO UPDATE SET last_seen = excluded.last_seen",
                params![project, node, t],
            )
            .map(|_| ())
        })
    }

    /// `(node id, last heartbeat)` of each registered node.
    pub fn nodes(&self, project: &str) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut s =
                c.prepare("SELECT id, last_seen FROM nodes WHERE project = ?1 ORDER BY id")?;
            s.query_map([project], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    pub fn runs(&self, project: &str, limit: i64) -> Result<Vec<RunRow>> {
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT id, project, pipeline, slot, node, state, assigned_at, finished_at, rows, error, engine_run
                 FROM runs WHERE project = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            s.query_map(params![project, limit], run_row)?.collect()
        })
    }

    pub fn run(&self, project: &str, id: i64) -> Result<Option<RunRow>> {
        self.with(|c| {
            c.query_row(
                "SELECT id, project, pipeline, slot, node, state, assigned_at, finished_at, rows, error, engine_run
                 FROM runs WHERE project = ?1 AND id = ?2",
                params![project, id],
                run_row,
            )
            .optional()
        })
    }

    /// Runs of this project still `assigned` (handed out, not reported yet).
    pub fn open_runs(&self, project: &str) -> Result<Vec<RunRow>> {
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT id, project, pipeline, slot, node, state, assigned_at, finished_at, rows, error, engine_run
                 FROM runs WHERE project = ?1 AND state = 'assigned' ORDER BY id",
            )?;
            s.query_map([project], run_row)?.collect()
        })
    }

    /// Whether a run of `pipeline` for `slot` finished or is open (so it is not dispatched again).
    pub fn slot_taken(&self, project: &str, pipeline: &str, slot: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM runs WHERE project = ?1 AND pipeline = ?2 AND slot = ?3
                 AND state IN ('assigned', 'succeeded', 'failed') LIMIT 1",
                params![project, pipeline, slot],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
        })
    }

    pub fn assign(&self, project: &str, pipeline: &str, slot: &str, node: &str) -> Result<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs(project, pipeline, slot, node, state, assigned_at)
                 VALUES (?1, ?2, ?3, ?4, 'assigned', ?5)",
                params![project, pipeline, slot, node, now()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Marks an open run lost (its node went silent) so its slot can be dispatched again.
    pub fn mark_lost(&self, id: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET state = 'lost', finished_at = ?2 WHERE id = ?1 AND state = 'assigned'",
                params![id, now()],
            )
            .map(|_| ())
        })
    }

    /// Records a node's report of a run it was given; false when the run is not its, or closed.
    pub fn finish_run(
        &self,
        project: &str,
        id: i64,
        node: &str,
        report: &Report<'_>,
    ) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE runs SET state = ?4, finished_at = ?5, rows = ?6, error = ?7, engine_run = ?8
                 WHERE id = ?1 AND project = ?2 AND node = ?3 AND state = 'assigned'",
                params![
                    id,
                    project,
                    node,
                    if report.ok { "succeeded" } else { "failed" },
                    now(),
                    report.rows,
                    report.error,
                    report.engine_run
                ],
            )?;
            Ok(n == 1)
        })
    }
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        project: r.get(1)?,
        pipeline: r.get(2)?,
        slot: r.get(3)?,
        node: r.get(4)?,
        state: r.get(5)?,
        assigned_at: r.get(6)?,
        finished_at: r.get(7)?,
        rows: r.get(8)?,
        error: r.get(9)?,
        engine_run: r.get(10)?,
    })
}
