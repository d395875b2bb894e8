//! Runs the `.slt` files under tests/slt, each in its own fresh project, against the
//! engine in-process (the file connector reads tests/slt/data).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use hakiri_engine::{Engine, EngineOptions, Output};
use sqllogictest::{DBOutput, DefaultColumnType};

struct HakiriDb {
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl sqllogictest::AsyncDB for HakiriDb {
    type Error = hakiri_engine::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Self::Error> {
        let mut last = DBOutput::StatementComplete(0);
        for output in self.engine.execute(sql).await? {
            last = match output {
                Output::Stream(mut s) => {
                    let types: Vec<DefaultColumnType> = s
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| match f.data_type() {
                            DataType::Int8
                            | DataType::Int16
                            | DataType::Int32
                            | DataType::Int64
                            | DataType::UInt64 => DefaultColumnType::Integer,
                            DataType::Float32 | DataType::Float64 => {
                                DefaultColumnType::FloatingPoint
                            }
                            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                                DefaultColumnType::Text
                            }
                            _ => DefaultColumnType::Any,
                        })
                        .collect();
                    let mut rows = Vec::new();
                    let opts = FormatOptions::default().with_null("NULL");
                    while let Some(batch) = s.next().await {
                        let batch = batch.map_err(hakiri_engine::Error::from)?;
                        let fmts: Vec<ArrayFormatter> = batch
                            .columns()
                            .iter()
                            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
                            .collect();
                        for r in 0..batch.num_rows() {
                            rows.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
                        }
                    }
                    DBOutput::Rows { types, rows }
                }
                Output::Run(summary) => DBOutput::StatementComplete(summary.counters.rows_written),
                Output::Message(_) | Output::Plan(_) => DBOutput::StatementComplete(0),
            };
        }
        Ok(last)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "hakiri"
    }
}

fn slt_dir() -> PathBuf {
    crate::support::repo_root().join("tests/slt")
}

/// Runs (or with `--complete`, rewrites) one file in a fresh project.
async fn run_file(file: PathBuf, complete: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let options = EngineOptions {
        connectors: hakiri_table_providers::connectors(&slt_dir().join("data")),
        table_factories: hakiri_table_providers::table_factories(),
        store_key: crate::support::test_store_key().map(|k| {
            let key = hakiri_engine::store::StoreKey::from_hex("HAKIRI_TEST_STORE_KEY", &k)
                .expect("HAKIRI_TEST_STORE_KEY");
            hakiri_engine::store::StoreKeys::new(key, Vec::new())
        }),
        ..EngineOptions::default()
    };
    let mut engine = Engine::open(dir.path(), options).map_err(|e| e.to_string())?;
    hakiri_udfs::register_all(engine.session_mut()).map_err(|e| e.to_string())?;
    let engine = Arc::new(engine);
    let db_dir = std::sync::Mutex::new(Some(dir));
    let mut runner = sqllogictest::Runner::new(move || {
        let engine = engine.clone();
        let dir = db_dir
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| tempfile::tempdir().unwrap());
        async move { Ok(HakiriDb { engine, _dir: dir }) }
    });
    if complete {
        runner
            .update_test_file(
                &file,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        // The error names the record, its SQL and the file and line.
        runner
            .run_file_async(&file)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Every `.slt` file under tests/slt, in parallel, each in its own project; a failure
/// report names every failing file. `SLT_COMPLETE=1` rewrites the files' expected results
/// from what the engine answers (`scripts/slt --complete`); `SLT_FILES=a,b` runs the files
/// whose names contain `a` or `b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictests() {
    let complete = std::env::var("SLT_COMPLETE").is_ok_and(|v| v == "1");
    let only: Vec<String> = std::env::var("SLT_FILES")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(slt_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files found");
    let mut tasks = tokio::task::JoinSet::new();
    for file in files.clone() {
        tasks.spawn(async move { (file.clone(), run_file(file, complete).await) });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (file, result) = done.expect("an .slt task panicked");
        if let Err(e) = result {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {} .slt file(s) failed{}:\n\n{}",
        failures.len(),
        files.len(),
        if complete { " to complete" } else { "" },
        failures.join("\n\n")
    );
}
