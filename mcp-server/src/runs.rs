//! Runs started by agents: each goes on in the background, and its progress and log lines
//! are kept so `run.tail` can return them from an offset while it runs and after it ends.
//! Runs started elsewhere (the CLI, the scheduler) are told from the catalog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hakiri_engine::{Engine, RunProgress};

/// The lines of one run, in the order they happened; only ever appended to.
#[derive(Debug, Default)]
pub struct RunLog {
    pub lines: Vec<String>,
    pub done: bool,
}

#[derive(Default)]
pub struct Runs {
    logs: Mutex<HashMap<String, Arc<Mutex<RunLog>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn progress_line(p: &RunProgress) -> String {
    format!(
        "progress: {} rows, {} pages, {} bytes after {:.1}s",
        p.rows,
        p.pages,
        p.bytes,
        p.elapsed.as_secs_f64()
    )
}

impl Runs {
    /// Starts `pipeline` in the background; returns its run id at once.
    pub fn start(&self, engine: Arc<Engine>, pipeline: &str) -> String {
        let run_id = engine.new_run_id(pipeline);
        let log = Arc::new(Mutex::new(RunLog {
            lines: vec![format!("run {run_id} of pipeline '{pipeline}' started")],
            done: false,
        }));
        lock(&self.logs).insert(run_id.clone(), log.clone());
        let (id, name) = (run_id.clone(), pipeline.to_string());
        tokio::spawn(async move {
            let progress_log = log.clone();
            let progress = move |p: &RunProgress| {
                lock(&progress_log).lines.push(progress_line(p));
            };
            let outcome = engine.run_pipeline_as(&name, id, &progress).await;
            let mut log = lock(&log);
            match outcome {
                Ok(summary) => log.lines.push(format!(
                    "{}: {} rows read, {} rows written, {} pages in {:.1}s; cursor {} -> {}",
                    summary.status.as_str(),
                    summary.counters.rows_read,
                    summary.counters.rows_written,
                    summary.counters.pages,
                    summary.elapsed.as_secs_f64(),
                    summary.cursor_start.as_deref().unwrap_or("(none)"),
                    summary.cursor_end.as_deref().unwrap_or("(none)"),
                )),
                Err(e) => log.lines.push(format!("failed: {e}")),
            }
            log.done = true;
        });
        run_id
    }

    /// The log of a run this process started.
    pub fn log(&self, run_id: &str) -> Option<Arc<Mutex<RunLog>>> {
        lock(&self.logs).get(run_id).cloned()
    }

    /// Lines from `offset` of a run this process started, and whether it has ended.
    pub fn tail(&self, run_id: &str, offset: usize) -> Option<(Vec<String>, usize, bool)> {
        let log = self.log(run_id)?;
        let log = lock(&log);
        let lines = log.lines.iter().skip(offset).cloned().collect();
        Some((lines, log.lines.len(), log.done))
    }
}
