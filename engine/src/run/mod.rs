//! Pipeline runs: the run lock, the stream from the physical plan into staged Parquet, and
//! the commits (ARCHITECTURE.md, commit protocol). A monotonic or snapshot run commits once
//! at its end; a token run commits a checkpoint after every page group, so a run killed at
//! page 900 resumes at page 900.
//!
//! The I/O is here; the decisions are pure and tested without it (`tests`):
//! - `track`: cursor tracking per kind (NULL rules, `>=` boundaries, maxima, snapshots);
//! - `write`: the write strategy per mode (append, replace, merge);
//! - `part`: a part's batches shaped into the rows it stages (tracking, conforming to the
//!   table's schema, lineage columns);
//! - `commit`: the commit planner (cursor, boundary, events, schema, whether the run ends).

mod commit;
mod part;
#[cfg(test)]
mod tests;
mod track;
mod write;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::common::spawn_buffered;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;

use self::commit::Decision;
use self::part::PartRows;
use self::track::{CursorState, Tracked};
use self::write::{WriteStrategy, merge_query};
use crate::catalog::{Catalog, FileEntry, NewRun, RunCommit, RunHolder, RunRecord};
use crate::cursor::BoundaryRows;
use crate::engine::{Engine, RunProgress, RunSummary, StopLevel};
use crate::error::{Error, Result};
use crate::ports::{Clock, Destination, RunContext, RunStarted};
use crate::rewind::Window;
use crate::store::{LineageColumns, schema_text};
use crate::types::{
    CursorKind, DEFAULT_CHECKPOINT_PAGES, PipelineSpec, RunCounters, RunStatus, WriteMode,
};
use crate::types::{EventKind, metric};
use tracing::Instrument;

/// How long a run's holder may go without a heartbeat before another process may take the
/// run over. Heartbeats come every [`HEARTBEAT_EVERY`].
pub const LEASE: Duration = Duration::from_secs(60);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Files retired by a replace or merge stay on disk this long for readers that planned
/// before the swap.
pub const RETIRED_GRACE: Duration = Duration::from_secs(600);
/// How often a run plans again after its source's data outgrew the schema.
const MAX_DRIFT_REPLANS: usize = 8;

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

/// Carries the current span into the tasks DataFusion spawns (a scan's partitions,
/// buffered streams), so a connector's request spans stay in the run's trace.
struct SpanTracer;

impl datafusion::common::runtime::JoinSetTracer for SpanTracer {
    fn trace_future(
        &self,
        fut: futures::future::BoxFuture<'static, Box<dyn std::any::Any + Send>>,
    ) -> futures::future::BoxFuture<'static, Box<dyn std::any::Any + Send>> {
        use futures::FutureExt;
        fut.in_current_span().boxed()
    }

    fn trace_block(
        &self,
        f: Box<dyn FnOnce() -> Box<dyn std::any::Any + Send> + Send>,
    ) -> Box<dyn FnOnce() -> Box<dyn std::any::Any + Send> + Send> {
        let span = tracing::Span::current();
        Box::new(move || span.in_scope(f))
    }
}

/// Installs [`SpanTracer`] for the process (once; later calls do nothing).
pub(crate) fn trace_spawned_tasks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = datafusion::common::runtime::set_join_set_tracer(&SpanTracer);
    });
}

/// Renews the run's heartbeat until dropped.
pub(crate) struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    pub(crate) fn start(catalog: Arc<dyn Catalog>, clock: Arc<dyn Clock>, run_id: String) -> Self {
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
    /// The cursor between commits (`track`); the run's next part reads from it.
    state: CursorState,
    counters: RunCounters,
    /// Rows in committed checkpoints.
    committed_rows: u64,
    checkpoints: u32,
    part: u32,
    status: RunStatus,
    t0: Instant,
    trace: RunTrace,
    /// The run as told to its observers when it started (once, by `observe_start`);
    /// `None` while it has not started for them, or when there are no observers.
    observed: Option<RunStarted>,
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
    retries: u64,
    /// Log lines sandboxed connectors wrote past their log rate (dropped).
    log_lines_dropped: u64,
}

impl RunTrace {
    fn message(&self, run: &Run) -> String {
        let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
        let dropped = match self.log_lines_dropped {
            0 => String::new(),
            n => format!(" log_lines_dropped={n}"),
        };
        format!(
            "plan={} fetch={} decode={} write={} commit={} total={} requests={} retries={} pages={} rows={}{dropped}",
            ms(self.plan),
            ms(self.fetch),
            ms(self.decode),
            ms(self.write),
            ms(self.commit),
            ms(run.t0.elapsed()),
            self.requests,
            self.retries,
            run.counters.pages,
            run.counters.rows_written.max(run.committed_rows),
        )
    }
}

/// What the plan's stream produced in one execution.
struct Part {
    files: Vec<FileEntry>,
    rows: u64,
    tracked: Tracked,
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

    /// A run is a trace: this span, with `plan`, `part` and `commit` under it and the
    /// connectors' request spans under those.
    async fn run_with(
        &self,
        name: &str,
        run_id: String,
        window: Option<Window>,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<RunSummary> {
        use tracing::Instrument;
        let span = tracing::info_span!("run", pipeline = %name, run_id = %run_id, otel.status_code = tracing::field::Empty);
        let result = self
            .run_traced(name, run_id, window, progress)
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn run_traced(
        &self,
        name: &str,
        run_id: String,
        window: Option<Window>,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<RunSummary> {
        let spec = self.pipeline(name)?;
        if let Some(guard) = &self.run_guard {
            guard.before_run(&spec.name).await?;
        }
        let started_at = self.clock().now();
        let (committed, committed_is_initial) = self.start_cursor(&spec)?;
        let boundary = self.catalog().cursor_boundary(&spec.name)?;
        let read = (committed.clone(), boundary.clone());
        // A backfill starts at its window; the committed cursor stays as it is.
        let mut state = CursorState::start(
            &spec,
            committed,
            committed_is_initial,
            boundary,
            window.clone(),
        )?;
        let cursor = state.cursor.clone();
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
        // The cursor was read before the run lock was taken: another process may have
        // moved it in between (its run of this pipeline ended, RESET CURSOR, DROP CONTEXT
        // TABLE). Under the lock nothing else moves it, so the run starts from what is
        // committed now; starting from the old value would commit past rows never loaded.
        let moved = (|| -> Result<Option<CursorState>> {
            let (now_committed, now_initial) = self.start_cursor(&spec)?;
            let now_boundary = self.catalog().cursor_boundary(&spec.name)?;
            if (now_committed.clone(), now_boundary.clone()) == read {
                return Ok(None);
            }
            let fresh =
                CursorState::start(&spec, now_committed, now_initial, now_boundary, window)?;
            self.catalog().add_event(
                self.clock().now(),
                EventKind::CursorReset,
                &spec.name,
                &format!(
                    "the cursor moved from {} to {} while run {run_id} started (another process); the run starts from the new value",
                    cursor.as_deref().unwrap_or("(none)"),
                    fresh.cursor.as_deref().unwrap_or("(none)")
                ),
                Some(&run_id),
            )?;
            Ok(Some(fresh))
        })();
        match moved {
            Ok(Some(fresh)) => state = fresh,
            Ok(None) => {}
            Err(e) => {
                let _ = self.catalog().fail_run(
                    &run_id,
                    self.clock().now(),
                    &RunCounters::default(),
                    &e.to_string(),
                );
                return Err(e);
            }
        }
        let _heartbeat =
            Heartbeat::start(self.catalog().clone(), self.clock().clone(), run_id.clone());
        let mut run = Run {
            spec,
            run_id,
            started_at,
            state,
            counters: RunCounters::default(),
            committed_rows: 0,
            checkpoints: 0,
            part: 0,
            status: RunStatus::Succeeded,
            t0: Instant::now(),
            trace: RunTrace::default(),
            observed: None,
        };
        let mut stop = self.stop_watch();
        // Every clause is checked again: a pipeline stored before a check existed (a token
        // cursor with MODE REPLACE) fails as a recorded run that reads nothing, with what
        // to change.
        let outcome = match run.spec.check() {
            Err(e) => Err(e),
            Ok(()) => tokio::select! {
                outcome = self.drive(&mut run, progress) => outcome,
                _ = stop.wait_for(|l| *l == StopLevel::Now) => Err(stopped(
                    "the process was stopping and the run did not reach a checkpoint within the shutdown grace",
                )),
            },
        };
        // `drive` tells the observers the run started once its query is planned; a run that
        // ended before that (a failed check or plan) still starts for them, without
        // lineage, so its end has a start.
        self.observe_start(&mut run, None);
        let observed = run.observed.take();
        // The trace is a record, not part of the run's result: failing to write it loses
        // nothing the run did.
        let _ = self.catalog().add_event(
            self.clock().now(),
            EventKind::RunTrace,
            &run.spec.name,
            &run.trace.message(&run),
            Some(&run.run_id),
        );
        let result = self.finish_run(run, outcome, cursor);
        if let Some(started) = &observed {
            for o in &self.observers {
                o.ended(started, result.as_ref());
            }
        }
        result
    }

    /// Tells the observers the run started, once: with the lineage read off `plan`, the
    /// run's own logical plan, when an observer wants it (OpenLineage); a run is never
    /// planned again for its observers.
    fn observe_start(&self, run: &mut Run, plan: Option<&LogicalPlan>) {
        if run.observed.is_some() || self.observers.is_empty() {
            return;
        }
        let lineage = plan
            .filter(|_| self.observers.iter().any(|o| o.wants_lineage()))
            .map(|plan| {
                let store = format!("file://{}", self.store().root().display());
                self.lineage(&run.spec, plan, &store)
            });
        let started = RunStarted {
            run_id: run.run_id.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            pipeline: run.spec.name.clone(),
            sql: run.spec.sql.clone(),
            started_at: run.started_at,
            lineage,
        };
        for o in &self.observers {
            o.started(&started);
        }
        run.observed = Some(started);
    }

    /// The physical plan of a pipeline's logical plan (optimized, then made physical), as
    /// `Engine::physical_plan` plans it: with one target partition, like
    /// `Engine::pipeline_state`, so rows reach the run in the order the source delivers
    /// them. The run plans in two steps so its observers' lineage reads the very logical
    /// plan it executes.
    async fn physical_plan_of(&self, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        let mut state = self.session().state();
        state.config_mut().options_mut().execution.target_partitions = 1;
        state.create_physical_plan(plan).await.map_err(Error::from)
    }

    /// The run's summary, or its error recorded in the catalog.
    fn finish_run(
        &self,
        run: Run,
        outcome: Result<()>,
        cursor: Option<String>,
    ) -> Result<RunSummary> {
        match outcome {
            Ok(()) => Ok(RunSummary {
                run_id: run.run_id,
                pipeline: run.spec.name.clone(),
                table: run.spec.target.clone(),
                status: run.status,
                counters: run.counters,
                cursor_start: cursor,
                cursor_end: run.state.cursor,
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
            let span = tracing::info_span!("plan");
            let logical = self
                .logical_plan(
                    &run.spec,
                    run.state.cursor.as_deref(),
                    run.state.applies_lag(),
                )
                .instrument(span.clone())
                .await?;
            // The run starts for its observers with its first plan (a replan after schema
            // drift is the same run).
            self.observe_start(run, Some(&logical));
            let plan = self.physical_plan_of(&logical).instrument(span).await?;
            run.trace.plan += planning.elapsed();
            loop {
                let rc = Arc::new(self.run_context(run));
                let part = tracing::info_span!("part", part = run.part);
                match self
                    .run_part(run, &plan, &rc, progress)
                    .instrument(part)
                    .await
                {
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
            run.state.cursor.clone().filter(|c| token && !c.is_empty()),
            run.state.boundary.clone().filter(|_| token),
            token.then(|| {
                run.spec
                    .checkpoint_pages
                    .unwrap_or(DEFAULT_CHECKPOINT_PAGES)
            }),
            run.state.cursor.clone().filter(|_| snapshot),
            run.spec.on_schema_change,
        )
    }

    /// Executes the plan once (a whole run, or one page group of a token run) and commits
    /// what it produced, as the commit planner says. Returns whether the run is over.
    async fn run_part(
        &self,
        run: &mut Run,
        plan: &Arc<dyn ExecutionPlan>,
        rc: &Arc<RunContext>,
        progress: &(dyn Fn(&RunProgress) + Send + Sync),
    ) -> Result<bool> {
        let spec = run.spec.clone();
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
        run.trace.retries += added.retries;
        run.trace.log_lines_dropped += added.log_lines_dropped;
        let part = part?;
        let report = rc.report();
        run.counters.pages += added.pages;
        run.counters.bytes += added.bytes;
        run.counters.rows_discarded += report.rows_discarded;
        run.counters.rows_skipped += report.rows_skipped;
        let now = self.clock().now();
        let evidence = commit::Evidence {
            tracked: &part.tracked,
            pages: added.pages,
            report: &report,
            discarded: run.counters.rows_discarded - discarded_before,
        };
        let plan = match commit::plan(&spec, &run.state, &evidence) {
            Ok(Decision::Commit(plan)) => plan,
            Ok(Decision::Unchanged { event }) => {
                self.remove_files(&part.files);
                self.catalog().commit(&RunCommit {
                    run_id: run.run_id.clone(),
                    pipeline: spec.name.clone(),
                    table: spec.target.clone(),
                    files: Vec::new(),
                    replace: false,
                    retire: Vec::new(),
                    cursor: None,
                    boundary: None,
                    schema: None,
                    events: vec![event],
                    counters: run.counters.clone(),
                    at: now,
                    finish: Some(RunStatus::Skipped),
                })?;
                run.status = RunStatus::Skipped;
                return Ok(true);
            }
            Err(e) => {
                self.remove_files(&part.files);
                return Err(e);
            }
        };

        // Merge rewrites the table: the old rows and this part's, the last row of a key kept.
        let mut files = part.files;
        let replace = WriteStrategy::replaces(spec.mode, !files.is_empty());
        if spec.mode == WriteMode::Merge && !files.is_empty() {
            let input = files;
            let merged = self.merge(run, &old_files, &input).await;
            self.remove_files(&input);
            files = merged?;
        }
        let new_schema = match files.first() {
            Some(f) => Some(self.store().file_schema(&f.path)?),
            None => None,
        };
        let (table_after, schema_events) = commit::schema_after(
            &spec.target,
            table_schema.as_ref(),
            new_schema.as_deref(),
            replace,
        );
        let mut events = plan.events.clone();
        events.extend(schema_events);
        run.counters.rows_written = run.committed_rows + part.rows;
        if let Some(w) = &run.state.window {
            events.push((
                EventKind::Backfill,
                format!(
                    "pipeline '{}': backfill {} by {}: {} row(s) read and merged; the committed cursor stays '{}'",
                    spec.name,
                    w.describe(),
                    crate::rewind::actor(),
                    part.rows,
                    run.state.floor.as_deref().unwrap_or_default(),
                ),
            ));
        }
        let commit = RunCommit {
            run_id: run.run_id.clone(),
            pipeline: spec.name.clone(),
            table: spec.target.clone(),
            files: files.clone(),
            replace,
            retire: Vec::new(),
            cursor: plan
                .commit_cursor
                .as_ref()
                .map(|(k, v)| (k.as_str().to_string(), v.clone())),
            boundary: plan.boundary.as_ref().map(BoundaryRows::to_text),
            schema: table_after.as_ref().map(schema_text),
            events,
            counters: run.counters.clone(),
            at: now,
            finish: plan.done.then_some(RunStatus::Succeeded),
        };
        let committing = Instant::now();
        let committed = tracing::info_span!("commit", files = commit.files.len())
            .in_scope(|| self.catalog().commit(&commit));
        run.trace.commit += committing.elapsed();
        if let Err(e) = committed {
            self.discard_uncommitted(&files);
            return Err(e);
        }
        run.state.committed(&plan);
        run.committed_rows += part.rows;
        run.checkpoints += 1;
        // Files retired long enough ago that no reader can still be reading them.
        let grace = chrono::Duration::from_std(RETIRED_GRACE).unwrap_or_default();
        if let Ok(paths) = self.catalog().purge_retired(now - grace) {
            for p in paths {
                let _ = std::fs::remove_file(self.store().absolute(&p));
            }
        }
        Ok(plan.done)
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
        let lineage = LineageColumns {
            run_id: run.run_id.clone(),
            loaded_at: run.started_at,
        };
        let mut rows = PartRows::new(&spec, &run.state, lineage, &plan.schema(), table_schema)?;
        let mut writer = self.store().begin(
            &spec.target,
            &rows.strategy.staged_run(&run.run_id),
            run.part,
            rows.staged_schema(),
        )?;
        run.part += 1;

        let config = self.session().copied_config().with_extension(rc.clone());
        let task_ctx =
            Arc::new(TaskContext::from(&self.session().state()).with_session_config(config));
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
                let batch = batch?;
                run.counters.rows_read += batch.num_rows() as u64;
                let out = rows.push(batch, &mut run.counters)?;
                let writing = Instant::now();
                writer.write(&out)?;
                run.trace.write += writing.elapsed();
                if last_report.elapsed() >= Duration::from_millis(200) {
                    last_report = Instant::now();
                    let m = source_metrics(plan);
                    progress(&RunProgress {
                        pipeline: spec.name.clone(),
                        rows: run.committed_rows + rows.rows,
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
        let staged = rows.rows;
        let files = if !rows.keeps_file(table_schema.is_some()) {
            writer.abort();
            Vec::new()
        } else {
            let finishing = Instant::now();
            let files = writer.finish()?;
            run.trace.commit += finishing.elapsed();
            files
        };
        Ok(Part {
            files,
            rows: staged,
            tracked: rows.finish(&run.state),
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
        let columns: Vec<String> = provider
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let ctx = self.store().session();
        ctx.register_table("merge_input", provider)?;
        let df = ctx.sql(&merge_query(&columns, &spec.key)).await?;
        let out_schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        // The same part number as its input (`<run>-input...`), under the run's own name.
        let part = run.part.saturating_sub(1);
        let writer = self
            .store()
            .begin(&spec.target, &run.run_id, part, out_schema)?;
        crate::ports::write_all(writer, df).await.map_err(|e| {
            e.context(|e| format!("merging into context table '{}': {e}", spec.target))
        })
    }

    pub(crate) fn remove_files(&self, files: &[FileEntry]) {
        for f in files {
            let _ = std::fs::remove_file(self.store().absolute(&f.path));
        }
    }

    /// After a failed commit: deletes those of `files` the catalog does not name. A commit
    /// can land although it was reported failed (a server catalog whose connection broke
    /// while it committed); deleting its files would leave the table naming missing files.
    /// When the catalog cannot be asked, the files stay: the orphan sweep at the next open
    /// deletes the ones no commit named.
    pub(crate) fn discard_uncommitted(&self, files: &[FileEntry]) {
        let Ok(named) = self.catalog().all_files() else {
            return;
        };
        let named: std::collections::HashSet<String> = named.into_iter().collect();
        let unnamed: Vec<FileEntry> = files
            .iter()
            .filter(|f| !named.contains(&f.path))
            .cloned()
            .collect();
        self.remove_files(&unnamed);
    }
}

/// The metrics source scans report, summed over the plan: `pages` and `bytes` (the run's
/// counters), `requests`, `fetch_time` and `decode_time` in nanoseconds (its trace).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SourceMetrics {
    pub pages: u64,
    pub bytes: u64,
    pub requests: u64,
    pub retries: u64,
    pub log_lines_dropped: u64,
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
            retries: self.retries.saturating_sub(before.retries),
            log_lines_dropped: self
                .log_lines_dropped
                .saturating_sub(before.log_lines_dropped),
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
            sum.retries += named(metric::RETRIES);
            sum.log_lines_dropped += named(metric::LOG_LINES_DROPPED);
            sum.fetch_ns += named(metric::FETCH_TIME);
            sum.decode_ns += named(metric::DECODE_TIME);
        }
        stack.extend(p.children().into_iter().cloned());
    }
    sum
}
