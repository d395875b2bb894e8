//! `hakiri serve` as a scheduler: SIGTERM in the middle of a scheduled run, the short soak,
//! and the schedule in `hakiri pipeline describe` / `hakiri.schedules`. (Slot arithmetic
//! over a simulated day, overlapping runs, suspension, retries and downtime are tested
//! with a manual clock in engine/src/scheduler.rs.)

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Project, Server, hakiri_bin, python, repo_root};

const ROWS: u64 = 600;

fn feed_project(server: &Server) -> Project {
    Project::new(&format!(
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
query = {{ size = "20", delay_ms = "100" }}
schema = "id bigint, name text, amount bigint"

[pipelines.feed]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.feed SELECT * FROM api.feed"
schedule = {{ every = "2 seconds", retries = 1, suspend_after_failures = 5 }}
"#,
        server.url()
    ))
}

/// SIGTERM while a scheduled token run is half-way: the process exits within its grace
/// (plus a bound for start-up of the stop), the run ends at a checkpoint with what it
/// committed kept, and the next run completes the table without a lost or doubled row.
#[test]
fn sigterm_during_a_scheduled_run_exits_in_time_and_loses_nothing() {
    let server = Server::paged();
    server.get(&format!("/admin/grow?n={ROWS}"));
    let p = feed_project(&server);
    let describe = p.hakiri(&["pipeline", "describe", "feed"]).ok().stdout;
    assert!(
        describe
            .contains("schedule:   SCHEDULE EVERY '2 seconds' RETRY 1 SUSPEND AFTER 5 FAILURES")
            && describe.contains("next run at "),
        "{describe}"
    );
    let mut serve = Command::new(hakiri_bin())
        .current_dir(p.path())
        .args(["serve", "--shutdown-grace", "2", "--log-format", "json"])
        .env_remove("HAKIRI_PROJECT")
        .env("HAKIRI_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hakiri serve");
    // Wait for the scheduled run to commit a checkpoint (30 pages of 100 ms each in all).
    let db = p.path().join(".hakiri/catalog.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no checkpoint within 60 s");
        if let Ok(con) = rusqlite::Connection::open(&db) {
            let committed: i64 = con
                .query_row(
                    "SELECT COUNT(*) FROM cursors WHERE pipeline = 'feed'",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            if committed > 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status();
    let status = serve.wait().expect("wait for hakiri serve");
    let took = stop.elapsed();
    let mut log = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        took < Duration::from_secs(7),
        "exit took {took:?} with a 2 s grace\n{log}"
    );
    assert!(
        log.contains("stopping (terminate)") && log.ends_with("stopped\n"),
        "{log}"
    );
    // Structured logs carry the run id.
    let started = log
        .lines()
        .find(|l| l.contains("\"run started\""))
        .unwrap_or_else(|| panic!("no run started line:\n{log}"));
    let line: serde_json::Value = serde_json::from_str(started).unwrap();
    assert_eq!(line["fields"]["pipeline"], "feed");
    assert!(
        line["fields"]["run_id"]
            .as_str()
            .unwrap()
            .starts_with("feed-")
    );

    // The stopped run: failed with the reason, its checkpoints kept.
    let runs = p.query_csv("select status, error from hakiri.runs order by started_at");
    let last = runs.last().expect("a run").clone();
    // 30 pages of 100 ms, a checkpoint every 2: the run cannot have finished; it stopped at
    // the checkpoint after the signal.
    assert!(
        last.starts_with("failed")
            && last.contains("stopped: the process was stopping")
            && last.contains("committed checkpoint(s)"),
        "{runs:?}"
    );
    let kept: u64 = p.query_csv("select count(*) from feed")[0].parse().unwrap();
    assert!(kept > 0 && kept < ROWS, "{kept} rows after the stop");

    // The next run resumes from the committed token; the table equals the source.
    p.hakiri(&["run", "feed"]).ok();
    assert_eq!(
        p.query_csv("select count(*), count(distinct id), sum(id) from feed"),
        vec![format!("{ROWS},{ROWS},{}", ROWS * (ROWS + 1) / 2)]
    );
    // The stop was not counted as a failure of the pipeline.
    assert_eq!(
        p.query_csv("select consecutive_failures, suspended from hakiri.schedules"),
        vec!["0,0"]
    );
}

/// The short soak: 30 runs of a 1-second schedule through scripts/soak; every run succeeds
/// and resident memory grows by less than 50 MiB between warm-up and the last runs.
#[test]
fn short_soak_every_run_succeeds_and_memory_stays_flat() {
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("scripts/soak"))
        .args(["--runs", "30", "--every", "1", "--rows", "2000", "--json"])
        .arg(report.path())
        .env("HAKIRI_BIN", hakiri_bin())
        .output()
        .expect("run scripts/soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.path()).unwrap()).unwrap();
    let runs = r["runs"].as_u64().unwrap();
    assert!(runs >= 30, "{r}");
    assert_eq!(r["succeeded"].as_u64(), Some(runs), "{r}");
    assert!(r["rss_growth_mib"].as_f64().unwrap() < 50.0, "{r}");
    assert_eq!(r["exit_code"].as_i64(), Some(0), "{r}");
}
