//! A project written by the release of 2026-12-02 (tests/fixtures/catalog-2026-12-02, made
//! before versioned migrations) opens with this build: the catalog is migrated, every state
//! table reads back, the context tables are intact and the cursors carry on.

use crate::support::{copy_dir, hakiri, repo_root};

#[test]
fn a_project_from_the_2026_12_02_release_migrates_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &repo_root().join("tests/fixtures/catalog-2026-12-02"),
        dir.path(),
    );
    let csv = |sql: &str| -> Vec<String> {
        let r = hakiri(dir.path(), &["query", "--format", "csv", sql], &[]).ok();
        r.stdout.lines().skip(1).map(str::to_string).collect()
    };
    for (table, rows) in [
        ("sources", 3),
        ("pipelines", 3),
        ("runs", 3),
        ("cursors", 2),
        ("cursor_history", 3),
        ("tables", 2),
        ("files", 3),
        ("schema_versions", 3),
        ("events", 6),
        ("schedules", 1),
    ] {
        assert_eq!(
            csv(&format!("select count(*) from hakiri.{table}")),
            vec![rows.to_string()],
            "hakiri.{table}"
        );
    }
    assert_eq!(
        csv("select count(*), count(distinct id) from events"),
        vec!["1000,1000"]
    );
    // The column the second orders run added reads back, NULL for the older row(s).
    assert_eq!(csv("select count(*), count(note) from orders"), vec!["3,1"]);
    // The monotonic cursor carries on: nothing new in data/events.csv, nothing loaded.
    let out = hakiri(dir.path(), &["run", "events"], &[]).ok().stdout;
    assert!(out.contains("0 rows written"), "{out}");
    assert_eq!(csv("select count(*) from events"), vec!["1000"]);
    assert_eq!(
        csv("select value from hakiri.cursors where pipeline = 'events'"),
        vec!["1000"]
    );
}
