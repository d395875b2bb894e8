//! The projects in `examples/` run as shipped, against real local servers; and each one's
//! JSON twin declares the same pipelines (identical `SHOW CREATE PIPELINE`).

use std::path::Path;

use crate::support::{PgCluster, Run, Server, copy_dir, hakiri, repo_root};

/// A copy of `examples/<name>` in a temporary folder (the example stays clean).
fn copy_example(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("examples").join(name), dir.path());
    dir
}

fn csv(dir: &Path, sql: &str, env: &[(&str, &str)]) -> Vec<String> {
    let r = hakiri(dir, &["query", "--format", "csv", sql], env).ok();
    r.stdout.lines().skip(1).map(str::to_string).collect()
}

fn run(dir: &Path, env: &[(&str, &str)]) -> Run {
    hakiri(dir, &["run", "--all"], env).ok()
}

#[test]
fn the_files_example_loads_each_order_once() {
    let p = copy_example("files");
    let out = run(p.path(), &[]).stdout;
    assert!(out.contains("5 rows written"), "{out}");
    std::fs::write(
        p.path().join("data/orders/2026-11-04.csv"),
        "id,customer,amount,ordered_at\n6,ken,1.00,2026-11-04T08:00:00Z\n",
    )
    .unwrap();
    let out = run(p.path(), &[]).stdout;
    assert!(out.contains("1 rows written"), "{out}");
    assert_eq!(
        csv(
            p.path(),
            "select count(*), count(distinct id), sum(id) from orders",
            &[]
        ),
        vec!["6,6,21"]
    );
}

#[test]
fn the_rest_api_example_resumes_with_the_token() {
    let api = Server::paged();
    api.get("/admin/grow?n=230");
    let p = copy_example("rest-api");
    let url = api.url();
    let env = [("HAKIRI_EXAMPLE_API_URL", url.as_str())];
    let out = run(p.path(), &env).stdout;
    assert!(out.contains("230 rows written"), "{out}");
    api.get("/admin/grow?n=70");
    let out = run(p.path(), &env).stdout;
    assert!(out.contains("70 rows written"), "{out}");
    assert_eq!(
        csv(
            p.path(),
            "select count(*), count(distinct id), sum(id) from items",
            &env
        ),
        vec!["300,300,45150"]
    );
}

#[test]
fn the_postgres_snapshot_example_replaces_on_change_only() {
    let pg = PgCluster::start();
    let p = copy_example("postgres-snapshot");
    pg.psql(&std::fs::read_to_string(p.path().join("schema.sql")).unwrap());
    let url = pg.url();
    let env = [
        ("HAKIRI_EXAMPLE_PG_URL", url.as_str()),
        ("HAKIRI_EXAMPLE_PGPASSWORD", PgCluster::PASSWORD),
    ];
    let out = run(p.path(), &env).stdout;
    assert!(out.contains("3 rows written"), "{out}");
    let out = run(p.path(), &env).stdout;
    assert!(out.contains("skipped"), "unchanged source: {out}");
    pg.psql("UPDATE products SET price = 9.00 WHERE id = 3");
    let out = run(p.path(), &env).stdout;
    assert!(out.contains("3 rows written"), "{out}");
    assert_eq!(
        csv(p.path(), "select price from products where id = 3", &env),
        vec!["9.00"]
    );
}

/// A JSON manifest and its TOML twin give identical `SHOW CREATE PIPELINE` output for every
/// pipeline of every example.
#[test]
fn json_twins_of_the_examples_show_the_same_pipelines() {
    let env = [
        ("HAKIRI_EXAMPLE_PGPASSWORD", "unused"),
        ("HAKIRI_EXAMPLE_API_URL", "http://127.0.0.1:9"),
    ];
    let mut compared = 0;
    for name in ["files", "rest-api", "postgres-snapshot"] {
        let toml_dir = copy_example(name);
        let json_dir = copy_example(name);
        let text = std::fs::read_to_string(toml_dir.path().join("hakiri.toml")).unwrap();
        let table: toml::Table = text.parse().unwrap();
        std::fs::remove_file(json_dir.path().join("hakiri.toml")).unwrap();
        std::fs::write(
            json_dir.path().join("hakiri.json"),
            serde_json::to_string_pretty(&table).unwrap(),
        )
        .unwrap();
        let pipelines = table["pipelines"].as_table().unwrap();
        for pipeline in pipelines.keys() {
            let sql = format!("SHOW CREATE PIPELINE {pipeline}");
            let from_toml = csv(toml_dir.path(), &sql, &env);
            let from_json = csv(json_dir.path(), &sql, &env);
            assert!(
                from_toml.concat().contains("CREATE PIPELINE"),
                "{from_toml:?}"
            );
            assert_eq!(from_toml, from_json, "{name}: pipeline {pipeline}");
            compared += 1;
        }
    }
    assert!(compared >= 3);
}
