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
    let expected = std::fs::read_to_string(dir.path().join("state_rows.txt")).unwrap();
    let expected: Vec<(&str, &str)> = expected
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert!(expected.len() >= 11, "{expected:?}");
    for (table, rows) in expected {
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
