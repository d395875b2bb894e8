//! The s3 source against a real S3-compatible server (moto's standalone server on 127.0.0.1):
//! new objects are loaded once, live queries read CSV, NDJSON and Parquet objects, and a
//! wrong bucket or endpoint names the source and the fix.

use crate::support::{Project, S3Server, free_port, hakiri};

const KEYS: [(&str, &str); 2] = [
    ("TEST_S3_KEY_ID", "hakiri-test"),
    ("TEST_S3_SECRET", "not-a-real-secret"),
];

fn manifest(endpoint: &str, bucket: &str) -> String {
    format!(
        r#"
[sources.lake]
type = "s3"
endpoint = "{endpoint}"
bucket = "{bucket}"
access_key_id = "env:TEST_S3_KEY_ID"
secret_access_key = "env:TEST_S3_SECRET"
tables.events.path = "incoming/"
tables.events.format = "csv"
tables.users.path = "users/*.ndjson"
tables.users.format = "json"
tables.archive.path = "archive/events.parquet"

[pipelines.events]
cursor = {{ kind = "token" }}
sql = "INSERT INTO context.events SELECT * FROM lake.events"
"#
    )
}

fn run(p: &Project, args: &[&str]) -> crate::support::Run {
    hakiri(p.path(), args, &KEYS)
}

fn csv(p: &Project, sql: &str) -> Vec<String> {
    let out = run(p, &["query", "--format", "csv", sql]).ok().stdout;
    out.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn s3_pipeline_loads_each_new_object_once_and_live_queries_read_every_format() {
    let s3 = S3Server::start();
    s3.create_bucket("drops");
    s3.put(
        "drops",
        "incoming/2026-01-01.csv",
        b"id,kind\n1,push\n2,issue\n",
    );
    s3.put("drops", "incoming/2026-01-02.csv", b"id,kind\n3,push\n");
    s3.put(
        "drops",
        "users/a.ndjson",
        b"{\"id\":1,\"login\":\"ada\"}\n{\"id\":2,\"login\":\"linus\"}\n",
    );
    let p = Project::new(&manifest(&s3.endpoint(), "drops"));

    let out = run(&p, &["run", "events"]).ok().stdout;
    assert!(out.contains("3 rows written"), "{out}");
    s3.put(
        "drops",
        "incoming/2026-01-03.csv",
        b"id,kind\n4,release\n5,push\n",
    );
    let out = run(&p, &["run", "events"]).ok().stdout;
    assert!(out.contains("2 rows written"), "{out}");
    let out = run(&p, &["run", "events"]).ok().stdout;
    assert!(out.contains("0 rows written"), "{out}");

    assert_eq!(
        csv(
            &p,
            "select count(*), count(distinct id), sum(id) from events"
        ),
        vec!["5,5,15"]
    );
    assert_eq!(
        csv(
            &p,
            "select rows_written from hakiri.runs order by started_at"
        ),
        vec!["3", "2", "0"]
    );
    let token = csv(
        &p,
        "select value from hakiri.cursors where pipeline = 'events'",
    );
    assert!(
        token[0].contains("incoming/2026-01-01.csv")
            && token[0].contains("incoming/2026-01-03.csv"),
        "{token:?}"
    );
    // The secrets never show: not in the token, not in the stored source.
    assert!(!token[0].contains("not-a-real-secret"));

    // Live: NDJSON objects, joined with the context table.
    assert_eq!(
        csv(
            &p,
            "select u.login, e.kind from lake.users u join events e on e.id = u.id order by u.id"
        ),
        vec!["ada,push", "linus,issue"]
    );
    // Live: a Parquet object (the context store's own file, copied into the bucket).
    let parquet = find_parquet(&p.path().join(".hakiri")).expect("a context-store file");
    s3.put(
        "drops",
        "archive/events.parquet",
        &std::fs::read(&parquet).unwrap(),
    );
    let rows = csv(&p, "select count(*) from lake.archive");
    assert!(rows == vec!["3"] || rows == vec!["2"], "{rows:?}");
    // The source scan in the plan reads from the bucket.
    let plan = run(&p, &["plan", "events"]).ok().stdout;
    assert!(plan.contains("s3://drops/incoming/"), "{plan}");
}

/// The first Parquet file under `dir`.
fn find_parquet(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_parquet(&path) {
                return Some(found);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            return Some(path);
        }
    }
    None
}

#[test]
fn s3_errors_name_the_source_and_the_fix() {
    let s3 = S3Server::start();
    let p = Project::new(&manifest(&s3.endpoint(), "no-such-bucket"));
    let err = run(&p, &["query", "select * from lake.events"]).stderr;
    assert!(
        err.contains("source 'lake' (type s3)")
            && err.contains("bucket 'no-such-bucket' does not exist"),
        "{err}"
    );

    let closed = format!("http://127.0.0.1:{}", free_port());
    let p = Project::new(&manifest(&closed, "drops"));
    let err = run(&p, &["query", "select * from lake.events"]).stderr;
    assert!(
        err.contains("source 'lake' (type s3)") && err.contains("check the endpoint option"),
        "{err}"
    );

    // No credentials at all: a configuration error before any request.
    let p = Project::new(&manifest(&s3.endpoint(), "drops"));
    let err = hakiri(p.path(), &["query", "select * from lake.events"], &[]).stderr;
    assert!(err.contains("TEST_S3_KEY_ID"), "{err}");
}
