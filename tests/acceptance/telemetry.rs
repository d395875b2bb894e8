//! OpenTelemetry over OTLP/HTTP: an in-process receiver on 127.0.0.1 (decoding the
//! protobuf requests with `opentelemetry-proto`) gets a run's trace, with the span tree
//! run -> plan, part -> http.request, commit, and the run metrics per pipeline.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
use prost::Message;

use crate::support::{Project, Server, hakiri, receiver};

#[test]
fn a_run_is_a_trace_and_its_metrics_are_exported() {
    let (url, got) = receiver(false);
    let endpoint = url.trim_end_matches("/hook").to_string();
    let server = Server::paged();
    server.get("/admin/grow?n=250");
    let p = Project::new(&format!(
        r#"
[sources.api]
type = "http"
base_url = "{}"
schema = "id bigint, name text, amount bigint, bucket bigint"

[sources.api.tables.items]
path = "/cursor_null"
records = "data"
pagination = "cursor"
cursor_path = "next_cursor"
cursor_param = "after"
has_more_path = "has_more"
query = {{ size = "50" }}

[pipelines.items]
cursor = {{ kind = "token" }}
checkpoint_pages = 2
sql = "INSERT INTO context.items SELECT * FROM api.items"
"#,
        server.url()
    ));
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "hakiri-test"),
        // Regression: the stderr log level filtered the exported spans too.
        ("HAKIRI_LOG", "error"),
    ];
    let out = hakiri(p.path(), &["run", "items"], &env).ok().stdout;
    assert!(out.contains("250 rows written"), "{out}");

    let got = got.lock().unwrap().clone();
    let mut spans = Vec::new();
    let mut metrics = BTreeMap::new();
    for r in &got {
        match r.path.as_str() {
            "/v1/traces" => {
                let req = ExportTraceServiceRequest::decode(r.raw.as_slice()).unwrap();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref()?.value.clone());
                    assert_eq!(service, Some(AnyValue::StringValue("hakiri-test".into())));
                    for ss in rs.scope_spans {
                        spans.extend(ss.spans);
                    }
                }
            }
            "/v1/metrics" => {
                let req = ExportMetricsServiceRequest::decode(r.raw.as_slice()).unwrap();
                for rm in req.resource_metrics {
                    for sm in rm.scope_metrics {
                        for m in sm.metrics {
                            metrics.insert(m.name.clone(), m);
                        }
                    }
                }
            }
            other => panic!("unexpected OTLP path {other}"),
        }
    }
    // The span tree.
    let by_id: BTreeMap<Vec<u8>, &_> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let name_of = |id: &[u8]| by_id.get(id).map_or("-", |s| s.name.as_str());
    let runs: Vec<_> = spans.iter().filter(|s| s.name == "run").collect();
    assert_eq!(
        runs.len(),
        1,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let run = runs[0];
    assert!(run.parent_span_id.is_empty(), "the run is the trace's root");
    let outside: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id != run.trace_id)
        .map(|s| (&s.name, name_of(&s.parent_span_id)))
        .collect();
    assert!(
        outside.is_empty(),
        "spans outside the run's trace: {outside:?}"
    );
    let count = |name: &str, parent: &str| {
        spans
            .iter()
            .filter(|s| s.name == name && name_of(&s.parent_span_id) == parent)
            .count()
    };
    assert_eq!(count("plan", "run"), 1);
    let parts = count("part", "run");
    // Five pages, a checkpoint every 2: three parts.
    assert_eq!(parts, 3);
    assert_eq!(count("commit", "part"), parts, "each part commits once");
    let requests = count("http.request", "part");
    assert_eq!(
        requests,
        spans.iter().filter(|s| s.name == "http.request").count(),
        "every request is under a part"
    );
    // 250 records in pages of 50: five requests.
    assert_eq!(requests, 5);
    // The metrics, per pipeline.
    let sum = |name: &str| -> i64 {
        let m = metrics
            .get(name)
            .unwrap_or_else(|| panic!("no metric {name}: {:?}", metrics.keys()));
        match m.data.as_ref().unwrap() {
            Data::Sum(s) => s
                .data_points
                .iter()
                .map(|p| match p.value.unwrap() {
                    Number::AsInt(i) => i,
                    Number::AsDouble(d) => d as i64,
                })
                .sum(),
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(sum("hakiri.run.rows_written"), 250);
    assert_eq!(sum("hakiri.run.pages"), 5);
    let duration = metrics
        .get("hakiri.run.duration")
        .expect("the duration histogram");
    match duration.data.as_ref().unwrap() {
        Data::Histogram(h) => {
            assert_eq!(h.data_points.iter().map(|p| p.count).sum::<u64>(), 1);
            let attrs = &h.data_points[0].attributes;
            assert!(attrs.iter().any(|a| a.key == "pipeline"
                && a.value.as_ref().and_then(|v| v.value.clone())
                    == Some(AnyValue::StringValue("items".into()))));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        metrics.contains_key("hakiri.pipeline.freshness"),
        "{:?}",
        metrics.keys()
    );
}
