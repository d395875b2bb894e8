//! The MCP server with the official MCP Python SDK as the client (tests/fixtures/mcp_client.py),
//! over stdio (`hakiri mcp`) and streamable HTTP (`hakiri serve --mcp-listen`).
//!
//! The project has three pipelines run on two days by the CLI with a fixed clock
//! (`HAKIRI_NOW`); the GitHub source is the local stand-in of github.rs.

use std::process::Command;

use crate::support::{HakiriServer, Project, Server, hakiri, venv_bin};

const TOKEN_ENV: &str = "HAKIRI_TEST_MCP_GH_TOKEN";
/// The GitHub token: no tool result may contain it.
const SECRET: &str = "ghp_hakiri_mcp_test_secret_0123456789";
const DAY1: &str = "2026-11-26T10:00:00Z";
const DAY2: &str = "2026-11-27T10:00:00Z";
const TODAY: &str = "2026-11-28";
/// Issues the GitHub stand-in adds before each day's run.
const ISSUES_DAY1: usize = 30;
const ISSUES_DAY2: usize = 12;

/// A project whose three pipelines ran on DAY1 and DAY2, and its GitHub server.
fn two_days() -> (Project, Server) {
    let github = Server::github();
    let p = Project::new(&format!(
        r#"
[sources.gh]
type = "github"
repo = "octo/hello"
token = "env:{TOKEN_ENV}"
base_url = "{}"

[sources.drop]
type = "file"
tables.events.path = "incoming"
tables.events.format = "csv"
tables.people.path = "people.csv"
tables.people.format = "csv"

[pipelines.issues]
cursor = {{ kind = "monotonic", column = "updated_at", initial = "2000-01-01T00:00:00Z" }}
sql = "INSERT INTO context.issues SELECT * FROM gh.issues WHERE updated_at > $cursor"

[pipelines.events]
cursor = {{ kind = "token" }}
sql = "INSERT INTO context.events SELECT * FROM drop.events"

[pipelines.people]
mode = "replace"
sql = "INSERT INTO context.people SELECT * FROM drop.people"
"#,
        github.url()
    ));
    let dir = p.path();
    std::fs::create_dir_all(dir.join("incoming")).unwrap();
    for (day, now, issues) in [(1, DAY1, ISSUES_DAY1), (2, DAY2, ISSUES_DAY2)] {
        github.get(&format!("/admin/add?n={issues}"));
        std::fs::write(
            dir.join(format!("incoming/day{day}.csv")),
            format!("id,kind\n{day}1,push\n{day}2,issue\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("people.csv"),
            format!("login,team\nada,core\nlinus,day{day}\n"),
        )
        .unwrap();
        for pipeline in ["issues", "events", "people"] {
            let out = hakiri(
                dir,
                &["run", pipeline],
                &[(TOKEN_ENV, SECRET), ("HAKIRI_NOW", now)],
            )
            .ok()
            .stdout;
            if pipeline == "issues" {
                assert!(out.contains(&format!("{issues} rows written")), "{out}");
            }
        }
    }
    (p, github)
}

fn client(args: &[String], project: &Project) -> String {
    let out = Command::new(venv_bin("python"))
        .arg(crate::support::repo_root().join("tests/fixtures/mcp_client.py"))
        .args(args)
        .current_dir(project.path())
        .env(TOKEN_ENV, SECRET)
        .env("HAKIRI_NOW", format!("{TODAY}T09:00:00Z"))
        .env("MCP_TODAY", TODAY)
        .env("MCP_SECRET", SECRET)
        .env("MCP_ISSUES_YESTERDAY", ISSUES_DAY2.to_string())
        .env_remove("HAKIRI_PROJECT")
        .output()
        .expect("run mcp_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for check in [
        "tools listed: 13",
        "every tool called with valid and invalid input",
        "context.schema gives the history: ",
        "context.query: typed rows, limit, refusals",
        "pipeline.run then run.tail",
        "run.tail and run.trace of a CLI run",
        &format!("issues ingested yesterday: {ISSUES_DAY2}"),
        "no secret in",
    ] {
        assert!(
            stdout.contains(check),
            "missing '{check}':\n{stdout}\n{stderr}"
        );
    }
    stdout
}

#[test]
fn mcp_over_stdio_serves_every_tool_and_answers_from_the_context() {
    let (p, _github) = two_days();
    let bin = crate::support::hakiri_bin().display().to_string();
    client(&["stdio".into(), bin, p.path().display().to_string()], &p);
}

#[test]
fn mcp_over_http_serves_every_tool_and_a_token_guards_it() {
    let (p, _github) = two_days();
    let env = [(TOKEN_ENV, SECRET), ("HAKIRI_NOW", "2026-11-28T09:00:00Z")];
    let server = HakiriServer::start_mcp(p.path(), &env);
    client(&["http".into(), server.mcp_url()], &p);
    drop(server);

    // With a token set, a request without it is refused and one with it is served.
    let token = "mcp-test-token";
    let env = [
        (TOKEN_ENV, SECRET),
        ("HAKIRI_NOW", "2026-11-28T09:00:00Z"),
        ("HAKIRI_MCP_TOKEN", token),
    ];
    let server = HakiriServer::start_mcp(p.path(), &env);
    let refused = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(server.mcp_url())
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");
    client(&["http".into(), server.mcp_url(), token.into()], &p);

    // Any address but loopback needs a token.
    let open = hakiri(p.path(), &["serve", "--mcp-listen", "0.0.0.0:0"], &[]);
    assert_ne!(open.code, 0);
    assert!(open.stderr.contains("HAKIRI_MCP_TOKEN"), "{}", open.stderr);
}
