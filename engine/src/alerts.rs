//! Which alerts are due: failed runs, suspended schedules and stale pipelines, found in the
//! catalog by `serve`'s alert task (which posts them; the engine sends nothing itself).
//!
//! The task reads the catalog once per check into an [`AlertFeed`], shared by every
//! webhook's [`AlertWatch`]. The feed starts at `serve`'s start: what failed or was
//! suspended before is not alerted again after a restart. Each run is alerted once, each
//! suspension once until it is resumed, and each stale pipeline once until it has a
//! successful run again.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};

use crate::catalog::{Catalog, RunRecord, ScheduleState};
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

/// The catalog as the alert watches need it: read once per check for all of them, and
/// kept between checks so each run's end is news once.
#[derive(Debug)]
pub struct AlertFeed {
    /// The ended runs counted already, by id. Ids, not times: with a shared catalog runs
    /// are started by other hosts' clocks, and rows appear in no time order. Forgotten
    /// when the catalog no longer has the run (retention), so the set stays its size.
    counted: HashSet<String>,
    /// Each pipeline's last successful run: when it ended.
    last_success: BTreeMap<String, DateTime<Utc>>,
    /// When the feed first saw each scheduled pipeline: where staleness counts from for a
    /// pipeline that has never succeeded.
    first_seen: BTreeMap<String, DateTime<Utc>>,
    /// From the latest read: the runs that ended since the read before (each run once,
    /// whatever its status), and every schedule.
    ended: Vec<RunRecord>,
    schedules: Vec<ScheduleState>,
}

impl AlertFeed {
    /// A feed from its first read, now: runs that ended before are history (their
    /// successes count for staleness), not news.
    pub fn new(catalog: &dyn Catalog, now: DateTime<Utc>) -> Result<Self> {
        let mut feed = AlertFeed {
            counted: HashSet::new(),
            last_success: BTreeMap::new(),
            first_seen: BTreeMap::new(),
            ended: Vec::new(),
            schedules: Vec::new(),
        };
        feed.read(catalog, now)?;
        feed.ended.clear();
        Ok(feed)
    }

    /// Reads the catalog (one `runs` and one `schedules` query) for the watches' next
    /// check. On an error nothing has changed but that no run has ended: the runs it
    /// would have found are found by the next read.
    pub fn read(&mut self, catalog: &dyn Catalog, now: DateTime<Utc>) -> Result<()> {
        self.ended.clear();
        let runs = catalog.runs(None)?;
        let schedules = catalog.schedules()?;
        let present: HashSet<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        self.counted.retain(|id| present.contains(id.as_str()));
        for r in runs {
            // A running run is looked at again until it ends.
            if r.status == RunStatus::Running || self.counted.contains(&r.run_id) {
                continue;
            }
            if r.status == RunStatus::Succeeded {
                let t = r.ended_at.unwrap_or(r.started_at);
                let last = self.last_success.entry(r.pipeline.clone()).or_insert(t);
                *last = (*last).max(t);
            }
            self.counted.insert(r.run_id.clone());
            self.ended.push(r);
        }
        // A pipeline scheduled since the last read is first seen now; one no longer
        // scheduled is forgotten, so it counts afresh if it is scheduled again.
        self.first_seen
            .retain(|p, _| schedules.iter().any(|s| s.pipeline == *p));
        for s in &schedules {
            self.first_seen.entry(s.pipeline.clone()).or_insert(now);
        }
        self.schedules = schedules;
        Ok(())
    }

    /// Since when `pipeline` has gone without a successful run, and when its last one
    /// ended (`None`: it never succeeded, as far as the runs kept say).
    ///
    /// A pipeline that never succeeded counts from when the feed first saw it scheduled
    /// (`serve`'s start, or its creation while `serve` runs): it gets `stale_after` for
    /// its first success, as any pipeline gets after a success. Counting from `serve`'s
    /// start alone would call a pipeline created hours into `serve` stale before its first
    /// run. A restart of `serve` gives that grace again, as it forgets the alerts sent.
    fn stale_since(
        &self,
        pipeline: &str,
        now: DateTime<Utc>,
    ) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let last = self.last_success.get(pipeline).copied();
        let seen = self.first_seen.get(pipeline).copied().unwrap_or(now);
        (last.unwrap_or(seen), last)
    }
}

/// What one webhook has been told so far.
#[derive(Debug)]
pub struct AlertWatch {
    on: BTreeSet<AlertKind>,
    stale_after: chrono::Duration,
    suspended: BTreeSet<String>,
    stale: BTreeSet<String>,
}

impl AlertWatch {
    /// A watch from the feed's start: schedules suspended already are not alerted.
    pub fn new(feed: &AlertFeed, on: &[AlertKind], stale_after: std::time::Duration) -> Self {
        AlertWatch {
            on: on.iter().copied().collect(),
            stale_after: chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX),
            suspended: feed
                .schedules
                .iter()
                .filter(|s| s.suspended)
                .map(|s| s.pipeline.clone())
                .collect(),
            stale: BTreeSet::new(),
        }
    }

    /// The alerts due after the feed's latest read.
    pub fn check(&mut self, feed: &AlertFeed, project: &str, now: DateTime<Utc>) -> Vec<Alert> {
        let mut out = Vec::new();
        let alert = |kind: AlertKind, pipeline: &str, run: Option<&str>, message: String| Alert {
            alert: kind.as_str(),
            project: project.to_string(),
            pipeline: pipeline.to_string(),
            run_id: run.map(str::to_string),
            message,
            at: now,
        };
        if self.on.contains(&AlertKind::Failed) {
            // The feed has each run end once: each failed run is alerted once.
            for r in feed.ended.iter().filter(|r| {
                matches!(r.status, RunStatus::Failed | RunStatus::PartialFailure)
                    // Compactions are runs too, but not a pipeline's.
                    && !r.pipeline.contains(':')
            }) {
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
        if self.on.contains(&AlertKind::Suspended) {
            for s in &feed.schedules {
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
            for s in &feed.schedules {
                let (since, last_success) = feed.stale_since(&s.pipeline, now);
                if now - since < self.stale_after {
                    self.stale.remove(&s.pipeline);
                } else if self.stale.insert(s.pipeline.clone()) {
                    let last = last_success.map_or_else(
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{MemoryCatalog, NewRun, RunCommit, RunHolder};
    use crate::types::RunCounters;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn begin(c: &MemoryCatalog, run: &str, pipeline: &str, at: i64) {
        let new = NewRun {
            run_id: run.into(),
            pipeline: pipeline.into(),
            started_at: t(at),
            cursor_start: None,
            holder: RunHolder {
                pid: 1,
                host: "h".into(),
            },
        };
        c.begin_run(&new, &|_| true).unwrap();
    }

    fn fail(c: &MemoryCatalog, run: &str, at: i64) {
        c.fail_run(run, t(at), &RunCounters::default(), "boom")
            .unwrap();
    }

    fn succeed(c: &MemoryCatalog, run: &str, pipeline: &str, at: i64) {
        c.commit(&RunCommit {
            finish: Some(RunStatus::Succeeded),
            ..RunCommit::new(run, pipeline, pipeline, t(at))
        })
        .unwrap();
    }

    fn schedule(c: &MemoryCatalog, pipeline: &str, at: i64) {
        c.put_schedule(&ScheduleState {
            pipeline: pipeline.into(),
            schedule: "EVERY 1 HOUR".into(),
            next_fire_at: t(at + 3600),
            slot_at: t(at + 3600),
            attempt: 0,
            consecutive_failures: 0,
            suspended: false,
            suspended_reason: None,
            last_run_id: None,
            last_status: None,
            last_fired_at: None,
            updated_at: t(at),
        })
        .unwrap();
    }

    fn kinds(alerts: &[Alert]) -> Vec<(&str, &str)> {
        alerts
            .iter()
            .map(|a| (a.alert, a.pipeline.as_str()))
            .collect()
    }

    #[test]
    fn one_read_serves_every_watch_and_each_failed_run_is_alerted_once() {
        let c = MemoryCatalog::new();
        begin(&c, "old", "a", 0);
        fail(&c, "old", 1);
        begin(&c, "long", "b", 2);
        let mut feed = AlertFeed::new(&c, t(10)).unwrap();
        let on = [AlertKind::Failed];
        let mut w1 = AlertWatch::new(&feed, &on, std::time::Duration::from_secs(3600));
        let mut w2 = AlertWatch::new(&feed, &on, std::time::Duration::from_secs(3600));
        // A failure from before the feed is history; a run still running then is not.
        assert!(w1.check(&feed, "p", t(10)).is_empty());
        fail(&c, "long", 20);
        begin(&c, "new", "a", 30);
        fail(&c, "new", 31);
        feed.read(&c, t(40)).unwrap();
        for w in [&mut w1, &mut w2] {
            let got = w.check(&feed, "p", t(40));
            let mut runs: Vec<_> = got.iter().filter_map(|a| a.run_id.clone()).collect();
            runs.sort();
            assert_eq!(runs, ["long", "new"]);
        }
        // Read again: nothing new. A row that appears late (its started_at before a run
        // already seen) is still found.
        feed.read(&c, t(50)).unwrap();
        assert!(w1.check(&feed, "p", t(50)).is_empty());
        begin(&c, "late", "c", 25);
        fail(&c, "late", 55);
        feed.read(&c, t(60)).unwrap();
        let got = w1.check(&feed, "p", t(60));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].run_id.as_deref(), Some("late"));
        // Regression: a run started by a host whose clock is a day ahead hid the later
        // failures of every other host (the feed skipped runs by start time).
        begin(&c, "ahead", "d", 86_400);
        fail(&c, "ahead", 86_401);
        feed.read(&c, t(70)).unwrap();
        assert_eq!(w1.check(&feed, "p", t(70)).len(), 1);
        begin(&c, "here", "a", 80);
        fail(&c, "here", 81);
        feed.read(&c, t(90)).unwrap();
        let got = w1.check(&feed, "p", t(90));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].run_id.as_deref(), Some("here"));
    }

    #[test]
    fn a_pipeline_that_never_succeeded_is_stale_counted_from_when_it_was_first_scheduled() {
        let c = MemoryCatalog::new();
        schedule(&c, "done", 0);
        begin(&c, "r1", "done", 0);
        succeed(&c, "r1", "done", 5);
        let mut feed = AlertFeed::new(&c, t(10)).unwrap();
        let mut w = AlertWatch::new(
            &feed,
            &[AlertKind::Stale],
            std::time::Duration::from_secs(60),
        );
        // Scheduled long after the feed started: it gets the whole stale_after.
        schedule(&c, "fresh", 500);
        feed.read(&c, t(500)).unwrap();
        assert_eq!(kinds(&w.check(&feed, "p", t(500))), [("stale", "done")]);
        feed.read(&c, t(559)).unwrap();
        assert!(
            w.check(&feed, "p", t(559)).is_empty(),
            "each stale period once"
        );
        feed.read(&c, t(561)).unwrap();
        assert_eq!(kinds(&w.check(&feed, "p", t(561))), [("stale", "fresh")]);
    }
}
