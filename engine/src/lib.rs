//! Hakiri's engine: core types, ports, the SQL extension, the runtime, the SQLite catalog
//! and the context store. It depends on DataFusion and nothing of Hakiri's.

pub mod catalog;
pub mod cursor;
pub mod engine;
pub mod error;
#[cfg(test)]
mod fuzz_cursor;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzzing;
pub mod ports;
pub mod rewind;
mod run;
pub mod schedule;
pub mod scheduler;
pub mod schema;
pub mod sources;
pub mod sql;
pub mod store;
pub mod types;

pub use engine::{
    ChangeSet, Engine, EngineOptions, Output, PlanReport, Recovery, RunProgress, RunSummary,
    StopLevel,
};
pub use error::{Error, ErrorCategory, Result};
pub use run::{LEASE, RETIRED_GRACE, holder_alive, this_holder};
