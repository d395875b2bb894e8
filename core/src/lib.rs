//! Hakiri's core: the types every crate shares (specs, cursor kinds, write modes, runs),
//! the errors and their categories, the ports connectors implement (`Source`,
//! `RunContext`, `Clock`), the SQL extension's grammar and parser, schedule specs,
//! statement access, and JSON records to Arrow (shared by the `http` connector and the WASM
//! host's NDJSON pages). Connectors and the manifest reader depend on this crate only; the
//! runtime, the catalog and the context store are the engine's.

pub mod cursor;
pub mod error;
#[cfg(test)]
mod fuzz_cursor;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzzing;
pub mod json;
pub mod ports;
pub mod schedule;
pub mod sources;
pub mod sql;
pub mod types;

pub use error::{Error, ErrorCategory, Result};
