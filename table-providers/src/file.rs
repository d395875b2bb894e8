//! The `file` connector: local CSV, JSON (newline-delimited) and Parquet files as tables,
//! read through DataFusion's listing tables (a file, a folder, or a glob).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt, stream};
use hakiri_core::ports::RunContext;
use hakiri_core::ports::{OptionSpec, Source, validate_options};
use hakiri_core::sources::resolve_value;
use hakiri_core::types::SourceSpec;
use object_store::ObjectStore;
use std::collections::BTreeSet;

use crate::error::{Error, Result};
use hakiri_core::error::ErrorCategory;

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
        validate_tables(spec, "file")
    }

    /// Files are local: inferring a schema never waits on a remote system.
    fn remote_discovery(&self, _spec: &SourceSpec, _table: &str) -> bool {
        false
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
            return Err(no_such_table(spec, table));
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
        listing_table(&spec.name, table, &path, &format, None).await
    }
}

/// Tables declared as `tables.<name>.path` / `tables.<name>.format` options (file and s3).
pub(crate) fn tables(spec: &SourceSpec) -> BTreeMap<String, BTreeMap<String, String>> {
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

/// Checks the `tables.<name>.*` options of a file or s3 source.
pub(crate) fn validate_tables(spec: &SourceSpec, connector: &str) -> Result<()> {
    for (table, opts) in tables(spec) {
        hakiri_core::types::validate_name("table", &table)?;
        for key in opts.keys() {
            if key != "path" && key != "format" {
                return Err(Error::InvalidInput(format!(
                    "unknown option 'tables.{table}.{key}' for source '{}' (type {connector}): a table takes path and format",
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

/// The error for a table name the source does not declare.
pub(crate) fn no_such_table(spec: &SourceSpec, table: &str) -> Error {
    let names: Vec<String> = tables(spec).into_keys().collect();
    Error::SourceTableNotFound {
        name: spec.name.clone(),
        table: table.to_string(),
        message: format!(
            "source '{}' has no table '{table}': its tables are {}",
            spec.name,
            names.join(", ")
        ),
    }
}

/// The listing URL of a local path or an object-store URL. DataFusion reads globs only in
/// local paths; for a URL the part from the first glob character on becomes the pattern,
/// matched against keys below the prefix before it.
fn listing_url(location: &str) -> Result<ListingTableUrl> {
    let is_url = location.contains("://") && !location.starts_with("file://");
    let Some(star) = location.find(['*', '?', '[']).filter(|_| is_url) else {
        return Ok(ListingTableUrl::parse(location)?);
    };
    let cut = location[..star].rfind('/').map_or(0, |i| i + 1);
    let (prefix, pattern) = location.split_at(cut);
    let url = url::Url::parse(prefix)
        .map_err(|e| Error::InvalidInput(format!("'{location}' is not a valid URL: {e}")))?;
    let glob = glob::Pattern::new(pattern)
        .map_err(|e| Error::InvalidInput(format!("'{pattern}' is not a valid glob: {e}")))?;
    Ok(ListingTableUrl::try_new(url, Some(glob))?)
}

/// A file table over `location` (a local path, or a URL such as `s3://bucket/key` whose
/// store is given): DataFusion's listing table with its schema inferred now. The store,
/// when given, is registered in the querying session's runtime at each scan.
pub(crate) async fn listing_table(
    source: &str,
    table: &str,
    location: &str,
    format: &str,
    store: Option<Arc<dyn ObjectStore>>,
) -> Result<Arc<dyn TableProvider>> {
    let (file_format, ext) = format_for(format, location)?;
    let url = listing_url(location)?;
    let options = ListingOptions::new(file_format.clone()).with_file_extension(ext);
    let state = SessionContext::new().state();
    if let Some(store) = &store {
        state
            .runtime_env()
            .register_object_store(url.object_store().as_ref(), store.clone());
    }
    let config = ListingTableConfig::new(url.clone())
        .with_listing_options(options)
        .infer_schema(&state)
        .await
        .map_err(|e| Error::Context {
            // What to fix is the table's options; the store's error stays the source.
            category: ErrorCategory::InvalidInput,
            message: format!("cannot read table '{source}.{table}' from '{location}': {e}"),
            source: Box::new(e.into()),
        })?;
    let listing = Arc::new(ListingTable::try_new(config)?);
    Ok(Arc::new(FileTable {
        listing,
        url,
        options: ListingOptions::new(file_format).with_file_extension(ext),
        store,
    }))
}

/// A file table: DataFusion's listing table, plus file-level increments. In a pipeline run
/// with `CURSOR TOKEN` the token is the set of files already loaded: a run reads only the
/// files not in it and reports the set with them, so a new file is loaded once.
#[derive(Debug)]
struct FileTable {
    listing: Arc<ListingTable>,
    url: ListingTableUrl,
    options: ListingOptions,
    /// The object store the files live in, when it is not the local file system.
    store: Option<Arc<dyn ObjectStore>>,
}

#[async_trait]
impl TableProvider for FileTable {
    fn schema(&self) -> SchemaRef {
        self.listing.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.listing.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(store) = &self.store {
            state
                .runtime_env()
                .register_object_store(self.url.object_store().as_ref(), store.clone());
        }
        let all = self.listing.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(FileIncrementExec {
            all,
            url: self.url.clone(),
            options: self.options.clone(),
            schema: self.listing.schema(),
            projection: projection.cloned(),
            filters: filters.to_vec(),
            limit,
        }))
    }
}

/// Reads every file (a query), or in a token run only the files the token does not list.
#[derive(Debug)]
struct FileIncrementExec {
    all: Arc<dyn ExecutionPlan>,
    url: ListingTableUrl,
    options: ListingOptions,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    filters: Vec<Expr>,
    limit: Option<usize>,
}

impl DisplayAs for FileIncrementExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "FileIncrementExec: url={} (a token run reads only files not loaded yet)",
            self.url
        )?;
        let _ = t;
        Ok(())
    }
}

impl ExecutionPlan for FileIncrementExec {
    fn name(&self) -> &str {
        "FileIncrementExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.all.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.all]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match children.into_iter().next() {
            Some(all) => Ok(Arc::new(FileIncrementExec {
                all,
                url: self.url.clone(),
                options: self.options.clone(),
                schema: self.schema.clone(),
                projection: self.projection.clone(),
                filters: self.filters.clone(),
                limit: self.limit,
            })),
            None => Ok(self),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let run = RunContext::of(context.session_config()).filter(|rc| rc.token_cursor);
        let Some(rc) = run else {
            return self.all.execute(partition, context);
        };
        let out_schema = self.all.schema();
        if partition > 0 {
            // Partition 0 reads the new files; the others have nothing to add.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                out_schema,
                stream::empty(),
            )));
        }
        let (url, options, schema) = (self.url.clone(), self.options.clone(), self.schema.clone());
        let (projection, filters, limit) =
            (self.projection.clone(), self.filters.clone(), self.limit);
        let batches = stream::once(async move {
            let state = SessionStateBuilder::new()
                .with_config(context.session_config().clone())
                .with_runtime_env(context.runtime_env())
                .with_default_features()
                .build();
            let loaded: BTreeSet<String> = match &rc.resume_token {
                Some(t) => serde_json::from_str(t).map_err(|e| {
                    DataFusionError::Plan(format!(
                        "the pipeline's file token is not a list of files ({e}); reset the pipeline's cursor"
                    ))
                })?,
                None => BTreeSet::new(),
            };
            let store = state.runtime_env().object_store(&url)?;
            let ext = options.file_extension.clone();
            let found: Vec<String> = url
                .list_all_files(&state, store.as_ref(), &ext)
                .await?
                .map_ok(|meta| meta.location.to_string())
                .try_collect()
                .await?;
            let mut new: Vec<String> = found.into_iter().filter(|f| !loaded.contains(f)).collect();
            new.sort();
            let mut all = loaded;
            all.extend(new.iter().cloned());
            let token = serde_json::to_string(&all).map_err(|e| DataFusionError::External(Box::new(e)))?;
            rc.update(|r| {
                r.token = Some(token);
                r.exhausted = true;
            });
            if new.is_empty() {
                return Ok::<_, DataFusionError>(stream::empty().boxed());
            }
            let prefix = url.object_store();
            let urls = new
                .iter()
                .map(|f| ListingTableUrl::parse(format!("{}{f}", prefix.as_str())))
                .collect::<DfResult<Vec<_>>>()?;
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema);
            let table = ListingTable::try_new(config)?;
            let plan = table.scan(&state, projection.as_ref(), &filters, limit).await?;
            let task = Arc::new(TaskContext::from(&state));
            let streams = (0..plan.properties().partitioning.partition_count())
                .map(|p| plan.execute(p, task.clone()))
                .collect::<DfResult<Vec<_>>>()?;
            Ok(stream::iter(streams).flatten().boxed())
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, batches)))
    }
}
