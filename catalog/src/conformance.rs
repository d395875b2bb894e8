//! The `Catalog` conformance suite: what every adapter must do, written once over the port.
//!
//! An adapter joins with one line, in any crate's tests:
//!
//! ```text
//! hakiri_catalog::catalog_conformance!(postgres, PostgresCatalog::connect(...).unwrap());
//! ```
//!
//! which expands to one `#[test]` per check below, each on a fresh catalog.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::{Catalog, FileEntry, NewRun, RunCommit, RunHolder, STATE_TABLES, SourceSchema};
use hakiri_core::error::Error;
use hakiri_core::schedule::{Cadence, Interval, MissedPolicy, ScheduleSpec};
use hakiri_core::types::EventKind;
use hakiri_core::types::{
    CursorKind, CursorSpec, NullRule, Origin, PipelineSpec, RunCounters, RunStatus, SchemaPolicy,
    SourceSpec, WriteMode,
};

/// Generates the suite's tests for an adapter: `catalog_conformance!(name, constructor)`.
#[macro_export]
macro_rules! catalog_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::catalog_conformance!(@tests $make;
                sources_round_trip, pipelines_round_trip, run_lock_names_a_live_holder,
                dead_holder_is_taken_over, commit_applies_everything_at_once,
                commit_after_recovery_is_refused, checkpoints_advance_the_cursor,
                replace_retires_files_until_purged, schema_versions_and_events,
                failed_run_keeps_the_cursor, boundary_is_committed_with_the_cursor,
                cursor_moves_wait_for_live_runs, compaction_retires_only_the_named_files,
                prune_keeps_the_latest_rows, drop_table_forgets_the_table_and_its_cursors,
                schedule_states_round_trip, source_schemas_last_until_the_source_changes,
                state_tables_have_their_columns, replace_state_restores_a_snapshot);
        }
    };
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                let catalog = $make;
                $crate::conformance::$check(&catalog);
            }
        )*
    };
}

/// One check of the suite.
pub type Check = fn(&dyn Catalog);

/// Every check, by name: for an adapter whose catalogs are costly to make (a server), so
/// one test can run them all on fresh schemas of one server.
pub const CHECKS: &[(&str, Check)] = &[
    ("sources_round_trip", sources_round_trip),
    ("pipelines_round_trip", pipelines_round_trip),
    ("run_lock_names_a_live_holder", run_lock_names_a_live_holder),
    ("dead_holder_is_taken_over", dead_holder_is_taken_over),
    (
        "commit_applies_everything_at_once",
        commit_applies_everything_at_once,
    ),
    (
        "commit_after_recovery_is_refused",
        commit_after_recovery_is_refused,
    ),
    (
        "checkpoints_advance_the_cursor",
        checkpoints_advance_the_cursor,
    ),
    (
        "replace_retires_files_until_purged",
        replace_retires_files_until_purged,
    ),
    ("schema_versions_and_events", schema_versions_and_events),
    ("failed_run_keeps_the_cursor", failed_run_keeps_the_cursor),
    (
        "boundary_is_committed_with_the_cursor",
        boundary_is_committed_with_the_cursor,
    ),
    (
        "cursor_moves_wait_for_live_runs",
        cursor_moves_wait_for_live_runs,
    ),
    (
        "compaction_retires_only_the_named_files",
        compaction_retires_only_the_named_files,
    ),
    ("prune_keeps_the_latest_rows", prune_keeps_the_latest_rows),
    (
        "drop_table_forgets_the_table_and_its_cursors",
        drop_table_forgets_the_table_and_its_cursors,
    ),
    ("schedule_states_round_trip", schedule_states_round_trip),
    (
        "source_schemas_last_until_the_source_changes",
        source_schemas_last_until_the_source_changes,
    ),
    (
        "state_tables_have_their_columns",
        state_tables_have_their_columns,
    ),
    (
        "replace_state_restores_a_snapshot",
        replace_state_restores_a_snapshot,
    ),
];

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 0).unwrap()
}

fn holder(pid: u32) -> RunHolder {
    RunHolder {
        pid,
        host: "conformance".into(),
    }
}

fn new_run(id: &str, pipeline: &str, at: i64, pid: u32) -> NewRun {
    NewRun {
        run_id: id.into(),
        pipeline: pipeline.into(),
        started_at: t(at),
        cursor_start: None,
        holder: holder(pid),
    }
}

fn alive(_: &super::RunRecord) -> bool {
    true
}
fn dead(_: &super::RunRecord) -> bool {
    false
}

fn file(table: &str, run: &str, rows: u64) -> FileEntry {
    FileEntry {
        path: format!("{table}/{run}.parquet"),
        table: table.into(),
        run_id: run.into(),
        rows,
        bytes: rows * 10,
    }
}

fn commit(run: &str, table: &str, files: Vec<FileEntry>, cursor: Option<&str>) -> RunCommit {
    RunCommit {
        files,
        cursor: cursor.map(|c| ("monotonic".into(), c.into())),
        schema: Some("id Int64".into()),
        counters: RunCounters {
            rows_read: 3,
            rows_written: 3,
            pages: 1,
            bytes: 30,
            ..RunCounters::default()
        },
        finish: Some(RunStatus::Succeeded),
        ..RunCommit::new(run, "p", table, t(10))
    }
}

fn status(c: &dyn Catalog, run: &str) -> &'static str {
    c.runs(None)
        .unwrap()
        .into_iter()
        .find(|r| r.run_id == run)
        .map_or("missing", |r| r.status.as_str())
}

pub fn sources_round_trip(c: &dyn Catalog) {
    let spec = SourceSpec {
        name: "api".into(),
        connector: "http".into(),
        options: BTreeMap::from([("base_url".into(), "http://x".into())]),
        origin: Origin::Sql,
    };
    c.upsert_source(&spec, t(0)).unwrap();
    assert_eq!(c.list_sources().unwrap(), vec![spec.clone()]);
    let mut changed = spec.clone();
    changed
        .options
        .insert("header.A".into(), "env:TOKEN".into());
    c.upsert_source(&changed, t(1)).unwrap();
    assert_eq!(c.list_sources().unwrap(), vec![changed]);
    assert!(c.drop_source("api").unwrap());
    assert!(!c.drop_source("api").unwrap());
    assert!(c.list_sources().unwrap().is_empty());
}

pub fn pipelines_round_trip(c: &dyn Catalog) {
    let spec = PipelineSpec {
        name: "p".into(),
        sql: "INSERT INTO context.t SELECT * FROM s.t WHERE id >= $cursor".into(),
        target: "t".into(),
        cursor: Some(CursorSpec {
            kind: CursorKind::Monotonic,
            column: Some("id".into()),
            initial: Some("0".into()),
            lag: Some("5".into()),
            on_null: NullRule::Skip,
        }),
        mode: WriteMode::Merge,
        key: vec!["id".into(), "region".into()],
        on_schema_change: SchemaPolicy::Discard,
        checkpoint_pages: None,
        schedule: None,
        origin: Origin::Manifest,
    };
    let token = PipelineSpec {
        name: "q".into(),
        sql: "INSERT INTO context.u SELECT * FROM s.u".into(),
        target: "u".into(),
        cursor: Some(CursorSpec {
            kind: CursorKind::OpaqueToken,
            ..CursorSpec::default()
        }),
        mode: WriteMode::Append,
        key: Vec::new(),
        on_schema_change: SchemaPolicy::Freeze,
        checkpoint_pages: Some(3),
        schedule: Some(ScheduleSpec {
            jitter: Some(Interval::parse("JITTER", "1 minute").unwrap()),
            on_missed: MissedPolicy::RunOnce,
            retries: 2,
            backoff: Some(Interval::parse("BACKOFF", "10 seconds").unwrap()),
            suspend_after: Some(3),
            ..ScheduleSpec::new(Cadence::Cron {
                expr: "0 9 * * 1-5".into(),
                tz: Some("Europe/Berlin".into()),
            })
        }),
        origin: Origin::Sql,
    };
    c.upsert_pipeline(&spec, t(0)).unwrap();
    c.upsert_pipeline(&token, t(0)).unwrap();
    assert_eq!(c.list_pipelines().unwrap(), vec![spec, token]);
    assert!(c.drop_pipeline("q").unwrap());
    assert_eq!(c.list_pipelines().unwrap().len(), 1);
}

pub fn run_lock_names_a_live_holder(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 4242), &alive).unwrap();
    let err = c.begin_run(&new_run("r2", "p", 1, 7), &alive).unwrap_err();
    assert!(
        matches!(&err, Error::RunLockHeld { pipeline, run_id, .. } if pipeline == "p" && run_id == "r1"),
        "{err:?}"
    );
    assert_eq!(
        err.category(),
        hakiri_core::error::ErrorCategory::AlreadyExists
    );
    let msg = err.to_string();
    assert!(
        msg.contains("r1") && msg.contains("4242") && msg.contains("conformance"),
        "{msg}"
    );
    assert_eq!(status(c, "r1"), "running");
    assert!(c.runs(None).unwrap().iter().all(|r| r.run_id != "r2"));
    // Another pipeline is not blocked.
    c.begin_run(&new_run("r3", "other", 1, 7), &alive).unwrap();
}

pub fn dead_holder_is_taken_over(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 4242), &alive).unwrap();
    c.begin_run(&new_run("r2", "p", 1, 7), &dead).unwrap();
    assert_eq!(status(c, "r1"), "partial_failure");
    assert_eq!(status(c, "r2"), "running");
    let runs = c.runs(Some("p")).unwrap();
    assert_eq!(runs[1].holder, holder(7));
    c.heartbeat("r2", t(5)).unwrap();
    assert_eq!(c.runs(Some("p")).unwrap()[1].heartbeat_at, t(5));
    // Recovery only touches runs whose holder is dead.
    assert!(c.recover_runs(&alive, t(6)).unwrap().is_empty());
    assert_eq!(c.recover_runs(&dead, t(6)).unwrap(), vec!["r2".to_string()]);
    assert_eq!(status(c, "r2"), "partial_failure");
}

pub fn commit_applies_everything_at_once(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    c.commit(&commit("r1", "t", vec![file("t", "r1", 3)], Some("7")))
        .unwrap();
    assert_eq!(c.table_files("t").unwrap(), vec![file("t", "r1", 3)]);
    assert_eq!(c.cursor("p").unwrap().as_deref(), Some("7"));
    let tables = c.tables().unwrap();
    assert_eq!(
        (tables[0].name.as_str(), tables[0].rows, tables[0].files),
        ("t", 3, 1)
    );
    let run = &c.runs(Some("p")).unwrap()[0];
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.counters.rows_written, 3);
    assert_eq!(run.cursor_end.as_deref(), Some("7"));
    assert_eq!(run.ended_at, Some(t(10)));
}

pub fn commit_after_recovery_is_refused(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    c.recover_runs(&dead, t(1)).unwrap();
    assert!(
        c.commit(&commit("r1", "t", vec![file("t", "r1", 3)], Some("7")))
            .is_err()
    );
    assert!(c.table_files("t").unwrap().is_empty());
    assert_eq!(c.cursor("p").unwrap(), None);
    assert!(c.tables().unwrap().is_empty());
    assert_eq!(status(c, "r1"), "partial_failure");
}

pub fn checkpoints_advance_the_cursor(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    for (i, token) in ["a", "b"].iter().enumerate() {
        let mut ck = commit(
            "r1",
            "t",
            vec![file("t", &format!("r1-{i}"), 2)],
            Some(token),
        );
        ck.finish = None;
        c.commit(&ck).unwrap();
        assert_eq!(status(c, "r1"), "running");
        assert_eq!(c.cursor("p").unwrap().as_deref(), Some(*token));
    }
    let mut last = commit("r1", "t", Vec::new(), None);
    last.at = t(20);
    c.commit(&last).unwrap();
    assert_eq!(status(c, "r1"), "succeeded");
    assert_eq!(c.table_files("t").unwrap().len(), 2);
    let history: Vec<String> = c
        .cursor_history("p")
        .unwrap()
        .into_iter()
        .map(|e| e.value)
        .collect();
    assert_eq!(history, vec!["a", "b"]);
    assert_eq!(
        c.runs(Some("p")).unwrap()[0].cursor_end.as_deref(),
        Some("b")
    );
}

pub fn replace_retires_files_until_purged(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    c.commit(&commit("r1", "t", vec![file("t", "r1", 3)], None))
        .unwrap();
    c.begin_run(&new_run("r2", "p", 1, 1), &alive).unwrap();
    let mut rep = commit("r2", "t", vec![file("t", "r2", 5)], None);
    rep.replace = true;
    rep.at = t(20);
    c.commit(&rep).unwrap();
    assert_eq!(c.table_files("t").unwrap(), vec![file("t", "r2", 5)]);
    assert_eq!(c.tables().unwrap()[0].rows, 5);
    let mut all = c.all_files().unwrap();
    all.sort();
    assert_eq!(all, vec!["t/r1.parquet", "t/r2.parquet"]);
    assert!(c.purge_retired(t(20)).unwrap().is_empty());
    assert_eq!(c.purge_retired(t(21)).unwrap(), vec!["t/r1.parquet"]);
    assert_eq!(c.all_files().unwrap(), vec!["t/r2.parquet"]);
}

pub fn schema_versions_and_events(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    let first = c
        .commit(&commit("r1", "t", vec![file("t", "r1", 3)], None))
        .unwrap();
    assert_eq!(first.new_schema_version, Some(1));
    c.begin_run(&new_run("r2", "p", 1, 1), &alive).unwrap();
    let same = c
        .commit(&commit("r2", "t", vec![file("t", "r2", 3)], None))
        .unwrap();
    assert_eq!(same.new_schema_version, None);
    c.begin_run(&new_run("r3", "p", 2, 1), &alive).unwrap();
    let mut wider = commit("r3", "t", vec![file("t", "r3", 3)], None);
    wider.schema = Some("id Int64, name Utf8".into());
    wider.events = vec![(EventKind::ColumnAdded, "column name Utf8 added".into())];
    assert_eq!(c.commit(&wider).unwrap().new_schema_version, Some(2));
    let events = c.state_table("events").unwrap();
    let kinds: Vec<String> = events
        .rows
        .iter()
        .map(|r| match &r[2] {
            super::state_tables::RawValue::Text(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, vec!["table_created", "column_added"]);
    assert_eq!(c.state_table("schema_versions").unwrap().rows.len(), 2);
}

pub fn failed_run_keeps_the_cursor(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    c.commit(&commit("r1", "t", vec![file("t", "r1", 3)], Some("7")))
        .unwrap();
    c.begin_run(&new_run("r2", "p", 1, 1), &alive).unwrap();
    c.fail_run("r2", t(30), &RunCounters::default(), "boom")
        .unwrap();
    assert_eq!(c.cursor("p").unwrap().as_deref(), Some("7"));
    let run = &c.runs(Some("p")).unwrap()[1];
    assert_eq!(
        (run.status.as_str(), run.error.as_deref()),
        ("failed", Some("boom"))
    );
    // The lock is free again.
    c.begin_run(&new_run("r3", "p", 2, 1), &alive).unwrap();
}

pub fn schedule_states_round_trip(c: &dyn Catalog) {
    let spec = PipelineSpec {
        name: "p".into(),
        sql: "INSERT INTO context.t SELECT * FROM s.t".into(),
        target: "t".into(),
        cursor: None,
        mode: WriteMode::Append,
        key: Vec::new(),
        on_schema_change: SchemaPolicy::Evolve,
        checkpoint_pages: None,
        schedule: Some(ScheduleSpec::new(Cadence::Every(
            Interval::parse("EVERY", "15 minutes").unwrap(),
        ))),
        origin: Origin::Sql,
    };
    c.upsert_pipeline(&spec, t(0)).unwrap();
    let mut s = super::ScheduleState {
        pipeline: "p".into(),
        schedule: "SCHEDULE EVERY '15 minutes'".into(),
        next_fire_at: t(900),
        slot_at: t(900),
        attempt: 0,
        consecutive_failures: 0,
        suspended: false,
        suspended_reason: None,
        last_run_id: None,
        last_status: None,
        last_fired_at: None,
        updated_at: t(0),
    };
    c.put_schedule(&s).unwrap();
    assert_eq!(c.schedules().unwrap(), vec![s.clone()]);
    s.attempt = 1;
    s.consecutive_failures = 2;
    s.suspended = true;
    s.suspended_reason = Some("3 failures".into());
    s.last_run_id = Some("r1".into());
    s.last_status = Some(RunStatus::Failed);
    s.last_fired_at = Some(t(900));
    c.put_schedule(&s).unwrap();
    assert_eq!(c.schedules().unwrap(), vec![s.clone()]);
    let table = c.state_table("schedules").unwrap();
    assert_eq!(table.rows.len(), 1);
    // Dropping the pipeline drops its schedule state.
    assert!(c.drop_pipeline("p").unwrap());
    assert!(c.schedules().unwrap().is_empty());
    // Replacing the pipeline without a schedule drops its schedule state too.
    c.upsert_pipeline(&spec, t(1)).unwrap();
    c.put_schedule(&s).unwrap();
    let unscheduled = PipelineSpec {
        schedule: None,
        ..spec
    };
    c.upsert_pipeline(&unscheduled, t(2)).unwrap();
    assert!(c.schedules().unwrap().is_empty());
}

pub fn boundary_is_committed_with_the_cursor(c: &dyn Catalog) {
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    let mut ck = commit("r1", "t", vec![file("t", "r1", 3)], Some("tok"));
    ck.boundary = Some("{\"rows\":0,\"xxh64\":[]}".into());
    ck.finish = None;
    c.commit(&ck).unwrap();
    assert_eq!(
        c.cursor_boundary("p").unwrap().as_deref(),
        Some("{\"rows\":0,\"xxh64\":[]}")
    );
    // A later cursor without boundary rows clears them.
    c.commit(&commit("r1", "t", Vec::new(), Some("tok2")))
        .unwrap();
    assert_eq!(c.cursor_boundary("p").unwrap(), None);
    assert_eq!(c.cursor("p").unwrap().as_deref(), Some("tok2"));
    let history = c.state_table("cursor_history").unwrap();
    assert_eq!(history.rows.len(), 2);
}

pub fn cursor_moves_wait_for_live_runs(c: &dyn Catalog) {
    let to = |v: Option<&str>| super::CursorMove {
        pipeline: "p".into(),
        kind: "monotonic".into(),
        to: v.map(str::to_string),
        event: (EventKind::CursorReset, format!("to {v:?}")),
        at: t(30),
    };
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    let mut ck = commit("r1", "t", vec![file("t", "r1", 3)], Some("7"));
    ck.boundary = Some("{\"rows\":0,\"xxh64\":[]}".into());
    ck.finish = None;
    c.commit(&ck).unwrap();
    // A live run holds the cursor: the move is refused and changes nothing.
    assert!(matches!(
        c.move_cursor(&to(Some("3")), &alive),
        Err(Error::RunLockHeld { .. })
    ));
    assert_eq!(c.cursor("p").unwrap().as_deref(), Some("7"));
    // Its holder dead, the run is marked and the move applies, boundary cleared.
    c.move_cursor(&to(Some("3")), &dead).unwrap();
    assert_eq!(status(c, "r1"), "partial_failure");
    assert_eq!(c.cursor("p").unwrap().as_deref(), Some("3"));
    assert_eq!(c.cursor_boundary("p").unwrap(), None);
    c.move_cursor(&to(None), &alive).unwrap();
    assert_eq!(c.cursor("p").unwrap(), None);
    let events = c.state_table("events").unwrap();
    let resets = events
        .rows
        .iter()
        .filter(|r| {
            r.contains(&super::state_tables::RawValue::Text(
                EventKind::CursorReset.as_str().into(),
            ))
        })
        .count();
    assert_eq!(resets, 2);
}

pub fn state_tables_have_their_columns(c: &dyn Catalog) {
    // Some rows in most tables, so the rows' widths and types are checked too.
    let spec = SourceSpec {
        name: "s".into(),
        connector: "http".into(),
        options: BTreeMap::new(),
        origin: Origin::Manifest,
    };
    c.upsert_source(&spec, t(0)).unwrap();
    c.put_source_schema(&SourceSchema {
        source: "s".into(),
        table: "t".into(),
        columns: "[]".into(),
        discovered_at: t(0),
    })
    .unwrap();
    c.begin_run(&new_run("r1", "p", 1, 1), &alive).unwrap();
    c.commit(&commit("r1", "t", vec![file("t", "r1", 3)], Some("3")))
        .unwrap();
    c.add_event(t(2), EventKind::RunTrace, "p", "trace", Some("r1"))
        .unwrap();
    for decl in STATE_TABLES {
        let table = c.state_table(decl.name).unwrap();
        assert_eq!(
            table.columns,
            decl.columns(),
            "columns of hakiri.{}",
            decl.name
        );
        for row in &table.rows {
            assert_eq!(
                row.len(),
                decl.columns.len(),
                "a row of hakiri.{}",
                decl.name
            );
        }
        let batch = table.to_record_batch().unwrap();
        assert_eq!(batch.num_columns(), decl.columns.len());
    }
    for name in [
        "sources",
        "runs",
        "cursors",
        "files",
        "events",
        "source_schemas",
    ] {
        assert!(
            !c.state_table(name).unwrap().rows.is_empty(),
            "hakiri.{name} has rows"
        );
    }
    assert!(matches!(
        c.state_table("nope"),
        Err(Error::Unknown {
            kind: hakiri_core::error::Thing::StateTable,
            ..
        })
    ));
}

/// A discovered schema is kept per table, replaced by a newer one, and forgotten when the
/// source's options change or the source is dropped; an unchanged upsert keeps it.
pub fn source_schemas_last_until_the_source_changes(c: &dyn Catalog) {
    let spec = |url: &str| SourceSpec {
        name: "api".into(),
        connector: "http".into(),
        options: [("base_url".to_string(), url.to_string())].into(),
        origin: Origin::Manifest,
    };
    let schema = |table: &str, columns: &str, at: i64| SourceSchema {
        source: "api".into(),
        table: table.into(),
        columns: columns.into(),
        discovered_at: t(at),
    };
    c.upsert_source(&spec("http://a"), t(0)).unwrap();
    c.put_source_schema(&schema("items", "[1]", 1)).unwrap();
    c.put_source_schema(&schema("users", "[2]", 1)).unwrap();
    c.put_source_schema(&schema("items", "[3]", 2)).unwrap();
    assert_eq!(
        c.source_schemas("api").unwrap(),
        vec![schema("items", "[3]", 2), schema("users", "[2]", 1)]
    );
    assert!(c.source_schemas("other").unwrap().is_empty());
    assert_eq!(c.state_table("source_schemas").unwrap().rows.len(), 2);
    c.upsert_source(&spec("http://a"), t(3)).unwrap();
    assert_eq!(
        c.source_schemas("api").unwrap().len(),
        2,
        "unchanged source"
    );
    c.upsert_source(&spec("http://b"), t(4)).unwrap();
    assert!(
        c.source_schemas("api").unwrap().is_empty(),
        "changed options"
    );
    c.put_source_schema(&schema("items", "[4]", 5)).unwrap();
    c.drop_source("api").unwrap();
    assert!(
        c.source_schemas("api").unwrap().is_empty(),
        "dropped source"
    );
}

fn simple_pipeline(name: &str, target: &str) -> PipelineSpec {
    PipelineSpec {
        name: name.into(),
        sql: format!("INSERT INTO context.{target} SELECT * FROM s.t WHERE id > $cursor"),
        target: target.into(),
        cursor: Some(CursorSpec {
            kind: CursorKind::Monotonic,
            column: Some("id".into()),
            initial: Some("0".into()),
            lag: None,
            on_null: NullRule::Skip,
        }),
        mode: WriteMode::Append,
        key: Vec::new(),
        on_schema_change: SchemaPolicy::Evolve,
        checkpoint_pages: None,
        schedule: None,
        origin: Origin::Sql,
    }
}

pub fn compaction_retires_only_the_named_files(c: &dyn Catalog) {
    for (i, run) in ["r1", "r2", "r3"].iter().enumerate() {
        c.begin_run(&new_run(run, "p", i as i64, 1), &alive)
            .unwrap();
        c.commit(&commit(
            run,
            "t",
            vec![file("t", run, 3)],
            Some(&i.to_string()),
        ))
        .unwrap();
    }
    // The compaction read r1 and r2; r3 was appended meanwhile and stays.
    c.begin_run(&new_run("c1", "compact:t", 5, 1), &alive)
        .unwrap();
    let mut k = commit("c1", "t", vec![file("t", "c1", 6)], None);
    k.pipeline = "compact:t".into();
    k.retire = vec!["t/r1.parquet".into(), "t/r2.parquet".into()];
    k.at = t(30);
    c.commit(&k).unwrap();
    let mut live: Vec<_> = c
        .table_files("t")
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    live.sort();
    assert_eq!(live, vec!["t/c1.parquet", "t/r3.parquet"]);
    assert_eq!(c.tables().unwrap()[0].rows, 9);
    assert_eq!(
        c.cursor("p").unwrap().as_deref(),
        Some("2"),
        "cursor untouched"
    );
    // Retiring a file that is no longer current is refused, and nothing changes.
    c.begin_run(&new_run("c2", "compact:t", 40, 1), &alive)
        .unwrap();
    let mut k2 = commit("c2", "t", vec![file("t", "c2", 9)], None);
    k2.pipeline = "compact:t".into();
    k2.retire = vec!["t/r3.parquet".into(), "t/r1.parquet".into()];
    let err = c.commit(&k2).unwrap_err().to_string();
    assert!(
        err.contains("t/r1.parquet") && err.contains("nothing was committed"),
        "{err}"
    );
    live = c
        .table_files("t")
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    live.sort();
    assert_eq!(
        live,
        vec!["t/c1.parquet", "t/r3.parquet"],
        "nothing applied"
    );
    // The retired files are kept for readers until the grace period ends.
    assert_eq!(c.purge_retired(t(30)).unwrap().len(), 0);
    let mut gone = c.purge_retired(t(31)).unwrap();
    gone.sort();
    assert_eq!(gone, vec!["t/r1.parquet", "t/r2.parquet"]);
}

pub fn prune_keeps_the_latest_rows(c: &dyn Catalog) {
    // p: four runs, the last one failed; q: one old run.
    for (i, run) in ["p1", "p2", "p3"].iter().enumerate() {
        c.begin_run(&new_run(run, "p", i as i64 * 100, 1), &alive)
            .unwrap();
        let mut k = commit(run, "t", vec![file("t", run, 1)], Some(&i.to_string()));
        k.at = t(i as i64 * 100 + 1);
        c.commit(&k).unwrap();
    }
    c.begin_run(&new_run("p4", "p", 300, 1), &alive).unwrap();
    c.fail_run("p4", t(301), &RunCounters::default(), "boom")
        .unwrap();
    c.begin_run(&new_run("q1", "q", 0, 1), &alive).unwrap();
    c.add_event(t(0), EventKind::RunRetry, "p", "old p", None)
        .unwrap();
    c.add_event(t(1), EventKind::RunRetry, "p", "newer p", None)
        .unwrap();
    c.add_event(t(2), EventKind::RunRetry, "q", "only q", None)
        .unwrap();
    c.add_event(t(500), EventKind::RunRetry, "p", "recent p", None)
        .unwrap();
    let cutoff = t(250);
    let pruned = c
        .prune(&super::PruneCutoffs {
            runs: Some(cutoff),
            events: Some(cutoff),
            cursor_history: Some(cutoff),
        })
        .unwrap();
    // Runs: p1 goes; p2 is not the latest succeeded (p3 is), so it goes too; p3 stays as
    // the latest succeeded, p4 as the latest; q1 is running.
    let mut runs: Vec<_> = c
        .runs(None)
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    runs.sort();
    assert_eq!(runs, vec!["p3", "p4", "q1"]);
    assert_eq!(pruned.runs, 2);
    // Events: "old p" and "newer p" are old, but "recent p" is p's latest; "only q" is q's.
    assert_eq!(pruned.events, 2);
    let events = format!("{:?}", c.state_table("events").unwrap().rows);
    assert!(
        !events.contains("old p") && !events.contains("newer p"),
        "{events}"
    );
    assert!(
        events.contains("recent p") && events.contains("only q"),
        "{events}"
    );
    // Cursor history: values 0, 1 are old; 2 (committed at 201) is the latest.
    let history: Vec<_> = c
        .cursor_history("p")
        .unwrap()
        .into_iter()
        .map(|h| h.value)
        .collect();
    assert_eq!(history, vec!["2"]);
    assert_eq!(pruned.cursor_history, 2);
    // Nothing to prune without cutoffs.
    assert_eq!(
        c.prune(&super::PruneCutoffs::default()).unwrap(),
        super::Pruned::default()
    );
}

pub fn drop_table_forgets_the_table_and_its_cursors(c: &dyn Catalog) {
    c.upsert_pipeline(&simple_pipeline("p", "t"), t(0)).unwrap();
    c.upsert_pipeline(&simple_pipeline("other", "u"), t(0))
        .unwrap();
    c.begin_run(&new_run("r1", "p", 0, 1), &alive).unwrap();
    c.commit(&commit("r1", "t", vec![file("t", "r1", 3)], Some("3")))
        .unwrap();
    let mut u = commit("o1", "u", vec![file("u", "o1", 2)], Some("7"));
    u.pipeline = "other".into();
    c.begin_run(&new_run("o1", "other", 1, 1), &alive).unwrap();
    c.commit(&u).unwrap();
    // A live run of p: refused, naming the pipeline; a dead one does not hold it.
    c.begin_run(&new_run("r2", "p", 20, 7), &alive).unwrap();
    let err = c.drop_table("t", t(30), &alive).unwrap_err().to_string();
    assert!(err.contains("pipeline 'p'") && err.contains("r2"), "{err}");
    assert_eq!(c.table_files("t").unwrap().len(), 1, "nothing dropped");
    let dropped = c.drop_table("t", t(30), &dead).unwrap().unwrap();
    assert_eq!(dropped.files, vec!["t/r1.parquet"]);
    assert_eq!(dropped.pipelines, vec!["p"]);
    assert!(c.table_files("t").unwrap().is_empty());
    assert_eq!(
        c.tables()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect::<Vec<_>>(),
        vec!["u"]
    );
    assert_eq!(c.cursor("p").unwrap(), None, "p loads from the start again");
    assert!(c.cursor_history("p").unwrap().is_empty());
    assert_eq!(
        c.cursor("other").unwrap().as_deref(),
        Some("7"),
        "other tables untouched"
    );
    // The files stay for readers until the grace period ends.
    assert_eq!(c.purge_retired(t(31)).unwrap(), vec!["t/r1.parquet"]);
    // Once gone, the table is unknown.
    assert!(c.drop_table("t", t(40), &dead).unwrap().is_none());
    let events = c.state_table("events").unwrap();
    assert!(
        format!("{:?}", events.rows).contains("table_dropped"),
        "{:?}",
        events.rows
    );
}

/// `hakiri sync pull`: every state table replaced by a snapshot in one transaction; rows
/// added afterwards get ids of their own; refused while a run is running.
pub fn replace_state_restores_a_snapshot(c: &dyn Catalog) {
    // The memory catalog takes no state at all (tests have nothing to pull).
    if let Err(Error::Unsupported(_)) = c.replace_state(&[]) {
        return;
    }
    c.begin_run(&new_run("r1", "p", 0, 1), &dead).unwrap();
    c.commit(&commit("r1", "t", vec![file("t", "r1", 3)], Some("5")))
        .unwrap();
    c.add_event(t(11), EventKind::Backfill, "p", "before", None)
        .unwrap();
    let names = [
        "runs",
        "events",
        "cursor_history",
        "cursors",
        "files",
        "tables",
    ];
    let snapshot: Vec<(String, super::state_tables::RawTable)> = names
        .iter()
        .map(|n| (n.to_string(), c.state_table(n).unwrap()))
        .collect();
    c.add_event(t(12), EventKind::Backfill, "p", "after", None)
        .unwrap();
    c.begin_run(&new_run("r2", "p", 13, 1), &dead).unwrap();
    let refused = c.replace_state(&snapshot).unwrap_err().to_string();
    assert!(refused.contains("run r2 is running"), "{refused}");
    c.fail_run("r2", t(14), &RunCounters::default(), "x")
        .unwrap();

    c.replace_state(&snapshot).unwrap();
    for (name, table) in &snapshot {
        assert_eq!(&c.state_table(name).unwrap().rows, &table.rows, "{name}");
    }
    // New rows after the restore: their ids do not collide with the restored ones.
    c.add_event(t(15), EventKind::Backfill, "p", "new", None)
        .unwrap();
    c.begin_run(&new_run("r3", "p", 16, 1), &dead).unwrap();
    c.commit(&commit("r3", "t", vec![file("t", "r3", 2)], Some("7")))
        .unwrap();
    for name in ["events", "cursor_history"] {
        let table = c.state_table(name).unwrap();
        let id = table.columns.iter().position(|(n, _)| n == "id").unwrap();
        let mut ids: Vec<String> = table.rows.iter().map(|r| format!("{:?}", r[id])).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "{name}: ids are unique");
    }
    assert_eq!(c.cursor("p").unwrap().as_deref(), Some("7"));
}

#[cfg(test)]
mod tests {
    use crate::{MemoryCatalog, SqliteCatalog};

    crate::catalog_conformance!(sqlite, SqliteCatalog::open_in_memory().unwrap());
    crate::catalog_conformance!(memory, MemoryCatalog::new());

    /// `CHECKS` and the macro's list name every check of this file.
    #[test]
    fn every_check_is_listed() {
        let source = include_str!("conformance.rs");
        let mut defined: Vec<&str> = source
            .lines()
            .filter_map(|l| {
                l.strip_prefix("pub fn ")?
                    .strip_suffix("(c: &dyn Catalog) {")
            })
            .collect();
        let mut listed: Vec<&str> = super::CHECKS.iter().map(|(n, _)| *n).collect();
        defined.sort();
        listed.sort();
        assert_eq!(defined, listed);
        let in_macro = source
            .split("@tests $make;")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        for name in defined {
            assert!(
                in_macro.contains(name),
                "{name} is missing from catalog_conformance!"
            );
        }
    }
}
