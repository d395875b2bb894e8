//! The `file` connector: local CSV, JSON (newline-delimited) and Parquet files as tables,
//! read through DataFusion's listing tables (a file, a folder, or a glob).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SessionContext;
use hakiri_engine::ports::{OptionSpec, Source, validate_options};
use hakiri_engine::sources::resolve_value;
use hakiri_engine::types::SourceSpec;

use crate::error::{Error, Result};

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "path",
        required: false,
        secret: false,
        help: "default folder for relative table paths (default: the project folder)",
    },
    OptionSpec {
        name: "format",
        required: false,
        secret: false,
        help: "csv | json | parquet, default for all tables (default: from the file extension)",
    },
    OptionSpec {
        name: "tables.*",
        required: false,
        secret: false,
        help: "tables.<name>.path (file, folder or glob) and tables.<name>.format",
    },
];

/// The `file` connector type. Relative paths are read from the project folder.
#[derive(Debug, Default)]
pub struct FileSource {
    root: std::path::PathBuf,
}

impl FileSource {
    pub fn new(project_root: impl Into<std::path::PathBuf>) -> Self {
        FileSource {
            root: project_root.into(),
        }
    }
}

fn tables(spec: &SourceSpec) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (k, v) in &spec.options {
        if let Some((table, opt)) = k.strip_prefix("tables.").and_then(|r| r.split_once('.')) {
            out.entry(table.to_string())
                .or_default()
                .insert(opt.to_string(), v.clone());
        }
    }
    out
}

fn format_for(name: &str, path: &str) -> Result<(Arc<dyn FileFormat>, &'static str)> {
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    let name = if name.is_empty() { ext.as_str() } else { name };
    Ok(match name {
        "csv" => (Arc::new(CsvFormat::default().with_has_header(true)), ".csv"),
        "json" | "ndjson" | "jsonl" => (
            Arc::new(JsonFormat::default()),
            if ext == "json" { ".json" } else { "" },
        ),
        "parquet" => (Arc::new(ParquetFormat::default()), ".parquet"),
        other => {
            return Err(Error::InvalidInput(format!(
                "cannot tell the format of '{path}' ('{other}'): set format to csv, json or parquet"
            )));
        }
    })
}

#[async_trait]
impl Source for FileSource {
    fn connector(&self) -> &'static str {
        "file"
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate(&self, spec: &SourceSpec) -> Result<()> {
        validate_options(
            &format!("source '{}' (type file)", spec.name),
            OPTIONS,
            spec.options.keys(),
        )?;
        for (table, opts) in tables(spec) {
            hakiri_engine::types::validate_name("table", &table)?;
            for key in opts.keys() {
                if key != "path" && key != "format" {
                    return Err(Error::InvalidInput(format!(
                        "unknown option 'tables.{table}.{key}' for source '{}' (type file): a table takes path and format",
                        spec.name
                    )));
                }
            }
            if !opts.contains_key("path") {
                return Err(Error::InvalidInput(format!(
                    "table '{}.{table}' needs tables.{table}.path (a file, folder or glob)",
                    spec.name
                )));
            }
        }
        Ok(())
    }

    fn table_names(&self, spec: &SourceSpec) -> Vec<String> {
        tables(spec).into_keys().collect()
    }

    /// Files carry their own schema, so a schema hint has nothing to add.
    async fn table(
        &self,
        spec: &SourceSpec,
        table: &str,
        _hint: Option<datafusion::arrow::datatypes::SchemaRef>,
    ) -> Result<Arc<dyn TableProvider>> {
        let all = tables(spec);
        let Some(opts) = all.get(table) else {
            let names: Vec<&str> = all.keys().map(|s| s.as_str()).collect();
            return Err(Error::NotFound(format!(
                "source '{}' has no table '{table}': its tables are {}",
                spec.name,
                names.join(", ")
            )));
        };
        let raw_path = resolve_value("path", &opts["path"])?;
        let base = spec
            .options
            .get("path")
            .map(|p| resolve_value("path", p))
            .transpose()?;
        let path = match base {
            Some(b) if !raw_path.starts_with('/') => {
                format!("{}/{raw_path}", b.trim_end_matches('/'))
            }
            _ => raw_path,
        };
        let path = if path.starts_with('/') {
            path
        } else {
            self.root.join(&path).to_string_lossy().into_owned()
        };
        let format = opts
            .get("format")
            .or(spec.options.get("format"))
            .cloned()
            .unwrap_or_default();
        let (file_format, ext) = format_for(&format, &path)?;
        let url = ListingTableUrl::parse(&path)?;
        let options = ListingOptions::new(file_format).with_file_extension(ext);
        let state = SessionContext::new().state();
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .infer_schema(&state)
            .await
            .map_err(|e| {
                Error::InvalidInput(format!(
                    "cannot read table '{}.{table}' from '{path}': {e}",
                    spec.name
                ))
            })?;
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}
