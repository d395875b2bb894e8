//! Connector errors: Hakiri's engine error carries the category every front end maps from.

pub use hakiri_core::error::{Error, Result};

/// An upstream (remote system) failure with what failed, why, and what to do next.
pub fn upstream(what: impl std::fmt::Display) -> Error {
    Error::Upstream(what.to_string())
}
