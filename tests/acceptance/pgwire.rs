//! `hakiri serve` with real clients: `psql` and Python's psycopg 3.

use crate::support::{HakiriServer, Project, psql, venv_bin};

const ENV: [(&str, &str); 2] = [
    ("TEST_ADMIN_PASSWORD", "admin-secret"),
    ("TEST_ANALYST_PASSWORD", "analyst-secret"),
];

/// A project with a file source, an `events` pipeline already run (ids 1..1000, amount =
/// 3 * id) and two users: admin and analyst (read-only).
pub(crate) fn project() -> Project {
    let p = Project::new(
        r#"
[sources.drop]
type = "file"
tables.events.path = "incoming"
tables.events.format = "csv"

[pipelines.events]
cursor = { kind = "token" }
sql = "INSERT INTO context.events SELECT * FROM drop.events"

[serve.users.admin]
password = "env:TEST_ADMIN_PASSWORD"
role = "admin"

[serve.users.analyst]
password = "env:TEST_ANALYST_PASSWORD"
role = "read_only"
"#,
    );
    let dir = p.path().join("incoming");
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("id,kind,amount\n");
    for id in 1..=1000 {
        csv.push_str(&format!("{id},{},{}\n", ["push", "issue"][id % 2], id * 3));
    }
    std::fs::write(dir.join("a.csv"), csv).unwrap();
    p.hakiri(&["run", "events"]).ok();
    p
}

#[test]
fn psql_lists_describes_and_queries_and_roles_are_enforced() {
    let p = project();
    let server = HakiriServer::start(p.path(), &ENV);
    let analyst = server.url("analyst", "analyst-secret");
    let admin = server.url("admin", "admin-secret");

    let out = psql(&analyst, &["-c", "\\dt"]).ok().stdout;
    assert!(out.contains("events"), "{out}");
    let out = psql(&analyst, &["-c", "\\d events"]).ok().stdout;
    assert!(
        out.contains("id") && out.contains("kind") && out.contains("amount"),
        "{out}"
    );
    let out = psql(
        &analyst,
        &["-At", "-c", "select count(*), sum(amount) from events"],
    )
    .ok()
    .stdout;
    assert_eq!(out.trim(), "1000|1501500");
    let out = psql(
        &analyst,
        &[
            "-At",
            "-c",
            "select pipeline, status, rows_written from hakiri.runs",
        ],
    )
    .ok()
    .stdout;
    assert_eq!(out.trim(), "events|succeeded|1000");

    // A SQL cursor on the simple protocol: rows come in the sizes FETCH asks for.
    let out = psql(
        &analyst,
        &[
            "-At",
            "-c",
            "BEGIN",
            "-c",
            "DECLARE c CURSOR FOR SELECT id FROM events ORDER BY id",
            "-c",
            "FETCH 2 FROM c",
            "-c",
            "FETCH FORWARD 3 FROM c",
            "-c",
            "CLOSE c",
            "-c",
            "COMMIT",
        ],
    )
    .ok()
    .stdout;
    let ids: Vec<&str> = out.lines().filter(|l| l.parse::<u32>().is_ok()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"], "{out}");

    // One connection's SET of a DataFusion option does not reach the others (regression:
    // datafusion-postgres applied it to the session every connection shares).
    let set = psql(&analyst, &["-c", "SET datafusion.execution.batch_size = 1"]).ok();
    assert!(set.stderr.contains("was ignored"), "{}", set.stderr);
    let out = psql(
        &analyst,
        &[
            "-At",
            "-c",
            "select value from information_schema.df_settings where name = 'datafusion.execution.batch_size'",
        ],
    )
    .ok()
    .stdout;
    assert_eq!(out.trim(), "8192");

    // A wrong password is refused (SQLSTATE 28P01), and so is an unknown user.
    let wrong = psql(&server.url("analyst", "nope"), &["-c", "select 1"]);
    assert_ne!(wrong.code, 0);
    assert!(
        wrong
            .stderr
            .to_lowercase()
            .contains("password authentication failed"),
        "{}",
        wrong.stderr
    );
    let unknown = psql(&server.url("mallory", "x"), &["-c", "select 1"]);
    assert_ne!(unknown.code, 0);

    // The read-only role may not change anything: Hakiri DDL, RUN, DataFusion DDL.
    for sql in [
        "CREATE PIPELINE p2 AS INSERT INTO context.t2 SELECT * FROM drop.events",
        "RUN PIPELINE events",
        "CREATE TABLE scratch AS SELECT 1",
        "DROP TABLE events",
    ] {
        let refused = psql(&analyst, &["-c", sql]);
        assert_ne!(refused.code, 0, "{sql}");
        assert!(
            refused.stderr.contains("42501") && refused.stderr.contains("read_only"),
            "{sql}: {}",
            refused.stderr
        );
    }

    // The admin role creates and runs a pipeline over the wire.
    std::fs::write(
        p.path().join("incoming/b.csv"),
        "id,kind,amount\n1001,push,7\n",
    )
    .unwrap();
    let out = psql(
        &admin,
        &[
            "-At",
            "-c",
            "CREATE PIPELINE copy AS INSERT INTO context.events_copy SELECT id, kind FROM drop.events WHERE id > 990",
            "-c",
            "RUN PIPELINE copy",
            "-c",
            "RUN PIPELINE events",
        ],
    )
    .ok()
    .stdout;
    assert!(out.contains("CREATE PIPELINE"), "{out}");
    assert!(out.contains("|copy|succeeded|11|"), "{out}");
    assert!(out.contains("|events|succeeded|1|"), "{out}");
    let out = psql(&analyst, &["-At", "-c", "select count(*) from events_copy"])
        .ok()
        .stdout;
    assert_eq!(out.trim(), "11");
    let status = server.stop();
    assert!(status.success(), "hakiri serve exited with {status}");
}

#[test]
fn psycopg_parameters_server_side_cursor_and_fifty_concurrent_connections() {
    let p = project();
    let server = HakiriServer::start(p.path(), &ENV);
    let out = std::process::Command::new(venv_bin("python"))
        .arg(crate::support::repo_root().join("tests/fixtures/pg_clients.py"))
        .arg(server.url("analyst", "analyst-secret"))
        .arg(server.url("admin", "admin-secret"))
        .arg(p.path().join("incoming"))
        .arg(crate::support::hakiri_bin())
        .arg(p.path())
        .output()
        .expect("run pg_clients.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for check in [
        "parameterized ok",
        "server-side cursor ok: 200000 rows",
        "cancel ok",
        "no blocking ok",
        "roles ok",
        "concurrent ok: 50 connections",
    ] {
        assert!(
            stdout.contains(check),
            "missing '{check}' in:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn bi_tool_and_driver_startup_queries_succeed() {
    let p = project();
    let server = HakiriServer::start(p.path(), &ENV);
    let out = std::process::Command::new(venv_bin("python"))
        .arg(crate::support::repo_root().join("tests/fixtures/client_startup/replay.py"))
        .arg(server.url("analyst", "analyst-secret"))
        .output()
        .expect("run replay.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for client in [
        "dbeaver", "metabase", "grafana", "pgadbc", "pgcli", "npgsql",
    ] {
        assert!(stdout.contains(&format!("{client}: ")), "{stdout}");
    }
}

#[test]
fn tls_from_certificate_files() {
    let p = project();
    let dir = p.path();
    let openssl = std::process::Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=hakiri-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .expect("run openssl");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    let manifest = std::fs::read_to_string(dir.join("hakiri.toml")).unwrap();
    std::fs::write(
        dir.join("hakiri.toml"),
        format!("{manifest}\n[serve]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n"),
    )
    .unwrap();
    let server = HakiriServer::start(dir, &ENV);
    // verify-full: the client checks the server's certificate against ours, name included.
    let url = server.url("analyst", "analyst-secret").replace(
        "sslmode=disable",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            dir.join("cert.pem").display()
        ),
    );
    let out = psql(&url, &["-At", "-c", "select count(*) from events"])
        .ok()
        .stdout;
    assert_eq!(out.trim(), "1000");
    let check = std::process::Command::new(venv_bin("python"))
        .args([
            "-c",
            "import psycopg, sys\nwith psycopg.connect(sys.argv[1]) as c:\n    print(c.pgconn.ssl_in_use)",
            &url,
        ])
        .output()
        .expect("run python");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "True",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
