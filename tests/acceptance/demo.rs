//! The foundation acceptance: `hakiri init demo`, the httpbin pipeline against a real
//! httpbin (Debian's python3-httpbin) on 127.0.0.1, and the offline sample pipeline.

use crate::support::{Server, hakiri};

#[test]
fn demo_httpbin_runs_twice_and_records_runs() {
    let httpbin = Server::httpbin();
    let work = tempfile::tempdir().unwrap();
    hakiri(work.path(), &["init", "demo"], &[]).ok();
    let demo = work.path().join("demo");
    let url = httpbin.url();
    let env = [("HAKIRI_HTTPBIN_URL", url.as_str())];

    let first = hakiri(&demo, &["run", "httpbin"], &env).ok();
    assert!(
        first.stdout.contains("httpbin: succeeded"),
        "{}",
        first.stdout
    );
    let count = hakiri(
        &demo,
        &["query", "select count(*) from httpbin_anything"],
        &env,
    )
    .ok();
    assert!(count.stdout.contains("| 1 "), "{}", count.stdout);

    // Append mode: the second run adds its row next to the first.
    hakiri(&demo, &["run", "httpbin"], &env).ok();
    let rows = hakiri(
        &demo,
        &["query", "--format", "csv", "select count(*), count(distinct _hakiri_run_id), min(url) from context.httpbin_anything"],
        &env,
    )
    .ok();
    assert_eq!(
        rows.stdout.lines().nth(1).unwrap(),
        format!("2,2,{url}/anything")
    );

    let runs = hakiri(
        &demo,
        &["query", "--format", "csv", "select status, rows_written, pages from hakiri.runs where pipeline = 'httpbin' order by started_at"],
        &env,
    )
    .ok();
    assert_eq!(
        runs.stdout,
        "status,rows_written,pages\nsucceeded,1,1\nsucceeded,1,1\n"
    );
}

#[test]
fn demo_sample_pipeline_is_incremental_offline() {
    let work = tempfile::tempdir().unwrap();
    hakiri(work.path(), &["init", "demo"], &[]).ok();
    let demo = work.path().join("demo");
    let first = hakiri(&demo, &["run", "events"], &[]).ok();
    assert!(
        first.stdout.contains("1000 rows written"),
        "{}",
        first.stdout
    );
    // Nothing new: the cursor stops a second load.
    let second = hakiri(&demo, &["run", "events"], &[]).ok();
    assert!(
        second.stdout.contains("0 rows written"),
        "{}",
        second.stdout
    );
    // New rows in the source are picked up once.
    let csv = demo.join("data/events.csv");
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str(
        "1001,2026-02-01T00:00:00Z,ada,push,1.50\n1002,2026-02-01T00:01:00Z,ken,issue,2.50\n",
    );
    std::fs::write(&csv, text).unwrap();
    let third = hakiri(&demo, &["run", "events"], &[]).ok();
    assert!(
        third.stdout.contains("2 rows written") && third.stdout.contains("cursor 1002"),
        "{}",
        third.stdout
    );
    let q = hakiri(
        &demo,
        &[
            "query",
            "--format",
            "csv",
            "select count(*), count(distinct id), max(id) from events",
        ],
        &[],
    )
    .ok();
    assert_eq!(q.stdout.lines().nth(1).unwrap(), "1002,1002,1002");
    let cursor = hakiri(
        &demo,
        &[
            "query",
            "--format",
            "csv",
            "select value from hakiri.cursors",
        ],
        &[],
    )
    .ok();
    assert_eq!(cursor.stdout, "value\n1002\n");
}

#[test]
fn query_formats_and_lineage_columns() {
    let work = tempfile::tempdir().unwrap();
    hakiri(work.path(), &["init", "p"], &[]).ok();
    let p = work.path().join("p");
    hakiri(&p, &["run", "events"], &[]).ok();
    let json = hakiri(
        &p,
        &["query", "-f", "json", "select id, kind, _hakiri_loaded_at is not null as stamped from events order by id limit 2"],
        &[],
    )
    .ok();
    let lines: Vec<&str> = json.stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first["id"], 1);
    assert_eq!(first["stamped"], true);
    let list = hakiri(&p, &["pipeline", "list"], &[]).ok();
    assert!(
        list.stdout.contains("events") && list.stdout.contains("succeeded"),
        "{}",
        list.stdout
    );
    let describe = hakiri(&p, &["pipeline", "describe", "events"], &[]).ok();
    assert!(
        describe.stdout.contains("committed 1000"),
        "{}",
        describe.stdout
    );
}

#[test]
fn a_json_manifest_works_like_the_toml_one_and_both_at_once_is_an_error() {
    let work = tempfile::tempdir().unwrap();
    hakiri(work.path(), &["init", "jt", "--format", "json"], &[]).ok();
    hakiri(work.path(), &["init", "tt"], &[]).ok();
    let (json, toml) = (work.path().join("jt"), work.path().join("tt"));
    assert!(json.join("hakiri.json").is_file() && !json.join("hakiri.toml").exists());
    // The same project either way: the same pipelines, and the same run.
    let show = |dir: &std::path::Path| {
        hakiri(
            dir,
            &[
                "query",
                "--format",
                "csv",
                "select name, definition from hakiri.pipelines order by name",
            ],
            &[],
        )
        .ok()
        .stdout
    };
    assert_eq!(show(&json), show(&toml));
    let run = hakiri(&json, &["run", "events"], &[]).ok();
    assert!(run.stdout.contains("1000 rows written"), "{}", run.stdout);
    // From a subfolder too, as with hakiri.toml.
    let sub = hakiri(
        &json.join("data"),
        &["query", "--format", "csv", "select count(*) from events"],
        &[],
    )
    .ok();
    assert_eq!(sub.stdout.lines().nth(1), Some("1000"));
    // Both manifests in one folder: which one counts would be a guess.
    std::fs::copy(toml.join("hakiri.toml"), json.join("hakiri.toml")).unwrap();
    let both = hakiri(&json, &["run", "events"], &[]);
    assert_ne!(both.code, 0);
    assert!(
        both.stderr
            .contains("holds both hakiri.toml and hakiri.json"),
        "{}",
        both.stderr
    );
    // A JSON error names the line and column.
    std::fs::remove_file(json.join("hakiri.toml")).unwrap();
    std::fs::write(json.join("hakiri.json"), "{\"project\": {\n  \"name\": }}").unwrap();
    let bad = hakiri(&json, &["run", "events"], &[]);
    assert!(
        bad.stderr.contains("invalid JSON manifest") && bad.stderr.contains("line 2 column"),
        "{}",
        bad.stderr
    );
}
