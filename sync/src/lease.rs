//! Single-writer leases: `leases/<pipeline>.json` in the remote, created with
//! `PutMode::Create` and changed only with `PutMode::Update` on the ETag read, so of two
//! projects acquiring at once exactly one wins. A lease lasts its TTL; runs, pushes and
//! `serve` renew it. Only the holder may run or push the pipeline.

use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::{PutMode, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SyncError};
use crate::project::Holder;
use crate::remote::Remote;

/// The default TTL of a lease.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub pipeline: String,
    pub holder: Holder,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Released by its holder: free for anyone.
    #[serde(default)]
    pub released: bool,
}

impl Lease {
    pub fn is_free(&self, now: DateTime<Utc>) -> bool {
        self.released || self.expires_at <= now
    }
}

/// What `acquire` may do with a lease another project holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Only a free (absent or released) lease, or one's own.
    Free,
    /// Also one past its TTL (`--steal`).
    Stale,
}

fn rel(pipeline: &str) -> String {
    format!("leases/{pipeline}.json")
}

/// The lease of `pipeline` and the version it was read at; `None` when there is none.
pub async fn read(remote: &Remote, pipeline: &str) -> Result<Option<(Lease, UpdateVersion)>> {
    let Some((bytes, meta)) = remote.get(&rel(pipeline)).await? else {
        return Ok(None);
    };
    let lease: Lease = serde_json::from_slice(&bytes).map_err(|e| SyncError::State {
        key: rel(pipeline),
        message: format!("is not a lease ({e}); delete it to free the pipeline"),
    })?;
    Ok(Some((
        lease,
        UpdateVersion {
            e_tag: meta.e_tag,
            version: meta.version,
        },
    )))
}

/// Every lease in the remote.
pub async fn list(remote: &Remote) -> Result<Vec<Lease>> {
    let mut out = Vec::new();
    for meta in remote.list("leases").await? {
        let rel = remote.relative(&meta.location);
        let Some(name) = rel
            .strip_prefix("leases/")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if let Some((lease, _)) = read(remote, name).await? {
            out.push(lease);
        }
    }
    Ok(out)
}

/// Writes `lease` as the new version of the object read at `current` (`None`: absent).
/// `false` when another project changed it in between.
async fn write(remote: &Remote, lease: &Lease, current: Option<UpdateVersion>) -> Result<bool> {
    let body = serde_json::to_vec_pretty(lease).expect("a lease serializes");
    let key = remote.key(&rel(&lease.pipeline));
    let mode = match current {
        None => PutMode::Create,
        Some(v) => PutMode::Update(v),
    };
    match remote
        .store
        .put_opts(&key, PutPayload::from(body), mode.into())
        .await
    {
        Ok(_) => Ok(true),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(false),
        Err(e) => Err(remote.fail(format!("writing the lease of '{}'", lease.pipeline), e)),
    }
}

fn held(lease: &Lease) -> SyncError {
    SyncError::LeaseHeld {
        pipeline: lease.pipeline.clone(),
        holder: lease.holder.to_string(),
        expires_at: lease
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// Acquires (or renews) the lease of `pipeline` for `me` until now + `ttl`.
///
/// # Errors
/// `LeaseHeld` naming the holder when another project holds it (and, with `Take::Free`,
/// also when its lease is past its TTL: taking it needs `--steal`).
pub async fn acquire(
    remote: &Remote,
    pipeline: &str,
    me: &Holder,
    ttl: Duration,
    take: Take,
) -> Result<Lease> {
    // A lost race re-reads: the winner's lease decides.
    for _ in 0..3 {
        let current = read(remote, pipeline).await?;
        let now = Utc::now();
        let acquired_at = match &current {
            Some((l, _)) if l.holder.id == me.id && !l.released => l.acquired_at,
            Some((l, _)) if l.released => now,
            Some((l, _)) if l.expires_at <= now && take == Take::Stale => now,
            Some((l, _)) => {
                let mut e = held(l);
                if l.expires_at <= now
                    && let SyncError::LeaseHeld { expires_at, .. } = &mut e
                {
                    expires_at.push_str(" (past its TTL: take it with --steal)");
                }
                return Err(e.into());
            }
            None => now,
        };
        let lease = Lease {
            pipeline: pipeline.to_string(),
            holder: me.clone(),
            acquired_at,
            expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            released: false,
        };
        if write(remote, &lease, current.map(|(_, v)| v)).await? {
            return Ok(lease);
        }
    }
    let winner = read(remote, pipeline).await?;
    Err(match winner {
        Some((l, _)) if l.holder.id != me.id => held(&l).into(),
        _ => SyncError::Lease(format!(
            "the lease of '{pipeline}' kept changing while acquiring it: try again"
        ))
        .into(),
    })
}

/// Releases `me`'s lease of `pipeline`, so another project can acquire it.
pub async fn release(remote: &Remote, pipeline: &str, me: &Holder) -> Result<Lease> {
    let Some((mut lease, version)) = read(remote, pipeline).await? else {
        return Err(SyncError::Lease(format!(
            "pipeline '{pipeline}' has no lease to release: nobody holds it"
        ))
        .into());
    };
    if lease.holder.id != me.id {
        return Err(SyncError::Lease(format!(
            "the lease of '{pipeline}' is held by {}, not by this project: only its holder can release it",
            lease.holder
        ))
        .into());
    }
    if lease.released {
        return Ok(lease);
    }
    lease.released = true;
    lease.expires_at = Utc::now();
    if !write(remote, &lease, Some(version)).await? {
        return Err(SyncError::Lease(format!(
            "the lease of '{pipeline}' changed while releasing it (taken over with --steal?): see 'hakiri sync lease status {pipeline}'"
        ))
        .into());
    }
    Ok(lease)
}
