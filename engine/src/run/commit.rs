//! The commit planner: from what a part read (its rows' evidence and the source's report)
//! to what its commit records — the cursor and boundary, the events, the table's schema,
//! whether the run is over. Pure, so every cursor kind and write mode is tested without a
//! file or a request (`run::tests`); the engine does what the plan says, in one catalog
//! transaction.

use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;

use super::track::{CursorState, Tracked};
use crate::cursor::BoundaryRows;
use crate::error::{Error, Result};
use crate::ports::RunReport;
use crate::schema;
use crate::types::{CursorKind, EventKind, NullRule, PipelineSpec};

/// What a part read.
pub(crate) struct Evidence<'a> {
    pub tracked: &'a Tracked,
    /// Pages the source read.
    pub pages: u64,
    pub report: &'a RunReport,
    /// Rows left out under `ON SCHEMA CHANGE DISCARD`, by the source and by conforming.
    pub discarded: u64,
}

pub(crate) enum Decision {
    /// A snapshot the catalog has already: the part's files are dropped, nothing is
    /// written and the run ends `skipped`.
    Unchanged {
        event: (EventKind, String),
    },
    Commit(CommitPlan),
}

#[derive(Debug)]
pub(crate) struct CommitPlan {
    /// The cursor after the commit, what this run's next part reads from (the catalog
    /// gets `commit_cursor`; after a backfill this is the committed floor).
    pub cursor: Option<String>,
    /// What the commit writes as the cursor (kind, value): set when the value, or its
    /// boundary, changed, or on a first commit.
    pub commit_cursor: Option<(CursorKind, String)>,
    /// The boundary committed with the cursor.
    pub boundary: Option<BoundaryRows>,
    pub events: Vec<(EventKind, String)>,
    /// The run is over (the commit finishes it `succeeded`).
    pub done: bool,
}

/// Plans a part's commit.
///
/// # Errors
/// `InvalidInput` for a token run whose source gave no token to resume from (the part's
/// files are to be dropped: nothing is committed).
pub(crate) fn plan(spec: &PipelineSpec, state: &CursorState, ev: &Evidence) -> Result<Decision> {
    let kind = spec.cursor.as_ref().map(|c| c.kind);
    let report = ev.report;
    let mut events: Vec<(EventKind, String)> = report
        .boundary_changes
        .iter()
        .map(|c| {
            (
                EventKind::BoundaryChanged,
                format!("pipeline '{}': {c}", spec.name),
            )
        })
        .collect();
    // The source's boundary (token) or the run's own (`>=` monotonic); a part that read
    // nothing keeps the committed one.
    let mut boundary = state.boundary.clone();
    let (cursor, done) = match kind {
        Some(CursorKind::SnapshotId) => {
            let id = report
                .snapshot_id
                .clone()
                .or(ev.tracked.hash.clone())
                .unwrap_or_default();
            if report.unchanged || state.cursor.as_deref() == Some(id.as_str()) {
                return Ok(Decision::Unchanged {
                    event: (
                        EventKind::SnapshotUnchanged,
                        format!(
                            "pipeline '{}': snapshot {id} is the committed one; the run wrote nothing",
                            spec.name
                        ),
                    ),
                });
            }
            (Some(id), true)
        }
        Some(CursorKind::OpaqueToken) => {
            let done = report.exhausted || ev.pages == 0;
            // No token yet but a boundary: the first page is the one to read again.
            let token = report
                .token
                .clone()
                .or_else(|| report.boundary.as_ref().map(|_| String::new()));
            if ev.pages > 0 {
                boundary = report.boundary.clone();
            }
            if !done && token.is_none() {
                return Err(Error::InvalidInput(format!(
                    "pipeline '{}' has CURSOR TOKEN but its source gave no resume token after {} page(s): the source table needs token pagination (pagination cursor, next_url or link_header)",
                    spec.name, ev.pages
                )));
            }
            (token.or(state.cursor.clone()), done)
        }
        Some(CursorKind::Monotonic) => {
            if state.inclusive_append {
                boundary = ev.tracked.boundary.clone();
            }
            if ev.tracked.boundary_missing > 0 {
                events.push((
                    EventKind::BoundaryChanged,
                    format!(
                        "pipeline '{}': {} row(s) written at cursor value '{}' by earlier runs were not read again (removed or rewritten upstream, or the query's columns changed); rows that differ were written",
                        spec.name,
                        ev.tracked.boundary_missing,
                        state.cursor.as_deref().unwrap_or_default()
                    ),
                ));
            }
            (advance(state, ev.tracked.max.as_ref())?, true)
        }
        None => (None, true),
    };
    if ev.tracked.null_cursor_rows > 0 {
        let rule = spec.cursor.as_ref().map(|c| c.on_null).unwrap_or_default();
        let (what, kind) = if rule == NullRule::Skip {
            ("skipped", EventKind::NullCursorRowsSkipped)
        } else {
            ("loaded", EventKind::NullCursorRowsLoaded)
        };
        events.push((
            kind,
            format!(
                "pipeline '{}': {} row(s) with a NULL cursor {what} (ON NULL {})",
                spec.name,
                ev.tracked.null_cursor_rows,
                rule.as_str().to_ascii_uppercase()
            ),
        ));
    }
    if ev.discarded > 0 {
        events.push((
            EventKind::RowsDiscarded,
            format!(
                "pipeline '{}': {} row(s) did not fit the table's column types and were discarded (ON SCHEMA CHANGE DISCARD)",
                spec.name, ev.discarded
            ),
        ));
    }
    let commit_cursor = match (kind, &cursor) {
        (Some(k), Some(v))
            if state.committed_value() != Some(v.as_str())
                || state.is_initial
                || boundary != state.boundary =>
        {
            Some((k, v.clone()))
        }
        _ => None,
    };
    Ok(Decision::Commit(CommitPlan {
        cursor,
        commit_cursor,
        boundary,
        events,
        done,
    }))
}

/// The new monotonic cursor: the largest of the committed one and what the run saw
/// (with LAG a run reads below the committed value and must not move it back).
pub(crate) fn advance(state: &CursorState, max: Option<&ScalarValue>) -> Result<Option<String>> {
    // A backfill read a window, not everything past the committed cursor: moving the
    // cursor to what it saw could skip rows between the cursor and the window.
    if state.window.is_some() {
        return Ok(state.floor.clone());
    }
    let Some(max) = max else {
        return Ok(state.floor.clone().or(state.cursor.clone()));
    };
    if let Some(committed) = state.floor.as_deref()
        && let Ok(c) = ScalarValue::try_from_string(committed.to_string(), &max.data_type())
        && c.partial_cmp(max) == Some(std::cmp::Ordering::Greater)
    {
        return Ok(Some(committed.to_string()));
    }
    crate::cursor::render(max).map(Some)
}

/// The table's schema after the commit, and its change events: a replace's is the new
/// file's; otherwise the table's widened to hold the new file's (`ON SCHEMA CHANGE`
/// already made the rows fit what the policy allows). No new file: as it was.
pub(crate) fn schema_after(
    table: &str,
    old: Option<&Schema>,
    new: Option<&Schema>,
    replace: bool,
) -> (Option<Schema>, Vec<(EventKind, String)>) {
    match (old, new) {
        (Some(old), Some(new)) => {
            let (merged, changes) = schema::merge(old, new);
            let after = if replace { new.clone() } else { merged };
            (
                Some(after),
                changes.iter().map(|c| c.event(table)).collect(),
            )
        }
        (None, Some(new)) => (Some(new.clone()), Vec::new()),
        (old, None) => (old.cloned(), Vec::new()),
    }
}

impl CursorState {
    /// The state after `plan`'s commit.
    pub(crate) fn committed(&mut self, plan: &CommitPlan) {
        if plan.commit_cursor.is_some() {
            self.is_initial = false;
            self.boundary = plan.boundary.clone();
            self.floor = plan.cursor.clone();
        }
        if plan.cursor.is_some() {
            self.cursor = plan.cursor.clone();
        }
    }
}
