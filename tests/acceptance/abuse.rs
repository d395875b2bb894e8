//! `hakiri serve` against hostile and broken clients (tests/fixtures/abuse.py): 500 idle
//! connections, garbage and 1 GB length prefixes, slowloris, a hundred wrong passwords, and
//! oversized or malformed MCP requests. After each, a well-behaved client is still served.

use std::process::{Command, Stdio};

use crate::support::{HakiriServer, Project, repo_root, venv_bin};

const ENV: [(&str, &str); 2] = [
    ("TEST_ADMIN_PASSWORD", "admin-secret"),
    ("TEST_ANALYST_PASSWORD", "analyst-secret"),
];

/// Runs `abuse.py` with the test venv's Python (psycopg) and returns its stdout; panics
/// with both outputs when it says the server misbehaved.
fn abuse(args: &[String]) -> String {
    let out = Command::new(venv_bin("python"))
        .arg(repo_root().join("tests/fixtures/abuse.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run abuse.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "abuse.py {}:\n{stdout}\n{stderr}",
        args.join(" ")
    );
    stdout
}

/// `abuse.py <check> --port P --user analyst --password ...` and any extra arguments.
fn pg_abuse(port: u16, check: &str, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        check.to_string(),
        "--port".to_string(),
        port.to_string(),
        "--user".to_string(),
        "analyst".to_string(),
        "--password".to_string(),
        "analyst-secret".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    abuse(&args)
}

#[track_caller]
fn assert_lines(stdout: &str, checks: &[&str]) {
    for check in checks {
        assert!(
            stdout.lines().any(|l| l.starts_with(check)),
            "missing '{check}' in:\n{stdout}"
        );
    }
}

#[test]
fn five_hundred_idle_connections_do_not_starve_a_query() {
    let p = crate::pgwire::project();
    let server = HakiriServer::start(p.path(), &ENV);
    let out = pg_abuse(server.port, "connections", &["--count", "500"]);
    assert_lines(&out, &["connections ok: 500 opened at once"]);
    let status = server.stop();
    assert!(status.success(), "hakiri serve exited with {status}");
}

#[test]
fn garbage_and_gigabyte_length_prefixes_are_hung_up_on() {
    let p = crate::pgwire::project();
    let server = HakiriServer::start(p.path(), &ENV);
    let out = pg_abuse(server.port, "garbage", &["--seed", "7"]);
    assert_lines(
        &out,
        &[
            "garbage ok: 12 random startup packets (seed 7)",
            "garbage ok: 1 GB length on the startup packet",
            "garbage ok: 1 GB length on the SASL response",
            "garbage ok: 1 GB length on a query after login",
            "garbage ok: select 1 still answered",
        ],
    );
    let status = server.stop();
    assert!(status.success(), "hakiri serve exited with {status}");
}

#[test]
fn slowloris_startups_do_not_delay_other_clients() {
    let p = crate::pgwire::project();
    let server = HakiriServer::start(p.path(), &ENV);
    let out = pg_abuse(
        server.port,
        "slowloris",
        &["--count", "50", "--seconds", "5"],
    );
    assert_lines(&out, &["slowloris ok: 50 clients sent a byte a second"]);
    let status = server.stop();
    assert!(status.success(), "hakiri serve exited with {status}");
}

/// Whether `line` names a client's address: 127.0.0.1 and a port other than the server's.
fn names_a_peer(line: &str, server_port: u16) -> bool {
    line.match_indices("127.0.0.1:").any(|(i, m)| {
        let port: String = line[i + m.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        !port.is_empty() && port != server_port.to_string()
    })
}

#[test]
fn a_hundred_wrong_passwords_are_refused_and_logged_with_the_peer() {
    let p = crate::pgwire::project();
    let server = HakiriServer::start_logged(p.path(), &ENV);
    let out = pg_abuse(server.port, "wrong-passwords", &["--count", "100"]);
    assert_lines(
        &out,
        &["wrong-passwords ok: 100 wrong passwords for 'analyst' refused"],
    );
    let log = server.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("password") || l.contains("auth") || l.contains("login")
        })
        .collect();
    assert!(
        failures.iter().any(|l| names_a_peer(l, server.port)),
        "no failed login in the log names the client's address (127.0.0.1:<port>):\n{log}"
    );
    // The log names who failed, never what they tried, nor the right password.
    for secret in ["analyst-secretx", "wrong-42", "analyst-secret"] {
        assert!(!log.contains(secret), "the log holds '{secret}':\n{log}");
    }
}

#[test]
fn oversized_and_malformed_mcp_requests_are_refused() {
    // No [serve.users]: `hakiri serve --mcp-listen` then serves MCP alone, and the banner's
    // first line is the MCP endpoint's.
    let p = Project::new(
        r#"
[sources.drop]
type = "file"
tables.events.path = "incoming"
tables.events.format = "csv"

[pipelines.events]
cursor = { kind = "token" }
sql = "INSERT INTO context.events SELECT * FROM drop.events"
"#,
    );
    let dir = p.path().join("incoming");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.csv"), "id,kind\n1,push\n2,issue\n").unwrap();
    let server = HakiriServer::start_mcp(p.path(), &[]);
    let out = abuse(&[
        "mcp".into(),
        "--url".into(),
        server.mcp_url(),
        "--oversize-mb".into(),
        "20".into(),
    ]);
    assert_lines(
        &out,
        &[
            "mcp ok: 18 malformed requests refused",
            "mcp ok: a 20 MB request (Content-Length) refused",
            "mcp ok: a 20 MB request (chunked) refused",
            "mcp ok: initialize still succeeds afterwards",
        ],
    );
}
