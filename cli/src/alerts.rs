//! `serve`'s alert task: every second it reads the catalog once
//! ([`hakiri_engine::alerts::AlertFeed`]), asks each `[alerts.<name>]` webhook's
//! [`hakiri_engine::alerts::AlertWatch`] which alerts are due, and posts each as JSON in a
//! task of its own, retried with backoff, so a slow or failing webhook never holds up a run
//! or another alert.

use std::sync::Arc;
use std::time::Duration;

use hakiri_engine::Engine;
use hakiri_engine::alerts::{Alert, AlertFeed, AlertWatch};
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
    let catalog = engine.catalog().as_ref();
    let mut feed = match AlertFeed::new(catalog, engine.clock().now()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: alerts are off: reading the catalog failed: {e}");
            return;
        }
    };
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
        let watch = AlertWatch::new(&feed, &hook.on, hook.stale_after.duration);
        watches.push((hook, watch));
    }
    if watches.is_empty() {
        return;
    }
    // The first tick is a second from now: the feed has just read the catalog.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
    loop {
        tick.tick().await;
        let now = engine.clock().now();
        // One read of the catalog per check, whatever the number of webhooks.
        if let Err(e) = feed.read(catalog, now) {
            eprintln!("warning: checking alerts: {e}");
            continue;
        }
        for (hook, w) in &mut watches {
            for a in w.check(&feed, &project, now) {
                tokio::spawn(post(client.clone(), hook.name.clone(), hook.url.clone(), a));
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
