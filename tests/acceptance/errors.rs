//! Bad input gets a message naming the problem and the fix, and the right exit code
//! (1: a statement or run failed; 2: usage or configuration). Messages are snapshots.

use crate::support::{Project, hakiri};

const MANIFEST: &str = r#"
[sources.samples]
type = "file"
tables.events.path = "events.csv"

[pipelines.events]
sql = "INSERT INTO context.events SELECT * FROM samples.events"
"#;

fn project() -> Project {
    let p = Project::new(MANIFEST);
    std::fs::write(p.path().join("events.csv"), "id,kind\n1,push\n2,issue\n").unwrap();
    p.hakiri(&["run", "events"]).ok();
    p
}

fn err(p: &Project, args: &[&str]) -> (i32, String) {
    let r = p.hakiri(args);
    (
        r.code,
        r.stderr
            .replace(&p.path().display().to_string(), "<project>")
            .trim_end()
            .to_string(),
    )
}

#[test]
fn invalid_sql() {
    let p = project();
    let (code, msg) = err(&p, &["query", "selec 1"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(msg, @"error: SQL error: Expected: an SQL statement, found: selec at Line: 1, Column: 1");
}

#[test]
fn unknown_source_table_and_column() {
    let p = project();
    let (code, msg) = err(&p, &["query", "select * from nosuch.events"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(msg, @"error: no source named 'nosuch' (in 'nosuch.events'); context tables: events; sources: samples. Declare it in hakiri.toml or with CREATE SOURCE");

    let (code, msg) = err(&p, &["query", "select * from samples.nosuch"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(msg, @"error: source 'samples' has no table 'nosuch': its tables are events");

    let (code, msg) = err(&p, &["query", "select * from nosuch"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(msg, @"error: no context table named 'nosuch' (context tables: events; sources: samples); check the name or run the pipeline that loads it: hakiri run <pipeline>");

    let (code, msg) = err(&p, &["query", "select nope from events"]);
    assert_eq!(code, 1);
    assert!(
        msg.contains("nope") && msg.contains("Valid fields are"),
        "{msg}"
    );

    let (code, msg) = err(&p, &["run", "nosuch"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!(msg, @"error: no pipeline named 'nosuch': the pipelines are events");
}

#[test]
fn invalid_manifests() {
    let p = Project::new(
        "[sources.s]\ntype = \"http\"\nbase_url = \"http://127.0.0.1:9\"\ntables.t.pathh = \"/x\"\n",
    );
    let (code, msg) = err(&p, &["pipeline", "list"]);
    assert_eq!(code, 2);
    assert!(
        msg.contains("unknown option 'pathh' for table 's.t': valid options are path, url"),
        "{msg}"
    );

    let p = Project::new("[pipelines.p]\nsql = \"SELECT 1\"\n");
    let (code, msg) = err(&p, &["pipeline", "list"]);
    assert_eq!(code, 2);
    insta::assert_snapshot!(msg, @"error: <project>/hakiri.toml, line 1 column 1: pipeline 'p': a pipeline body must be INSERT INTO context.<table> SELECT ..., found: SELECT 1");

    let p = Project::new("[sources.s]\ntype = \"ftp\"\n");
    let (code, msg) = err(&p, &["pipeline", "list"]);
    assert_eq!(code, 2);
    insta::assert_snapshot!(msg, @"error: hakiri.toml: source 's' has unknown type 'ftp': the available types are delta, file, github, http, postgres, s3, wasm");

    let p = Project::new("[pipelines\n");
    let (code, msg) = err(&p, &["run", "--all"]);
    assert_eq!(code, 2);
    assert!(msg.contains("invalid TOML"), "{msg}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let r = hakiri(dir.path(), &["query", "select 1"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("no hakiri.toml") && r.stderr.contains("hakiri init NAME"),
        "{}",
        r.stderr
    );
    let r = hakiri(dir.path(), &["frobnicate"], &[]);
    assert_eq!(r.code, 2);
    let p = project();
    let r = p.hakiri(&["run"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("pass --all; the pipelines are: events"),
        "{}",
        r.stderr
    );
}

#[test]
fn writes_outside_pipelines_are_refused() {
    let p = project();
    let (code, msg) = err(
        &p,
        &["query", "insert into events values (3, 'x', 'r', now())"],
    );
    assert_eq!(code, 1);
    assert!(
        msg.contains("rows enter the context store only through pipelines"),
        "{msg}"
    );
    assert_eq!(p.query_csv("select count(*) from events"), vec!["2"]);
}

/// A reader that goes away (`| head`) is not a failure: hakiri exits 0 without an error
/// line, for every output format. Found in the error's chain (an I/O error of kind
/// BrokenPipe), not in its text.
#[test]
fn a_closed_output_pipe_is_not_an_error() {
    let p = project();
    let bin = crate::support::hakiri_bin();
    // (The table format renders all rows before writing; the streamed formats matter.)
    for format in ["csv", "json"] {
        let script = format!(
            "set -o pipefail; '{}' query --format {format} 'select * from generate_series(1, 3000000)' | head -n 2 > /dev/null",
            bin.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .current_dir(p.path())
            .env_remove("HAKIRI_PROJECT")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{format}: {stderr}");
        assert!(!stderr.contains("error"), "{format}: {stderr}");
    }
}
