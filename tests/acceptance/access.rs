//! Access decided once: every statement kind against pgwire's read-only role and MCP's
//! `context.query`, both of which ask `HakiriStatement::access()`. Reads are accepted by
//! both; session statements (SET, transactions) by pgwire only, since MCP calls share one
//! session; writes by neither.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{HakiriServer, Project, repo_root, venv_bin};
use hakiri_engine::sql::{Access, parse_statements};

/// Every statement kind, with the access the test expects.
const TABLE: &[(&str, Access)] = &[
    ("SELECT count(*) FROM events", Access::Read),
    ("SELECT * FROM hakiri.runs", Access::Read),
    ("EXPLAIN SELECT count(*) FROM events", Access::Read),
    ("SHOW TABLES", Access::Read),
    ("SHOW COLUMNS FROM events", Access::Read),
    ("SHOW ALL", Access::Read),
    ("SHOW PIPELINES", Access::Read),
    ("SHOW SOURCES", Access::Read),
    ("SHOW CREATE PIPELINE events", Access::Read),
    ("PLAN PIPELINE events", Access::Read),
    (
        "SET datafusion.execution.batch_size = 4096",
        Access::Session,
    ),
    ("START TRANSACTION", Access::Session),
    ("COMMIT", Access::Session),
    ("INSERT INTO events VALUES (1, 'push', 3)", Access::Write),
    ("DELETE FROM events", Access::Write),
    ("CREATE TABLE t AS SELECT 1 AS x", Access::Write),
    ("DROP TABLE events", Access::Write),
    ("CREATE VIEW v AS SELECT 1 AS x", Access::Write),
    (
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/tmp/x.csv'",
        Access::Write,
    ),
    (
        "COPY (SELECT 1) TO '/tmp/hakiri-access-test.csv'",
        Access::Write,
    ),
    (
        "CREATE SOURCE s2 TYPE file OPTIONS ('tables.t.path' 'x.csv')",
        Access::Write,
    ),
    ("DROP SOURCE IF EXISTS s2", Access::Write),
    (
        "CREATE PIPELINE p2 AS INSERT INTO context.p2 SELECT * FROM drop.events",
        Access::Write,
    ),
    ("DROP PIPELINE IF EXISTS p2", Access::Write),
    ("RUN PIPELINE events", Access::Write),
    ("ALTER PIPELINE events SUSPEND", Access::Write),
    ("ALTER PIPELINE events RESET CURSOR", Access::Write),
];

#[test]
fn each_statement_kind_is_granted_alike_by_pgwire_and_mcp() {
    // The parser's verdict is the table's.
    for (sql, want) in TABLE {
        let stmts = parse_statements(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(stmts[0].access(), *want, "{sql}");
    }
    let pg_project = crate::pgwire::project();
    let env = [
        ("TEST_ADMIN_PASSWORD", "admin-secret"),
        ("TEST_ANALYST_PASSWORD", "analyst-secret"),
    ];
    let pg = HakiriServer::start(pg_project.path(), &env);
    // MCP serves a project without users (with users, serve also listens for Postgres).
    let text = std::fs::read_to_string(pg_project.path().join("hakiri.toml")).unwrap();
    let mcp_project = Project::new(text.split("[serve").next().unwrap());
    let incoming = mcp_project.path().join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::copy(
        pg_project.path().join("incoming/a.csv"),
        incoming.join("a.csv"),
    )
    .unwrap();
    mcp_project.hakiri(&["run", "events"]).ok();
    let mcp = HakiriServer::start_mcp(mcp_project.path(), &[]);

    let sqls: Vec<&str> = TABLE.iter().map(|(s, _)| *s).collect();
    let mut child = Command::new(venv_bin("python"))
        .arg(repo_root().join("tests/fixtures/access_table.py"))
        .arg(pg.url("analyst", "analyst-secret"))
        .arg(mcp.mcp_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&sqls).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "access_table.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut wrong = Vec::new();
    for ((sql, access), row) in TABLE.iter().zip(&rows) {
        let (pg_want, mcp_want) = match access {
            Access::Read => ("ok", "ok"),
            Access::Session => ("ok", "refused"),
            Access::Write => ("refused", "refused"),
        };
        // Postgres has no CREATE EXTERNAL TABLE: the wire's SQL parser refuses it first.
        let pg_parse_error = sql.starts_with("CREATE EXTERNAL TABLE")
            && row["pgwire"]
                .as_str()
                .is_some_and(|e| e.starts_with("error: sql parser error"));
        if (row["pgwire"] != pg_want && !pg_parse_error) || row["mcp"] != mcp_want {
            wrong.push(format!(
                "{sql} ({}): pgwire {} (want {pg_want}), mcp {} (want {mcp_want})",
                access.as_str(),
                row["pgwire"],
                row["mcp"]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nothing a refused statement asked for happened.
    assert_eq!(
        mcp_project.query_csv("select count(*) from events"),
        vec!["1000"]
    );
    assert_eq!(
        pg_project.query_csv("select count(*) from events"),
        vec!["1000"]
    );
}
