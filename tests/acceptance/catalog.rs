//! The Postgres catalog (`[catalog] url`) against a throwaway PostgreSQL cluster: the
//! catalog conformance suite (every check on a fresh schema of one server), its own
//! behaviour (a reconnect after the server dropped the connection, a catalog from a newer
//! Hakiri refused, a bad URL), and two project folders sharing one catalog: the run lock
//! holds across them. The crash test with a Postgres catalog is in `crash.rs`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hakiri_engine::catalog::{Catalog, PostgresCatalog, PostgresConnect, conformance};

use crate::support::{PgCluster, Project, Server, hakiri_bin};

fn password_url(pg: &PgCluster) -> String {
    format!(
        "postgres://hakiri:{}@127.0.0.1:{}/postgres?sslmode=disable",
        PgCluster::PASSWORD,
        pg.port
    )
}

fn open(pg: &PgCluster, schema: &str) -> hakiri_engine::Result<PostgresCatalog> {
    let config: postgres::Config = password_url(pg)
        .replace("?sslmode=disable", "")
        .parse()
        .unwrap();
    let connect: PostgresConnect = Box::new(move || config.connect(postgres::NoTls));
    PostgresCatalog::open(connect, "test cluster", schema)
}

#[test]
fn the_postgres_catalog_passes_the_conformance_suite() {
    let pg = PgCluster::start();
    for (i, (name, check)) in conformance::CHECKS.iter().enumerate() {
        let catalog = open(&pg, &format!("conformance_{i}")).unwrap();
        eprintln!("conformance check {name}");
        check(&catalog);
    }
    assert!(conformance::CHECKS.len() >= 18);

    // Opened again, the catalog is the same one (its tables are not created twice).
    let c = open(&pg, "conformance_2").unwrap();
    assert!(
        !c.runs(None).unwrap().is_empty(),
        "run_lock_names_a_live_holder left runs"
    );

    // The server drops the connection (a restart, a failover, an idle timeout): the next
    // call connects again.
    let killed = pg.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE pid <> pg_backend_pid() AND usename = 'hakiri' AND backend_type = 'client backend'",
    );
    assert_eq!(killed.trim(), "1", "the catalog's one connection");
    // The next call connects again: a read is tried once more on a new connection, and
    // so is a write whose transaction never reached COMMIT.
    assert!(!c.runs(None).unwrap().is_empty());
    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE pid <> pg_backend_pid() AND usename = 'hakiri' AND backend_type = 'client backend'",
    );
    c.add_event(
        chrono::Utc::now(),
        hakiri_engine::types::EventKind::Backfill,
        "p",
        "written after the server dropped the connection",
        None,
    )
    .unwrap();

    // A user who may not create schemas, given one made for it, needs nothing more.
    pg.psql(&format!(
        "CREATE ROLE limited LOGIN PASSWORD '{}';
         CREATE SCHEMA team_b AUTHORIZATION limited;
         REVOKE CREATE ON DATABASE postgres FROM PUBLIC;",
        PgCluster::PASSWORD
    ));
    let config: postgres::Config = format!(
        "postgres://limited:{}@127.0.0.1:{}/postgres",
        PgCluster::PASSWORD,
        pg.port
    )
    .parse()
    .unwrap();
    let connect: PostgresConnect = Box::new(move || config.connect(postgres::NoTls));
    let limited = PostgresCatalog::open(connect, "test cluster", "team_b").unwrap();
    conformance::CHECKS[0].1(&limited);

    // A catalog written by a newer Hakiri is refused, with what to do.
    pg.psql("UPDATE conformance_1.catalog_version SET version = 99");
    let e = open(&pg, "conformance_1").unwrap_err().to_string();
    assert!(e.contains("written by a newer Hakiri"), "{e}");
    assert!(e.contains("upgrade hakiri"), "{e}");

    // A schema name that would need quoting is refused before connecting.
    let e = open(&pg, "Team; DROP").unwrap_err().to_string();
    assert!(e.contains("must be a lower-case identifier"), "{e}");
}

/// Two project folders with one `[catalog]` (and one store, as two machines mounting a
/// shared file system would): a run started in one holds the pipeline's run lock for the
/// other, which is refused naming the holder; once it ended, the other sees its cursor and
/// loads nothing twice. No `.hakiri/catalog.db` is written.
#[test]
fn two_folders_sharing_a_postgres_catalog_share_the_run_lock() {
    let pg = PgCluster::start();
    let server = Server::paged();
    server.get("/admin/grow?n=400");
    let manifest = format!(
        r#"
[catalog]
url = "{}"
schema = "team"

[sources.api]
type = "http"
base_url = "{}"

[sources.api.tables.grow]
path = "/grow"
records = "items"
pagination = "next_url"
query = {{ size = "20", delay_ms = "100" }}
filter = {{ id = "since_id" }}
schema = "id bigint, name text, amount bigint"

[pipelines.grow]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.grow SELECT * FROM api.grow WHERE id > $cursor"
"#,
        password_url(&pg),
        server.url()
    );
    let a = Project::new(&manifest);
    let b = Project::new(&manifest);
    std::fs::create_dir_all(a.path().join(".hakiri/store")).unwrap();
    std::fs::create_dir_all(b.path().join(".hakiri")).unwrap();
    std::os::unix::fs::symlink(
        a.path().join(".hakiri/store"),
        b.path().join(".hakiri/store"),
    )
    .unwrap();

    // The first command creates the catalog's tables in the schema.
    a.hakiri(&["pipeline", "list"]).ok();
    let mut first = Command::new(hakiri_bin())
        .current_dir(a.path())
        .args(["run", "grow"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hakiri run in folder a");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg
        .psql("SELECT count(*) FROM team.runs WHERE status = 'running'")
        .trim()
        != "1"
    {
        assert!(
            Instant::now() < deadline,
            "the run in folder a never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = b.hakiri(&["run", "grow"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("pipeline 'grow' is already running")
            && refused
                .stderr
                .contains(&format!("process {} on host", first.id())),
        "{}",
        refused.stderr
    );
    let status = first.wait().unwrap();
    assert!(status.success(), "the run in folder a failed");

    // b sees a's run and cursor: nothing new to load, and the table is whole once.
    b.hakiri(&["run", "grow"]).ok();
    b.assert_ids_once("grow", 400, "after a's run, read from b");
    let runs = pg.psql("SELECT status, rows_written FROM team.runs ORDER BY seq");
    assert_eq!(
        runs.lines().collect::<Vec<_>>(),
        vec!["succeeded|400", "succeeded|0"],
        "{runs}"
    );
    for p in [&a, &b] {
        assert!(!p.path().join(".hakiri/catalog.db").exists());
    }

    // A bad URL is a configuration error saying what failed.
    let bad =
        Project::new("[catalog]\nurl = \"postgres://hakiri@127.0.0.1:1/postgres?sslmode=nope\"\n");
    let r = bad.hakiri(&["pipeline", "list"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("[catalog]: sslmode 'nope' is not one of"),
        "{}",
        r.stderr
    );
    let down = Project::new(&format!(
        "[catalog]\nurl = \"postgres://hakiri:x@127.0.0.1:{}/postgres?sslmode=disable\"\n",
        crate::support::free_port()
    ));
    let r = down.hakiri(&["pipeline", "list"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("the Postgres catalog at hakiri@127.0.0.1:")
            && r.stderr.contains("check that the server is up"),
        "{}",
        r.stderr
    );
}

/// A TCP proxy to the cluster that cuts the connection once a client sends bytes holding
/// `pattern`: those bytes reach the server, the answer never reaches the client. Later
/// connections pass through.
struct CutProxy {
    port: u16,
    pattern: std::sync::Arc<std::sync::Mutex<Option<&'static [u8]>>>,
}

impl CutProxy {
    fn start(upstream: u16) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pattern: Arc<Mutex<Option<&'static [u8]>>> = Arc::default();
        let armed = pattern.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let cut = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_in, mut c_out) = (server, client);
                let (cut_up, armed) = (cut.clone(), armed.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let hit = {
                            let mut p = armed.lock().unwrap();
                            let hit = p.is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p));
                            if hit {
                                *p = None;
                            }
                            hit
                        };
                        if hit {
                            // The answer to these bytes must not reach the client.
                            cut_up.store(true, Ordering::SeqCst);
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        if hit {
                            std::thread::sleep(Duration::from_millis(300));
                            let _ = c_in.shutdown(std::net::Shutdown::Both);
                            let _ = s_out.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0
                            || cut.load(Ordering::SeqCst)
                            || c_out.write_all(&buf[..n]).is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        CutProxy { port, pattern }
    }

    fn cut_on(&self, pattern: &'static [u8]) {
        *self.pattern.lock().unwrap() = Some(pattern);
    }
}

/// A write whose connection is cut lands exactly once: cut before COMMIT it was rolled
/// back and is tried again; cut after COMMIT was sent (the answer lost) the server is
/// asked whether it committed, and it is not written again.
#[test]
fn a_connection_cut_mid_write_neither_loses_nor_repeats_it() {
    let pg = PgCluster::start();
    let proxy = CutProxy::start(pg.port);
    let config: postgres::Config = format!(
        "postgres://hakiri:{}@127.0.0.1:{}/postgres",
        PgCluster::PASSWORD,
        proxy.port
    )
    .parse()
    .unwrap();
    let connect: PostgresConnect = Box::new(move || config.connect(postgres::NoTls));
    let c = PostgresCatalog::open(connect, "test cluster", "cut").unwrap();
    let event = |message: &str| {
        c.add_event(
            chrono::Utc::now(),
            hakiri_engine::types::EventKind::Backfill,
            "p",
            message,
            None,
        )
    };
    let count = |message: &str| {
        pg.psql(&format!(
            "SELECT count(*) FROM cut.events WHERE message = '{message}'"
        ))
        .trim()
        .to_string()
    };
    // Cut as the INSERT goes out: the transaction never committed, and is tried again.
    proxy.cut_on(b"INSERT INTO events");
    event("before commit").unwrap();
    assert_eq!(count("before commit"), "1");
    // Cut as COMMIT goes out: the server committed, the client never heard.
    proxy.cut_on(b"COMMIT");
    event("during commit").unwrap();
    assert_eq!(count("during commit"), "1");
    // The catalog goes on as usual on a new connection.
    event("after").unwrap();
    assert_eq!(count("after"), "1");
}
