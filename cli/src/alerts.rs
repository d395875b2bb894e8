//! `serve`'s alert task: every few seconds it asks the engine which alerts are due
//! ([`hakiri_engine::alerts::AlertWatch`], one per `[alerts.<name>]` webhook) and posts each
//! as JSON in a task of its own, retried with backoff, so a slow or failing webhook never
//! holds up a run or another alert.

use std::sync::Arc;
use std::time::Duration;

use hakiri_engine::Engine;
use hakiri_engine::alerts::{Alert, AlertWatch};
use hakiri_engine::types::AlertSpec;

/// How often the catalog is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Tries per alert; the waits between them double from one second.
const TRIES: u32 = 6;

pub async fn watch(engine: Arc<Engine>, project: String, hooks: Vec<AlertSpec>) {
    if hooks.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: alerts are off: building their HTTP client failed: {e}");
            return;
        }
    };
    let now = engine.clock().now();
    let mut watches = Vec::new();
    for mut hook in hooks {
        // The URL may be a secret reference (`env:SLACK_WEBHOOK`): such URLs are secrets.
        match hakiri_engine::sources::resolve_value("url", &hook.url) {
            Ok(url) => hook.url = url,
            Err(e) => {
                eprintln!("warning: alerts to [alerts.{}] are off: {e}", hook.name);
                continue;
            }
        }
        match AlertWatch::new(
            engine.catalog().as_ref(),
            &hook.on,
            hook.stale_after.duration,
            now,
        ) {
            Ok(w) => watches.push((hook, w)),
            Err(e) => eprintln!("warning: alerts to [alerts.{}] are off: {e}", hook.name),
        }
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let now = engine.clock().now();
        for (hook, w) in &mut watches {
            match w.check(engine.catalog().as_ref(), &project, now) {
                Ok(alerts) => {
                    for a in alerts {
                        tokio::spawn(post(client.clone(), hook.name.clone(), hook.url.clone(), a));
                    }
                }
                Err(e) => eprintln!("warning: checking alerts for [alerts.{}]: {e}", hook.name),
            }
        }
    }
}

async fn post(client: reqwest::Client, name: String, url: String, alert: Alert) {
    let body = alert.to_json().to_string();
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=TRIES {
        let sent = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let why = match sent {
            Ok(r) if r.status().is_success() => {
                eprintln!(
                    "alert: {} for {} sent to [alerts.{name}]",
                    alert.alert, alert.pipeline
                );
                return;
            }
            Ok(r) => format!("HTTP {}", r.status()),
            // Without the URL: a webhook's URL is its secret.
            Err(e) => e.without_url().to_string(),
        };
        if attempt == TRIES {
            eprintln!(
                "warning: the {} alert for {} could not be sent to [alerts.{name}] after {TRIES} tries: {why}",
                alert.alert, alert.pipeline
            );
            return;
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}
