//! OpenTelemetry: traces and metrics over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or a per-signal `..._TRACES_ENDPOINT` /
//! `..._METRICS_ENDPOINT`) is set; the other standard `OTEL_*` variables (headers,
//! timeout, service name, resource attributes, batch and export intervals) are read by the
//! SDK. `OTEL_SDK_DISABLED=true` turns it off.
//!
//! A run is a trace: the engine's `run` span with `plan`, `part` and `commit` under it, and
//! the connectors' `http.request` and `postgres.copy` spans under those. Metrics per
//! pipeline come from a run observer (rows, bytes, pages, duration, failures) and from the
//! catalog at each export (freshness, cursor lag, retries).
//!
//! The exporter's own HTTP client features would bring reqwest 0.13; the requests go out on
//! our reqwest 0.12 instead, through `opentelemetry_http::HttpClient`. The SDK exports from
//! threads of its own, outside the runtime, so each request is spawned on the runtime.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hakiri_engine::Error;
use hakiri_engine::RunSummary;
use hakiri_engine::catalog::Catalog;
use hakiri_engine::ports::{RunObserver, RunStarted};
use hakiri_engine::types::RunStatus;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Whether an OTLP endpoint is configured (and the SDK not disabled).
pub fn configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    !std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
}

/// reqwest 0.12 as the exporter's HTTP client.
#[derive(Debug, Clone)]
struct Http {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Http {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request: reqwest::Request = request.try_into()?;
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let (status, headers) = (response.status(), response.headers().clone());
                let body = response.bytes().await?;
                let mut out = http::Response::builder().status(status).body(body)?;
                *out.headers_mut() = headers;
                Ok::<_, opentelemetry_http::HttpError>(out)
            })
            .await?
    }
}

struct Providers {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    metrics: Arc<RunMetrics>,
}

static ACTIVE: OnceLock<Providers> = OnceLock::new();
/// The project's catalog, for the metrics read at export time (set once it is open).
static CATALOG: OnceLock<Arc<dyn Catalog>> = OnceLock::new();

/// Builds the exporters (inside the runtime) and returns the tracing layer to install,
/// or `None` when OpenTelemetry is not configured or cannot start (said on stderr).
pub fn layer<S>()
-> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if !configured() {
        return None;
    }
    match start() {
        Ok(p) => {
            let tracer = p.tracer.tracer("hakiri");
            let _ = ACTIVE.set(p);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        Err(e) => {
            eprintln!("warning: OpenTelemetry is off: {e}");
            None
        }
    }
}

fn start() -> Result<Providers, String> {
    let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let http = Http {
        client: reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?,
        runtime: tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?,
    };
    let resource = Resource::builder()
        .with_service_name(std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "hakiri".into()))
        .build();
    let spans = SpanExporter::builder()
        .with_http()
        .with_http_client(http.clone())
        .build()
        .map_err(|e| format!("the span exporter: {e}"))?;
    let tracer = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(spans)
        .build();
    let exporter = MetricExporter::builder()
        .with_http()
        .with_http_client(http)
        .build()
        .map_err(|e| format!("the metric exporter: {e}"))?;
    let meter = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(exporter)
        .build();
    let metrics = Arc::new(RunMetrics::new(&meter));
    Ok(Providers {
        tracer,
        meter,
        metrics,
    })
}

/// The run observer that records metrics, when OpenTelemetry is on.
pub fn observer() -> Option<Arc<dyn RunObserver>> {
    Some(ACTIVE.get()?.metrics.clone() as Arc<dyn RunObserver>)
}

/// Registers the metrics read from `catalog` at each export (once per process).
pub fn watch_catalog(catalog: &Arc<dyn Catalog>) {
    if let Some(p) = ACTIVE.get()
        && CATALOG.set(catalog.clone()).is_ok()
    {
        catalog_metrics(&p.meter);
    }
}

/// Flushes and stops the exporters (blocking: call it off the runtime's workers).
pub fn shutdown() {
    if let Some(p) = ACTIVE.get() {
        if let Err(e) = p.tracer.shutdown() {
            eprintln!("warning: exporting the last spans failed: {e}");
        }
        if let Err(e) = p.meter.shutdown() {
            eprintln!("warning: exporting the last metrics failed: {e}");
        }
    }
}

/// Per pipeline, from each finished run.
#[derive(Debug)]
struct RunMetrics {
    rows: Counter<u64>,
    bytes: Counter<u64>,
    pages: Counter<u64>,
    failures: Counter<u64>,
    duration: Histogram<f64>,
}

impl RunMetrics {
    fn new(provider: &SdkMeterProvider) -> Self {
        let m = provider.meter("hakiri");
        RunMetrics {
            rows: m
                .u64_counter("hakiri.run.rows_written")
                .with_description("Rows written into the context store")
                .with_unit("{row}")
                .build(),
            bytes: m
                .u64_counter("hakiri.run.bytes")
                .with_description("Bytes read from sources")
                .with_unit("By")
                .build(),
            pages: m
                .u64_counter("hakiri.run.pages")
                .with_description("Pages read from sources")
                .with_unit("{page}")
                .build(),
            failures: m
                .u64_counter("hakiri.run.failures")
                .with_description("Runs that failed")
                .with_unit("{run}")
                .build(),
            duration: m
                .f64_histogram("hakiri.run.duration")
                .with_description("How long runs take")
                .with_unit("s")
                .build(),
        }
    }
}

impl RunObserver for RunMetrics {
    fn started(&self, _: &RunStarted) {}

    fn ended(&self, run: &RunStarted, outcome: Result<&RunSummary, &Error>) {
        let attrs = [KeyValue::new("pipeline", run.pipeline.clone())];
        match outcome {
            Ok(s) => {
                self.rows.add(s.counters.rows_written, &attrs);
                self.bytes.add(s.counters.bytes, &attrs);
                self.pages.add(s.counters.pages, &attrs);
                self.duration.record(s.elapsed.as_secs_f64(), &attrs);
            }
            Err(_) => {
                self.failures.add(1, &attrs);
                let took = (chrono::Utc::now() - run.started_at)
                    .to_std()
                    .unwrap_or_default();
                self.duration.record(took.as_secs_f64(), &attrs);
            }
        }
    }
}

/// Freshness (seconds since the last successful run), cursor lag (seconds behind now, for
/// cursors that are times) and retries (`run_retry` events), read from the catalog when
/// the metrics are exported.
fn catalog_metrics(provider: &SdkMeterProvider) {
    let m = provider.meter("hakiri");
    let freshness = m
        .f64_observable_gauge("hakiri.pipeline.freshness")
        .with_description("Seconds since the pipeline's last successful run ended")
        .with_unit("s")
        .with_callback(|o| {
            let Some(c) = CATALOG.get() else { return };
            let Ok(runs) = c.runs(None) else { return };
            let now = chrono::Utc::now();
            let mut last = std::collections::BTreeMap::new();
            for r in runs
                .iter()
                .filter(|r| r.status == RunStatus::Succeeded && !r.pipeline.contains(':'))
            {
                let t = r.ended_at.unwrap_or(r.started_at);
                let e = last.entry(r.pipeline.clone()).or_insert(t);
                *e = (*e).max(t);
            }
            for (p, t) in last {
                o.observe(
                    (now - t).num_milliseconds() as f64 / 1000.0,
                    &[KeyValue::new("pipeline", p)],
                );
            }
        })
        .build();
    let lag = m
        .f64_observable_gauge("hakiri.pipeline.cursor_lag")
        .with_description("Seconds between now and a time cursor's committed value")
        .with_unit("s")
        .with_callback(|o| {
            let Some(c) = CATALOG.get() else { return };
            let Ok(pipelines) = c.list_pipelines() else {
                return;
            };
            let now = chrono::Utc::now();
            for p in pipelines {
                let Ok(Some(v)) = c.cursor(&p.name) else {
                    continue;
                };
                let t = chrono::DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .or_else(|_| {
                        chrono::NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S%.f")
                            .map(|t| t.and_utc())
                    });
                if let Ok(t) = t {
                    o.observe(
                        (now - t).num_milliseconds() as f64 / 1000.0,
                        &[KeyValue::new("pipeline", p.name)],
                    );
                }
            }
        })
        .build();
    let retries = m
        .u64_observable_counter("hakiri.run.retries")
        .with_description("Runs retried by the scheduler after a failure")
        .with_unit("{run}")
        .with_callback(|o| {
            let Some(c) = CATALOG.get() else { return };
            let Ok(events) = c.state_table("events") else {
                return;
            };
            let col = |name: &str| events.columns.iter().position(|(n, _)| n == name);
            let (Some(id), Some(kind), Some(subject)) = (col("id"), col("kind"), col("subject"))
            else {
                return;
            };
            // A counter never goes down, but `[retention]` deletes old events: each export
            // adds the retries past the highest event id seen so far (ids are never reused).
            static SEEN: std::sync::Mutex<(i64, std::collections::BTreeMap<String, u64>)> =
                std::sync::Mutex::new((0, std::collections::BTreeMap::new()));
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            let (high, totals) = &mut *seen;
            let mut newest = *high;
            for row in &events.rows {
                use hakiri_engine::catalog::state_tables::RawValue;
                let RawValue::Int(event_id) = row[id] else {
                    continue;
                };
                newest = newest.max(event_id);
                let text = |i: usize| match &row[i] {
                    RawValue::Text(t) => t.as_str(),
                    _ => "",
                };
                if event_id > *high && text(kind) == "run_retry" {
                    *totals.entry(text(subject).to_string()).or_default() += 1;
                }
            }
            *high = newest;
            for (p, n) in totals.iter() {
                o.observe(*n, &[KeyValue::new("pipeline", p.clone())]);
            }
        })
        .build();
    // Kept for the process's life: the callbacks belong to these instruments.
    static KEEP: OnceLock<Box<dyn std::any::Any + Send + Sync>> = OnceLock::new();
    let _ = KEEP.set(Box::new((freshness, lag, retries)));
}
