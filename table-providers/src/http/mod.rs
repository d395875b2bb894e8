//! The HTTP connector: JSON REST endpoints as tables, paginated and streamed page by page.
//!
//! A source holds `base_url` and defaults; each table is declared with
//! `tables.<name>.<option>` (see [`options::TABLE_OPTIONS`]).

mod client;
pub mod json;
pub mod options;
mod pager;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    BinaryExpr, CreateExternalTable, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::stream;
use hakiri_engine::ports::{OptionSpec, Source, validate_options};
use hakiri_engine::sources::resolve_value;
use hakiri_engine::types::SourceSpec;

use crate::error::{Error, Result};
use options::{HttpTableOptions, SOURCE_OPTIONS, TABLE_OPTIONS, validate_table_keys};
use pager::Pager;

/// The `http` connector type.
#[derive(Debug, Default)]
pub struct HttpSource;

fn all_source_options() -> &'static [OptionSpec] {
    static ALL: std::sync::OnceLock<Vec<OptionSpec>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        SOURCE_OPTIONS
            .iter()
            .chain(TABLE_OPTIONS.iter())
            .copied()
            .collect()
    })
}

/// Splits a source's options into source-level defaults and per-table options.
fn split_options(
    spec: &SourceSpec,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let mut defaults = BTreeMap::new();
    let mut tables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (k, v) in &spec.options {
        if let Some(rest) = k.strip_prefix("tables.") {
            let (table, opt) = rest.split_once('.').unwrap_or((rest, ""));
            let entry = tables.entry(table.to_string()).or_default();
            if !opt.is_empty() {
                entry.insert(opt.to_string(), v.clone());
            }
        } else if k != "base_url" {
            defaults.insert(k.clone(), v.clone());
        }
    }
    (defaults, tables)
}

#[async_trait]
impl Source for HttpSource {
    fn connector(&self) -> &'static str {
        "http"
    }

    fn options(&self) -> &'static [OptionSpec] {
        all_source_options()
    }

    fn validate(&self, spec: &SourceSpec) -> Result<()> {
        let what = format!("source '{}' (type http)", spec.name);
        validate_options(&what, self.options(), spec.options.keys())?;
        let (_, tables) = split_options(spec);
        for (table, opts) in &tables {
            hakiri_engine::types::validate_name("table", table)?;
            validate_table_keys(&format!("table '{}.{table}'", spec.name), opts.keys())?;
        }
        Ok(())
    }

    fn table_names(&self, spec: &SourceSpec) -> Vec<String> {
        split_options(spec).1.into_keys().collect()
    }

    async fn table(&self, spec: &SourceSpec, table: &str) -> Result<Arc<dyn TableProvider>> {
        let (mut raw, tables) = split_options(spec);
        let Some(own) = tables.get(table) else {
            let names: Vec<&str> = tables.keys().map(|s| s.as_str()).collect();
            return Err(Error::NotFound(format!(
                "source '{}' has no table '{table}': its tables are {}; declare it with tables.{table}.path",
                spec.name,
                if names.is_empty() {
                    "none yet".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        raw.extend(own.clone());
        let base = spec
            .options
            .get("base_url")
            .map(|v| resolve_value("base_url", v))
            .transpose()?;
        let opts = HttpTableOptions::parse(table, base.as_deref(), &raw)?;
        Ok(Arc::new(HttpTable::try_new(table, opts).await?))
    }
}

/// One endpoint as a table.
#[derive(Debug)]
pub struct HttpTable {
    name: String,
    opts: Arc<HttpTableOptions>,
    schema: SchemaRef,
}

impl HttpTable {
    /// Builds the table, inferring the schema from the first pages unless one is declared.
    pub async fn try_new(name: &str, opts: HttpTableOptions) -> Result<Self> {
        let opts = Arc::new(opts);
        let schema = match &opts.schema {
            Some(text) => json::parse_declared_schema(text)?,
            None => {
                let client = client::build_client(&opts)?;
                let pages = opts.infer_pages;
                let mut pager = Pager::new(client, Arc::clone(&opts), Vec::new())?;
                let mut sample = Vec::new();
                while pager.pages() < pages {
                    match pager.next_page().await? {
                        Some(p) => sample.extend(p.records),
                        None => break,
                    }
                }
                let schema = json::infer_schema(&sample);
                if schema.fields().is_empty() {
                    return Err(Error::Upstream(format!(
                        "cannot infer a schema for table '{name}': the first {pages} page(s) of {} held no records; declare the schema option",
                        opts.url
                    )));
                }
                schema
            }
        };
        Ok(HttpTable {
            name: name.to_string(),
            opts,
            schema,
        })
    }

    /// A filter this table can send as a query parameter: `col > v`, `col >= v`, `col = v`
    /// where `filter.<col>` names the parameter. Returns (parameter, value, description).
    fn pushable(&self, e: &Expr) -> Option<(String, String, String)> {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
            return None;
        };
        if !matches!(op, Operator::Gt | Operator::GtEq | Operator::Eq) {
            return None;
        }
        let (Expr::Column(c), Expr::Literal(v, _)) = (left.as_ref(), right.as_ref()) else {
            return None;
        };
        let param = self.opts.filters.get(&c.name)?;
        let value = scalar_text(v)?;
        Some((param.clone(), value, e.to_string()))
    }
}

/// A literal as a query parameter value; timestamps as RFC 3339.
fn scalar_text(v: &ScalarValue) -> Option<String> {
    use chrono::{DateTime, SecondsFormat};
    let ts = |t: Option<DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    };
    match v {
        _ if v.is_null() => None,
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        ScalarValue::TimestampSecond(Some(x), _) => ts(DateTime::from_timestamp(*x, 0)),
        ScalarValue::TimestampMillisecond(Some(x), _) => ts(DateTime::from_timestamp_millis(*x)),
        ScalarValue::TimestampMicrosecond(Some(x), _) => ts(DateTime::from_timestamp_micros(*x)),
        ScalarValue::TimestampNanosecond(Some(x), _) => {
            ts(Some(DateTime::from_timestamp_nanos(*x)))
        }
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl TableProvider for HttpTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Inexact: an API's parameter may be inclusive or coarser than the predicate, so
        // DataFusion still applies the filter to what comes back.
        Ok(filters
            .iter()
            .map(|f| {
                if self.pushable(f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut pushed: Vec<(String, String, String)> = Vec::new();
        for f in filters {
            if let Some(p) = self.pushable(f) {
                if !pushed.iter().any(|(param, _, _)| *param == p.0) {
                    pushed.push(p);
                }
            }
        }
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(HttpExec {
            table: self.name.clone(),
            opts: self.opts.clone(),
            schema: self.schema.clone(),
            projection: projection.cloned(),
            pushed,
            limit,
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// Streams an endpoint's pages as record batches, one batch per page.
#[derive(Debug)]
pub struct HttpExec {
    table: String,
    opts: Arc<HttpTableOptions>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    /// (query parameter, value, the predicate it came from)
    pushed: Vec<(String, String, String)>,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for HttpExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "HttpExec: table={}, url={}, pagination={}",
            self.table,
            self.opts.url,
            self.opts.pagination.name()
        )?;
        if !self.pushed.is_empty() {
            let p: Vec<String> = self
                .pushed
                .iter()
                .map(|(k, v, e)| format!("{k}={v} ({e})"))
                .collect();
            write!(f, ", pushed_filters=[{}]", p.join(", "))?;
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        if let Some(p) = &self.projection {
            let names: Vec<&str> = p
                .iter()
                .map(|i| self.schema.field(*i).name().as_str())
                .collect();
            write!(f, ", projection=[{}]", names.join(", "))?;
        }
        Ok(())
    }
}

struct ScanState {
    pager: Pager,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    remaining: Option<usize>,
    pages: datafusion::physical_plan::metrics::Count,
    bytes: datafusion::physical_plan::metrics::Count,
}

impl ExecutionPlan for HttpExec {
    fn name(&self) -> &str {
        "HttpExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let client = client::build_client(&self.opts)?;
        let extra = self
            .pushed
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect();
        let state = ScanState {
            pager: Pager::new(client, self.opts.clone(), extra)?,
            schema: self.schema.clone(),
            projection: self.projection.clone(),
            remaining: self.limit,
            pages: MetricBuilder::new(&self.metrics).counter("pages", partition),
            bytes: MetricBuilder::new(&self.metrics).counter("bytes", partition),
        };
        let out_schema = self.props.eq_properties.schema().clone();
        let s = stream::try_unfold(state, |mut st| async move {
            if st.remaining == Some(0) {
                return Ok(None);
            }
            let Some(page) = st.pager.next_page().await.map_err(DataFusionError::from)? else {
                return Ok(None);
            };
            st.pages.add(1);
            st.bytes.add(page.bytes as usize);
            let mut batch = json::decode(page.records, &st.schema).map_err(|e| {
                DataFusionError::from(Error::Upstream(format!("page {}: {e}", st.pager.pages())))
            })?;
            if let Some(p) = &st.projection {
                batch = batch.project(p)?;
            }
            if let Some(r) = st.remaining.as_mut() {
                if batch.num_rows() > *r {
                    batch = batch.slice(0, *r);
                }
                *r -= batch.num_rows();
            }
            Ok(Some((batch, st)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, s)))
    }
}

/// `CREATE EXTERNAL TABLE t STORED AS HTTP LOCATION 'https://...' OPTIONS (...)`.
#[derive(Debug, Default)]
pub struct HttpTableFactory;

#[async_trait]
impl TableProviderFactory for HttpTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let mut raw: BTreeMap<String, String> = cmd
            .options
            .iter()
            .map(|(k, v)| {
                (
                    k.strip_prefix("format.").unwrap_or(k).to_string(),
                    v.clone(),
                )
            })
            .collect();
        let location = cmd.locations.first().cloned().ok_or_else(|| {
            DataFusionError::Plan(
                "CREATE EXTERNAL TABLE ... STORED AS HTTP needs LOCATION 'https://...'".into(),
            )
        })?;
        raw.insert("url".into(), location);
        let name = cmd.name.table().to_string();
        validate_table_keys(&format!("external table '{name}'"), raw.keys())?;
        let opts = HttpTableOptions::parse(&name, None, &raw)?;
        Ok(Arc::new(HttpTable::try_new(&name, opts).await?))
    }
}
