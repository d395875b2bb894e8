//! The engine's error type and the stable categories every front end maps from.

use datafusion::error::DataFusionError;

/// A stable classification of an error. pgwire maps it to a SQLSTATE, the CLI to an exit
/// code and MCP to an error result, so the category must not depend on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The statement, option or value given by the user is wrong.
    InvalidInput,
    /// The project configuration (manifest, project folder) is wrong or missing.
    Config,
    /// A named thing (source, table, pipeline, column) does not exist.
    NotFound,
    /// A named thing exists already.
    AlreadyExists,
    /// The request is understood but not supported (yet).
    Unsupported,
    /// A remote system (HTTP API, database) failed or answered something unusable.
    Upstream,
    /// A bug or an environment failure (disk, SQLite).
    Internal,
}

impl ErrorCategory {
    /// The category's name, as MCP tool errors carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::InvalidInput => "invalid_input",
            ErrorCategory::Config => "config",
            ErrorCategory::NotFound => "not_found",
            ErrorCategory::AlreadyExists => "already_exists",
            ErrorCategory::Unsupported => "unsupported",
            ErrorCategory::Upstream => "upstream",
            ErrorCategory::Internal => "internal",
        }
    }
}

/// What kind of named thing an [`Error::Unknown`] or [`Error::Exists`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thing {
    Source,
    Pipeline,
    StateTable,
}

impl Thing {
    fn as_str(self) -> &'static str {
        match self {
            Thing::Source => "source",
            Thing::Pipeline => "pipeline",
            Thing::StateTable => "state table",
        }
    }
}

impl std::fmt::Display for Thing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Config(String),
    /// The manifest is wrong at a place (1-based line and column).
    #[error("{path}, line {line} column {column}: {message}")]
    Manifest {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// No source, pipeline or state table named `name`; `known` names those there are.
    #[error("{}", unknown_message(*kind, name, known))]
    Unknown {
        kind: Thing,
        name: String,
        known: Vec<String>,
    },
    /// A source or pipeline named `name` exists already.
    #[error("{kind} '{name}' exists: use CREATE OR REPLACE {} to change it", kind.as_str().to_uppercase())]
    Exists { kind: Thing, name: String },
    /// A source has no table `table`; `message` lists its tables and how to declare one.
    #[error("{message}")]
    SourceTableNotFound {
        name: String,
        table: String,
        message: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Upstream(String),
    /// An HTTP request of a source failed: `status` when the server answered, the transport
    /// error as `source` when it did not (or the last one, after retries). `message` says
    /// what failed and what to do next.
    #[error("{message}")]
    Http {
        url: String,
        status: Option<u16>,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A Postgres source failed: the server's SQLSTATE when it answered, the driver's
    /// error as `cause`. `message` names the source and says what to fix.
    #[error("{message}")]
    Postgres {
        name: String,
        /// `user@host:port/dbname`.
        endpoint: String,
        sqlstate: Option<String>,
        message: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No table `schema.table` (a context table); `hint` lists what exists.
    #[error(
        "no context table named '{table}' ({hint}); check the name or run the pipeline that loads it: hakiri run <pipeline>"
    )]
    TableNotFound {
        schema: String,
        table: String,
        hint: String,
    },
    /// A query names `source.table` of a source that does not exist.
    #[error(
        "no source named '{name}' (in '{name}.{table}'); {hint}. Declare it in hakiri.toml or with CREATE SOURCE"
    )]
    SourceNotFound {
        name: String,
        table: String,
        hint: String,
    },
    /// Another live run holds the pipeline's run lock.
    #[error(
        "pipeline '{pipeline}' is already running: run {run_id} started at {started_at} by {holder} (last heartbeat {heartbeat_at}); wait for it to end, or stop that process (a run whose process is gone is taken over automatically)"
    )]
    RunLockHeld {
        pipeline: String,
        run_id: String,
        /// `process <pid> on host '<host>'`.
        holder: String,
        started_at: String,
        heartbeat_at: String,
    },
    /// `DROP CONTEXT TABLE` while a live run writes the table.
    #[error(
        "context table '{table}' is being written by pipeline '{pipeline}' (run {run_id}, {holder}): wait for the run to end, or stop it, then drop the table again"
    )]
    TableInUse {
        table: String,
        pipeline: String,
        run_id: String,
        /// `process <pid> on host '<host>'`.
        holder: String,
    },
    /// A run ended by a stopping process (SIGTERM, Ctrl-C), not by the pipeline's fault.
    #[error("stopped: {why}")]
    RunStopped { why: String },
    #[error("{}", display_catalog(.0))]
    Catalog(#[from] rusqlite::Error),
    /// The disk is full (ENOSPC) while writing `path`.
    #[error(
        "no space left on the disk holding {path} while {action}: free some space and run again"
    )]
    StorageFull {
        path: String,
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", display_datafusion(.0))]
    DataFusion(Box<DataFusionError>),
    /// A connector crate's own typed error (downcast the source to its kind), with the
    /// category that crate gave it.
    #[error("{source}")]
    Connector {
        category: ErrorCategory,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("internal error: {0}. This is a bug in Hakiri; please report it")]
    Internal(String),
    /// An error re-worded with where it happened, kept as its source; see
    /// [`Error::context`].
    #[error("{message}")]
    Context {
        category: ErrorCategory,
        message: String,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::InvalidInput(_) => ErrorCategory::InvalidInput,
            Error::Config(_) | Error::Manifest { .. } => ErrorCategory::Config,
            Error::NotFound(_) => ErrorCategory::NotFound,
            Error::Unsupported(_) => ErrorCategory::Unsupported,
            Error::Upstream(_) | Error::Http { .. } | Error::Postgres { .. } => {
                ErrorCategory::Upstream
            }
            Error::TableNotFound { .. }
            | Error::SourceNotFound { .. }
            | Error::Unknown { .. }
            | Error::SourceTableNotFound { .. } => ErrorCategory::NotFound,
            Error::Exists { .. } => ErrorCategory::AlreadyExists,
            Error::RunLockHeld { .. } | Error::TableInUse { .. } => ErrorCategory::AlreadyExists,
            Error::RunStopped { .. } => ErrorCategory::Internal,
            Error::Catalog(_) | Error::Io { .. } | Error::Internal(_) => ErrorCategory::Internal,
            Error::StorageFull { .. } => ErrorCategory::Internal,
            Error::DataFusion(e) => datafusion_category(e),
            Error::Context { category, .. } | Error::Connector { category, .. } => *category,
        }
    }

    /// Re-words the error with `f` (which sees the original) and keeps its category, so a
    /// front end still maps it to the same exit code or SQLSTATE, and the original as its
    /// source, so what it was stays known ([`Error::kind`]).
    pub fn context(self, f: impl FnOnce(&Error) -> String) -> Error {
        Error::Context {
            category: self.category(),
            message: f(&self),
            source: Box::new(self),
        }
    }

    /// The error under any re-wording by [`Error::context`]: what to match on.
    pub fn kind(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.kind(),
            e => e,
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Whether the error comes from writing to a closed pipe (`hakiri query ... | head`),
    /// found in the error's chain of sources, not its text.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::DataFusion(df) => return df_broken_pipe(df),
            Error::Io { source, .. } => return source.kind() == std::io::ErrorKind::BrokenPipe,
            Error::Context { source, .. } => return source.is_broken_pipe(),
            _ => {}
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return true;
            }
            if let Some(df) = e.downcast_ref::<DataFusionError>() {
                match df.find_root() {
                    DataFusionError::IoError(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                        return true;
                    }
                    DataFusionError::External(inner) => {
                        cur = Some(inner.as_ref());
                        continue;
                    }
                    _ => {}
                }
            }
            cur = e.source();
        }
        false
    }

    /// Whether the error is a full disk (ENOSPC, SQLite's "database or disk is full"),
    /// found through the error's kind and its sources, not its text.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::StorageFull { .. } => true,
            Error::Io { source, .. } => io_storage_full(source),
            Error::Catalog(e) => sqlite_full(e),
            Error::DataFusion(e) => find_hakiri_error(e).is_some_and(Error::is_storage_full),
            Error::Context { source, .. } => source.is_storage_full(),
            _ => false,
        }
    }
}

fn unknown_message(kind: Thing, name: &str, known: &[String]) -> String {
    match kind {
        Thing::StateTable => format!(
            "no state table 'hakiri.{name}': the state tables are {}",
            known
                .iter()
                .map(|t| format!("hakiri.{t}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Thing::Source | Thing::Pipeline if !known.is_empty() => {
            format!(
                "no {kind} named '{name}': the {kind}s are {}",
                known.join(", ")
            )
        }
        Thing::Source => format!(
            "no source named '{name}': the sources are none yet (declare one in hakiri.toml or with CREATE SOURCE)"
        ),
        Thing::Pipeline => format!(
            "no pipeline named '{name}': this project has no pipelines yet; declare one in hakiri.toml or with CREATE PIPELINE"
        ),
    }
}

/// Whether a DataFusion error is, or wraps, writing to a closed pipe.
fn df_broken_pipe(e: &DataFusionError) -> bool {
    let pipe = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    match e {
        DataFusionError::IoError(io) => pipe(io),
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            datafusion::arrow::error::ArrowError::IoError(_, io) => pipe(io),
            datafusion::arrow::error::ArrowError::ExternalError(inner) => {
                inner.downcast_ref::<std::io::Error>().is_some_and(pipe)
            }
            _ => false,
        },
        DataFusionError::External(inner) => {
            inner.downcast_ref::<std::io::Error>().is_some_and(pipe)
                || inner
                    .downcast_ref::<Error>()
                    .is_some_and(Error::is_broken_pipe)
        }
        DataFusionError::Context(_, inner) => df_broken_pipe(inner),
        DataFusionError::Shared(inner) => df_broken_pipe(inner),
        _ => false,
    }
}

/// Whether an I/O error is ENOSPC.
pub fn io_storage_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

fn sqlite_full(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
}

fn display_catalog(e: &rusqlite::Error) -> String {
    if sqlite_full(e) {
        format!(
            "catalog error: {e}: the disk holding .hakiri/catalog.db is full; free some space and run again (the catalog is intact: SQLite rolled the transaction back)"
        )
    } else if matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::SystemIoFailure)
    ) {
        // SQLite reports a full disk this way when it cannot grow its WAL index (-shm).
        format!(
            "catalog error: {e}: the disk holding .hakiri/catalog.db may be full or failing; check its free space (df) and run again (SQLite rolled the transaction back)"
        )
    } else {
        format!("catalog error: {e} (this is a bug or a damaged .hakiri/catalog.db)")
    }
}

/// Classifies a DataFusion error, looking through `External` for a Hakiri error first.
fn datafusion_category(e: &DataFusionError) -> ErrorCategory {
    if let Some(inner) = find_hakiri_error(e) {
        return inner.category();
    }
    match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            ErrorCategory::InvalidInput
        }
        DataFusionError::NotImplemented(_) => ErrorCategory::Unsupported,
        DataFusionError::Configuration(_) => ErrorCategory::InvalidInput,
        _ => ErrorCategory::Internal,
    }
}

/// Finds a Hakiri [`Error`] carried inside a DataFusion error chain, if any.
pub fn find_hakiri_error(e: &DataFusionError) -> Option<&Error> {
    let mut cur: &DataFusionError = e;
    loop {
        match cur {
            DataFusionError::External(b) => return b.downcast_ref::<Error>(),
            DataFusionError::Context(_, inner) => cur = inner,
            DataFusionError::Shared(inner) => cur = inner,
            _ => return None,
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Error::DataFusion(Box::new(DataFusionError::ArrowError(Box::new(e), None)))
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(inner) => *inner,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

/// Renders a DataFusion error without the "External error:" wrapping around Hakiri errors.
fn display_datafusion(e: &DataFusionError) -> String {
    match find_hakiri_error(e) {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed pipe is found however it is wrapped, and nothing else counts as one.
    #[test]
    fn broken_pipes_are_found_in_the_chain() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(Error::io("stdout", pipe()).is_broken_pipe());
        assert!(Error::from(DataFusionError::IoError(pipe())).is_broken_pipe());
        let arrow = datafusion::arrow::error::ArrowError::IoError("write".into(), pipe());
        assert!(Error::from(arrow).is_broken_pipe());
        let wrapped = DataFusionError::Context(
            "writing".into(),
            Box::new(DataFusionError::External(Box::new(pipe()))),
        );
        assert!(Error::from(wrapped).is_broken_pipe());
        assert!(!Error::io("x", std::io::Error::other("Broken pipe")).is_broken_pipe());
        assert!(!Error::InvalidInput("Broken pipe".into()).is_broken_pipe());
    }

    #[test]
    fn context_keeps_the_category() {
        let e = Error::Unsupported("merge".into()).context(|e| format!("run failed: {e}"));
        assert_eq!(e.category(), ErrorCategory::Unsupported);
        assert_eq!(e.to_string(), "run failed: merge");
        let io =
            Error::io("/x", std::io::Error::other("disk full")).context(|e| format!("run: {e}"));
        assert_eq!(io.category(), ErrorCategory::Internal);
        assert!(!io.to_string().contains("bug"), "{io}");
    }

    /// Wrapping keeps the error it wraps: its variant (what callers match on), its
    /// sources (a broken pipe, a full disk) and the chain `std::error::Error` walks.
    #[test]
    fn context_keeps_the_source() {
        let held = Error::RunLockHeld {
            pipeline: "p".into(),
            run_id: "r".into(),
            holder: "process 1 on host 'h'".into(),
            started_at: "t".into(),
            heartbeat_at: "t".into(),
        };
        let e = held
            .context(|e| format!("a: {e}"))
            .context(|e| format!("b: {e}"));
        assert!(matches!(e.kind(), Error::RunLockHeld { pipeline, .. } if pipeline == "p"));
        assert!(
            e.to_string()
                .starts_with("b: a: pipeline 'p' is already running")
        );
        let inner = std::error::Error::source(&e).expect("a source");
        assert!(inner.to_string().starts_with("a: "), "{inner}");
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(
            Error::io("stdout", pipe)
                .context(|e| format!("printing: {e}"))
                .is_broken_pipe()
        );
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(
            Error::io("/d", full)
                .context(|e| format!("writing: {e}"))
                .is_storage_full()
        );
        let http = Error::Http {
            url: "http://127.0.0.1:1/x".into(),
            status: Some(503),
            message: "GET http://127.0.0.1:1/x failed after 3 attempts".into(),
            source: None,
        };
        let e = http.context(|e| format!("page 2: {e}"));
        assert_eq!(e.category(), ErrorCategory::Upstream);
        assert!(matches!(
            e.kind(),
            Error::Http {
                status: Some(503),
                ..
            }
        ));
    }

    /// Lookups of named things say what exists and how to go on, in one place for every
    /// caller (CREATE twice, DROP or RUN of a missing name, a missing state table).
    #[test]
    fn named_things_say_what_exists() {
        let exists = Error::Exists {
            kind: Thing::Pipeline,
            name: "p".into(),
        };
        assert_eq!(exists.category(), ErrorCategory::AlreadyExists);
        assert_eq!(
            exists.to_string(),
            "pipeline 'p' exists: use CREATE OR REPLACE PIPELINE to change it"
        );
        let unknown = |kind, known: &[&str]| Error::Unknown {
            kind,
            name: "x".into(),
            known: known.iter().map(|s| s.to_string()).collect(),
        };
        let e = unknown(Thing::Source, &["a", "b"]);
        assert_eq!(e.category(), ErrorCategory::NotFound);
        assert_eq!(e.to_string(), "no source named 'x': the sources are a, b");
        assert!(
            unknown(Thing::Pipeline, &[])
                .to_string()
                .ends_with("declare one in hakiri.toml or with CREATE PIPELINE")
        );
        assert_eq!(
            unknown(Thing::StateTable, &["runs", "cursors"]).to_string(),
            "no state table 'hakiri.x': the state tables are hakiri.runs, hakiri.cursors"
        );
    }
}
