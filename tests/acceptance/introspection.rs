//! Catalog introspection never waits on a source: with an HTTP source whose server accepts
//! connections and drops them (so any request would fail only after its retries), listing
//! tables answers at once and makes no request; a query of that source fails with its own
//! message, and nothing else does.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{HakiriServer, Project, psql};

/// A TCP server that counts connections and closes each one unanswered.
fn dropping_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = conn.read(&mut [0u8; 1024]);
            drop(conn);
        }
    });
    (port, count)
}

const ENV: [(&str, &str); 1] = [("TEST_ANALYST_PASSWORD", "analyst-secret")];

fn project(port: u16) -> Project {
    let p = Project::new(&format!(
        r#"
[sources.samples]
type = "file"
tables.events.path = "events.csv"

[sources.api]
type = "http"
base_url = "http://127.0.0.1:{port}"
tables.items.path = "/items"

[pipelines.events]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.events SELECT * FROM samples.events WHERE id > $cursor"

[serve.users.analyst]
password = "env:TEST_ANALYST_PASSWORD"
role = "read_only"
"#
    ));
    std::fs::write(p.path().join("events.csv"), "id,kind\n1,push\n2,issue\n").unwrap();
    p.hakiri(&["run", "events"]).ok();
    p
}

/// Runs `f`, checking it took under `limit` and made no request to the source.
fn quick<T>(what: &str, requests: &AtomicUsize, limit: Duration, f: impl FnOnce() -> T) -> T {
    let before = requests.load(Ordering::SeqCst);
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert_eq!(
        requests.load(Ordering::SeqCst),
        before,
        "{what} made a request to the source"
    );
    // Waiting on the source would take its retries (about 8 s); 1 s is the goal on an idle
    // machine, the limit leaves room for a loaded CI runner.
    assert!(took < limit, "{what} took {took:?}");
    out
}

#[test]
fn listing_tables_never_waits_on_an_unreachable_source() {
    let (port, requests) = dropping_server();
    let p = project(port);
    let limit = Duration::from_secs(3);

    let out = quick("show tables", &requests, limit, || {
        p.hakiri(&["query", "--format", "csv", "show tables"]).ok()
    });
    for t in [
        "api,items",
        "context,events",
        "hakiri,runs",
        "samples,events",
    ] {
        assert!(
            out.stdout.contains(t),
            "show tables lists {t}: {}",
            out.stdout
        );
    }
    let out = quick("information_schema.tables", &requests, limit, || {
        p.hakiri(&[
            "query",
            "--format",
            "csv",
            "select table_schema, table_name from information_schema.tables where table_schema = 'api'",
        ])
        .ok()
    });
    assert!(out.stdout.contains("api,items"), "{}", out.stdout);
    let out = quick("hakiri sql -c '\\dt'", &requests, limit, || {
        p.hakiri(&["sql", "-c", "\\dt"]).ok()
    });
    assert!(
        out.stdout.contains("events") && out.stdout.contains("runs"),
        "{}",
        out.stdout
    );
    let out = quick("hakiri sql -c '\\d events'", &requests, limit, || {
        p.hakiri(&["sql", "-c", "\\d events"]).ok()
    });
    assert!(
        out.stdout.contains("context") && out.stdout.contains("kind"),
        "{}",
        out.stdout
    );

    let server = HakiriServer::start(p.path(), &ENV);
    let url = server.url("analyst", "analyst-secret");
    let out = quick("psql \\dt", &requests, limit, || {
        psql(&url, &["-c", "\\dt *.*"]).ok()
    });
    for t in ["items", "events", "runs"] {
        assert!(
            out.stdout.contains(t),
            "psql \\dt lists {t}: {}",
            out.stdout
        );
    }
    let out = quick("psql \\dt context.*", &requests, limit, || {
        psql(&url, &["-c", "\\dt context.*"]).ok()
    });
    assert!(out.stdout.contains("events"), "{}", out.stdout);
    // The context table reads as ever.
    let out = psql(&url, &["-A", "-t", "-c", "select count(*) from events"]).ok();
    assert_eq!(out.stdout.trim(), "2");
    drop(server);

    // A query of the source fails, with the message it gives today.
    let before = requests.load(Ordering::SeqCst);
    let r = p.hakiri(&["query", "select * from api.items"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}/items")),
        "the error names the request: {}",
        r.stderr
    );
    assert!(
        requests.load(Ordering::SeqCst) > before,
        "the query asked the source"
    );

    // What runs discovered is kept for listings; refresh asks the source again.
    assert_eq!(
        p.query_csv("select source, table_name from hakiri.source_schemas"),
        vec!["samples,events"]
    );
    let out = p.hakiri(&["source", "refresh", "samples"]).ok();
    assert_eq!(out.stdout.trim(), "samples.events: id Int64, kind Utf8");
    let r = p.hakiri(&["source", "refresh", "api"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}/items")),
        "{}",
        r.stderr
    );
}
