//! The scheduler of `hakiri serve`: fires scheduled pipelines at their slots.
//!
//! State lives in `hakiri.schedules` (next fire time, retries, failures in a row,
//! suspension), so a restarted process carries on where the last one stopped. Rules:
//!
//! - A pipeline fires when its `next_fire_at` has come, at most `max_concurrent_runs` runs
//!   at once (a due pipeline waits for a free place). Time comes from the engine's `Clock`.
//! - One run per pipeline: a slot that comes while the previous run still runs is skipped
//!   and says so in `hakiri.events`; across processes the catalog's run lock refuses a
//!   second run and the slot is skipped the same way.
//! - Missed slots (the scheduler was not running when they came, more than
//!   [`MISSED_GRACE`] ago) follow the pipeline's `ON MISSED` policy when the scheduler
//!   starts: `SKIP` (the default) waits for the next slot, `RUN ONCE` runs once at start-up.
//!   Either way one `schedule_missed` event names the slots.
//! - A failed run is retried `RETRY n` times, `BACKOFF` apart (doubling), unless the next
//!   slot comes first; a slot whose run and retries failed counts as one failure, and
//!   `SUSPEND AFTER n FAILURES` suspends the pipeline after n in a row
//!   (`pipeline_suspended` event; `ALTER PIPELINE name RESUME` resumes it).
//! - A run ended by a stopping process is not a failure: it resumes at the next slot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::ScheduleState;
use crate::engine::{Engine, RunSummary, StopLevel};
use crate::error::{Error, Result};
use crate::schedule::{MissedPolicy, ScheduleSpec};
use crate::types::EventKind;
use crate::types::{PipelineSpec, RunStatus};

/// A slot at most this late when the scheduler starts is fired as usual, not "missed".
pub const MISSED_GRACE: Duration = Duration::from_secs(60);
/// Runs at once when `hakiri serve` does not say.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 2;
/// How long the scheduler sleeps at most between looks at the schedules (pipelines created
/// or resumed meanwhile are seen within this).
const POLL: Duration = Duration::from_secs(1);

/// A run the scheduler started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub pipeline: String,
    pub run_id: String,
    /// The slot the run serves (for a retry, the slot that failed).
    pub slot: DateTime<Utc>,
    /// 0 for the slot's first run, then the retry's number.
    pub attempt: u32,
}

struct Running {
    fired: Fired,
    handle: JoinHandle<Result<RunSummary>>,
}

/// Fires scheduled pipelines of one engine. Drive it with [`Scheduler::run`] (a service) or
/// with [`Scheduler::tick`] and [`Scheduler::wait_idle`] (tests with a manual clock).
pub struct Scheduler {
    engine: Arc<Engine>,
    max_concurrent: usize,
    running: BTreeMap<String, Running>,
    started: bool,
    finished: Arc<tokio::sync::Notify>,
}

fn ms(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
}

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

impl Engine {
    /// Every scheduled pipeline this session knows, with its state, creating the state of a
    /// new schedule (its first slot after now) and starting afresh when a schedule changed.
    /// (The catalog drops the state of a pipeline dropped or replaced without a schedule.)
    pub fn schedules(&self) -> Result<Vec<(PipelineSpec, ScheduleState)>> {
        let now = self.clock().now();
        let mut states: BTreeMap<String, ScheduleState> = self
            .catalog()
            .schedules()?
            .into_iter()
            .map(|s| (s.pipeline.clone(), s))
            .collect();
        let mut out = Vec::new();
        for spec in self.pipelines() {
            let Some(schedule) = &spec.schedule else {
                continue;
            };
            let text = schedule.to_string();
            let state = match states.remove(&spec.name) {
                Some(s) if s.schedule == text => s,
                old => {
                    let next = schedule.next_slot(&spec.name, now)?;
                    let s = ScheduleState {
                        pipeline: spec.name.clone(),
                        schedule: text,
                        next_fire_at: next,
                        slot_at: next,
                        attempt: 0,
                        // A changed schedule keeps the pipeline's suspension and record.
                        consecutive_failures: old.as_ref().map_or(0, |o| o.consecutive_failures),
                        suspended: old.as_ref().is_some_and(|o| o.suspended),
                        suspended_reason: old.as_ref().and_then(|o| o.suspended_reason.clone()),
                        last_run_id: old.as_ref().and_then(|o| o.last_run_id.clone()),
                        last_status: old.as_ref().and_then(|o| o.last_status),
                        last_fired_at: old.as_ref().and_then(|o| o.last_fired_at),
                        updated_at: now,
                    };
                    self.catalog().put_schedule(&s)?;
                    s
                }
            };
            out.push((spec, state));
        }
        Ok(out)
    }

    /// `ALTER PIPELINE name SUSPEND | RESUME`. Resuming clears the failure count and waits
    /// for the next slot (no backlog of missed slots is run).
    pub(crate) fn set_suspended(&self, name: &str, suspend: bool) -> Result<String> {
        let now = self.clock().now();
        let (spec, mut state) = self
            .schedules()?
            .into_iter()
            .find(|(p, _)| p.name == name)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "pipeline '{name}' has no schedule to {}: give it one with CREATE OR REPLACE PIPELINE {name} SCHEDULE EVERY '15 minutes' ... (or schedule = {{ every = \"15 minutes\" }} in hakiri.toml)",
                    if suspend { "suspend" } else { "resume" }
                ))
            })?;
        if state.suspended == suspend {
            return Ok(format!(
                "pipeline {name} is already {}; nothing changed",
                if suspend { "suspended" } else { "active" }
            ));
        }
        state.suspended = suspend;
        state.updated_at = now;
        let (kind, message) = if suspend {
            state.suspended_reason = Some(format!("ALTER PIPELINE {name} SUSPEND"));
            (
                EventKind::PipelineSuspended,
                format!(
                    "pipeline '{name}' suspended by ALTER PIPELINE {name} SUSPEND; resume with ALTER PIPELINE {name} RESUME"
                ),
            )
        } else {
            state.suspended_reason = None;
            state.consecutive_failures = 0;
            state.attempt = 0;
            let schedule = spec
                .schedule
                .as_ref()
                .ok_or_else(|| Error::Internal("schedule vanished".into()))?;
            state.next_fire_at = schedule.next_slot(name, now)?;
            state.slot_at = state.next_fire_at;
            (
                EventKind::PipelineResumed,
                format!(
                    "pipeline '{name}' resumed; next run at {}",
                    at(state.next_fire_at)
                ),
            )
        };
        self.catalog().put_schedule(&state)?;
        self.catalog().add_event(now, kind, name, &message, None)?;
        Ok(message)
    }
}

impl Scheduler {
    pub fn new(engine: Arc<Engine>, max_concurrent_runs: usize) -> Self {
        Scheduler {
            engine,
            max_concurrent: max_concurrent_runs.max(1),
            running: BTreeMap::new(),
            started: false,
            finished: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The pipelines with a run in progress.
    pub fn running(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// One look at the schedules: records runs that ended, applies the missed-run policy
    /// (on the first look), and starts the runs that are due. Returns the runs started.
    pub async fn tick(&mut self) -> Result<Vec<Fired>> {
        self.reap(false).await?;
        if self.engine.stop_level() > StopLevel::Running {
            return Ok(Vec::new());
        }
        let engine = self.engine.clone();
        // Pipelines another process created, changed or dropped beside this one count.
        engine.refresh_pipelines()?;
        let now = engine.clock().now();
        let first = !std::mem::replace(&mut self.started, true);
        let mut due: Vec<(PipelineSpec, ScheduleState)> = engine
            .schedules()?
            .into_iter()
            .filter(|(_, s)| !s.suspended && s.next_fire_at <= now)
            .collect();
        due.sort_by_key(|(_, s)| s.next_fire_at);
        let mut fired = Vec::new();
        for (spec, mut state) in due {
            let name = spec.name.clone();
            let Some(schedule) = spec.schedule.clone() else {
                continue;
            };
            if first && state.attempt == 0 && now - state.next_fire_at > ms(MISSED_GRACE) {
                let fire = self.apply_missed(&name, &schedule, &mut state, now)?;
                if !fire {
                    continue;
                }
            } else if let Some(r) = self.running.get(&name) {
                let message = format!(
                    "pipeline '{name}': the slot at {} was skipped: run {} (slot {}) is still running",
                    at(state.slot_at),
                    r.fired.run_id,
                    at(r.fired.slot)
                );
                tracing::warn!(pipeline = %name, run_id = %r.fired.run_id, "slot skipped: the previous run is still running");
                engine
                    .catalog()
                    .add_event(now, EventKind::SlotSkipped, &name, &message, None)?;
                self.advance(&name, &schedule, &mut state, now)?;
                continue;
            }
            if self.running.len() >= self.max_concurrent {
                continue;
            }
            fired.push(self.fire(&name, &schedule, state, now)?);
        }
        Ok(fired)
    }

    /// Applies the missed-run policy to a pipeline whose slot passed while no scheduler
    /// ran. Returns whether to fire now.
    fn apply_missed(
        &self,
        name: &str,
        schedule: &ScheduleSpec,
        state: &mut ScheduleState,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (later, more) = schedule.slots_between(name, state.next_fire_at, now, 10_000)?;
        let count = format!("{}{}", later.len() + 1, if more { "+" } else { "" });
        let last = later.last().copied().unwrap_or(state.next_fire_at);
        let run_once = schedule.on_missed == MissedPolicy::RunOnce;
        let message = format!(
            "pipeline '{name}': {count} slot(s) from {} to {} passed while no scheduler was running; {}",
            at(state.next_fire_at),
            at(last),
            if run_once {
                "ON MISSED RUN ONCE: running once now".to_string()
            } else {
                format!(
                    "ON MISSED SKIP: waiting for the next slot at {}",
                    at(schedule.next_slot(name, now)?)
                )
            }
        );
        tracing::info!(pipeline = %name, missed = %count, run_once, "missed slots");
        self.engine
            .catalog()
            .add_event(now, EventKind::ScheduleMissed, name, &message, None)?;
        if run_once {
            state.slot_at = last;
            Ok(true)
        } else {
            self.advance(name, schedule, state, now)?;
            Ok(false)
        }
    }

    /// Moves the pipeline to its next slot after `now`.
    fn advance(
        &self,
        name: &str,
        schedule: &ScheduleSpec,
        state: &mut ScheduleState,
        now: DateTime<Utc>,
    ) -> Result<()> {
        state.next_fire_at = schedule.next_slot(name, now)?;
        state.slot_at = state.next_fire_at;
        state.attempt = 0;
        state.updated_at = now;
        self.engine.catalog().put_schedule(state)
    }

    fn fire(
        &mut self,
        name: &str,
        schedule: &ScheduleSpec,
        mut state: ScheduleState,
        now: DateTime<Utc>,
    ) -> Result<Fired> {
        let run_id = self.engine.new_run_id(name);
        let fired = Fired {
            pipeline: name.to_string(),
            run_id: run_id.clone(),
            slot: state.slot_at,
            attempt: state.attempt,
        };
        state.last_run_id = Some(run_id.clone());
        state.last_status = Some(RunStatus::Running);
        state.last_fired_at = Some(now);
        state.next_fire_at = schedule.next_slot(name, now.max(fired.slot))?;
        state.slot_at = state.next_fire_at;
        state.updated_at = now;
        self.engine.catalog().put_schedule(&state)?;
        tracing::info!(pipeline = %name, run_id = %run_id, slot = %fired.slot, attempt = fired.attempt, "run started");
        let engine = self.engine.clone();
        let finished = self.finished.clone();
        let pipeline = name.to_string();
        let handle = tokio::spawn(async move {
            let result = engine.run_pipeline_as(&pipeline, run_id, &|_| {}).await;
            finished.notify_one();
            result
        });
        self.running.insert(
            name.to_string(),
            Running {
                fired: fired.clone(),
                handle,
            },
        );
        Ok(fired)
    }

    /// Records the runs that ended (all of them, waiting, with `wait`).
    async fn reap(&mut self, wait: bool) -> Result<()> {
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| wait || r.handle.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in done {
            let Some(r) = self.running.remove(&name) else {
                continue;
            };
            let result = r.handle.await.unwrap_or_else(|e| {
                Err(Error::Internal(format!(
                    "the run task of '{name}' ended: {e}"
                )))
            });
            self.record(&r.fired, result)?;
        }
        Ok(())
    }

    /// Updates a pipeline's schedule state with how its run ended.
    fn record(&self, fired: &Fired, result: Result<RunSummary>) -> Result<()> {
        let engine = &self.engine;
        let now = engine.clock().now();
        let name = &fired.pipeline;
        let Some((spec, mut state)) = engine
            .schedules()?
            .into_iter()
            .find(|(p, _)| &p.name == name)
        else {
            return Ok(()); // the pipeline or its schedule went away meanwhile
        };
        let Some(schedule) = spec.schedule.as_ref() else {
            return Ok(());
        };
        state.updated_at = now;
        match result {
            Ok(summary) => {
                tracing::info!(pipeline = %name, run_id = %summary.run_id, status = summary.status.as_str(),
                    rows = summary.counters.rows_written, elapsed_ms = summary.elapsed.as_millis() as u64, "run finished");
                state.last_status = Some(summary.status);
                state.consecutive_failures = 0;
                state.attempt = 0;
            }
            // Another process holds the pipeline's run lock: this slot is skipped.
            Err(e) if matches!(e.kind(), Error::RunLockHeld { .. }) => {
                tracing::warn!(pipeline = %name, "slot skipped: {e}");
                state.last_status = Some(RunStatus::Skipped);
                engine.catalog().add_event(
                    now,
                    EventKind::SlotSkipped,
                    name,
                    &format!(
                        "pipeline '{name}': the slot at {} was skipped: {e}",
                        at(fired.slot)
                    ),
                    None,
                )?;
            }
            // A stopping process ended the run: not the pipeline's fault.
            Err(e) if engine.stop_level() > StopLevel::Running => {
                tracing::info!(pipeline = %name, run_id = %fired.run_id, "run stopped: {e}");
                state.last_status = Some(RunStatus::Failed);
            }
            Err(e) => {
                tracing::warn!(pipeline = %name, run_id = %fired.run_id, attempt = fired.attempt, "run failed: {e}");
                state.last_status = Some(RunStatus::Failed);
                let retry_at = now + ms(schedule.backoff(fired.attempt + 1));
                if fired.attempt < schedule.retries && retry_at < state.next_fire_at {
                    state.attempt = fired.attempt + 1;
                    state.next_fire_at = retry_at;
                    state.slot_at = fired.slot;
                    engine.catalog().add_event(
                        now,
                        EventKind::RunRetry,
                        name,
                        &format!(
                            "pipeline '{name}': run {} failed; retry {} of {} at {}",
                            fired.run_id,
                            state.attempt,
                            schedule.retries,
                            at(retry_at)
                        ),
                        Some(&fired.run_id),
                    )?;
                } else {
                    state.attempt = 0;
                    state.consecutive_failures += 1;
                    if let Some(limit) = schedule.suspend_after
                        && state.consecutive_failures >= limit
                    {
                        let message = format!(
                            "pipeline '{name}' suspended after {} failed runs in a row (SUSPEND AFTER {limit} FAILURES); the last, run {}, failed with: {e}. Fix the cause, then resume with ALTER PIPELINE {name} RESUME",
                            state.consecutive_failures, fired.run_id
                        );
                        tracing::warn!(pipeline = %name, failures = state.consecutive_failures, "pipeline suspended");
                        state.suspended = true;
                        state.suspended_reason = Some(format!(
                            "{} failed runs in a row",
                            state.consecutive_failures
                        ));
                        engine.catalog().add_event(
                            now,
                            EventKind::PipelineSuspended,
                            name,
                            &message,
                            Some(&fired.run_id),
                        )?;
                    }
                }
            }
        }
        engine.catalog().put_schedule(&state)
    }

    /// Waits for every run in progress to end and records them.
    pub async fn wait_idle(&mut self) -> Result<()> {
        self.reap(true).await
    }

    /// When the next look is worth taking: the earliest due time, at most [`POLL`] away.
    fn next_wake(&self) -> Result<Duration> {
        let now = self.engine.clock().now();
        let next = self
            .engine
            .catalog()
            .schedules()?
            .into_iter()
            .filter(|s| !s.suspended)
            .map(|s| s.next_fire_at)
            .min();
        Ok(match next {
            Some(t) if t > now => (t - now).to_std().unwrap_or(POLL).min(POLL),
            Some(_) => Duration::from_millis(50),
            None => POLL,
        })
    }

    /// Runs the scheduler until `stop` turns true, then stops: no new runs, running ones
    /// end at their next checkpoint within `grace`, after which they are stopped at once.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, grace: Duration) -> Result<()> {
        loop {
            if *stop.borrow() {
                break;
            }
            if let Err(e) = self.tick().await {
                // The catalog may be briefly locked by another process: try again later.
                tracing::error!("scheduler: {e}");
            }
            let wake = self.next_wake().unwrap_or(POLL);
            let finished = self.finished.clone();
            tokio::select! {
                _ = tokio::time::sleep(wake) => {}
                _ = finished.notified() => {}
                _ = stop.changed() => {}
            }
        }
        self.shutdown(grace).await
    }

    /// Stops: running runs get `grace` to reach a checkpoint, then are stopped at once.
    pub async fn shutdown(&mut self, grace: Duration) -> Result<()> {
        self.engine.request_stop(StopLevel::AtCheckpoint);
        if !self.running.is_empty() {
            tracing::info!(
                runs = self.running.len(),
                grace_s = grace.as_secs_f64(),
                "waiting for running runs to reach a checkpoint"
            );
        }
        let all_done = async {
            while self.running.values().any(|r| !r.handle.is_finished()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            tracing::warn!("shutdown grace over: stopping the remaining runs now");
            self.engine.request_stop(StopLevel::Now);
        }
        self.reap(true).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};

    use super::*;
    use crate::EngineOptions;
    use crate::ports::ManualClock;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        clock: Arc<ManualClock>,
        engine: Arc<Engine>,
    }

    /// An engine on a manual clock set to `start` and the memory catalog, with a `gate()`
    /// function that blocks its run until `open` is set (a run that outlasts its interval).
    async fn fixture(start: &str, sql: &str, open: Arc<AtomicBool>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(t(start)));
        let mut engine = Engine::open(
            dir.path(),
            EngineOptions {
                clock: Some(clock.clone()),
                catalog: Some(Arc::new(crate::catalog::MemoryCatalog::new())),
                ..EngineOptions::default()
            },
        )
        .unwrap();
        let gate = create_udf(
            "gate",
            vec![],
            DataType::Int64,
            Volatility::Volatile,
            Arc::new(move |_: &[ColumnarValue]| {
                while !open.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(1))))
            }),
        );
        engine.session_mut().register_udf(gate);
        engine.execute(sql).await.unwrap();
        Fixture {
            _dir: dir,
            clock,
            engine: Arc::new(engine),
        }
    }

    impl Fixture {
        fn state(&self, name: &str) -> ScheduleState {
            self.engine
                .catalog()
                .schedules()
                .unwrap()
                .into_iter()
                .find(|s| s.pipeline == name)
                .unwrap()
        }

        /// Moves the clock to the earliest due time before `end`, looks, and waits for the
        /// runs; returns what fired, or `None` past `end`.
        async fn step(&self, s: &mut Scheduler, end: DateTime<Utc>) -> Option<Vec<Fired>> {
            let next = self
                .engine
                .schedules()
                .unwrap()
                .into_iter()
                .filter(|(_, s)| !s.suspended)
                .map(|(_, s)| s.next_fire_at)
                .min()?;
            if next >= end {
                return None;
            }
            self.clock.set(next);
            let fired = s.tick().await.unwrap();
            s.wait_idle().await.unwrap();
            Some(fired)
        }

        async fn events(&self, kind: &str) -> Vec<String> {
            let batches = datafusion::physical_plan::common::collect(
                self.engine
                    .query(&format!(
                        "SELECT message FROM hakiri.events WHERE kind = '{kind}' ORDER BY id"
                    ))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
            let mut out = Vec::new();
            for b in batches {
                let col = datafusion::arrow::array::cast::as_string_array(b.column(0));
                out.extend(col.iter().map(|v| v.unwrap_or_default().to_string()));
            }
            out
        }
    }

    fn open_gate() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(true))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_and_cron_pipelines_fire_exactly_at_their_slots_over_a_day() {
        let f = fixture(
            "2026-11-27T23:59:30Z",
            "CREATE PIPELINE q SCHEDULE EVERY '15 minutes' AS INSERT INTO context.q SELECT 1 AS x;
             CREATE PIPELINE c SCHEDULE CRON '0 */6 * * *' TZ 'Europe/Berlin' AS INSERT INTO context.c SELECT 1 AS x",
            open_gate(),
        )
        .await;
        let mut s = Scheduler::new(f.engine.clone(), 2);
        let (day, end) = (t("2026-11-28T00:00:00Z"), t("2026-11-29T00:00:00Z"));
        let mut fired: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
        while let Some(batch) = f.step(&mut s, end).await {
            for x in batch {
                assert_eq!(x.slot, f.engine.clock().now(), "fired at its slot");
                fired.entry(x.pipeline).or_default().push(x.slot);
            }
        }
        let every: Vec<_> = (0..96)
            .map(|i| day + chrono::Duration::minutes(15 * i))
            .collect();
        assert_eq!(fired["q"], every);
        // 00:00, 06:00, 12:00, 18:00 in Berlin (UTC+1 in November).
        let cron: Vec<_> = ["05", "11", "17", "23"]
            .iter()
            .map(|h| t(&format!("2026-11-28T{h}:00:00Z")))
            .collect();
        assert_eq!(fired["c"], cron);
        let runs = f.engine.catalog().runs(None).unwrap();
        assert_eq!(runs.len(), 100);
        assert!(
            runs.iter().all(|r| r.status == RunStatus::Succeeded),
            "{runs:?}"
        );
        assert_eq!(f.state("q").next_fire_at, end);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_that_outlasts_its_interval_is_not_started_twice() {
        let gate = Arc::new(AtomicBool::new(false));
        let f = fixture(
            "2026-11-28T00:00:00Z",
            "CREATE PIPELINE slow SCHEDULE EVERY '1 minute' AS INSERT INTO context.slow SELECT gate() AS x",
            gate.clone(),
        )
        .await;
        let mut s = Scheduler::new(f.engine.clone(), 2);
        f.clock.set(t("2026-11-28T00:01:00Z"));
        assert_eq!(s.tick().await.unwrap().len(), 1);
        for minute in 2..=4 {
            f.clock.set(t(&format!("2026-11-28T00:0{minute}:00Z")));
            assert!(s.tick().await.unwrap().is_empty(), "minute {minute}");
        }
        assert_eq!(s.running(), vec!["slow".to_string()]);
        let skipped = f.events("slot_skipped").await;
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("is still running"), "{skipped:?}");
        gate.store(true, Ordering::SeqCst);
        s.wait_idle().await.unwrap();
        f.clock.set(t("2026-11-28T00:05:00Z"));
        assert_eq!(s.tick().await.unwrap().len(), 1);
        s.wait_idle().await.unwrap();
        let runs = f.engine.catalog().runs(Some("slow")).unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn due_pipelines_wait_for_a_free_place() {
        let gate = Arc::new(AtomicBool::new(false));
        let f = fixture(
            "2026-11-28T00:00:00Z",
            "CREATE PIPELINE a SCHEDULE EVERY '1 hour' AS INSERT INTO context.a SELECT gate() AS x;
             CREATE PIPELINE b SCHEDULE EVERY '1 hour' AS INSERT INTO context.b SELECT gate() AS x",
            gate.clone(),
        )
        .await;
        let mut s = Scheduler::new(f.engine.clone(), 1);
        f.clock.set(t("2026-11-28T01:00:00Z"));
        let first = s.tick().await.unwrap();
        assert_eq!(first.len(), 1, "one place: {first:?}");
        f.clock.set(t("2026-11-28T01:00:10Z"));
        assert!(s.tick().await.unwrap().is_empty(), "still no free place");
        gate.store(true, Ordering::SeqCst);
        s.wait_idle().await.unwrap();
        let second = s.tick().await.unwrap();
        s.wait_idle().await.unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].pipeline, second[0].pipeline);
        // It ran late for its slot, and still serves that slot.
        assert_eq!(second[0].slot, t("2026-11-28T01:00:00Z"));
        assert_eq!(
            f.state(&second[0].pipeline).next_fire_at,
            t("2026-11-28T02:00:00Z")
        );
    }

    /// Regression: the scheduler read the pipelines its own session knew, so one created by
    /// another process (`hakiri query "CREATE PIPELINE ..."` beside `hakiri serve`) never
    /// fired, and its schedule row was dropped as orphaned on every look.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelines_another_process_creates_are_scheduled() {
        let f = fixture("2026-11-28T00:00:00Z", "SELECT 1", open_gate()).await;
        let mut s = Scheduler::new(f.engine.clone(), 2);
        assert!(s.tick().await.unwrap().is_empty());
        // Another process: another engine over the same catalog.
        let other = Engine::open(
            f._dir.path(),
            EngineOptions {
                clock: Some(f.clock.clone()),
                catalog: Some(f.engine.catalog().clone()),
                ..EngineOptions::default()
            },
        )
        .unwrap();
        other
            .execute("CREATE PIPELINE late SCHEDULE EVERY '1 hour' AS INSERT INTO context.late SELECT 1 AS x")
            .await
            .unwrap();
        f.clock.set(t("2026-11-28T00:30:00Z"));
        assert!(s.tick().await.unwrap().is_empty());
        assert_eq!(f.state("late").next_fire_at, t("2026-11-28T01:00:00Z"));
        f.clock.set(t("2026-11-28T01:00:00Z"));
        let fired = s.tick().await.unwrap();
        s.wait_idle().await.unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(
            f.engine.catalog().runs(Some("late")).unwrap()[0].status,
            RunStatus::Succeeded
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suspension_by_hand_and_after_failures() {
        let f = fixture(
            "2026-11-28T00:00:00Z",
            "CREATE PIPELINE bad SCHEDULE EVERY '15 minutes' SUSPEND AFTER 3 FAILURES AS INSERT INTO context.bad SELECT 1 / 0 AS x;
             CREATE PIPELINE idle SCHEDULE EVERY '15 minutes' AS INSERT INTO context.idle SELECT 1 AS x;
             ALTER PIPELINE idle SUSPEND",
            open_gate(),
        )
        .await;
        let mut s = Scheduler::new(f.engine.clone(), 2);
        let end = t("2026-11-28T03:00:00Z");
        let mut fired = Vec::new();
        while let Some(batch) = f.step(&mut s, end).await {
            fired.extend(batch.into_iter().map(|x| (x.pipeline, x.slot)));
        }
        // Three failed slots, then nothing: suspended; the suspended-by-hand one never ran.
        assert_eq!(
            fired,
            ["00:15", "00:30", "00:45"]
                .iter()
                .map(|m| ("bad".to_string(), t(&format!("2026-11-28T{m}:00Z"))))
                .collect::<Vec<_>>()
        );
        let state = f.state("bad");
        assert!(state.suspended);
        assert_eq!(state.consecutive_failures, 3);
        let events = f.events("pipeline_suspended").await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            events[1].contains("suspended after 3 failed runs in a row")
                && events[1].contains("ALTER PIPELINE bad RESUME"),
            "{events:?}"
        );
        assert!(f.engine.catalog().runs(Some("idle")).unwrap().is_empty());
        // Resumed, it waits for its next slot and fires there.
        f.clock.set(t("2026-11-28T02:50:00Z"));
        f.engine
            .execute("ALTER PIPELINE idle RESUME")
            .await
            .unwrap();
        assert_eq!(f.state("idle").next_fire_at, t("2026-11-28T03:00:00Z"));
        f.clock.set(t("2026-11-28T03:00:00Z"));
        let fired = s.tick().await.unwrap();
        s.wait_idle().await.unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].pipeline, "idle");
        let Err(err) = f
            .engine
            .execute("CREATE PIPELINE manual AS INSERT INTO context.m SELECT 1 AS x; ALTER PIPELINE manual SUSPEND")
            .await
        else {
            panic!("suspending a pipeline without a schedule must fail");
        };
        assert!(err.to_string().contains("has no schedule"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_runs_are_retried_with_backoff_before_the_slot_counts() {
        let f = fixture(
            "2026-11-28T00:00:00Z",
            "CREATE PIPELINE bad SCHEDULE EVERY '15 minutes' RETRY 2 BACKOFF '1 minute' AS INSERT INTO context.bad SELECT 1 / 0 AS x",
            open_gate(),
        )
        .await;
        let mut s = Scheduler::new(f.engine.clone(), 2);
        let mut fired = Vec::new();
        while let Some(batch) = f.step(&mut s, t("2026-11-28T00:31:00Z")).await {
            fired.extend(batch.into_iter().map(|x| {
                (
                    f.engine.clock().now().format("%H:%M").to_string(),
                    x.attempt,
                )
            }));
        }
        // Retries 1 minute, then 2 minutes after a failure; the slot then counts as failed
        // and the next slot starts with attempt 0.
        let times: Vec<(&str, u32)> = fired.iter().map(|(m, a)| (m.as_str(), *a)).collect();
        assert_eq!(
            times,
            vec![("00:15", 0), ("00:16", 1), ("00:18", 2), ("00:30", 0)]
        );
        assert_eq!(f.events("run_retry").await.len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missed_slots_after_downtime_follow_the_policy() {
        let f = fixture(
            "2026-11-28T00:30:00Z",
            "CREATE PIPELINE skip SCHEDULE EVERY '1 hour' AS INSERT INTO context.skip SELECT 1 AS x;
             CREATE PIPELINE once SCHEDULE EVERY '1 hour' ON MISSED RUN ONCE AS INSERT INTO context.once SELECT 1 AS x",
            open_gate(),
        )
        .await;
        let mut first = Scheduler::new(f.engine.clone(), 2);
        f.clock.set(t("2026-11-28T01:00:00Z"));
        assert_eq!(first.tick().await.unwrap().len(), 2);
        first.wait_idle().await.unwrap();
        drop(first);
        // Down from 01:00 to 05:30: the slots 02:00 to 05:00 are missed.
        f.clock.set(t("2026-11-28T05:30:00Z"));
        let mut second = Scheduler::new(f.engine.clone(), 2);
        let fired = second.tick().await.unwrap();
        second.wait_idle().await.unwrap();
        assert_eq!(
            fired
                .iter()
                .map(|x| x.pipeline.as_str())
                .collect::<Vec<_>>(),
            vec!["once"]
        );
        assert_eq!(fired[0].slot, t("2026-11-28T05:00:00Z"));
        assert!(second.tick().await.unwrap().is_empty());
        for p in ["skip", "once"] {
            assert_eq!(f.state(p).next_fire_at, t("2026-11-28T06:00:00Z"), "{p}");
        }
        let missed = f.events("schedule_missed").await;
        assert_eq!(missed.len(), 2, "{missed:?}");
        let says = |p: &str| {
            missed
                .iter()
                .find(|m| m.contains(&format!("'{p}'")))
                .unwrap()
                .clone()
        };
        assert!(
            says("skip")
                .contains("4 slot(s) from 2026-11-28 02:00:00 UTC to 2026-11-28 05:00:00 UTC")
                && says("skip").contains("ON MISSED SKIP"),
            "{missed:?}"
        );
        assert!(says("once").contains("RUN ONCE"), "{missed:?}");
        f.clock.set(t("2026-11-28T06:00:00Z"));
        assert_eq!(second.tick().await.unwrap().len(), 2);
        second.wait_idle().await.unwrap();
        let runs = |p: &str| f.engine.catalog().runs(Some(p)).unwrap().len();
        assert_eq!((runs("skip"), runs("once")), (2, 3));
    }
}
