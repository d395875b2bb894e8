//! Moving a cursor on purpose, after a bad load or a late fix upstream:
//! `ALTER PIPELINE name RESET CURSOR [TO 'value']` rewinds or sets the committed cursor, and
//! a backfill (`hakiri run NAME --from V [--to W]`) runs a merge pipeline over a window of
//! its monotonic cursor without moving the cursor back. Each is an event naming who did it
//! and the value the cursor had.

use crate::catalog::CursorMove;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::run::{holder_alive, this_holder};
use crate::types::EventKind;
use crate::types::{CursorKind, PipelineSpec, WriteMode};

/// Who moved a cursor: the operating-system user, host and process.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let holder = this_holder();
    format!(
        "user '{user}' on host '{}' (process {})",
        holder.host, holder.pid
    )
}

/// A backfill's window of cursor values: rows with `from <= cursor` (as the query compares
/// with `$cursor`) and, with `to`, `cursor <= to`.
#[derive(Debug, Clone)]
pub struct Window {
    pub from: String,
    pub to: Option<String>,
}

impl Window {
    pub fn describe(&self) -> String {
        match &self.to {
            Some(to) => format!("from '{}' to '{to}'", self.from),
            None => format!("from '{}'", self.from),
        }
    }
}

fn shown(v: Option<&str>) -> String {
    match v {
        Some("") => "(the first page)".into(),
        Some(v) => format!("'{v}'"),
        None => "(none)".into(),
    }
}

impl Engine {
    /// `ALTER PIPELINE name RESET CURSOR [TO 'value']`.
    pub async fn reset_cursor(&self, name: &str, to: Option<&str>) -> Result<String> {
        let spec = self.pipeline(name)?;
        let Some(cursor) = &spec.cursor else {
            return Err(Error::InvalidInput(format!(
                "pipeline '{name}' has no cursor to reset: every run reads the whole source"
            )));
        };
        if let Some(v) = to {
            match cursor.kind {
                CursorKind::SnapshotId => {
                    return Err(Error::InvalidInput(format!(
                        "pipeline '{name}' has a SNAPSHOT cursor, whose value is the source's snapshot id: RESET CURSOR without TO makes the next run load the snapshot again"
                    )));
                }
                // The value must bind to the cursor column's type, as a run would bind it.
                CursorKind::Monotonic => {
                    self.physical_plan(&spec, Some(v), false).await?;
                }
                CursorKind::OpaqueToken => {}
            }
        }
        let old = self.catalog().cursor(name)?;
        let next = match (to, cursor.kind) {
            (Some(v), _) => format!("the next run reads from '{v}'"),
            (None, CursorKind::Monotonic) => format!(
                "the next run starts from INITIAL {}",
                shown(cursor.initial.as_deref())
            ),
            (None, CursorKind::OpaqueToken) => "the next run starts from the first page".into(),
            (None, CursorKind::SnapshotId) => "the next run loads the snapshot again".into(),
        };
        let message = format!(
            "pipeline '{name}': cursor reset from {} to {} by {}; {next}",
            shown(old.as_deref()),
            to.map_or("(none)".to_string(), |v| format!("'{v}'")),
            actor(),
        );
        let now = self.clock().now();
        self.catalog().move_cursor(
            &CursorMove {
                pipeline: name.to_string(),
                kind: cursor.kind.as_str().to_string(),
                to: to.map(str::to_string),
                event: (EventKind::CursorReset, message.clone()),
                at: now,
            },
            &|r| holder_alive(r, now),
        )?;
        Ok(message)
    }
}

/// Why a pipeline cannot be backfilled, if it cannot.
pub(crate) fn check_backfill(spec: &PipelineSpec) -> Result<()> {
    let name = &spec.name;
    match &spec.cursor {
        Some(c) if c.kind == CursorKind::Monotonic => {}
        _ => {
            return Err(Error::InvalidInput(format!(
                "pipeline '{name}' cannot be backfilled: a window (--from/--to) is a range of a CURSOR MONOTONIC column's values, and this pipeline has none; to read a token source again use ALTER PIPELINE {name} RESET CURSOR [TO 'token']"
            )));
        }
    }
    if spec.mode != WriteMode::Merge {
        return Err(Error::InvalidInput(format!(
            "pipeline '{name}' cannot be backfilled in MODE {}: a backfill reads rows that are already loaded again, which only MODE MERGE KEY (...) replaces instead of duplicating; give the pipeline MODE MERGE KEY (...)",
            spec.mode.as_str().to_ascii_uppercase()
        )));
    }
    Ok(())
}
