//! Core types shared by every crate: cursors, write modes, pipeline and source specs, runs.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// How a pipeline remembers where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// A column whose committed maximum is stored; the next run reads rows past it.
    Monotonic,
    /// A resume token handed back by the source (next-page token, sync token).
    OpaqueToken,
    /// Each run is a full snapshot identified by an ETag, content hash or snapshot id.
    SnapshotId,
}

impl CursorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CursorKind::Monotonic => "monotonic",
            CursorKind::OpaqueToken => "opaque_token",
            CursorKind::SnapshotId => "snapshot_id",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "monotonic" => Ok(CursorKind::Monotonic),
            "opaque_token" | "token" => Ok(CursorKind::OpaqueToken),
            "snapshot_id" | "snapshot" => Ok(CursorKind::SnapshotId),
            other => Err(Error::InvalidInput(format!(
                "unknown cursor kind '{other}': valid kinds are monotonic, opaque_token, snapshot_id"
            ))),
        }
    }
}

/// A pipeline's cursor declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorSpec {
    pub kind: CursorKind,
    /// For `Monotonic`: the column whose maximum is stored.
    pub column: Option<String>,
    /// The value bound to `$cursor` before the first committed run.
    pub initial: Option<String>,
}

/// A cursor's committed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub pipeline: String,
    pub kind: CursorKind,
    pub value: Option<String>,
}

/// How a run's rows land in its context table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// New rows are added next to the existing ones.
    #[default]
    Append,
    /// The run's rows replace the table's contents in one catalog transaction.
    Replace,
}

impl WriteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Append => "append",
            WriteMode::Replace => "replace",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "append" => Ok(WriteMode::Append),
            "replace" => Ok(WriteMode::Replace),
            "merge" => Err(Error::Unsupported(
                "write mode 'merge' is not available yet: use 'append' or 'replace'".into(),
            )),
            other => Err(Error::InvalidInput(format!(
                "unknown write mode '{other}': valid modes are append, replace"
            ))),
        }
    }
}

/// Where a pipeline or source definition came from; a manifest sync only touches its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    #[default]
    Manifest,
    Sql,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Manifest => "manifest",
            Origin::Sql => "sql",
        }
    }
    pub fn parse(s: &str) -> Self {
        if s == "sql" {
            Origin::Sql
        } else {
            Origin::Manifest
        }
    }
}

/// A named connection of one connector type. Option values may hold secret references
/// (`env:NAME`), which are resolved only when a connector is built, never stored resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub name: String,
    pub connector: String,
    pub options: BTreeMap<String, String>,
    pub origin: Origin,
}

/// A pipeline: `INSERT INTO context.<target> SELECT ...` plus its cursor and write mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSpec {
    pub name: String,
    /// The pipeline body: `INSERT INTO context.t SELECT ...`, possibly using `$cursor`.
    pub sql: String,
    /// The context table the body inserts into (derived from `sql`).
    pub target: String,
    pub cursor: Option<CursorSpec>,
    pub mode: WriteMode,
    pub origin: Origin,
}

impl fmt::Display for PipelineSpec {
    /// Renders the spec as the `CREATE PIPELINE` statement that recreates it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CREATE PIPELINE {}", self.name)?;
        if let Some(c) = &self.cursor {
            write!(f, " CURSOR {}", c.kind.as_str().to_ascii_uppercase())?;
            if let Some(col) = &c.column {
                write!(f, " ({col})")?;
            }
            if let Some(init) = &c.initial {
                write!(f, " INITIAL '{}'", init.replace('\'', "''"))?;
            }
        }
        write!(
            f,
            " MODE {} AS {}",
            self.mode.as_str().to_ascii_uppercase(),
            self.sql
        )
    }
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// A run whose process died while it was running, found at the next open.
    PartialFailure,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::PartialFailure => "partial_failure",
        }
    }
}

/// Counters a run keeps while it streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounters {
    pub rows_read: u64,
    pub rows_written: u64,
    pub pages: u64,
    pub bytes: u64,
}

/// Validates an identifier used as a source, table or pipeline name: it ends up in paths
/// and generated SQL, so only `[A-Za-z_][A-Za-z0-9_]*` is accepted.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid {kind} name '{name}': use letters, digits and underscores, starting with a letter (at most 63 characters)"
        )))
    }
}
