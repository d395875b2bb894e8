//! Exactly once at the end of the list: a token pipeline over an API whose last page hands
//! out no token (the common shape) re-reads that page on the next run and skips the
//! records it already wrote (their hashes are committed with the cursor), whether the
//! source grew, stayed the same, or the run was killed after its last page committed; and
//! a `>=` monotonic append pipeline skips the boundary rows it already loaded.

use crate::support::{Project, Server};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::hakiri_bin;

/// Starts `hakiri run pipeline` `kills` times and SIGKILLs it a seeded random moment (within
/// `window_ms`) after its run began, so every kill lands on a run: in the middle, or after
/// it committed its last page (the window is longer than a run).
fn kill_runs(p: &Project, pipeline: &str, seed: u64, kills: usize, window_ms: u64) -> usize {
    let mut x = seed;
    let db = p.path().join(".hakiri/catalog.db");
    let mut window = window_ms.max(1);
    let mut landed = 0;
    // Kills that land after the run ended prove nothing, so the loop goes on until `kills`
    // of them hit a live run whose row exists; a run that finished first halves the window.
    // Load on the machine changes how long a run takes, never how many kills land.
    for _ in 0..kills * 8 {
        if landed == kills {
            break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let before = loop {
            match started_runs(&db, pipeline) {
                Some(n) => break n,
                None if !db.exists() => break 0,
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let mut child = Command::new(hakiri_bin())
            .current_dir(p.path())
            .args(["run", pipeline])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hakiri run");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut started = false;
        while Instant::now() < deadline {
            if started_runs(&db, pipeline).is_some_and(|n| n > before) {
                started = true;
                break;
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(x % window));
        let alive = child.try_wait().ok().flatten().is_none();
        let _ = child.kill();
        child.wait().expect("reap the killed run");
        if started && alive {
            landed += 1;
        } else {
            window = (window / 2).max(1);
        }
    }
    landed
}

/// Runs of `pipeline` the catalog knows, or None when it cannot be read now (before the
/// catalog exists, or while a writer holds it past the busy timeout). A read error must not
/// look like a new run: the kill would then land before the run row exists, a kill the
/// catalog never sees (the regression behind a flaky partial_failure count under load).
fn started_runs(db: &std::path::Path, pipeline: &str) -> Option<i64> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.busy_timeout(Duration::from_secs(2)).ok()?;
    c.query_row(
        "SELECT count(*) FROM runs WHERE pipeline = ?1",
        [pipeline],
        |r| r.get(0),
    )
    .ok()
}

/// The tables of one API shape over the fixture's growing dataset (ids 1..N), each a
/// token-cursor pipeline `<style>` in append mode.
fn project(server: &Server, size: u32, delay_ms: u32) -> Project {
    Project::new(&format!(
        r#"
[sources.api]
type = "http"
base_url = "{url}"
schema = "id bigint, name text, amount bigint, bucket bigint"

[sources.api.tables.cursor_null]
path = "/cursor_null"
records = "data"
pagination = "cursor"
cursor_path = "next_cursor"
cursor_param = "after"
has_more_path = "has_more"
query = {{ size = "{size}", delay_ms = "{delay_ms}" }}

[sources.api.tables.next_url]
path = "/grow"
records = "items"
pagination = "next_url"
query = {{ size = "{size}", delay_ms = "{delay_ms}", bucket = "1" }}

[sources.api.tables.link_header]
path = "/link_grow"
pagination = "link_header"
query = {{ size = "{size}", delay_ms = "{delay_ms}" }}

[sources.api.tables.page]
path = "/page_grow"
pagination = "page"
page_size = {size}
page_size_param = "size"
query = {{ delay_ms = "{delay_ms}" }}

[pipelines.cursor_null]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.cursor_null SELECT * FROM api.cursor_null"

[pipelines.next_url]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.next_url SELECT * FROM api.next_url"

[pipelines.link_header]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.link_header SELECT * FROM api.link_header"

[pipelines.page]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.page SELECT * FROM api.page"

[pipelines.boundary]
cursor = {{ kind = "monotonic", column = "bucket", initial = "0" }}
sql = "INSERT INTO context.boundary SELECT * FROM api.next_url WHERE bucket >= $cursor"
"#,
        url = server.url()
    ))
}

#[test]
fn token_pipelines_load_each_record_once_however_the_list_ends() {
    let server = Server::paged();
    let p = project(&server, 200, 0);
    // Runs 1..5; the source grows before runs 1, 3 and 5 (by part of a page, then by more
    // than a page), and stays the same before runs 2 and 4.
    let growth = [1000, 0, 130, 0, 450];
    let mut n = 0;
    for (i, grow) in growth.iter().enumerate() {
        if *grow > 0 {
            server.get(&format!("/admin/grow?n={grow}"));
            n += grow;
        }
        for style in ["cursor_null", "next_url", "link_header", "page"] {
            p.hakiri(&["run", style]).ok();
            p.assert_ids_once(style, n, &format!("after run {}", i + 1));
        }
    }
    // The committed state says which records of the last page were written.
    let boundary = p.query_csv(
        "select value, boundary like '{\"rows\":180,%' from hakiri.cursors where pipeline = 'cursor_null'",
    );
    assert_eq!(
        boundary,
        vec!["1400,true"],
        "1580 records in pages of 200 end with 180 after id 1400"
    );
    // A run over an unchanged source reads the last page again and writes nothing.
    let r = p.hakiri(&["run", "cursor_null"]).ok();
    assert!(r.stdout.contains(" 0 rows written"), "{}", r.stdout);
    let skipped = p.query_csv(
        "select rows_read, rows_skipped, rows_written from hakiri.runs where pipeline = 'cursor_null' order by started_at desc limit 1",
    );
    assert_eq!(skipped, vec!["0,180,0"]);
}

#[test]
fn a_rewritten_record_on_the_last_page_is_written_again_with_an_event() {
    let server = Server::paged();
    let p = project(&server, 200, 0);
    server.get("/admin/grow?n=250");
    p.hakiri(&["run", "cursor_null"]).ok();
    // Id 240 (on the last page, already written) changes upstream; 5 records are added.
    server.get("/admin/rewrite?id=240");
    server.get("/admin/grow?n=5");
    p.hakiri(&["run", "cursor_null"]).ok();
    let got = p.query_csv(
        "select count(*), count(distinct id), sum(case when name like 'rewritten%' then 1 else 0 end) from cursor_null",
    );
    assert_eq!(
        got,
        vec!["256,255,1"],
        "each record once, plus the new version of the rewritten one"
    );
    let events = p.query_csv(
        "select message from hakiri.events where kind = 'boundary_changed' and subject = 'cursor_null'",
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("1 of the 50 record(s) written from it before are no longer on it")
            && events[0].contains("6 new or rewritten record(s) were written"),
        "{events:?}"
    );
    // Unchanged from here: nothing more is written.
    p.hakiri(&["run", "cursor_null"]).ok();
    assert_eq!(p.query_csv("select count(*) from cursor_null"), vec!["256"]);
}

#[test]
fn token_pipelines_with_a_null_last_token_survive_kills_after_the_last_page() {
    let server = Server::paged();
    let p = project(&server, 25, 30);
    let mut n = 0;
    // 21 seeded SIGKILLs per pipeline in 4 rounds; between rounds the source grows and a
    // run completes, so later kills land on runs that re-read a committed last page.
    for (round, seed) in [
        0x9E37_79B9_7F4A_7C15u64,
        0xD1B5_4A32_D192_ED03,
        0x2545_F491_4F6C_DD1D,
        0x5851_F42D_4C95_7F2D,
    ]
    .iter()
    .enumerate()
    {
        server.get("/admin/grow?n=240");
        n += 240;
        for style in ["cursor_null", "next_url"] {
            let kills = if round == 0 { 8 } else { 3 };
            let landed = kill_runs(&p, style, *seed, kills, 600);
            assert_eq!(landed, kills, "{style}: kills that hit a running run");
            p.hakiri(&["run", style]).ok();
            p.assert_ids_once(style, n, &format!("after round {}", round + 1));
            // Killed right after its last page committed: the next run writes nothing.
            kill_runs(&p, style, *seed ^ 0xFF, 1, 400);
            p.hakiri(&["run", style]).ok();
            p.assert_ids_once(style, n, &format!("after round {}'s extra runs", round + 1));
        }
    }
    let killed =
        p.query_csv("select count(*) >= 10 from hakiri.runs where status = 'partial_failure'");
    assert_eq!(
        killed,
        vec!["true"],
        "most of the kills must land on running runs: {:?}",
        p.query_csv(
            "select pipeline, status, count(*) from hakiri.runs group by 1, 2 order by 1, 2"
        )
    );
    let db = rusqlite::Connection::open(p.path().join(".hakiri/catalog.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_ge_monotonic_append_pipeline_skips_the_boundary_rows_it_loaded() {
    let server = Server::paged();
    let p = project(&server, 100, 0);
    // 50 records share each bucket value; every growth ends mid-bucket, so each run
    // re-reads a bucket that is partly loaded and partly new.
    let mut n = 0;
    for grow in [120, 0, 75, 3] {
        if grow > 0 {
            server.get(&format!("/admin/grow?n={grow}"));
            n += grow;
        }
        p.hakiri(&["run", "boundary"]).ok();
        p.assert_ids_once("boundary", n, "after a run");
    }
    let last = p.query_csv(
        "select cursor_start, cursor_end, rows_skipped, rows_written from hakiri.runs where pipeline = 'boundary' order by started_at desc limit 1",
    );
    // 198 records: bucket 3 holds ids 151..198, 45 loaded before and 3 new.
    assert_eq!(last, vec!["3,3,45,3"]);
}

#[test]
fn a_backfill_window_reloads_that_window_once_per_key_and_is_an_event() {
    let server = Server::paged();
    server.get("/admin/grow?n=300");
    let p = Project::new(&format!(
        r#"
[sources.api]
type = "http"
base_url = "{}"
tables.grow = {{ path = "/grow", records = "items", pagination = "next_url", query = {{ size = "50" }}, schema = "id bigint, name text, amount bigint" }}

[pipelines.merged]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
mode = "merge"
key = ["id"]
sql = "INSERT INTO context.merged SELECT * FROM api.grow WHERE id > $cursor"

[pipelines.appended]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.appended SELECT * FROM api.grow WHERE id > $cursor"
"#,
        server.url()
    ));
    p.hakiri(&["run", "merged"]).ok();
    // Ids 101..200 are fixed upstream; the backfill reads exactly that window again.
    server.get("/admin/rewrite?id=150");
    let r = p
        .hakiri(&["run", "merged", "--from", "100", "--to", "200"])
        .ok();
    assert!(r.stdout.contains("100 rows written"), "{}", r.stdout);
    let got = p.query_csv(
        "select count(*), count(distinct id), sum(case when name = 'rewritten150' then 1 else 0 end) from merged",
    );
    assert_eq!(
        got,
        vec!["300,300,1"],
        "one row per key, the fixed one updated"
    );
    // The committed cursor did not move back.
    assert_eq!(
        p.query_csv("select value from hakiri.cursors where pipeline = 'merged'"),
        vec!["300"]
    );
    let events = p.query_csv(
        "select message from hakiri.events where kind = 'backfill' and subject = 'merged'",
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("backfill from '100' to '200' by user")
            && events[0].contains("the committed cursor stays '300'"),
        "{events:?}"
    );
    // An append pipeline would load the window twice: refused, saying why.
    p.hakiri(&["run", "appended"]).ok();
    let r = p.hakiri(&["run", "appended", "--from", "100"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot be backfilled in MODE APPEND"),
        "{}",
        r.stderr
    );
    assert_eq!(p.query_csv("select count(*) from appended"), vec!["300"]);
}
