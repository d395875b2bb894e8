//! Pipeline runs: the run lock, the stream from the physical plan into staged Parquet, and
//! the commits (ARCHITECTURE.md, commit protocol). A monotonic or snapshot run commits once
//! at its end; a token run commits a checkpoint after every page group, so a run killed at
//! page 900 resumes at page 900.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::compute::{filter_record_batch, is_not_null, is_null};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::common::spawn_buffered;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::catalog::{Catalog, FileEntry, NewRun, RunCommit, RunHolder, RunRecord};
use crate::cursor::{BoundaryRows, ContentHash, RowHasher, column_max};
use crate::engine::{Engine, RunProgress, RunSummary, StopLevel};
use crate::error::{Error, Result};
use crate::ports::{Clock, Destination, RunContext, Transform};
use crate::rewind::Window;
use crate::schema::{self, Conform};
use crate::store::{LineageColumns, schema_text};
use crate::types::{
    CursorKind, DEFAULT_CHECKPOINT_PAGES, NullRule, PipelineSpec, RunCounters, RunStatus, WriteMode,
};
use crate::types::{EventKind, metric};

/// How long a run's holder may go without a heartbeat before another process may take the
/// run over. Heartbeats come every [`HEARTBEAT_EVERY`].
pub const LEASE: Duration = Duration::from_secs(60);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Files retired by a replace or merge stay on disk this long for readers that planned
/// before the swap.
pub const RETIRED_GRACE: Duration = Duration::from_secs(600);
/// How often a run plans again after its source's data outgrew the schema.
const MAX_DRIFT_REPLANS: usize = 8;
/// Column numbering a merge run's rows in arrival order: the last one of a key wins.
const SEQ_COLUMN: &str = "__hakiri_seq";

/// The error of a run ended by a stopping process (it is not the pipeline's fault).
fn stopped(why: &str) -> Error {
    Error::RunStopped { why: why.into() }
}

/// This process as a run holder.
pub fn this_holder() -> RunHolder {
    RunHolder {
        pid: std::process::id(),
        host: hostname(),
    }
}

fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a `running` run's holder is alive: its heartbeat is recent and, on this host,
/// its process exists (a zombie counts as dead).
pub fn holder_alive(r: &RunRecord, now: DateTime<Utc>) -> bool {
    let age = (now - r.heartbeat_at).to_std().unwrap_or_default();
    if age > LEASE {
        return false;
    }
    if r.holder.host != hostname() || r.holder.pid == std::process::id() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{}/stat", r.holder.pid)) {
        // The state letter follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        // No /proc at all (not Linux): rely on the heartbeat.
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// Renews the run's heartbeat until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(catalog: Arc<dyn Catalog>, clock: Arc<dyn Clock>, run_id: String) -> Self {
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                let _ = catalog.heartbeat(&run_id, clock.now());
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A run in progress.
struct Run {
    spec: PipelineSpec,
    run_id: String,
    started_at: DateTime<Utc>,
    /// The committed cursor (or INITIAL before the first commit).
    cursor: Option<String>,
    cursor_is_initial: bool,
    /// The records already written at the committed cursor, skipped when read again.
    boundary: Option<BoundaryRows>,
    /// A monotonic append run whose query reads `>= $cursor`: the rows at the committed
    /// value are read again and those in `boundary` skipped.
    inclusive_append: bool,
    /// A backfill's window (`cursor` is its start). It never moves the committed cursor.
    window: Option<Window>,
    /// The committed monotonic cursor, below which the cursor never moves.
    floor: Option<String>,
    counters: RunCounters,
    /// Rows in committed checkpoints.
    committed_rows: u64,
    checkpoints: u32,
    part: u32,
    status: RunStatus,
    t0: Instant,
    trace: RunTrace,
}

/// Where a run's time went, recorded as its `run_trace` event (what MCP's `run.trace` shows).
#[derive(Debug, Default, Clone)]
struct RunTrace {
    plan: Duration,
    /// Waiting for sources' responses, and turning them into Arrow batches (sources that
    /// report it: HTTP).
    fetch: Duration,
    decode: Duration,
    /// Encoding Parquet; commit is flushing the staged file plus the catalog transaction.
    write: Duration,
    commit: Duration,
    requests: u64,
}

impl RunTrace {
    fn message(&self, run: &Run) -> String {
        let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
        format!(
            "plan={} fetch={} decode={} write={} commit={} total={} requests={} pages={} rows={}",
            ms(self.plan),
            ms(self.fetch),
            ms(self.decode),
            ms(self.write),
            ms(self.commit),
            ms(run.t0.elapsed()),
            self.requests,
            run.counters.pages,
            run.counters.rows_written.max(run.committed_rows),
        )
    }
}

/// What the plan's stream produced in one execution.
struct Part {
    files: Vec<FileEntry>,
    rows: u64,
    max: Option<ScalarValue>,
    hash: Option<String>,
    null_cursor_rows: u64,
    /// A `>=` monotonic append run: the rows written at the new cursor value.
    boundary: Option<BoundaryRows>,
    /// Rows earlier runs wrote at the committed value that this one did not read again.
    boundary_missing: u64,
}

impl Engine {
    /// Runs a pipeline. On an error nothing after the last committed checkpoint is kept,
    /// the run is marked failed and the error says what was committed.
    pub async fn run_pipeline(
        &self,
        name: &str,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<RunSummary> {
        self.run_pipeline_as(name, self.new_run_id(name), progress)
            .await
    }

    /// A fresh run id for `pipeline`: its name, the start time and a random suffix.
    pub fn new_run_id(&self, pipeline: &str) -> String {
        format!(
            "{}-{}-{}",
            pipeline,
            self.clock().now().format("%Y%m%dT%H%M%S%3fZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    }

    /// [`Engine::run_pipeline`] under a run id the caller chose (from
    /// [`Engine::new_run_id`]), so it can follow the run while it goes.
    pub async fn run_pipeline_as(
        &self,
        name: &str,
        run_id: String,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<RunSummary> {
        self.run_with(name, run_id, None, progress).await
    }

    /// Backfills a window of a merge pipeline's monotonic cursor: the run binds `$cursor`
    /// to `window.from` (no LAG), leaves out rows past `window.to`, merges what it read,
    /// and never moves the committed cursor back. Recorded as a `backfill` event.
    ///
    /// # Errors
    /// `InvalidInput` for a pipeline without a monotonic cursor or not in MODE MERGE.
    pub async fn backfill(
        &self,
        name: &str,
        window: Window,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<RunSummary> {
        crate::rewind::check_backfill(&self.pipeline(name)?)?;
        self.run_with(name, self.new_run_id(name), Some(window), progress)
            .await
    }

    async fn run_with(
        &self,
        name: &str,
        run_id: String,
        window: Option<Window>,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<RunSummary> {
        let spec = self.pipeline(name)?;
        let started_at = self.clock().now();
        let (committed, committed_is_initial) = self.start_cursor(&spec)?;
        let boundary = match self.catalog().cursor_boundary(&spec.name)? {
            Some(text) if !committed_is_initial && window.is_none() => {
                Some(BoundaryRows::parse(&text, &spec.name)?)
            }
            _ => None,
        };
        // A backfill starts at its window; the committed cursor stays as it is.
        let floor = committed.clone().filter(|_| !committed_is_initial);
        if window.is_some() && floor.is_none() {
            return Err(Error::InvalidInput(format!(
                "pipeline '{name}' has no committed cursor yet: run it once (hakiri run {name}) before backfilling a window"
            )));
        }
        let (cursor, cursor_is_initial) = match &window {
            Some(w) => (Some(w.from.clone()), false),
            None => (committed, committed_is_initial),
        };
        let inclusive_append = reads_boundary_again(&spec)?;
        let now = self.clock().now();
        self.catalog().begin_run(
            &NewRun {
                run_id: run_id.clone(),
                pipeline: spec.name.clone(),
                started_at,
                cursor_start: cursor.clone(),
                holder: this_holder(),
            },
            &|r| holder_alive(r, now),
        )?;
        let _heartbeat =
            Heartbeat::start(self.catalog().clone(), self.clock().clone(), run_id.clone());
        let mut run = Run {
            spec,
            run_id,
            started_at,
            cursor: cursor.clone(),
            cursor_is_initial,
            boundary,
            inclusive_append,
            window,
            floor,
            counters: RunCounters::default(),
            committed_rows: 0,
            checkpoints: 0,
            part: 0,
            status: RunStatus::Succeeded,
            t0: Instant::now(),
            trace: RunTrace::default(),
        };
        let mut stop = self.stop_watch();
        let outcome = tokio::select! {
            outcome = self.drive(&mut run, progress) => outcome,
            _ = stop.wait_for(|l| *l == StopLevel::Now) => Err(stopped(
                "the process was stopping and the run did not reach a checkpoint within the shutdown grace",
            )),
        };
        // The trace is a record, not part of the run's result: failing to write it loses
        // nothing the run did.
        let _ = self.catalog().add_event(
            self.clock().now(),
            EventKind::RunTrace,
            &run.spec.name,
            &run.trace.message(&run),
            Some(&run.run_id),
        );
        match outcome {
            Ok(()) => Ok(RunSummary {
                run_id: run.run_id,
                pipeline: run.spec.name.clone(),
                table: run.spec.target.clone(),
                status: run.status,
                counters: run.counters,
                cursor_start: cursor,
                cursor_end: run.cursor,
                elapsed: run.t0.elapsed(),
            }),
            Err(e) => {
                let mut counters = run.counters.clone();
                counters.rows_written = run.committed_rows;
                let kept = if run.checkpoints == 0 {
                    "nothing from this run was committed".to_string()
                } else {
                    format!(
                        "its {} committed checkpoint(s) with {} rows stay, and the next run resumes after them",
                        run.checkpoints, run.committed_rows
                    )
                };
                let e = e.context(|e| {
                    format!(
                        "pipeline '{}' run {} failed: {e}; {kept}",
                        run.spec.name, run.run_id
                    )
                });
                // On a full disk recording the failure may fail too: the run's own error
                // is the one to report; the next open marks the run partial_failure.
                if let Err(fe) = self.catalog().fail_run(
                    &run.run_id,
                    self.clock().now(),
                    &counters,
                    &e.to_string(),
                ) {
                    return Err(e.context(|m| {
                        format!("{m}; recording the failure in the catalog failed too ({fe}), so the next command marks the run partial_failure")
                    }));
                }
                Err(e)
            }
        }
    }

    /// Plans the run and executes it part by part, planning again when a source reports
    /// that its data outgrew the schema.
    async fn drive(
        &self,
        run: &mut Run,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<()> {
        let mut replans = 0;
        'plan: loop {
            let planning = Instant::now();
            let apply_lag = !run.cursor_is_initial && run.window.is_none();
            let plan = self
                .physical_plan(&run.spec, run.cursor.as_deref(), apply_lag)
                .await?;
            run.trace.plan += planning.elapsed();
            loop {
                let rc = Arc::new(self.run_context(run));
                match self.run_part(run, &plan, &rc, progress).await {
                    Ok(true) => return Ok(()),
                    Ok(false) if self.stop_level() >= StopLevel::AtCheckpoint => {
                        return Err(stopped("the process was stopping"));
                    }
                    Ok(false) => continue,
                    Err(e) => {
                        let drift = rc.report().drift;
                        if drift.is_empty() || replans >= MAX_DRIFT_REPLANS {
                            return Err(e);
                        }
                        replans += 1;
                        for d in drift {
                            let msg = format!(
                                "{}: {}; the run plans again with the evolved schema",
                                d.table,
                                d.changes.join("; ")
                            );
                            self.catalog().add_event(
                                self.clock().now(),
                                EventKind::SchemaDrift,
                                &run.spec.target,
                                &msg,
                                Some(&run.run_id),
                            )?;
                            self.set_schema_hint(&d.table, d.evolved);
                        }
                        continue 'plan;
                    }
                }
            }
        }
    }

    fn run_context(&self, run: &Run) -> RunContext {
        let kind = run.spec.cursor.as_ref().map(|c| c.kind);
        let token = kind == Some(CursorKind::OpaqueToken);
        let snapshot = kind == Some(CursorKind::SnapshotId);
        RunContext::new(
            // An empty token is the first page (read again: the API gave no token past it).
            run.cursor.clone().filter(|c| token && !c.is_empty()),
            run.boundary.clone().filter(|_| token),
            token.then(|| {
                run.spec
                    .checkpoint_pages
                    .unwrap_or(DEFAULT_CHECKPOINT_PAGES)
            }),
            run.cursor.clone().filter(|_| snapshot),
            run.spec.on_schema_change,
        )
    }

    /// Executes the plan once (a whole run, or one page group of a token run) and commits
    /// what it produced. Returns whether the run is over.
    async fn run_part(
        &self,
        run: &mut Run,
        plan: &Arc<dyn ExecutionPlan>,
        rc: &Arc<RunContext>,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<bool> {
        let spec = run.spec.clone();
        let kind = spec.cursor.as_ref().map(|c| c.kind);
        let old_files = self.catalog().table_files(&spec.target)?;
        let table_schema = self.store().table_schema(&old_files)?;
        let before = source_metrics(plan);
        let discarded_before = run.counters.rows_discarded;
        let part = self
            .stream_part(run, plan, rc, table_schema.as_ref(), progress)
            .await;
        // Counted for the trace whether or not the part succeeded.
        let added = source_metrics(plan).since(before);
        run.trace.fetch += Duration::from_nanos(added.fetch_ns);
        run.trace.decode += Duration::from_nanos(added.decode_ns);
        run.trace.requests += added.requests;
        let part = part?;
        let report = rc.report();
        run.counters.pages += added.pages;
        run.counters.bytes += added.bytes;
        run.counters.rows_discarded += report.rows_discarded;
        run.counters.rows_skipped += report.rows_skipped;
        let now = self.clock().now();
        let mut events = Vec::new();
        for change in &report.boundary_changes {
            events.push((
                EventKind::BoundaryChanged,
                format!("pipeline '{}': {change}", spec.name),
            ));
        }
        // The boundary committed with the cursor: the source's (token) or the run's own
        // (`>=` monotonic); a part that read nothing keeps the committed one.
        let mut boundary = run.boundary.clone();

        // Where the cursor goes, and whether the run is over.
        let (cursor, done) = match kind {
            Some(CursorKind::SnapshotId) => {
                let id = report
                    .snapshot_id
                    .clone()
                    .or(part.hash.clone())
                    .unwrap_or_default();
                if report.unchanged || run.cursor.as_deref() == Some(id.as_str()) {
                    self.remove_files(&part.files);
                    let commit = RunCommit {
                        run_id: run.run_id.clone(),
                        pipeline: spec.name.clone(),
                        table: spec.target.clone(),
                        files: Vec::new(),
                        replace: false,
                        cursor: None,
                        boundary: None,
                        schema: None,
                        events: vec![(
                            EventKind::SnapshotUnchanged,
                            format!(
                                "pipeline '{}': snapshot {id} is the committed one; the run wrote nothing",
                                spec.name
                            ),
                        )],
                        counters: run.counters.clone(),
                        at: now,
                        finish: Some(RunStatus::Skipped),
                    };
                    self.catalog().commit(&commit)?;
                    run.status = RunStatus::Skipped;
                    return Ok(true);
                }
                (Some(id), true)
            }
            Some(CursorKind::OpaqueToken) => {
                let done = report.exhausted || added.pages == 0;
                // No token yet but a boundary: the first page is the one to read again.
                let token = report
                    .token
                    .clone()
                    .or_else(|| report.boundary.as_ref().map(|_| String::new()));
                if added.pages > 0 {
                    boundary = report.boundary.clone();
                }
                if !done && token.is_none() {
                    self.remove_files(&part.files);
                    return Err(Error::InvalidInput(format!(
                        "pipeline '{}' has CURSOR TOKEN but its source gave no resume token after {} page(s): the source table needs token pagination (pagination cursor, next_url or link_header)",
                        spec.name, added.pages
                    )));
                }
                (token.or(run.cursor.clone()), done)
            }
            Some(CursorKind::Monotonic) => {
                if run.inclusive_append {
                    boundary = part.boundary.clone();
                }
                if part.boundary_missing > 0 {
                    events.push((
                        EventKind::BoundaryChanged,
                        format!(
                            "pipeline '{}': {} row(s) written at cursor value '{}' by earlier runs were not read again (removed or rewritten upstream, or the query's columns changed); rows that differ were written",
                            spec.name,
                            part.boundary_missing,
                            run.cursor.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                (self.advance(run, part.max.as_ref())?, true)
            }
            None => (None, true),
        };
        if part.null_cursor_rows > 0 {
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
                    part.null_cursor_rows,
                    rule.as_str().to_ascii_uppercase()
                ),
            ));
        }
        if run.counters.rows_discarded > discarded_before {
            events.push((
                EventKind::RowsDiscarded,
                format!(
                    "pipeline '{}': {} row(s) did not fit the table's column types and were discarded (ON SCHEMA CHANGE DISCARD)",
                    spec.name,
                    run.counters.rows_discarded - discarded_before
                ),
            ));
        }

        // Merge rewrites the table: the old rows and this part's, the last row of a key kept.
        let mut files = part.files;
        let replace = match spec.mode {
            WriteMode::Merge if !files.is_empty() => {
                let input = files;
                let merged = self.merge(run, &old_files, &input).await;
                self.remove_files(&input);
                files = merged?;
                true
            }
            WriteMode::Merge | WriteMode::Append => false,
            WriteMode::Replace => true,
        };
        let new_schema = match files.first() {
            Some(f) => Some(self.store().file_schema(&f.path)?),
            None => None,
        };
        let (table_after, changes) = match (&table_schema, &new_schema) {
            (Some(old), Some(new)) => {
                let (merged, changes) = schema::merge(old, new);
                (
                    Some(if replace {
                        new.as_ref().clone()
                    } else {
                        merged
                    }),
                    changes,
                )
            }
            (None, Some(new)) => (Some(new.as_ref().clone()), Vec::new()),
            (old, None) => (old.clone(), Vec::new()),
        };
        events.extend(changes.iter().map(|c| c.event(&spec.target)));

        run.counters.rows_written = run.committed_rows + part.rows;
        // A backfill's cursor is its window's start; the committed value is its floor.
        let committed_value = match &run.window {
            Some(_) => run.floor.as_deref(),
            None => run.cursor.as_deref(),
        };
        if let Some(w) = &run.window {
            events.push((
                EventKind::Backfill,
                format!(
                    "pipeline '{}': backfill {} by {}: {} row(s) read and merged; the committed cursor stays '{}'",
                    spec.name,
                    w.describe(),
                    crate::rewind::actor(),
                    part.rows,
                    run.floor.as_deref().unwrap_or_default(),
                ),
            ));
        }
        let commit = RunCommit {
            run_id: run.run_id.clone(),
            pipeline: spec.name.clone(),
            table: spec.target.clone(),
            files: files.clone(),
            replace,
            cursor: match (kind, &cursor) {
                (Some(k), Some(v))
                    if committed_value != Some(v.as_str())
                        || run.cursor_is_initial
                        || boundary != run.boundary =>
                {
                    Some((k.as_str().to_string(), v.clone()))
                }
                _ => None,
            },
            boundary: boundary.as_ref().map(BoundaryRows::to_text),
            schema: table_after.as_ref().map(schema_text),
            events,
            counters: run.counters.clone(),
            at: now,
            finish: done.then_some(RunStatus::Succeeded),
        };
        let committing = Instant::now();
        let committed = self.catalog().commit(&commit);
        run.trace.commit += committing.elapsed();
        if let Err(e) = committed {
            self.remove_files(&files);
            return Err(e);
        }
        if commit.cursor.is_some() {
            run.cursor_is_initial = false;
            run.boundary = boundary;
            run.floor = cursor.clone();
        }
        run.cursor = cursor.or(run.cursor.take());
        run.committed_rows += part.rows;
        run.checkpoints += 1;
        // Files retired long enough ago that no reader can still be reading them.
        let grace = chrono::Duration::from_std(RETIRED_GRACE).unwrap_or_default();
        if let Ok(paths) = self.catalog().purge_retired(now - grace) {
            for p in paths {
                let _ = std::fs::remove_file(self.store().absolute(&p));
            }
        }
        Ok(done)
    }

    /// The new monotonic cursor: the largest of the committed one and what the run saw
    /// (with LAG a run reads below the committed value and must not move it back).
    fn advance(&self, run: &Run, max: Option<&ScalarValue>) -> Result<Option<String>> {
        // A backfill read a window, not everything past the committed cursor: moving the
        // cursor to what it saw could skip rows between the cursor and the window.
        if run.window.is_some() {
            return Ok(run.floor.clone());
        }
        let Some(max) = max else {
            return Ok(run.floor.clone().or(run.cursor.clone()));
        };
        if let Some(committed) = run.floor.as_deref()
            && let Ok(c) = ScalarValue::try_from_string(committed.to_string(), &max.data_type())
            && c.partial_cmp(max) == Some(std::cmp::Ordering::Greater)
        {
            return Ok(Some(committed.to_string()));
        }
        crate::cursor::render(max).map(Some)
    }

    /// Streams one execution of the plan into a staged file.
    async fn stream_part(
        &self,
        run: &mut Run,
        plan: &Arc<dyn ExecutionPlan>,
        rc: &Arc<RunContext>,
        table_schema: Option<&Schema>,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<Part> {
        let spec = run.spec.clone();
        let input_schema: SchemaRef = plan.schema();
        let column_index = |col: &str, what: &str| {
            input_schema.index_of(col).map_err(|_| {
                Error::InvalidInput(format!(
                    "pipeline '{}': {what} column '{col}' is not in the SELECT's output; its columns are {}",
                    spec.name,
                    input_schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                ))
            })
        };
        let cursor_col = match &spec.cursor {
            Some(c) if c.kind == CursorKind::Monotonic => Some((
                column_index(c.column.as_deref().unwrap_or_default(), "cursor")?,
                c.on_null,
            )),
            _ => None,
        };
        let key_cols = spec
            .key
            .iter()
            .map(|k| column_index(k, "key"))
            .collect::<Result<Vec<_>>>()?;
        let conform = Conform::plan(
            table_schema,
            &input_schema,
            spec.on_schema_change,
            &spec.name,
        )?;
        let lineage = LineageColumns {
            run_id: run.run_id.clone(),
            loaded_at: run.started_at,
        };
        let merge = spec.mode == WriteMode::Merge;
        let mut out_schema = lineage.output_schema(&conform.schema)?;
        if merge {
            let mut fields: Vec<Field> = out_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new(SEQ_COLUMN, DataType::Int64, false));
            out_schema = Arc::new(Schema::new(fields));
        }
        // A merge run's rows are staged as input to the merge, under their own name.
        let file_run = if merge {
            format!("{}-input", run.run_id)
        } else {
            run.run_id.clone()
        };
        let mut writer =
            self.store()
                .begin(&spec.target, &file_run, run.part, out_schema.clone())?;
        run.part += 1;

        let config = self.session().copied_config().with_extension(rc.clone());
        let task_ctx =
            Arc::new(TaskContext::from(&self.session().state()).with_session_config(config));
        let snapshot = spec
            .cursor
            .as_ref()
            .is_some_and(|c| c.kind == CursorKind::SnapshotId);
        let mut hash = snapshot.then(ContentHash::new);
        let mut max: Option<ScalarValue> = None;
        let mut at_boundary = AtBoundary::new(run, &input_schema, cursor_col.map(|c| c.0))?;
        // A backfill's end: rows past it are left out.
        let window_to = match (run.window.as_ref().and_then(|w| w.to.as_ref()), cursor_col) {
            (Some(to), Some((idx, _))) => Some(crate::cursor::bind(
                to,
                input_schema.field(idx).data_type(),
                None,
                &spec.name,
            )?),
            _ => None,
        };
        let (mut rows, mut nulls, mut seq) = (0u64, 0u64, 0i64);
        let result: Result<()> = async {
            // A one-partition source runs on its own task, up to two batches ahead, so
            // fetching and decoding pages overlaps with encoding Parquet here (two cores,
            // both busy); several partitions already run on their own tasks. The part
            // commits only after the stream ends, so the source's token never runs ahead
            // of what is committed.
            let mut stream = execute_stream(plan.clone(), task_ctx)?;
            if plan.properties().output_partitioning().partition_count() == 1 {
                stream = spawn_buffered(stream, 2);
            }
            let mut last_report = Instant::now();
            while let Some(batch) = stream.next().await {
                let mut batch = batch?;
                run.counters.rows_read += batch.num_rows() as u64;
                if let Some((idx, rule)) = cursor_col {
                    let n = batch.column(idx).null_count() as u64;
                    if n > 0 {
                        match rule {
                            NullRule::Fail => {
                                return Err(Error::InvalidInput(format!(
                                    "pipeline '{}': {n} row(s) have a NULL cursor column '{}'; a NULL cannot be compared with the cursor. Choose what happens to them: CURSOR MONOTONIC ({}) ... ON NULL SKIP (leave them out, counted) or ON NULL LOAD (load them), or COALESCE the column in the SELECT",
                                    spec.name,
                                    input_schema.field(idx).name(),
                                    input_schema.field(idx).name()
                                )));
                            }
                            NullRule::Skip => {
                                let keep = is_not_null(batch.column(idx).as_ref())?;
                                batch = filter_record_batch(&batch, &keep)?;
                                run.counters.rows_skipped += n;
                            }
                            NullRule::Load => {}
                        }
                        nulls += n;
                    }
                    if let Some(to) = &window_to {
                        let keep = datafusion::arrow::compute::kernels::cmp::lt_eq(
                            batch.column(idx),
                            &to.to_scalar()?,
                        )?;
                        // NULL cursors (ON NULL LOAD) are not past the window's end.
                        let keep = datafusion::arrow::compute::kernels::boolean::or_kleene(
                            &keep,
                            &is_null(batch.column(idx).as_ref())?,
                        )?;
                        batch = filter_record_batch(&batch, &keep)?;
                    }
                    let hashes = match at_boundary.as_mut() {
                        Some(b) => {
                            let (kept, hashes, skipped) = b.skip_written(&batch)?;
                            batch = kept;
                            run.counters.rows_skipped += skipped;
                            hashes
                        }
                        None => Vec::new(),
                    };
                    if let Some(v) = column_max(batch.column(idx))? {
                        let order = max.as_ref().map(|m| v.partial_cmp(m));
                        if matches!(order, None | Some(Some(std::cmp::Ordering::Greater))) {
                            max = Some(v.clone());
                            if let Some(b) = at_boundary.as_mut() {
                                b.at_max.clear();
                            }
                        }
                        if let Some(b) = at_boundary.as_mut()
                            && order != Some(Some(std::cmp::Ordering::Less)) {
                                b.collect_at(&batch, &v, &hashes)?;
                            }
                    }
                }
                for &k in &key_cols {
                    let n = batch.column(k).null_count();
                    if n > 0 {
                        return Err(Error::InvalidInput(format!(
                            "pipeline '{}': {n} row(s) have a NULL in key column '{}'; MODE MERGE needs every key value to identify its row: filter them out or COALESCE the key in the SELECT",
                            spec.name,
                            input_schema.field(k).name()
                        )));
                    }
                }
                let (batch, dropped) = conform.apply(batch)?;
                run.counters.rows_discarded += dropped;
                if let Some(h) = hash.as_mut() {
                    h.update(&batch)?;
                }
                let mut out = lineage.apply(&batch)?;
                if merge {
                    let n = out.num_rows() as i64;
                    let mut columns = out.columns().to_vec();
                    columns.push(Arc::new(Int64Array::from_iter_values(seq..seq + n)));
                    seq += n;
                    out = RecordBatch::try_new(out_schema.clone(), columns)
                        .map_err(|e| Error::Internal(format!("numbering merge rows: {e}")))?;
                }
                let writing = Instant::now();
                writer.write(&out)?;
                run.trace.write += writing.elapsed();
                rows += out.num_rows() as u64;
                if last_report.elapsed() >= Duration::from_millis(200) {
                    last_report = Instant::now();
                    let m = source_metrics(plan);
                    progress(&RunProgress {
                        pipeline: spec.name.clone(),
                        rows: run.committed_rows + rows,
                        pages: m.pages,
                        bytes: m.bytes,
                        elapsed: run.t0.elapsed(),
                    });
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            writer.abort();
            return Err(e);
        }
        let table_exists = table_schema.is_some();
        let files = if rows == 0 && table_exists && spec.mode != WriteMode::Replace {
            writer.abort();
            Vec::new()
        } else {
            let finishing = Instant::now();
            let files = writer.finish()?;
            run.trace.commit += finishing.elapsed();
            files
        };
        let boundary_missing = at_boundary
            .as_ref()
            .and_then(|b| b.committed.as_ref())
            .map_or(0, |(_, skipper)| skipper.missing());
        let boundary = match at_boundary {
            Some(b) => b.finish(run, max.as_ref()),
            None => None,
        };
        Ok(Part {
            files,
            rows,
            max,
            hash: hash.map(|h| h.finish()),
            null_cursor_rows: nulls,
            boundary,
            boundary_missing,
        })
    }

    /// The table after merging `input` (this part's rows, numbered) into `old`: one row per
    /// key, the last one delivered. Written as a new file that replaces the table's files.
    async fn merge(
        &self,
        run: &Run,
        old: &[FileEntry],
        input: &[FileEntry],
    ) -> Result<Vec<FileEntry>> {
        let spec = &run.spec;
        let all: Vec<FileEntry> = old.iter().chain(input).cloned().collect();
        let provider = self.store().table_provider(&all)?;
        let schema = provider.schema();
        let ctx = SessionContext::new();
        ctx.register_table("merge_input", provider)?;
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != SEQ_COLUMN)
            .map(|f| quote(f.name()))
            .collect();
        let keys: Vec<String> = spec.key.iter().map(|k| quote(k)).collect();
        let sql = format!(
            "SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY {seq} DESC NULLS LAST) AS __hakiri_rn FROM merge_input) WHERE __hakiri_rn = 1",
            cols = columns.join(", "),
            keys = keys.join(", "),
            seq = quote(SEQ_COLUMN),
        );
        let df = ctx.sql(&sql).await?;
        let out_schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        // The same part number as its input (`<run>-input...`), under the run's own name.
        let part = run.part.saturating_sub(1);
        let mut writer = self
            .store()
            .begin(&spec.target, &run.run_id, part, out_schema)?;
        let result: Result<()> = async {
            let mut stream = df.execute_stream().await?;
            while let Some(batch) = stream.next().await {
                writer.write(&batch?)?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => writer.finish(),
            Err(e) => {
                writer.abort();
                Err(e.context(|e| format!("merging into context table '{}': {e}", spec.target)))
            }
        }
    }

    fn remove_files(&self, files: &[FileEntry]) {
        for f in files {
            let _ = std::fs::remove_file(self.store().absolute(&f.path));
        }
    }
}

/// Whether a pipeline is a monotonic append whose query reads `>= $cursor`: each run reads
/// the rows at the committed value again, and those already written are skipped by hash.
fn reads_boundary_again(spec: &PipelineSpec) -> Result<bool> {
    let monotonic = spec
        .cursor
        .as_ref()
        .is_some_and(|c| c.kind == CursorKind::Monotonic);
    if !monotonic || spec.mode != WriteMode::Append {
        return Ok(false);
    }
    let mut body = crate::sql::parse_pipeline_body(&spec.sql)?;
    let boundaries = crate::cursor::rewrite_predicate(&mut body.query, &spec.name)?;
    Ok(boundaries.contains(&crate::cursor::Boundary::Inclusive))
}

/// A `>=` monotonic append run's boundary rows: the rows at the committed value that
/// earlier runs wrote are skipped, and the rows at the largest value seen are collected
/// (hashed) as the next commit's boundary.
struct AtBoundary {
    hasher: RowHasher,
    /// The cursor column.
    idx: usize,
    /// The committed cursor value and what was written at it.
    committed: Option<(ScalarValue, crate::cursor::Skipper)>,
    /// Hashes of the rows written at the largest cursor value so far.
    at_max: Vec<u64>,
}

impl AtBoundary {
    fn new(run: &Run, schema: &SchemaRef, cursor_col: Option<usize>) -> Result<Option<Self>> {
        let Some(idx) = cursor_col.filter(|_| run.inclusive_append) else {
            return Ok(None);
        };
        let committed = match (&run.cursor, &run.boundary) {
            (Some(value), Some(b)) if !run.cursor_is_initial => {
                let ty = schema.field(idx).data_type();
                Some((
                    crate::cursor::bind(value, ty, None, &run.spec.name)?,
                    b.skipper(),
                ))
            }
            _ => None,
        };
        Ok(Some(AtBoundary {
            hasher: RowHasher::new(schema)?,
            idx,
            committed,
            at_max: Vec::new(),
        }))
    }

    /// Drops the rows earlier runs wrote at the committed value; returns the rows kept,
    /// their hashes and how many were dropped.
    fn skip_written(&mut self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<u64>, u64)> {
        let hashes = self.hasher.hashes(batch)?;
        let Some((value, skipper)) = self.committed.as_mut() else {
            return Ok((batch.clone(), hashes, 0));
        };
        let at = datafusion::arrow::compute::kernels::cmp::eq(
            batch.column(self.idx),
            &value.to_scalar()?,
        )?;
        let keep: Vec<bool> = (0..batch.num_rows())
            .map(|i| !(at.is_valid(i) && at.value(i) && skipper.skip(hashes[i])))
            .collect();
        let skipped = keep.iter().filter(|k| !**k).count() as u64;
        if skipped == 0 {
            return Ok((batch.clone(), hashes, 0));
        }
        let mask = datafusion::arrow::array::BooleanArray::from(keep.clone());
        let kept_hashes = hashes
            .into_iter()
            .zip(&keep)
            .filter_map(|(h, k)| k.then_some(h))
            .collect();
        Ok((filter_record_batch(batch, &mask)?, kept_hashes, skipped))
    }

    /// Adds the rows of `batch` whose cursor equals `max` (the largest value so far).
    fn collect_at(&mut self, batch: &RecordBatch, max: &ScalarValue, hashes: &[u64]) -> Result<()> {
        let col = batch.column(self.idx);
        let at = datafusion::arrow::compute::kernels::cmp::eq(col, &max.to_scalar()?)?;
        for (i, h) in hashes.iter().enumerate() {
            if at.is_valid(i) && at.value(i) {
                self.at_max.push(*h);
            }
        }
        Ok(())
    }

    /// The boundary to commit: the rows at the new cursor value, which include the
    /// committed boundary's when the value did not move; the committed one when the run
    /// wrote nothing.
    fn finish(self, run: &Run, max: Option<&ScalarValue>) -> Option<BoundaryRows> {
        let Some(max) = max else {
            return run.boundary.clone();
        };
        let mut hashes = Vec::new();
        if let (Some((value, _)), Some(b)) = (&self.committed, &run.boundary)
            && value.partial_cmp(max) == Some(std::cmp::Ordering::Equal)
        {
            hashes.extend(&b.hashes);
        }
        hashes.extend(self.at_max);
        Some(BoundaryRows { hashes })
    }
}

/// The metrics source scans report, summed over the plan: `pages` and `bytes` (the run's
/// counters), `requests`, `fetch_time` and `decode_time` in nanoseconds (its trace).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SourceMetrics {
    pub pages: u64,
    pub bytes: u64,
    pub requests: u64,
    pub fetch_ns: u64,
    pub decode_ns: u64,
}

impl SourceMetrics {
    /// What was added since `before` (metrics accumulate over the executions of a plan).
    fn since(self, before: SourceMetrics) -> SourceMetrics {
        SourceMetrics {
            pages: self.pages.saturating_sub(before.pages),
            bytes: self.bytes.saturating_sub(before.bytes),
            requests: self.requests.saturating_sub(before.requests),
            fetch_ns: self.fetch_ns.saturating_sub(before.fetch_ns),
            decode_ns: self.decode_ns.saturating_sub(before.decode_ns),
        }
    }
}

pub(crate) fn source_metrics(plan: &Arc<dyn ExecutionPlan>) -> SourceMetrics {
    let mut sum = SourceMetrics::default();
    let mut stack = vec![plan.clone()];
    while let Some(p) = stack.pop() {
        if let Some(m) = p.metrics() {
            let named = |name| {
                m.sum_by_name(name)
                    .map(|v| v.as_usize() as u64)
                    .unwrap_or(0)
            };
            sum.pages += named(metric::PAGES);
            sum.bytes += named(metric::BYTES);
            sum.requests += named(metric::REQUESTS);
            sum.fetch_ns += named(metric::FETCH_TIME);
            sum.decode_ns += named(metric::DECODE_TIME);
        }
        stack.extend(p.children().into_iter().cloned());
    }
    sum
}
