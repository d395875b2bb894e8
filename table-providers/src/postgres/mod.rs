//! The `postgres` connector: the tables of one schema of a PostgreSQL database, discovered
//! from the server's catalog. Projection, filters and limit are pushed into the `SELECT`
//! (filters as an exact `WHERE`), each scan reads one `REPEATABLE READ` snapshot, and rows
//! stream through binary `COPY ... TO STDOUT` into Arrow batches of `batch_size` rows.

mod copy;
mod tls;
mod types;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
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
use futures::{StreamExt, stream};
use hakiri_core::ports::{OptionSpec, Source, validate_options};
use hakiri_core::sources::resolve_value;
use hakiri_core::types::SourceSpec;
use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};
use copy::CopyReader;
use types::{Builder, PgColumn, quote_ident};

const fn opt(name: &'static str, secret: bool, help: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        required: false,
        secret,
        help,
    }
}

const OPTIONS: &[OptionSpec] = &[
    opt(
        "url",
        false,
        "postgres://user@host:port/dbname (or give host, port, user, dbname)",
    ),
    opt("host", false, "server host (default 127.0.0.1)"),
    opt("port", false, "server port (default 5432)"),
    opt("user", false, "user name"),
    opt(
        "password",
        true,
        "password, as a secret reference: 'env:PGPASSWORD'",
    ),
    opt("dbname", false, "database (default: the user name)"),
    opt(
        "schema",
        false,
        "the schema whose tables are read (default public)",
    ),
    opt("batch_size", false, "rows per Arrow batch (default 8192)"),
    opt(
        "parallel",
        false,
        "connections a scan of a large table uses at once, each reading a range of its pages in one shared snapshot (default 2; 1 reads over one connection)",
    ),
    opt(
        "connect_timeout_ms",
        false,
        "connection timeout (default 10000)",
    ),
    opt(
        "sslmode",
        false,
        "TLS: disable, prefer (default: TLS when the server offers it), require, verify-ca, verify-full (also as ?sslmode= in the url)",
    ),
    opt(
        "sslrootcert",
        false,
        "for verify-ca and verify-full: the CA certificate (PEM file) the server's certificate must be signed by",
    ),
];

/// Connection settings of a source, secrets resolved.
#[derive(Clone)]
pub struct PgOptions {
    /// The source's name, for messages.
    source: String,
    config: Config,
    tls: tls::Tls,
    schema: String,
    batch_size: usize,
    parallel: usize,
}

/// A connection URL with TLS as a source's (`sslmode` and `sslrootcert` in the URL, libpq's
/// modes) for another user of PostgreSQL, the shared catalog: the driver's settings, the
/// connector with the verifier the mode asks for, and `user@host:port/db` for messages.
/// `who` names the connection in errors.
pub fn client_config(
    who: &str,
    url: &str,
) -> Result<(Config, tokio_postgres_rustls::MakeRustlsConnect, String)> {
    let (url, mode, root) = tls::split_url(url);
    let tls = tls::Tls::parse(who, mode.as_deref(), root.as_deref())?;
    let mut config = url.parse::<Config>().map_err(|e| {
        Error::InvalidInput(format!(
            "{who}: url is not a PostgreSQL connection URL ({e}); write postgres://user:password@host:5432/dbname"
        ))
    })?;
    config.ssl_mode(tls.driver_mode());
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let endpoint = format!(
        "{}@{host}:{}/{}",
        config.get_user().unwrap_or("?"),
        config.get_ports().first().copied().unwrap_or(5432),
        config
            .get_dbname()
            .unwrap_or(config.get_user().unwrap_or("?"))
    );
    Ok((config, tls.connector(who)?, endpoint))
}

/// Pages (8 KiB) each connection of a parallel scan reads at least: below that, one more
/// connection costs more than it saves.
const MIN_PAGES_PER_CONNECTION: u64 = 256;

impl fmt::Debug for PgOptions {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("source", &self.source)
            .field("endpoint", &self.endpoint())
            .field("schema", &self.schema)
            .finish()
    }
}

impl PgOptions {
    fn parse(source: &str, raw: &std::collections::BTreeMap<String, String>) -> Result<Self> {
        let get = |k: &str| raw.get(k).map(|v| resolve_value(k, v)).transpose();
        let (url, url_mode, url_root) = match get("url")? {
            Some(u) => {
                let (u, m, r) = tls::split_url(&u);
                (Some(u), m, r)
            }
            None => (None, None, None),
        };
        let tls = tls::Tls::parse(
            &format!("source '{source}'"),
            get("sslmode")?.or(url_mode).as_deref(),
            get("sslrootcert")?.or(url_root).as_deref(),
        )?;
        let mut config = match url {
            Some(url) => url.parse::<Config>().map_err(|e| {
                Error::InvalidInput(format!(
                    "source '{source}': url is not a PostgreSQL connection URL ({e}); write postgres://user@host:5432/dbname"
                ))
            })?,
            None => Config::new(),
        };
        if config.get_hosts().is_empty() || raw.contains_key("host") {
            config.host(get("host")?.as_deref().unwrap_or("127.0.0.1"));
        }
        if let Some(p) = get("port")? {
            config.port(p.parse().map_err(|_| {
                Error::InvalidInput(format!(
                    "source '{source}': port must be a number, got '{p}'"
                ))
            })?);
        }
        if let Some(u) = get("user")? {
            config.user(u);
        }
        if config.get_user().is_none() {
            return Err(Error::InvalidInput(format!(
                "source '{source}' (type postgres) needs a user: set the user option or put it in the url"
            )));
        }
        if let Some(p) = get("password")? {
            config.password(p);
        }
        if let Some(d) = get("dbname")? {
            config.dbname(d);
        }
        let num = |k: &str, default: u64| -> Result<u64> {
            get(k)?.map_or(Ok(default), |v| {
                v.parse().map_err(|_| {
                    Error::InvalidInput(format!(
                        "source '{source}': {k} must be a whole number, got '{v}'"
                    ))
                })
            })
        };
        config.connect_timeout(Duration::from_millis(num("connect_timeout_ms", 10_000)?));
        config.application_name("hakiri");
        config.ssl_mode(tls.driver_mode());
        Ok(PgOptions {
            source: source.to_string(),
            config,
            tls,
            schema: get("schema")?.unwrap_or_else(|| "public".into()),
            batch_size: num("batch_size", 8192)?.max(1) as usize,
            parallel: num("parallel", 2)?.clamp(1, 64) as usize,
        })
    }

    fn endpoint(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            self.config.get_user().unwrap_or("?"),
            self.config
                .get_dbname()
                .unwrap_or(self.config.get_user().unwrap_or("?"))
        )
    }

    /// A connection whose errors say what to fix.
    async fn connect(&self) -> Result<Client> {
        let connector = self.tls.connector(&format!("source '{}'", self.source))?;
        let (client, connection) = match self.config.connect(connector.clone()).await {
            // prefer: a server that offered TLS but whose handshake failed is tried in
            // plain text, as libpq does.
            Err(e)
                if self.tls.mode == tls::SslMode::Prefer && tls::tls_error_under(&e).is_some() =>
            {
                let mut plain = self.config.clone();
                plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
                // If plain fails too, both failures are said: the plain one alone ("no
                // encryption") would hide that TLS was tried and why it failed.
                let tls_failure = self.explain(e);
                plain.connect(connector).await.map_err(|plain| {
                    let plain = self.explain(plain);
                    tls_failure.context(|t| {
                        format!("{t}; then, in plain text (sslmode prefer falls back): {plain}")
                    })
                })
            }
            other => other.map_err(|e| self.explain(e)),
        }?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("postgres connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// The driver's error as [`Error::Postgres`], with what to fix: from the server's
    /// SQLSTATE when it answered; a missing password when no password is configured and no
    /// I/O error is under the error; otherwise the server is unreachable.
    fn explain(&self, e: tokio_postgres::Error) -> Error {
        let source = &self.source;
        let endpoint = self.endpoint();
        let mut sqlstate = None;
        let message = if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let fix = match code {
                "28000" if db.message().contains("no encryption") => {
                    "the server accepts only TLS connections: set sslmode to prefer, require, verify-ca or verify-full"
                }
                "28P01" | "28000" => {
                    "check the user and the password option (a secret reference such as 'env:PGPASSWORD')"
                }
                "3D000" => "check the dbname option",
                "42501" => "grant the user SELECT on the table",
                _ => "check the source's options",
            };
            sqlstate = Some(code.to_string());
            format!(
                "source '{source}' (postgres {endpoint}): {} (SQLSTATE {code}); {fix}",
                db.message()
            )
        } else if let Some(t) = tls::tls_error_under(&e) {
            format!(
                "source '{source}' (postgres {endpoint}): the TLS handshake failed: {t}; check sslmode and sslrootcert (verify-full needs the server's certificate to name the host connected to; verify-ca only checks who signed it)"
            )
        } else if e.to_string().contains("server does not support TLS") {
            format!(
                "source '{source}' (postgres {endpoint}): sslmode {} needs TLS, and the server does not offer it: enable ssl on the server, or use sslmode prefer or disable",
                tls::SslMode::SPELLINGS[self.tls.mode as usize]
            )
        } else if self.config.get_password().is_none() && !io_error_under(&e) {
            // Connected, or timed out: the driver does not say which (its error kinds are
            // private), so the hint names both fixes.
            format!(
                "source '{source}' (postgres {endpoint}): {e}; the source has no password option: if the server asks for one, set it (a secret reference such as 'env:PGPASSWORD'); if the server did not answer, check host and port"
            )
        } else {
            let detail = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            format!(
                "source '{source}': cannot reach PostgreSQL at {endpoint}: {e}{}; check host and port, and that the server accepts TCP connections",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            )
        };
        Error::Postgres {
            name: source.clone(),
            endpoint,
            sqlstate,
            message,
            cause: Box::new(e),
        }
    }

    /// The tables and views of the schema.
    async fn discover(&self) -> Result<Vec<String>> {
        let client = self.connect().await?;
        let rows = client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
                &[&self.schema],
            )
            .await
            .map_err(|e| self.explain(e))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    async fn columns(&self, client: &Client, table: &str) -> Result<Vec<PgColumn>> {
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid::int8, format_type(a.atttypid, a.atttypmod), a.attnotnull
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[&self.schema, &table],
            )
            .await
            .map_err(|e| self.explain(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                PgColumn::new(
                    &r.get::<_, String>(0),
                    r.get::<_, i64>(1) as u32,
                    &r.get::<_, String>(2),
                    r.get::<_, bool>(3),
                )
            })
            .collect())
    }
}

/// The `postgres` connector type.
#[derive(Debug, Default)]
pub struct PostgresSource;

#[async_trait]
impl Source for PostgresSource {
    fn connector(&self) -> &'static str {
        "postgres"
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate(&self, spec: &SourceSpec) -> Result<()> {
        validate_options(
            &format!("source '{}' (type postgres)", spec.name),
            OPTIONS,
            spec.options.keys(),
        )?;
        if !spec.options.contains_key("url") && !spec.options.contains_key("user") {
            return Err(Error::InvalidInput(format!(
                "source '{}' (type postgres) needs a url ('postgres://user@host:5432/db') or a user option",
                spec.name
            )));
        }
        Ok(())
    }

    /// Tables are discovered from the server; nothing is declared.
    fn table_names(&self, _spec: &SourceSpec) -> Vec<String> {
        Vec::new()
    }

    async fn discover(&self, spec: &SourceSpec) -> Result<Vec<String>> {
        PgOptions::parse(&spec.name, &spec.options)?
            .discover()
            .await
    }

    async fn table(
        &self,
        spec: &SourceSpec,
        table: &str,
        _hint: Option<SchemaRef>,
    ) -> Result<Arc<dyn TableProvider>> {
        let opts = PgOptions::parse(&spec.name, &spec.options)?;
        Ok(Arc::new(PostgresTable::try_new(opts, table).await?))
    }
}

/// A table (or view) of the database.
#[derive(Debug)]
pub struct PostgresTable {
    opts: PgOptions,
    table: String,
    columns: Arc<Vec<PgColumn>>,
    schema: SchemaRef,
    /// A plain table's size in pages when the provider was made (views: `None`); how a
    /// full scan is split between connections.
    pages: Option<u64>,
}

impl PostgresTable {
    pub async fn try_new(opts: PgOptions, table: &str) -> Result<Self> {
        let client = opts.connect().await?;
        let columns = opts.columns(&client, table).await?;
        if columns.is_empty() {
            let tables = opts.discover().await.unwrap_or_default();
            return Err(Error::SourceTableNotFound {
                name: opts.source.clone(),
                table: table.to_string(),
                message: format!(
                    "source '{}' has no table '{table}' in schema '{}': its tables are {}",
                    opts.source,
                    opts.schema,
                    if tables.is_empty() {
                        "none".to_string()
                    } else {
                        tables.join(", ")
                    }
                ),
            });
        }
        let schema = Arc::new(Schema::new(
            columns.iter().map(|c| c.field.clone()).collect::<Vec<_>>(),
        ));
        let pages = client
            .query_opt(
                "SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'r'",
                &[&opts.schema, &table],
            )
            .await
            .map_err(|e| opts.explain(e))?
            .map(|r| r.get::<_, i64>(0).max(0) as u64);
        Ok(PostgresTable {
            opts,
            table: table.to_string(),
            columns: Arc::new(columns),
            schema,
            pages,
        })
    }

    /// A filter as SQL, if PostgreSQL evaluates it exactly as DataFusion would.
    fn filter_sql(&self, e: &Expr) -> Option<String> {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let op = match op {
                    Operator::And => "AND",
                    Operator::Or => "OR",
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    Operator::GtEq => ">=",
                    _ => return None,
                };
                Some(format!(
                    "({} {op} {})",
                    self.filter_sql(left)?,
                    self.filter_sql(right)?
                ))
            }
            Expr::Not(x) => Some(format!("(NOT {})", self.filter_sql(x)?)),
            Expr::IsNull(x) => Some(format!("({} IS NULL)", self.filter_sql(x)?)),
            Expr::IsNotNull(x) => Some(format!("({} IS NOT NULL)", self.filter_sql(x)?)),
            Expr::Column(c) => self
                .columns
                .iter()
                .find(|col| col.name == c.name && col.filterable)
                .map(|col| quote_ident(&col.name)),
            Expr::Literal(v, _) => literal_sql(v),
            _ => None,
        }
    }
}

/// A literal as SQL text; timestamps and dates typed.
fn literal_sql(v: &ScalarValue) -> Option<String> {
    use chrono::{DateTime, SecondsFormat};
    let text = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let ts = |t: Option<DateTime<chrono::Utc>>, tz: bool| {
        t.map(|t| {
            if tz {
                format!(
                    "'{}'::timestamptz",
                    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                )
            } else {
                format!("'{}'::timestamp", t.naive_utc())
            }
        })
    };
    Some(match v {
        _ if v.is_null() => return None,
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        ScalarValue::Int8(Some(x)) => x.to_string(),
        ScalarValue::Int16(Some(x)) => x.to_string(),
        ScalarValue::Int32(Some(x)) => x.to_string(),
        ScalarValue::Int64(Some(x)) => x.to_string(),
        ScalarValue::UInt8(Some(x)) => x.to_string(),
        ScalarValue::UInt16(Some(x)) => x.to_string(),
        ScalarValue::UInt32(Some(x)) => x.to_string(),
        ScalarValue::UInt64(Some(x)) => x.to_string(),
        ScalarValue::Float32(Some(x)) if x.is_finite() => format!("{x:?}::float4"),
        ScalarValue::Float64(Some(x)) if x.is_finite() => format!("{x:?}::float8"),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => text(s),
        ScalarValue::Date32(Some(d)) => {
            let date =
                chrono::NaiveDate::from_ymd_opt(1970, 1, 1)? + chrono::Duration::days(*d as i64);
            format!("'{date}'::date")
        }
        ScalarValue::TimestampSecond(Some(x), tz) => {
            ts(DateTime::from_timestamp(*x, 0), tz.is_some())?
        }
        ScalarValue::TimestampMillisecond(Some(x), tz) => {
            ts(DateTime::from_timestamp_millis(*x), tz.is_some())?
        }
        ScalarValue::TimestampMicrosecond(Some(x), tz) => {
            ts(DateTime::from_timestamp_micros(*x), tz.is_some())?
        }
        ScalarValue::TimestampNanosecond(Some(x), tz) => {
            ts(Some(DateTime::from_timestamp_nanos(*x)), tz.is_some())?
        }
        _ => return None,
    })
}

#[async_trait]
impl TableProvider for PostgresTable {
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
        // Exact: PostgreSQL applies the WHERE, DataFusion need not filter again.
        Ok(filters
            .iter()
            .map(|f| match self.filter_sql(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
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
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.columns.len()).collect(),
        };
        let selected: Vec<PgColumn> = indices.iter().map(|i| self.columns[*i].clone()).collect();
        let exprs: Vec<String> = selected.iter().map(PgColumn::select_expr).collect();
        let wheres: Vec<String> = filters.iter().filter_map(|f| self.filter_sql(f)).collect();
        let sql = format!(
            "SELECT {} FROM {}.{}",
            if exprs.is_empty() {
                "NULL".to_string()
            } else {
                exprs.join(", ")
            },
            quote_ident(&self.opts.schema),
            quote_ident(&self.table)
        );
        // A large plain table without a LIMIT is read over several connections, each a
        // range of its pages (a TID range scan), all in one exported snapshot. The last
        // range is open: pages added since the size was read are still read.
        let connections = match (self.pages, limit) {
            (Some(pages), None) => {
                (pages / MIN_PAGES_PER_CONNECTION).clamp(1, self.opts.parallel as u64)
            }
            _ => 1,
        };
        let ranges: Vec<String> = (0..connections)
            .map(|i| {
                let pages = self.pages.unwrap_or(0);
                let from = pages * i / connections;
                let to = pages * (i + 1) / connections;
                match (i, i + 1 == connections) {
                    (0, true) => String::new(),
                    (0, false) => format!("ctid < '({to},0)'::tid"),
                    (_, true) => format!("ctid >= '({from},0)'::tid"),
                    _ => format!("ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid"),
                }
            })
            .collect();
        let sqls: Vec<String> = ranges
            .iter()
            .map(|range| {
                let mut sql = sql.clone();
                let conds: Vec<&str> = wheres
                    .iter()
                    .map(String::as_str)
                    .chain((!range.is_empty()).then_some(range.as_str()))
                    .collect();
                if !conds.is_empty() {
                    sql.push_str(&format!(" WHERE {}", conds.join(" AND ")));
                }
                if let Some(n) = limit {
                    sql.push_str(&format!(" LIMIT {n}"));
                }
                sql
            })
            .collect();
        let schema = Arc::new(self.schema.project(&indices)?);
        let props = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(sqls.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(PostgresExec {
            opts: self.opts.clone(),
            table: format!("{}.{}", self.opts.schema, self.table),
            sqls,
            snapshot: Arc::new(tokio::sync::OnceCell::new()),
            columns: Arc::new(selected),
            schema,
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// Streams a `SELECT` through binary `COPY` in one read-only `REPEATABLE READ` snapshot:
/// one partition per connection, each with its own `SELECT` (a range of the table's pages).
/// With several, a separate connection exports its snapshot and every partition's
/// transaction imports it, so together they read one consistent state of the table.
#[derive(Debug)]
pub struct PostgresExec {
    opts: PgOptions,
    table: String,
    sqls: Vec<String>,
    /// The connection holding the exported snapshot and its id, made by the first partition
    /// that starts; kept open while any partition may still import it.
    snapshot: SharedSnapshot,
    columns: Arc<Vec<PgColumn>>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for PostgresExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        if self.sqls.len() == 1 {
            write!(
                f,
                "PostgresExec: table={}, sql={}",
                self.table, self.sqls[0]
            )
        } else {
            write!(
                f,
                "PostgresExec: table={}, connections={} (one snapshot), sql={}",
                self.table,
                self.sqls.len(),
                self.sqls.join(" | ")
            )
        }
    }
}

impl ExecutionPlan for PostgresExec {
    fn name(&self) -> &str {
        "PostgresExec"
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
        let opts = self.opts.clone();
        let sql = self.sqls.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "PostgresExec has {} partitions, asked for {partition}",
                self.sqls.len()
            ))
        })?;
        let shared = (self.sqls.len() > 1).then(|| self.snapshot.clone());
        let columns = self.columns.clone();
        let schema = self.schema.clone();
        let rows_metric =
            MetricBuilder::new(&self.metrics).counter(hakiri_core::types::metric::ROWS, partition);
        let batch_size = opts.batch_size;
        let start = async move {
            let client = opts.connect().await?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| opts.explain(e))?;
            if let Some(shared) = &shared {
                let (_, id) = shared
                    .get_or_try_init(|| async {
                        let holder = opts.connect().await?;
                        holder
                            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                            .await
                            .map_err(|e| opts.explain(e))?;
                        let id: String = holder
                            .query_one("SELECT pg_export_snapshot()", &[])
                            .await
                            .map_err(|e| opts.explain(e))?
                            .get(0);
                        Ok::<_, Error>((Arc::new(holder), id))
                    })
                    .await?;
                // `id` comes from the server (hex digits and dashes): safe to splice.
                client
                    .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{id}'"))
                    .await
                    .map_err(|e| opts.explain(e))?;
            }
            let statement = format!("COPY ({sql}) TO STDOUT (FORMAT binary)");
            let copy = tracing::Instrument::instrument(
                client.copy_out(&statement),
                tracing::info_span!("postgres.copy", db.system = "postgresql", db.query.text = %statement, otel.kind = "client"),
            )
            .await
            .map_err(|e| opts.explain(e))?;
            let rows = CopyReader::new(copy);
            // The stream keeps the snapshot's holder alive until it ends.
            let client = (client, shared);
            Ok::<_, Error>((client, rows, opts))
        };
        let out_schema = schema.clone();
        let batches = stream::once(start)
            .map(move |started| {
                let columns = columns.clone();
                let schema = schema.clone();
                let rows_metric = rows_metric.clone();
                let state = started.map(|(client, rows, opts)| (client, rows, opts, false));
                stream::try_unfold(Some(state), move |state| {
                    let columns = columns.clone();
                    let schema = schema.clone();
                    let rows_metric = rows_metric.clone();
                    async move {
                        let Some(state) = state else { return Ok(None) };
                        let (client, mut rows, opts, done) = state?;
                        if done {
                            return Ok(None);
                        }
                        let mut builders: Vec<Builder> =
                            columns.iter().map(|c| Builder::new(c.kind)).collect();
                        let n = rows
                            .read_into(&mut builders, &columns, batch_size, |e| opts.explain(e))
                            .await?;
                        let finished = n < batch_size;
                        if finished {
                            client
                                .0
                                .batch_execute("COMMIT")
                                .await
                                .map_err(|e| opts.explain(e))?;
                        }
                        if n == 0 {
                            return Ok(None);
                        }
                        let arrays = builders
                            .iter_mut()
                            .zip(schema.fields().iter())
                            .map(|(b, f)| b.finish(f))
                            .collect::<Result<Vec<_>>>()?;
                        let batch = if arrays.is_empty() {
                            RecordBatch::try_new_with_options(
                                schema.clone(),
                                arrays,
                                &datafusion::arrow::record_batch::RecordBatchOptions::new()
                                    .with_row_count(Some(n)),
                            )
                        } else {
                            RecordBatch::try_new(schema.clone(), arrays)
                        }
                        .map_err(|e| Error::Internal(format!("building a batch: {e}")))?;
                        rows_metric.add(n);
                        Ok::<_, Error>(Some((batch, Some(Ok((client, rows, opts, finished))))))
                    }
                })
            })
            .flatten()
            .map(|r| r.map_err(DataFusionError::from));
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, batches)))
    }
}

/// The exported snapshot of a parallel scan: its holding connection and its id.
type SharedSnapshot = Arc<tokio::sync::OnceCell<(Arc<Client>, String)>>;

/// Whether an I/O error (a refused or cut connection, a timeout) is in the error's chain.
fn io_error_under(e: &tokio_postgres::Error) -> bool {
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        if inner.is::<std::io::Error>() {
            return true;
        }
        cur = inner.source();
    }
    false
}

/// `CREATE EXTERNAL TABLE t STORED AS POSTGRES LOCATION 'postgres://user@host/db'
/// OPTIONS ('table' 'events', 'password' 'env:PGPASSWORD')`.
#[derive(Debug, Default)]
pub struct PostgresTableFactory;

#[async_trait]
impl TableProviderFactory for PostgresTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let mut raw: std::collections::BTreeMap<String, String> = cmd
            .options
            .iter()
            .map(|(k, v)| {
                (
                    k.strip_prefix("format.").unwrap_or(k).to_string(),
                    v.clone(),
                )
            })
            .collect();
        let name = cmd.name.table().to_string();
        let table = raw.remove("table").unwrap_or_else(|| name.clone());
        if let Some(url) = cmd.locations.first() {
            raw.insert("url".into(), url.clone());
        }
        let mut valid: Vec<OptionSpec> = OPTIONS.to_vec();
        valid.push(opt(
            "table",
            false,
            "the table to read (default: the external table's name)",
        ));
        validate_options(
            &format!("external table '{name}' (postgres)"),
            &valid,
            raw.keys(),
        )?;
        let opts = PgOptions::parse(&name, &raw)?;
        Ok(Arc::new(PostgresTable::try_new(opts, &table).await?))
    }
}
