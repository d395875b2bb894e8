//! The HTTP connector: JSON REST endpoints as tables, paginated and streamed page by page.
//!
//! A source holds `base_url` and defaults; each table is declared with
//! `tables.<name>.<option>` (see [`options::TABLE_OPTIONS`]).

mod client;
pub use hakiri_core::json;
pub mod options;
mod pager;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::ScalarValue;
use datafusion::common::runtime::SpawnedTask;
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
use hakiri_core::cursor::{BoundaryRows, text_hash};
use hakiri_core::ports::{OptionSpec, RunContext, Source, SourceDrift, validate_options};
use hakiri_core::sources::resolve_value;
use hakiri_core::types::{SourceSpec, metric};

use crate::error::{Error, Result};
use options::{HttpTableOptions, Pagination, SOURCE_OPTIONS, TABLE_OPTIONS, validate_table_keys};
use pager::{PageRecords, Pager};

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
            hakiri_core::types::validate_name("table", table)?;
            validate_table_keys(&format!("table '{}.{table}'", spec.name), opts.keys())?;
        }
        Ok(())
    }

    /// A declared `schema` needs no request; otherwise the first page is read to infer one.
    fn remote_discovery(&self, spec: &SourceSpec, table: &str) -> bool {
        let (mut raw, tables) = split_options(spec);
        if let Some(own) = tables.get(table) {
            raw.extend(own.clone());
        }
        !raw.contains_key("schema")
    }

    fn table_names(&self, spec: &SourceSpec) -> Vec<String> {
        split_options(spec).1.into_keys().collect()
    }

    async fn table(
        &self,
        spec: &SourceSpec,
        table: &str,
        hint: Option<SchemaRef>,
    ) -> Result<Arc<dyn TableProvider>> {
        let (mut raw, tables) = split_options(spec);
        let Some(own) = tables.get(table) else {
            let names: Vec<&str> = tables.keys().map(|s| s.as_str()).collect();
            return Err(Error::SourceTableNotFound {
                name: spec.name.clone(),
                table: table.to_string(),
                message: format!(
                    "source '{}' has no table '{table}': its tables are {}; declare it with tables.{table}.path",
                    spec.name,
                    if names.is_empty() {
                        "none yet".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            });
        };
        raw.extend(own.clone());
        let base = spec
            .options
            .get("base_url")
            .map(|v| resolve_value("base_url", v))
            .transpose()?;
        let opts = HttpTableOptions::parse(table, base.as_deref(), &raw)?;
        Ok(Arc::new(
            HttpTable::try_new(&format!("{}.{table}", spec.name), opts, hint).await?,
        ))
    }
}

/// One endpoint as a table.
#[derive(Debug)]
pub struct HttpTable {
    /// `source.table`.
    name: String,
    opts: Arc<HttpTableOptions>,
    schema: SchemaRef,
}

/// `schema` with the fields of `hint` (learned by a run from later pages) replacing or
/// joining its own.
fn with_hint(schema: SchemaRef, hint: Option<SchemaRef>) -> SchemaRef {
    let Some(hint) = hint else { return schema };
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for h in hint.fields() {
        match fields.iter_mut().find(|f| f.name() == h.name()) {
            Some(f) => *f = h.as_ref().clone(),
            None => fields.push(h.as_ref().clone()),
        }
    }
    Arc::new(Schema::new(fields))
}

impl HttpTable {
    /// Builds the table `name` (`source.table`), inferring the schema from the first pages
    /// unless one is declared, and covering `hint`.
    pub async fn try_new(
        name: &str,
        opts: HttpTableOptions,
        hint: Option<SchemaRef>,
    ) -> Result<Self> {
        let opts = Arc::new(opts);
        let schema = match &opts.schema {
            Some(text) => json::parse_declared_schema(text)?,
            None => {
                let client = client::build_client(&opts)?;
                let pages = opts.infer_pages;
                // One page at a time: requests ahead would be abandoned when inference stops,
                // yet still be served while the run's own requests start, so the API would
                // see more than max_in_flight at once (regression test:
                // pagination::pages_are_requested_in_parallel_up_to_max_in_flight).
                let mut sequential = opts.as_ref().clone();
                sequential.max_in_flight = 1;
                let mut pager = Pager::new(client, Arc::new(sequential), Vec::new())?;
                let mut sample = Vec::new();
                while pager.pages() < pages {
                    let next = pager.next_page().await.map_err(|e| {
                        e.context(|m| {
                            format!(
                                "source table '{name}' (reading a page to infer its schema): {m}"
                            )
                        })
                    })?;
                    match next {
                        Some(p) => sample.extend(p.values()?),
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
            schema: with_hint(schema, hint),
        })
    }

    /// A filter this table can send as a query parameter: `col > v`, `col >= v` or
    /// `col = v` where `filter.<col>` names the parameter, also in the form a monotonic
    /// cursor takes (`col > v OR col IS NULL`).
    fn pushable(&self, e: &Expr) -> Option<Pushed> {
        let cmp = match e {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Or,
                right,
            }) => match (left.as_ref(), right.as_ref()) {
                (cmp @ Expr::BinaryExpr(BinaryExpr { left: c, .. }), Expr::IsNull(n)) if c == n => {
                    cmp
                }
                _ => return None,
            },
            other => other,
        };
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = cmp else {
            return None;
        };
        if !matches!(op, Operator::Gt | Operator::GtEq | Operator::Eq) {
            return None;
        }
        let (Expr::Column(c), Expr::Literal(v, _)) = (left.as_ref(), right.as_ref()) else {
            return None;
        };
        let f = self.opts.filters.get(&c.name)?;
        Some(Pushed {
            param: f.param.clone(),
            value: scalar_text(v, f.format.as_deref())?,
            predicate: e.to_string(),
            exact: f.exact,
        })
    }
}

/// A filter sent as a query parameter.
#[derive(Debug, Clone)]
struct Pushed {
    param: String,
    value: String,
    predicate: String,
    exact: bool,
}

/// A literal as a query parameter value; timestamps as RFC 3339 unless `format` says
/// `unix`, `unix_ms`, `date` or gives a strftime pattern.
fn scalar_text(v: &ScalarValue, format: Option<&str>) -> Option<String> {
    use chrono::{DateTime, SecondsFormat};
    let ts = |t: Option<DateTime<chrono::Utc>>| {
        t.map(|t| match format {
            None | Some("rfc3339") => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            Some("unix") => t.timestamp().to_string(),
            Some("unix_ms") => t.timestamp_millis().to_string(),
            Some("date") => t.format("%Y-%m-%d").to_string(),
            Some(pattern) => t.format(pattern).to_string(),
        })
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
        // Inexact unless declared exact: an API's parameter may be inclusive or coarser
        // than the predicate, so DataFusion still applies the filter to what comes back.
        Ok(filters
            .iter()
            .map(|f| match self.pushable(f) {
                Some(p) if p.exact => TableProviderFilterPushDown::Exact,
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
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
        let mut pushed: Vec<Pushed> = Vec::new();
        for f in filters {
            if let Some(p) = self.pushable(f)
                && !pushed.iter().any(|q| q.param == p.param)
            {
                pushed.push(p);
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
    pushed: Vec<Pushed>,
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
                .map(|p| {
                    let how = if p.exact { "Exact" } else { "Inexact" };
                    format!("{}={} ({}; {how})", p.param, p.value, p.predicate)
                })
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

/// The fetching half of a scan: the pager, the page budget and the fetch metrics.
struct Fetcher {
    pager: Pager,
    table: String,
    /// Pages this execution may still read (a token run's page group).
    budget: Option<u64>,
    pages: datafusion::physical_plan::metrics::Count,
    bytes: datafusion::physical_plan::metrics::Count,
    /// For a run's trace: requests sent (retries included) and time waiting for pages.
    requests: datafusion::physical_plan::metrics::Count,
    fetch_time: datafusion::physical_plan::metrics::Time,
}

/// A page with the pager's state right after it. The state reaches the run only when the
/// page's batch is emitted, so a run's token never gets ahead of the rows it has seen.
struct Fetched {
    page: PageRecords,
    n: u64,
    token: Option<String>,
    /// `token` fetches this page again (the source gave no token past it).
    at_boundary: bool,
    exhausted: bool,
    etag: Option<String>,
}

enum Next {
    Page(Fetched),
    /// The page budget is spent.
    Budget,
    /// A stop rule fired (or the first page was not modified).
    Exhausted {
        unchanged: bool,
    },
}

fn named(table: &str) -> impl Fn(Error) -> DataFusionError + '_ {
    move |e: Error| DataFusionError::from(e.context(|m| format!("source table '{table}': {m}")))
}

impl Fetcher {
    async fn next(&mut self) -> DfResult<Next> {
        if self.budget == Some(0) {
            return Ok(Next::Budget);
        }
        let fetching = self.fetch_time.timer();
        let page = self.pager.next_page().await.map_err(named(&self.table))?;
        fetching.done();
        let Some(page) = page else {
            let unchanged = self.pager.not_modified();
            return Ok(Next::Exhausted { unchanged });
        };
        self.pages.add(1);
        self.bytes.add(page.bytes as usize);
        self.requests.add(page.requests as usize);
        if let Some(b) = self.budget.as_mut() {
            *b -= 1;
        }
        Ok(Next::Page(Fetched {
            n: self.pager.pages(),
            token: self.pager.token().map(str::to_string),
            at_boundary: self.pager.at_boundary(),
            exhausted: self.pager.exhausted(),
            etag: self.pager.etag().map(|e| format!("etag:{e}")),
            page,
        }))
    }
}

/// Where a scan's pages come from: fetched when the decoder asks, or, when the scan reads
/// every page (no LIMIT, so nothing is fetched in vain), by a task of their own that keeps
/// a page ahead: the next page is on the wire and located while this one decodes.
enum Pages {
    OnDemand(Box<Fetcher>),
    Ahead {
        rx: tokio::sync::mpsc::Receiver<DfResult<Next>>,
        _task: SpawnedTask<()>,
    },
}

impl Pages {
    fn new(mut fetcher: Fetcher, ahead: bool) -> Self {
        if !ahead {
            return Pages::OnDemand(Box::new(fetcher));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let task = SpawnedTask::spawn(async move {
            loop {
                let next = fetcher.next().await;
                let last = !matches!(next, Ok(Next::Page(_)));
                if tx.send(next).await.is_err() || last {
                    break;
                }
            }
        });
        Pages::Ahead { rx, _task: task }
    }

    async fn next(&mut self) -> DfResult<Next> {
        match self {
            Pages::OnDemand(fetcher) => fetcher.next().await,
            Pages::Ahead { rx, .. } => rx.recv().await.unwrap_or_else(|| {
                Err(DataFusionError::Internal(
                    "the task fetching pages ended without a result".into(),
                ))
            }),
        }
    }
}

/// The decoding half of a scan.
struct ScanState {
    pages: Pages,
    table: String,
    /// Set when the scan runs inside a pipeline run.
    run: Option<Arc<RunContext>>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    remaining: Option<usize>,
    /// For a run's trace: time turning pages into Arrow batches.
    decode_time: datafusion::physical_plan::metrics::Time,
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
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let client = client::build_client(&self.opts)?;
        let extra = self
            .pushed
            .iter()
            .map(|p| (p.param.clone(), p.value.clone()))
            .collect();
        let mut pager = Pager::new(client, self.opts.clone(), extra)?;
        let run = RunContext::of(context.session_config());
        if let Some(rc) = &run {
            if let Some(token) = &rc.resume_token {
                pager.resume(token)?;
            }
            let etag = rc
                .snapshot_id
                .as_deref()
                .and_then(|s| s.strip_prefix("etag:"));
            if let (Some(etag), Pagination::None) = (etag, &self.opts.pagination) {
                pager.if_none_match(etag);
            }
        }
        let fetcher = Fetcher {
            pager,
            table: self.table.clone(),
            budget: run.as_ref().and_then(|rc| rc.page_budget),
            pages: MetricBuilder::new(&self.metrics).counter(metric::PAGES, partition),
            bytes: MetricBuilder::new(&self.metrics).counter(metric::BYTES, partition),
            requests: MetricBuilder::new(&self.metrics).counter(metric::REQUESTS, partition),
            fetch_time: MetricBuilder::new(&self.metrics)
                .subset_time(metric::FETCH_TIME, partition),
        };
        let state = ScanState {
            pages: Pages::new(fetcher, self.limit.is_none()),
            table: self.table.clone(),
            run,
            schema: self.schema.clone(),
            projection: self.projection.clone(),
            remaining: self.limit,
            decode_time: MetricBuilder::new(&self.metrics)
                .subset_time(metric::DECODE_TIME, partition),
        };
        let out_schema = self.props.eq_properties.schema().clone();
        let s = stream::try_unfold(state, |mut st| async move {
            if st.remaining == Some(0) {
                return Ok(None);
            }
            let fetched = match st.pages.next().await? {
                Next::Page(fetched) => fetched,
                Next::Budget => return Ok(None),
                Next::Exhausted { unchanged } => {
                    if let Some(rc) = &st.run {
                        rc.update(|r| {
                            r.exhausted = true;
                            r.unchanged = unchanged;
                        });
                    }
                    return Ok(None);
                }
            };
            let mut page = fetched.page;
            let decoding = st.decode_time.timer();
            let n = fetched.n;
            // A token run's boundary: the page the resume token fetched again loses the
            // records earlier runs wrote from it, and a page with no token past it is
            // reported whole, for the next run to skip.
            let (mut boundary, skipped, change) = match &st.run {
                Some(rc) => skip_written(&mut page, rc, n == 1, fetched.at_boundary, &st.table),
                None => (None, 0, None),
            };
            let page_error =
                |e: Error| DataFusionError::from(Error::Upstream(format!("page {n}: {e}")));
            // The common page fits the schema as it is and decodes from its text; otherwise
            // its values are checked against the schema (drift, the run's policy) and decoded.
            let fitting = json::decode_fitting(page.texts(), &st.schema).map_err(page_error)?;
            let mut discarded = 0;
            let mut batch = match fitting {
                Some(batch) => batch,
                None => {
                    let mut records = page.values()?;
                    if let Some(rc) = &st.run {
                        let check = json::check_page(records, &st.schema, rc.schema_policy, n)?;
                        if let Some((evolved, changes)) = check.evolved {
                            let msg = format!("{}: {}", st.table, changes.join("; "));
                            rc.update(|r| {
                                r.drift.push(SourceDrift {
                                    table: st.table.clone(),
                                    evolved,
                                    changes,
                                })
                            });
                            return Err(DataFusionError::from(Error::Upstream(format!(
                                "the data outgrew the table's schema: {msg}"
                            ))));
                        }
                        discarded = check.discarded;
                        records = check.records;
                    }
                    json::decode(records, &st.schema).map_err(page_error)?
                }
            };
            if let Some(p) = &st.projection {
                batch = batch.project(p)?;
            }
            decoding.done();
            if let Some(r) = st.remaining.as_mut() {
                if batch.num_rows() > *r {
                    batch = batch.slice(0, *r);
                    // Only the records emitted (after those skipped) count as written.
                    if let Some(b) = boundary.as_mut() {
                        b.hashes.truncate(skipped as usize + *r);
                    }
                }
                *r -= batch.num_rows();
            }
            if let Some(rc) = &st.run {
                rc.update(|r| {
                    r.rows_discarded += discarded;
                    r.rows_skipped += skipped;
                    r.boundary_changes.extend(change);
                    r.boundary = boundary;
                    r.token = fetched.token.or(r.token.take());
                    r.exhausted = fetched.exhausted;
                    r.snapshot_id = fetched.etag.or(r.snapshot_id.take());
                });
            }
            Ok(Some((batch, st)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, s)))
    }
}

/// Applies a token run's boundary to a page: on the page the resume token fetched
/// (`resumed`), records whose hash the committed boundary holds are dropped; when the page
/// is `at_boundary` its records' hashes (all of them now written) are the new boundary:
/// those skipped first, then those kept in page order, so a LIMIT can cut the kept ones.
/// Returns the new boundary, the records dropped, and what changed if some committed
/// records are no longer on the page.
fn skip_written(
    page: &mut PageRecords,
    rc: &RunContext,
    resumed: bool,
    at_boundary: bool,
    table: &str,
) -> (Option<BoundaryRows>, u64, Option<String>) {
    let committed = rc.resume_boundary.as_ref().filter(|_| resumed);
    if committed.is_none() && !at_boundary {
        return (None, 0, None);
    }
    let mut hashes: Vec<u64> = page.texts().map(text_hash).collect();
    let (mut skipped, mut change) = (0, None);
    if let Some(b) = committed {
        let mut skipper = b.skipper();
        let keep: Vec<bool> = hashes.iter().map(|h| !skipper.skip(*h)).collect();
        page.retain(|i| keep[i]);
        type Flagged = Vec<(u64, bool)>;
        let (kept, dropped): (Flagged, Flagged) = hashes
            .iter()
            .copied()
            .zip(keep.iter().copied())
            .partition(|(_, k)| *k);
        hashes = dropped.into_iter().chain(kept).map(|(h, _)| h).collect();
        skipped = skipper.skipped();
        if skipper.missing() > 0 {
            change = Some(format!(
                "{table}: the page at resume token '{}' was read again and {} of the {} record(s) written from it before are no longer on it (removed or rewritten upstream); its {} new or rewritten record(s) were written",
                rc.resume_token.as_deref().unwrap_or("(first page)"),
                skipper.missing(),
                b.rows(),
                page.texts().len(),
            ));
        }
    }
    let boundary = at_boundary.then_some(BoundaryRows { hashes });
    (boundary, skipped, change)
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
        Ok(Arc::new(HttpTable::try_new(&name, opts, None).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::scalar_text;
    use datafusion::common::ScalarValue;

    #[test]
    fn pushed_timestamps_take_the_declared_format() {
        // 2026-01-05T10:00:00Z
        let v = ScalarValue::TimestampMicrosecond(Some(1_767_607_200_000_000), Some("UTC".into()));
        assert_eq!(scalar_text(&v, None).unwrap(), "2026-01-05T10:00:00Z");
        assert_eq!(scalar_text(&v, Some("unix")).unwrap(), "1767607200");
        assert_eq!(scalar_text(&v, Some("unix_ms")).unwrap(), "1767607200000");
        assert_eq!(scalar_text(&v, Some("date")).unwrap(), "2026-01-05");
        assert_eq!(scalar_text(&v, Some("%Y%m%d%H")).unwrap(), "2026010510");
        assert_eq!(
            scalar_text(&ScalarValue::Int64(Some(42)), Some("unix")).unwrap(),
            "42"
        );
        assert!(scalar_text(&ScalarValue::Int64(None), None).is_none());
    }
}
