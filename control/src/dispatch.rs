//! The dispatcher: hands each due run of an applied pipeline to exactly one eligible node.
//!
//! Every tick it (1) marks the open runs of nodes that stopped heartbeating `lost` and
//! queues their slots again, (2) queues the schedule slots that came due, and (3) assigns
//! queued slots: never to a node the pipeline's placement excludes, and never while the
//! pipeline has an open run elsewhere, so a pipeline runs on one node at a time. A
//! pipeline's queued slots coalesce to its latest (like `ON MISSED RUN ONCE`). Slots missed
//! while the control plane was down are skipped.
//!
//! A node that cannot heartbeat stops starting runs after the same timeout (see the node
//! loop in [`crate::client`]), so a run is not started twice across a partition; a report
//! for a run already marked lost is refused.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hakiri_core::types::Placement;

use crate::{App, Result};

/// Slots waiting for a node: (project, pipeline) → slot.
#[derive(Default)]
pub struct Queue {
    inner: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    waiting: BTreeMap<(String, String), String>,
    /// The last schedule slot considered per (project, pipeline).
    considered: HashMap<(String, String), DateTime<Utc>>,
}

impl Queue {
    /// Queues a run of `pipeline` for `slot` (a schedule time, or `manual:<id>`).
    pub fn push(&self, project: &str, pipeline: &str, slot: String) {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        q.waiting.insert((project.into(), pipeline.into()), slot);
    }
}

/// One applied pipeline, as the dispatcher needs it.
pub struct Planned {
    pub name: String,
    pub placement: Placement,
    pub schedule: Option<hakiri_core::schedule::ScheduleSpec>,
}

/// The applied manifest's pipelines of `project` (none before the first apply).
pub fn planned(app: &App, project: &str) -> Result<Vec<Planned>> {
    let Some((_, text)) = app.store.manifest(project, None)? else {
        return Ok(Vec::new());
    };
    let manifest = hakiri_manifests::parse_json(&text)
        .map_err(|e| crate::Error::Internal(format!("applied manifest of {project}: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| crate::Error::Internal(e.to_string()))?;
    Ok(manifest
        .pipelines
        .into_iter()
        .map(|p| {
            let placement = json["pipelines"][&p.name]["placement"]
                .as_str()
                .and_then(|s| Placement::parse(s).ok())
                .unwrap_or_default();
            Planned {
                name: p.name,
                placement,
                schedule: p.schedule,
            }
        })
        .collect())
}

/// Whether a node's last heartbeat (RFC 3339) is recent enough.
pub fn alive(app: &App, last_seen: &str, now: DateTime<Utc>) -> bool {
    DateTime::parse_from_rfc3339(last_seen).is_ok_and(|t| {
        now.signed_duration_since(t.with_timezone(&Utc))
            .to_std()
            .map_or(true, |d| d <= app.config.node_timeout)
    })
}

pub async fn run(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.config.dispatch_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let a = app.clone();
        match tokio::task::spawn_blocking(move || dispatch_once(&a, Utc::now())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("dispatch: {e}"),
            Err(e) => tracing::error!("dispatch panicked: {e}"),
        }
    }
}

/// One pass over every project.
pub fn dispatch_once(app: &App, now: DateTime<Utc>) -> Result<()> {
    for project in app.store.projects()? {
        let pipelines = planned(app, &project)?;
        let nodes: Vec<String> = app
            .store
            .nodes(&project)?
            .into_iter()
            .filter(|(_, seen)| alive(app, seen, now))
            .map(|(id, _)| id)
            .collect();
        let mut open = app.store.open_runs(&project)?;
        // (1) Runs of silent nodes are lost; their slots go back in the queue.
        for r in open.iter().filter(|r| !nodes.contains(&r.node)) {
            tracing::warn!(
                project,
                pipeline = r.pipeline,
                node = r.node,
                "node stopped heartbeating: its run is reassigned"
            );
            app.store.mark_lost(r.id)?;
            app.queue.push(&project, &r.pipeline, r.slot.clone());
        }
        open.retain(|r| nodes.contains(&r.node));
        let mut q = app.queue.inner.lock().unwrap_or_else(|p| p.into_inner());
        // (2) Schedule slots that came due.
        for p in &pipelines {
            let Some(schedule) = &p.schedule else {
                continue;
            };
            let key = (project.clone(), p.name.clone());
            let from = *q.considered.entry(key.clone()).or_insert(now);
            let (slots, _) = schedule
                .slots_between(&p.name, from, now, 1000)
                .map_err(|e| crate::Error::Internal(e.to_string()))?;
            if let Some(last) = slots.last() {
                q.considered.insert(key.clone(), *last);
                q.waiting.insert(key, last.to_rfc3339());
            }
        }
        // (3) Assign.
        let keys: Vec<(String, String)> = q
            .waiting
            .keys()
            .filter(|(proj, _)| proj == &project)
            .cloned()
            .collect();
        for key in keys {
            let pipeline = &key.1;
            let Some(p) = pipelines.iter().find(|p| &p.name == pipeline) else {
                q.waiting.remove(&key); // no longer in the applied manifest
                continue;
            };
            if open.iter().any(|r| &r.pipeline == pipeline) {
                continue; // it is running on a node: the slot waits
            }
            let slot = q.waiting[&key].clone();
            if app.store.slot_taken(&project, pipeline, &slot)? {
                q.waiting.remove(&key);
                continue;
            }
            let eligible: Vec<&String> = nodes.iter().filter(|n| p.placement.allows(n)).collect();
            let Some(node) = eligible.iter().min_by_key(|n| {
                let load = open.iter().filter(|r| &r.node == **n).count();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (pipeline, &slot, n).hash(&mut h);
                (load, h.finish())
            }) else {
                continue; // no eligible node alive: it waits for one
            };
            let id = app.store.assign(&project, pipeline, &slot, node)?;
            tracing::info!(
                project,
                pipeline,
                slot,
                node = node.as_str(),
                run = id,
                "dispatched"
            );
            open.extend(
                app.store
                    .open_runs(&project)?
                    .into_iter()
                    .filter(|r| r.id == id),
            );
            q.waiting.remove(&key);
        }
    }
    Ok(())
}

/// Queries of the console waiting for a node: each is handed to one node with its next
/// heartbeat, and its answer to the HTTP request waiting for it.
#[derive(Default)]
pub struct Queries {
    inner: Mutex<QueriesState>,
}

#[derive(Default)]
struct QueriesState {
    /// (project, node) → queries not yet handed out: (id, sql).
    waiting: HashMap<(String, String), Vec<(String, String)>>,
    /// id → (project, node, where the answer goes).
    answers: HashMap<
        String,
        (
            String,
            String,
            tokio::sync::oneshot::Sender<serde_json::Value>,
        ),
    >,
}

impl Queries {
    pub fn ask(
        &self,
        project: &str,
        node: &str,
        sql: &str,
    ) -> (String, tokio::sync::oneshot::Receiver<serde_json::Value>) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        q.waiting
            .entry((project.into(), node.into()))
            .or_default()
            .push((id.clone(), sql.into()));
        q.answers
            .insert(id.clone(), (project.into(), node.into(), tx));
        (id, rx)
    }

    /// Forgets a query whose asker went away (cancel, timeout).
    pub fn forget(&self, id: &str) {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        q.answers.remove(id);
        for list in q.waiting.values_mut() {
            list.retain(|(i, _)| i != id);
        }
    }

    /// The queries for `node`, handed out now.
    pub fn take(&self, project: &str, node: &str) -> Vec<(String, String)> {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        q.waiting
            .remove(&(project.to_string(), node.to_string()))
            .unwrap_or_default()
    }

    /// Delivers `node`'s answer; false when the query is not that node's (or was forgotten).
    pub fn answer(&self, project: &str, node: &str, id: &str, answer: serde_json::Value) -> bool {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match q.answers.remove(id) {
            Some((p, n, tx)) if p == project && n == node => tx.send(answer).is_ok(),
            Some(entry) => {
                q.answers.insert(id.to_string(), entry);
                false
            }
            None => false,
        }
    }
}
