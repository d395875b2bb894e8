//! Incremental runs against the stateful endpoints of tests/fixtures/paged_server.py (a real
//! HTTP server on 127.0.0.1): a growing table with the cursor pushed into the request,
//! merge on key, snapshots (ETag and content hash) replaced atomically under concurrent
//! readers, schema drift between pages under each policy, and the run lock.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Project, Server, hakiri_bin};
use serde_json::Value;

/// A project with an http source `api` over `server` and the given tables and pipelines.
fn project(server: &Server, rest: &str) -> Project {
    Project::new(&format!(
        "[sources.api]\ntype = \"http\"\nbase_url = \"{}\"\nmax_retries = 2\nretry_backoff_ms = 50\n{rest}",
        server.url()
    ))
}

/// The server's request log for `path`.
fn log(server: &Server, path: &str) -> Vec<Value> {
    let body = server.get(&format!("/admin/log?path={path}"));
    serde_json::from_str::<Vec<Value>>(&body).expect("log is JSON")
}

fn param(entry: &Value, name: &str) -> Option<String> {
    entry["query"][name].as_str().map(str::to_string)
}

#[test]
fn growing_source_three_runs_ingest_exactly_the_new_rows() {
    let server = Server::paged();
    let p = project(
        &server,
        r#"
[sources.api.tables.grow]
path = "/grow"
records = "items"
pagination = "next_url"
query = { size = "10" }
filter = { id = "since_id" }
schema = "id bigint, name text, amount bigint"

[sources.api.tables.grow_exact]
path = "/grow"
records = "items"
pagination = "next_url"
filter = { id = "since_id", "id.exact" = "true" }
schema = "id bigint, name text, amount bigint"

[pipelines.grow]
cursor = { kind = "monotonic", column = "id", initial = "0" }
sql = "INSERT INTO context.grow SELECT * FROM api.grow WHERE id > $cursor"

[pipelines.grow_exact]
cursor = { kind = "monotonic", column = "id", initial = "0" }
sql = "INSERT INTO context.grow_exact SELECT * FROM api.grow_exact WHERE id > $cursor"
"#,
    );
    // A filter declared exact is left to the API: no FilterExec above the scan.
    let plan = p.hakiri(&["plan", "grow_exact"]).ok().stdout;
    assert!(
        plan.contains("(Exact: the source applies it)") && !plan.contains("FilterExec"),
        "{plan}"
    );
    let mut total = 0u64;
    for (new_rows, expect_since) in [(20u64, "0"), (15, "20"), (7, "35")] {
        server.get(&format!("/admin/grow?n={new_rows}"));
        let before = log(&server, "/grow").len();
        let out = p.hakiri(&["run", "grow"]).ok().stdout;
        total += new_rows;
        assert!(out.contains(&format!("{new_rows} rows written")), "{out}");
        // Count and sum of ids equal the source's: nothing missing, nothing twice.
        let rows = p.query_csv("select count(*), count(distinct id), sum(id) from grow");
        assert_eq!(
            rows,
            vec![format!("{total},{total},{}", total * (total + 1) / 2)]
        );
        // Every request of this run carried the pushed-down cursor (checked on the server).
        let requests = &log(&server, "/grow")[before..];
        assert!(!requests.is_empty());
        for r in requests {
            assert_eq!(param(r, "since_id").as_deref(), Some(expect_since), "{r}");
        }
    }
    let runs = p.query_csv(
        "select rows_written, cursor_start, cursor_end from hakiri.runs where pipeline = 'grow' order by started_at",
    );
    assert_eq!(runs, vec!["20,0,20", "15,20,35", "7,35,42"]);
    let history =
        p.query_csv("select value from hakiri.cursor_history where pipeline = 'grow' order by id");
    assert_eq!(history, vec!["20", "35", "42"]);
    // The plan reports the pushdown and whether it is exact.
    let plan = p.hakiri(&["plan", "grow"]).ok().stdout;
    assert!(
        plan.contains("api.grow.id > Int64(42)")
            && plan.contains("Inexact")
            && plan.contains("FilterExec"),
        "{plan}"
    );
}

#[test]
fn merge_keeps_one_row_per_key_with_the_latest_values() {
    let server = Server::paged();
    let p = project(
        &server,
        r#"
[sources.api.tables.merge]
path = "/merge"

[pipelines.merged]
mode = "merge"
key = ["id"]
sql = "INSERT INTO context.merged SELECT id, value, seen FROM api.merge"
"#,
    );
    p.hakiri(&["run", "merged"]).ok();
    server.get("/admin/merge?version=2");
    p.hakiri(&["run", "merged"]).ok();
    let rows = p.query_csv("select count(*), count(distinct id) from merged");
    assert_eq!(rows, vec!["15,15"]);
    // Updated keys hold the new values; id 7 came twice in one run and the last one won.
    let values =
        p.query_csv("select id, value, seen from merged where id in (3, 5, 7, 15) order by id");
    assert_eq!(
        values,
        vec!["3,v1-3,1", "5,v2-5,2", "7,v2-7,2", "15,v2-15,2"]
    );
}

#[test]
fn snapshots_skip_unchanged_and_replace_atomically_under_readers() {
    let server = Server::paged();
    let p = Arc::new(project(
        &server,
        r#"
[sources.api.tables.snap]
path = "/snapshot"
query = { delay_ms = "300" }
schema = "id bigint, version bigint, label text"

[sources.api.tables.hashed]
path = "/snapshot_noetag"
schema = "id bigint, version bigint, label text"

[pipelines.snap]
cursor = { kind = "snapshot" }
sql = "INSERT INTO context.snap SELECT * FROM api.snap"

[pipelines.hashed]
cursor = { kind = "snapshot" }
sql = "INSERT INTO context.hashed SELECT * FROM api.hashed"
"#,
    ));
    for pipeline in ["snap", "hashed"] {
        let first = p.hakiri(&["run", pipeline]).ok().stdout;
        assert!(
            first.contains("succeeded") && first.contains("10 rows written"),
            "{first}"
        );
        let second = p.hakiri(&["run", pipeline]).ok().stdout;
        assert!(
            second.contains("skipped") && second.contains("0 rows written"),
            "{second}"
        );
    }
    // The ETag pipeline asked with If-None-Match and the server answered 304; the other
    // one compared content hashes.
    let snap_log = log(&server, "/snapshot");
    assert!(snap_log[0]["if_none_match"].is_null());
    assert!(
        snap_log[1]["if_none_match"]
            .as_str()
            .is_some_and(|s| s.starts_with('"'))
    );
    let cursors = p.query_csv(
        "select pipeline, split_part(value, ':', 1) from hakiri.cursors order by pipeline",
    );
    assert_eq!(cursors, vec!["hashed,xxh64", "snap,etag"]);
    let statuses =
        p.query_csv("select pipeline, status from hakiri.runs order by pipeline, started_at");
    assert_eq!(
        statuses,
        vec![
            "hashed,succeeded",
            "hashed,skipped",
            "snap,succeeded",
            "snap,skipped"
        ]
    );
    let unchanged =
        p.query_csv("select count(*) from hakiri.events where kind = 'snapshot_unchanged'");
    assert_eq!(unchanged, vec!["2"]);

    // Readers query the table in a loop while it is replaced twice: each sees a whole
    // snapshot (version v has 10 + 5(v-1) rows, each with version v), never a mix.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(p.query_csv("select count(*), sum(version) from snap")[0].clone());
            }
            seen
        })
    };
    for version in [2, 3] {
        server.get(&format!("/admin/snapshot?version={version}"));
        let out = p.hakiri(&["run", "snap"]).ok().stdout;
        assert!(
            out.contains(&format!("{} rows written", 10 + 5 * (version - 1))),
            "{out}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader");
    assert!(
        seen.len() >= 3,
        "the reader ran only {} queries",
        seen.len()
    );
    for s in &seen {
        assert!(
            ["10,10", "15,30", "20,60"].contains(&s.as_str()),
            "a reader saw {s}: {seen:?}"
        );
    }
    assert_eq!(seen.last().map(String::as_str), Some("20,60"));
    // Replaced files leave the manifest at once; the table has one current file.
    let tables = p.query_csv("select rows, files from hakiri.tables where name = 'snap'");
    assert_eq!(tables, vec!["20,1"]);
}

#[test]
fn schema_drift_between_pages_follows_the_policy() {
    let server = Server::paged();
    let p = project(
        &server,
        r#"
[sources.api.tables.drift]
path = "/drift"
records = "items"
pagination = "next_url"

[pipelines.drift_evolve]
sql = "INSERT INTO context.drift_evolve SELECT * FROM api.drift"

[pipelines.drift_freeze]
on_schema_change = "freeze"
sql = "INSERT INTO context.drift_freeze SELECT * FROM api.drift"

[pipelines.drift_discard]
on_schema_change = "discard"
sql = "INSERT INTO context.drift_discard SELECT * FROM api.drift"
"#,
    );
    // EVOLVE: the new field is added, the score widens to a float, then turns into a
    // variant (JSON text) when a string arrives; all 20 rows land.
    p.hakiri(&["run", "drift_evolve"]).ok();
    let rows = p.query_csv(
        "select count(*), count(extra), sum(case when score like '%n/a%' then 1 else 0 end) from drift_evolve",
    );
    assert_eq!(rows, vec!["20,15,1"]);
    let drift = p.query_csv(
        "select message from hakiri.events where kind = 'schema_drift' and subject = 'drift_evolve' order by id",
    );
    assert_eq!(drift.len(), 3, "{drift:?}");
    assert!(
        drift[0].contains("new field 'extra' (Utf8) on page 2"),
        "{drift:?}"
    );
    assert!(
        drift[1].contains("field 'score' widened from Int64 to Float64 on page 3"),
        "{drift:?}"
    );
    assert!(drift[2].contains("variant"), "{drift:?}");

    // FREEZE: the run fails at page 4 and commits nothing.
    let frozen = p.hakiri(&["run", "drift_freeze"]);
    assert_eq!(frozen.code, 1, "{}", frozen.stderr);
    assert!(
        frozen
            .stderr
            .contains("ON SCHEMA CHANGE FREEZE fails the run"),
        "{}",
        frozen.stderr
    );
    assert!(
        frozen
            .stderr
            .contains("nothing from this run was committed"),
        "{}",
        frozen.stderr
    );
    assert_eq!(
        p.query_csv("select count(*) from hakiri.tables where name = 'drift_freeze'"),
        vec!["0"]
    );
    let failed = p.query_csv("select status from hakiri.runs where pipeline = 'drift_freeze'");
    assert_eq!(failed, vec!["failed"]);

    // DISCARD: the record with a string score is left out and counted.
    p.hakiri(&["run", "drift_discard"]).ok();
    let rows = p.query_csv(
        "select count(*), sum(score), count(*) filter (where id = 17) from drift_discard",
    );
    assert_eq!(rows, vec!["19,195.5,0"]);
    let discarded =
        p.query_csv("select rows_discarded from hakiri.runs where pipeline = 'drift_discard'");
    assert_eq!(discarded, vec!["1"]);
    let events = p.query_csv(
        "select kind from hakiri.events where subject = 'drift_discard' and kind = 'rows_discarded'",
    );
    assert_eq!(events, vec!["rows_discarded"]);
}

#[test]
fn a_second_run_of_a_running_pipeline_names_the_holder() {
    let server = Server::paged();
    server.get("/admin/grow?n=100");
    // Pages wait at the server's gate until the second run has been refused: the first run
    // stays in flight however slow the machine is.
    server.get("/admin/hold");
    let p = project(
        &server,
        r#"
[sources.api.tables.grow]
path = "/grow"
records = "items"
pagination = "next_url"
query = { size = "10", hold = "1" }
schema = "id bigint, name text, amount bigint"

[pipelines.slow]
sql = "INSERT INTO context.slow SELECT * FROM api.grow"
"#,
    );
    let stderr = p.path().join("first.stderr");
    let mut first = Command::new(hakiri_bin())
        .current_dir(p.path())
        .args(["run", "slow"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start hakiri run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.query_csv("select count(*) from hakiri.runs where status = 'running'") != vec!["1"] {
        assert!(
            Instant::now() < deadline && first.try_wait().expect("try_wait").is_none(),
            "the first run was never seen running: {:?}, {}, runs {:?}",
            first.try_wait(),
            std::fs::read_to_string(&stderr).unwrap_or_default(),
            p.query_csv("select status, error from hakiri.runs")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = p.hakiri(&["run", "slow"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        second.stderr.contains("pipeline 'slow' is already running")
            && second
                .stderr
                .contains(&format!("by process {}", first.id())),
        "{}",
        second.stderr
    );
    server.get("/admin/release");
    assert!(first.wait().expect("wait").success());
    let runs = p.query_csv("select status, rows_written from hakiri.runs");
    assert_eq!(runs, vec!["succeeded,100"]);
}
