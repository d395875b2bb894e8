//! The default `Catalog` adapter: one SQLite database in WAL mode at `.hakiri/catalog.db`.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::state_tables::{ColumnType, RawTable, RawValue};
use super::{Catalog, CommitOutcome, FileEntry, RunCommit, RunRecord, STATE_TABLES, TableEntry};
use crate::error::{Error, Result};
use crate::types::{
    CursorKind, CursorSpec, Origin, PipelineSpec, RunCounters, RunStatus, SourceSpec, WriteMode,
};

const SCHEMA: &str = r#"
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
    sql TEXT NOT NULL,
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
    cursor_start TEXT,
    cursor_end TEXT,
    error TEXT
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
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_versions (
    table_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    schema TEXT NOT NULL,
    run_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (table_name, version)
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

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteCatalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Catalog for SqliteCatalog {
    fn upsert_source(&self, spec: &SourceSpec, now: DateTime<Utc>) -> Result<()> {
        let options = serde_json::to_string(&spec.options)
            .map_err(|e| Error::Internal(format!("encoding source options: {e}")))?;
        self.conn().execute(
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
        Ok(())
    }

    fn drop_source(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM sources WHERE name = ?1", [name])?
            > 0)
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
        self.conn().execute(
            "INSERT INTO pipelines (name, target_table, cursor_kind, cursor_column, cursor_initial,
                                    write_mode, sql, origin, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT(name) DO UPDATE SET target_table = ?2, cursor_kind = ?3, cursor_column = ?4,
                 cursor_initial = ?5, write_mode = ?6, sql = ?7, origin = ?8, updated_at = ?9",
            params![
                spec.name,
                spec.target,
                c.map(|c| c.kind.as_str()),
                c.and_then(|c| c.column.clone()),
                c.and_then(|c| c.initial.clone()),
                spec.mode.as_str(),
                spec.sql,
                spec.origin.as_str(),
                ts(now)
            ],
        )?;
        Ok(())
    }

    fn drop_pipeline(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM pipelines WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM cursors WHERE pipeline = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn list_pipelines(&self) -> Result<Vec<PipelineSpec>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM pipelines ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            let kind: Option<String> = r.get("cursor_kind")?;
            let cursor = match kind.and_then(|k| CursorKind::parse(&k).ok()) {
                Some(kind) => Some(CursorSpec {
                    kind,
                    column: r.get("cursor_column")?,
                    initial: r.get("cursor_initial")?,
                }),
                None => None,
            };
            Ok(PipelineSpec {
                name: r.get("name")?,
                sql: r.get("sql")?,
                target: r.get("target_table")?,
                cursor,
                mode: WriteMode::parse(&r.get::<_, String>("write_mode")?).unwrap_or_default(),
                origin: Origin::parse(&r.get::<_, String>("origin")?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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

    fn begin_run(
        &self,
        run_id: &str,
        pipeline: &str,
        started_at: DateTime<Utc>,
        cursor_start: Option<&str>,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO runs (run_id, pipeline, status, started_at, cursor_start) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![run_id, pipeline, RunStatus::Running.as_str(), ts(started_at), cursor_start],
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
            "UPDATE runs SET status = ?2, ended_at = ?3, rows_read = ?4, rows_written = 0, pages = ?5,
                 bytes = ?6, error = ?7 WHERE run_id = ?1",
            params![
                run_id,
                RunStatus::Failed.as_str(),
                ts(ended_at),
                c.rows_read as i64,
                c.pages as i64,
                c.bytes as i64,
                error
            ],
        )?;
        Ok(())
    }

    fn commit_run(&self, commit: &RunCommit) -> Result<CommitOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = ts(commit.ended_at);
        let mut outcome = CommitOutcome::default();

        if commit.replace {
            let mut stmt = tx.prepare("SELECT path FROM files WHERE table_name = ?1")?;
            outcome.removed_files = stmt
                .query_map([&commit.table], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(stmt);
            tx.execute("DELETE FROM files WHERE table_name = ?1", [&commit.table])?;
        }
        for f in &commit.files {
            tx.execute(
                "INSERT INTO files (path, table_name, run_id, rows, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![f.path, f.table, f.run_id, f.rows as i64, f.bytes as i64, now],
            )?;
        }

        let (rows, files): (i64, i64) = tx.query_row(
            "SELECT COALESCE(SUM(rows), 0), COUNT(*) FROM files WHERE table_name = ?1",
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
        if let Some(schema) = &commit.schema {
            if latest.as_ref().map(|(_, s)| s) != Some(schema) {
                let v = version.unwrap_or(0) + 1;
                tx.execute(
                    "INSERT INTO schema_versions (table_name, version, schema, run_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![commit.table, v, schema, commit.run_id, now],
                )?;
                let (kind, message) = if v == 1 {
                    ("table_created", format!("table '{}' created", commit.table))
                } else {
                    (
                        "schema_changed",
                        format!("table '{}' schema version {v}", commit.table),
                    )
                };
                tx.execute(
                    "INSERT INTO events (at, kind, subject, message, run_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![now, kind, commit.table, message, commit.run_id],
                )?;
                version = Some(v);
                outcome.new_schema_version = Some(v);
            }
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
            tx.execute(
                "INSERT INTO cursors (pipeline, kind, value, run_id, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(pipeline) DO UPDATE SET kind = ?2, value = ?3, run_id = ?4, updated_at = ?5",
                params![commit.pipeline, kind, value, commit.run_id, now],
            )?;
        }
        let c = &commit.counters;
        let changed = tx.execute(
            "UPDATE runs SET status = ?2, ended_at = ?3, rows_read = ?4, rows_written = ?5, pages = ?6,
                 bytes = ?7, cursor_end = ?8 WHERE run_id = ?1 AND status = 'running'",
            params![
                commit.run_id,
                RunStatus::Succeeded.as_str(),
                now,
                c.rows_read as i64,
                c.rows_written as i64,
                c.pages as i64,
                c.bytes as i64,
                commit.cursor.as_ref().map(|(_, v)| v.clone())
            ],
        )?;
        if changed != 1 {
            // The run was marked dead by another process's recovery: do not commit.
            return Err(Error::Internal(format!(
                "run {} is no longer 'running' in the catalog; its commit was abandoned",
                commit.run_id
            )));
        }
        tx.commit()?;
        Ok(outcome)
    }

    fn runs(&self, pipeline: Option<&str>) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT run_id, pipeline, status, started_at, ended_at, rows_read, rows_written, pages, bytes,
                    cursor_start, cursor_end, error
             FROM runs WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY started_at, rowid",
        )?;
        let rows = stmt.query_map([pipeline], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                [
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                ],
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<String>>(11)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (run_id, pipeline, status, started, ended, n, cursor_start, cursor_end, error) =
                row?;
            out.push(RunRecord {
                run_id,
                pipeline,
                status,
                started_at: parse_ts(&started)?,
                ended_at: ended.as_deref().map(parse_ts).transpose()?,
                counters: RunCounters {
                    rows_read: n[0] as u64,
                    rows_written: n[1] as u64,
                    pages: n[2] as u64,
                    bytes: n[3] as u64,
                },
                cursor_start,
                cursor_end,
                error,
            });
        }
        Ok(out)
    }

    fn recover_runs(&self, status: RunStatus, now: DateTime<Utc>) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids = {
            let mut stmt = tx.prepare("SELECT run_id FROM runs WHERE status = 'running'")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        for id in &ids {
            tx.execute(
                "UPDATE runs SET status = ?2, ended_at = ?3,
                     error = 'the process running this run stopped before it committed; nothing of it was committed'
                 WHERE run_id = ?1",
                params![id, status.as_str(), ts(now)],
            )?;
            tx.execute(
                "INSERT INTO events (at, kind, subject, message, run_id) VALUES (?1, 'run_recovered', ?2, ?3, ?2)",
                params![ts(now), id, format!("run marked {}", status.as_str())],
            )?;
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
            "SELECT path, table_name, run_id, rows, bytes FROM files WHERE table_name = ?1 ORDER BY created_at, path",
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

    fn add_event(
        &self,
        at: DateTime<Utc>,
        kind: &str,
        subject: &str,
        message: &str,
        run_id: Option<&str>,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT INTO events (at, kind, subject, message, run_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts(at), kind, subject, message, run_id],
        )?;
        Ok(())
    }

    fn state_table(&self, name: &str) -> Result<RawTable> {
        if !STATE_TABLES.contains(&name) {
            return Err(Error::NotFound(format!(
                "no state table 'hakiri.{name}': the state tables are {}",
                STATE_TABLES
                    .iter()
                    .map(|t| format!("hakiri.{t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let conn = self.conn();
        // `name` is one of the fixed names above, so it is safe to splice.
        let mut stmt = conn.prepare(&format!("SELECT * FROM {name}"))?;
        let columns: Vec<(String, ColumnType)> = stmt
            .columns()
            .iter()
            .map(|c| {
                let decl = c.decl_type().unwrap_or("TEXT").to_ascii_uppercase();
                let ty = if c.name().ends_with("_at") {
                    ColumnType::Timestamp
                } else if decl.contains("INT") {
                    ColumnType::Int
                } else if decl.contains("REAL") {
                    ColumnType::Float
                } else {
                    ColumnType::Text
                };
                (c.name().to_string(), ty)
            })
            .collect();
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
