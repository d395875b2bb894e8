//! Hakiri's engine: core types, ports, the SQL extension, the runtime, the SQLite catalog
//! and the context store. It depends on DataFusion and nothing of Hakiri's.

pub mod catalog;
pub mod engine;
pub mod error;
pub mod ports;
pub mod sources;
pub mod sql;
pub mod store;
pub mod types;

pub use engine::{
    ChangeSet, Engine, EngineOptions, Output, PlanReport, Recovery, RunProgress, RunSummary,
};
pub use error::{Error, ErrorCategory, Result};
