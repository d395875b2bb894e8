//! Sync's errors, each saying what failed and what to do next; they reach the CLI as
//! `hakiri_core::Error::Connector` with their category.

use hakiri_core::ErrorCategory;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The project has no `[sync]` section.
    #[error(
        "this project has no [sync] section: add one to hakiri.toml, e.g.\n[sync]\nurl = \"s3://bucket/prefix\"\nendpoint = \"http://127.0.0.1:9000\"\naccess_key_id = \"env:AWS_ACCESS_KEY_ID\"\nsecret_access_key = \"env:AWS_SECRET_ACCESS_KEY\""
    )]
    NotConfigured,
    /// An option is wrong: `section` is where it is written (`[sync]`, or a `delta`
    /// source), `option` names the key.
    #[error("{section} {option}: {message}")]
    Config {
        section: String,
        option: &'static str,
        message: String,
    },
    /// The bucket or folder failed while `action`.
    #[error("the sync remote {url} failed while {action}: {message}")]
    Remote {
        url: String,
        action: String,
        message: String,
    },
    /// Another project holds the lease of `pipeline`.
    #[error(
        "pipeline '{pipeline}' is leased to {holder} until {expires_at}: only the lease holder may run or push it. To hand off, run 'hakiri sync lease release {pipeline}' in that project, then 'hakiri sync lease acquire {pipeline}' here; a lease past its TTL can be taken with 'hakiri sync lease acquire {pipeline} --steal'"
    )]
    LeaseHeld {
        pipeline: String,
        holder: String,
        expires_at: String,
    },
    /// A lease the command needs is not this project's.
    #[error("{0}")]
    Lease(String),
    /// Local and remote both changed the same table or pipeline since the last sync.
    #[error(
        "{what} changed here and on the remote (pushed by {pusher}) since the last sync; the lease should prevent this. Keep the remote's with 'hakiri sync pull --discard-local', or remove the remote's change by hand"
    )]
    Conflict { what: String, pusher: String },
    /// The remote has a newer cursor of the pipeline than this project last synced.
    #[error(
        "pipeline '{pipeline}' moved on in the sync remote (state {version}, pushed by {pusher}) since this project last synced: run 'hakiri sync pull' first, so the run continues from the remote's cursor instead of loading rows again"
    )]
    Behind {
        pipeline: String,
        version: u64,
        pusher: String,
    },
    /// The pull would replace commits that were never pushed.
    #[error(
        "{what} has local commits that were never pushed: push them first ('hakiri sync push'), or drop them with 'hakiri sync pull --discard-local'"
    )]
    LocalAhead { what: String },
    /// A Delta table in the remote could not be read or committed.
    #[error("the Delta table {url} failed while {action}: {message}")]
    Delta {
        url: String,
        action: String,
        message: String,
    },
    /// The remote's state object is not one this build reads.
    #[error("the remote state {key} {message}")]
    State { key: String, message: String },
}

impl SyncError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            SyncError::NotConfigured | SyncError::Config { .. } => ErrorCategory::Config,
            SyncError::Remote { .. } | SyncError::Delta { .. } | SyncError::State { .. } => {
                ErrorCategory::Upstream
            }
            SyncError::LeaseHeld { .. }
            | SyncError::Lease(_)
            | SyncError::Conflict { .. }
            | SyncError::Behind { .. }
            | SyncError::LocalAhead { .. } => ErrorCategory::InvalidInput,
        }
    }
}

impl From<SyncError> for hakiri_core::Error {
    fn from(e: SyncError) -> Self {
        hakiri_core::Error::Connector {
            category: e.category(),
            source: Box::new(e),
        }
    }
}

pub type Result<T, E = hakiri_core::Error> = std::result::Result<T, E>;
