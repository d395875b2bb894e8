//! A WASM connector's table: a `TableProvider` whose scan calls the guest's `read` page by
//! page, pushing the projection, comparisons on the columns the connector declares and the
//! limit, and resuming from a pipeline's token.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{BooleanArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
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
use hakiri_core::cursor::{BoundaryRows, RowHasher};
use hakiri_core::ports::RunContext;
use hakiri_core::types::{JSON_TEXT_KEY, metric};

use crate::bindings::hakiri::connector::types::{
    CompareOp, DataType as WitType, Filter, ReadRequest, ReadResponse, Rows, Scalar, TableInfo,
};
use crate::error::{GuestKind, WasmError};
use crate::source::Bound;

/// NDJSON whose `json` columns hold any JSON value (arrow-json wants a string there): each
/// value that is not a string or null is replaced by its JSON text. Values are borrowed
/// (`RawValue`), not parsed into trees.
fn nested_json_as_text(bytes: &[u8], json_columns: &[String]) -> Result<Vec<u8>, String> {
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: BTreeMap<String, &RawValue> =
            serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push(b'{');
        for (i, (k, v)) in record.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, k).map_err(|e| e.to_string())?;
            out.push(b':');
            let raw = v.get();
            if json_columns.iter().any(|c| c == k) && !raw.starts_with('"') && raw != "null" {
                serde_json::to_writer(&mut out, raw).map_err(|e| e.to_string())?;
            } else {
                out.extend_from_slice(raw.as_bytes());
            }
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(out)
}

/// A table of a WASM connector.
pub struct WasmTable {
    bound: Arc<Bound>,
    info: TableInfo,
    schema: SchemaRef,
}

impl fmt::Debug for WasmTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmTable")
            .field("table", &self.info.name)
            .finish()
    }
}

impl WasmTable {
    pub fn try_new(bound: Arc<Bound>, info: TableInfo) -> hakiri_core::error::Result<Self> {
        let schema = schema_of(&bound.env.source_name, &info)?;
        Ok(WasmTable {
            bound,
            info,
            schema,
        })
    }

    /// The filter to send for `expr` (`column op literal`, either way round) and whether the
    /// connector applies it exactly.
    fn pushable(&self, expr: &Expr) -> Option<(Filter, bool)> {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
            return None;
        };
        let (col, op, lit) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => (c, op.swap()?, v),
            _ => return None,
        };
        let pd = self.info.pushdown.iter().find(|p| p.column == col.name)?;
        let op = match op {
            Operator::Eq => CompareOp::Eq,
            Operator::NotEq => CompareOp::Ne,
            Operator::Lt => CompareOp::Lt,
            Operator::LtEq => CompareOp::Le,
            Operator::Gt => CompareOp::Gt,
            Operator::GtEq => CompareOp::Ge,
            _ => return None,
        };
        let value = match lit {
            v if v.is_null() => Scalar::Null,
            ScalarValue::Boolean(Some(b)) => Scalar::Boolean(*b),
            ScalarValue::Int8(Some(i)) => Scalar::Int(*i as i64),
            ScalarValue::Int16(Some(i)) => Scalar::Int(*i as i64),
            ScalarValue::Int32(Some(i)) => Scalar::Int(*i as i64),
            ScalarValue::Int64(Some(i)) => Scalar::Int(*i),
            ScalarValue::UInt8(Some(i)) => Scalar::Int(*i as i64),
            ScalarValue::UInt16(Some(i)) => Scalar::Int(*i as i64),
            ScalarValue::UInt32(Some(i)) => Scalar::Int(*i as i64),
            ScalarValue::UInt64(Some(i)) => Scalar::Int(i64::try_from(*i).ok()?),
            ScalarValue::Float32(Some(f)) => Scalar::Float(*f as f64),
            ScalarValue::Float64(Some(f)) => Scalar::Float(*f),
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => Scalar::Text(s.clone()),
            _ => return None,
        };
        Some((
            Filter {
                column: col.name.clone(),
                op,
                value,
            },
            pd.exact,
        ))
    }
}

/// The table's Arrow schema: the connector's IPC schema when it gives one, else its fields.
fn schema_of(source: &str, info: &TableInfo) -> hakiri_core::error::Result<SchemaRef> {
    if let Some(bytes) = &info.arrow_schema {
        let reader =
            datafusion::arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)
                .map_err(|e| WasmError::Page {
                    source_name: source.to_string(),
                    table: info.name.clone(),
                    message: format!("its arrow-schema is not an Arrow IPC stream: {e}"),
                })?;
        return Ok(reader.schema());
    }
    let fields: Vec<Field> =
        info.fields
            .iter()
            .map(|f| {
                let ty = match f.data_type {
                    WitType::Boolean => DataType::Boolean,
                    WitType::Int64 => DataType::Int64,
                    WitType::Float64 => DataType::Float64,
                    WitType::Utf8 | WitType::Json => DataType::Utf8,
                    WitType::TimestampUs => {
                        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                    }
                };
                let field = Field::new(&f.name, ty, f.nullable);
                match f.data_type {
                    WitType::Json => field
                        .with_metadata([(JSON_TEXT_KEY.to_string(), "true".to_string())].into()),
                    _ => field,
                }
            })
            .collect();
    Ok(Arc::new(Schema::new(fields)))
}

#[async_trait]
impl TableProvider for WasmTable {
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
        Ok(filters
            .iter()
            .map(|f| match self.pushable(f) {
                Some((_, true)) => TableProviderFilterPushDown::Exact,
                Some((_, false)) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let mut pushed = Vec::new();
        for f in filters {
            if let Some((filter, exact)) = self.pushable(f) {
                // Kept to apply on pages the connector says it did not filter exactly.
                let physical = state.create_physical_expr(f.clone(), &df_schema)?;
                pushed.push(Pushed {
                    filter,
                    exact,
                    shown: f.to_string(),
                    physical,
                });
            }
        }
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(WasmExec {
            bound: self.bound.clone(),
            table: self.info.name.clone(),
            schema: self.schema.clone(),
            projection: projection.cloned(),
            pushed: Arc::new(pushed),
            limit,
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

struct Pushed {
    filter: Filter,
    exact: bool,
    shown: String,
    physical: Arc<dyn PhysicalExpr>,
}

/// Streams a connector's pages as record batches, one `read` call per page.
pub struct WasmExec {
    bound: Arc<Bound>,
    table: String,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    pushed: Arc<Vec<Pushed>>,
    limit: Option<usize>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for WasmExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmExec")
            .field("table", &self.table)
            .finish()
    }
}

impl DisplayAs for WasmExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WasmExec: source={}, connector={}, table={}",
            self.bound.env.source_name, self.bound.spec.name, self.table
        )?;
        if !self.pushed.is_empty() {
            let p: Vec<String> = self
                .pushed
                .iter()
                .map(|p| {
                    let how = if p.exact { "Exact" } else { "Inexact" };
                    format!("{} ({how})", p.shown)
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

/// What calls the guest's `read`: one page per call, retried while the guest says so.
struct Reader {
    bound: Arc<Bound>,
    table: String,
    request: ReadRequest,
    retries: datafusion::physical_plan::metrics::Count,
    /// Log lines the guest wrote past its log_rate, dropped.
    logs_dropped: datafusion::physical_plan::metrics::Count,
}

/// A scan's pages: read when asked (under a LIMIT, where a page read ahead may be read in
/// vain), or by a task of their own that keeps one page ahead, so the guest reads the next
/// page while this one decodes (as the native `http` connector does).
enum Pages {
    OnDemand {
        reader: Box<Reader>,
        /// The token that fetches the next page (`None`: the first).
        token: Option<String>,
    },
    Ahead {
        rx: tokio::sync::mpsc::Receiver<DfResult<ReadResponse>>,
        _task: SpawnedTask<()>,
    },
}

impl Pages {
    /// Pages from `token` on; read ahead unless `on_demand`, at most `budget` of them.
    fn new(
        mut reader: Reader,
        token: Option<String>,
        on_demand: bool,
        budget: Option<u64>,
    ) -> Self {
        if on_demand {
            return Pages::OnDemand {
                reader: Box::new(reader),
                token,
            };
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let task = SpawnedTask::spawn(async move {
            let (mut token, mut left) = (token, budget);
            loop {
                let next = reader.read(token.take()).await;
                left = left.map(|l| l.saturating_sub(1));
                token = next.as_ref().ok().and_then(|r| r.next_token.clone());
                let last = token.is_none() || left == Some(0);
                if tx.send(next).await.is_err() || last {
                    break;
                }
            }
        });
        Pages::Ahead { rx, _task: task }
    }

    async fn next(&mut self) -> DfResult<ReadResponse> {
        match self {
            Pages::OnDemand { reader, token } => {
                let resp = reader.read(token.take()).await?;
                token.clone_from(&resp.next_token);
                Ok(resp)
            }
            Pages::Ahead { rx, .. } => rx.recv().await.unwrap_or_else(|| {
                Err(DataFusionError::Internal(
                    "the task reading pages ended without a result".into(),
                ))
            }),
        }
    }
}

/// The state of a scan between pages: the decoding half.
struct Scan {
    bound: Arc<Bound>,
    table: String,
    schema: SchemaRef,
    /// Columns of type json, whose nested NDJSON values become text.
    json_columns: Vec<String>,
    projection: Option<Vec<usize>>,
    pushed: Arc<Vec<Pushed>>,
    pages_in: Pages,
    run: Option<Arc<RunContext>>,
    /// The token that fetched the page being decoded's predecessor: the next page's.
    token: Option<String>,
    pages_read: u64,
    budget: Option<u64>,
    remaining: Option<usize>,
    done: bool,
    hasher: Option<RowHasher>,
    pages: datafusion::physical_plan::metrics::Count,
    bytes: datafusion::physical_plan::metrics::Count,
    fetch_time: datafusion::physical_plan::metrics::Time,
    decode_time: datafusion::physical_plan::metrics::Time,
}

impl ExecutionPlan for WasmExec {
    fn name(&self) -> &str {
        "WasmExec"
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
        let run = RunContext::of(context.session_config());
        let projection_names = self.projection.as_ref().map(|p| {
            p.iter()
                .map(|i| self.schema.field(*i).name().clone())
                .collect()
        });
        let token = run.as_ref().and_then(|rc| rc.resume_token.clone());
        let budget = run.as_ref().and_then(|rc| rc.page_budget);
        let reader = Reader {
            bound: self.bound.clone(),
            table: self.table.clone(),
            request: ReadRequest {
                projection: projection_names,
                filters: self.pushed.iter().map(|p| p.filter.clone()).collect(),
                limit: self.limit.map(|l| l as u64),
                resume_token: None,
            },
            retries: MetricBuilder::new(&self.metrics).counter(metric::RETRIES, partition),
            logs_dropped: MetricBuilder::new(&self.metrics)
                .counter(metric::LOG_LINES_DROPPED, partition),
        };
        let scan = Scan {
            bound: self.bound.clone(),
            table: self.table.clone(),
            schema: self.schema.clone(),
            projection: self.projection.clone(),
            pushed: self.pushed.clone(),
            pages_in: Pages::new(reader, token.clone(), self.limit.is_some(), budget),
            budget,
            json_columns: self
                .schema
                .fields()
                .iter()
                .filter(|f| f.metadata().contains_key(JSON_TEXT_KEY))
                .map(|f| f.name().clone())
                .collect(),
            hasher: match &run {
                Some(rc) if rc.token_cursor => Some(RowHasher::new(&self.schema)?),
                _ => None,
            },
            run,
            token,
            pages_read: 0,
            remaining: self.limit,
            done: false,
            pages: MetricBuilder::new(&self.metrics).counter(metric::PAGES, partition),
            bytes: MetricBuilder::new(&self.metrics).counter(metric::BYTES, partition),
            fetch_time: MetricBuilder::new(&self.metrics)
                .subset_time(metric::FETCH_TIME, partition),
            decode_time: MetricBuilder::new(&self.metrics)
                .subset_time(metric::DECODE_TIME, partition),
        };
        let out_schema = self.props.eq_properties.schema().clone();
        let s = stream::try_unfold(scan, |mut st| async move {
            loop {
                if st.done || st.remaining == Some(0) || st.budget == Some(0) {
                    return Ok(None);
                }
                if let Some(batch) = st.next_page().await? {
                    return Ok(Some((batch, st)));
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, s)))
    }
}

impl Reader {
    /// One `read`, tried again while the guest says it is rate-limited (after its
    /// retry-after, at most a minute) or failed transiently (after a doubling backoff), up
    /// to `max_retries` times. Each call is a fresh instance, so a retry starts clean.
    async fn read(&mut self, token: Option<String>) -> DfResult<ReadResponse> {
        self.request.resume_token = token;
        let limits = &self.bound.env.limits;
        let mut attempt = 0;
        loop {
            let err = match self
                .bound
                .loaded
                .read(
                    &self.bound.env,
                    &self.bound.config,
                    &self.table,
                    &self.request,
                )
                .await
            {
                Ok((resp, stats)) => {
                    self.logs_dropped.add(stats.log_lines_dropped as usize);
                    return Ok(resp);
                }
                Err(e) => e,
            };
            let wait = match &err {
                WasmError::Guest {
                    kind: GuestKind::RateLimited,
                    retry_after_ms,
                    ..
                } => Duration::from_millis(retry_after_ms.unwrap_or(1000).min(60_000)),
                WasmError::Guest {
                    kind: GuestKind::Transient,
                    ..
                } => limits.retry_backoff.saturating_mul(1 << attempt.min(10)),
                _ => return Err(DataFusionError::from(hakiri_core::error::Error::from(err))),
            };
            if attempt >= limits.max_retries {
                let e = hakiri_core::error::Error::from(err).context(|m| {
                    format!("{m} (after {attempt} retries: run again later or raise the source's max_retries)")
                });
                return Err(DataFusionError::from(e));
            }
            attempt += 1;
            self.retries.add(1);
            tracing::warn!(source = %self.bound.env.source_name, table = %self.table, attempt, ?wait, "retrying a read: {err}");
            tokio::time::sleep(wait).await;
        }
    }
}

impl Scan {
    fn page_error(&self, message: String) -> DataFusionError {
        DataFusionError::from(hakiri_core::error::Error::from(WasmError::Page {
            source_name: self.bound.env.source_name.clone(),
            table: self.table.clone(),
            message,
        }))
    }

    /// Reads one page; `None` when it held no rows to emit (all skipped, or empty).
    async fn next_page(&mut self) -> DfResult<Option<RecordBatch>> {
        let fetch_time = self.fetch_time.clone();
        let fetching = fetch_time.timer();
        let resp = self.pages_in.next().await?;
        fetching.done();
        self.pages_read += 1;
        self.pages.add(1);
        if let Some(b) = self.budget.as_mut() {
            *b -= 1;
        }
        let decoding = self.decode_time.timer();
        let (mut batch, size) = match &resp.rows {
            Rows::Ndjson(bytes) => (self.ndjson(bytes)?, bytes.len()),
            Rows::ArrowIpc(bytes) => (self.ipc(bytes)?, bytes.len()),
        };
        self.bytes.add(size);
        // Comparisons the connector says it did not apply to this page, applied here.
        for i in &resp.inexact_filters {
            let p = self.pushed.get(*i as usize).ok_or_else(|| {
                self.page_error(format!(
                    "inexact-filters names filter {i}, and the request had {}",
                    self.pushed.len()
                ))
            })?;
            let mask = p.physical.evaluate(&batch)?.into_array(batch.num_rows())?;
            let mask = mask
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Internal("a filter gave no booleans".into()))?;
            batch = filter_record_batch(&batch, mask)?;
        }
        // A token run: the first page of a resumed run drops the records the committed
        // boundary holds; a last page (no token past it) is the next run's boundary. Other
        // pages are not hashed.
        let last = resp.next_token.is_none();
        let mut boundary = None;
        let mut skipped = 0;
        let resumed = self.pages_read == 1;
        if let (Some(rc), Some(hasher)) = (&self.run, &self.hasher)
            && (last || (resumed && rc.resume_boundary.is_some()))
        {
            let hashes = hasher.hashes(&batch)?;
            if resumed && let Some(b) = &rc.resume_boundary {
                let mut skipper = b.skipper();
                let keep: Vec<bool> = hashes.iter().map(|h| !skipper.skip(*h)).collect();
                skipped = skipper.skipped();
                batch = filter_record_batch(&batch, &BooleanArray::from(keep))?;
            }
            if last {
                boundary = Some(BoundaryRows { hashes });
            }
        }
        if let Some(p) = &self.projection {
            batch = batch.project(p)?;
        }
        decoding.done();
        if let Some(r) = self.remaining.as_mut() {
            if batch.num_rows() > *r {
                batch = batch.slice(0, *r);
                if let Some(b) = boundary.as_mut() {
                    b.hashes.truncate(skipped as usize + *r);
                }
            }
            *r -= batch.num_rows();
        }
        let fetched_with = self.token.clone();
        if let Some(rc) = &self.run {
            rc.update(|r| {
                r.rows_skipped += skipped;
                r.exhausted = last;
                r.boundary = boundary;
                // Past the last page the token that fetched it is the one to resume from.
                r.token = resp.next_token.clone().or(fetched_with);
            });
        }
        match resp.next_token {
            Some(t) => self.token = Some(t),
            None => self.done = true,
        }
        Ok((batch.num_rows() > 0 || self.done).then_some(batch))
    }

    fn ndjson(&self, bytes: &[u8]) -> DfResult<RecordBatch> {
        // The common page, every record fitting the table as it is: one pass from the text
        // (the native `http` connector's decoder). Other pages take arrow-json, whose
        // errors say what does not fit.
        if let Ok(text) = std::str::from_utf8(bytes) {
            let lines: Vec<&str> = text
                .split('\n')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if let Ok(Some(batch)) =
                hakiri_core::json::decode_fitting(lines.iter().copied(), &self.schema)
            {
                return Ok(batch);
            }
        }
        let text;
        let bytes = if self.json_columns.is_empty() {
            bytes
        } else {
            text = nested_json_as_text(bytes, &self.json_columns)
                .map_err(|e| self.page_error(format!("its NDJSON does not decode: {e}")))?;
            &text[..]
        };
        let reader = datafusion::arrow::json::ReaderBuilder::new(self.schema.clone())
            .build(Cursor::new(bytes))
            .map_err(|e| self.page_error(format!("its NDJSON does not decode: {e}")))?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| {
            self.page_error(format!("its NDJSON does not fit the table's columns: {e}"))
        })?;
        Ok(datafusion::arrow::compute::concat_batches(
            &self.schema,
            &batches,
        )?)
    }

    /// An Arrow IPC page, its columns matched to the table's by name (a missing column is
    /// NULL, a narrower type is cast).
    fn ipc(&self, bytes: &[u8]) -> DfResult<RecordBatch> {
        let reader =
            datafusion::arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)
                .map_err(|e| self.page_error(format!("it is not an Arrow IPC stream: {e}")))?;
        let got = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.page_error(format!("its Arrow IPC stream is cut or damaged: {e}")))?;
        let page = datafusion::arrow::compute::concat_batches(&got, &batches)?;
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| match got.index_of(f.name()) {
                Ok(i) => cast(page.column(i), f.data_type()).map_err(|e| {
                    self.page_error(format!(
                        "column '{}' does not cast to {}: {e}",
                        f.name(),
                        f.data_type()
                    ))
                }),
                Err(_) => Ok(new_null_array(f.data_type(), page.num_rows())),
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod json_text_tests {
    use super::nested_json_as_text;

    #[test]
    fn nested_values_of_json_columns_become_their_text() {
        let page = b"{\"id\":1,\"tags\":[\"a\",1],\"p\":{\"x\":null}}\n\n{\"id\":2,\"tags\":\"plain\",\"p\":null}\n";
        let out = nested_json_as_text(page, &["tags".into(), "p".into()]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":1,\"p\":\"{\\\"x\\\":null}\",\"tags\":\"[\\\"a\\\",1]\"}\n{\"id\":2,\"p\":null,\"tags\":\"plain\"}\n"
        );
        let err = nested_json_as_text(b"{\"id\":1}\n{\"id\":", &["p".into()]).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
