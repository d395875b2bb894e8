//! The connector conformance suite: what any connector must do to back a pipeline, checked
//! through the same `Source` port and `RunContext` the engine uses. It runs against the
//! native `http` connector and the sandboxed ones (a WAT guest and the Python example
//! connector), each over the fixture API's growing dataset (ids 1..N, `name` g<id>,
//! `amount` id*10) in pages of [`PAGE`] records:
//!
//! - the spec is valid: option names unique and documented, an unknown option refused with
//!   the valid ones;
//! - discover returns the table, and its schema the fixture's columns;
//! - a full read returns exactly the fixture's rows;
//! - a read resumed from each intermediate token returns the rest, with no overlap;
//! - pushed filters are honoured when the provider says `Exact`, and a superset of the
//!   answer when it says `Inexact` (the query's answer is right either way);
//! - errors map to the right kinds: an unknown table is `NotFound`, a failing API
//!   `Upstream`, a bad option `InvalidInput`;
//! - limits are respected: `LIMIT 5` returns 5 rows and reads one page.
//!
//! A new connector joins by adding a [`Case`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{TableProviderFilterPushDown, col, lit};
use datafusion::prelude::{SessionConfig, SessionContext};
use hakiri_engine::ErrorCategory;
use hakiri_engine::cursor::BoundaryRows;
use hakiri_engine::ports::{RunContext, Source};
use hakiri_engine::types::{SchemaPolicy, SourceSpec};
use serde_json::Value;

use crate::support::{Server, python_connector, shared_wasm_cache};

/// Records in the fixture.
const N: i64 = 57;
/// Records per page.
const PAGE: usize = 10;

/// One connector under test.
struct Case {
    what: &'static str,
    source: Arc<dyn Source>,
    /// A source of the fixture's records as table `table`.
    spec: SourceSpec,
    table: &'static str,
    /// The same source over an endpoint that always answers 500.
    failing: SourceSpec,
    /// The fixture path its pages are requested from (to count requests).
    path: &'static str,
}

fn spec(name: &str, connector: &str, options: &[(&str, String)]) -> SourceSpec {
    SourceSpec {
        name: name.to_string(),
        connector: connector.to_string(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        origin: Default::default(),
    }
}

fn http_case(server: &Server, root: &Path) -> Case {
    let source = hakiri_table_providers::connectors(root)
        .into_iter()
        .find(|s| s.connector() == "http")
        .expect("the http connector");
    let opts = |path: &str| {
        vec![
            ("base_url", server.url()),
            (
                "schema",
                "id bigint, name text, amount bigint, bucket bigint".to_string(),
            ),
            ("tables.items.path", path.to_string()),
            ("tables.items.records", "data".to_string()),
            ("tables.items.pagination", "cursor".to_string()),
            ("tables.items.cursor_path", "next_cursor".to_string()),
            ("tables.items.cursor_param", "after".to_string()),
            ("tables.items.has_more_path", "has_more".to_string()),
            ("tables.items.query.size", PAGE.to_string()),
            ("max_retries", "1".to_string()),
            ("retry_backoff_ms", "10".to_string()),
        ]
    };
    Case {
        what: "http (native)",
        source,
        spec: spec("api", "http", &opts("/cursor_null")),
        table: "items",
        failing: spec("down", "http", &opts("/always500")),
        path: "/cursor_null",
    }
}

fn wasm_source(root: &Path) -> Arc<dyn Source> {
    Arc::new(hakiri_wasm::WasmSource::with_cache(
        root,
        Some(shared_wasm_cache()),
    ))
}

fn wat_case(server: &Server, root: &Path) -> Case {
    use hakiri_wasm::testing::{Behaviour, Guest, build};
    std::fs::write(
        root.join("wat.wasm"),
        build(&Guest::new("pass", &["127.0.0.1"], Behaviour::PassThrough)),
    )
    .unwrap();
    let opts = |url: String| {
        vec![
            ("component", "wat.wasm".to_string()),
            ("allow_hosts", "127.0.0.1".to_string()),
            ("url", url),
            ("max_retries", "1".to_string()),
            ("retry_backoff_ms", "10".to_string()),
        ]
    };
    Case {
        what: "wasm (WAT pass-through guest)",
        source: wasm_source(root),
        spec: spec(
            "wat",
            "wasm",
            &opts(format!("{}/ndjson_grow?size={PAGE}", server.url())),
        ),
        table: "items",
        failing: spec("down", "wasm", &opts(format!("{}/always500", server.url()))),
        path: "/ndjson_grow",
    }
}

fn python_case(server: &Server, root: &Path) -> Case {
    std::fs::copy(python_connector(), root.join("cursor-api.wasm")).unwrap();
    let opts = |url: String| {
        vec![
            ("component", "cursor-api.wasm".to_string()),
            ("allow_hosts", "127.0.0.1".to_string()),
            ("url", url),
            ("columns", "id:int64, name:utf8, amount:int64".to_string()),
            ("max_retries", "1".to_string()),
            ("retry_backoff_ms", "10".to_string()),
        ]
    };
    Case {
        what: "wasm (Python example connector)",
        source: wasm_source(root),
        spec: spec(
            "py",
            "wasm",
            &opts(format!("{}/cursor_null?size={PAGE}", server.url())),
        ),
        table: "items",
        failing: spec("down", "wasm", &opts(format!("{}/always500", server.url()))),
        path: "/cursor_null",
    }
}

#[test]
fn the_native_http_connector_conforms() {
    conform(http_case);
}

#[test]
fn a_wat_wasm_connector_conforms() {
    conform(wat_case);
}

#[test]
fn the_python_wasm_connector_conforms() {
    conform(python_case);
}

fn conform(make: fn(&Server, &Path) -> Case) {
    let server = Server::paged();
    server.get(&format!("/admin/grow?n={N}"));
    let dir = tempfile::tempdir().unwrap();
    let case = make(&server, dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        spec_is_valid(&case).await;
        let provider = discovers(&case).await;
        full_read(&case, &provider).await;
        resumes_from_every_token(&case, &provider).await;
        honours_pushed_filters(&case, &provider).await;
        errors_have_kinds(&case).await;
        respects_limits(&case, &provider, &server).await;
    });
}

async fn spec_is_valid(case: &Case) {
    let what = case.what;
    let options = case.source.options();
    let mut names: Vec<&str> = options.iter().map(|o| o.name).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "{what}: option names repeat");
    for o in options {
        assert!(
            !o.help.is_empty(),
            "{what}: option '{}' has no help",
            o.name
        );
    }
    case.source
        .validate(&case.spec)
        .unwrap_or_else(|e| panic!("{what}: the case's spec is refused: {e}"));
    // An unknown option is refused before any data moves (by validate, or for a WASM
    // connector whose options its component declares, when the table is built).
    let mut bad = case.spec.clone();
    bad.options.insert("no_such_option".into(), "1".into());
    let err = match case.source.validate(&bad) {
        Err(e) => e,
        Ok(()) => case
            .source
            .table(&bad, case.table, None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: an unknown option was accepted")),
    };
    assert_eq!(err.category(), ErrorCategory::InvalidInput, "{what}: {err}");
    assert!(
        err.to_string().contains("unknown option 'no_such_option'")
            && err.to_string().contains("valid options are"),
        "{what}: {err}"
    );
}

async fn discovers(case: &Case) -> Arc<dyn TableProvider> {
    let what = case.what;
    let tables = case.source.discover(&case.spec).await.unwrap();
    assert!(
        tables.iter().any(|t| t == case.table),
        "{what}: discover gave {tables:?}"
    );
    let provider = case
        .source
        .table(&case.spec, case.table, None)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let schema = provider.schema();
    for (name, ty) in [
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        ("amount", DataType::Int64),
    ] {
        let f = schema
            .field_with_name(name)
            .unwrap_or_else(|_| panic!("{what}: no column {name} in {schema:?}"));
        assert_eq!(f.data_type(), &ty, "{what}: column {name}");
    }
    provider
}

/// `(id, name, amount)` of what `sql` over the provider (as `t`) returns, in order.
async fn rows(
    provider: &Arc<dyn TableProvider>,
    rc: Option<Arc<RunContext>>,
    sql: &str,
) -> Vec<(i64, String, i64)> {
    let config = match rc {
        Some(rc) => SessionConfig::new().with_extension(rc),
        None => SessionConfig::new(),
    };
    let ctx = SessionContext::new_with_config(config);
    ctx.register_table("t", provider.clone()).unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let name = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let amount = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            assert!(!id.is_null(i));
            out.push((id.value(i), name.value(i).to_string(), amount.value(i)));
        }
    }
    out
}

fn fixture(ids: impl Iterator<Item = i64>) -> Vec<(i64, String, i64)> {
    ids.map(|i| (i, format!("g{i}"), i * 10)).collect()
}

async fn full_read(case: &Case, provider: &Arc<dyn TableProvider>) {
    let got = rows(provider, None, "select id, name, amount from t order by id").await;
    assert_eq!(got, fixture(1..=N), "{}: a full read", case.what);
}

fn run_context(
    token: Option<String>,
    boundary: Option<BoundaryRows>,
    pages: u64,
) -> Arc<RunContext> {
    Arc::new(RunContext::new(
        token,
        boundary,
        Some(pages),
        None,
        SchemaPolicy::default(),
    ))
}

async fn resumes_from_every_token(case: &Case, provider: &Arc<dyn TableProvider>) {
    let what = case.what;
    let sql = "select id, name, amount from t";
    // One page per read, each resumed from the token the one before reported.
    let (mut token, mut boundary) = (None, None);
    let mut seen = Vec::new();
    let mut checkpoints = Vec::new();
    for step in 0.. {
        assert!(step < 100, "{what}: the token never ends: {token:?}");
        let rc = run_context(token.clone(), boundary.clone(), 1);
        seen.extend(rows(provider, Some(rc.clone()), sql).await);
        let report = rc.report();
        if report.exhausted {
            break;
        }
        assert!(
            report.token.is_some(),
            "{what}: page {} reported no token and more to come",
            step + 1
        );
        (token, boundary) = (report.token, report.boundary);
        checkpoints.push((token.clone(), boundary.clone(), seen.len()));
    }
    assert_eq!(
        seen,
        fixture(1..=N),
        "{what}: page by page, each record once"
    );
    assert!(
        checkpoints.len() >= N as usize / PAGE - 1,
        "{what}: {} tokens for {N} records in pages of {PAGE}",
        checkpoints.len()
    );
    // From each intermediate token, the rest in one go: no overlap, nothing missing.
    for (token, boundary, before) in checkpoints {
        let rc = run_context(token.clone(), boundary, u64::MAX);
        let rest = rows(provider, Some(rc), sql).await;
        assert_eq!(
            rest,
            fixture(before as i64 + 1..=N),
            "{what}: resumed from token {token:?}"
        );
    }
}

async fn honours_pushed_filters(case: &Case, provider: &Arc<dyn TableProvider>) {
    let what = case.what;
    let state = SessionContext::new().state();
    let filters = [
        (col("id").gt(lit(25i64)), "id > 25", 26..=N),
        (col("id").gt_eq(lit(40i64)), "id >= 40", 40..=N),
        (col("amount").lt(lit(100i64)), "amount < 100", 1..=9),
    ];
    for (expr, text, want) in filters {
        let want = fixture(want);
        let support = provider.supports_filters_pushdown(&[&expr]).unwrap()[0].clone();
        if support != TableProviderFilterPushDown::Unsupported {
            let plan = provider
                .scan(&state, None, std::slice::from_ref(&expr), None)
                .await
                .unwrap();
            let batches = datafusion::physical_plan::collect(plan, state.task_ctx())
                .await
                .unwrap();
            let got: Vec<i64> = batches
                .iter()
                .flat_map(|b| {
                    let id = b
                        .column_by_name("id")
                        .unwrap()
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .clone();
                    (0..id.len()).map(move |i| id.value(i)).collect::<Vec<_>>()
                })
                .collect();
            let want_ids: Vec<i64> = want.iter().map(|r| r.0).collect();
            match support {
                TableProviderFilterPushDown::Exact => {
                    assert_eq!(got, want_ids, "{what}: `{text}` pushed as exact")
                }
                _ => assert!(
                    want_ids.iter().all(|i| got.contains(i)),
                    "{what}: `{text}` pushed as inexact lost rows: {got:?}"
                ),
            }
        }
        let got = rows(
            provider,
            None,
            &format!("select id, name, amount from t where {text} order by id"),
        )
        .await;
        assert_eq!(got, want, "{what}: where {text}");
    }
}

async fn errors_have_kinds(case: &Case) {
    let what = case.what;
    let err = case
        .source
        .table(&case.spec, "no_such_table", None)
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: an unknown table was built"));
    assert_eq!(err.category(), ErrorCategory::NotFound, "{what}: {err}");
    // A failing API fails the read as Upstream, after the source's retries.
    let provider = case
        .source
        .table(&case.failing, case.table, None)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let ctx = SessionContext::new();
    ctx.register_table("t", provider).unwrap();
    let err = ctx
        .sql("select * from t")
        .await
        .unwrap()
        .collect()
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: a read of an API answering 500 succeeded"));
    let err = hakiri_engine::Error::from(err);
    assert_eq!(err.category(), ErrorCategory::Upstream, "{what}: {err}");
    // The message says what failed: the source or the URL it read.
    let text = err.to_string();
    assert!(
        text.contains("'down'") || text.contains("/always500"),
        "{what}: {err}"
    );
}

async fn respects_limits(case: &Case, provider: &Arc<dyn TableProvider>, server: &Server) {
    let what = case.what;
    let log = |server: &Server| -> usize {
        let v: Vec<Value> =
            serde_json::from_str(&server.get(&format!("/admin/log?path={}", case.path))).unwrap();
        v.len()
    };
    let before = log(server);
    let got = rows(provider, None, "select id, name, amount from t limit 5").await;
    assert_eq!(got.len(), 5, "{what}: limit 5 gave {got:?}");
    let requests = log(server) - before;
    assert_eq!(
        requests, 1,
        "{what}: limit 5 read {requests} pages of {PAGE}"
    );
}
