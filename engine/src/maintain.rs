//! Keeping the context store and the state tables in shape: compaction (small files merged
//! into large ones), `DROP CONTEXT TABLE`, retention (old state rows pruned) and the purge
//! of retired files.
//!
//! A compaction is a run of its own in `hakiri.runs` (pipeline `compact:<table>`, a name no
//! pipeline can have): the run lock keeps two compactions of a table apart, the orphan sweep
//! spares its files while it writes, and a SIGKILL leaves it `running` until the next
//! command marks it `partial_failure` and sweeps what it wrote. Its commit retires exactly
//! the files it read, so rows appended meanwhile stay, and it is refused if a replace got
//! there first.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use crate::catalog::{FileEntry, NewRun, PruneCutoffs, Pruned, RunCommit};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ports::Destination;
use crate::run::{RETIRED_GRACE, holder_alive, this_holder};
use crate::types::{EventKind, RetentionSpec, RunCounters, RunStatus, StoreSpec};

/// The file size compaction aims at unless `[store] compact_target_mb` says otherwise.
pub const DEFAULT_COMPACT_TARGET: u64 = 128 * 1024 * 1024;

/// What `hakiri context compact` does to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub table: String,
    /// Files before and after (all of the table's current files).
    pub files_before: usize,
    pub files_after: usize,
    /// Rows rewritten (the rows of the files merged).
    pub rows: u64,
    /// Set when nothing was done, with the reason.
    pub skipped: Option<String>,
}

/// How to compact.
#[derive(Debug, Clone, Default)]
pub struct CompactOptions {
    /// Aim for files of this many bytes (default [`DEFAULT_COMPACT_TARGET`]).
    pub target_bytes: Option<u64>,
    /// Per table, the columns to sort the merged files by.
    pub sort_by: std::collections::BTreeMap<String, Vec<String>>,
    /// `hakiri context rekey`: rewrite every file not written with the current store key
    /// (whatever its size), instead of merging small files.
    pub rekey: bool,
}

impl CompactOptions {
    pub fn from_spec(spec: &StoreSpec) -> Self {
        CompactOptions {
            target_bytes: spec
                .compact_target_mb
                .map(|m| m.saturating_mul(1024 * 1024)),
            sort_by: spec.sort_by.clone(),
            rekey: false,
        }
    }
}

/// The memory a sorted compaction's sort may hold before it spills to disk.
const SORT_MEMORY: usize = 512 * 1024 * 1024;

/// Groups the small files (under half the target) in commit order into bins of at most
/// `target` bytes; a bin of one file is left alone (rewriting it gains nothing).
fn plan_bins(files: &[FileEntry], target: u64) -> Vec<Vec<FileEntry>> {
    let mut bins = pack(files.iter().filter(|f| f.bytes < target / 2), target);
    bins.retain(|b| b.len() > 1);
    bins
}

/// Groups `files` in commit order into bins of at most `target` bytes (a larger file is a
/// bin of its own).
fn pack<'a>(files: impl Iterator<Item = &'a FileEntry>, target: u64) -> Vec<Vec<FileEntry>> {
    let mut bins: Vec<Vec<FileEntry>> = Vec::new();
    let mut current: Vec<FileEntry> = Vec::new();
    let mut size = 0;
    for f in files {
        if !current.is_empty() && size + f.bytes > target {
            bins.push(std::mem::take(&mut current));
            size = 0;
        }
        size += f.bytes;
        current.push(f.clone());
    }
    bins.push(current);
    bins.retain(|b| !b.is_empty());
    bins
}

impl Engine {
    /// What a compaction of `files` rewrites, in groups written as one file each: the
    /// small files, or with `rekey` every file not under the current store key.
    fn plan(&self, files: &[FileEntry], target: u64, rekey: bool) -> Result<Vec<Vec<FileEntry>>> {
        if !rekey {
            return Ok(plan_bins(files, target));
        }
        let mut stale = Vec::new();
        for f in files {
            if self.store().needs_rekey(&f.path)? {
                stale.push(f);
            }
        }
        Ok(pack(stale.into_iter(), target))
    }

    /// Compacts `table`, or every table: each table's small files are merged into files of
    /// about the target size, in one catalog transaction per table. Readers keep reading
    /// the old files until the grace period ends.
    pub async fn compact(
        &self,
        table: Option<&str>,
        options: &CompactOptions,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Vec<Compaction>> {
        let tables: Vec<String> = match table {
            Some(t) => {
                if self.catalog().table_files(t)?.is_empty() {
                    let known: Vec<String> = self
                        .catalog()
                        .tables()?
                        .into_iter()
                        .map(|t| t.name)
                        .collect();
                    return Err(Error::NotFound(format!(
                        "there is no context table '{t}' (tables: {}): `hakiri sql -c 'SELECT * FROM hakiri.tables'` lists them",
                        if known.is_empty() {
                            "none yet".into()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
                vec![t.to_string()]
            }
            None => self
                .catalog()
                .tables()?
                .into_iter()
                .map(|t| t.name)
                .collect(),
        };
        let mut out = Vec::new();
        for t in tables {
            match self.compact_table(&t, options, progress).await {
                Ok(c) => out.push(c),
                Err(e) if table.is_some() => return Err(e),
                // One table's failure (a bad sort key, another compaction of it running)
                // does not keep the others from being compacted.
                Err(e) => out.push(Compaction {
                    table: t.clone(),
                    files_before: 0,
                    files_after: 0,
                    rows: 0,
                    skipped: Some(format!("failed: {e}")),
                }),
            }
        }
        Ok(out)
    }

    async fn compact_table(
        &self,
        table: &str,
        options: &CompactOptions,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Compaction> {
        let target = options
            .target_bytes
            .unwrap_or(DEFAULT_COMPACT_TARGET)
            .max(1);
        let files = self.catalog().table_files(table)?;
        let nothing = if options.rekey {
            "every file is under the current store key"
        } else {
            "no small files to merge"
        };
        let bins = self.plan(&files, target, options.rekey)?;
        let mut result = Compaction {
            table: table.to_string(),
            files_before: files.len(),
            files_after: files.len(),
            rows: 0,
            skipped: None,
        };
        if bins.is_empty() {
            result.skipped = Some(nothing.into());
            return Ok(result);
        }
        let pipeline = format!("compact:{table}");
        let run_id = self.new_run_id(&format!("compact_{table}"));
        let started_at = self.clock().now();
        self.catalog().begin_run(
            &NewRun {
                run_id: run_id.clone(),
                pipeline: pipeline.clone(),
                started_at,
                cursor_start: None,
                holder: this_holder(),
            },
            &|r| holder_alive(r, started_at),
        )?;
        let _heartbeat = crate::run::Heartbeat::start(
            self.catalog().clone(),
            self.clock().clone(),
            run_id.clone(),
        );
        // Read again under the run lock: a compaction that waited behind another works
        // from what that one left. The whole table's schema: every merged file carries all
        // of its columns, so the table reads the same whichever of its files are merged.
        let planned = self.catalog().table_files(table).and_then(|files| {
            let schema = self
                .store()
                .table_schema(&files)?
                .ok_or_else(|| Error::Internal("a table needs at least one file".into()))?;
            Ok((self.plan(&files, target, options.rekey)?, files, schema))
        });
        let (bins, files, schema) = match planned {
            Ok(p) => p,
            Err(e) => {
                let _ = self.catalog().fail_run(
                    &run_id,
                    self.clock().now(),
                    &RunCounters::default(),
                    &e.to_string(),
                );
                return Err(e);
            }
        };
        if bins.is_empty() {
            // Another compaction did it while this one waited.
            let done = RunCommit {
                finish: Some(RunStatus::Skipped),
                ..RunCommit::new(&run_id, &pipeline, table, self.clock().now())
            };
            self.catalog().commit(&done)?;
            result.files_before = files.len();
            result.files_after = files.len();
            result.skipped = Some(nothing.into());
            return Ok(result);
        }
        let sort = options.sort_by.get(table).cloned().unwrap_or_default();
        let mut written: Vec<FileEntry> = Vec::new();
        let mut retired: Vec<String> = Vec::new();
        let mut rows = 0;
        let outcome: Result<()> = async {
            for (i, bin) in bins.iter().enumerate() {
                progress(&format!(
                    "{table}: merging {} files ({:.1} MiB), group {} of {}",
                    bin.len(),
                    bin.iter().map(|f| f.bytes).sum::<u64>() as f64 / 1_048_576.0,
                    i + 1,
                    bins.len()
                ));
                let files = self
                    .write_merged(table, &run_id, i as u32, bin, &schema, &sort)
                    .await?;
                rows += bin.iter().map(|f| f.rows).sum::<u64>();
                written.extend(files);
                retired.extend(bin.iter().map(|f| f.path.clone()));
            }
            Ok(())
        }
        .await;
        let at = self.clock().now();
        let counters = RunCounters {
            rows_read: rows,
            rows_written: rows,
            ..RunCounters::default()
        };
        if let Err(e) = outcome {
            self.remove_files(&written);
            let _ = self
                .catalog()
                .fail_run(&run_id, at, &counters, &e.to_string());
            return Err(e.context(|e| format!("compacting context table '{table}': {e}")));
        }
        let after = files.len() - retired.len() + written.len();
        let message = format!(
            "{} files merged into {} ({rows} rows); the table has {after} files",
            retired.len(),
            written.len()
        );
        let commit = RunCommit {
            files: written.clone(),
            retire: retired,
            events: vec![(EventKind::TableCompacted, message)],
            counters: counters.clone(),
            finish: Some(RunStatus::Succeeded),
            ..RunCommit::new(&run_id, &pipeline, table, at)
        };
        if let Err(e) = self.catalog().commit(&commit) {
            self.discard_uncommitted(&written);
            let _ = self
                .catalog()
                .fail_run(&run_id, at, &counters, &e.to_string());
            return Err(e);
        }
        // Committed: a failed purge is retried later, not this compaction's failure.
        if let Err(e) = self.purge_retired_files() {
            tracing::warn!("deleting retired files after compacting {table}: {e}");
        }
        result.files_before = files.len();
        result.files_after = after;
        result.rows = rows;
        Ok(result)
    }

    /// Writes the rows of `bin` as one file (sorted by `sort` when given).
    async fn write_merged(
        &self,
        table: &str,
        run_id: &str,
        part: u32,
        bin: &[FileEntry],
        schema: &datafusion::arrow::datatypes::Schema,
        sort: &[String],
    ) -> Result<Vec<FileEntry>> {
        let provider = self.store().table_provider_with(bin, schema.clone())?;
        let ctx = if sort.is_empty() {
            self.store().session()
        } else {
            // A sort holds its input until it spills: a bounded pool makes a 128 MiB bin
            // of wide rows spill to temporary files instead of growing without limit.
            let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_memory_limit(SORT_MEMORY, 1.0)
                .build_arc()?;
            let ctx = datafusion::prelude::SessionContext::new_with_config_rt(
                datafusion::prelude::SessionConfig::new(),
                runtime,
            );
            self.store().register_keys(&ctx);
            ctx
        };
        ctx.register_table("compact_input", provider)?;
        let mut df = ctx.table("compact_input").await?;
        if !sort.is_empty() {
            let exprs = sort
                .iter()
                .map(|c| {
                    if schema.field_with_name(c).is_err() {
                        return Err(Error::Config(format!(
                            "[store] sort_by names column '{c}', which context table '{table}' does not have"
                        )));
                    }
                    Ok(datafusion::prelude::ident(c).sort(true, true))
                })
                .collect::<Result<Vec<_>>>()?;
            df = df.sort(exprs)?;
        }
        let out_schema: SchemaRef = Arc::new(schema.clone());
        let writer = self.store().begin(table, run_id, part, out_schema)?;
        crate::ports::write_all(writer, df).await
    }

    /// Deletes the files retired longer ago than the grace period; returns how many.
    pub fn purge_retired_files(&self) -> Result<usize> {
        let grace = chrono::Duration::from_std(RETIRED_GRACE).unwrap_or_default();
        let paths = self.catalog().purge_retired(self.clock().now() - grace)?;
        for p in &paths {
            let _ = std::fs::remove_file(self.store().absolute(p));
        }
        Ok(paths.len())
    }

    /// `DROP CONTEXT TABLE`: the table, its files (after the grace period) and its state
    /// rows, and the cursors of the pipelines writing it. Refused while one of them runs.
    pub fn drop_context_table(&self, table: &str, if_exists: bool) -> Result<String> {
        let now = self.clock().now();
        match self
            .catalog()
            .drop_table(table, now, &|r| holder_alive(r, now))?
        {
            None if if_exists => Ok(format!(
                "context table {table} does not exist; nothing changed"
            )),
            None => Err(Error::NotFound(format!(
                "there is no context table '{table}': SELECT name FROM hakiri.tables lists them (DROP CONTEXT TABLE IF EXISTS ignores a missing one)"
            ))),
            Some(d) => {
                let reset = if d.pipelines.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the cursors of {} were reset, so their next run loads from the start",
                        d.pipelines.join(", ")
                    )
                };
                Ok(format!(
                    "context table {table} dropped ({} files, deleted after {} s){reset}",
                    d.files.len(),
                    RETIRED_GRACE.as_secs()
                ))
            }
        }
    }

    /// Deletes the state rows `[retention]` says are old, keeping each pipeline's latest.
    pub fn prune(&self, retention: &RetentionSpec) -> Result<Pruned> {
        let now = self.clock().now();
        let cutoff = |i: &Option<crate::schedule::Interval>| {
            i.as_ref()
                .and_then(|i| chrono::Duration::from_std(i.duration).ok())
                .map(|d| now - d)
        };
        self.catalog().prune(&PruneCutoffs {
            runs: cutoff(&retention.runs),
            events: cutoff(&retention.events),
            cursor_history: cutoff(&retention.cursor_history),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, bytes: u64) -> FileEntry {
        FileEntry {
            path: format!("t/{name}.parquet"),
            table: "t".into(),
            run_id: name.into(),
            rows: 1,
            bytes,
        }
    }

    #[test]
    fn bins_group_small_files_up_to_the_target() {
        let files = [
            f("a", 30),
            f("b", 30),
            f("big", 90),
            f("c", 30),
            f("d", 30),
            f("e", 45),
        ];
        let bins: Vec<Vec<String>> = plan_bins(&files, 100)
            .into_iter()
            .map(|b| b.into_iter().map(|f| f.run_id).collect())
            .collect();
        // "big" is over half the target and stays; a, b, c fill one bin (90), d and e
        // another (75).
        assert_eq!(bins, vec![vec!["a", "b", "c"], vec!["d", "e"]]);
        assert!(
            plan_bins(&[f("a", 10)], 100).is_empty(),
            "one file is left alone"
        );
        assert!(plan_bins(&[], 100).is_empty());
    }
}
