//! OpenLineage events: a receiver on 127.0.0.1 gets START and COMPLETE for a run, START and
//! FAIL for a failing one, with the job, its inputs named by their connection, the output
//! context table and its column lineage; every event validates against the official
//! OpenLineage JSON Schema (spec 2-0-2, as shipped in the datafusion-openlineage crate).

use std::path::PathBuf;
use std::process::Command;

use crate::support::{Project, hakiri, receiver, venv_bin};

/// The official schemas, from the registry's copy of the datafusion-openlineage crate.
fn schemas() -> PathBuf {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let src = home.join("registry/src");
    for index in std::fs::read_dir(&src).unwrap().flatten() {
        let dir = index
            .path()
            .join("datafusion-openlineage-0.0.12/tests/schemas/openlineage");
        if dir.join("OpenLineage.json").is_file() {
            return dir;
        }
    }
    panic!("OpenLineage.json not found under {}", src.display());
}

/// Validates each event against OpenLineage.json (RunEvent) and its facets against their
/// own schemas, with Python's jsonschema; returns the validator's complaints.
fn validate(events: &[serde_json::Value]) -> String {
    let dir = schemas();
    let script = r##"
import json, sys, pathlib, jsonschema
from referencing import Registry, Resource
d = pathlib.Path(sys.argv[1])
core = json.loads((d / "OpenLineage.json").read_text())
reg = Registry().with_resource(core["$id"], Resource.from_contents(core))
facets = {}
for f in (d / "facets").glob("*.json"):
    s = json.loads(f.read_text())
    reg = reg.with_resource(s["$id"], Resource.from_contents(s))
    facets[s["$id"]] = s
run_event = {"$ref": core["$id"] + "#/$defs/RunEvent"}
bad = []
for i, e in enumerate(json.loads(sys.stdin.read())):
    for err in jsonschema.Draft202012Validator(run_event, registry=reg).iter_errors(e):
        bad.append(f"event {i}: {err.message} at {list(err.path)}")
    def facets_of(x):
        for k, v in (x or {}).items():
            yield k, v
    for where, fs in [("run", e["run"].get("facets")), ("job", e["job"].get("facets"))] + \
            [("input", d.get("facets")) for d in e.get("inputs", [])] + \
            [("output", d.get("facets")) for d in e.get("outputs", [])]:
        for name, f in facets_of(fs):
            url, _, ref = f["_schemaURL"].partition("#")
            if url not in facets:
                bad.append(f"event {i}: {where} facet {name}: unknown schema {url}")
                continue
            schema = {"$ref": url + "#" + ref}
            for err in jsonschema.Draft202012Validator(schema, registry=reg).iter_errors(f):
                bad.append(f"event {i}: {where} facet {name}: {err.message}")
print("\n".join(bad))
"##;
    let mut child = Command::new(venv_bin("python3"))
        .args(["-c", script])
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(events).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "validator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn runs_emit_start_and_complete_or_fail_events_that_validate() {
    let (url, got) = receiver(false);
    let base = url.trim_end_matches("/hook").to_string();
    let p = Project::new(
        r#"
[project]
name = "shop"

[sources.files]
type = "file"
tables.orders.path = "orders.csv"

[pipelines.orders]
sql = "INSERT INTO context.orders SELECT id, upper(customer) AS customer, amount * 2 AS doubled FROM files.orders"

[pipelines.broken]
sql = "INSERT INTO context.broken SELECT id / (id - id) AS x FROM files.orders"
"#,
    );
    std::fs::write(
        p.path().join("orders.csv"),
        "id,customer,amount\n1,ada,10\n2,bob,20\n",
    )
    .unwrap();
    let env = [
        ("OPENLINEAGE_URL", base.as_str()),
        ("OPENLINEAGE_API_KEY", "s3cret"),
        ("OPENLINEAGE_NAMESPACE", "team"),
    ];
    hakiri(p.path(), &["run", "orders"], &env).ok();
    let r = hakiri(p.path(), &["run", "broken"], &env);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // Without OPENLINEAGE_URL nothing is sent.
    hakiri(p.path(), &["run", "orders"], &[]).ok();

    let got = got.lock().unwrap().clone();
    let kinds: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.body["job"]["name"].as_str().unwrap().to_string(),
                r.body["eventType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("orders", "START"),
            ("orders", "COMPLETE"),
            ("broken", "START"),
            ("broken", "FAIL")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
        "{got:#?}"
    );
    for r in &got {
        assert_eq!(r.path, "/api/v1/lineage");
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Bearer s3cret")
        );
        assert_eq!(r.body["job"]["namespace"], "team");
    }
    let events: Vec<serde_json::Value> = got.iter().map(|r| r.body.clone()).collect();
    // One run id per run, a UUID.
    assert_eq!(events[0]["run"]["runId"], events[1]["run"]["runId"]);
    assert_ne!(events[0]["run"]["runId"], events[2]["run"]["runId"]);
    assert_eq!(events[2]["run"]["runId"], events[3]["run"]["runId"]);
    // Inputs named by their connection (the project folder of a file source); the output
    // is the context table, with the columns' lineage from the plan.
    let project = format!("file://{}", p.path().display());
    let complete = &events[1];
    assert_eq!(
        complete["inputs"][0]["namespace"],
        project.as_str(),
        "{complete:#}"
    );
    assert_eq!(complete["inputs"][0]["name"], "files.orders");
    assert_eq!(complete["outputs"][0]["name"], "context.orders");
    let cols = &complete["outputs"][0]["facets"]["columnLineage"]["fields"];
    let from = |c: &str| {
        let f = &cols[c]["inputFields"][0];
        (
            f["field"].as_str().unwrap_or("").to_string(),
            f["transformations"][0]["subtype"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    assert_eq!(from("id"), ("id".into(), "IDENTITY".into()), "{cols:#}");
    assert_eq!(
        from("customer"),
        ("customer".into(), "TRANSFORMATION".into())
    );
    assert_eq!(from("doubled"), ("amount".into(), "TRANSFORMATION".into()));
    assert!(
        complete["job"]["facets"]["sql"]["query"]
            .as_str()
            .unwrap()
            .contains("upper(customer)")
    );
    let fail = &events[3]["run"]["facets"]["errorMessage"]["message"];
    assert!(fail.as_str().unwrap().contains("Divide by zero"), "{fail}");
    assert_eq!(
        validate(&events),
        "",
        "every event validates against the official schema"
    );
    // The validator does reject a broken event.
    let mut broken = events[1].clone();
    broken["run"]["runId"] = serde_json::json!("not-a-uuid");
    broken.as_object_mut().unwrap().remove("producer");
    assert!(
        validate(&[broken]).contains("producer"),
        "the validator catches a missing field"
    );
}
