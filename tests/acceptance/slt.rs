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
    hakiri_tests::repo_root().join("tests/slt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictests() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(slt_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files found");
    for file in files {
        let dir = tempfile::tempdir().unwrap();
        let options = EngineOptions {
            connectors: hakiri_table_providers::connectors(&slt_dir().join("data")),
            table_factories: hakiri_table_providers::table_factories(),
            clock: None,
        };
        let mut engine = Engine::open(dir.path(), options).unwrap();
        hakiri_udfs::register_all(engine.session_mut()).unwrap();
        let engine = Arc::new(engine);
        let db_dir = std::sync::Mutex::new(Some(dir));
        let mut runner = sqllogictest::Runner::new(|| {
            let engine = engine.clone();
            let dir = db_dir
                .lock()
                .unwrap()
                .take()
                .unwrap_or_else(|| tempfile::tempdir().unwrap());
            async move { Ok(HakiriDb { engine, _dir: dir }) }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {e}", file.display());
        }
    }
}
