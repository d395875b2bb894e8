//! Kill-at-random: `hakiri run` is killed with SIGKILL at seeded random moments during a
//! slow multi-page run (tests/fixtures/paged_server.py adds a delay per page), then run to
//! completion. The table must equal the source exactly, the catalog must be intact, killed
//! runs must show `partial_failure` and no orphan file may remain.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Moments, PgCluster, Project, Server, hakiri_bin};
use serde_json::Value;

const ROWS: u64 = 1500;

/// Starts `hakiri run pipeline` `kills` times and SIGKILLs it at a random moment.
fn kill_at_random(p: &Project, pipeline: &str, seed: u64, kills: usize, window_ms: (u64, u64)) {
    let mut moments = Moments(seed);
    for _ in 0..kills {
        let mut child = Command::new(hakiri_bin())
            .current_dir(p.path())
            .args(["run", pipeline])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hakiri run");
        std::thread::sleep(Duration::from_millis(
            moments.next_ms(window_ms.0, window_ms.1),
        ));
        // SIGKILL: no destructor, no cleanup, like a power cut for the process.
        let _ = child.kill();
        child.wait().expect("reap the killed run");
    }
}

/// What every crash test checks once the pipeline has run to completion.
fn assert_intact(p: &Project, table: &str) -> Vec<(String, Option<String>)> {
    assert_intact_in(p, table, None)
}

/// The same with the catalog in `pg` (schema `crash`) when given, read with psql.
fn assert_intact_in(
    p: &Project,
    table: &str,
    pg: Option<&PgCluster>,
) -> Vec<(String, Option<String>)> {
    let rows = p.query_csv(&format!(
        "select count(*), count(distinct id), min(id), max(id), sum(id) from {table}"
    ));
    assert_eq!(
        rows,
        vec![format!("{ROWS},{ROWS},1,{ROWS},{}", ROWS * (ROWS + 1) / 2)],
        "the table must hold every source row exactly once"
    );
    let runs: Vec<(String, Option<String>)> = match pg {
        None => {
            let db = rusqlite::Connection::open(p.path().join(".hakiri/catalog.db"))
                .expect("open catalog");
            let check: String = db
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .expect("integrity_check");
            assert_eq!(check, "ok");
            let mut stmt = db
                .prepare("SELECT status, cursor_start FROM runs ORDER BY started_at, rowid")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
        Some(pg) => pg
            .psql("SELECT status, coalesce(cursor_start, '<null>') FROM crash.runs ORDER BY started_at, seq")
            .lines()
            .map(|l| {
                let (status, start) = l.split_once('|').expect("status|cursor_start");
                (status.to_string(), (start != "<null>").then(|| start.to_string()))
            })
            .collect(),
    };
    let killed = runs.iter().filter(|(s, _)| s == "partial_failure").count();
    assert!(
        killed >= 8,
        "only {killed} runs were killed while running: {runs:?}"
    );
    assert!(
        runs.iter()
            .all(|(s, _)| s == "partial_failure" || s == "succeeded"),
        "{runs:?}"
    );
    assert_eq!(runs.last().map(|r| r.0.as_str()), Some("succeeded"));
    // No orphans: the files on disk are exactly the ones the catalog names.
    let named: BTreeSet<String> = p
        .query_csv("select path from hakiri.files")
        .into_iter()
        .collect();
    let mut on_disk = BTreeSet::new();
    collect_files(
        &p.path().join(".hakiri/store"),
        &p.path().join(".hakiri/store"),
        &mut on_disk,
    );
    assert_eq!(on_disk, named, "files on disk vs files in the catalog");
    runs
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else {
            out.insert(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// A monotonic pipeline over the fixture's slow paged `/grow` (25 records a page, 20 ms each).
fn grow_manifest(server: &Server) -> String {
    format!(
        r#"
[sources.api]
type = "http"
base_url = "{}"

[sources.api.tables.grow]
path = "/grow"
records = "items"
pagination = "next_url"
query = {{ size = "25", delay_ms = "20" }}
filter = {{ id = "since_id" }}
schema = "id bigint, name text, amount bigint"

[pipelines.grow]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.grow SELECT * FROM api.grow WHERE id > $cursor"
"#,
        server.url()
    )
}

#[test]
fn monotonic_pipeline_survives_kills_at_random_moments() {
    let server = Server::paged();
    server.get(&format!("/admin/grow?n={ROWS}"));
    let p = Project::new(&grow_manifest(&server));
    kill_at_random(&p, "grow", 0x9E37_79B9_7F4A_7C15, 22, (40, 1200));
    p.hakiri(&["run", "grow"]).ok();
    assert_intact(&p, "grow");
}

/// The same with the catalog in PostgreSQL (`[catalog] url`): a SIGKILL drops the
/// connection mid-transaction, the server rolls it back, and the next run takes over.
#[test]
fn monotonic_pipeline_with_a_postgres_catalog_survives_kills() {
    let pg = PgCluster::start();
    let server = Server::paged();
    server.get(&format!("/admin/grow?n={ROWS}"));
    let p = Project::new(&format!(
        "[catalog]\nurl = \"postgres://hakiri:{}@127.0.0.1:{}/postgres?sslmode=disable\"\nschema = \"crash\"\n{}",
        PgCluster::PASSWORD,
        pg.port,
        grow_manifest(&server)
    ));
    kill_at_random(&p, "grow", 0x2545_F491_4F6C_DD1D, 22, (40, 1200));
    p.hakiri(&["run", "grow"]).ok();
    assert_intact_in(&p, "grow", Some(&pg));
    assert!(!p.path().join(".hakiri/catalog.db").exists());
    // The table's totals the catalog keeps agree with its files.
    assert_eq!(
        pg.psql("SELECT rows, files FROM crash.tables WHERE name = 'grow'")
            .trim(),
        format!(
            "{ROWS}|{}",
            p.query_csv("select count(*) from hakiri.files")[0]
        )
    );
}

#[test]
fn token_pipeline_survives_kills_and_resumes_where_it_stopped() {
    let server = Server::paged();
    server.get(&format!("/admin/grow?n={ROWS}"));
    let p = Project::new(&format!(
        r#"
[sources.api]
type = "http"
base_url = "{}"

[sources.api.tables.feed]
path = "/feed"
records = "items"
pagination = "cursor"
cursor_path = "next_cursor"
cursor_param = "after"
has_more_path = "has_more"
query = {{ size = "25", delay_ms = "40" }}
schema = "id bigint, name text, amount bigint"

[pipelines.feed]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.feed SELECT * FROM api.feed"
"#,
        server.url()
    ));
    kill_at_random(&p, "feed", 0xD1B5_4A32_D192_ED03, 22, (40, 500));
    p.hakiri(&["run", "feed"]).ok();
    let runs = assert_intact(&p, "feed");

    // Resumed runs started from their committed token, not from the first page: only runs
    // with no committed token yet asked for the first page (a request without `after`).
    let requests: Vec<Value> = serde_json::from_str(&server.get("/admin/log?path=/feed")).unwrap();
    let first_page_requests = requests
        .iter()
        .filter(|r| r["query"]["after"].is_null())
        .count();
    let fresh_runs = runs.iter().filter(|(_, start)| start.is_none()).count();
    assert!(
        first_page_requests <= fresh_runs,
        "{first_page_requests} first-page requests for {fresh_runs} runs without a token"
    );
    let resumed: Vec<&String> = runs
        .iter()
        .filter_map(|(_, start)| start.as_ref())
        .collect();
    assert!(
        resumed.len() >= 10,
        "only {} runs resumed from a token: {runs:?}",
        resumed.len()
    );
    for token in &resumed {
        assert!(
            requests
                .iter()
                .any(|r| r["query"]["after"].as_str() == Some(token.as_str())),
            "no request resumed at token {token}"
        );
    }
    // Work lost to kills is bounded by a page group per kill, not the whole feed.
    let pages = ROWS.div_ceil(25) as usize + 1;
    assert!(
        requests.len() <= pages + 3 * runs.len(),
        "{} requests for {pages} pages over {} runs",
        requests.len(),
        runs.len()
    );
    let checkpoints =
        p.query_csv("select count(*) > 20 from hakiri.cursor_history where pipeline = 'feed'");
    assert_eq!(checkpoints, vec!["true"]);
}

/// At least `min` runs resumed from a committed token, and the fixture saw a request to
/// `path` carrying each of those tokens in the query parameter `param`.
fn assert_resumed_at_tokens(
    server: &Server,
    runs: &[(String, Option<String>)],
    path: &str,
    param: &str,
    min: usize,
) {
    let requests: Vec<Value> =
        serde_json::from_str(&server.get(&format!("/admin/log?path={path}"))).unwrap();
    let resumed: Vec<&String> = runs.iter().filter_map(|(_, s)| s.as_ref()).collect();
    assert!(
        resumed.len() >= min,
        "only {} runs resumed: {runs:?}",
        resumed.len()
    );
    for token in &resumed {
        assert!(
            requests
                .iter()
                .any(|r| r["query"][param].as_str() == Some(token.as_str())),
            "no request to {path} resumed at {param}={token}"
        );
    }
}

/// The same for a sandboxed connector: a WAT test guest (built into a component here)
/// reads the fixture API's NDJSON pages with a token cursor, and `hakiri run` is killed 22
/// times; the table then equals the source and killed runs resumed from their tokens.
#[test]
fn a_wasm_token_pipeline_survives_kills_and_resumes_where_it_stopped() {
    use hakiri_wasm::testing::{Behaviour, Guest, build};
    let server = Server::paged();
    server.get(&format!("/admin/grow?n={ROWS}"));
    let p = Project::new(&format!(
        r#"
[sources.x]
type = "wasm"
component = "connectors/pass.wasm"
allow_hosts = "127.0.0.1"
url = "{}/ndjson_grow?size=25&delay_ms=40"

[pipelines.feed]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.feed SELECT * FROM x.items"
"#,
        server.url()
    ));
    std::fs::create_dir_all(p.path().join("connectors")).unwrap();
    std::fs::write(
        p.path().join("connectors/pass.wasm"),
        build(&Guest::new("pass", &["127.0.0.1"], Behaviour::PassThrough)),
    )
    .unwrap();
    kill_at_random(&p, "feed", 0xA076_1D64_78BD_642F, 22, (40, 500));
    p.hakiri(&["run", "feed"]).ok();
    let runs = assert_intact(&p, "feed");
    assert_resumed_at_tokens(&server, &runs, "/ndjson_grow", "token", 10);
    // Nothing new: a run reads the last page again, skips what it wrote, and adds nothing.
    p.hakiri(&["run", "feed"]).ok();
    p.assert_ids_once("feed", ROWS, "after a run with nothing new");
    // Grown: the next run loads only the new records.
    server.get("/admin/grow?n=30");
    p.hakiri(&["run", "feed"]).ok();
    p.assert_ids_once("feed", ROWS + 30, "after the source grew");
}

/// The same for the Python example connector (examples/connectors/cursor-api, built with
/// componentize-py by its build script): a token pipeline over the fixture's cursor API
/// (`next_cursor`, `?after=`) is killed 14 times; the table then equals the source, and the
/// killed runs resumed from the cursors the connector returned.
#[test]
fn the_python_connector_survives_kills_and_resumes_where_it_stopped() {
    let server = Server::paged();
    server.get(&format!("/admin/grow?n={ROWS}"));
    let p = Project::new(&format!(
        r#"
[sources.py]
type = "wasm"
component = "connectors/cursor-api.wasm"
allow_hosts = "127.0.0.1"
url = "{}/cursor_null?size=10&delay_ms=60"
columns = "id:int64, name:utf8, amount:int64, bucket:int64"

[pipelines.feed]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.feed SELECT * FROM py.items"
"#,
        server.url()
    ));
    std::fs::create_dir_all(p.path().join("connectors")).unwrap();
    std::fs::copy(
        crate::support::python_connector(),
        p.path().join("connectors/cursor-api.wasm"),
    )
    .unwrap();
    // The first load compiles the component (seconds); kills during it would only repeat it.
    let tables = p.hakiri(&["source", "tables", "py"]).ok();
    assert!(tables.stdout.contains("items"), "{}", tables.stdout);
    kill_at_random(&p, "feed", 0x9FB2_1C65_1E98_DF25, 14, (300, 900));
    p.hakiri(&["run", "feed"]).ok();
    let runs = assert_intact(&p, "feed");
    assert_resumed_at_tokens(&server, &runs, "/cursor_null", "after", 6);
    server.get("/admin/grow?n=30");
    p.hakiri(&["run", "feed"]).ok();
    p.assert_ids_once("feed", ROWS + 30, "after the source grew");
}
