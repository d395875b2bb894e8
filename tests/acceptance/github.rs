//! The github connector against tests/fixtures/github_server.py, a local server answering
//! in the shape GitHub's REST API documents: GitHub itself cannot be reached from the test
//! machines. Pagination by `Link` headers, `since` on incremental runs, the token sent as a
//! bearer token, and rate-limit responses waited out.

use std::time::Instant;

use crate::support::{Project, Run, Server, hakiri};
use serde_json::Value;

const TOKEN_ENV: &str = "HAKIRI_TEST_GH_TOKEN";

fn run(p: &Project, args: &[&str]) -> Run {
    hakiri(p.path(), args, &[(TOKEN_ENV, "test-token")])
}

#[test]
fn issues_page_by_link_headers_send_since_and_wait_out_rate_limits() {
    let server = Server::github();
    server.get("/admin/add?n=250");
    let p = Project::new(&format!(
        r#"
[sources.gh]
type = "github"
repo = "octo/hello"
token = "env:{TOKEN_ENV}"
base_url = "{}"

[pipelines.issues]
cursor = {{ kind = "monotonic", column = "updated_at", initial = "2000-01-01T00:00:00Z" }}
sql = "INSERT INTO context.issues SELECT * FROM gh.issues WHERE updated_at > $cursor"
"#,
        server.url()
    ));
    let tables = run(&p, &["source", "tables", "gh"]).ok().stdout;
    assert_eq!(
        tables.lines().collect::<Vec<_>>(),
        vec!["issues", "pull_requests", "commits", "releases"]
    );

    let started = Instant::now();
    let out = run(&p, &["run", "issues"]).ok().stdout;
    assert!(
        out.contains("250 rows written") && out.contains("3 pages"),
        "{out}"
    );
    // A 403 with X-RateLimit-Remaining: 0 and a 429 with Retry-After were waited out.
    assert!(
        started.elapsed().as_secs_f64() >= 2.0,
        "the rate limits were not waited out"
    );
    let log: Vec<Value> = serde_json::from_str(&server.get("/admin/log")).unwrap();
    let pages: Vec<&str> = log
        .iter()
        .map(|r| r["query"]["page"].as_str().unwrap_or("1"))
        .collect();
    assert_eq!(pages, vec!["1", "2", "2", "3", "3"]);
    for r in &log {
        assert_eq!(r["auth"], "Bearer test-token");
        assert_eq!(r["accept"], "application/vnd.github+json");
        assert_eq!(r["query"]["since"], "2000-01-01T00:00:00Z");
    }

    // New issues: the next run asks GitHub only for what changed since the cursor.
    server.get("/admin/add?n=30");
    let out = run(&p, &["run", "issues"]).ok().stdout;
    assert!(out.contains("30 rows written"), "{out}");
    let log: Vec<Value> = serde_json::from_str(&server.get("/admin/log")).unwrap();
    let since = log.last().unwrap()["query"]["since"]
        .as_str()
        .unwrap()
        .to_string();
    let cursor = p.query_csv("select value from hakiri.cursor_history order by id");
    assert_eq!(cursor.len(), 2);
    assert_eq!(
        since,
        cursor[0].replace(' ', "T"),
        "the second run sent since=<committed cursor>"
    );
    let rows = p.query_csv("select count(*), count(distinct number), max(number) from issues");
    assert_eq!(rows, vec!["280,280,280"]);
    // Nested objects stay queryable as JSON.
    let login = p.query_csv("select json_get_str(\"user\", 'login') from issues where number = 4");
    assert_eq!(login, vec!["user1"]);
}
