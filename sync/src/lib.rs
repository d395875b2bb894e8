//! `hakiri sync`: a project's context store shared through an S3-compatible bucket (or a
//! folder) as Delta Lake tables that Spark, Trino, DuckDB and Athena read as they are,
//! with the project's state beside them and a single-writer lease per pipeline.
//!
//! Its own crate because it is its own boundary: the object store and `deltalake` (with
//! its kernel) stay out of the engine, which only sees the run guard ([`Leases`]).
//!
//! A push uploads the committed files the remote lacks (names are unique, nothing is
//! overwritten), commits each changed table to its Delta table, then writes the next
//! `state/<version>.json` only if absent: the state names exactly the files the Delta
//! commits hold. A pull downloads the files of the remote's state, then replaces the
//! catalog's state in one transaction. Both can be killed at any moment: the remote stays
//! a set of valid Delta tables and states, the local project is as before or after.

pub mod delta;
mod error;
pub mod lease;
mod local;
mod project;
pub mod remote;
mod source;
pub mod state;
mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use hakiri_catalog::FileEntry;
use hakiri_core::types::SyncSpec;
use hakiri_engine::Engine;

pub use error::SyncError;
pub use lease::{Lease, Take};
pub use project::Holder;
pub use remote::Remote;
pub use source::DeltaSource;

use crate::error::Result;
use crate::project::{Base, ProjectDir};
use crate::state::{Changes, State, merge};

fn state_key(version: u64) -> String {
    format!("state/{version:020}.json")
}

/// The newest state in `remote` (version 0, empty, when there is none).
async fn latest(remote: &Remote) -> Result<(u64, State)> {
    let mut newest: Option<(u64, String)> = None;
    for meta in remote.list("state").await? {
        let rel = remote.relative(&meta.location);
        let v = rel
            .strip_prefix("state/")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(v) = v
            && newest.as_ref().is_none_or(|(n, _)| v > *n)
        {
            newest = Some((v, rel));
        }
    }
    let Some((v, rel)) = newest else {
        return Ok((0, State::default()));
    };
    let (bytes, _) = remote.get(&rel).await?.ok_or_else(|| SyncError::State {
        key: rel.clone(),
        message: "vanished while reading it".into(),
    })?;
    Ok((v, State::parse(&rel, &bytes)?))
}

/// Progress lines for long work (uploads, downloads).
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// The sync side of an open project.
pub struct Syncer<'a> {
    engine: &'a Engine,
    pub remote: Remote,
    dir: ProjectDir,
    pub me: Holder,
    ttl: Duration,
}

/// What a push did.
#[derive(Debug, Default)]
pub struct PushReport {
    /// The state version written; `None` when there was nothing to push.
    pub version: Option<u64>,
    pub tables: Vec<(String, delta::Published)>,
    pub uploaded_files: usize,
    pub uploaded_bytes: u64,
    pub elapsed: Duration,
}

/// What a pull did.
#[derive(Debug, Default)]
pub struct PullReport {
    /// The remote state version the project now has; `None`: nothing to pull.
    pub version: Option<u64>,
    pub pushed_by: Option<String>,
    /// The project had the remote's tables and cursors already.
    pub up_to_date: bool,
    pub downloaded_files: usize,
    pub downloaded_bytes: u64,
    pub tables: Vec<String>,
    pub elapsed: Duration,
}

/// What `gc` did (or would do, with `dry_run`).
#[derive(Debug, Default)]
pub struct GcReport {
    /// Tables committed back to the newest state, with the files added and removed.
    pub repaired: Vec<(String, usize, usize)>,
    /// Objects deleted.
    pub removed: Vec<String>,
}

/// One table in `hakiri sync status`.
#[derive(Debug)]
pub struct TableStatus {
    pub table: String,
    /// Files here the remote state lacks, and the reverse.
    pub ahead_files: usize,
    pub behind_files: usize,
    pub local_changed: bool,
    pub remote_changed: bool,
}

#[derive(Debug)]
pub struct StatusReport {
    pub url: String,
    pub remote_version: u64,
    pub pushed_by: Option<String>,
    pub base_version: Option<u64>,
    pub tables: Vec<TableStatus>,
    pub pipelines: Vec<(String, Option<Lease>)>,
}

/// Where a project's sync options are written, for messages.
const SECTION: &str = "[sync]";

/// The TTL `[sync] lease_ttl` gives (default 15 minutes).
pub fn lease_ttl(spec: &SyncSpec) -> Result<Duration> {
    match &spec.lease_ttl {
        None => Ok(lease::DEFAULT_TTL),
        Some(t) => humantime::parse_duration(t)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                SyncError::Config {
                    section: SECTION.into(),
                    option: "lease_ttl",
                    message: format!("'{t}' is not a duration: write e.g. \"15 minutes\""),
                }
                .into()
            }),
    }
}

impl<'a> Syncer<'a> {
    /// The sync of `engine`'s project with `[sync]` `spec`; nothing is contacted yet.
    pub fn new(engine: &'a Engine, spec: Option<&SyncSpec>, project: &str) -> Result<Self> {
        let spec = spec.ok_or(SyncError::NotConfigured)?;
        let dir = ProjectDir::new(engine.root())?;
        Ok(Syncer {
            engine,
            remote: Remote::open(spec, SECTION)?,
            me: dir.holder(project, engine.root())?,
            dir,
            ttl: lease_ttl(spec)?,
        })
    }

    /// The newest state in the remote (version 0, empty, when there is none).
    pub async fn latest(&self) -> Result<(u64, State)> {
        latest(&self.remote).await
    }

    /// The pipelines that write `tables` (a change to a table needs their leases).
    fn writers_of(&self, state: &State, tables: &BTreeSet<String>) -> BTreeSet<String> {
        state
            .pipeline_defs
            .iter()
            .filter(|r| {
                r.get("target_table")
                    .and_then(|v| v.as_str())
                    .is_some_and(|t| tables.contains(t))
            })
            .filter_map(|r| r.get("name").and_then(|v| v.as_str()).map(str::to_string))
            .collect()
    }

    /// Pushes what changed here since the last sync.
    ///
    /// # Errors
    /// `LeaseHeld` when a pipeline that changed is another project's; `Conflict` when the
    /// remote changed the same table or pipeline; remote failures with what to fix.
    pub async fn push(&self, progress: Progress<'_>) -> Result<PushReport> {
        let started = Instant::now();
        self.remote.check().await?;
        let base = self.dir.base()?.unwrap_or_default();
        let catalog = self.engine.catalog();
        let mut report = PushReport::default();
        for _attempt in 0..5 {
            let local = State::of_catalog(catalog.as_ref())?;
            let (remote_version, remote) = self.latest().await?;
            let by = remote
                .pushed_by
                .as_ref()
                .map_or("nobody".to_string(), |h| h.to_string());
            let mut merged = merge(&base.local, &local, &remote, &by)?;
            let mine = Changes::between(&base.local, &local.fingerprint());
            let mut need: BTreeSet<String> = mine.pipelines.clone();
            need.extend(self.writers_of(&local, &mine.tables));
            for p in &need {
                lease::acquire(&self.remote, p, &self.me, self.ttl, Take::Free).await?;
            }
            if remote_version > 0 && merged.fingerprint() == remote.fingerprint() {
                self.dir.set_base(&Base {
                    remote_version,
                    local: local.fingerprint(),
                })?;
                report.elapsed = started.elapsed();
                return Ok(report);
            }
            for t in &mine.tables {
                let Some(ts) = merged.tables.get_mut(t) else {
                    continue;
                };
                // The files of the state read above, so the Delta commit and the state
                // name the same ones even if a run commits meanwhile.
                let files = local
                    .tables
                    .get(t)
                    .map(|l| l.file_entries())
                    .unwrap_or_default();
                let (uploaded, bytes) = transfer::upload(
                    &self.remote,
                    self.engine.store().root(),
                    t,
                    &files,
                    progress,
                )
                .await?;
                report.uploaded_files += uploaded;
                report.uploaded_bytes += bytes;
                let schema = self.engine.store().table_schema(&files)?;
                let data = transfer::data_files(self.engine.store().root(), &files)?;
                match delta::publish(&self.remote, t, schema.as_ref(), &data).await? {
                    Some(p) => {
                        ts.delta_version = Some(p.version);
                        report.tables.push((t.clone(), p));
                    }
                    None => ts.delta_version = delta::active_files(&self.remote, t).await?.0,
                }
            }
            let version = remote_version + 1;
            merged.version = version;
            merged.pushed_by = Some(self.me.clone());
            merged.pushed_at = Some(Utc::now());
            let body = serde_json::to_vec(&merged).expect("a state serializes");
            if self.remote.create(&state_key(version), body).await? {
                self.dir.set_base(&Base {
                    remote_version: version,
                    local: local.fingerprint(),
                })?;
                report.version = Some(version);
                report.elapsed = started.elapsed();
                return Ok(report);
            }
            progress(&format!(
                "another project pushed state {version} first: merging with it"
            ));
        }
        Err(
            SyncError::Lease("other projects kept pushing while this push ran: try again".into())
                .into(),
        )
    }

    /// Makes the remote's newest state this project's.
    ///
    /// # Errors
    /// `LocalAhead` when this project has commits it never pushed (unless
    /// `discard_local`).
    pub async fn pull(&self, discard_local: bool, progress: Progress<'_>) -> Result<PullReport> {
        let started = Instant::now();
        self.remote.check().await?;
        let catalog = self.engine.catalog();
        let (version, remote) = self.latest().await?;
        let mut report = PullReport::default();
        if version == 0 {
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        let base = self.dir.base()?.unwrap_or_default();
        let local = State::of_catalog(catalog.as_ref())?;
        if local.fingerprint() == remote.fingerprint() {
            // A pull (or push) that committed and was stopped before it noted the base.
            self.dir.set_base(&Base {
                remote_version: version,
                local: local.fingerprint(),
            })?;
            report.version = Some(version);
            report.up_to_date = true;
            report.pushed_by = remote.pushed_by.map(|h| h.to_string());
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        let (lf, rf) = (local.fingerprint(), remote.fingerprint());
        let mut mine = Changes::between(&base.local, &lf);
        // What changed here and the remote has as well (a push stopped before it noted
        // its base) is not ahead.
        mine.tables.retain(|t| lf.tables.get(t) != rf.tables.get(t));
        mine.pipelines
            .retain(|p| lf.pipelines.get(p) != rf.pipelines.get(p));
        if !mine.is_empty() && !discard_local {
            return Err(SyncError::LocalAhead {
                what: mine.describe(),
            }
            .into());
        }
        // The remote's tables and pipelines; history and definitions of both.
        let new = state::adopt(&remote, &local);
        let theirs = Changes::between(&local.fingerprint(), &remote.fingerprint());
        let wanted: Vec<FileEntry> = remote
            .tables
            .values()
            .flat_map(state::TableState::file_entries)
            .collect();
        let (to_place, files, bytes) = transfer::download(
            &self.remote,
            self.engine.store().root(),
            &self.dir.incoming(),
            &wanted,
            progress,
        )
        .await?;
        // A run that committed while the files came down would be lost: refuse instead.
        if State::of_catalog(catalog.as_ref())?.fingerprint() != lf {
            return Err(SyncError::Lease(
                "a run committed in this project while the pull downloaded: push it first, or pull again".into(),
            )
            .into());
        }
        let retired = state::retired_rows(catalog.as_ref(), &new, Utc::now())?;
        let raw = new.to_raw(retired)?;
        transfer::place(&to_place)?;
        catalog.replace_state(&raw)?;
        self.dir.clear_incoming();
        self.dir.set_base(&Base {
            remote_version: version,
            local: State::of_catalog(catalog.as_ref())?.fingerprint(),
        })?;
        report.version = Some(version);
        report.pushed_by = remote.pushed_by.map(|h| h.to_string());
        report.downloaded_files = files;
        report.downloaded_bytes = bytes;
        report.tables = theirs.tables.into_iter().collect();
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Per table, what is here and not in the remote and the reverse; per pipeline, its
    /// lease.
    pub async fn status(&self) -> Result<StatusReport> {
        self.remote.check().await?;
        let (version, remote) = self.latest().await?;
        let base = self.dir.base()?;
        let base_fp = base.as_ref().map(|b| b.local.clone()).unwrap_or_default();
        let local = State::of_catalog(self.engine.catalog().as_ref())?;
        let (lf, rf) = (local.fingerprint(), remote.fingerprint());
        let names: BTreeSet<&String> = lf.tables.keys().chain(rf.tables.keys()).collect();
        let empty = (BTreeSet::new(), 0);
        let tables = names
            .into_iter()
            .map(|t| {
                let l = lf.tables.get(t).unwrap_or(&empty);
                let r = rf.tables.get(t).unwrap_or(&empty);
                TableStatus {
                    table: t.clone(),
                    ahead_files: l.0.difference(&r.0).count(),
                    behind_files: r.0.difference(&l.0).count(),
                    local_changed: base_fp.tables.get(t) != lf.tables.get(t),
                    remote_changed: base_fp.tables.get(t) != rf.tables.get(t),
                }
            })
            .collect();
        let leases: BTreeMap<String, Lease> = lease::list(&self.remote)
            .await?
            .into_iter()
            .map(|l| (l.pipeline.clone(), l))
            .collect();
        let mut pipelines: BTreeSet<String> = self
            .engine
            .pipelines()
            .into_iter()
            .map(|p| p.name)
            .collect();
        pipelines.extend(leases.keys().cloned());
        Ok(StatusReport {
            url: self.remote.url.clone(),
            remote_version: version,
            pushed_by: remote.pushed_by.map(|h| h.to_string()),
            base_version: base.map(|b| b.remote_version),
            tables,
            pipelines: pipelines
                .into_iter()
                .map(|p| {
                    let l = leases.get(&p).cloned();
                    (p, l)
                })
                .collect(),
        })
    }

    pub async fn acquire(&self, pipeline: &str, take: Take) -> Result<Lease> {
        self.engine.pipeline(pipeline)?;
        lease::acquire(&self.remote, pipeline, &self.me, self.ttl, take).await
    }

    pub async fn release(&self, pipeline: &str) -> Result<Lease> {
        lease::release(&self.remote, pipeline, &self.me).await
    }

    pub async fn leases(&self) -> Result<Vec<Lease>> {
        lease::list(&self.remote).await
    }

    /// Delta tables whose files differ from the newest state's, committed back to the
    /// state's files (a push stopped between its Delta commit and its state, and not run
    /// again, leaves its table ahead of every state). A table whose last commit is younger
    /// than `grace`, or whose writer's lease another project holds, may be a push in
    /// progress: it is left alone. Returns each table with the files added and removed.
    async fn repair(
        &self,
        state: &State,
        dry_run: bool,
        cutoff: chrono::DateTime<Utc>,
    ) -> Result<Vec<(String, usize, usize)>> {
        let mut repaired = Vec::new();
        for (t, ts) in &state.tables {
            let (Some(_), active) = delta::active_files(&self.remote, t).await? else {
                continue;
            };
            let files: Vec<delta::DataFile> = ts
                .file_entries()
                .into_iter()
                .map(|f| delta::DataFile {
                    name: f.path.rsplit('/').next().unwrap_or(&f.path).to_string(),
                    size: f.bytes,
                    rows: f.rows,
                    modified_ms: 0,
                })
                .collect();
            let wanted: BTreeSet<String> = files.iter().map(|f| f.name.clone()).collect();
            if active == wanted {
                continue;
            }
            let log = self.remote.list(&format!("tables/{t}/_delta_log")).await?;
            if log.iter().any(|m| m.last_modified > cutoff) {
                continue;
            }
            let mut busy = false;
            for p in self.writers_of(state, &BTreeSet::from([t.clone()])) {
                if let Some((l, _)) = lease::read(&self.remote, &p).await? {
                    busy |= !l.is_free(Utc::now()) && l.holder.id != self.me.id;
                }
            }
            if busy {
                continue;
            }
            if !dry_run {
                delta::publish(&self.remote, t, None, &files).await?;
            }
            repaired.push((
                t.clone(),
                wanted.difference(&active).count(),
                active.difference(&wanted).count(),
            ));
        }
        Ok(repaired)
    }

    /// Objects in the remote's tables that no Delta log ever added and no state names
    /// (uploaded by a push killed before its commit), older than `grace` (a push running
    /// now may not have committed yet): deleted unless `dry_run`. Files that older Delta
    /// versions hold stay, so readers of those versions keep working.
    ///
    /// First, Delta tables a stopped push left ahead of the newest state are committed back
    /// to it (see [`Syncer::repair`]).
    pub async fn gc(&self, dry_run: bool, grace: Duration) -> Result<GcReport> {
        self.remote.check().await?;
        let (_, remote) = self.latest().await?;
        let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
        let repaired = self.repair(&remote, dry_run, cutoff).await?;
        let mut named: BTreeSet<String> = remote
            .tables
            .values()
            .flat_map(|ts| ts.paths())
            .map(|p| format!("tables/{p}"))
            .collect();
        for t in self.remote.folders("tables").await? {
            let held = delta::referenced_files(&self.remote, &t).await?;
            named.extend(held.into_iter().map(|f| format!("tables/{t}/{f}")));
        }
        let mut removed = Vec::new();
        for meta in self.remote.list("tables").await? {
            let rel = self.remote.relative(&meta.location);
            if rel.contains("/_delta_log/")
                || !rel.ends_with(".parquet")
                || named.contains(&rel)
                || meta.last_modified > cutoff
            {
                continue;
            }
            if !dry_run {
                use object_store::ObjectStoreExt;
                self.remote
                    .store
                    .delete(&meta.location)
                    .await
                    .map_err(|e| self.remote.fail(format!("deleting {rel}"), e))?;
            }
            removed.push(rel);
        }
        Ok(GcReport { repaired, removed })
    }
}

/// The run guard the engine calls before each run of a synced project: the run needs the
/// pipeline's lease (acquired when free, renewed when held). The remote is opened at the
/// first run, so commands that run nothing (queries) need no credentials.
#[derive(Debug)]
pub struct Leases {
    root: std::path::PathBuf,
    spec: SyncSpec,
    project: String,
    opened: tokio::sync::OnceCell<(Remote, Holder, Duration)>,
}

impl Leases {
    pub fn new(root: &std::path::Path, spec: &SyncSpec, project: &str) -> Self {
        Leases {
            root: root.to_path_buf(),
            spec: spec.clone(),
            project: project.to_string(),
            opened: tokio::sync::OnceCell::new(),
        }
    }

    async fn open(&self) -> Result<&(Remote, Holder, Duration)> {
        self.opened
            .get_or_try_init(|| async {
                let dir = ProjectDir::new(&self.root)?;
                Ok((
                    Remote::open(&self.spec, SECTION)?,
                    dir.holder(&self.project, &self.root)?,
                    lease_ttl(&self.spec)?,
                ))
            })
            .await
    }
}

impl Leases {
    /// Renews every lease this project holds (not released, not lapsed), so a pipeline
    /// scheduled less often than the TTL keeps its lease while `serve` runs. Returns the
    /// pipelines renewed.
    pub async fn renew_held(&self) -> Result<Vec<String>> {
        let (remote, me, ttl) = self.open().await?;
        let now = Utc::now();
        let mut renewed = Vec::new();
        for l in lease::list(remote).await? {
            if l.holder.id == me.id && !l.is_free(now) {
                // One lease taken over (--steal) does not stop the others' renewal.
                match lease::acquire(remote, &l.pipeline, me, *ttl, Take::Free).await {
                    Ok(_) => renewed.push(l.pipeline),
                    Err(e) => eprintln!("warning: renewing the lease of '{}': {e}", l.pipeline),
                }
            }
        }
        Ok(renewed)
    }

    /// How often `serve` renews: a third of the TTL, so two renewals can fail in a row.
    pub fn renew_every(&self) -> Duration {
        lease_ttl(&self.spec).unwrap_or(lease::DEFAULT_TTL) / 3
    }
}

#[async_trait::async_trait]
impl hakiri_engine::ports::RunGuard for Leases {
    async fn before_run(&self, pipeline: &str) -> hakiri_core::Result<()> {
        let (remote, me, ttl) = self.open().await?;
        lease::acquire(remote, pipeline, me, *ttl, Take::Free).await?;
        // A run from a cursor older than the remote's would load rows again: after a
        // hand-off, the new holder pulls first.
        let (version, state) = latest(remote).await?;
        let base = ProjectDir::new(&self.root)?.base()?.unwrap_or_default();
        let theirs = state.fingerprint().pipelines.remove(pipeline);
        if version > base.remote_version
            && theirs.is_some()
            && theirs != base.local.pipelines.get(pipeline).cloned()
        {
            return Err(SyncError::Behind {
                pipeline: pipeline.to_string(),
                version,
                pusher: state.pushed_by.map_or("?".into(), |h| h.to_string()),
            }
            .into());
        }
        Ok(())
    }
}
