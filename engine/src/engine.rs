//! The runtime: a project's session (sources, context store, state tables), the statement
//! dispatcher, pipeline planning with the cursor bound, and the run loop with its commit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProviderFactory;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SQLStatement;

use crate::catalog::state_tables::StateSchemaProvider;
use crate::catalog::{Catalog, SqliteCatalog};
use crate::error::{Error, Result, Thing};
use crate::ports::{Clock, Source, SystemClock};
use crate::sources::{RESERVED_SCHEMAS, SourceSchemaProvider};
use crate::sql::{HakiriStatement, parse_pipeline_body, parse_statements};
use crate::store::{ContextSchemaProvider, ContextStore};
use crate::types::{
    CursorKind, PipelineSpec, RunCounters, RunStatus, SourceSpec, WriteMode, validate_name,
};

const CATALOG_NAME: &str = "datafusion";

/// What the engine is built with: the connectors and table factories the binary wires in.
#[derive(Default)]
pub struct EngineOptions {
    pub connectors: Vec<Arc<dyn Source>>,
    /// `CREATE EXTERNAL TABLE ... STORED AS <NAME>` factories.
    pub table_factories: Vec<(String, Arc<dyn TableProviderFactory>)>,
    pub clock: Option<Arc<dyn Clock>>,
    /// The catalog (default: SQLite in `<root>/.hakiri/catalog.db`); tests inject the
    /// memory catalog.
    pub catalog: Option<Arc<dyn Catalog>>,
    /// Asked before each run (a synced project's leases).
    pub run_guard: Option<Arc<dyn crate::ports::RunGuard>>,
    /// Told when runs start and end (OpenLineage).
    pub observers: Vec<Arc<dyn crate::ports::RunObserver>>,
    /// Encrypts the context store's files (`[store] encryption_key`).
    pub store_key: Option<crate::store::StoreKeys>,
}

/// What opening a project found and repaired.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// Runs left `running` by a dead process, now `partial_failure`.
    pub interrupted_runs: Vec<String>,
    /// Files no committed manifest row named, now deleted.
    pub removed_files: Vec<String>,
}

/// The result of one statement. One per statement, moved once: the size of its largest
/// variant does not matter, so it is not boxed.
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Rows of a query, streamed.
    Stream(SendableRecordBatchStream),
    /// A statement that changed state, with a one-line acknowledgement.
    Message(String),
    Run(RunSummary),
    Plan(PlanReport),
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    pub table: String,
    pub status: RunStatus,
    pub counters: RunCounters,
    pub cursor_start: Option<String>,
    pub cursor_end: Option<String>,
    pub elapsed: Duration,
}

/// Progress of a running run, reported to the caller's callback.
#[derive(Debug, Clone)]
pub struct RunProgress {
    pub pipeline: String,
    pub rows: u64,
    pub pages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// What a run of a pipeline would do.
#[derive(Debug, Clone)]
pub struct PlanReport {
    pub pipeline: PipelineSpec,
    /// The committed cursor value, or the INITIAL one for a first run.
    pub cursor: Option<String>,
    pub cursor_is_initial: bool,
    /// Filters pushed into source scans, the cursor predicate among them.
    pub pushdown: Vec<PushedFilter>,
    /// The physical plan, indented, with what is pushed into each source scan.
    pub physical_plan: String,
}

/// A filter a source scan receives.
#[derive(Debug, Clone)]
pub struct PushedFilter {
    /// The scanned table, `source.table`.
    pub table: String,
    pub filter: String,
    /// Exact: the source applies it fully; Inexact: Hakiri filters what comes back again.
    pub exact: bool,
}

/// Differences between the manifest and the catalog.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    pub sources_added: Vec<String>,
    pub sources_changed: Vec<String>,
    pub sources_removed: Vec<String>,
    pub pipelines_added: Vec<String>,
    pub pipelines_changed: Vec<String>,
    pub pipelines_removed: Vec<String>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        *self == ChangeSet::default()
    }
}

/// An open project.
pub struct Engine {
    ctx: SessionContext,
    catalog: Arc<dyn Catalog>,
    store: ContextStore,
    clock: Arc<dyn Clock>,
    connectors: BTreeMap<String, Arc<dyn Source>>,
    sources: RwLock<BTreeMap<String, SourceSpec>>,
    pipelines: RwLock<BTreeMap<String, PipelineSpec>>,
    recovery: Recovery,
    root: PathBuf,
    /// Schemas runs learned from source data (new fields, wider types), by `source.table`.
    hints: SchemaHints,
    /// Tells runs in progress that the process is stopping (see [`StopLevel`]).
    stop: tokio::sync::watch::Sender<StopLevel>,
    pub(crate) run_guard: Option<Arc<dyn crate::ports::RunGuard>>,
    pub(crate) observers: Vec<Arc<dyn crate::ports::RunObserver>>,
}

/// How far a stopping process has got; runs read it (see [`Engine::request_stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    /// Not stopping.
    Running,
    /// Runs end at their next checkpoint (a token run's page group), or at their end.
    AtCheckpoint,
    /// Runs end now; what they committed stays, the rest is dropped.
    Now,
}

/// Schemas learned from source data, shared with every source's schema provider.
pub type SchemaHints = Arc<RwLock<HashMap<String, SchemaRef>>>;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Opens the project whose state lives in `<root>/.hakiri`, creating it if needed, and
    /// recovers from a crashed run (ARCHITECTURE.md, commit protocol step 3).
    pub fn open(root: &Path, options: EngineOptions) -> Result<Self> {
        let dir = root.join(".hakiri");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let catalog: Arc<dyn Catalog> = match options.catalog {
            Some(c) => c,
            None => Arc::new(SqliteCatalog::open(&dir.join("catalog.db"))?),
        };
        let store = ContextStore::open(dir.join("store"))?.with_key(options.store_key);
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let run_guard = options.run_guard;
        let observers = options.observers;

        crate::run::trace_spawned_tasks();
        let now = clock.now();
        let interrupted_runs = catalog.recover_runs(&|r| crate::run::holder_alive(r, now), now)?;
        let grace = chrono::Duration::from_std(crate::run::RETIRED_GRACE).unwrap_or_default();
        let mut removed_files = catalog.purge_retired(now - grace)?;
        removed_files.extend(store.remove_orphans(|| {
            let live = catalog
                .runs(None)?
                .into_iter()
                .filter(|r| r.status == RunStatus::Running)
                .map(|r| r.run_id)
                .collect();
            Ok((catalog.all_files()?, live))
        })?);
        let recovery = Recovery {
            interrupted_runs,
            removed_files,
        };

        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG_NAME, "context");
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        for (name, factory) in options.table_factories {
            builder
                .table_factories()
                .get_or_insert_with(HashMap::new)
                .insert(name.to_ascii_uppercase(), factory);
        }
        let ctx = SessionContext::new_with_state(builder.build());
        store.register_keys(&ctx);
        let cat = ctx
            .catalog(CATALOG_NAME)
            .ok_or_else(|| Error::Internal("default catalog missing".into()))?;
        cat.register_schema(
            "context",
            Arc::new(ContextSchemaProvider::new(catalog.clone(), store.clone())),
        )?;
        cat.register_schema(
            "hakiri",
            Arc::new(StateSchemaProvider::new(catalog.clone())),
        )?;

        let connectors = options
            .connectors
            .into_iter()
            .map(|c| (c.connector().to_string(), c))
            .collect();
        let engine = Engine {
            ctx,
            catalog,
            store,
            clock,
            connectors,
            sources: RwLock::new(BTreeMap::new()),
            pipelines: RwLock::new(BTreeMap::new()),
            recovery,
            root: root.to_path_buf(),
            hints: SchemaHints::default(),
            stop: tokio::sync::watch::Sender::new(StopLevel::Running),
            run_guard,
            observers,
        };
        for spec in engine.catalog.list_sources()? {
            // A source whose connector is not built in stays in the catalog but is not
            // queryable; the error surfaces when it is used.
            let _ = engine.register_source(&spec);
        }
        *write(&engine.pipelines) = engine
            .catalog
            .list_pipelines()?
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        Ok(engine)
    }

    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }
    /// For registering functions (`hakiri_udfs::register_all(engine.session_mut())`).
    pub fn session_mut(&mut self) -> &mut SessionContext {
        &mut self.ctx
    }
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
    pub fn store(&self) -> &ContextStore {
        &self.store
    }
    /// Makes `source.table` cover `schema` from now on (learned from its data by a run).
    pub(crate) fn set_schema_hint(&self, table: &str, schema: SchemaRef) {
        write(&self.hints).insert(table.to_string(), schema);
    }
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn connector_names(&self) -> Vec<String> {
        self.connectors.keys().cloned().collect()
    }
    pub fn sources(&self) -> Vec<SourceSpec> {
        read(&self.sources).values().cloned().collect()
    }
    pub fn pipelines(&self) -> Vec<PipelineSpec> {
        read(&self.pipelines).values().cloned().collect()
    }

    /// Looks a source up, or says which ones exist.
    pub fn source(&self, name: &str) -> Result<SourceSpec> {
        let sources = read(&self.sources);
        sources.get(name).cloned().ok_or_else(|| Error::Unknown {
            kind: Thing::Source,
            name: name.to_string(),
            known: sources.keys().cloned().collect(),
        })
    }

    /// The tables of a source, asking the remote system where it can tell.
    pub async fn source_tables(&self, name: &str) -> Result<Vec<String>> {
        let spec = self.source(name)?;
        let connector = self.check_source(&spec)?;
        connector.discover(&spec).await
    }

    /// Discovers the schemas of a source's tables again, asking the source, and keeps them
    /// in `hakiri.source_schemas` for listings; each table with its schema.
    ///
    /// # Errors
    /// `NotFound` for an unknown source; the source's own error when it cannot be reached.
    pub async fn refresh_source(&self, name: &str) -> Result<Vec<(String, SchemaRef)>> {
        self.source(name)?;
        let schema = self
            .ctx
            .catalog(CATALOG_NAME)
            .and_then(|c| c.schema(name))
            .ok_or_else(|| Error::Internal(format!("source '{name}' is not registered")))?;
        let source = schema
            .downcast_ref::<SourceSchemaProvider>()
            .ok_or_else(|| Error::Internal(format!("schema '{name}' is not a source")))?;
        let mut out = Vec::new();
        for table in datafusion::catalog::SchemaProvider::table_names(source) {
            let schema = source.refresh(&table).await?;
            out.push((table, schema));
        }
        Ok(out)
    }

    /// Asks runs in progress to stop (`AtCheckpoint`: at their next checkpoint, `Now`: at
    /// once). A stopped run ends failed with its committed checkpoints kept, so the next run
    /// resumes after them.
    pub fn request_stop(&self, level: StopLevel) {
        self.stop.send_if_modified(|l| {
            let raise = level > *l;
            if raise {
                *l = level;
            }
            raise
        });
    }

    pub fn stop_level(&self) -> StopLevel {
        *self.stop.borrow()
    }

    pub(crate) fn stop_watch(&self) -> tokio::sync::watch::Receiver<StopLevel> {
        self.stop.subscribe()
    }

    /// The first `limit` rows of `source.table`, read live.
    pub async fn sample(&self, table: &str, limit: usize) -> Result<SendableRecordBatchStream> {
        let (source, name) = table.split_once('.').ok_or_else(|| {
            Error::InvalidInput(format!("'{table}' is not SOURCE.TABLE, e.g. github.issues"))
        })?;
        self.source(source)?;
        validate_name("table", name)?;
        self.query(&format!(
            "SELECT * FROM \"{source}\".\"{name}\" LIMIT {limit}"
        ))
        .await
    }

    /// Reloads the pipelines from the catalog (another process may have created, changed or
    /// dropped some since this engine loaded them) and returns them; sources new or changed
    /// in the catalog are registered too, so those pipelines can run here.
    pub fn refresh_pipelines(&self) -> Result<Vec<PipelineSpec>> {
        for spec in self.catalog.list_sources()? {
            if read(&self.sources).get(&spec.name) != Some(&spec) {
                // As in `open`: a source whose connector is missing fails when used.
                let _ = self.register_source(&spec);
            }
        }
        let pipelines = self.catalog.list_pipelines()?;
        *write(&self.pipelines) = pipelines
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        Ok(pipelines)
    }

    /// Looks a pipeline up, or says which ones exist.
    pub fn pipeline(&self, name: &str) -> Result<PipelineSpec> {
        let pipelines = read(&self.pipelines);
        pipelines.get(name).cloned().ok_or_else(|| Error::Unknown {
            kind: Thing::Pipeline,
            name: name.to_string(),
            known: pipelines.keys().cloned().collect(),
        })
    }

    fn check_source(&self, spec: &SourceSpec) -> Result<Arc<dyn Source>> {
        validate_name("source", &spec.name)?;
        if RESERVED_SCHEMAS.contains(&spec.name.as_str()) {
            return Err(Error::InvalidInput(format!(
                "'{}' is a reserved schema name and cannot name a source: pick another name",
                spec.name
            )));
        }
        let connector = self
            .connectors
            .get(&spec.connector)
            .cloned()
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "source '{}' has unknown type '{}': the available types are {}",
                    spec.name,
                    spec.connector,
                    self.connector_names().join(", ")
                ))
            })?;
        connector.validate(spec)?;
        Ok(connector)
    }

    fn register_source(&self, spec: &SourceSpec) -> Result<()> {
        let connector = self.check_source(spec)?;
        let cat = self
            .ctx
            .catalog(CATALOG_NAME)
            .ok_or_else(|| Error::Internal("default catalog missing".into()))?;
        cat.register_schema(
            &spec.name,
            Arc::new(SourceSchemaProvider::new(
                spec.clone(),
                connector,
                self.hints.clone(),
                self.catalog.clone(),
                self.clock.clone(),
            )?),
        )?;
        write(&self.sources).insert(spec.name.clone(), spec.clone());
        Ok(())
    }

    fn unregister_source(&self, name: &str) -> Result<()> {
        if let Some(cat) = self.ctx.catalog(CATALOG_NAME) {
            cat.deregister_schema(name, true)?;
        }
        write(&self.sources).remove(name);
        Ok(())
    }

    /// Validates a pipeline spec without I/O: name, clauses, body shape.
    pub fn check_pipeline(&self, spec: &PipelineSpec) -> Result<()> {
        spec.check()?;
        let body = parse_pipeline_body(&spec.sql)
            .map_err(|e| e.context(|e| format!("pipeline '{}': {e}", spec.name)))?;
        if body.target != spec.target {
            return Err(Error::Internal(format!(
                "pipeline '{}' target mismatch",
                spec.name
            )));
        }
        Ok(())
    }

    /// Brings the catalog in line with a manifest's sources and pipelines. Only entries that
    /// came from the manifest are removed; those created with SQL are left alone. With
    /// `apply` false the session uses the manifest's definitions but the catalog is not
    /// written (what `hakiri plan` needs).
    pub fn sync_manifest(
        &self,
        sources: &[SourceSpec],
        pipelines: &[PipelineSpec],
        apply: bool,
    ) -> Result<ChangeSet> {
        let now = self.clock.now();
        let mut changes = ChangeSet::default();
        for s in sources {
            self.check_source(s)?;
        }
        for p in pipelines {
            self.check_pipeline(p)?;
        }
        let current_sources: BTreeMap<String, SourceSpec> = self
            .catalog
            .list_sources()?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        // An entry already in the catalog still has to be in this session: another process
        // may have written it between this engine loading the catalog and this sync.
        for s in sources {
            match current_sources.get(&s.name) {
                None => changes.sources_added.push(s.name.clone()),
                Some(cur) if cur != s => changes.sources_changed.push(s.name.clone()),
                Some(_) if read(&self.sources).get(&s.name) == Some(s) => continue,
                Some(_) => {
                    self.register_source(s)?;
                    continue;
                }
            }
            if apply {
                self.catalog.upsert_source(s, now)?;
            }
            self.register_source(s)?;
        }
        for (name, cur) in &current_sources {
            if cur.origin == crate::types::Origin::Manifest
                && !sources.iter().any(|s| &s.name == name)
            {
                changes.sources_removed.push(name.clone());
                if apply {
                    self.catalog.drop_source(name)?;
                }
                self.unregister_source(name)?;
            }
        }
        let current: BTreeMap<String, PipelineSpec> = self
            .catalog
            .list_pipelines()?
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        for p in pipelines {
            match current.get(&p.name) {
                None => changes.pipelines_added.push(p.name.clone()),
                Some(cur) if cur != p => changes.pipelines_changed.push(p.name.clone()),
                Some(_) => {
                    write(&self.pipelines).insert(p.name.clone(), p.clone());
                    continue;
                }
            }
            if apply {
                self.catalog.upsert_pipeline(p, now)?;
            }
            write(&self.pipelines).insert(p.name.clone(), p.clone());
        }
        for (name, cur) in &current {
            if cur.origin == crate::types::Origin::Manifest
                && !pipelines.iter().any(|p| &p.name == name)
            {
                changes.pipelines_removed.push(name.clone());
                if apply {
                    self.catalog.drop_pipeline(name)?;
                }
                write(&self.pipelines).remove(name);
            }
        }
        if apply {
            // New and changed schedules get their state (first slot) now.
            self.schedules()?;
        }
        Ok(changes)
    }

    /// Runs every statement of `sql` in order and returns their outputs.
    pub async fn execute(&self, sql: &str) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for stmt in parse_statements(sql)? {
            out.push(self.execute_statement(stmt).await?);
        }
        Ok(out)
    }

    /// One match arm per statement: DDL goes to the catalog, queries to DataFusion.
    pub async fn execute_statement(&self, stmt: HakiriStatement) -> Result<Output> {
        let now = self.clock.now();
        match stmt {
            HakiriStatement::CreateSource {
                spec,
                or_replace,
                if_not_exists,
            } => {
                let exists = read(&self.sources).contains_key(&spec.name);
                if exists && if_not_exists {
                    return Ok(Output::Message(format!(
                        "source {} exists; nothing changed",
                        spec.name
                    )));
                }
                if exists && !or_replace {
                    return Err(Error::Exists {
                        kind: Thing::Source,
                        name: spec.name,
                    });
                }
                self.check_source(&spec)?;
                self.catalog.upsert_source(&spec, now)?;
                self.register_source(&spec)?;
                Ok(Output::Message(format!("source {} created", spec.name)))
            }
            HakiriStatement::DropSource { name, if_exists } => {
                if !read(&self.sources).contains_key(&name) {
                    if if_exists {
                        return Ok(Output::Message(format!(
                            "source {name} does not exist; nothing changed"
                        )));
                    }
                    return Err(Error::Unknown {
                        kind: Thing::Source,
                        known: read(&self.sources).keys().cloned().collect(),
                        name,
                    });
                }
                self.catalog.drop_source(&name)?;
                self.unregister_source(&name)?;
                Ok(Output::Message(format!("source {name} dropped")))
            }
            HakiriStatement::CreatePipeline { spec, or_replace } => {
                let exists = read(&self.pipelines).contains_key(&spec.name);
                if exists && !or_replace {
                    return Err(Error::Exists {
                        kind: Thing::Pipeline,
                        name: spec.name,
                    });
                }
                self.check_pipeline(&spec)?;
                self.catalog.upsert_pipeline(&spec, now)?;
                write(&self.pipelines).insert(spec.name.clone(), spec.clone());
                self.schedules()?;
                Ok(Output::Message(format!("pipeline {} created", spec.name)))
            }
            HakiriStatement::DropPipeline { name, if_exists } => {
                if !read(&self.pipelines).contains_key(&name) {
                    if if_exists {
                        return Ok(Output::Message(format!(
                            "pipeline {name} does not exist; nothing changed"
                        )));
                    }
                    return Err(self.pipeline(&name).unwrap_err());
                }
                self.catalog.drop_pipeline(&name)?;
                write(&self.pipelines).remove(&name);
                self.schedules()?;
                Ok(Output::Message(format!("pipeline {name} dropped")))
            }
            HakiriStatement::DropContextTable { name, if_exists } => self
                .drop_context_table(&name, if_exists)
                .map(Output::Message),
            HakiriStatement::ShowCreatePipeline { ref name } => {
                self.pipeline(name)?;
                self.show_rows(&stmt).await
            }
            HakiriStatement::ShowPipelines | HakiriStatement::ShowSources => {
                self.show_rows(&stmt).await
            }
            HakiriStatement::PlanPipeline { name } => {
                self.plan_pipeline(&name).await.map(Output::Plan)
            }
            HakiriStatement::RunPipeline { name } => {
                self.run_pipeline(&name, &|_| {}).await.map(Output::Run)
            }
            HakiriStatement::AlterPipeline { name, suspend } => {
                self.pipeline(&name)?;
                self.set_suspended(&name, suspend).map(Output::Message)
            }
            HakiriStatement::ResetCursor { name, to } => self
                .reset_cursor(&name, to.as_deref())
                .await
                .map(Output::Message),
            HakiriStatement::DataFusion(stmt) => {
                self.run_datafusion(*stmt).await.map(Output::Stream)
            }
        }
    }

    /// The query over the state tables that answers a `SHOW` statement; `None` for others.
    pub fn show_query(stmt: &HakiriStatement) -> Option<String> {
        Some(match stmt {
            HakiriStatement::ShowPipelines => "SELECT name, target_table, write_mode, cursor_kind, cursor_column, origin, sql FROM hakiri.pipelines ORDER BY name".into(),
            HakiriStatement::ShowSources => "SELECT name, type, origin FROM hakiri.sources ORDER BY name".into(),
            // `name` passed validate_name in the parser: safe to splice.
            HakiriStatement::ShowCreatePipeline { name } => {
                format!("SELECT definition FROM hakiri.pipelines WHERE name = '{name}'")
            }
            _ => return None,
        })
    }

    async fn show_rows(&self, stmt: &HakiriStatement) -> Result<Output> {
        let sql = Self::show_query(stmt)
            .ok_or_else(|| Error::Internal(format!("not a SHOW statement: {stmt}")))?;
        self.query(&sql).await.map(Output::Stream)
    }

    /// Runs one query and streams its rows.
    pub async fn query(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        let mut stmts = parse_statements(sql)?;
        match (stmts.len(), stmts.pop()) {
            (1, Some(HakiriStatement::DataFusion(stmt))) => self.run_datafusion(*stmt).await,
            _ => Err(Error::InvalidInput("expected exactly one query".into())),
        }
    }

    async fn run_datafusion(&self, stmt: DFStatement) -> Result<SendableRecordBatchStream> {
        let state = self.ctx.state();
        // Only a query's references are tables it reads (a DDL's target is one it makes).
        let reads = matches!(
            &stmt,
            DFStatement::Statement(s) if matches!(s.as_ref(), SQLStatement::Query(_))
        ) || matches!(&stmt, DFStatement::Explain(_));
        let refs = if reads {
            state.resolve_table_references(&stmt).unwrap_or_default()
        } else {
            Vec::new()
        };
        let plan = state
            .statement_to_plan(stmt)
            .await
            .map_err(|e| self.missing_table(e.into(), &refs))?;
        if let LogicalPlan::Dml(dml) = &plan {
            return Err(Error::Unsupported(format!(
                "{} on '{}' is not supported: rows enter the context store only through pipelines (CREATE PIPELINE name AS INSERT INTO context.t SELECT ...; then RUN PIPELINE name)",
                dml.op, dml.table_name
            )));
        }
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(Error::from)?;
        Ok(df.execute_stream().await?)
    }

    /// A statement that names a context table or a source that does not exist fails with
    /// [`Error::TableNotFound`] or [`Error::SourceNotFound`], listing what does exist. The
    /// names come from the statement's table references, looked up in the session, never
    /// from DataFusion's message.
    fn missing_table(&self, e: Error, refs: &[TableReference]) -> Error {
        // Only a planning error can be a missing table (not, say, a bad option).
        let planning = match &e {
            Error::DataFusion(df) => {
                matches!(df.find_root(), datafusion::error::DataFusionError::Plan(_))
            }
            _ => false,
        };
        if !planning {
            return e;
        }
        let state = self.ctx.state();
        let options = state.config().options().catalog.clone();
        for r in refs {
            // `FROM generate_series(1, 3)` is a reference too: a table function.
            if let TableReference::Bare { table } = r
                && state.table_functions().contains_key(table.as_ref())
            {
                continue;
            }
            let r = r
                .clone()
                .resolve(&options.default_catalog, &options.default_schema);
            let schema = r.schema.to_string();
            let table = r.table.to_string();
            if schema != "context" && RESERVED_SCHEMAS.contains(&schema.as_str()) {
                continue;
            }
            let Some(catalog) = self.ctx.catalog(&r.catalog) else {
                continue;
            };
            match catalog.schema(&schema) {
                None => {
                    return Error::SourceNotFound {
                        name: schema,
                        table,
                        hint: self.what_exists(),
                    };
                }
                Some(s) if schema == "context" && !s.table_exist(&table) => {
                    return Error::TableNotFound {
                        schema,
                        table,
                        hint: self.what_exists(),
                    };
                }
                Some(_) => {}
            }
        }
        e
    }

    /// "context tables: ...; sources: ...", for not-found errors.
    fn what_exists(&self) -> String {
        let tables: Vec<String> = self
            .catalog
            .tables()
            .map(|t| t.into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
        let sources: Vec<String> = self.sources().into_iter().map(|s| s.name).collect();
        format!(
            "context tables: {}; sources: {}",
            if tables.is_empty() {
                "none yet (run a pipeline to create one)".to_string()
            } else {
                tables.join(", ")
            },
            if sources.is_empty() {
                "none".to_string()
            } else {
                sources.join(", ")
            }
        )
    }

    /// The cursor value a run of `spec` would start from, and whether it is the INITIAL one.
    pub(crate) fn start_cursor(&self, spec: &PipelineSpec) -> Result<(Option<String>, bool)> {
        let Some(c) = &spec.cursor else {
            return Ok((None, false));
        };
        match self.catalog.cursor(&spec.name)? {
            Some(v) => Ok((Some(v), false)),
            None => Ok((c.initial.clone(), true)),
        }
    }

    /// The session state pipelines are planned with: one partition, so rows reach the run
    /// in the order the source delivers them (merge keeps the last row of a key) and a
    /// token run's page groups follow each other.
    fn pipeline_state(&self) -> datafusion::execution::SessionState {
        let mut state = self.ctx.state();
        state.config_mut().options_mut().execution.target_partitions = 1;
        state
    }

    /// The pipeline's query as a logical plan with `$cursor` bound to `cursor` (minus the
    /// cursor's LAG when `apply_lag`). A monotonic cursor's predicate also lets rows with a
    /// NULL cursor through, for the NULL rule to see them.
    pub(crate) async fn logical_plan(
        &self,
        spec: &PipelineSpec,
        cursor: Option<&str>,
        apply_lag: bool,
    ) -> Result<LogicalPlan> {
        let mut body = parse_pipeline_body(&spec.sql)?;
        let monotonic = spec
            .cursor
            .as_ref()
            .filter(|c| c.kind == CursorKind::Monotonic);
        if let Some(c) = monotonic {
            let boundaries = crate::cursor::rewrite_predicate(&mut body.query, &spec.name)?;
            let col = c.column.as_deref().unwrap_or_default();
            if boundaries.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "pipeline '{}' declares CURSOR MONOTONIC ({col}) but its query never compares with $cursor, so every run would read everything again: add WHERE {col} > $cursor",
                    spec.name
                )));
            }
            if boundaries.contains(&crate::cursor::Boundary::Inclusive)
                && spec.mode == WriteMode::Replace
            {
                return Err(Error::InvalidInput(format!(
                    "pipeline '{}' reads rows with {col} >= $cursor in MODE REPLACE, which would replace the table with the rows from the cursor on: use MODE APPEND (the boundary rows already loaded are skipped) or MODE MERGE KEY (...)",
                    spec.name
                )));
            }
        }
        let state = self.pipeline_state();
        let stmt = DFStatement::Statement(Box::new(SQLStatement::Query(body.query)));
        let refs = state.resolve_table_references(&stmt).unwrap_or_default();
        let plan = state
            .statement_to_plan(stmt)
            .await
            .map_err(|e| self.missing_table(e.into(), &refs))?;
        let params = plan.get_parameter_types()?;
        let mut plan = plan;
        for (name, ty) in params {
            if name != crate::cursor::PLACEHOLDER {
                return Err(Error::InvalidInput(format!(
                    "pipeline '{}' uses placeholder {name}: the only placeholder a pipeline may use is $cursor",
                    spec.name
                )));
            }
            let Some(c) = monotonic else {
                return Err(Error::InvalidInput(format!(
                    "pipeline '{}' uses $cursor, which belongs to a monotonic cursor: declare CURSOR MONOTONIC (column) INITIAL '<value>' (a TOKEN or SNAPSHOT cursor is handled by the source and has no $cursor)",
                    spec.name
                )));
            };
            let value = cursor.ok_or_else(|| {
                Error::InvalidInput(format!(
                    "pipeline '{}' uses $cursor but has no committed cursor and no INITIAL value: add INITIAL '<value>' to its CURSOR clause",
                    spec.name
                ))
            })?;
            let ty = ty.unwrap_or(DataType::Utf8);
            let lag = c.lag.as_deref().filter(|_| apply_lag);
            let scalar = crate::cursor::bind(value, &ty, lag, &spec.name)?;
            plan = plan.with_param_values(vec![("cursor", scalar)])?;
        }
        Ok(plan)
    }

    /// Plans the pipeline's query with `$cursor` bound (see [`Self::logical_plan`]).
    pub(crate) async fn physical_plan(
        &self,
        spec: &PipelineSpec,
        cursor: Option<&str>,
        apply_lag: bool,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.logical_plan(spec, cursor, apply_lag).await?;
        self.pipeline_state()
            .create_physical_plan(&plan)
            .await
            .map_err(Error::from)
    }

    /// What a run of `name` would do: the cursor it starts from, what is pushed into each
    /// source scan (Exact: the source applies it; Inexact: Hakiri filters again) and the
    /// physical plan.
    pub async fn plan_pipeline(&self, name: &str) -> Result<PlanReport> {
        let spec = self.pipeline(name)?;
        let (cursor, cursor_is_initial) = self.start_cursor(&spec)?;
        let logical = self
            .logical_plan(&spec, cursor.as_deref(), !cursor_is_initial)
            .await?;
        let state = self.pipeline_state();
        let optimized = state.optimize(&logical)?;
        let mut pushdown = Vec::new();
        optimized.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                for f in &scan.filters {
                    let how = match scan.source.supports_filters_pushdown(&[f])?.first() {
                        Some(TableProviderFilterPushDown::Exact) => "Exact",
                        Some(TableProviderFilterPushDown::Inexact) => "Inexact",
                        _ => continue,
                    };
                    pushdown.push(PushedFilter {
                        table: scan.table_name.to_string(),
                        filter: f.to_string(),
                        exact: how == "Exact",
                    });
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let plan = state
            .create_physical_plan(&optimized)
            .await
            .map_err(Error::from)?;
        Ok(PlanReport {
            physical_plan: displayable(plan.as_ref()).indent(true).to_string(),
            pipeline: spec,
            cursor,
            cursor_is_initial,
            pushdown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Origin, SchemaPolicy, WriteMode};

    /// Regression: `hakiri run` and `hakiri query` started together. The second process to
    /// sync found the first one's pipeline already in the catalog, skipped it as unchanged,
    /// and its own session never learned it ("no pipeline named 'slow'").
    #[test]
    fn a_sync_after_another_process_wrote_the_catalog_still_loads_the_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let slow = PipelineSpec {
            name: "slow".into(),
            sql: "INSERT INTO context.slow SELECT 1 AS x".into(),
            target: "slow".into(),
            cursor: None,
            mode: WriteMode::default(),
            key: vec![],
            on_schema_change: SchemaPolicy::default(),
            checkpoint_pages: None,
            schedule: None,
            origin: Origin::Manifest,
        };
        let late = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        let early = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        let changes = early
            .sync_manifest(&[], std::slice::from_ref(&slow), true)
            .unwrap();
        assert_eq!(changes.pipelines_added, vec!["slow".to_string()]);

        let changes = late
            .sync_manifest(&[], std::slice::from_ref(&slow), true)
            .unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(late.pipeline("slow").unwrap(), slow);
    }
}
