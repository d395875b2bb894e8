//! File-level increments: a token pipeline over a folder loads each new file once.

use crate::support::Project;

#[test]
fn new_files_are_picked_up_once() {
    let p = Project::new(
        r#"
[sources.drop]
type = "file"
tables.events.path = "incoming"
tables.events.format = "csv"

[pipelines.events]
cursor = { kind = "token" }
sql = "INSERT INTO context.events SELECT * FROM drop.events"
"#,
    );
    let dir = p.path().join("incoming");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("2026-01-01.csv"), "id,kind\n1,push\n2,issue\n").unwrap();
    std::fs::write(dir.join("2026-01-02.csv"), "id,kind\n3,push\n").unwrap();
    let out = p.hakiri(&["run", "events"]).ok().stdout;
    assert!(out.contains("3 rows written"), "{out}");

    std::fs::write(dir.join("2026-01-03.csv"), "id,kind\n4,release\n5,push\n").unwrap();
    let out = p.hakiri(&["run", "events"]).ok().stdout;
    assert!(out.contains("2 rows written"), "{out}");
    // Nothing new: nothing loaded, the token (the set of loaded files) unchanged.
    let out = p.hakiri(&["run", "events"]).ok().stdout;
    assert!(out.contains("0 rows written"), "{out}");

    let rows = p.query_csv("select count(*), count(distinct id), sum(id) from events");
    assert_eq!(rows, vec!["5,5,15"]);
    let per_run = p.query_csv("select rows_written from hakiri.runs order by started_at");
    assert_eq!(per_run, vec!["3", "2", "0"]);
    let token = p.query_csv("select value from hakiri.cursors where pipeline = 'events'");
    assert!(
        token[0].contains("2026-01-01.csv") && token[0].contains("2026-01-03.csv"),
        "{token:?}"
    );
    // A live query still reads every file.
    assert_eq!(p.query_csv("select count(*) from drop.events"), vec!["5"]);
}
