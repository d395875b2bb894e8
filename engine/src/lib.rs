//! Hakiri's engine: the session, statements, planning, the run loop and the scheduler, and
//! the context store. The shared types, errors, ports and the SQL grammar are
//! `hakiri-core`'s and the catalog is `hakiri-catalog`'s, re-exported here under the same
//! module names.

pub use hakiri_catalog as catalog;
pub mod alerts;
pub mod engine;
pub mod keys;
pub mod lineage;
pub mod maintain;
pub mod ports;
pub mod rewind;
mod run;
pub mod scheduler;
pub mod schema;
pub mod sources;
pub mod store;

#[cfg(any(test, feature = "fuzz"))]
pub use hakiri_core::fuzzing;
pub use hakiri_core::{cursor, error, schedule, sql, types};

pub use engine::{
    ChangeSet, Engine, EngineOptions, Output, PlanReport, Recovery, RunProgress, RunSummary,
    StopLevel,
};
pub use error::{Error, ErrorCategory, Result};
pub use run::{LEASE, RETIRED_GRACE, holder_alive, this_holder};
