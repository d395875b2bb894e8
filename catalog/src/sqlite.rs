//! The default `Catalog` adapter: one SQLite database in WAL mode at `.hakiri/catalog.db`.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Params, TransactionBehavior, params};

use super::state_tables::{RawTable, RawValue};
use super::{
    Catalog, CommitOutcome, CursorEntry, CursorMove, DroppedTable, FileEntry, IsAlive, NewRun,
    PruneCutoffs, Pruned, RunCommit, RunHolder, RunRecord, STATE_TABLES, ScheduleState,
    SourceSchema, TableEntry, already_running, table_in_use,
};
use hakiri_core::error::{Error, Result};
use hakiri_core::types::{EventKind, Origin, PipelineSpec, RunCounters, RunStatus, SourceSpec};

/// The catalog's tables as the releases before versioned migrations created them (frozen:
/// migration 1 brings such a catalog up, whatever release made it).
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS sources (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    options TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pipelines (
    name TEXT PRIMARY KEY,
    target_table TEXT NOT NULL,
    cursor_kind TEXT,
    cursor_column TEXT,
    cursor_initial TEXT,
    write_mode TEXT NOT NULL,
    merge_key TEXT,
    on_schema_change TEXT,
    sql TEXT NOT NULL,
    definition TEXT,
    origin TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    rows_read INTEGER NOT NULL DEFAULT 0,
    rows_written INTEGER NOT NULL DEFAULT 0,
    pages INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    rows_skipped INTEGER NOT NULL DEFAULT 0,
    rows_discarded INTEGER NOT NULL DEFAULT 0,
    cursor_start TEXT,
    cursor_end TEXT,
    error TEXT,
    pid INTEGER NOT NULL DEFAULT 0,
    host TEXT NOT NULL DEFAULT '',
    heartbeat_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, status);
CREATE TABLE IF NOT EXISTS cursor_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    run_id TEXT NOT NULL,
    committed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    pipeline TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT,
    run_id TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tables (
    name TEXT PRIMARY KEY,
    rows INTEGER NOT NULL,
    files INTEGER NOT NULL,
    schema_version INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    run_id TEXT NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT
);
CREATE TABLE IF NOT EXISTS schema_versions (
    table_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    schema TEXT NOT NULL,
    run_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (table_name, version)
);
CREATE TABLE IF NOT EXISTS schedules (
    pipeline TEXT PRIMARY KEY,
    schedule TEXT NOT NULL,
    next_fire_at TEXT NOT NULL,
    slot_at TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    suspended INTEGER NOT NULL DEFAULT 0,
    suspended_reason TEXT,
    last_run_id TEXT,
    last_status TEXT,
    last_fired_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    run_id TEXT
);
"#;

/// Columns those releases added to older catalogs when they opened them (frozen, like
/// `SCHEMA_V1`): probed once, by migration 1.
const LEGACY_COLUMNS: &[(&str, &str, &str)] = &[
    ("pipelines", "merge_key", "TEXT"),
    ("pipelines", "on_schema_change", "TEXT"),
    ("pipelines", "definition", "TEXT"),
    ("runs", "rows_skipped", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "rows_discarded", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "pid", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "host", "TEXT NOT NULL DEFAULT ''"),
    ("runs", "heartbeat_at", "TEXT"),
    ("files", "retired_at", "TEXT"),
    ("cursors", "boundary", "TEXT"),
    ("cursor_history", "boundary", "TEXT"),
];

/// Indexes of a new catalog (and of migration 1).
const INDEXES: &str = "CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, status);";

/// A step of the catalog's schema, applied in one transaction with the others due; the
/// catalog's version is SQLite's `PRAGMA user_version`.
struct Migration {
    version: i64,
    what: &'static str,
    apply: fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
}

/// Every change to the catalog's tables since versioning, in order. A new catalog is
/// created from `STATE_TABLES` at the last version; a change to `STATE_TABLES` comes with
/// a migration here (`migrations_and_declaration_agree` checks they match).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "the tables and columns of the releases before versioning",
        apply: |tx| {
            tx.execute_batch(SCHEMA_V1)?;
            for (table, column, decl) in LEGACY_COLUMNS {
                let exists: bool = tx.query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    params![table, column],
                    |r| r.get(0),
                )?;
                if !exists {
                    tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
                }
            }
            tx.execute_batch(INDEXES)
        },
    },
    Migration {
        version: 2,
        what: "hakiri.source_schemas (listings never wait on a source)",
        apply: |tx| {
            tx.execute_batch(
                // IF NOT EXISTS: builds between the table's arrival and versioning made it
                // in catalogs still at version 0.
                "CREATE TABLE IF NOT EXISTS source_schemas (
                    source TEXT NOT NULL,
                    table_name TEXT NOT NULL,
                    columns TEXT NOT NULL,
                    discovered_at TEXT NOT NULL,
                    PRIMARY KEY (source, table_name)
                );",
            )
        },
    },
];

/// The version of the catalog this build writes.
pub const CATALOG_VERSION: i64 = 2;

/// Brings the catalog to [`CATALOG_VERSION`]: a new one is created from the declaration,
/// an older one migrated; one written by a newer Hakiri is refused (it may hold what this
/// build would lose).
fn migrate(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let fresh: bool = tx.query_row(
        "SELECT COUNT(*) = 0 FROM sqlite_master WHERE type = 'table' AND name = 'runs'",
        [],
        |r| r.get(0),
    )?;
    if version > CATALOG_VERSION {
        return Err(Error::Config(format!(
            "the catalog is at version {version}, written by a newer Hakiri (this one reads versions up to {CATALOG_VERSION}): run that version, or upgrade hakiri"
        )));
    }
    if fresh {
        for table in STATE_TABLES {
            tx.execute_batch(&table.create_sql())?;
        }
        tx.execute_batch(INDEXES)?;
    } else {
        for m in MIGRATIONS.iter().filter(|m| m.version > version) {
            (m.apply)(tx).map_err(|e| {
                Error::Internal(format!(
                    "migrating the catalog to version {} ({}) failed: {e}; the catalog is unchanged (the migration rolled back)",
                    m.version, m.what
                ))
            })?;
        }
    }
    tx.pragma_update(None, "user_version", CATALOG_VERSION)?;
    Ok(())
}

/// Timestamps are stored as RFC 3339 text with microseconds, so the database is readable
/// with the `sqlite3` shell and sorts correctly as text.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Internal(format!("bad timestamp '{s}' in catalog: {e}")))
}

/// SQLite behind a mutex: catalog calls are short transactions, so one connection serves
/// the process; WAL lets readers in other processes proceed during a commit.
#[derive(Debug)]
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory SQLite catalog (tests, `EXPLAIN` without a project).
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        // The busy timeout first: another process may be opening the same catalog, and
        // switching to WAL or creating the tables waits for its lock.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        set_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        migrate(&tx)?;
        tx.commit()?;
        Ok(SqliteCatalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Switches the catalog to WAL (a persistent setting, so usually already done). The switch
/// needs an exclusive lock, and SQLite answers BUSY at once, without its busy handler, when
/// another process has the new file open (two commands started together on a fresh
/// project): retry for as long as the busy timeout.
fn set_wal(conn: &Connection) -> Result<()> {
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Catalog for SqliteCatalog {
    fn upsert_source(&self, spec: &SourceSpec, now: DateTime<Utc>) -> Result<()> {
        let options = serde_json::to_string(&spec.options)
            .map_err(|e| Error::Internal(format!("encoding source options: {e}")))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // Another type or other options may mean other tables and columns.
        tx.execute(
            "DELETE FROM source_schemas WHERE source = ?1 AND EXISTS
               (SELECT 1 FROM sources WHERE name = ?1 AND (type != ?2 OR options != ?3))",
            params![spec.name, spec.connector, options],
        )?;
        tx.execute(
            "INSERT INTO sources (name, type, options, origin, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT(name) DO UPDATE SET type = ?2, options = ?3, origin = ?4, updated_at = ?5",
            params![
                spec.name,
                spec.connector,
                options,
                spec.origin.as_str(),
                ts(now)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn drop_source(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM source_schemas WHERE source = ?1", [name])?;
        let dropped = tx.execute("DELETE FROM sources WHERE name = ?1", [name])? > 0;
        tx.commit()?;
        Ok(dropped)
    }

    fn source_schemas(&self, source: &str) -> Result<Vec<SourceSchema>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT source, table_name, columns, discovered_at FROM source_schemas
             WHERE source = ?1 ORDER BY table_name",
        )?;
        let rows = stmt.query_map([source], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (source, table, columns, at) = row?;
            out.push(SourceSchema {
                source,
                table,
                columns,
                discovered_at: parse_ts(&at)?,
            });
        }
        Ok(out)
    }

    fn put_source_schema(&self, s: &SourceSchema) -> Result<()> {
        self.conn().execute(
            "INSERT INTO source_schemas (source, table_name, columns, discovered_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(source, table_name) DO UPDATE SET columns = ?3, discovered_at = ?4",
            params![s.source, s.table, s.columns, ts(s.discovered_at)],
        )?;
        Ok(())
    }

    fn list_sources(&self) -> Result<Vec<SourceSpec>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, type, options, origin FROM sources ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, connector, options, origin) = row?;
            let options = serde_json::from_str(&options).map_err(|e| {
                Error::Internal(format!("decoding options of source '{name}': {e}"))
            })?;
            out.push(SourceSpec {
                name,
                connector,
                options,
                origin: Origin::parse(&origin),
            });
        }
        Ok(out)
    }

    fn upsert_pipeline(&self, spec: &PipelineSpec, now: DateTime<Utc>) -> Result<()> {
        let c = spec.cursor.as_ref();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO pipelines (name, target_table, cursor_kind, cursor_column, cursor_initial,
                                    write_mode, merge_key, on_schema_change, sql, definition,
                                    origin, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
             ON CONFLICT(name) DO UPDATE SET target_table = ?2, cursor_kind = ?3, cursor_column = ?4,
                 cursor_initial = ?5, write_mode = ?6, merge_key = ?7, on_schema_change = ?8,
                 sql = ?9, definition = ?10, origin = ?11, updated_at = ?12",
            params![
                spec.name,
                spec.target,
                c.map(|c| c.kind.as_str()),
                c.and_then(|c| c.column.clone()),
                c.and_then(|c| c.initial.clone()),
                spec.mode.as_str(),
                (!spec.key.is_empty()).then(|| spec.key.join(", ")),
                spec.on_schema_change.as_str(),
                spec.sql,
                spec.to_string(),
                spec.origin.as_str(),
                ts(now)
            ],
        )?;
        if spec.schedule.is_none() {
            tx.execute("DELETE FROM schedules WHERE pipeline = ?1", [&spec.name])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn drop_pipeline(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute("DELETE FROM pipelines WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM cursors WHERE pipeline = ?1", [name])?;
        tx.execute("DELETE FROM schedules WHERE pipeline = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn list_pipelines(&self) -> Result<Vec<PipelineSpec>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, definition, origin, cursor_kind, cursor_column, cursor_initial, write_mode, sql
             FROM pipelines ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, definition, origin, kind, column, initial, mode, sql) = row?;
            // The definition is the CREATE PIPELINE text; a catalog from before it existed
            // has only the first columns, which say the same for the clauses of that time.
            let definition = definition.unwrap_or_else(|| {
                let cursor = match (kind, column) {
                    (Some(_), Some(col)) => format!(
                        " CURSOR MONOTONIC ({col}){}",
                        initial
                            .map(|i| format!(" INITIAL '{}'", i.replace('\'', "''")))
                            .unwrap_or_default()
                    ),
                    _ => String::new(),
                };
                format!("CREATE PIPELINE {name}{cursor} MODE {mode} AS {sql}")
            });
            let mut spec = match hakiri_core::sql::parse_statements(&definition)?.pop() {
                Some(hakiri_core::sql::HakiriStatement::CreatePipeline { spec, .. }) => spec,
                _ => {
                    return Err(Error::Internal(format!(
                        "pipeline '{name}' in the catalog has a definition that is not CREATE PIPELINE: {definition}"
                    )));
                }
            };
            spec.origin = Origin::parse(&origin);
            out.push(spec);
        }
        Ok(out)
    }

    fn cursor(&self, pipeline: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM cursors WHERE pipeline = ?1",
                [pipeline],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    fn cursor_boundary(&self, pipeline: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT boundary FROM cursors WHERE pipeline = ?1",
                [pipeline],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    fn cursor_history(&self, pipeline: &str) -> Result<Vec<CursorEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pipeline, kind, value, run_id FROM cursor_history WHERE pipeline = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([pipeline], |r| {
            Ok(CursorEntry {
                pipeline: r.get(0)?,
                kind: r.get(1)?,
                value: r.get(2)?,
                run_id: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn begin_run(&self, run: &NewRun, is_alive: IsAlive<'_>) -> Result<()> {
        let mut conn = self.conn();
        // IMMEDIATE takes the write lock first, so two processes cannot both see the
        // pipeline free and both start.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let running = select_runs(
            &tx,
            "WHERE pipeline = ?1 AND status = 'running'",
            [&run.pipeline],
        )?;
        let now = ts(run.started_at);
        for r in running {
            if is_alive(&r) {
                return Err(already_running(&r));
            }
            mark_dead(&tx, &r.run_id, &now)?;
        }
        tx.execute(
            "INSERT INTO runs (run_id, pipeline, status, started_at, cursor_start, pid, host, heartbeat_at)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?3)",
            params![
                run.run_id,
                run.pipeline,
                now,
                run.cursor_start,
                run.holder.pid,
                run.holder.host
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn move_cursor(&self, m: &CursorMove, is_alive: IsAlive<'_>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = ts(m.at);
        for r in select_runs(
            &tx,
            "WHERE pipeline = ?1 AND status = 'running'",
            [&m.pipeline],
        )? {
            if is_alive(&r) {
                return Err(already_running(&r));
            }
            mark_dead(&tx, &r.run_id, &now)?;
        }
        match &m.to {
            Some(value) => tx.execute(
                "INSERT INTO cursors (pipeline, kind, value, run_id, updated_at, boundary) VALUES (?1, ?2, ?3, NULL, ?4, NULL)
                 ON CONFLICT(pipeline) DO UPDATE SET kind = ?2, value = ?3, run_id = NULL, updated_at = ?4, boundary = NULL",
                params![m.pipeline, m.kind, value, now],
            )?,
            None => tx.execute("DELETE FROM cursors WHERE pipeline = ?1", [&m.pipeline])?,
        };
        tx.execute(
            "INSERT INTO events (at, kind, subject, message, run_id) VALUES (?1, ?2, ?3, ?4, NULL)",
            params![now, m.event.0.as_str(), m.pipeline, m.event.1],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn heartbeat(&self, run_id: &str, at: DateTime<Utc>) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET heartbeat_at = ?2 WHERE run_id = ?1 AND status = 'running'",
            params![run_id, ts(at)],
        )?;
        Ok(())
    }

    fn fail_run(
        &self,
        run_id: &str,
        ended_at: DateTime<Utc>,
        c: &RunCounters,
        error: &str,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET status = 'failed', ended_at = ?2, rows_read = ?3, rows_written = ?4,
                 pages = ?5, bytes = ?6, rows_skipped = ?7, rows_discarded = ?8, error = ?9
             WHERE run_id = ?1 AND status = 'running'",
            params![
                run_id,
                ts(ended_at),
                c.rows_read as i64,
                c.rows_written as i64,
                c.pages as i64,
                c.bytes as i64,
                c.rows_skipped as i64,
                c.rows_discarded as i64,
                error
            ],
        )?;
        Ok(())
    }

    fn commit(&self, commit: &RunCommit) -> Result<CommitOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = ts(commit.at);
        let mut outcome = CommitOutcome::default();

        let status: Option<String> = tx
            .query_row(
                "SELECT status FROM runs WHERE run_id = ?1",
                [&commit.run_id],
                |r| r.get(0),
            )
            .optional()?;
        if status.as_deref() != Some("running") {
            // Another process judged this run dead: its commit must not land.
            return Err(super::commit_refused(&commit.run_id, status.as_deref()));
        }

        if commit.replace {
            tx.execute(
                "UPDATE files SET retired_at = ?2 WHERE table_name = ?1 AND retired_at IS NULL",
                params![commit.table, now],
            )?;
        }
        for path in &commit.retire {
            let n = tx.execute(
                "UPDATE files SET retired_at = ?3 WHERE path = ?1 AND table_name = ?2 AND retired_at IS NULL",
                params![path, commit.table, now],
            )?;
            if n != 1 {
                // Dropping `tx` rolls back what this commit did so far.
                return Err(super::retire_conflict(&commit.table, path));
            }
        }
        for f in &commit.files {
            tx.execute(
                "INSERT INTO files (path, table_name, run_id, rows, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![f.path, f.table, f.run_id, f.rows as i64, f.bytes as i64, now],
            )?;
        }

        let (rows, files): (i64, i64) = tx.query_row(
            "SELECT COALESCE(SUM(rows), 0), COUNT(*) FROM files WHERE table_name = ?1 AND retired_at IS NULL",
            [&commit.table],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let latest: Option<(i64, String)> = tx
            .query_row(
                "SELECT version, schema FROM schema_versions WHERE table_name = ?1 ORDER BY version DESC LIMIT 1",
                [&commit.table],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let mut version = latest.as_ref().map(|(v, _)| *v);
        let add_event = |kind: EventKind, message: &str| {
            tx.execute(
                "INSERT INTO events (at, kind, subject, message, run_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now, kind.as_str(), commit.table, message, commit.run_id],
            )
        };
        if let Some(schema) = &commit.schema
            && latest.as_ref().map(|(_, s)| s) != Some(schema)
        {
            let v = version.unwrap_or(0) + 1;
            tx.execute(
                    "INSERT INTO schema_versions (table_name, version, schema, run_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![commit.table, v, schema, commit.run_id, now],
                )?;
            if v == 1 {
                add_event(
                    EventKind::TableCreated,
                    &format!("table '{}' created", commit.table),
                )?;
            }
            version = Some(v);
            outcome.new_schema_version = Some(v);
        }
        for (kind, message) in &commit.events {
            add_event(*kind, message)?;
        }
        if files > 0 || version.is_some() {
            tx.execute(
                "INSERT INTO tables (name, rows, files, schema_version, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT(name) DO UPDATE SET rows = ?2, files = ?3, schema_version = ?4, updated_at = ?5",
                params![commit.table, rows, files, version, now],
            )?;
        }

        if let Some((kind, value)) = &commit.cursor {
            let boundary = &commit.boundary;
            tx.execute(
                "INSERT INTO cursors (pipeline, kind, value, run_id, updated_at, boundary) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(pipeline) DO UPDATE SET kind = ?2, value = ?3, run_id = ?4, updated_at = ?5, boundary = ?6",
                params![commit.pipeline, kind, value, commit.run_id, now, boundary],
            )?;
            tx.execute(
                "INSERT INTO cursor_history (pipeline, kind, value, run_id, committed_at, boundary) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![commit.pipeline, kind, value, commit.run_id, now, boundary],
            )?;
        }
        let c = &commit.counters;
        tx.execute(
            "UPDATE runs SET rows_read = ?2, rows_written = ?3, pages = ?4, bytes = ?5, rows_skipped = ?6,
                 rows_discarded = ?7, cursor_end = COALESCE(?8, cursor_end), heartbeat_at = ?9
             WHERE run_id = ?1",
            params![
                commit.run_id,
                c.rows_read as i64,
                c.rows_written as i64,
                c.pages as i64,
                c.bytes as i64,
                c.rows_skipped as i64,
                c.rows_discarded as i64,
                commit.cursor.as_ref().map(|(_, v)| v.clone()),
                now
            ],
        )?;
        if let Some(status) = commit.finish {
            tx.execute(
                "UPDATE runs SET status = ?2, ended_at = ?3, cursor_end = COALESCE(cursor_end, cursor_start)
                 WHERE run_id = ?1",
                params![commit.run_id, status.as_str(), now],
            )?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    fn runs(&self, pipeline: Option<&str>) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        select_runs(
            &conn,
            "WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY started_at, rowid",
            [pipeline],
        )
    }

    fn recover_runs(&self, is_alive: IsAlive<'_>, now: DateTime<Utc>) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let running = select_runs(&tx, "WHERE status = 'running'", [])?;
        let mut ids = Vec::new();
        for r in running.iter().filter(|r| !is_alive(r)) {
            mark_dead(&tx, &r.run_id, &ts(now))?;
            ids.push(r.run_id.clone());
        }
        tx.commit()?;
        Ok(ids)
    }

    fn tables(&self) -> Result<Vec<TableEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, rows, files FROM tables ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(TableEntry {
                name: r.get(0)?,
                rows: r.get::<_, i64>(1)? as u64,
                files: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn table_files(&self, table: &str) -> Result<Vec<FileEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT path, table_name, run_id, rows, bytes FROM files
             WHERE table_name = ?1 AND retired_at IS NULL ORDER BY created_at, path",
        )?;
        let rows = stmt.query_map([table], |r| {
            Ok(FileEntry {
                path: r.get(0)?,
                table: r.get(1)?,
                run_id: r.get(2)?,
                rows: r.get::<_, i64>(3)? as u64,
                bytes: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn all_files(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT path FROM files")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn purge_retired(&self, before: DateTime<Utc>) -> Result<Vec<String>> {
        let mut conn = self.conn();
        // IMMEDIATE: a read-then-write transaction must hold the write lock from the start,
        // or a concurrent commit makes it fail at once with "database is locked".
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let paths = {
            let mut stmt = tx.prepare("SELECT path FROM files WHERE retired_at < ?1")?;
            stmt.query_map([ts(before)], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.execute("DELETE FROM files WHERE retired_at < ?1", [ts(before)])?;
        tx.commit()?;
        Ok(paths)
    }

    fn schedules(&self) -> Result<Vec<ScheduleState>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT pipeline, schedule, next_fire_at, slot_at, attempt, consecutive_failures, suspended,
                    suspended_reason, last_run_id, last_status, last_fired_at, updated_at
             FROM schedules ORDER BY pipeline",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                (r.get::<_, String>(2)?, r.get::<_, String>(3)?),
                (
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ),
                (
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ),
                (r.get::<_, Option<String>>(10)?, r.get::<_, String>(11)?),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let ((pipeline, schedule), (next, slot), (attempt, failures, suspended), texts, times) =
                row?;
            let (suspended_reason, last_run_id, last_status) = texts;
            out.push(ScheduleState {
                pipeline,
                schedule,
                next_fire_at: parse_ts(&next)?,
                slot_at: parse_ts(&slot)?,
                attempt: attempt as u32,
                consecutive_failures: failures as u32,
                suspended: suspended != 0,
                suspended_reason,
                last_run_id,
                last_status: last_status.as_deref().map(RunStatus::parse).transpose()?,
                last_fired_at: times.0.as_deref().map(parse_ts).transpose()?,
                updated_at: parse_ts(&times.1)?,
            });
        }
        Ok(out)
    }

    fn put_schedule(&self, s: &ScheduleState) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO schedules (pipeline, schedule, next_fire_at, slot_at, attempt,
                 consecutive_failures, suspended, suspended_reason, last_run_id, last_status,
                 last_fired_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                s.pipeline,
                s.schedule,
                ts(s.next_fire_at),
                ts(s.slot_at),
                s.attempt,
                s.consecutive_failures,
                s.suspended as i64,
                s.suspended_reason,
                s.last_run_id,
                s.last_status.map(RunStatus::as_str),
                s.last_fired_at.map(ts),
                ts(s.updated_at),
            ],
        )?;
        Ok(())
    }

    fn add_event(
        &self,
        at: DateTime<Utc>,
        kind: EventKind,
        subject: &str,
        message: &str,
        run_id: Option<&str>,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO events (at, kind, subject, message, run_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts(at), kind.as_str(), subject, message, run_id],
        )?;
        Ok(())
    }

    fn prune(&self, cutoffs: &PruneCutoffs) -> Result<Pruned> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Pruned::default();
        // The keepers are computed once per statement (GROUP BY), not per row: a daily
        // prune over a large events table stays one pass.
        if let Some(before) = cutoffs.runs {
            out.runs = tx.execute(
                "DELETE FROM runs WHERE started_at < ?1 AND status <> 'running'
                   AND rowid NOT IN (SELECT max(rowid) FROM runs GROUP BY pipeline)
                   AND rowid NOT IN (SELECT max(rowid) FROM runs WHERE status = 'succeeded' GROUP BY pipeline)",
                [ts(before)],
            )? as u64;
        }
        if let Some(before) = cutoffs.events {
            out.events = tx.execute(
                "DELETE FROM events WHERE at < ?1
                   AND id NOT IN (SELECT max(id) FROM events GROUP BY subject)",
                [ts(before)],
            )? as u64;
        }
        if let Some(before) = cutoffs.cursor_history {
            out.cursor_history = tx.execute(
                "DELETE FROM cursor_history WHERE committed_at < ?1
                   AND id NOT IN (SELECT max(id) FROM cursor_history GROUP BY pipeline)",
                [ts(before)],
            )? as u64;
        }
        tx.commit()?;
        Ok(out)
    }

    fn drop_table(
        &self,
        table: &str,
        at: DateTime<Utc>,
        is_alive: IsAlive<'_>,
    ) -> Result<Option<DroppedTable>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let known: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM tables WHERE name = ?1)
                 OR EXISTS (SELECT 1 FROM files WHERE table_name = ?1 AND retired_at IS NULL)",
            [table],
            |r| r.get(0),
        )?;
        if !known {
            return Ok(None);
        }
        let pipelines: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT name FROM pipelines WHERE target_table = ?1 ORDER BY name")?;
            stmt.query_map([table], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for p in &pipelines {
            for r in select_runs(&tx, "WHERE pipeline = ?1 AND status = 'running'", [p])? {
                if is_alive(&r) {
                    return Err(table_in_use(table, &r));
                }
            }
        }
        let files: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT path FROM files WHERE table_name = ?1 AND retired_at IS NULL ORDER BY path",
            )?;
            stmt.query_map([table], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        // Retired, not deleted: a query reading them now completes; the purge deletes them
        // after the grace period, as after a replace.
        tx.execute(
            "UPDATE files SET retired_at = ?2 WHERE table_name = ?1 AND retired_at IS NULL",
            params![table, ts(at)],
        )?;
        tx.execute("DELETE FROM tables WHERE name = ?1", [table])?;
        tx.execute("DELETE FROM schema_versions WHERE table_name = ?1", [table])?;
        for p in &pipelines {
            tx.execute("DELETE FROM cursors WHERE pipeline = ?1", [p])?;
            tx.execute("DELETE FROM cursor_history WHERE pipeline = ?1", [p])?;
        }
        tx.execute(
            "INSERT INTO events (at, kind, subject, message, run_id) VALUES (?1, ?2, ?3, ?4, NULL)",
            params![
                ts(at),
                EventKind::TableDropped.as_str(),
                table,
                drop_message(table, files.len(), &pipelines)
            ],
        )?;
        tx.commit()?;
        Ok(Some(DroppedTable { files, pipelines }))
    }

    fn replace_state(&self, tables: &[(String, RawTable)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let running: Option<String> = tx
            .query_row(
                "SELECT run_id FROM runs WHERE status = 'running' LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(run_id) = running {
            return Err(Error::InvalidInput(format!(
                "run {run_id} is running in this project: wait for it to end (or stop it), then try again"
            )));
        }
        for (name, table) in tables {
            let decl = super::state_table(name).ok_or_else(|| super::unknown_state_table(name))?;
            tx.execute(&format!("DELETE FROM {}", decl.name), [])?;
            let names: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
            if let Some(bad) = names
                .iter()
                .find(|c| !decl.columns.iter().any(|d| d.name == **c))
            {
                return Err(Error::Internal(format!(
                    "state table {name} has no column {bad}"
                )));
            }
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            let mut insert = tx.prepare(&format!(
                "INSERT INTO {} ({}) VALUES ({})",
                decl.name,
                names.join(", "),
                marks.join(", ")
            ))?;
            for row in &table.rows {
                use rusqlite::types::Value as V;
                let values = row.iter().map(|v| match v {
                    RawValue::Null => V::Null,
                    RawValue::Int(i) => V::Integer(*i),
                    RawValue::Float(f) => V::Real(*f),
                    RawValue::Text(t) => V::Text(t.clone()),
                });
                insert.execute(rusqlite::params_from_iter(values))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn state_table(&self, name: &str) -> Result<RawTable> {
        let decl = super::state_table(name).ok_or_else(|| super::unknown_state_table(name))?;
        let conn = self.conn();
        let mut stmt = conn.prepare(&decl.select_sql())?;
        let columns = decl.columns();
        let n = columns.len();
        let mut rows_out = Vec::new();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                use rusqlite::types::ValueRef;
                vals.push(match row.get_ref(i)? {
                    ValueRef::Null => RawValue::Null,
                    ValueRef::Integer(v) => RawValue::Int(v),
                    ValueRef::Real(v) => RawValue::Float(v),
                    ValueRef::Text(t) => RawValue::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => RawValue::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            rows_out.push(vals);
        }
        Ok(RawTable {
            columns,
            rows: rows_out,
        })
    }
}

/// The `table_dropped` event's text (both adapters).
pub(crate) fn drop_message(table: &str, files: usize, pipelines: &[String]) -> String {
    let reset = if pipelines.is_empty() {
        String::new()
    } else {
        format!(
            "; the cursors of {} were forgotten, so their next run loads from the start",
            pipelines.join(", ")
        )
    };
    format!("context table '{table}' dropped with its {files} file(s){reset}")
}

/// Reads runs with a `WHERE ...` tail.
fn select_runs(conn: &Connection, tail: &str, p: impl Params) -> Result<Vec<RunRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT run_id, pipeline, status, started_at, ended_at, rows_read, rows_written, pages, bytes,
                rows_skipped, rows_discarded, cursor_start, cursor_end, error, pid, host, heartbeat_at
         FROM runs {tail}"
    ))?;
    let mut rows = stmt.query(p)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
        let started: String = r.get(3)?;
        let ended: Option<String> = r.get(4)?;
        let heartbeat: Option<String> = r.get(16)?;
        out.push(RunRecord {
            run_id: r.get(0)?,
            pipeline: r.get(1)?,
            status: RunStatus::parse(&r.get::<_, String>(2)?)?,
            started_at: parse_ts(&started)?,
            ended_at: ended.as_deref().map(parse_ts).transpose()?,
            counters: RunCounters {
                rows_read: n(5)?,
                rows_written: n(6)?,
                pages: n(7)?,
                bytes: n(8)?,
                rows_skipped: n(9)?,
                rows_discarded: n(10)?,
            },
            cursor_start: r.get(11)?,
            cursor_end: r.get(12)?,
            error: r.get(13)?,
            holder: RunHolder {
                pid: r.get::<_, i64>(14)? as u32,
                host: r.get(15)?,
            },
            heartbeat_at: parse_ts(heartbeat.as_deref().unwrap_or(&started))?,
        });
    }
    Ok(out)
}

/// Marks a run whose holder died as `partial_failure`, with an event.
fn mark_dead(conn: &Connection, run_id: &str, now: &str) -> Result<()> {
    conn.execute(
        "UPDATE runs SET status = 'partial_failure', ended_at = ?2, error = ?3 WHERE run_id = ?1",
        params![run_id, now, super::DEAD_RUN_ERROR],
    )?;
    conn.execute(
        "INSERT INTO events (at, kind, subject, message, run_id) VALUES (?1, 'run_recovered', ?2, ?3, ?2)",
        params![now, run_id, "run marked partial_failure: its process stopped before the run ended"],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SqliteCatalog;
    use std::time::Duration;

    use super::{CATALOG_VERSION, LEGACY_COLUMNS, SCHEMA_V1};
    use crate::{Catalog, STATE_TABLES};

    /// A catalog written by the release of 2026-12-02, before versioned migrations.
    fn legacy_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/catalog-2026-12-02/.hakiri/catalog.db");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        std::fs::copy(from, &path).unwrap();
        (dir, path)
    }

    /// Each declared table has exactly the declared columns, with the declared types.
    fn assert_matches_declaration(path: &std::path::Path) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, CATALOG_VERSION);
        for decl in STATE_TABLES {
            let mut stmt = conn
                .prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY name")
                .unwrap();
            let got: Vec<(String, String)> = stmt
                .query_map([decl.name], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let mut want: Vec<(String, String)> = decl
                .columns
                .iter()
                .map(|c| {
                    let ty = c.sqlite.split_whitespace().next().unwrap_or_default();
                    (c.name.to_string(), ty.to_string())
                })
                .collect();
            want.sort();
            assert_eq!(got, want, "hakiri.{} on disk", decl.name);
        }
    }

    /// A new catalog (from the declaration) and a migrated one (from the oldest tables the
    /// releases before versioning made, and from today's) have the same tables and columns.
    #[test]
    fn migrations_and_declaration_agree() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        SqliteCatalog::open(&fresh).unwrap();
        assert_matches_declaration(&fresh);

        let oldest = dir.path().join("oldest.db");
        let conn = rusqlite::Connection::open(&oldest).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        // The very first release had none of the columns added since.
        for (table, column, _) in LEGACY_COLUMNS {
            let has: bool = conn
                .query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| r.get(0),
                )
                .unwrap();
            if has {
                conn.execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {column}"))
                    .unwrap();
            }
        }
        drop(conn);
        SqliteCatalog::open(&oldest).unwrap();
        assert_matches_declaration(&oldest);

        let (_keep, legacy) = legacy_fixture();
        SqliteCatalog::open(&legacy).unwrap();
        assert_matches_declaration(&legacy);
    }

    /// Today's catalog opens, migrates, and every state table reads back what it held.
    #[test]
    fn a_catalog_written_by_the_2026_12_02_release_migrates_and_reads_back() {
        let (_keep, path) = legacy_fixture();
        let c = SqliteCatalog::open(&path).unwrap();
        let rows = |name: &str| {
            let t = c.state_table(name).unwrap();
            t.to_record_batch().unwrap();
            t.rows.len()
        };
        let expected = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/catalog-2026-12-02/state_rows.txt"),
        )
        .unwrap();
        let expected: Vec<(&str, usize)> = expected
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .map(|(t, n)| (t, n.parse().unwrap()))
            .collect();
        assert_eq!(
            expected.len(),
            STATE_TABLES.len(),
            "a count per state table"
        );
        for (name, n) in expected {
            assert_eq!(rows(name), n, "hakiri.{name}");
        }
        assert_eq!(c.cursor("events").unwrap().as_deref(), Some("1000"));
        let runs = c.runs(None).unwrap();
        assert!(
            runs.iter()
                .all(|r| r.status == hakiri_core::types::RunStatus::Succeeded),
            "{runs:?}"
        );
        assert_eq!(c.list_pipelines().unwrap().len(), 3);
        assert_eq!(c.schedules().unwrap().len(), 1);
        // Opening again is a no-op at the current version.
        drop(c);
        SqliteCatalog::open(&path).unwrap();
        assert_matches_declaration(&path);
    }

    /// Regression: builds between `source_schemas`' arrival and versioning created it in
    /// catalogs still at version 0; migration 2 failed on them with "already exists".
    #[test]
    fn a_version_0_catalog_that_already_has_source_schemas_migrates() {
        let (_keep, path) = legacy_fixture();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE source_schemas (source TEXT NOT NULL, table_name TEXT NOT NULL,
             columns TEXT NOT NULL, discovered_at TEXT NOT NULL, PRIMARY KEY (source, table_name))",
        )
        .unwrap();
        drop(conn);
        SqliteCatalog::open(&path).unwrap();
        assert_matches_declaration(&path);
    }

    #[test]
    fn a_catalog_from_a_newer_hakiri_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        SqliteCatalog::open(&path).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", CATALOG_VERSION + 1)
            .unwrap();
        drop(conn);
        let e = SqliteCatalog::open(&path).unwrap_err().to_string();
        assert!(e.contains("written by a newer Hakiri"), "{e}");
    }

    /// Regression: `hakiri run` failed with "database is locked" when it opened a new catalog
    /// while another command was creating it: the switch to WAL holds a read lock and wants
    /// the exclusive one, and when another connection holds the write lock SQLite answers BUSY
    /// at once (waiting could deadlock) instead of using the busy timeout. Opening now retries.
    #[test]
    fn opening_waits_for_a_writer_of_a_catalog_not_yet_in_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let mut other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("CREATE TABLE t (x)").unwrap();
        let writer = other.transaction().unwrap();
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let opening = std::thread::spawn(move || SqliteCatalog::open(&path).map(|_| ()));
        std::thread::sleep(Duration::from_millis(300));
        writer.commit().unwrap();
        let opened = opening.join().unwrap();
        assert!(opened.is_ok(), "{opened:?}");
    }
}
