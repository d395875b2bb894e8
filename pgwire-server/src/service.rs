//! The query handlers: datafusion-postgres's, with the role hook first, plus Hakiri's own
//! statements (pipeline and source DDL, `RUN PIPELINE`, `SHOW PIPELINES`, ...) on the simple
//! query protocol, where `psql` and scripts send them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{
    DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use datafusion_postgres::pgwire::api::stmt::{QueryParser, StoredStatement};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::{StreamExt, stream};
use hakiri_engine::sql::{Access, HakiriStatement, parse_statements};
use hakiri_engine::types::Role;
use hakiri_engine::{Engine, Error, ErrorCategory, Output};

use crate::cancel::Cancels;
use crate::compat::CompatHook;
use crate::cursors::{DeclareHook, Described, no_such_cursor};
use crate::roles::{RoleHook, refuse, role_of};
use crate::settings::SharedSettingsHook;
use crate::{User, api_error, sql_error};

/// Serves one Hakiri engine to every connection.
pub struct HakiriService {
    engine: Arc<Engine>,
    users: Arc<Vec<User>>,
    df: Arc<DfSessionService>,
    parser: Arc<HakiriParser>,
    cancels: Arc<Cancels>,
}

impl HakiriService {
    pub fn new(engine: Arc<Engine>, users: Arc<Vec<User>>, cancels: Arc<Cancels>) -> Self {
        let ctx = Arc::new(engine.session().clone());
        // pg_catalog over the engine's catalogs (context, hakiri and the sources), for
        // psql's \d and the introspection queries of drivers and BI tools.
        if let Err(e) = crate::listing::setup(&ctx, "datafusion") {
            tracing::warn!("pg_catalog is not available: {e}");
        }
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(RoleHook {
                users: users.clone(),
            }),
            Arc::new(DeclareHook),
            Arc::new(CursorStatementHook),
            Arc::new(SharedSettingsHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
            Arc::new(CompatHook),
        ];
        let df = Arc::new(DfSessionService::new_with_hooks(ctx, hooks));
        HakiriService {
            parser: Arc::new(HakiriParser {
                df: df.query_parser(),
            }),
            df,
            engine,
            users,
            cancels,
        }
    }
}

/// Hakiri's statements in `query`, when it holds any; `None` for plain SQL (and for text
/// Hakiri's parser cannot read, which datafusion-postgres's Postgres-compatible parser may).
fn hakiri_statements(query: &str) -> Option<Vec<HakiriStatement>> {
    let statements = parse_statements(query).ok()?;
    statements
        .iter()
        .any(|s| !matches!(s, HakiriStatement::DataFusion(_)))
        .then_some(statements)
}

/// The one Hakiri statement of an extended-protocol statement, which [`HakiriParser`] stored
/// as text without a plan.
fn hakiri_statement_of(
    statement: &<HakiriParser as QueryParser>::Statement,
) -> Option<HakiriStatement> {
    match statement {
        (text, None) => hakiri_statements(text)?.into_iter().next(),
        _ => None,
    }
}

/// datafusion-postgres's parser, except that Hakiri's own statements (which DataFusion
/// cannot plan) are kept as text, for `do_query` to hand to the engine.
pub struct HakiriParser {
    df: Arc<Parser>,
}

#[async_trait]
impl QueryParser for HakiriParser {
    type Statement = <Parser as QueryParser>::Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match hakiri_statements(sql) {
            Some(statements) if statements.len() > 1 => Err(sql_error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            )),
            Some(_) => Ok(Some((sql.to_string(), None))),
            None => self.df.parse_sql(client, sql, types).await,
        }
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.df.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.df.get_result_schema(stmt, column_format)
    }
}

fn sqlstate(e: &Error) -> &'static str {
    match e.category() {
        ErrorCategory::InvalidInput => "42601",
        ErrorCategory::Config => "F0000",
        ErrorCategory::NotFound => "42704",
        ErrorCategory::AlreadyExists => "42710",
        ErrorCategory::Unsupported => "0A000",
        ErrorCategory::Upstream => "08000",
        ErrorCategory::Internal => "XX000",
    }
}

fn pg_error(e: Error) -> PgWireError {
    sql_error(sqlstate(&e), e.to_string())
}

/// Rows of a stream as a query response.
fn rows(stream: SendableRecordBatchStream) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &stream.schema(),
        &Format::UnifiedText,
        None,
    )?);
    let encode = fields.clone();
    let data = stream
        .map(move |batch| {
            let rows: Vec<PgWireResult<_>> = match batch {
                Ok(batch) => encode_recordbatch(encode.clone(), batch).collect(),
                Err(e) => vec![Err(api_error(e))],
            };
            stream::iter(rows)
        })
        .flatten();
    Ok(Response::Query(QueryResponse::new(fields, data)))
}

/// The row `RUN PIPELINE` answers with.
fn run_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_written", DataType::UInt64, false),
        Field::new("cursor_end", DataType::Utf8, true),
    ]))
}

fn plan_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]))
}

/// One text column of lines.
fn lines(lines: Vec<String>) -> PgWireResult<Response> {
    let schema = plan_schema();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(lines))])
        .map_err(api_error)?;
    rows(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream::iter([Ok(batch)]),
    )))
}

fn tag_of(statement: &HakiriStatement) -> &'static str {
    match statement {
        HakiriStatement::CreateSource { .. } => "CREATE SOURCE",
        HakiriStatement::DropSource { .. } => "DROP SOURCE",
        HakiriStatement::CreatePipeline { .. } => "CREATE PIPELINE",
        HakiriStatement::DropPipeline { .. } => "DROP PIPELINE",
        HakiriStatement::AlterPipeline { .. } | HakiriStatement::ResetCursor { .. } => {
            "ALTER PIPELINE"
        }
        _ => "OK",
    }
}

impl HakiriService {
    /// The columns a Hakiri statement answers with, for Describe on the extended protocol.
    async fn hakiri_fields(&self, statement: &HakiriStatement) -> PgWireResult<Vec<FieldInfo>> {
        let schema = match statement {
            HakiriStatement::RunPipeline { .. } => run_schema(),
            HakiriStatement::PlanPipeline { .. } => plan_schema(),
            other => match Engine::show_query(other) {
                Some(sql) => {
                    let df = self.engine.session().sql(&sql).await.map_err(api_error)?;
                    Arc::new(df.schema().as_arrow().clone())
                }
                None => return Ok(vec![]),
            },
        };
        arrow_schema_to_pg_fields(&schema, &Format::UnifiedText, None)
    }

    async fn hakiri_statement(
        &self,
        statement: HakiriStatement,
        role: Role,
        user: &str,
    ) -> PgWireResult<Response> {
        if role != Role::Admin && statement.access() == Access::Write {
            return Err(refuse(user, &statement.to_string()));
        }
        let tag = tag_of(&statement);
        match self
            .engine
            .execute_statement(statement)
            .await
            .map_err(pg_error)?
        {
            Output::Stream(stream) => rows(stream),
            Output::Message(_) => Ok(Response::Execution(Tag::new(tag))),
            Output::Plan(plan) => lines(plan.physical_plan.lines().map(str::to_string).collect()),
            Output::Run(run) => {
                let schema = run_schema();
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from(vec![run.run_id])),
                        Arc::new(StringArray::from(vec![run.pipeline])),
                        Arc::new(StringArray::from(vec![run.status.as_str().to_string()])),
                        Arc::new(UInt64Array::from(vec![run.counters.rows_written])),
                        Arc::new(StringArray::from(vec![run.cursor_end])),
                    ],
                )
                .map_err(api_error)?;
                rows(Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    stream::iter([Ok(batch)]),
                )))
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for HakiriService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let mut responses = self.simple_query(client, query).await?;
        self.cancels.watch(client, &mut responses);
        Ok(responses)
    }
}

impl HakiriService {
    async fn simple_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(statements) = hakiri_statements(query) else {
            return SimpleQueryHandler::do_query(self.df.as_ref(), client, query).await;
        };
        let role = role_of(&self.users, client);
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        let mut out = Vec::new();
        for statement in statements {
            match statement {
                HakiriStatement::DataFusion(sql) => {
                    out.extend(
                        SimpleQueryHandler::do_query(self.df.as_ref(), client, &sql.to_string())
                            .await?,
                    );
                }
                other => out.push(self.hakiri_statement(other, role, &user).await?),
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for HakiriService {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = HakiriParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let response = match hakiri_statement_of(&portal.statement.statement) {
            Some(statement) => {
                let role = role_of(&self.users, client);
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                self.hakiri_statement(statement, role, &user).await?
            }
            None => {
                ExtendedQueryHandler::do_query(self.df.as_ref(), client, portal, max_rows).await?
            }
        };
        let mut responses = [response];
        self.cancels.watch(client, &mut responses);
        let [response] = responses;
        Ok(response)
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(statement) = hakiri_statement_of(&target.statement) {
            let fields = self.hakiri_fields(&statement).await?;
            return Ok(DescribeStatementResponse::new(vec![], fields));
        }
        let described =
            ExtendedQueryHandler::do_describe_statement(self.df.as_ref(), client, target).await?;
        let fields = match Described::of(&target.statement.1) {
            Described::Plan => return Ok(described),
            Described::NoRows => vec![],
            Described::CursorRows(name) => self.cursor_fields(client, name)?,
        };
        Ok(DescribeStatementResponse::new(described.parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(statement) = hakiri_statement_of(&target.statement.statement) {
            return Ok(DescribePortalResponse::new(
                self.hakiri_fields(&statement).await?,
            ));
        }
        match Described::of(&target.statement.statement.1) {
            Described::Plan => {
                ExtendedQueryHandler::do_describe_portal(self.df.as_ref(), client, target).await
            }
            Described::NoRows => Ok(DescribePortalResponse::no_data()),
            Described::CursorRows(name) => Ok(DescribePortalResponse::new(
                self.cursor_fields(client, name)?,
            )),
        }
    }
}

impl HakiriService {
    /// The columns of cursor `name`, as its `FETCH`es send them (text, as DECLARE encoded).
    fn cursor_fields<C>(&self, client: &C, name: &str) -> PgWireResult<Vec<FieldInfo>>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore<Statement = <Self as ExtendedQueryHandler>::Statement>,
    {
        let entry = client
            .portal_store()
            .get_portal(name)
            .ok_or_else(|| no_such_cursor(name))?;
        match entry.value() {
            Some(cursor) => self
                .query_parser()
                .get_result_schema(&cursor.statement.statement, Some(&Format::UnifiedText)),
            None => Ok(vec![]),
        }
    }
}
