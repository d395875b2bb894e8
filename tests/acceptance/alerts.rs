//! `[alerts]` webhooks posted by `serve`: a receiver on 127.0.0.1 (it answers 500 to its
//! first request, so one alert has to be retried) gets exactly one `failed` alert per failed
//! run, one `suspended` alert, and one `stale` alert per pipeline that went stale.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{Project, Received, hakiri_bin, receiver};

#[test]
fn serve_posts_one_alert_per_failed_run_suspension_and_stale_pipeline() {
    let (url, got) = receiver(true);
    let p = Project::new(&format!(
        r#"
[project]
name = "shop"

[sources.files]
type = "file"
tables.orders.path = "orders.csv"

[pipelines.slow]
sql = "INSERT INTO context.slow SELECT * FROM files.orders"
schedule = {{ every = "1 hour" }}

[pipelines.bad]
sql = "INSERT INTO context.bad SELECT id / (id - id) AS x FROM files.orders"
schedule = {{ every = "1 second", suspend_after_failures = 2 }}

[alerts.ops]
url = "{url}"
on = ["failed", "suspended", "stale"]
stale_after = "3 seconds"
"#
    ));
    std::fs::write(p.path().join("orders.csv"), "id,amount\n1,10\n2,20\n").unwrap();
    // slow succeeded just before serve starts; it goes stale 3 s later.
    p.hakiri(&["run", "slow"]).ok();
    // The scheduler alone (no endpoints), its log in a file.
    let log_file = p.path().join("serve.log");
    let mut server = std::process::Command::new(hakiri_bin())
        .current_dir(p.path())
        .arg("serve")
        .env_remove("HAKIRI_PROJECT")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();
    let acked = |got: &Received| -> Vec<serde_json::Value> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.body.clone())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while acked(&got).len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Long enough for a duplicate to show up, were there one.
    std::thread::sleep(Duration::from_secs(3));
    let _ = server.kill();
    let _ = server.wait();
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let all = got.lock().unwrap().clone();
    let ok = acked(&got);
    let mut by_kind: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for b in &ok {
        by_kind
            .entry((
                b["alert"].as_str().unwrap_or("").into(),
                b["pipeline"].as_str().unwrap_or("").into(),
            ))
            .or_default()
            .push(b["run_id"].as_str().unwrap_or("").to_string());
        assert_eq!(b["project"], "shop", "{b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
    }
    let keys: Vec<_> = by_kind.keys().cloned().collect();
    assert_eq!(
        keys,
        [
            ("failed", "bad"),
            ("stale", "bad"),
            ("stale", "slow"),
            ("suspended", "bad")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
        "alerts: {all:?}\nlog: {log}"
    );
    // One failed alert per failed run of bad, each once.
    let failed_runs = p.query_csv("select run_id from hakiri.runs where pipeline = 'bad' and status = 'failed' order by run_id");
    let mut alerted = by_kind[&("failed".into(), "bad".into())].clone();
    alerted.sort();
    assert_eq!(alerted, failed_runs, "alerts: {all:?}");
    assert_eq!(failed_runs.len(), 2, "suspended after 2 failures");
    assert_eq!(by_kind[&("stale".into(), "slow".into())].len(), 1);
    assert_eq!(by_kind[&("stale".into(), "bad".into())].len(), 1);
    assert_eq!(by_kind[&("suspended".into(), "bad".into())].len(), 1);
    // The first post was answered 500 and retried: one more request than alerts.
    assert_eq!(all[0].status, 500);
    assert_eq!(all.len(), ok.len() + 1, "{all:?}");
    let failed = &ok.iter().find(|b| b["alert"] == "failed").unwrap()["message"];
    assert!(
        failed.as_str().unwrap().contains("Divide by zero"),
        "{failed}"
    );
}
