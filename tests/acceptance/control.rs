//! `hakiri control`: the shared document (convergence of Rust peers and the official JS
//! client under node), durability across `kill -9`, the security of every call, the OIDC
//! sign-in against a real provider (oidc-provider-mock), apply and versions, and dispatch
//! to nodes (`hakiri serve --control`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hakiri_control::client::{Api, DocClient};
use hakiri_control::loro::{LoroDoc, LoroMap, ValueOrContainer, VersionVector};
use hakiri_control::loro_protocol::{Permission, UpdateStatusCode};
use serde_json::{Value, json};

use crate::support::{Moments, Server, free_port, hakiri, hakiri_bin, repo_root, venv_bin};

/// `hakiri control serve` on a free port, with its log in a file; SIGKILLed on drop.
struct Control {
    child: Child,
    url: String,
    data: PathBuf,
    log: PathBuf,
}

impl Control {
    fn start(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Control {
        let log = data.with_extension("log");
        let mut cmd = Command::new(hakiri_bin());
        cmd.args(["control", "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env("HAKIRI_LOG", "info,hakiri_control=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log"),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start hakiri control serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("hakiri control listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Control {
            child,
            url,
            data: data.to_path_buf(),
            log,
        }
    }

    fn ws(&self) -> String {
        format!("{}/sync", self.url.replace("http://", "ws://"))
    }

    /// A token from the control plane's key (`hakiri control token`).
    fn token(&self, sub: &str, ttl: &str) -> String {
        let data = self.data.to_string_lossy().into_owned();
        let r = hakiri(
            Path::new("/"),
            &[
                "control", "token", "--data", &data, "--sub", sub, "--ttl", ttl,
            ],
            &[],
        )
        .ok();
        r.stdout.trim().to_string()
    }

    fn api(&self, token: Option<&str>) -> Api {
        Api::new(&self.url, token.map(str::to_string))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates project `id` as `sub`; returns the token that carries its rights.
async fn create_project(c: &Control, sub: &str, id: &str) -> String {
    let bootstrap = c.token(sub, "1h");
    let r = c
        .api(Some(&bootstrap))
        .post("/api/projects", json!({ "id": id }))
        .await
        .expect("create the project");
    r["token"].as_str().expect("a token").to_string()
}

/// The project every test starts from: an http source and pipelines p0..p4, each query
/// carrying a `/* note */` the editors type into (edits stay inside it, so the document
/// stays a valid manifest).
fn team_manifest(pipelines: &[(&str, &str, &str)]) -> String {
    let mut m = String::from(
        r#"[project]
name = "team"

[sources.api]
type = "http"
base_url = "${HAKIRI_CONTROL_API_URL:-http://127.0.0.1:1}"
schema = "id bigint, name text, amount bigint, bucket bigint"
tables.items.path = "/offset"
tables.items.records = "data"
"#,
    );
    for (name, placement, every) in pipelines {
        m.push_str(&format!(
            r#"
[pipelines.{name}]
sql = "INSERT INTO context.{name} SELECT id, name, amount, bucket /* note */ FROM api.items WHERE id > $cursor"
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
placement = "{placement}"
schedule = {{ every = "{every}" }}
"#
        ));
    }
    m
}

const FIVE: [(&str, &str, &str); 5] = [
    ("p0", "any", "5 minutes"),
    ("p1", "any", "5 minutes"),
    ("p2", "node:a", "5 minutes"),
    ("p3", "node:b", "5 minutes"),
    ("p4", "any", "5 minutes"),
];

async fn push(c: &Control, token: &str, project: &str, manifest_toml: &str) {
    let manifest =
        hakiri_control::doc::manifest_json_from_toml(manifest_toml).expect("valid manifest");
    c.api(Some(token))
        .post(
            &format!("/api/projects/{project}/import"),
            json!({ "manifest": manifest }),
        )
        .await
        .expect("import the manifest");
}

/// JSON with sorted keys and no spaces: the same text the JS editor hashes.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).unwrap(),
                        canonical(&o[*k])
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => serde_json::to_string(other).unwrap(),
    }
}

fn sha256(text: &str) -> String {
    use std::fmt::Write as _;
    let out = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    let mut s = String::new();
    let _ = write!(
        s,
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
    );
    s
}

fn doc_json(doc: &LoroDoc) -> Value {
    serde_json::to_value(doc.get_deep_value()).expect("document as JSON")
}

// --- the Rust editor: the same edit mix as tests/fixtures/control/editor.mjs

fn map_of(parent: &LoroMap, key: &str) -> Option<LoroMap> {
    match parent.get(key) {
        Some(ValueOrContainer::Container(c)) => c.into_map().ok(),
        _ => None,
    }
}

/// Waits until `c` has pipeline `name` (the join's backfill arrived).
async fn has_pipeline(c: &DocClient, name: &str) -> LoroMap {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = map_of(&c.doc.get_map("pipelines"), name) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "pipeline {name} never reached the client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn note_span(sql: &str) -> Option<(usize, usize)> {
    let a = sql.find("/*")?;
    let b = sql[a + 2..].find("*/")? + a + 2;
    Some((a + 2, b))
}

fn rust_edit(doc: &LoroDoc, rng: &mut Moments, name: &str, counter: &mut u64) {
    const MODES: [&str; 2] = ["append", "replace"];
    const PLACEMENTS: [&str; 3] = ["any", "node:a", "node:b"];
    const EVERY: [&str; 4] = ["1 minute", "5 minutes", "15 minutes", "1 hour"];
    const TRANSFORMS: [&str; 6] = [
        "upper(name)",
        "lower(name)",
        "amount * 100",
        "id + 0",
        "bucket",
        "coalesce(name, '')",
    ];
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 _,*()=";
    let pick = |rng: &mut Moments, n: usize| rng.next_ms(0, n as u64) as usize;
    let pipelines = doc.get_map("pipelines");
    let Some(p) = map_of(&pipelines, &format!("p{}", pick(rng, 5))) else {
        return;
    };
    // The session imports into this document from another thread, so a position read here
    // may be gone by the time it is used: such an edit fails and is skipped.
    match pick(rng, 100) {
        0..=13 => {
            let _ = p.insert("mode", MODES[pick(rng, 2)]);
        }
        14..=21 => {
            let _ = p.insert("placement", PLACEMENTS[pick(rng, 3)]);
        }
        22..=27 => {
            let _ = p
                .ensure_mergeable_map("schedule")
                .unwrap()
                .insert("every", EVERY[pick(rng, 4)]);
        }
        28..=61 => {
            let t = p.ensure_mergeable_text("sql").unwrap();
            let s = t.to_string();
            if let Some((a, b)) = note_span(&s) {
                // Unicode positions equal byte positions here: the text is ASCII.
                if rng.next_ms(0, 3) == 0 && b > a {
                    let pos = a + pick(rng, b - a);
                    let len = 1 + pick(rng, 6.min(b - pos));
                    let _ = t.delete(pos, len);
                } else if b - a > 300 {
                    let _ = t.delete(a, 20);
                } else {
                    let n = 1 + pick(rng, 6);
                    let snippet: String = (0..n)
                        .map(|_| ALPHABET[pick(rng, ALPHABET.len())] as char)
                        .collect();
                    let _ = t.insert(a + pick(rng, b - a + 1), &snippet);
                }
            }
        }
        62..=71 => {
            let l = p.ensure_mergeable_movable_list("transforms").unwrap();
            *counter += 1;
            let item = format!("{} AS {name}_{counter}", TRANSFORMS[pick(rng, 6)]);
            if l.len() >= 12 {
                let _ = l.delete(pick(rng, l.len()), 1);
            } else {
                let _ = l.insert(pick(rng, l.len() + 1), item);
            }
        }
        72..=84 => {
            let l = p.ensure_mergeable_movable_list("transforms").unwrap();
            if l.len() >= 2 {
                let from = pick(rng, l.len());
                let mut to = pick(rng, l.len() - 1);
                if to >= from {
                    to += 1;
                }
                let _ = l.mov(from, to);
            }
        }
        85..=91 => {
            let l = p.ensure_mergeable_movable_list("transforms").unwrap();
            if !l.is_empty() {
                let _ = l.delete(pick(rng, l.len()), 1);
            }
        }
        _ => {
            if let Some(s) = map_of(&doc.get_map("sources"), "api") {
                let url = [
                    "${HAKIRI_CONTROL_API_URL:-http://127.0.0.1:1}",
                    "${HAKIRI_CONTROL_API_URL:-http://127.0.0.1:2}",
                ];
                let _ = s.insert("base_url", url[pick(rng, 2)]);
            }
        }
    }
    doc.commit();
}

/// Edits for `secs`, with random disconnects; ends connected with everything acknowledged.
async fn rust_editor(
    mut c: DocClient,
    seed: u64,
    name: &'static str,
    secs: f64,
) -> (DocClient, u64) {
    let mut rng = Moments(seed);
    let mut counter = 0;
    let mut edits = 0u64;
    let start = Instant::now();
    let mut next_net = Instant::now() + Duration::from_secs(2);
    while start.elapsed().as_secs_f64() < secs {
        c.edit(|doc| rust_edit(doc, &mut rng, name, &mut counter));
        edits += 1;
        if Instant::now() >= next_net {
            next_net = Instant::now() + Duration::from_secs(2);
            if rng.next_ms(0, 10) < 4 {
                c.disconnect().await;
                // Edits go on offline.
                let offline = Instant::now() + Duration::from_millis(rng.next_ms(200, 1500));
                while Instant::now() < offline {
                    c.edit(|doc| rust_edit(doc, &mut rng, name, &mut counter));
                    edits += 1;
                    tokio::time::sleep(Duration::from_millis(rng.next_ms(20, 50))).await;
                }
                c.reconnect().await.expect("reconnect");
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.next_ms(20, 50))).await;
    }
    if !c.connected() {
        c.reconnect().await.expect("reconnect");
    }
    c.settle(None, Duration::from_secs(30))
        .await
        .expect("every edit acknowledged");
    (c, edits)
}

fn node_bin() -> &'static str {
    "node"
}

fn js_fixture() -> PathBuf {
    let dir = repo_root().join("tests/fixtures/control");
    assert!(
        dir.join("node_modules/loro-websocket").exists(),
        "the JS client is not installed: run scripts/test (npm ci in {})",
        dir.display()
    );
    dir
}

async fn server_document(c: &Control, token: &str, project: &str) -> Value {
    c.api(Some(token))
        .get(&format!("/api/projects/{project}/document"))
        .await
        .expect("the server's document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_two_rust_and_the_js_client_converge_and_the_result_applies_and_plans() {
    let secs: f64 = std::env::var("HAKIRI_CONVERGENCE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let tmp = tempfile::tempdir().unwrap();
    let c = Control::start(&tmp.path().join("control"), &[], &[]);
    let token = create_project(&c, "alice", "team").await;
    push(&c, &token, "team", &team_manifest(&FIVE)).await;

    let r1 = DocClient::connect(&c.ws(), "team", &token, LoroDoc::new())
        .await
        .expect("rust 1 joins");
    let r2 = DocClient::connect(&c.ws(), "team", &token, LoroDoc::new())
        .await
        .expect("rust 2 joins");
    assert_eq!(r1.permission(), Some(Permission::Write));
    let mut js = Command::new(node_bin())
        .current_dir(js_fixture())
        .args([
            "editor.mjs",
            "--url",
            &c.ws(),
            "--room",
            "team",
            "--token",
            &token,
            "--seed",
            "7",
        ])
        .args(["--seconds", &secs.to_string(), "--name", "js"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs the JS editor");
    let mut js_out = BufReader::new(js.stdout.take().unwrap());
    let js_done = std::thread::spawn(move || {
        let mut line = String::new();
        js_out.read_line(&mut line).unwrap();
        (line, js_out)
    });
    // The Rust peers wait for the first sync: they edit pipelines that exist.
    for c in [&r1, &r2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while map_of(&c.doc.get_map("pipelines"), "p4").is_none() {
            assert!(
                Instant::now() < deadline,
                "the pushed project never reached a client"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let e1 = tokio::spawn(rust_editor(r1, 11, "r1", secs));
    let e2 = tokio::spawn(rust_editor(r2, 23, "r2", secs));
    let (r1, n1) = e1.await.unwrap();
    let (r2, n2) = e2.await.unwrap();
    let (line, mut js_out) = tokio::task::spawn_blocking(move || js_done.join().unwrap())
        .await
        .unwrap();
    assert_eq!(line.trim(), "done", "the JS editor did not finish");

    // Everyone has everything: wait for the peers to reach the server's version.
    let server = server_document(&c, &token, "team").await;
    let server_vv =
        VersionVector::decode(&hex_decode(server["version_hex"].as_str().unwrap())).unwrap();
    for r in [&r1, &r2] {
        r.settle(Some(&server_vv), Duration::from_secs(30))
            .await
            .expect("a Rust peer catches up");
    }
    // The server's version did not move after the peers settled (no edit was in flight).
    let server = server_document(&c, &token, "team").await;
    let server_hash = sha256(&canonical(&server["json"]));
    js.stdin.as_mut().unwrap().write_all(b"report\n").unwrap();
    let mut report = String::new();
    js_out.read_line(&mut report).unwrap();
    assert!(js.wait().unwrap().success(), "the JS editor failed");
    let js_report: Value = serde_json::from_str(&report).expect("the JS report");

    let rust_hashes: Vec<String> = [&r1, &r2]
        .iter()
        .map(|r| sha256(&canonical(&doc_json(&r.doc))))
        .collect();
    eprintln!(
        "convergence over {secs} s: rust edits {n1} + {n2}, js edits in its stats; server ops {}, snapshot {} bytes",
        server["ops"], server["snapshot_bytes"]
    );
    assert_eq!(
        rust_hashes[0], server_hash,
        "rust peer 1 differs from the server"
    );
    assert_eq!(
        rust_hashes[1], server_hash,
        "rust peer 2 differs from the server"
    );
    assert_eq!(
        js_report["json_sha256"].as_str().unwrap(),
        server_hash,
        "the JS peer differs from the server"
    );
    assert_eq!(
        js_report["oplog_len"].as_u64(),
        server["ops"].as_u64(),
        "the JS peer's op count"
    );
    assert_eq!(r1.doc.len_ops() as u64, server["ops"].as_u64().unwrap());
    assert_eq!(r1.doc.oplog_vv(), server_vv);
    assert_eq!(r2.doc.oplog_vv(), server_vv);
    assert!(n1 > 100 && n2 > 100, "too few edits: {n1}, {n2}");
    // The converged document holds concurrent transform edits from all three peers.
    let text = canonical(&server["json"]);
    for who in ["r1_", "r2_", "js_"] {
        assert!(text.contains(who), "no transform of {who} survived: {text}");
    }

    // It applies, and the applied manifest plans on a node folder.
    let applied = c
        .api(Some(&token))
        .post(
            "/api/projects/team/apply",
            json!({ "note": "after the convergence test" }),
        )
        .await
        .expect("the converged document applies");
    let v = applied["version"].as_i64().unwrap();
    let m = c
        .api(Some(&token))
        .get(&format!("/api/projects/team/manifest?version={v}"))
        .await
        .unwrap();
    let node_dir = tmp.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    std::fs::write(
        node_dir.join("hakiri.json"),
        serde_json::to_string_pretty(&m["manifest"]).unwrap(),
    )
    .unwrap();
    let api = Server::paged();
    let run = hakiri(
        &node_dir,
        &["plan"],
        &[("HAKIRI_CONTROL_API_URL", &api.url())],
    );
    assert_eq!(
        run.code, 0,
        "the applied manifest does not plan:\n{}\n{}",
        run.stdout, run.stderr
    );
    for p in ["p0", "p1", "p2", "p3", "p4"] {
        assert!(run.stdout.contains(p), "plan lacks {p}: {}", run.stdout);
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_updates_survive_kill_9_of_the_control_plane() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("control");
    let mut c = Control::start(&data, &[], &[]);
    let token = create_project(&c, "alice", "team").await;
    push(&c, &token, "team", &team_manifest(&FIVE)).await;
    let mut rng = Moments(0x5eed_1234);
    let doc = LoroDoc::new();
    let mut acked = VersionVector::default();
    let mut total = 0u64;
    // 6 kills at seeded moments; between them a peer edits in bursts and records the
    // version the server acknowledged in full. More than 1000 updates cross a snapshot.
    for kill in 0..6 {
        let mut peer = DocClient::connect(&c.ws(), "team", &token, doc.clone())
            .await
            .expect("join");
        peer.settle(None, Duration::from_secs(10)).await.unwrap();
        let until = Instant::now() + Duration::from_millis(rng.next_ms(800, 2500));
        let mut counter = 0;
        let killer = {
            let pid = c.child.id();
            let at = until;
            std::thread::spawn(move || {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            })
        };
        loop {
            for _ in 0..rng.next_ms(1, 20) {
                peer.edit(|doc| rust_edit(doc, &mut rng, "d", &mut counter));
                total += 1;
            }
            // What the server acknowledged in full is the doc as of this moment.
            let before = doc.oplog_vv();
            match peer.settle(None, Duration::from_millis(500)).await {
                Ok(()) if peer.refused().is_empty() => acked = before,
                _ => {}
            }
            if Instant::now() >= until {
                break;
            }
        }
        killer.join().unwrap();
        let _ = c.child.wait();
        peer.disconnect().await;
        drop(peer);
        c = Control::start(&data, &[], &[]);
        let server = server_document(&c, &token, "team").await;
        let server_vv =
            VersionVector::decode(&hex_decode(server["version_hex"].as_str().unwrap())).unwrap();
        assert!(
            server_vv >= acked,
            "kill {kill}: the restarted server lacks acknowledged updates: server {server_vv:?}, acknowledged {acked:?}"
        );
    }
    assert!(
        total > 1000,
        "only {total} edits: the snapshot path was not crossed"
    );
    // The peer's whole document reaches the restarted server and the two agree.
    let peer = DocClient::connect(&c.ws(), "team", &token, doc.clone())
        .await
        .unwrap();
    peer.settle(None, Duration::from_secs(20)).await.unwrap();
    let server = server_document(&c, &token, "team").await;
    assert_eq!(canonical(&server["json"]), canonical(&doc_json(&doc)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_checks_its_token_and_bad_messages_close_only_their_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Control::start(&tmp.path().join("control"), &[], &[]);
    let alice = create_project(&c, "alice", "team").await;
    let bob = create_project(&c, "bob", "other").await;
    push(&c, &alice, "team", &team_manifest(&FIVE)).await;
    let before = server_document(&c, &alice, "team").await;

    // HTTP: no token (401), another project's token (403), an expired one (401), and an
    // attenuated read-only token trying to edit or apply (403).
    let expired = c.token("alice", "1s");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let folder = tmp.path().join("cli");
    std::fs::create_dir_all(&folder).unwrap();
    let read_only = hakiri(
        &folder,
        &[
            "team",
            "--control",
            &c.url,
            "--team-project",
            "team",
            "token",
            "--keep",
            "read",
            "--only-project",
        ],
        &[
            ("HAKIRI_TOKEN", &alice),
            ("HAKIRI_HOME", &tmp.path().join("home").to_string_lossy()),
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    let manifest =
        hakiri_control::doc::manifest_json_from_toml(&team_manifest(&FIVE[..1])).unwrap();
    let cases: Vec<(&str, Option<&str>, &str, u16)> = vec![
        ("no token", None, "GET /document", 401),
        ("no token", None, "POST /import", 401),
        ("another project's token", Some(&bob), "GET /document", 403),
        ("another project's token", Some(&bob), "POST /apply", 403),
        ("an expired token", Some(&expired), "GET /document", 401),
        ("read-only", Some(&read_only), "POST /import", 403),
        ("read-only", Some(&read_only), "POST /apply", 403),
        ("read-only", Some(&read_only), "POST /nodes/x/token", 403),
    ];
    let http = reqwest::Client::new();
    for (who, token, call, want) in cases {
        let (method, path) = call.split_once(' ').unwrap();
        let url = format!("{}/api/projects/team{path}", c.url);
        let mut req = if method == "GET" {
            http.get(&url)
        } else {
            http.post(&url)
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .header("content-type", "application/json")
            .body(json!({ "manifest": manifest }).to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, want, "{who} {call}: {body}");
        assert!(
            body.contains("\"error\""),
            "{who} {call}: the refusal says why: {body}"
        );
    }
    // The read-only token still reads.
    server_document(&c, &read_only, "team").await;

    // The socket: a join without a valid token is refused; read-only joins read-only and
    // its edit is refused with PermissionDenied.
    for (who, token) in [
        ("no token", ""),
        ("another project's", bob.as_str()),
        ("expired", expired.as_str()),
    ] {
        let e = DocClient::connect(&c.ws(), "team", token, LoroDoc::new())
            .await
            .err();
        let e = e
            .unwrap_or_else(|| panic!("{who} token joined"))
            .to_string();
        assert!(e.contains("AuthFailed"), "{who}: {e}");
    }
    let ro = DocClient::connect(&c.ws(), "team", &read_only, LoroDoc::new())
        .await
        .expect("read-only joins");
    assert_eq!(ro.permission(), Some(Permission::Read));
    let deadline = Instant::now() + Duration::from_secs(10);
    while map_of(&ro.doc.get_map("pipelines"), "p0").is_none() {
        assert!(
            Instant::now() < deadline,
            "the read-only peer got no document"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ro.doc.get_map("pipelines").insert("evil", "x").unwrap();
    ro.doc.commit();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ro.refused().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the read-only edit got no refusal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ro.refused(), vec![UpdateStatusCode::PermissionDenied]);

    // Malformed and oversized messages close their own connection; a writer beside them
    // goes on working.
    let writer = DocClient::connect(&c.ws(), "team", &alice, LoroDoc::new())
        .await
        .unwrap();
    use futures::{SinkExt, StreamExt};
    use hakiri_control::tokio_tungstenite::tungstenite::Message;
    for (what, payload) in [
        ("malformed", vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3]),
        ("oversized", vec![7u8; 300 * 1024]),
    ] {
        let (mut raw, _) = hakiri_control::tokio_tungstenite::connect_async(c.ws())
            .await
            .unwrap();
        let _ = raw.send(Message::Binary(payload.into())).await;
        let mut closed = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), raw.next()).await {
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(closed, "a {what} message did not close its connection");
        assert!(
            writer.connected(),
            "a {what} message on another connection dropped this one"
        );
    }
    // Nothing the refused calls sent changed the document.
    let after = server_document(&c, &alice, "team").await;
    assert_eq!(canonical(&after["json"]), canonical(&before["json"]));
    // The writer's edit still goes through.
    let p0 = has_pipeline(&writer, "p0").await;
    p0.insert("mode", "replace").unwrap();
    writer.doc.commit();
    writer.settle(None, Duration::from_secs(10)).await.unwrap();
    assert!(writer.refused().is_empty());
    let after = server_document(&c, &alice, "team").await;
    assert_eq!(after["json"]["pipelines"]["p0"]["mode"], "replace");
    assert!(
        c.log().contains("closing a document socket"),
        "the closes are logged"
    );
}

/// The team CLI end to end: init, push, apply, versions, diff, rollback; a document that
/// does not validate cannot be applied and the error names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_team_cli_pushes_applies_lists_diffs_and_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Control::start(&tmp.path().join("control"), &[], &[]);
    let home = tmp.path().join("home");
    let project = tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("hakiri.toml"), team_manifest(&FIVE[..2])).unwrap();
    let token = c.token("alice", "1h");
    let home_s = home.to_string_lossy().into_owned();
    let env = [
        ("HAKIRI_TOKEN", token.as_str()),
        ("HAKIRI_HOME", home_s.as_str()),
    ];
    let team = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["team", "--control", c.url.as_str()];
        a.extend_from_slice(args);
        hakiri(&project, &a, env)
    };
    let init = team(&["init", "team"], &env).ok();
    assert!(
        init.stdout.contains("created team project team"),
        "{}",
        init.stdout
    );
    // From here on the saved token (with the project's rights) and .hakiri/team.json.
    let env = [("HAKIRI_HOME", home_s.as_str())];
    let push = team(&["push"], &env).ok();
    assert!(push.stdout.contains("2 pipelines"), "{}", push.stdout);
    let apply = team(&["apply", "--note", "first"], &env).ok();
    assert!(
        apply.stdout.contains("applied version 1"),
        "{}",
        apply.stdout
    );
    // Change a pipeline locally, push, apply: version 2.
    std::fs::write(
        project.join("hakiri.toml"),
        team_manifest(&[("p0", "node:a", "1 hour"), ("p1", "any", "5 minutes")]),
    )
    .unwrap();
    team(&["push"], &env).ok();
    assert!(
        team(&["apply"], &env)
            .ok()
            .stdout
            .contains("applied version 2")
    );
    let again = team(&["apply"], &env).ok();
    assert!(
        again.stdout.contains("nothing to apply"),
        "{}",
        again.stdout
    );
    let versions = team(&["versions"], &env).ok().stdout;
    assert!(
        versions.contains("1\t") && versions.contains("2 (applied)") && versions.contains("first"),
        "{versions}"
    );
    let diff = team(&["versions", "--diff", "1"], &env).ok().stdout;
    assert!(
        diff.contains("-      \"placement\": \"any\"")
            && diff.contains("+      \"placement\": \"node:a\""),
        "{diff}"
    );
    let rollback = team(&["versions", "--rollback", "1"], &env).ok();
    assert!(rollback.stdout.contains("version 3"), "{}", rollback.stdout);
    let api = c.api(Some(
        &std::fs::read_to_string(home.join("credentials.json"))
            .map(|t| {
                serde_json::from_str::<Value>(&t).unwrap()[&c.url]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .unwrap(),
    ));
    let m = api.get("/api/projects/team/manifest").await.unwrap();
    assert_eq!(m["version"], 3);
    assert_eq!(m["manifest"]["pipelines"]["p0"]["placement"], "any");
    // The rollback went back into the document too.
    let doc = api.get("/api/projects/team/document").await.unwrap();
    assert_eq!(doc["json"]["pipelines"]["p0"]["placement"], "any");

    // A document that does not validate cannot be applied; the error names the field.
    let token = api.token.clone().unwrap();
    let mut bad = DocClient::connect(&c.ws(), "team", &token, LoroDoc::new())
        .await
        .unwrap();
    bad.settle(None, Duration::from_secs(5)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while map_of(&bad.doc.get_map("pipelines"), "p1").is_none() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p1 = map_of(&bad.doc.get_map("pipelines"), "p1").unwrap();
    p1.insert("placement", "moon:base").unwrap();
    bad.doc.commit();
    bad.settle(None, Duration::from_secs(5)).await.unwrap();
    let refused = team(&["apply"], &env);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("placement")
            && refused.stderr.contains("p1")
            && refused.stderr.contains("nothing was applied"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        api.get("/api/projects/team/manifest").await.unwrap()["version"],
        3
    );
    p1.insert("placement", "cf:workers").unwrap();
    bad.doc.commit();
    bad.settle(None, Duration::from_secs(5)).await.unwrap();
    bad.disconnect().await;
    assert!(
        team(&["apply"], &env)
            .ok()
            .stdout
            .contains("applied version 4")
    );
    let status = team(&["status"], &env).ok().stdout;
    assert!(
        status.contains("cf:workers") && status.contains("Cloudflare"),
        "{status}"
    );
}

/// The OIDC sign-in against a real provider: `hakiri team login` prints the URL, the
/// "browser" (this test) signs in at the provider, the callback mints a biscuit, and the
/// CLI saves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_login_signs_in_through_a_real_oidc_provider() {
    let port = free_port();
    let mut provider = Command::new(venv_bin("oidc-provider-mock"))
        .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start oidc-provider-mock");
    let issuer = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the OIDC provider did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = Control::start(
        &tmp.path().join("control"),
        &["--oidc-issuer", &issuer, "--oidc-client-id", "hakiri-test"],
        // The provider wants a client secret, any value.
        &[("HAKIRI_OIDC_CLIENT_SECRET", "not-a-secret")],
    );
    http.put(format!("{issuer}/users/alice%40example.com"))
        .header("content-type", "application/json")
        .body(json!({ "email": "alice@example.com", "name": "Alice" }).to_string())
        .send()
        .await
        .unwrap();

    let home = tmp.path().join("home");
    let mut login = Command::new(hakiri_bin())
        .args(["team", "--control", &c.url, "login", "--no-browser"])
        .env("HAKIRI_HOME", &home)
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(login.stdout.take().unwrap());
    let mut url = String::new();
    while !url.starts_with("http") {
        url.clear();
        assert!(
            out.read_line(&mut url).unwrap() > 0,
            "team login printed no URL"
        );
        url = url.trim().to_string();
    }
    // The browser: our login redirects to the provider with PKCE; sign in as alice there.
    let r = http.get(&url).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    assert!(authorize.starts_with(&issuer), "{authorize}");
    assert!(
        authorize.contains("code_challenge=") && authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    let r = http
        .post(&authorize)
        .form(&[("sub", "alice@example.com")])
        .send()
        .await
        .unwrap();
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        callback.starts_with(&format!("{}/auth/callback?", c.url)),
        "{callback}"
    );
    let r = http.get(&callback).send().await.unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("hakiri_token=")
    );
    let to_cli = r.headers()["location"].to_str().unwrap().to_string();
    // Replaying the callback fails: the state is single-use.
    let replay = http.get(&callback).send().await.unwrap();
    assert_eq!(replay.status().as_u16(), 422);
    let r = http.get(&to_cli).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("Signed in"));
    let status = login.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(status.success(), "team login failed: {rest}");
    assert!(rest.contains("signed in to"), "{rest}");
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("credentials.json")).unwrap())
            .unwrap();
    let token = creds[&c.url].as_str().unwrap().to_string();
    // The token is alice's: she can create a project and holds every right on it.
    let r = c
        .api(Some(&token))
        .post("/api/projects", json!({ "id": "signed_in" }))
        .await
        .unwrap();
    let fresh = r["token"].as_str().unwrap();
    let projects = c.api(Some(fresh)).get("/api/projects").await.unwrap();
    assert_eq!(projects[0]["id"], "signed_in");
    assert_eq!(
        projects[0]["rights"],
        json!(["read", "edit", "apply", "run"])
    );
    let _ = provider.kill();
    let _ = provider.wait();
}

/// A node: `hakiri serve --control URL --node-id ID`, started in its own folder.
struct Node {
    child: Child,
}

impl Node {
    fn start(c: &Control, dir: &Path, id: &str, token: &str, api_url: &str) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new(hakiri_bin())
            .args([
                "serve",
                "--control",
                &c.url,
                "--node-id",
                id,
                "--team-project",
                "team",
                "--heartbeat",
                "0.3",
            ])
            .current_dir(dir)
            .env("HAKIRI_NODE_TOKEN", token)
            .env("HAKIRI_CONTROL_API_URL", api_url)
            .env_remove("HAKIRI_PROJECT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.with_extension("log")).unwrap())
            .spawn()
            .expect("start a node");
        Node { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_go_to_exactly_one_eligible_node_and_move_when_a_node_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Control::start(
        &tmp.path().join("control"),
        &["--node-timeout", "3s", "--dispatch-every", "200ms"],
        &[],
    );
    let token = create_project(&c, "alice", "team").await;
    let every = "2 seconds";
    let five = [
        ("p0", "any", every),
        ("p1", "any", every),
        ("p2", "node:a", every),
        ("p3", "node:b", every),
        ("p4", "any", every),
    ];
    push(&c, &token, "team", &team_manifest(&five)).await;
    c.api(Some(&token))
        .post("/api/projects/team/apply", json!({}))
        .await
        .unwrap();
    let api = Server::paged();
    let node_token = |id: &str| {
        let id = id.to_string();
        let api = c.api(Some(&token));
        async move {
            api.post(&format!("/api/projects/team/nodes/{id}/token"), json!({}))
                .await
                .unwrap()["token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (ta, tb) = (node_token("a").await, node_token("b").await);
    let mut a = Node::start(&c, &tmp.path().join("a"), "a", &ta, &api.url());
    let _b = Node::start(&c, &tmp.path().join("b"), "b", &tb, &api.url());
    // A node's token cannot heartbeat as another node.
    let spoof = c
        .api(Some(&ta))
        .post("/api/projects/team/nodes/b/heartbeat", json!({}))
        .await;
    assert!(spoof.unwrap_err().to_string().contains("403"));

    // 20 slots of 2 s each.
    let reader = c.api(Some(&token));
    let runs = |reader: Api| async move {
        serde_json::from_value::<Vec<hakiri_control::store::RunRow>>(
            reader
                .get("/api/projects/team/runs?limit=10000")
                .await
                .unwrap(),
        )
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = runs(reader.clone()).await;
        let slots: std::collections::BTreeSet<&str> = r
            .iter()
            .filter(|r| r.state == "succeeded")
            .map(|r| r.slot.as_str())
            .collect();
        if slots.len() >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} slots ran in 120 s: {r:#?}",
            slots.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before_kill = runs(reader.clone()).await;
    check_runs(&before_kill);
    for p in ["p0", "p1", "p4"] {
        let nodes: std::collections::BTreeSet<&str> = before_kill
            .iter()
            .filter(|r| r.pipeline == p)
            .map(|r| r.node.as_str())
            .collect();
        assert!(!nodes.is_empty(), "{p} never ran");
    }
    let used: std::collections::BTreeSet<&str> =
        before_kill.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(used.len(), 2, "both nodes take runs: {used:?}");
    // The runs loaded data on the node that ran them.
    let first_a = before_kill
        .iter()
        .find(|r| r.node == "a" && r.state == "succeeded" && r.pipeline == "p2")
        .expect("p2 ran on a");
    assert!(first_a.rows.is_some());

    // The query console: read-only SQL over a node's context store, through the control
    // plane; a bad query and a write are refused with the reason.
    let console = |sql: &str| {
        let api = c.api(Some(&token));
        let body = json!({ "sql": sql, "node": "a" });
        async move { api.post("/api/projects/team/query", body).await }
    };
    let r = console("SELECT count(*) AS n FROM p2")
        .await
        .expect("a console query");
    assert_eq!(r["columns"][0]["name"], "n", "{r}");
    assert_eq!(r["rows"][0][0], 10, "{r}");
    let e = console("SELECT nope FROM p2")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("422"), "{e}");
    let e = console("INSERT INTO p2 SELECT * FROM p2")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("read-only"), "{e}");
    // A run's log and trace, read on the node that ran it.
    let detail = c
        .api(Some(&token))
        .get(&format!("/api/projects/team/runs/{}", first_a.id))
        .await
        .unwrap();
    assert!(
        detail["engine_run"]
            .as_str()
            .is_some_and(|r| r.starts_with("p2-")),
        "{detail}"
    );
    assert!(
        detail["log"].as_str().unwrap().contains("run_trace"),
        "{detail}"
    );
    let phases: Vec<&str> = detail["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        phases.contains(&"plan") && phases.contains(&"commit"),
        "{detail}"
    );
    // Each table's columns, schema versions and schema events, read on the node.
    let tables = c
        .api(Some(&token))
        .get("/api/projects/team/tables?node=a")
        .await
        .unwrap();
    let p2 = tables
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "p2")
        .expect("p2 in the tables");
    assert_eq!(p2["versions"][0]["version"], 1, "{p2}");
    assert!(
        p2["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "amount"),
        "{p2}"
    );
    let kinds: Vec<&str> = p2["schema_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"table_created"), "{kinds:?}");

    // Nodes run the applied version, never the live document: an edit reaches them only
    // once applied.
    let installed = || std::fs::read_to_string(tmp.path().join("a/hakiri.json")).unwrap();
    assert!(installed().contains("/* note */"));
    push(
        &c,
        &token,
        "team",
        &team_manifest(&five).replace("/* note */", "/* edited */"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !installed().contains("/* edited */"),
        "a node took an edit that was not applied"
    );
    c.api(Some(&token))
        .post("/api/projects/team/apply", json!({}))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !installed().contains("/* edited */") {
        assert!(
            Instant::now() < deadline,
            "node a did not install the applied version"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill node a: after the timeout, its `any` pipelines run on b; p2 (node:a) waits.
    a.kill();
    let killed_at = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = runs(reader.clone()).await;
    check_runs(&after);
    let late = |r: &&hakiri_control::store::RunRow| {
        chrono::DateTime::parse_from_rfc3339(&r.assigned_at).unwrap()
            > killed_at + chrono::Duration::seconds(4)
    };
    for p in ["p0", "p1", "p4"] {
        assert!(
            after
                .iter()
                .filter(late)
                .any(|r| r.pipeline == p && r.node == "b" && r.state == "succeeded"),
            "{p} did not move to node b: {after:#?}"
        );
    }
    assert!(
        !after.iter().filter(late).any(|r| r.node == "a"),
        "a dead node got runs"
    );
    assert!(
        !after.iter().any(|r| r.pipeline == "p2" && r.node == "b"),
        "p2 (node:a) ran on b"
    );
    let status = c
        .api(Some(&token))
        .get("/api/projects/team/status")
        .await
        .unwrap();
    let a_status = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "a")
        .unwrap();
    assert_eq!(a_status["alive"], false);
}

/// Each (pipeline, slot) ran once (lost runs aside), on a node its placement allows, and no
/// pipeline had two open runs at once.
fn check_runs(runs: &[hakiri_control::store::RunRow]) {
    let mut seen = std::collections::BTreeMap::new();
    for r in runs.iter().filter(|r| r.state != "lost") {
        let prior = seen.insert((r.pipeline.clone(), r.slot.clone()), r.node.clone());
        assert!(prior.is_none(), "{} slot {} ran twice", r.pipeline, r.slot);
        match r.pipeline.as_str() {
            "p2" => assert_eq!(r.node, "a", "p2 is placed on node a"),
            "p3" => assert_eq!(r.node, "b", "p3 is placed on node b"),
            _ => {}
        }
        assert!(
            r.state == "succeeded" || r.state == "assigned",
            "run failed: {r:?}"
        );
    }
    for p in ["p0", "p1", "p2", "p3", "p4"] {
        let mut spans: Vec<(String, String)> = runs
            .iter()
            .filter(|r| r.pipeline == p && r.state == "succeeded")
            .map(|r| (r.assigned_at.clone(), r.finished_at.clone().unwrap()))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{p} ran twice at once: {w:?}");
        }
    }
}

/// Updates over the protocol's 256 KiB limit travel as a header and fragments: up from a
/// Rust peer, relayed to a joined peer, and in a new peer's backfill, the JS client's among
/// them; the JS client joined read-only has its edit refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_over_the_size_limit_are_fragmented_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Control::start(&tmp.path().join("control"), &[], &[]);
    let token = create_project(&c, "alice", "team").await;
    push(&c, &token, "team", &team_manifest(&FIVE)).await;
    let up = DocClient::connect(&c.ws(), "team", &token, LoroDoc::new())
        .await
        .unwrap();
    let joined = DocClient::connect(&c.ws(), "team", &token, LoroDoc::new())
        .await
        .unwrap();
    let p0 = has_pipeline(&up, "p0").await;
    has_pipeline(&joined, "p0").await;
    // 600 KB of note, typed at once: one update of about 600 KB.
    let big: String = (0..600_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let sql = p0.ensure_mergeable_text("sql").unwrap();
    let (a, _) = note_span(&sql.to_string()).unwrap();
    sql.insert(a, &big).unwrap();
    up.doc.commit();
    up.settle(None, Duration::from_secs(30))
        .await
        .expect("the fragmented update is acknowledged");
    assert!(up.refused().is_empty(), "{:?}", up.refused());
    let want = up.doc.oplog_vv();
    joined
        .settle(Some(&want), Duration::from_secs(30))
        .await
        .expect("relayed in fragments");
    let late = DocClient::connect(&c.ws(), "team", &token, LoroDoc::new())
        .await
        .unwrap();
    late.settle(Some(&want), Duration::from_secs(30))
        .await
        .expect("a backfill in fragments");
    for peer in [&joined, &late] {
        let text = has_pipeline(peer, "p0")
            .await
            .ensure_mergeable_text("sql")
            .unwrap()
            .to_string();
        assert!(text.contains(&big), "the large note did not arrive whole");
    }
    // The JS client, read-only: its backfill arrives in fragments; its edit is refused.
    let read_only =
        hakiri_control::token::attenuate(&token, &[hakiri_control::token::Right::Read], None, None)
            .unwrap();
    let out = Command::new(node_bin())
        .current_dir(js_fixture())
        .args([
            "readonly.mjs",
            "--url",
            &c.ws(),
            "--room",
            "team",
            "--token",
            &read_only,
        ])
        .args(["--print-json", "--try-edit", "--timeout-ms", "20000"])
        .output()
        .expect("node runs the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("joined read"), "{stdout}");
    assert!(stdout.contains(&big), "the JS client lacks the large note");
    assert!(stdout.contains("ack 3 permission_denied"), "{stdout}");
    let server = server_document(&c, &token, "team").await;
    assert!(
        server["json"]["sources"].get("readonly-probe").is_none(),
        "the refused JS edit got in"
    );
}

/// `hakiri control bench` (the load generator of bench/control-sync) runs and reports
/// latencies. Regression: its `--project` clashed with the global `--project` and crashed.
#[test]
fn the_control_bench_reports_latencies() {
    let tmp = tempfile::tempdir().unwrap();
    let c = Control::start(&tmp.path().join("control"), &[], &[]);
    let token = c.token("bench", "1h");
    let run = hakiri(
        tmp.path(),
        &[
            "control",
            "bench",
            "--url",
            &c.url,
            "--team-project",
            "b2",
            "--editors",
            "3",
            "--pipelines",
            "10",
            "--transforms",
            "3",
            "--duration",
            "3s",
            "--rate",
            "10",
        ],
        &[("HAKIRI_TOKEN", &token)],
    )
    .ok();
    let r: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON report");
    assert!(r["edits"].as_u64().unwrap() >= 60, "{r}");
    assert!(r["arrivals_measured"].as_u64().unwrap() > 0, "{r}");
    assert!(r["latency_ms"]["p95"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["snapshot_bytes"].as_u64().unwrap() > 1000, "{r}");
}
