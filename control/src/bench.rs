//! `hakiri control bench`: a load generator for a running control plane. Simulated editors
//! edit one project document (pipelines × transforms) at a set rate; every edit also stamps
//! its editor's entry in the root map `bench` with `seq@micros`, so each other editor can
//! tell when it arrived. Reports the edit→arrival latency percentiles over every
//! (edit, receiver) pair, the edit rate, and the document's snapshot size.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loro::{LoroDoc, LoroMap, ValueOrContainer};
use serde_json::{Value, json};

use crate::client::{Api, DocClient};
use crate::{Error, Result};

pub struct BenchOptions {
    pub url: String,
    pub token: String,
    pub project: String,
    pub editors: usize,
    pub pipelines: usize,
    pub transforms: usize,
    pub duration: Duration,
    /// Edits per second per editor.
    pub rate: f64,
}

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn child_map(parent: &LoroMap, key: &str) -> Option<LoroMap> {
    match parent.get(key) {
        Some(ValueOrContainer::Container(c)) => c.into_map().ok(),
        _ => None,
    }
}

/// A small deterministic generator (xorshift), so runs edit the same way.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Builds the project: `pipelines` pipelines with `transforms` transforms each.
fn seed(doc: &LoroDoc, pipelines: usize, transforms: usize) -> Result<()> {
    let e = |e: loro::LoroError| Error::Internal(e.to_string());
    let src = doc
        .get_map("sources")
        .ensure_mergeable_map("api")
        .map_err(e)?;
    src.insert("type", "http").map_err(e)?;
    src.insert("base_url", "http://127.0.0.1:1").map_err(e)?;
    src.insert("schema", "id bigint, name text, amount bigint")
        .map_err(e)?;
    let ps = doc.get_map("pipelines");
    for i in 0..pipelines {
        let p = ps.ensure_mergeable_map(&format!("p{i}")).map_err(e)?;
        p.ensure_mergeable_text("sql")
            .map_err(e)?
            .insert(0, &format!("INSERT INTO context.t{i} SELECT id, name, amount /* note */ FROM api.items{i} WHERE id > $cursor"))
            .map_err(e)?;
        let c = p.ensure_mergeable_map("cursor").map_err(e)?;
        c.insert("kind", "monotonic").map_err(e)?;
        c.insert("column", "id").map_err(e)?;
        p.ensure_mergeable_map("schedule")
            .map_err(e)?
            .insert("every", "15 minutes")
            .map_err(e)?;
        p.insert("placement", "any").map_err(e)?;
        let t = p.ensure_mergeable_movable_list("transforms").map_err(e)?;
        for j in 0..transforms {
            t.push(format!("amount * {j} AS c{j}")).map_err(e)?;
        }
    }
    doc.commit();
    Ok(())
}

fn edit(doc: &LoroDoc, rng: &mut Rng, me: usize, seq: u64, pipelines: usize) {
    let ps = doc.get_map("pipelines");
    let Some(p) = child_map(&ps, &format!("p{}", rng.below(pipelines))) else {
        return;
    };
    match rng.below(4) {
        0 => {
            if let Ok(t) = p.ensure_mergeable_text("sql")
                && let Some(a) = t.to_string().find("/*")
            {
                let _ = t.insert(a + 3, "x");
            }
        }
        1 => {
            if let Ok(l) = p.ensure_mergeable_movable_list("transforms")
                && l.len() >= 2
            {
                let from = rng.below(l.len());
                let to = (from + 1 + rng.below(l.len() - 1)) % l.len();
                let _ = l.mov(from, to);
            }
        }
        2 => {
            let _ = p.insert("placement", ["any", "node:a", "node:b"][rng.below(3)]);
        }
        _ => {
            let _ = p.ensure_mergeable_map("schedule").and_then(|s| {
                s.insert("every", ["5 minutes", "15 minutes", "1 hour"][rng.below(3)])
            });
        }
    }
    let _ = doc
        .get_map("bench")
        .insert(&format!("e{me}"), format!("{seq}@{}", micros()));
    doc.commit();
}

/// Runs the load and returns the report (JSON).
pub async fn run(o: BenchOptions) -> Result<Value> {
    let api = Api::new(&o.url, Some(o.token.clone()));
    let created = api
        .post("/api/projects", json!({ "id": o.project }))
        .await?;
    let token = created["token"].as_str().unwrap_or(&o.token).to_string();
    let ws = format!(
        "{}/sync",
        o.url.trim_end_matches('/').replacen("http", "ws", 1)
    );
    let seed_doc = LoroDoc::new();
    seed(&seed_doc, o.pipelines, o.transforms)?;
    let seeder = DocClient::connect(&ws, &o.project, &token, seed_doc).await?;
    seeder.settle(None, Duration::from_secs(120)).await?;
    let seeded_version = seeder.doc.oplog_vv();
    drop(seeder);

    // Latencies (µs) of every arrival of another editor's stamp.
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for me in 0..o.editors {
        let doc = LoroDoc::new();
        let c = DocClient::connect(&ws, &o.project, &token, doc.clone()).await?;
        c.settle(Some(&seeded_version), Duration::from_secs(120))
            .await?;
        let seen: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; o.editors]));
        let (lat, d) = (latencies.clone(), doc.clone());
        let editors = o.editors;
        subs.push(doc.subscribe_root(Arc::new(move |e| {
            if !matches!(e.triggered_by, loro::EventTriggerKind::Import) {
                return;
            }
            let now = micros();
            let bench = d.get_map("bench");
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            for other in (0..editors).filter(|x| *x != me) {
                let Some(ValueOrContainer::Value(v)) = bench.get(&format!("e{other}")) else {
                    continue;
                };
                let Some(s) = v.as_string() else { continue };
                let Some((seq, at)) = s.split_once('@') else {
                    continue;
                };
                let (Ok(seq), Ok(at)) = (seq.parse::<u64>(), at.parse::<u64>()) else {
                    continue;
                };
                if seq > seen[other] {
                    seen[other] = seq;
                    lat.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(now.saturating_sub(at));
                }
            }
        })));
        clients.push(c);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (me, c) in clients.into_iter().enumerate() {
        let (duration, rate, pipelines) = (o.duration, o.rate, o.pipelines);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (me as u64 + 1));
            let gap = Duration::from_secs_f64(1.0 / rate.max(0.01));
            let mut seq = 0u64;
            let mut next = Instant::now();
            while start.elapsed() < duration {
                seq += 1;
                c.edit(|doc| edit(doc, &mut rng, me, seq, pipelines));
                next += gap;
                tokio::time::sleep_until(next.into()).await;
            }
            let _ = c.settle(None, Duration::from_secs(60)).await;
            (c, seq)
        }));
    }
    let mut edits = 0;
    let mut done = Vec::new();
    for t in tasks {
        let (c, n) = t.await.map_err(|e| Error::Internal(e.to_string()))?;
        edits += n;
        done.push(c);
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the last relays land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(subs);
    // The token that carries the new project's rights.
    let api = Api::new(&o.url, Some(token.clone()));
    let doc = api
        .get(&format!("/api/projects/{}/document", o.project))
        .await?;
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    Ok(json!({
        "editors": o.editors,
        "pipelines": o.pipelines,
        "transforms": o.transforms,
        "seconds": elapsed,
        "edits": edits,
        "edits_per_second": edits as f64 / elapsed,
        "arrivals_measured": lat.len(),
        "latency_ms": { "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": pct(1.0) },
        "snapshot_bytes": doc["snapshot_bytes"],
        "ops": doc["ops"],
    }))
}
