//! Hakiri's connectors, one module per source type, each a DataFusion `TableProvider` with
//! its `ExecutionPlan` and options declared as data. The binary registers them explicitly
//! with [`connectors`] and [`table_factories`].

pub mod error;
pub mod file;
pub mod github;
pub mod http;
pub mod postgres;
pub mod s3;

use std::sync::Arc;

use datafusion::catalog::TableProviderFactory;
use hakiri_core::ports::Source;

/// A true/false option value (also yes/no and 1/0), for every connector's flags.
pub(crate) fn parse_flag(option: &str, value: &str) -> error::Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        other => Err(error::Error::InvalidInput(format!(
            "option '{option}' must be true or false, got '{other}'"
        ))),
    }
}

/// Every built-in connector, for `EngineOptions::connectors`; relative file paths are read
/// from `project_root`.
pub fn connectors(project_root: &std::path::Path) -> Vec<Arc<dyn Source>> {
    vec![
        Arc::new(http::HttpSource),
        Arc::new(file::FileSource::new(project_root)),
        Arc::new(postgres::PostgresSource),
        Arc::new(github::GithubSource),
        Arc::new(s3::S3Source),
    ]
}

/// `CREATE EXTERNAL TABLE ... STORED AS <NAME>` factories, for `EngineOptions::table_factories`.
pub fn table_factories() -> Vec<(String, Arc<dyn TableProviderFactory>)> {
    vec![
        ("HTTP".to_string(), Arc::new(http::HttpTableFactory)),
        (
            "POSTGRES".to_string(),
            Arc::new(postgres::PostgresTableFactory),
        ),
    ]
}
