//! Faults injected by name, the same for every connector: a full disk under the project,
//! HTTP bodies cut or stalled and connections reset (tests/fixtures/paged_server.py's
//! `/fault/<name>` endpoints), a Postgres backend killed mid-COPY, an S3 read failing
//! half-way. Each one is retried where a retry is safe, or fails the run cleanly: nothing
//! partial is committed, the catalog stays intact and the next run loads exactly the
//! source.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Project, Server};

pub(crate) fn assert_catalog_intact(dir: &Path) {
    let db = rusqlite::Connection::open(dir.join(".hakiri/catalog.db")).expect("open catalog");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}

/// A tmpfs mounted on a fresh folder, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`"8m"`); `None`, with the reason printed, where mounting
    /// is refused (not root, no CAP_SYS_ADMIN).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: mounting a tmpfs was refused ({}); the full-disk test needs root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system at `filler`'s folder until a write fails, then gives `free`
/// bytes back, so about `free` bytes are left.
fn fill_leaving(filler: &Path, free: u64) {
    let mut f = std::fs::File::create(filler).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    let _ = f.sync_all();
    f.set_len(written.saturating_sub(free)).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_full_disk_fails_the_run_cleanly_at_every_point_and_the_next_run_is_exact() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let server = Server::paged();
    server.get("/admin/grow?n=3000");
    let root: PathBuf = fs.path().join("project");
    std::fs::create_dir_all(&root).unwrap();
    let manifest = format!(
        r#"
[sources.api]
type = "http"
base_url = "{}"
tables.grow = {{ path = "/grow", records = "items", pagination = "next_url", query = {{ size = "500" }}, schema = "id bigint, name text, amount bigint" }}

[pipelines.grow]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.grow SELECT * FROM api.grow WHERE id > $cursor"
"#,
        server.url()
    );
    std::fs::write(root.join("hakiri.toml"), manifest).unwrap();
    let run = |args: &[&str]| crate::support::hakiri(&root, args, &[]);
    let count = || -> Vec<String> {
        let r = run(&[
            "query",
            "--format",
            "csv",
            "select count(*) from hakiri.files",
        ])
        .ok();
        r.stdout.lines().skip(1).map(str::to_string).collect()
    };
    assert_eq!(count(), vec!["0"]);
    let filler = fs.path().join("filler");
    // Free space from none to more than the run needs, 8 KiB at a time: the run fails
    // while writing Parquet, then while committing, then succeeds.
    let mut failures = Vec::new();
    let mut succeeded = false;
    for free in (0..=512 * 1024).step_by(8 * 1024) {
        fill_leaving(&filler, free);
        let r = run(&["run", "grow"]);
        std::fs::remove_file(&filler).unwrap();
        assert_catalog_intact(&root);
        if r.code == 0 {
            succeeded = true;
            break;
        }
        let says_full = r.stderr.contains("no space left on the disk holding")
            || r.stderr
                .contains("the disk holding .hakiri/catalog.db is full")
            || r.stderr
                .contains("the disk holding .hakiri/catalog.db may be full")
            || r.stderr.contains("No space left on device");
        assert!(says_full, "{free} bytes free: {}", r.stderr);
        if r.stderr.contains(" failed: ") {
            assert!(
                r.stderr.contains("nothing from this run was committed"),
                "{}",
                r.stderr
            );
        }
        // Nothing partial: no file committed, and the next command cleans up.
        assert_eq!(
            count(),
            vec!["0"],
            "{free} bytes free: a file was committed"
        );
        failures.push(r.stderr);
    }
    assert!(
        succeeded,
        "no run succeeded with 512 KiB free: {failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|e| e.contains("while writing Parquet") || e.contains("while closing Parquet")),
        "no failure while writing Parquet: {failures:?}"
    );
    let out = run(&[
        "query",
        "--format",
        "csv",
        "select count(*), count(distinct id), sum(id) from grow",
    ])
    .ok();
    assert_eq!(
        out.stdout.lines().nth(1),
        Some(format!("3000,3000,{}", 3000 * 3001 / 2).as_str())
    );
    // Nothing left behind: every file in the store is one the catalog names.
    let named = run(&[
        "query",
        "--format",
        "csv",
        "select count(*) from hakiri.files",
    ])
    .ok();
    let on_disk = std::fs::read_dir(root.join(".hakiri/store/grow"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count();
    assert_eq!(
        named.stdout.lines().nth(1),
        Some(on_disk.to_string().as_str())
    );
}

/// A project whose table `t` reads `/fault/<fault>` (page 2 failing as the fault says,
/// `times` times) with a monotonic append pipeline `mono` and a token pipeline `tok`.
fn fault_project(server: &Server, fault: &str, times: i32, extra: &str) -> Project {
    Project::new(&format!(
        r#"
[sources.api]
type = "http"
base_url = "{}"
retry_backoff_ms = "50"
{extra}

[sources.api.tables.t]
path = "/fault/{fault}"
records = "items"
pagination = "next_url"
query = {{ size = "50", times = "{times}", stall_ms = "3000" }}
schema = "id bigint, name text, amount bigint"

[pipelines.mono]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.mono SELECT * FROM api.t WHERE id > $cursor"

[pipelines.tok]
cursor = {{ kind = "token" }}
checkpoint_pages = 1
sql = "INSERT INTO context.tok SELECT * FROM api.t"
"#,
        server.url()
    ))
}

#[test]
fn cut_and_reset_connections_and_stalled_bodies_are_retried() {
    let server = Server::paged();
    server.get("/admin/grow?n=200");
    for (fault, extra) in [
        ("cut_body", ""),
        ("reset_before_headers", ""),
        // The per-request timeout covers the whole body: a body stalled for 3 s times out.
        ("stall_body", "timeout_ms = \"700\""),
    ] {
        server.get("/admin/reset_faults");
        // Page 2 fails twice, then answers: each pipeline retries it and loads everything.
        let p = fault_project(&server, fault, 2, extra);
        for pipeline in ["mono", "tok"] {
            p.hakiri(&["run", pipeline]).ok();
            p.assert_ids_once(pipeline, 200, fault);
            server.get("/admin/reset_faults");
        }
        let faults = server.get("/admin/faults");
        assert!(faults.contains(fault) || faults.contains("{}"), "{faults}");
    }
}

#[test]
fn a_fault_past_the_retries_fails_the_run_cleanly_and_the_next_run_is_exact() {
    let server = Server::paged();
    server.get("/admin/grow?n=200");
    for (fault, extra, says) in [
        ("cut_body", "", "the response body was cut short"),
        ("reset_before_headers", "", "GET "),
        (
            "stall_body",
            "timeout_ms = \"500\"",
            "reading the response body timed out",
        ),
        ("malformed_json", "", "is not valid JSON"),
        ("error_500", "", "500 Internal Server Error"),
    ] {
        server.get("/admin/reset_faults");
        // Always failing: the monotonic run commits nothing; the token run keeps page 1.
        let p = fault_project(&server, fault, -1, &format!("max_retries = \"1\"\n{extra}"));
        let r = p.hakiri(&["run", "mono"]);
        assert_ne!(r.code, 0, "{fault}");
        assert!(r.stderr.contains(says), "{fault}: {}", r.stderr);
        assert!(
            r.stderr.contains("nothing from this run was committed"),
            "{fault}: {}",
            r.stderr
        );
        assert_eq!(p.query_csv("select count(*) from hakiri.files"), vec!["0"]);
        let r = p.hakiri(&["run", "tok"]);
        assert_ne!(r.code, 0, "{fault}");
        assert!(
            r.stderr
                .contains("committed checkpoint(s) with 50 rows stay"),
            "{fault}: {}",
            r.stderr
        );
        assert_catalog_intact(p.path());
        // The upstream is fixed: the next runs load exactly the source, the token run
        // resuming at page 2.
        server.get("/admin/faults_off");
        p.hakiri(&["run", "mono"]).ok();
        p.assert_ids_once("mono", 200, fault);
        p.hakiri(&["run", "tok"]).ok();
        p.assert_ids_once("tok", 200, fault);
        let runs = p
            .query_csv("select status from hakiri.runs where pipeline = 'tok' order by started_at");
        assert_eq!(runs, vec!["failed", "succeeded"], "{fault}");
    }
}

#[test]
fn a_postgres_backend_killed_mid_copy_fails_the_run_cleanly_and_the_next_run_is_exact() {
    use crate::support::PgCluster;
    const ROWS: u64 = 400_000;
    let pg = PgCluster::start();
    pg.psql(&format!(
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, amount bigint);
         INSERT INTO events SELECT i, 'k' || (i % 7), i * 3 FROM generate_series(1, {ROWS}) AS i;
         -- A COPY of the view lasts seconds (a pause every 20000 rows), however fast the
         -- machine: long enough to be caught in the middle.
         CREATE FUNCTION slow(i bigint) RETURNS bigint AS $$
         BEGIN IF i % 20000 = 0 THEN PERFORM pg_sleep(0.2); END IF; RETURN i; END $$ LANGUAGE plpgsql;
         CREATE VIEW slow_events AS SELECT slow(id) AS id, kind, amount FROM events"
    ));
    let p = Project::new(&format!(
        r#"
[sources.pg]
type = "postgres"
url = "{}"
password = "env:HAKIRI_TEST_PGPASSWORD"

[pipelines.ev]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.ev SELECT * FROM pg.slow_events WHERE id > $cursor"
"#,
        pg.url()
    ));
    let env = [("HAKIRI_TEST_PGPASSWORD", PgCluster::PASSWORD)];
    // Start the run, and terminate its backend as soon as it is in the middle of a COPY.
    let mut killed = false;
    for _attempt in 0..3 {
        let mut cmd = Command::new(crate::support::hakiri_bin());
        cmd.current_dir(p.path())
            .args(["run", "ev"])
            .env(env[0].0, env[0].1)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let n = pg.psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'COPY %' AND pid <> pg_backend_pid()",
            );
            if n.trim() == "1" {
                killed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if killed {
            assert!(!out.status.success(), "the killed run succeeded: {stderr}");
            assert!(
                stderr.contains("nothing from this run was committed"),
                "{stderr}"
            );
            break;
        }
        // The run finished before its COPY was seen: start again from an empty table.
        std::fs::remove_dir_all(p.path().join(".hakiri")).unwrap();
    }
    assert!(killed, "no run was caught in the middle of its COPY");
    assert_catalog_intact(p.path());
    let files = crate::support::hakiri(
        p.path(),
        &[
            "query",
            "--format",
            "csv",
            "select count(*) from hakiri.files",
        ],
        &env,
    )
    .ok();
    assert_eq!(files.stdout.lines().nth(1), Some("0"));
    crate::support::hakiri(p.path(), &["run", "ev"], &env).ok();
    let got = crate::support::hakiri(
        p.path(),
        &[
            "query",
            "--format",
            "csv",
            "select count(*), count(distinct id), sum(id) from ev",
        ],
        &env,
    )
    .ok();
    assert_eq!(
        got.stdout.lines().nth(1),
        Some(format!("{ROWS},{ROWS},{}", ROWS * (ROWS + 1) / 2).as_str())
    );
}

#[test]
fn an_s3_object_read_failing_half_way_loads_nothing_partial_and_the_next_run_is_exact() {
    use crate::support::S3Server;
    const ROWS: u64 = 60_000;
    let s3 = S3Server::start();
    s3.create_bucket("drops");
    let mut csv = String::from("id,kind,amount\n");
    for id in 1..=ROWS {
        csv.push_str(&format!("{id},k{},{}\n", id % 5, id * 3));
    }
    s3.put("drops", "incoming/big.csv", csv.as_bytes());
    // The proxy cuts the first two reads of big.csv half-way through the body.
    let target = s3.endpoint().trim_start_matches("http://").to_string();
    let proxy = Server::fixture_with(
        "cut_proxy.py",
        &["--target", &target, "--cut", "big.csv", "--times", "2"],
    );
    let p = Project::new(&format!(
        r#"
[sources.lake]
type = "s3"
endpoint = "{}"
bucket = "drops"
access_key_id = "env:TEST_S3_KEY_ID"
secret_access_key = "env:TEST_S3_SECRET"
tables.events.path = "incoming/"
tables.events.format = "csv"

[pipelines.events]
cursor = {{ kind = "token" }}
sql = "INSERT INTO context.events SELECT * FROM lake.events"
"#,
        proxy.url()
    ));
    let keys = [
        ("TEST_S3_KEY_ID", "hakiri-test"),
        ("TEST_S3_SECRET", "not-a-real-secret"),
    ];
    let first = crate::support::hakiri(p.path(), &["run", "events"], &keys);
    let cuts = proxy.get("/__proxy/cuts");
    assert_ne!(cuts.trim(), "0", "the proxy cut no read");
    if first.code != 0 {
        // Not retried: the run failed cleanly, with nothing of the object committed.
        assert!(
            first.stderr.contains("nothing from this run was committed")
                || first.stderr.contains("committed checkpoint(s)"),
            "{}",
            first.stderr
        );
        let rows = crate::support::hakiri(
            p.path(),
            &[
                "query",
                "--format",
                "csv",
                "select coalesce(sum(rows), 0) from hakiri.files",
            ],
            &keys,
        )
        .ok();
        assert_eq!(
            rows.stdout.lines().nth(1),
            Some("0"),
            "partial rows committed"
        );
        assert_catalog_intact(p.path());
    }
    // Run until the proxy has cut all it will: the table then holds the object once.
    for _ in 0..3 {
        crate::support::hakiri(p.path(), &["run", "events"], &keys);
    }
    crate::support::hakiri(p.path(), &["run", "events"], &keys).ok();
    let got = crate::support::hakiri(
        p.path(),
        &[
            "query",
            "--format",
            "csv",
            "select count(*), count(distinct id), sum(id) from events",
        ],
        &keys,
    )
    .ok();
    assert_eq!(
        got.stdout.lines().nth(1),
        Some(format!("{ROWS},{ROWS},{}", ROWS * (ROWS + 1) / 2).as_str())
    );
}
