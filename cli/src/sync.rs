//! `hakiri sync ...`: push, pull, status, leases and gc over the project's [sync] remote.

use std::path::Path;

use hakiri_sync::{Lease, Syncer, Take};

use crate::{Failure, LeaseCommand, SyncCommand};

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn lease_line(l: &Lease) -> String {
    let now = chrono::Utc::now();
    let how = if l.released {
        "released".to_string()
    } else if l.expires_at <= now {
        format!(
            "held by {} (past its TTL since {}: --steal takes it)",
            l.holder,
            l.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    } else {
        format!(
            "held by {} until {}",
            l.holder,
            l.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    };
    format!("{}\t{how}", l.pipeline)
}

pub async fn run(root: &Path, command: SyncCommand) -> Result<(), Failure> {
    let manifest = hakiri_manifests::load(root)?;
    let (engine, _) = crate::commands::open(root, true)?;
    let sync = Syncer::new(&engine, manifest.sync.as_ref(), &manifest.project)?;
    let progress = |line: &str| eprintln!("{line}");
    match command {
        SyncCommand::Push => {
            let r = sync.push(&progress).await?;
            match r.version {
                None => println!(
                    "nothing to push: {} has this project's state ({} ms)",
                    sync.remote.url,
                    r.elapsed.as_millis()
                ),
                Some(v) => {
                    for (t, p) in &r.tables {
                        println!(
                            "{t}: Delta version {} (+{} file(s), -{} file(s){})",
                            p.version,
                            p.added,
                            p.removed,
                            if p.schema_changed { ", schema" } else { "" }
                        );
                    }
                    println!(
                        "pushed state {v} to {}: {} file(s), {} uploaded in {:.1} s",
                        sync.remote.url,
                        r.uploaded_files,
                        mib(r.uploaded_bytes),
                        r.elapsed.as_secs_f64()
                    );
                }
            }
        }
        SyncCommand::Pull { discard_local } => {
            let r = sync.pull(discard_local, &progress).await?;
            match r.version {
                None => println!(
                    "nothing to pull: {} has no pushed state yet",
                    sync.remote.url
                ),
                Some(v) if r.up_to_date => println!(
                    "up to date: this project has state {v} of {} (pushed by {})",
                    sync.remote.url,
                    r.pushed_by.as_deref().unwrap_or("?")
                ),
                Some(v) => println!(
                    "pulled state {v} (pushed by {}) from {}: {} file(s), {} downloaded in {:.1} s{}",
                    r.pushed_by.as_deref().unwrap_or("?"),
                    sync.remote.url,
                    r.downloaded_files,
                    mib(r.downloaded_bytes),
                    r.elapsed.as_secs_f64(),
                    if r.tables.is_empty() {
                        String::new()
                    } else {
                        format!("; changed: {}", r.tables.join(", "))
                    }
                ),
            }
        }
        SyncCommand::Status => {
            let s = sync.status().await?;
            println!(
                "remote {}: state {}{}; this project last synced state {}",
                s.url,
                s.remote_version,
                s.pushed_by
                    .map(|p| format!(" (pushed by {p})"))
                    .unwrap_or_default(),
                s.base_version
                    .map_or("never".to_string(), |v| v.to_string())
            );
            println!("table\tahead\tbehind\tstate");
            for t in &s.tables {
                let state = match (t.local_changed, t.remote_changed) {
                    (false, false) => "in sync",
                    (true, false) => "ahead: push",
                    (false, true) => "behind: pull",
                    (true, true) => "diverged",
                };
                println!(
                    "{}\t{}\t{}\t{state}",
                    t.table, t.ahead_files, t.behind_files
                );
            }
            println!("pipeline\tlease");
            for (p, l) in &s.pipelines {
                match l {
                    Some(l) => println!("{}", lease_line(l)),
                    None => println!("{p}\tfree (no lease yet)"),
                }
            }
        }
        SyncCommand::Lease { command } => match command {
            LeaseCommand::Acquire { pipeline, steal } => {
                let take = if steal { Take::Stale } else { Take::Free };
                let l = sync.acquire(&pipeline, take).await?;
                println!("{}", lease_line(&l));
            }
            LeaseCommand::Release { pipeline } => {
                let l = sync.release(&pipeline).await?;
                println!("{}", lease_line(&l));
            }
            LeaseCommand::Status { pipeline } => {
                let leases = sync.leases().await?;
                let shown: Vec<&Lease> = leases
                    .iter()
                    .filter(|l| pipeline.as_ref().is_none_or(|p| &l.pipeline == p))
                    .collect();
                if shown.is_empty() {
                    match &pipeline {
                        Some(p) => println!("{p}\tfree (no lease yet)"),
                        None => println!("no leases in {}", sync.remote.url),
                    }
                }
                for l in shown {
                    println!("{}", lease_line(l));
                }
            }
        },
        SyncCommand::Gc { dry_run, grace } => {
            let report = sync.gc(dry_run, grace).await?;
            for (t, added, removed) in &report.repaired {
                println!(
                    "{} {t}: its Delta table differs from the pushed state (+{added} file(s), -{removed} file(s) to match it)",
                    if dry_run { "would repair" } else { "repaired" }
                );
            }
            let removed = report.removed;
            for r in &removed {
                println!("{} {r}", if dry_run { "would delete" } else { "deleted" });
            }
            println!(
                "{} object(s) {}",
                removed.len(),
                if dry_run { "to delete" } else { "deleted" }
            );
        }
    }
    Ok(())
}
