//! OpenLineage events for every run: START when it starts, COMPLETE or FAIL when it ends,
//! posted to `OPENLINEAGE_URL` (+ `OPENLINEAGE_ENDPOINT`, default `api/v1/lineage`) with
//! `OPENLINEAGE_API_KEY` as a bearer token; the job's namespace is `OPENLINEAGE_NAMESPACE`
//! (default: the project's name). Events follow spec 2-0-2: job = the pipeline (with its
//! SQL), inputs = the source tables named by their connection, output = the context table
//! with its column lineage.
//!
//! Posting happens in tasks of their own, retried a few times, so a slow or absent lineage
//! server never holds up a run; a run's COMPLETE or FAIL waits for its START, so they
//! arrive in order (other runs' events do not wait on them). A command that ends waits for
//! what it has sent ([`flush`]).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hakiri_engine::Error;
use hakiri_engine::RunSummary;
use hakiri_engine::lineage::Lineage;
use hakiri_engine::ports::{RunObserver, RunStarted};
use serde_json::{Value, json};

const PRODUCER: &str = concat!(
    "https://github.com/hakiri-dev/hakiri/tree/v",
    env!("CARGO_PKG_VERSION")
);
const EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

#[derive(Debug)]
pub struct OpenLineage {
    url: String,
    api_key: Option<String>,
    namespace: String,
    client: reqwest::Client,
    /// The START events being sent, by run: the run's end event waits for its START.
    starts: Mutex<std::collections::HashMap<String, tokio::task::JoinHandle<()>>>,
    /// The end events being sent.
    ends: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

static ACTIVE: OnceLock<Arc<OpenLineage>> = OnceLock::new();

/// The observer when `OPENLINEAGE_URL` is set.
pub fn from_env(project: &str) -> Option<Arc<OpenLineage>> {
    if let Some(o) = ACTIVE.get() {
        return Some(o.clone());
    }
    let base = std::env::var("OPENLINEAGE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let endpoint =
        std::env::var("OPENLINEAGE_ENDPOINT").unwrap_or_else(|_| "api/v1/lineage".into());
    let namespace = std::env::var("OPENLINEAGE_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            if project.is_empty() {
                "hakiri".into()
            } else {
                project.into()
            }
        });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let o = Arc::new(OpenLineage {
        url: format!(
            "{}/{}",
            base.trim_end_matches('/'),
            endpoint.trim_start_matches('/')
        ),
        api_key: std::env::var("OPENLINEAGE_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        namespace,
        client,
        starts: Mutex::default(),
        ends: Mutex::default(),
    });
    Some(ACTIVE.get_or_init(|| o).clone())
}

/// Waits (at most 15 s) for the events sent so far: a command that ends must not drop its
/// last COMPLETE.
pub async fn flush() {
    let Some(o) = ACTIVE.get() else { return };
    let mut pending: Vec<_> = std::mem::take(&mut *o.ends.lock().unwrap());
    pending.extend(o.starts.lock().unwrap().drain().map(|(_, t)| t));
    if tokio::time::timeout(Duration::from_secs(15), futures::future::join_all(pending))
        .await
        .is_err()
    {
        eprintln!(
            "warning: OpenLineage events to {} were still being sent after 15 s; some are lost",
            o.url
        );
    }
}

impl OpenLineage {
    fn event(
        &self,
        kind: &str,
        run: &RunStarted,
        at: chrono::DateTime<chrono::Utc>,
        error: Option<&str>,
    ) -> Value {
        let facet = |schema: &str, body: Value| {
            let mut v = json!({"_producer": PRODUCER, "_schemaURL": schema});
            if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
                m.extend(b);
            }
            v
        };
        let mut run_facets = serde_json::Map::new();
        if let Some(message) = error {
            run_facets.insert(
                "errorMessage".into(),
                facet(
                    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
                    json!({"message": message, "programmingLanguage": "Rust"}),
                ),
            );
        }
        let lineage = run.lineage.clone().unwrap_or_default();
        json!({
            "eventType": kind,
            "eventTime": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "run": {"runId": run.uuid, "facets": run_facets},
            "job": {
                "namespace": self.namespace,
                "name": run.pipeline,
                "facets": {"sql": facet(
                    "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet",
                    json!({"query": run.sql}),
                )},
            },
            "inputs": inputs(&lineage, &facet),
            "outputs": outputs(&lineage, &facet),
            "producer": PRODUCER,
            "schemaURL": EVENT_SCHEMA,
        })
    }

    /// Posts `event` from a task of its own, after `before` (the run's START) is sent.
    fn send(
        &self,
        event: Value,
        before: Option<tokio::task::JoinHandle<()>>,
    ) -> tokio::task::JoinHandle<()> {
        let (client, url, key) = (self.client.clone(), self.url.clone(), self.api_key.clone());
        let body = event.to_string();
        tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            let mut wait = Duration::from_millis(500);
            for attempt in 1..=4 {
                let mut req = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                if let Some(k) = &key {
                    req = req.bearer_auth(k);
                }
                let why = match req.send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                if attempt == 4 {
                    eprintln!(
                        "warning: an OpenLineage event could not be sent to {url} after 4 tries: {why}"
                    );
                    return;
                }
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        })
    }
}

fn inputs(l: &Lineage, facet: &dyn Fn(&str, Value) -> Value) -> Value {
    l.inputs
        .iter()
        .map(|(d, fields)| {
            json!({
                "namespace": d.namespace,
                "name": d.name,
                "facets": {"schema": facet(
                    "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
                    json!({"fields": fields.iter().map(|f| json!({"name": f})).collect::<Vec<_>>()}),
                )},
            })
        })
        .collect()
}

fn outputs(l: &Lineage, facet: &dyn Fn(&str, Value) -> Value) -> Value {
    let Some(out) = &l.output else {
        return json!([]);
    };
    let fields: serde_json::Map<String, Value> = l
        .columns
        .iter()
        .map(|(name, sources)| {
            let inputs: Vec<Value> = sources
                .iter()
                .map(|s| {
                    json!({
                        "namespace": s.dataset.namespace,
                        "name": s.dataset.name,
                        "field": s.field,
                        "transformations": [{"type": "DIRECT", "subtype": s.subtype, "description": "", "masking": false}],
                    })
                })
                .collect();
            (name.clone(), json!({"inputFields": inputs}))
        })
        .collect();
    let mut facets = serde_json::Map::new();
    if !fields.is_empty() {
        facets.insert(
            "columnLineage".into(),
            facet(
                "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet",
                json!({"fields": fields}),
            ),
        );
    }
    json!([{"namespace": out.namespace, "name": out.name, "facets": facets}])
}

impl RunObserver for OpenLineage {
    /// Events carry the run's inputs, output and column lineage.
    fn wants_lineage(&self) -> bool {
        true
    }

    fn started(&self, run: &RunStarted) {
        let task = self.send(self.event("START", run, run.started_at, None), None);
        self.starts.lock().unwrap().insert(run.uuid.clone(), task);
    }

    fn ended(&self, run: &RunStarted, outcome: Result<&RunSummary, &Error>) {
        let now = chrono::Utc::now();
        let event = match outcome {
            Ok(_) => self.event("COMPLETE", run, now, None),
            Err(e) => self.event("FAIL", run, now, Some(&e.to_string())),
        };
        let start = self.starts.lock().unwrap().remove(&run.uuid);
        let task = self.send(event, start);
        let mut ends = self.ends.lock().unwrap();
        ends.retain(|t| !t.is_finished());
        ends.push(task);
    }
}
