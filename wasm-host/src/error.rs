//! The sandbox's errors, as kinds. Each becomes a [`hakiri_core::error::Error::Connector`]
//! with its category, kept as the source so callers can downcast to the kind.

use hakiri_core::error::{Error, ErrorCategory};

/// A limit a call can run into, with the source option that raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Fuel,
    Deadline,
    Memory,
}

impl Limit {
    pub fn option(self) -> &'static str {
        match self {
            Limit::Fuel => "fuel",
            Limit::Deadline => "timeout",
            Limit::Memory => "memory",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Limit::Fuel => "its fuel (the operation budget)",
            Limit::Deadline => "its time (the wall-clock deadline)",
            Limit::Memory => "its memory (the memory cap)",
        }
    }
}

/// What a guest's `error` variant said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    InvalidConfig,
    Auth,
    RateLimited,
    Transient,
    Fatal,
    CapabilityDenied,
}

impl std::fmt::Display for GuestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GuestKind::InvalidConfig => "invalid config",
            GuestKind::Auth => "authentication failed",
            GuestKind::RateLimited => "rate limited",
            GuestKind::Transient => "a transient failure",
            GuestKind::Fatal => "a fatal failure",
            GuestKind::CapabilityDenied => "capability denied",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("cannot read the connector component {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component (`what` says what it is instead).
    #[error(
        "{path} is not a WebAssembly component: {what}. A Hakiri connector is a component of world hakiri:connector/connector@{}, built from wit/connector.wit",
        crate::WIT_VERSION
    )]
    NotAComponent { path: String, what: String },
    /// A component that does not export the connector interface.
    #[error(
        "{path} is a component of another world: it exports {exports}, not hakiri:connector/source@{}. Build it against wit/connector.wit",
        crate::WIT_VERSION
    )]
    WrongWorld { path: String, exports: String },
    /// A connector built against another version of the contract.
    #[error(
        "{path} is a connector for hakiri:connector@{found}, and this Hakiri speaks hakiri:connector@{}: rebuild it against this release's wit/connector.wit",
        crate::WIT_VERSION
    )]
    WrongVersion { path: String, found: String },
    #[error("cannot load the connector component {path}: {message}")]
    Compile { path: String, message: String },
    /// The component needs a capability the source does not grant, or asked for one at run
    /// time.
    #[error(
        "capability denied: source '{source_name}' (connector '{connector}') {asked} {what} '{name}', which is not granted: add it to the source's option '{option}' (for example '{option}' '{name}') if it should be"
    )]
    CapabilityDenied {
        source_name: String,
        connector: String,
        /// `needs` (declared in its spec) or `tried to reach` (at run time).
        asked: &'static str,
        /// `host` or `environment variable`.
        what: &'static str,
        name: String,
        option: &'static str,
    },
    /// A call ran into a limit and was stopped; the host and the next call are unaffected.
    #[error(
        "source '{source_name}': the connector's {call} call ran out of {} ({value}) and was stopped: raise the source's option '{}' if the connector needs more",
        limit.what(), limit.option()
    )]
    Limit {
        source_name: String,
        call: &'static str,
        limit: Limit,
        value: String,
    },
    /// The guest trapped (a panic, an unreachable, a stack overflow).
    #[error("source '{source_name}': the connector's {call} call crashed: {message}")]
    Trap {
        source_name: String,
        call: &'static str,
        message: String,
    },
    /// The guest returned its `error` variant.
    #[error("source '{source_name}': the connector's {call} call failed with {kind}: {message}")]
    Guest {
        source_name: String,
        call: &'static str,
        kind: GuestKind,
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// A page the guest returned does not decode into the table's schema.
    #[error(
        "source '{source_name}', table '{table}': a page the connector returned is malformed: {message}"
    )]
    Page {
        source_name: String,
        table: String,
        message: String,
    },
    /// A source option of the host (`component`, limits, grants) is wrong.
    #[error("source '{source_name}': {message}")]
    Option {
        source_name: String,
        message: String,
    },
    #[error("the WASM host failed: {0}. This is a bug in Hakiri; please report it")]
    Internal(String),
}

impl WasmError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            WasmError::Read { .. }
            | WasmError::NotAComponent { .. }
            | WasmError::WrongWorld { .. }
            | WasmError::WrongVersion { .. }
            | WasmError::Compile { .. }
            | WasmError::CapabilityDenied { .. }
            | WasmError::Option { .. } => ErrorCategory::Config,
            WasmError::Guest {
                kind: GuestKind::InvalidConfig,
                ..
            } => ErrorCategory::InvalidInput,
            WasmError::Guest {
                kind: GuestKind::CapabilityDenied,
                ..
            } => ErrorCategory::Config,
            WasmError::Limit { .. }
            | WasmError::Trap { .. }
            | WasmError::Guest { .. }
            | WasmError::Page { .. } => ErrorCategory::Upstream,
            WasmError::Internal(_) => ErrorCategory::Internal,
        }
    }
}

impl From<WasmError> for Error {
    fn from(e: WasmError) -> Self {
        Error::Connector {
            category: e.category(),
            source: Box::new(e),
        }
    }
}

pub type Result<T, E = WasmError> = std::result::Result<T, E>;
