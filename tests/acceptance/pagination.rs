//! Each pagination style and stop rule, retries and a malformed page, against the local
//! paginated server tests/fixtures/paged_server.py (a real HTTP server on 127.0.0.1).

use crate::support::{Project, Server};

/// A project with one http source over the fixture server, a table per case, and a
/// pipeline per table loading it into context.<table>.
fn project(server: &Server, tables: &[(&str, &str)]) -> Project {
    let mut m = format!(
        "[sources.api]\ntype = \"http\"\nbase_url = \"{}\"\nretry_backoff_ms = 50\nmax_retries = 3\ntimeout_ms = 5000\n",
        server.url()
    );
    for (name, opts) in tables {
        m.push_str(&format!("\n[sources.api.tables.{name}]\n{opts}\n"));
    }
    for (name, _) in tables {
        m.push_str(&format!(
            "\n[pipelines.{name}]\nsql = \"INSERT INTO context.{name} SELECT * FROM api.{name}\"\n"
        ));
    }
    Project::new(&m)
}

fn loaded(p: &Project, table: &str) -> (String, String) {
    let r = p.hakiri(&["run", table]).ok();
    let rows = p.query_csv(&format!(
        "select count(*), count(distinct id), min(id), max(id) from {table}"
    ));
    (rows[0].clone(), r.stdout)
}

#[test]
fn every_pagination_style_reads_every_record_once() {
    let server = Server::paged();
    let p = project(
        &server,
        &[
            (
                "next_url",
                "path = \"/next_url\"\nrecords = \"items\"\npagination = \"next_url\"",
            ),
            ("link", "path = \"/link\"\npagination = \"link_header\""),
            (
                "offset",
                "path = \"/offset\"\nrecords = \"data\"\npagination = \"offset\"\npage_size = 10",
            ),
            (
                "page",
                "path = \"/page\"\npagination = \"page\"\npage_size = 10",
            ),
            (
                "cursor",
                "path = \"/cursor\"\nrecords = \"items\"\npagination = \"cursor\"\ncursor_path = \"meta.next_cursor\"\ncursor_param = \"after\"",
            ),
        ],
    );
    for table in ["next_url", "link", "offset", "page", "cursor"] {
        let (counts, out) = loaded(&p, table);
        assert_eq!(counts, "25,25,1,25", "style {table}: {out}");
        assert!(
            out.contains("3 pages"),
            "style {table} should read 3 pages: {out}"
        );
    }
    // Nested objects become structs, arrays lists.
    let login = p.query_csv("select \"user\"['login'] from next_url where id = 4");
    assert_eq!(login, vec!["u1"]);
}

#[test]
fn stop_rules_fire_in_their_documented_order() {
    let server = Server::paged();
    let p = project(
        &server,
        &[
            (
                "has_more",
                "path = \"/has_more\"\nrecords = \"items\"\npagination = \"page\"\npage_size = 10\nhas_more_path = \"has_more\"",
            ),
            (
                "total",
                "path = \"/total\"\nrecords = \"items\"\npagination = \"next_url\"\ntotal_path = \"total\"",
            ),
            (
                "endless",
                "path = \"/endless\"\nrecords = \"items\"\npagination = \"next_url\"\nmax_pages = 4",
            ),
            (
                "empty_last",
                "path = \"/empty_last\"\nrecords = \"items\"\npagination = \"next_url\"",
            ),
        ],
    );
    // has_more false on page 2.
    assert_eq!(loaded(&p, "has_more").0, "20,20,1,20");
    // total 15 reached after page 2.
    assert_eq!(loaded(&p, "total").0, "20,20,1,20");
    // max_pages 4 of an endless API (the same 10 records each page).
    let (counts, out) = loaded(&p, "endless");
    assert_eq!(counts, "40,10,1,10");
    assert!(out.contains("4 pages"), "{out}");
    // an empty page 3 stops although a next link is given.
    let (counts, out) = loaded(&p, "empty_last");
    assert_eq!(counts, "20,20,1,20");
    assert!(out.contains("3 pages"), "{out}");
}

#[test]
fn retries_429_with_retry_after_and_500() {
    let server = Server::paged();
    let p = project(
        &server,
        &[
            (
                "flaky429",
                "path = \"/flaky429\"\npagination = \"page\"\npage_size = 10",
            ),
            (
                "flaky500",
                "path = \"/flaky500\"\npagination = \"page\"\npage_size = 10",
            ),
        ],
    );
    let t = std::time::Instant::now();
    assert_eq!(loaded(&p, "flaky429").0, "25,25,1,25");
    // Retry-After: 1 was honoured (the configured backoff is only 50 ms).
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After ignored"
    );
    assert_eq!(loaded(&p, "flaky500").0, "25,25,1,25");
}

#[test]
fn failures_commit_nothing_and_keep_earlier_data() {
    let server = Server::paged();
    let p = project(
        &server,
        &[
            (
                "malformed",
                "path = \"/malformed\"\nrecords = \"items\"\npagination = \"next_url\"\nschema = \"id bigint, name text\"",
            ),
            ("always500", "path = \"/always500\"\nschema = \"id bigint\""),
        ],
    );
    // A good run first: point the table at a healthy endpoint, then back at the broken one.
    let good = p.path().join("hakiri.toml");
    let manifest = std::fs::read_to_string(&good).unwrap();
    std::fs::write(
        &good,
        manifest.replace(
            "path = \"/malformed\"",
            "path = \"/next_url\"\nmax_pages = 1",
        ),
    )
    .unwrap();
    p.hakiri(&["run", "malformed"]).ok();
    assert_eq!(p.query_csv("select count(*) from malformed"), vec!["10"]);
    std::fs::write(&good, &manifest).unwrap();

    let bad = p.hakiri(&["run", "malformed"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains("source table 'api.malformed': page 2")
            && bad.stderr.contains("not valid JSON"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains("nothing from this run was committed"),
        "{}",
        bad.stderr
    );
    // Page 1 of the failed run was not committed; the earlier run's rows are intact.
    assert_eq!(p.query_csv("select count(*) from malformed"), vec!["10"]);
    let runs = p.query_csv(
        "select status from hakiri.runs where pipeline = 'malformed' order by started_at",
    );
    assert_eq!(runs, vec!["succeeded", "failed"]);
    // No staged file is left behind.
    let staging = p.path().join(".hakiri/store/malformed/_staging");
    assert_eq!(
        std::fs::read_dir(staging).map(|d| d.count()).unwrap_or(0),
        0
    );

    let down = p.hakiri(&["run", "always500"]);
    assert_eq!(down.code, 1);
    assert!(
        down.stderr.contains("source table 'api.always500'")
            && down.stderr.contains("failed after 4 attempts"),
        "{}",
        down.stderr
    );
}

#[test]
fn plan_shows_the_source_scan_with_pushed_filters() {
    let server = Server::paged();
    let m = format!(
        r#"
[sources.api]
type = "http"
base_url = "{}"
tables.items.path = "/since"
tables.items.records = "items"
tables.items.filter.updated_at = "since"

[pipelines.recent]
cursor = {{ kind = "monotonic", column = "updated_at", initial = "2026-01-20T00:00:00Z" }}
sql = "INSERT INTO context.recent SELECT id, updated_at FROM api.items WHERE updated_at > $cursor"
"#,
        server.url()
    );
    let p = Project::new(&m);
    let plan = p.hakiri(&["plan", "recent"]).ok();
    assert!(
        plan.stdout.contains("+ source api") && plan.stdout.contains("+ pipeline recent"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!(
            "HttpExec: table=api.items, url={}/since",
            server.url()
        )),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("pushed_filters=[since=2026-01-20T00:00:00Z"),
        "{}",
        plan.stdout
    );
    // The pushed parameter really reaches the API: only ids past the 20th come back.
    let run = p.hakiri(&["run", "recent"]).ok();
    assert!(run.stdout.contains("5 rows written"), "{}", run.stdout);
    assert!(
        run.stdout.contains("cursor 2026-01-25T00:00:00Z"),
        "{}",
        run.stdout
    );
}

#[test]
fn pages_are_requested_in_parallel_up_to_max_in_flight() {
    let server = Server::paged();
    let slow =
        "path = \"/page\"\npagination = \"page\"\npage_size = 10\nquery = { delay_ms = \"300\" }";
    let p = project(
        &server,
        &[
            ("serial", slow),
            ("parallel", &format!("{slow}\nmax_in_flight = 3")),
        ],
    );
    let max_in_flight = || {
        let c: serde_json::Value = serde_json::from_str(&server.get("/admin/concurrency")).unwrap();
        c["max"].as_u64().unwrap()
    };
    let (counts, out) = loaded(&p, "serial");
    assert_eq!(counts, "25,25,1,25", "{out}");
    assert_eq!(max_in_flight(), 1, "one request at a time by default");
    let (counts, out) = loaded(&p, "parallel");
    assert_eq!(counts, "25,25,1,25", "{out}");
    assert!(out.contains("3 pages"), "{out}");
    let max = max_in_flight();
    assert!(
        (2..=3).contains(&max),
        "{max} pages were in flight at once; requests: {}",
        server.get("/admin/log?path=/page")
    );
}

#[test]
fn a_limited_live_query_requests_only_the_pages_it_needs() {
    // Scans without LIMIT fetch a page ahead of decoding; a LIMIT scan fetches on demand,
    // so a look at a few rows sends no request in vain. (The schema is declared: inferring
    // it would sample the first page once more.)
    let server = Server::paged();
    let p = project(
        &server,
        &[(
            "next_url",
            "path = \"/next_url\"\nrecords = \"items\"\npagination = \"next_url\"\nschema = \"id bigint\"",
        )],
    );
    let requests = || {
        let log: serde_json::Value =
            serde_json::from_str(&server.get("/admin/log?path=/next_url")).unwrap();
        log.as_array().unwrap().len()
    };
    let rows = p.query_csv("select id from api.next_url limit 5");
    assert_eq!(rows, vec!["1", "2", "3", "4", "5"]);
    assert_eq!(
        requests(),
        1,
        "5 rows of a 10-row page need one request: {}",
        server.get("/admin/log?path=/next_url")
    );
    let rows = p.query_csv("select id from api.next_url limit 12");
    assert_eq!(rows.len(), 12);
    assert_eq!(requests(), 1 + 2, "12 rows need two pages");
    let rows = p.query_csv("select count(*) from api.next_url");
    assert_eq!(rows, vec!["25"]);
    assert_eq!(
        requests(),
        3 + 3,
        "a whole scan reads each of the 3 pages once"
    );
}
