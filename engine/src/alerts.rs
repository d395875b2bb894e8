//! Which alerts are due: failed runs, suspended schedules and stale pipelines, found in the
//! catalog by `serve`'s alert task (which posts them; the engine sends nothing itself).
//!
//! A watch starts at `serve`'s start: what failed or was suspended before is not alerted
//! again after a restart. Each run is alerted once, each suspension once until it is
//! resumed, and each stale pipeline once until it has a successful run again.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::types::{AlertKind, RunStatus};

/// One alert, posted as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub alert: &'static str,
    pub project: String,
    pub pipeline: String,
    pub run_id: Option<String>,
    /// What happened and what to do, for people.
    pub message: String,
    pub at: DateTime<Utc>,
}

impl Alert {
    /// The webhook's body.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "alert": self.alert,
            "project": self.project,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "message": self.message,
            "at": self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "source": "hakiri",
        })
    }
}

/// What one webhook has been told so far.
#[derive(Debug)]
pub struct AlertWatch {
    on: BTreeSet<AlertKind>,
    stale_after: chrono::Duration,
    started: DateTime<Utc>,
    alerted_runs: BTreeSet<String>,
    suspended: BTreeSet<String>,
    stale: BTreeSet<String>,
}

impl AlertWatch {
    /// A watch from `now`: schedules suspended already are not alerted.
    pub fn new(
        catalog: &dyn Catalog,
        on: &[AlertKind],
        stale_after: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let suspended = catalog
            .schedules()?
            .into_iter()
            .filter(|s| s.suspended)
            .map(|s| s.pipeline)
            .collect();
        Ok(AlertWatch {
            on: on.iter().copied().collect(),
            stale_after: chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX),
            started: now,
            alerted_runs: BTreeSet::new(),
            suspended,
            stale: BTreeSet::new(),
        })
    }

    /// The alerts due now.
    pub fn check(
        &mut self,
        catalog: &dyn Catalog,
        project: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Alert>> {
        let mut out = Vec::new();
        let alert = |kind: AlertKind, pipeline: &str, run: Option<&str>, message: String| Alert {
            alert: kind.as_str(),
            project: project.to_string(),
            pipeline: pipeline.to_string(),
            run_id: run.map(str::to_string),
            message,
            at: now,
        };
        let runs = catalog.runs(None)?;
        if self.on.contains(&AlertKind::Failed) {
            for r in runs.iter().filter(|r| {
                matches!(r.status, RunStatus::Failed | RunStatus::PartialFailure)
                    && r.ended_at.is_some_and(|t| t >= self.started)
                    // Compactions are runs too, but not a pipeline's.
                    && !r.pipeline.contains(':')
            }) {
                if self.alerted_runs.insert(r.run_id.clone()) {
                    out.push(alert(
                        AlertKind::Failed,
                        &r.pipeline,
                        Some(&r.run_id),
                        format!(
                            "run {} of pipeline '{}' {}: {}",
                            r.run_id,
                            r.pipeline,
                            r.status.as_str().replace('_', " "),
                            r.error.as_deref().unwrap_or("no error recorded")
                        ),
                    ));
                }
            }
        }
        let schedules = catalog.schedules()?;
        if self.on.contains(&AlertKind::Suspended) {
            for s in &schedules {
                if !s.suspended {
                    self.suspended.remove(&s.pipeline);
                } else if self.suspended.insert(s.pipeline.clone()) {
                    out.push(alert(
                        AlertKind::Suspended,
                        &s.pipeline,
                        s.last_run_id.as_deref(),
                        s.suspended_reason
                            .clone()
                            .unwrap_or_else(|| format!("pipeline '{}' was suspended", s.pipeline)),
                    ));
                }
            }
        }
        if self.on.contains(&AlertKind::Stale) {
            let mut last_success: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
            for r in runs.iter().filter(|r| r.status == RunStatus::Succeeded) {
                let t = r.ended_at.unwrap_or(r.started_at);
                let e = last_success.entry(&r.pipeline).or_insert(t);
                *e = (*e).max(t);
            }
            for s in &schedules {
                // Never succeeded: stale counts from when the watch began.
                let since = last_success
                    .get(s.pipeline.as_str())
                    .copied()
                    .unwrap_or(self.started);
                if now - since < self.stale_after {
                    self.stale.remove(&s.pipeline);
                } else if self.stale.insert(s.pipeline.clone()) {
                    let last = last_success.get(s.pipeline.as_str()).map_or_else(
                        || "has never succeeded".to_string(),
                        |t| format!("last succeeded at {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
                    );
                    out.push(alert(
                        AlertKind::Stale,
                        &s.pipeline,
                        s.last_run_id.as_deref(),
                        format!(
                            "pipeline '{}' is stale: it {last}, longer ago than stale_after ({} s); see `hakiri pipeline describe {}`",
                            s.pipeline,
                            self.stale_after.num_seconds(),
                            s.pipeline
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }
}
