//! When a scheduled pipeline fires: the `SCHEDULE ...` clauses of `CREATE PIPELINE` and the
//! slot arithmetic. The scheduler that acts on them is in `scheduler.rs`.
//!
//! Slots are pure functions of the schedule and the pipeline's name, so a restarted process
//! computes the same slots: `EVERY` slots are multiples of the interval since the Unix epoch
//! (`EVERY '15 minutes'` fires at :00, :15, :30, :45 UTC), `CRON` slots are the expression's
//! times in its time zone (UTC unless `TZ` says), and `JITTER` shifts every slot of a
//! pipeline by the same amount below the jitter, derived from the pipeline's name, so
//! pipelines sharing a schedule spread out without the times becoming unpredictable.

use std::fmt;
use std::hash::Hasher;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::error::{Error, Result};

/// A length of time as written in SQL (`'15 minutes'`), kept with its text for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub text: String,
    pub duration: Duration,
}

impl Interval {
    pub fn parse(what: &str, text: &str) -> Result<Self> {
        let duration = humantime::parse_duration(text.trim()).map_err(|e| {
            Error::InvalidInput(format!(
                "{what} '{text}' is not a length of time ({e}): write it like '30 seconds', '15 minutes', '1 hour' or '2 days'"
            ))
        })?;
        Ok(Interval {
            text: text.trim().to_string(),
            duration,
        })
    }
}

/// A manifest's length of time (`every = "15 minutes"`), read with [`Interval::parse`].
impl<'de> serde::Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Interval::parse("the value", &text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Interval {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Interval".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A length of time: '30 seconds', '15 minutes', '1 hour', '2 days'.",
        })
    }
}

/// How often a pipeline fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// `EVERY '15 minutes'`: slots at multiples of the interval since the Unix epoch.
    Every(Interval),
    /// `CRON '0 * * * *' [TZ 'Europe/Berlin']`: the expression's times in the zone.
    Cron { expr: String, tz: Option<String> },
}

/// What the scheduler does with slots that passed while no scheduler was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedPolicy {
    /// The missed slots are recorded in an event and the pipeline waits for its next slot
    /// (the default: the next run reads everything new anyway).
    #[default]
    Skip,
    /// The pipeline runs once at start-up, however many slots were missed, then keeps its
    /// schedule.
    RunOnce,
}

crate::types::keyword_enum!(
    MissedPolicy,
    "What the scheduler does with slots missed while it was not running: skip (default) or run_once."
);

impl MissedPolicy {
    /// The manifest's spellings (`on_missed = "run_once"`); SQL writes `ON MISSED RUN ONCE`.
    pub const SPELLINGS: &[&str] = &["skip", "run_once"];

    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace(' ', "_").as_str() {
            "skip" => Ok(MissedPolicy::Skip),
            "run_once" => Ok(MissedPolicy::RunOnce),
            _ => Err(Error::InvalidInput(format!(
                "schedule.on_missed is skip or run_once, got '{s}'"
            ))),
        }
    }
}

/// A pipeline's schedule: `SCHEDULE ... [JITTER '..'] [ON MISSED SKIP|RUN ONCE]
/// [RETRY n [BACKOFF '..']] [SUSPEND AFTER n FAILURES]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub cadence: Cadence,
    pub jitter: Option<Interval>,
    pub on_missed: MissedPolicy,
    /// A failed run is tried again this many times before its slot counts as failed.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one (default 30 seconds).
    pub backoff: Option<Interval>,
    /// After this many failed slots in a row the pipeline is suspended.
    pub suspend_after: Option<u32>,
}

/// The clauses of a schedule as given (by `CREATE PIPELINE`, or read as a manifest's
/// `schedule = { every = "15 minutes" }` / `{ cron = "0 * * * *", tz = "Europe/Berlin" }`),
/// in any order; [`ScheduleBuilder::build`] owns the defaults and the checks that span
/// clauses, so both grammars agree.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Schedule")]
pub struct ScheduleBuilder {
    /// A schedule was declared (a manifest's `schedule = {}`): it then needs a cadence.
    #[serde(skip)]
    #[schemars(skip)]
    pub declared: bool,
    pub every: Option<Interval>,
    /// A cron expression (five fields), in `tz` or UTC.
    pub cron: Option<String>,
    /// The cron expression's time zone, e.g. Europe/Berlin.
    pub tz: Option<String>,
    pub jitter: Option<Interval>,
    pub on_missed: Option<MissedPolicy>,
    /// A failed run is tried again this many times.
    pub retries: Option<u32>,
    pub backoff: Option<Interval>,
    /// After this many failed slots in a row the pipeline is suspended.
    #[serde(rename = "suspend_after_failures")]
    pub suspend_after: Option<u32>,
}

impl ScheduleBuilder {
    /// The schedule, or `None` when none was declared.
    pub fn build(self) -> Result<Option<ScheduleSpec>> {
        let bad = |m: &str| Err(Error::InvalidInput(m.to_string()));
        if self.suspend_after == Some(0) {
            return bad(
                "SUSPEND AFTER (suspend_after_failures) needs at least 1 failure: SUSPEND AFTER 3 FAILURES",
            );
        }
        if self.backoff.is_some() && self.retries.unwrap_or(0) == 0 {
            return bad(
                "BACKOFF goes with RETRY n (retries, at least 1): RETRY 3 BACKOFF '30 seconds'",
            );
        }
        if self.tz.is_some() && self.cron.is_none() {
            return bad("TZ (schedule.tz) goes with CRON, not EVERY");
        }
        let cadence = match (self.every, self.cron) {
            (Some(every), None) => Cadence::Every(every),
            (None, Some(expr)) => Cadence::Cron { expr, tz: self.tz },
            (Some(_), Some(_)) => {
                return bad(
                    "a schedule has either EVERY '15 minutes' or CRON '0 * * * *' (every or cron in a manifest), not both",
                );
            }
            (None, None) => {
                let extra = [
                    (self.jitter.is_some(), "JITTER"),
                    (self.on_missed.is_some(), "ON MISSED"),
                    (self.retries.is_some(), "RETRY"),
                    (self.backoff.is_some(), "BACKOFF"),
                    (self.suspend_after.is_some(), "SUSPEND AFTER"),
                ];
                if let Some((_, clause)) = extra.iter().find(|(given, _)| *given) {
                    return Err(Error::InvalidInput(format!(
                        "{clause} goes with a schedule: add SCHEDULE EVERY '15 minutes' or SCHEDULE CRON '0 * * * *' (every or cron in a manifest)"
                    )));
                }
                if self.declared {
                    return bad(
                        "a schedule has either every = \"15 minutes\" or cron = \"0 * * * *\"",
                    );
                }
                return Ok(None);
            }
        };
        // The expression, zone and lengths are checked by `ScheduleSpec::check`, which
        // `PipelineSpec::check` calls for schedules from anywhere (also the catalog).
        Ok(Some(ScheduleSpec {
            cadence,
            jitter: self.jitter,
            on_missed: self.on_missed.unwrap_or_default(),
            retries: self.retries.unwrap_or(0),
            backoff: self.backoff,
            suspend_after: self.suspend_after,
        }))
    }
}

/// Wait before the first retry when `BACKOFF` is not given.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);

impl ScheduleSpec {
    /// A schedule with the cadence and every other clause at its default.
    pub fn new(cadence: Cadence) -> Self {
        ScheduleSpec {
            cadence,
            jitter: None,
            on_missed: MissedPolicy::Skip,
            retries: 0,
            backoff: None,
            suspend_after: None,
        }
    }

    /// Checks the expression, the time zone and the lengths of time.
    pub fn check(&self) -> Result<()> {
        match &self.cadence {
            Cadence::Every(i) => {
                if i.duration < Duration::from_secs(1) {
                    return Err(Error::InvalidInput(format!(
                        "SCHEDULE EVERY '{}' is shorter than one second: the shortest interval is '1 second'",
                        i.text
                    )));
                }
            }
            Cadence::Cron { expr, tz } => {
                cron(expr)?;
                if let Some(tz) = tz {
                    zone(tz)?;
                }
            }
        }
        Ok(())
    }

    /// The first slot strictly after `after` for pipeline `pipeline`.
    pub fn next_slot(&self, pipeline: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let shift = chrono::Duration::from_std(self.shift(pipeline)).unwrap_or_default();
        let base = after - shift;
        let next = match &self.cadence {
            Cadence::Every(i) => {
                let step = i.duration.as_millis().max(1) as i64;
                let t = base.timestamp_millis();
                let k = t.div_euclid(step) + 1;
                Utc.timestamp_millis_opt(k * step).single().ok_or_else(|| {
                    Error::InvalidInput(format!("SCHEDULE EVERY '{}' overflows", i.text))
                })?
            }
            Cadence::Cron { expr, tz } => {
                let cron = cron(expr)?;
                let err = |e: croner::errors::CronError| {
                    Error::InvalidInput(format!("CRON '{expr}' has no time after {base}: {e}"))
                };
                match tz {
                    Some(tz) => cron
                        .find_next_occurrence(&base.with_timezone(&zone(tz)?), false)
                        .map_err(err)?
                        .with_timezone(&Utc),
                    None => cron.find_next_occurrence(&base, false).map_err(err)?,
                }
            }
        };
        Ok(next + shift)
    }

    /// The slots in `(from, to]`, at most `limit` of them, and whether there were more.
    pub fn slots_between(
        &self,
        pipeline: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<(Vec<DateTime<Utc>>, bool)> {
        let mut out = Vec::new();
        let mut t = from;
        loop {
            let next = self.next_slot(pipeline, t)?;
            if next > to {
                return Ok((out, false));
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(next);
            t = next;
        }
    }

    /// The pipeline's jitter shift: a fixed fraction of the jitter chosen by its name.
    fn shift(&self, pipeline: &str) -> Duration {
        let Some(j) = &self.jitter else {
            return Duration::ZERO;
        };
        let ms = j.duration.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        let mut h = twox_hash::XxHash64::with_seed(0);
        h.write(pipeline.as_bytes());
        Duration::from_millis(h.finish() % ms)
    }

    /// The wait before retry number `attempt` (1 for the first).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .backoff
            .as_ref()
            .map(|b| b.duration)
            .unwrap_or(DEFAULT_BACKOFF);
        base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
    }
}

fn cron(expr: &str) -> Result<croner::Cron> {
    croner::Cron::from_str(expr).map_err(|e| {
        Error::InvalidInput(format!(
            "CRON '{expr}' is not a cron expression ({e}): write five fields, minute hour day-of-month month day-of-week, for example '0 * * * *' (hourly) or '30 6 * * 1-5' (06:30 on weekdays)"
        ))
    })
}

fn zone(tz: &str) -> Result<chrono_tz::Tz> {
    tz.parse::<chrono_tz::Tz>().map_err(|_| {
        Error::InvalidInput(format!(
            "unknown time zone '{tz}': use an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York'"
        ))
    })
}

impl fmt::Display for ScheduleSpec {
    /// The clauses as written in `CREATE PIPELINE` (`SCHEDULE EVERY '15 minutes' ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        match &self.cadence {
            Cadence::Every(i) => write!(f, "SCHEDULE EVERY {}", quote(&i.text))?,
            Cadence::Cron { expr, tz } => {
                write!(f, "SCHEDULE CRON {}", quote(expr))?;
                if let Some(tz) = tz {
                    write!(f, " TZ {}", quote(tz))?;
                }
            }
        }
        if let Some(j) = &self.jitter {
            write!(f, " JITTER {}", quote(&j.text))?;
        }
        if self.on_missed == MissedPolicy::RunOnce {
            write!(f, " ON MISSED RUN ONCE")?;
        }
        if self.retries > 0 {
            write!(f, " RETRY {}", self.retries)?;
            if let Some(b) = &self.backoff {
                write!(f, " BACKOFF {}", quote(&b.text))?;
            }
        }
        if let Some(n) = self.suspend_after {
            write!(f, " SUSPEND AFTER {n} FAILURES")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn every(text: &str) -> ScheduleSpec {
        ScheduleSpec::new(Cadence::Every(Interval::parse("EVERY", text).unwrap()))
    }

    #[test]
    fn every_slots_are_multiples_of_the_interval() {
        let s = every("15 minutes");
        assert_eq!(
            s.next_slot("p", at("2026-11-28T10:07:00Z")).unwrap(),
            at("2026-11-28T10:15:00Z")
        );
        // Strictly after: a slot time itself gives the following slot.
        assert_eq!(
            s.next_slot("p", at("2026-11-28T10:15:00Z")).unwrap(),
            at("2026-11-28T10:30:00Z")
        );
        let (slots, more) = s
            .slots_between(
                "p",
                at("2026-11-28T00:00:00Z"),
                at("2026-11-29T00:00:00Z"),
                1000,
            )
            .unwrap();
        assert_eq!((slots.len(), more), (96, false));
    }

    #[test]
    fn cron_slots_follow_the_time_zone() {
        let mut s = ScheduleSpec::new(Cadence::Cron {
            expr: "0 9 * * *".into(),
            tz: Some("Europe/Berlin".into()),
        });
        s.check().unwrap();
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        assert_eq!(
            s.next_slot("p", at("2026-11-28T00:00:00Z")).unwrap(),
            at("2026-11-28T08:00:00Z")
        );
        assert_eq!(
            s.next_slot("p", at("2026-07-01T00:00:00Z")).unwrap(),
            at("2026-07-01T07:00:00Z")
        );
        s.cadence = Cadence::Cron {
            expr: "0 * * * *".into(),
            tz: None,
        };
        let (slots, _) = s
            .slots_between(
                "p",
                at("2026-11-28T00:00:00Z"),
                at("2026-11-29T00:00:00Z"),
                1000,
            )
            .unwrap();
        assert_eq!(slots.len(), 24);
        assert!(
            slots
                .iter()
                .all(|t| t.format("%M:%S").to_string() == "00:00")
        );
    }

    #[test]
    fn jitter_shifts_every_slot_of_a_pipeline_by_the_same_amount() {
        let mut s = every("1 hour");
        s.jitter = Some(Interval::parse("JITTER", "10 minutes").unwrap());
        let from = at("2026-11-28T00:00:00Z");
        let (a, _) = s
            .slots_between("a", from, from + chrono::Duration::days(1), 100)
            .unwrap();
        let (b, _) = s
            .slots_between("b", from, from + chrono::Duration::days(1), 100)
            .unwrap();
        assert_eq!((a.len(), b.len()), (24, 24));
        let offset = |t: &DateTime<Utc>| t.timestamp() % 3600;
        assert!(
            a.iter()
                .all(|t| offset(t) == offset(&a[0]) && offset(t) < 600)
        );
        assert_ne!(offset(&a[0]), offset(&b[0]), "names spread the pipelines");
    }

    #[test]
    fn bad_clauses_say_how_to_write_them() {
        let e = Interval::parse("EVERY", "often").unwrap_err().to_string();
        assert!(e.contains("'15 minutes'"), "{e}");
        let c = ScheduleSpec::new(Cadence::Cron {
            expr: "every hour".into(),
            tz: None,
        });
        assert!(c.check().unwrap_err().to_string().contains("five fields"));
        let z = ScheduleSpec::new(Cadence::Cron {
            expr: "0 * * * *".into(),
            tz: Some("Mars/Olympus".into()),
        });
        assert!(z.check().unwrap_err().to_string().contains("IANA"));
        assert!(every("500ms").check().is_err());
    }

    #[test]
    fn backoff_doubles() {
        let mut s = every("1 hour");
        s.retries = 3;
        assert_eq!(s.backoff(1), Duration::from_secs(30));
        s.backoff = Some(Interval::parse("BACKOFF", "10 seconds").unwrap());
        assert_eq!(
            (s.backoff(1), s.backoff(2), s.backoff(3)),
            (
                Duration::from_secs(10),
                Duration::from_secs(20),
                Duration::from_secs(40)
            )
        );
    }
}
