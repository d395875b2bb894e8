//! Keeping the store in shape: `hakiri context compact` (1000 small appends merged, results
//! unchanged, a query running meanwhile completes, seeded SIGKILLs mid-compaction leave the
//! table as before), `DROP CONTEXT TABLE` and `hakiri context prune`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Project, hakiri_bin};

const MANIFEST: &str = r#"
[sources.files]
type = "file"
tables.orders.path = "data/orders.csv"

[pipelines.orders]
sql = "INSERT INTO context.orders SELECT id, customer, amount FROM files.orders"
"#;

/// The queries whose answers must not change: totals, a group-by, the lineage columns and
/// an ordered sample of whole rows.
const CHECKS: &[&str] = &[
    "select count(*), sum(amount), sum(id * amount), count(distinct _hakiri_run_id) from context.orders",
    "select customer, count(*), sum(amount) from context.orders group by customer order by customer",
    "select id, customer, amount, _hakiri_run_id from context.orders order by _hakiri_run_id, id limit 5 offset 123456",
];

fn answers(p: &Project) -> Vec<Vec<String>> {
    CHECKS.iter().map(|q| p.query_csv(q)).collect()
}

fn orders_csv(p: &Project) {
    let mut csv = String::from("id,customer,amount\n");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        csv.push_str(&format!("{i},c{},{}\n", i % 37, x % 1000));
    }
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/orders.csv"), csv).unwrap();
}

fn live_files(p: &Project) -> u64 {
    p.query_csv("select files from hakiri.tables where name = 'orders'")[0]
        .parse()
        .unwrap()
}

/// Runs of `compact:orders` the catalog knows (None while it cannot be read).
fn compaction_runs(p: &Project) -> Option<i64> {
    let db = p.path().join(".hakiri/catalog.db");
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.busy_timeout(Duration::from_secs(2)).ok()?;
    c.query_row(
        "SELECT count(*) FROM runs WHERE pipeline = 'compact:orders'",
        [],
        |r| r.get(0),
    )
    .ok()
}

#[test]
fn compaction_merges_1000_appends_without_changing_answers_or_losing_anything_to_kills() {
    let p = Project::new(MANIFEST);
    orders_csv(&p);
    // 1000 appends of 1000 rows, one file each.
    let runs = vec!["RUN PIPELINE orders"; 1000].join("; ");
    p.hakiri(&["sql", "-c", &runs]).ok();
    assert_eq!(live_files(&p), 1000);
    let before = answers(&p);
    assert!(
        before[0][0].starts_with("1000000,") && before[0][0].ends_with(",1000"),
        "{before:?}"
    );

    // Seeded SIGKILLs while a compaction writes its files (2 MiB groups, so a kill lands
    // between finished, uncommitted files as well as inside one).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut landed = 0;
    for _ in 0..20 {
        if landed == 4 {
            break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let known = compaction_runs(&p).unwrap_or(0);
        let mut child = Command::new(hakiri_bin())
            .current_dir(p.path())
            .args(["context", "compact", "orders", "--target-mb", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while compaction_runs(&p).is_none_or(|n| n == known) && Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(x % 120));
        let alive = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        child.wait().unwrap();
        if !alive {
            // It finished first: the table is compacted, there is nothing left to kill.
            assert!(live_files(&p) < 1000);
            break;
        }
        landed += 1;
        // All or nothing: the table is as before, and its answers too.
        assert_eq!(
            live_files(&p),
            1000,
            "a killed compaction committed nothing"
        );
        assert_eq!(answers(&p), before, "after kill {landed}");
    }
    assert!(landed >= 3, "only {landed} kills landed mid-compaction");
    // The killed compactions are recorded as such; what they wrote was swept.
    let killed = p.query_csv(
        "select count(*) from hakiri.runs where pipeline = 'compact:orders' and status = 'partial_failure'",
    );
    assert_eq!(killed, vec![landed.to_string()]);
    let on_disk = std::fs::read_dir(p.path().join(".hakiri/store/orders"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count();
    let known = p.query_csv("select count(*) from hakiri.files where table_name = 'orders'");
    assert_eq!(vec![on_disk.to_string()], known, "no orphan files left");

    // A query running while the compaction commits completes with the same answer.
    let query = Command::new(hakiri_bin())
        .current_dir(p.path())
        .args(["query", "--format", "csv", CHECKS[1]])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let out = p.hakiri(&["context", "compact"]).ok().stdout;
    assert!(
        out.contains("orders: 1000 files -> 1 files (1000000 rows rewritten)"),
        "{out}"
    );
    let q = query.wait_with_output().unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert_eq!(lines, before[1], "the concurrent query's answer");

    assert_eq!(live_files(&p), 1);
    assert_eq!(answers(&p), before, "after the compaction");
    let event = p.query_csv("select message from hakiri.events where kind = 'table_compacted'");
    assert_eq!(
        event,
        vec!["1000 files merged into 1 (1000000 rows); the table has 1 files"]
    );
    // Appends go on after it, and a second compaction merges them.
    p.hakiri(&["sql", "-c", "RUN PIPELINE orders; RUN PIPELINE orders"])
        .ok();
    assert_eq!(live_files(&p), 3);
    let out = p
        .hakiri(&["context", "compact", "orders", "--sort-by", "customer,id"])
        .ok()
        .stdout;
    assert!(out.contains("3 files -> 1 files"), "{out}");
    assert_eq!(
        p.query_csv("select count(*), count(distinct _hakiri_run_id) from context.orders"),
        vec!["1002000,1002"]
    );
    // Sorted: the merged file holds its rows by customer, then id (read in file order by
    // DuckDB).
    let file = p.query_csv("select path from hakiri.files where retired_at is null");
    let path = p.path().join(".hakiri/store").join(&file[0]);
    let out = Command::new(crate::support::venv_bin("python3"))
        .args([
            "-c",
            "import duckdb, sys; rows = duckdb.sql(f\"select customer, id from read_parquet('{sys.argv[1]}')\").fetchall(); print(len(rows), rows == sorted(rows))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1002000 True");
    // A table that is not there is named in the error.
    let r = p.hakiri(&["context", "compact", "nope"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("there is no context table 'nope' (tables: orders)"),
        "{}",
        r.stderr
    );
}

#[test]
fn drop_context_table_and_prune() {
    let p = Project::new(&format!(
        "{MANIFEST}\n[retention]\nruns = \"1 second\"\nevents = \"1 second\"\n"
    ));
    orders_csv(&p);
    p.hakiri(&[
        "sql",
        "-c",
        "RUN PIPELINE orders; RUN PIPELINE orders; RUN PIPELINE orders",
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(1100));
    let out = p.hakiri(&["context", "prune"]).ok().stdout;
    assert!(out.contains("pruned 2 run(s)"), "{out}");
    assert_eq!(
        p.query_csv("select count(*) from hakiri.runs where pipeline = 'orders'"),
        vec!["1"],
        "the latest run is kept"
    );

    let out = p
        .hakiri(&["sql", "-c", "DROP CONTEXT TABLE context.orders"])
        .ok()
        .stdout;
    assert!(
        out.contains("context table orders dropped (3 files"),
        "{out}"
    );
    assert_eq!(p.query_csv("select count(*) from hakiri.tables"), vec!["0"]);
    let r = p.hakiri(&["sql", "-c", "SELECT count(*) FROM context.orders"]);
    assert_ne!(r.code, 0, "the table is gone");
    let r = p.hakiri(&["sql", "-c", "DROP CONTEXT TABLE orders"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("there is no context table 'orders'"),
        "{}",
        r.stderr
    );
    p.hakiri(&["sql", "-c", "DROP CONTEXT TABLE IF EXISTS orders"])
        .ok();
    // The pipeline loads it again from the start.
    p.hakiri(&["run", "orders"]).ok();
    assert_eq!(
        p.query_csv("select count(*) from context.orders"),
        vec!["1000"]
    );
}
