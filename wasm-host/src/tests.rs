//! The sandbox against real components (WAT test guests built at test time) and the real
//! fixture API (tests/fixtures/paged_server.py on 127.0.0.1).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use hakiri_core::error::{Error, ErrorCategory};
use hakiri_core::ports::Source;
use hakiri_core::types::{Origin, SourceSpec};

use crate::WasmSource;
use crate::error::{Limit, WasmError};
use crate::runtime::Runtime;
use crate::testing::{self, Behaviour, Guest};

/// The fixture API, killed on drop.
struct Api {
    child: Child,
    port: u16,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    /// The server with `rows` records in its growing table.
    fn start(rows: u32) -> Api {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/paged_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start paged_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let api = Api {
            port: line.trim().parse().unwrap(),
            child,
        };
        api.get(&format!("/admin/grow?n={rows}"));
        api
    }

    fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/ndjson_grow?size=10", self.port)
    }
}

/// A project folder holding `guest` as `connectors/<name>.wasm`, and its source spec.
struct Project {
    dir: tempfile::TempDir,
    source: WasmSource,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("connectors")).unwrap();
        let source = WasmSource::new(dir.path());
        Project { dir, source }
    }

    fn add(&self, guest: &Guest) -> String {
        let rel = format!("connectors/{}.wasm", guest.name);
        std::fs::write(self.dir.path().join(&rel), testing::build(guest)).unwrap();
        rel
    }

    fn spec(&self, component: &str, opts: &[(&str, &str)]) -> SourceSpec {
        let mut options: BTreeMap<String, String> = opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        options.insert("component".into(), component.into());
        SourceSpec {
            name: "x".into(),
            connector: "wasm".into(),
            options,
            origin: Origin::Sql,
        }
    }

    async fn ctx(&self, spec: &SourceSpec) -> hakiri_core::error::Result<SessionContext> {
        let ctx = SessionContext::new();
        let table = self.source.table(spec, "items", None).await?;
        ctx.register_table("items", table).unwrap();
        Ok(ctx)
    }
}

async fn ids(ctx: &SessionContext, sql: &str) -> Result<Vec<i64>, String> {
    let batches = ctx
        .sql(sql)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| Error::from(e).to_string())?;
    Ok(batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect())
}

fn wasm_kind(e: &Error) -> &WasmError {
    match e.kind() {
        Error::Connector { source, .. } => source
            .downcast_ref::<WasmError>()
            .unwrap_or_else(|| panic!("not a WasmError: {e}")),
        Error::DataFusion(df) => {
            panic!("a DataFusion error where a connector error was expected: {df}")
        }
        other => panic!("not a connector error: {other:?}"),
    }
}

/// A query's error.
async fn query_error(ctx: &SessionContext, sql: &str) -> DataFusionError {
    let r = async { ctx.sql(sql).await?.collect().await }.await;
    r.expect_err("the query should fail")
}

/// The core error under DataFusion's wrapping.
fn hakiri(e: &DataFusionError) -> &Error {
    hakiri_core::error::find_hakiri_error(e).unwrap_or_else(|| panic!("no Hakiri error in {e}"))
}

#[tokio::test]
async fn a_pass_through_guest_reads_every_page_and_pushes_filters_and_limit() {
    let api = Api::start(25);
    let p = Project::new();
    let c = p.add(&Guest::new("pass", &["127.0.0.1"], Behaviour::PassThrough));
    let spec = p.spec(&c, &[("allow_hosts", "127.0.0.1"), ("url", &api.url())]);
    p.source.validate(&spec).unwrap();
    assert_eq!(p.source.discover(&spec).await.unwrap(), vec!["items"]);
    let ctx = p.ctx(&spec).await.unwrap();
    let all = ids(&ctx, "select id from items").await.unwrap();
    assert_eq!(all, (1..=25).collect::<Vec<_>>());
    let some = ids(&ctx, "select id from items where id > 5 limit 3")
        .await
        .unwrap();
    assert_eq!(some, vec![6, 7, 8]);
    let plan = ctx
        .sql("explain select id from items where id > 5 limit 3")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(
        text.contains("WasmExec: source=x, connector=pass, table=items, pushed_filters=[id > Int64(5) (Exact)], limit=3")
            && !text.contains("FilterExec"),
        "{text}"
    );
    // The API applies `id >` and `id >=` (`&after=`); the guest reports `id <` inexact and
    // the host applies it.
    let ge = ids(&ctx, "select id from items where id >= 20")
        .await
        .unwrap();
    assert_eq!(ge, (20..=25).collect::<Vec<_>>());
    let lt = ids(&ctx, "select id from items where id < 4 and id > 1")
        .await
        .unwrap();
    assert_eq!(lt, vec![2, 3]);
    let log = api.get("/admin/log?path=/ndjson_grow");
    assert!(
        log.contains("\"after\": \"19\"") && log.contains("\"after\": \"1\""),
        "{log}"
    );
}

#[tokio::test]
async fn a_component_needing_an_ungranted_host_does_not_load() {
    let p = Project::new();
    let c = p.add(&Guest::new(
        "greedy",
        &["api.example.com"],
        Behaviour::PassThrough,
    ));
    let spec = p.spec(
        &c,
        &[("allow_hosts", "127.0.0.1"), ("url", "http://127.0.0.1:1/")],
    );
    let e = p.source.discover(&spec).await.unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Config);
    assert!(
        matches!(wasm_kind(&e), WasmError::CapabilityDenied { name, option: "allow_hosts", .. } if name == "api.example.com")
    );
    assert_eq!(
        e.to_string(),
        "capability denied: source 'x' (connector 'greedy') needs host 'api.example.com', which is not granted: add it to the source's option 'allow_hosts' (for example 'allow_hosts' 'api.example.com') if it should be"
    );
}

#[tokio::test]
async fn a_request_to_an_ungranted_host_fails_the_call_even_when_the_guest_ignores_it() {
    let api = Api::start(5);
    let p = Project::new();
    let c = p.add(&Guest::new(
        "sneaky",
        &["127.0.0.1"],
        Behaviour::ForbiddenHost,
    ));
    let spec = p.spec(&c, &[("allow_hosts", "127.0.0.1"), ("url", &api.url())]);
    let ctx = p.ctx(&spec).await.unwrap();
    let df = query_error(&ctx, "select id from items").await;
    let e = hakiri(&df);
    assert!(
        e.to_string().contains(
            "capability denied: source 'x' (connector 'sneaky') tried to reach host 'forbidden.invalid:80'"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn limits_stop_a_call_by_name_and_the_next_call_is_fine() {
    let api = Api::start(5);
    let p = Project::new();
    let cases = [
        (
            Behaviour::Loop,
            vec![("fuel", "1000000")],
            Limit::Fuel,
            "fuel",
        ),
        (
            Behaviour::Loop,
            vec![("timeout", "300 ms")],
            Limit::Deadline,
            "timeout",
        ),
        (
            Behaviour::MemoryGrab,
            vec![("memory", "64 MiB")],
            Limit::Memory,
            "memory",
        ),
    ];
    for (behaviour, opts, limit, option) in cases {
        let c = p.add(&Guest::new(
            &format!("{behaviour:?}").to_lowercase(),
            &["127.0.0.1"],
            behaviour,
        ));
        let url = api.url();
        let mut all = vec![("allow_hosts", "127.0.0.1"), ("url", url.as_str())];
        all.extend(opts.iter().cloned());
        let spec = p.spec(&c, &all);
        let ctx = p.ctx(&spec).await.unwrap();
        let t0 = Instant::now();
        let df = query_error(&ctx, "select id from items").await;
        let e = hakiri(&df);
        assert!(
            matches!(wasm_kind(e), WasmError::Limit { limit: l, call: "read", .. } if *l == limit),
            "{behaviour:?}: {e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("raise the source's option '{option}'")),
            "{e}"
        );
        assert!(
            t0.elapsed().as_secs() < 20,
            "{behaviour:?} took {:?}",
            t0.elapsed()
        );
    }
    // The host is fine, and a well-behaved guest of the same project still reads.
    let c = p.add(&Guest::new("pass", &["127.0.0.1"], Behaviour::PassThrough));
    let spec = p.spec(&c, &[("allow_hosts", "127.0.0.1"), ("url", &api.url())]);
    let ctx = p.ctx(&spec).await.unwrap();
    assert_eq!(ids(&ctx, "select id from items").await.unwrap().len(), 5);
}

#[tokio::test]
async fn a_log_flood_is_dropped_and_counted_and_the_call_goes_on() {
    let api = Api::start(5);
    let p = Project::new();
    let c = p.add(&Guest::new("chatty", &["127.0.0.1"], Behaviour::LogFlood));
    let spec = p.spec(
        &c,
        &[
            ("allow_hosts", "127.0.0.1"),
            ("url", &api.url()),
            ("log_rate", "1 KiB"),
        ],
    );
    let bound = p.source.bind(&spec).await.unwrap();
    let request = crate::bindings::exports::hakiri::connector::source::ReadRequest {
        projection: None,
        filters: vec![],
        limit: None,
        resume_token: None,
    };
    let (resp, stats) = bound
        .loaded
        .read(&bound.env, &bound.config, "items", &request)
        .await
        .unwrap();
    assert!(
        matches!(resp.rows, crate::bindings::hakiri::connector::types::Rows::Ndjson(ref b) if !b.is_empty())
    );
    // 100000 lines of 92 bytes against 1 KiB a second: at most a few dozen get through.
    assert!(stats.log_lines_dropped > 99_000, "{stats:?}");
}

#[tokio::test]
async fn a_malformed_page_fails_with_the_table_and_why() {
    let api = Api::start(5);
    let p = Project::new();
    let c = p.add(&Guest::new(
        "broken",
        &["127.0.0.1"],
        Behaviour::MalformedPage,
    ));
    let spec = p.spec(&c, &[("allow_hosts", "127.0.0.1"), ("url", &api.url())]);
    let ctx = p.ctx(&spec).await.unwrap();
    let df = query_error(&ctx, "select id from items").await;
    let e = hakiri(&df);
    assert!(
        matches!(wasm_kind(e), WasmError::Page { table, .. } if table == "items"),
        "{e}"
    );
    assert!(
        e.to_string().starts_with(
            "source 'x', table 'items': a page the connector returned is malformed: its NDJSON"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn files_that_are_not_connectors_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(None).unwrap();
    let core_module = [0u8, b'a', b's', b'm', 1, 0, 0, 0];
    let guest = Guest::new("v2", &[], Behaviour::PassThrough);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "text.wasm",
            b"hello".to_vec(),
            "it does not start with the WebAssembly magic bytes",
        ),
        (
            "module.wasm",
            core_module.to_vec(),
            "it is a core WebAssembly module",
        ),
        (
            "other.wasm",
            testing::other_world(),
            "is a component of another world: it exports run",
        ),
        (
            "v2.wasm",
            testing::build_version(&guest, "0.2.0", dir.path()),
            "is a connector for hakiri:connector@0.2.0, and this Hakiri speaks hakiri:connector@0.1.0",
        ),
    ];
    for (name, bytes, says) in cases {
        let e = rt.load_bytes(name, &bytes).unwrap_err();
        assert!(e.to_string().contains(says), "{name}: {e}");
        assert_eq!(e.category(), ErrorCategory::Config, "{name}");
    }
}

/// A component compiled once is read from the cache by the next engine: what a second
/// `hakiri` process does.
#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = testing::build(&Guest::new("pass", &[], Behaviour::PassThrough));
    let first = Runtime::new(Some(cache.path())).unwrap();
    let a = first.load_bytes("pass.wasm", &bytes).unwrap();
    assert_eq!(first.cache_counts(), (0, 1));
    let second = Runtime::new(Some(cache.path())).unwrap();
    let b = second.load_bytes("pass.wasm", &bytes).unwrap();
    assert_eq!(second.cache_counts(), (1, 0));
    eprintln!(
        "compile: {:?}, from the cache: {:?}",
        a.compile_time, b.compile_time
    );
}
