//! A `Catalog` adapter holding everything in memory: for tests and throwaway sessions, and
//! the second adapter that keeps the port honest (both pass [`super::conformance`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};

use super::state_tables::{RawTable, RawValue};
use super::{
    Catalog, CommitOutcome, CursorEntry, CursorMove, DEAD_RUN_ERROR, DroppedTable, FileEntry,
    IsAlive, NewRun, PruneCutoffs, Pruned, RunCommit, RunRecord, ScheduleState, SourceSchema,
    TableEntry, already_running, table_in_use,
};
use hakiri_core::error::{Error, Result};
use hakiri_core::types::{EventKind, PipelineSpec, RunCounters, RunStatus, SourceSpec};

#[derive(Debug, Default)]
pub struct MemoryCatalog {
    state: Mutex<State>,
}

struct Stamped<T> {
    value: T,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct File {
    entry: FileEntry,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

struct Event {
    at: DateTime<Utc>,
    kind: String,
    subject: String,
    message: String,
    run_id: Option<String>,
}

struct CursorRow {
    kind: String,
    value: String,
    run_id: String,
    at: DateTime<Utc>,
    boundary: Option<String>,
}

struct TableRow {
    rows: u64,
    files: u64,
    schema_version: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct SchemaVersion {
    table: String,
    version: i64,
    schema: String,
    run_id: String,
    at: DateTime<Utc>,
}

#[derive(Default)]
struct State {
    sources: BTreeMap<String, Stamped<SourceSpec>>,
    pipelines: BTreeMap<String, Stamped<PipelineSpec>>,
    runs: Vec<RunRecord>,
    cursors: BTreeMap<String, CursorRow>,
    cursor_history: Vec<(CursorEntry, DateTime<Utc>, Option<String>)>,
    tables: BTreeMap<String, TableRow>,
    files: Vec<File>,
    schema_versions: Vec<SchemaVersion>,
    events: Vec<Event>,
    schedules: BTreeMap<String, ScheduleState>,
    source_schemas: BTreeMap<(String, String), SourceSchema>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    fn run_mut(&mut self, run_id: &str) -> Option<&mut RunRecord> {
        self.runs.iter_mut().find(|r| r.run_id == run_id)
    }

    fn mark_dead(&mut self, run_id: &str, now: DateTime<Utc>) {
        if let Some(r) = self.run_mut(run_id) {
            r.status = RunStatus::PartialFailure;
            r.ended_at = Some(now);
            r.error = Some(DEAD_RUN_ERROR.into());
        }
        self.event(
            now,
            "run_recovered",
            run_id,
            "run marked partial_failure: its process stopped before the run ended",
            Some(run_id),
        );
    }

    fn event(
        &mut self,
        at: DateTime<Utc>,
        kind: &str,
        subject: &str,
        msg: &str,
        run: Option<&str>,
    ) {
        self.events.push(Event {
            at,
            kind: kind.into(),
            subject: subject.into(),
            message: msg.into(),
            run_id: run.map(str::to_string),
        });
    }
}

impl MemoryCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Catalog for MemoryCatalog {
    fn upsert_source(&self, spec: &SourceSpec, now: DateTime<Utc>) -> Result<()> {
        let mut st = self.state();
        let created_at = st.sources.get(&spec.name).map_or(now, |s| s.created_at);
        let changed = st.sources.get(&spec.name).is_some_and(|s| {
            s.value.connector != spec.connector || s.value.options != spec.options
        });
        if changed {
            st.source_schemas
                .retain(|(source, _), _| *source != spec.name);
        }
        st.sources.insert(
            spec.name.clone(),
            Stamped {
                value: spec.clone(),
                created_at,
                updated_at: now,
            },
        );
        Ok(())
    }

    fn drop_source(&self, name: &str) -> Result<bool> {
        let mut st = self.state();
        st.source_schemas.retain(|(source, _), _| source != name);
        Ok(st.sources.remove(name).is_some())
    }

    fn source_schemas(&self, source: &str) -> Result<Vec<SourceSchema>> {
        Ok(self
            .state()
            .source_schemas
            .values()
            .filter(|s| s.source == source)
            .cloned()
            .collect())
    }

    fn put_source_schema(&self, schema: &SourceSchema) -> Result<()> {
        self.state().source_schemas.insert(
            (schema.source.clone(), schema.table.clone()),
            schema.clone(),
        );
        Ok(())
    }

    fn list_sources(&self) -> Result<Vec<SourceSpec>> {
        Ok(self
            .state()
            .sources
            .values()
            .map(|s| s.value.clone())
            .collect())
    }

    fn upsert_pipeline(&self, spec: &PipelineSpec, now: DateTime<Utc>) -> Result<()> {
        let mut st = self.state();
        let created_at = st.pipelines.get(&spec.name).map_or(now, |s| s.created_at);
        st.pipelines.insert(
            spec.name.clone(),
            Stamped {
                value: spec.clone(),
                created_at,
                updated_at: now,
            },
        );
        if spec.schedule.is_none() {
            st.schedules.remove(&spec.name);
        }
        Ok(())
    }

    fn drop_pipeline(&self, name: &str) -> Result<bool> {
        let mut st = self.state();
        st.cursors.remove(name);
        st.schedules.remove(name);
        Ok(st.pipelines.remove(name).is_some())
    }

    fn list_pipelines(&self) -> Result<Vec<PipelineSpec>> {
        Ok(self
            .state()
            .pipelines
            .values()
            .map(|s| s.value.clone())
            .collect())
    }

    fn cursor(&self, pipeline: &str) -> Result<Option<String>> {
        Ok(self.state().cursors.get(pipeline).map(|c| c.value.clone()))
    }

    fn cursor_boundary(&self, pipeline: &str) -> Result<Option<String>> {
        Ok(self
            .state()
            .cursors
            .get(pipeline)
            .and_then(|c| c.boundary.clone()))
    }

    fn cursor_history(&self, pipeline: &str) -> Result<Vec<CursorEntry>> {
        Ok(self
            .state()
            .cursor_history
            .iter()
            .filter(|(c, ..)| c.pipeline == pipeline)
            .map(|(c, ..)| c.clone())
            .collect())
    }

    fn begin_run(&self, run: &NewRun, is_alive: IsAlive<'_>) -> Result<()> {
        let mut st = self.state();
        let running: Vec<RunRecord> = st
            .runs
            .iter()
            .filter(|r| r.pipeline == run.pipeline && r.status == RunStatus::Running)
            .cloned()
            .collect();
        for r in &running {
            if is_alive(r) {
                return Err(already_running(r));
            }
        }
        for r in &running {
            st.mark_dead(&r.run_id, run.started_at);
        }
        st.runs.push(RunRecord {
            run_id: run.run_id.clone(),
            pipeline: run.pipeline.clone(),
            status: RunStatus::Running,
            started_at: run.started_at,
            ended_at: None,
            counters: RunCounters::default(),
            cursor_start: run.cursor_start.clone(),
            cursor_end: None,
            error: None,
            holder: run.holder.clone(),
            heartbeat_at: run.started_at,
        });
        Ok(())
    }

    fn move_cursor(&self, m: &CursorMove, is_alive: IsAlive<'_>) -> Result<()> {
        let mut st = self.state();
        let running: Vec<RunRecord> = st
            .runs
            .iter()
            .filter(|r| r.pipeline == m.pipeline && r.status == RunStatus::Running)
            .cloned()
            .collect();
        if let Some(r) = running.iter().find(|r| is_alive(r)) {
            return Err(already_running(r));
        }
        for r in &running {
            st.mark_dead(&r.run_id, m.at);
        }
        match &m.to {
            Some(value) => {
                st.cursors.insert(
                    m.pipeline.clone(),
                    CursorRow {
                        kind: m.kind.clone(),
                        value: value.clone(),
                        run_id: String::new(),
                        at: m.at,
                        boundary: None,
                    },
                );
            }
            None => {
                st.cursors.remove(&m.pipeline);
            }
        }
        st.event(m.at, m.event.0.as_str(), &m.pipeline, &m.event.1, None);
        Ok(())
    }

    fn heartbeat(&self, run_id: &str, at: DateTime<Utc>) -> Result<()> {
        if let Some(r) = self
            .state()
            .run_mut(run_id)
            .filter(|r| r.status == RunStatus::Running)
        {
            r.heartbeat_at = at;
        }
        Ok(())
    }

    fn fail_run(
        &self,
        run_id: &str,
        ended_at: DateTime<Utc>,
        counters: &RunCounters,
        error: &str,
    ) -> Result<()> {
        if let Some(r) = self
            .state()
            .run_mut(run_id)
            .filter(|r| r.status == RunStatus::Running)
        {
            r.status = RunStatus::Failed;
            r.ended_at = Some(ended_at);
            r.counters = counters.clone();
            r.error = Some(error.into());
        }
        Ok(())
    }

    fn commit(&self, c: &RunCommit) -> Result<CommitOutcome> {
        let mut st = self.state();
        let status = st
            .runs
            .iter()
            .find(|r| r.run_id == c.run_id)
            .map(|r| r.status);
        if status != Some(RunStatus::Running) {
            return Err(super::commit_refused(
                &c.run_id,
                status.map(RunStatus::as_str),
            ));
        }
        for path in &c.retire {
            if !st.files.iter().any(|f| {
                &f.entry.path == path && f.entry.table == c.table && f.retired_at.is_none()
            }) {
                return Err(super::retire_conflict(&c.table, path));
            }
        }
        for f in st
            .files
            .iter_mut()
            .filter(|f| c.retire.contains(&f.entry.path))
        {
            f.retired_at = Some(c.at);
        }
        let mut outcome = CommitOutcome::default();
        if c.replace {
            for f in st
                .files
                .iter_mut()
                .filter(|f| f.entry.table == c.table && f.retired_at.is_none())
            {
                f.retired_at = Some(c.at);
            }
        }
        for f in &c.files {
            st.files.push(File {
                entry: f.clone(),
                created_at: c.at,
                retired_at: None,
            });
        }
        let active = st
            .files
            .iter()
            .filter(|f| f.entry.table == c.table && f.retired_at.is_none());
        let (rows, files) = active.fold((0, 0), |(r, n), f| (r + f.entry.rows, n + 1));
        let latest = st
            .schema_versions
            .iter()
            .filter(|v| v.table == c.table)
            .max_by_key(|v| v.version)
            .map(|v| (v.version, v.schema.clone()));
        let mut version = latest.as_ref().map(|(v, _)| *v);
        if let Some(schema) = &c.schema
            && latest.as_ref().map(|(_, s)| s) != Some(schema)
        {
            let v = version.unwrap_or(0) + 1;
            st.schema_versions.push(SchemaVersion {
                table: c.table.clone(),
                version: v,
                schema: schema.clone(),
                run_id: c.run_id.clone(),
                at: c.at,
            });
            if v == 1 {
                let msg = format!("table '{}' created", c.table);
                st.event(
                    c.at,
                    EventKind::TableCreated.as_str(),
                    &c.table,
                    &msg,
                    Some(&c.run_id),
                );
            }
            version = Some(v);
            outcome.new_schema_version = Some(v);
        }
        for (kind, msg) in &c.events {
            st.event(c.at, kind.as_str(), &c.table, msg, Some(&c.run_id));
        }
        if files > 0 || version.is_some() {
            let created_at = st.tables.get(&c.table).map_or(c.at, |t| t.created_at);
            st.tables.insert(
                c.table.clone(),
                TableRow {
                    rows,
                    files,
                    schema_version: version,
                    created_at,
                    updated_at: c.at,
                },
            );
        }
        if let Some((kind, value)) = &c.cursor {
            st.cursors.insert(
                c.pipeline.clone(),
                CursorRow {
                    kind: kind.clone(),
                    value: value.clone(),
                    run_id: c.run_id.clone(),
                    at: c.at,
                    boundary: c.boundary.clone(),
                },
            );
            let entry = CursorEntry {
                pipeline: c.pipeline.clone(),
                kind: kind.clone(),
                value: value.clone(),
                run_id: c.run_id.clone(),
            };
            st.cursor_history.push((entry, c.at, c.boundary.clone()));
        }
        let r = st.run_mut(&c.run_id).expect("checked above");
        r.counters = c.counters.clone();
        r.heartbeat_at = c.at;
        if let Some((_, v)) = &c.cursor {
            r.cursor_end = Some(v.clone());
        }
        if let Some(status) = c.finish {
            r.status = status;
            r.ended_at = Some(c.at);
            if r.cursor_end.is_none() {
                r.cursor_end = r.cursor_start.clone();
            }
        }
        Ok(outcome)
    }

    fn runs(&self, pipeline: Option<&str>) -> Result<Vec<RunRecord>> {
        let mut runs: Vec<RunRecord> = self
            .state()
            .runs
            .iter()
            .filter(|r| pipeline.is_none_or(|p| r.pipeline == p))
            .cloned()
            .collect();
        runs.sort_by_key(|r| r.started_at);
        Ok(runs)
    }

    fn recover_runs(&self, is_alive: IsAlive<'_>, now: DateTime<Utc>) -> Result<Vec<String>> {
        let mut st = self.state();
        let dead: Vec<String> = st
            .runs
            .iter()
            .filter(|r| r.status == RunStatus::Running && !is_alive(r))
            .map(|r| r.run_id.clone())
            .collect();
        for id in &dead {
            st.mark_dead(id, now);
        }
        Ok(dead)
    }

    fn tables(&self) -> Result<Vec<TableEntry>> {
        Ok(self
            .state()
            .tables
            .iter()
            .map(|(name, t)| TableEntry {
                name: name.clone(),
                rows: t.rows,
                files: t.files,
            })
            .collect())
    }

    fn table_files(&self, table: &str) -> Result<Vec<FileEntry>> {
        Ok(self
            .state()
            .files
            .iter()
            .filter(|f| f.entry.table == table && f.retired_at.is_none())
            .map(|f| f.entry.clone())
            .collect())
    }

    fn all_files(&self) -> Result<Vec<String>> {
        Ok(self
            .state()
            .files
            .iter()
            .map(|f| f.entry.path.clone())
            .collect())
    }

    fn purge_retired(&self, before: DateTime<Utc>) -> Result<Vec<String>> {
        let mut st = self.state();
        let (gone, kept): (Vec<File>, Vec<File>) = std::mem::take(&mut st.files)
            .into_iter()
            .partition(|f| f.retired_at.is_some_and(|t| t < before));
        st.files = kept;
        Ok(gone.into_iter().map(|f| f.entry.path).collect())
    }

    fn schedules(&self) -> Result<Vec<ScheduleState>> {
        Ok(self.state().schedules.values().cloned().collect())
    }

    fn put_schedule(&self, state: &ScheduleState) -> Result<()> {
        self.state()
            .schedules
            .insert(state.pipeline.clone(), state.clone());
        Ok(())
    }

    fn add_event(
        &self,
        at: DateTime<Utc>,
        kind: EventKind,
        subject: &str,
        message: &str,
        run_id: Option<&str>,
    ) -> Result<()> {
        self.state()
            .event(at, kind.as_str(), subject, message, run_id);
        Ok(())
    }

    fn prune(&self, cutoffs: &PruneCutoffs) -> Result<Pruned> {
        let mut st = self.state();
        let mut out = Pruned::default();
        // The keepers, as the SQLite adapter picks them: the last of each group in insertion
        // order.
        fn last_of<T, K: Ord>(items: &[T], key: impl Fn(&T) -> Option<K>) -> Vec<usize> {
            let mut last = BTreeMap::new();
            for (i, it) in items.iter().enumerate() {
                if let Some(k) = key(it) {
                    last.insert(k, i);
                }
            }
            last.into_values().collect()
        }
        if let Some(before) = cutoffs.runs {
            let mut keep = last_of(&st.runs, |r| Some(r.pipeline.clone()));
            keep.extend(last_of(&st.runs, |r| {
                (r.status == RunStatus::Succeeded).then(|| r.pipeline.clone())
            }));
            let old = std::mem::take(&mut st.runs);
            let n = old.len();
            st.runs = old
                .into_iter()
                .enumerate()
                .filter(|(i, r)| {
                    keep.contains(i) || r.status == RunStatus::Running || r.started_at >= before
                })
                .map(|(_, r)| r)
                .collect();
            out.runs = (n - st.runs.len()) as u64;
        }
        if let Some(before) = cutoffs.events {
            let keep = last_of(&st.events, |e| Some(e.subject.clone()));
            let old = std::mem::take(&mut st.events);
            let n = old.len();
            st.events = old
                .into_iter()
                .enumerate()
                .filter(|(i, e)| keep.contains(i) || e.at >= before)
                .map(|(_, e)| e)
                .collect();
            out.events = (n - st.events.len()) as u64;
        }
        if let Some(before) = cutoffs.cursor_history {
            let keep = last_of(&st.cursor_history, |(c, ..)| Some(c.pipeline.clone()));
            let old = std::mem::take(&mut st.cursor_history);
            let n = old.len();
            st.cursor_history = old
                .into_iter()
                .enumerate()
                .filter(|(i, (_, at, _))| keep.contains(i) || *at >= before)
                .map(|(_, c)| c)
                .collect();
            out.cursor_history = (n - st.cursor_history.len()) as u64;
        }
        Ok(out)
    }

    fn drop_table(
        &self,
        table: &str,
        at: DateTime<Utc>,
        is_alive: IsAlive<'_>,
    ) -> Result<Option<DroppedTable>> {
        let mut st = self.state();
        if !st.tables.contains_key(table)
            && !st
                .files
                .iter()
                .any(|f| f.entry.table == table && f.retired_at.is_none())
        {
            return Ok(None);
        }
        let pipelines: Vec<String> = st
            .pipelines
            .values()
            .filter(|p| p.value.target == table)
            .map(|p| p.value.name.clone())
            .collect();
        if let Some(r) = st.runs.iter().find(|r| {
            r.status == RunStatus::Running && pipelines.contains(&r.pipeline) && is_alive(r)
        }) {
            return Err(table_in_use(table, r));
        }
        let mut files = Vec::new();
        for f in st
            .files
            .iter_mut()
            .filter(|f| f.entry.table == table && f.retired_at.is_none())
        {
            f.retired_at = Some(at);
            files.push(f.entry.path.clone());
        }
        files.sort();
        st.tables.remove(table);
        st.schema_versions.retain(|v| v.table != table);
        for p in &pipelines {
            st.cursors.remove(p);
        }
        st.cursor_history
            .retain(|(c, ..)| !pipelines.contains(&c.pipeline));
        let msg = super::sqlite::drop_message(table, files.len(), &pipelines);
        st.event(at, EventKind::TableDropped.as_str(), table, &msg, None);
        Ok(Some(DroppedTable { files, pipelines }))
    }

    /// The memory catalog lives as long as its process: there is no project to sync.
    fn replace_state(&self, _tables: &[(String, RawTable)]) -> Result<()> {
        Err(Error::Unsupported(
            "the memory catalog does not take a synced state: sync needs a project's SQLite catalog".into(),
        ))
    }

    fn state_table(&self, name: &str) -> Result<RawTable> {
        let decl = super::state_table(name).ok_or_else(|| super::unknown_state_table(name))?;
        let st = self.state();
        let t = |s: &str| RawValue::Text(s.to_string());
        let ot = |s: Option<&str>| s.map_or(RawValue::Null, |s| RawValue::Text(s.to_string()));
        let time =
            |d: DateTime<Utc>| RawValue::Text(d.to_rfc3339_opts(SecondsFormat::Micros, true));
        let otime = |d: Option<DateTime<Utc>>| d.map_or(RawValue::Null, time);
        let n = |v: u64| RawValue::Int(v as i64);
        // The rows in the declaration's column order (the conformance suite checks it).
        let rows: Vec<Vec<RawValue>> = match name {
            "sources" => st
                .sources
                .values()
                .map(|s| {
                    let options = serde_json::to_string(&s.value.options).unwrap_or_default();
                    vec![
                        t(&s.value.name),
                        t(&s.value.connector),
                        t(&options),
                        t(s.value.origin.as_str()),
                        time(s.created_at),
                        time(s.updated_at),
                    ]
                })
                .collect(),
            "pipelines" => st
                .pipelines
                .values()
                .map(|s| {
                    let p = &s.value;
                    let c = p.cursor.as_ref();
                    let key = (!p.key.is_empty()).then(|| p.key.join(", "));
                    vec![
                        t(&p.name),
                        t(&p.target),
                        ot(c.map(|c| c.kind.as_str())),
                        ot(c.and_then(|c| c.column.as_deref())),
                        ot(c.and_then(|c| c.initial.as_deref())),
                        t(p.mode.as_str()),
                        ot(key.as_deref()),
                        t(p.on_schema_change.as_str()),
                        t(&p.sql),
                        t(&p.to_string()),
                        t(p.origin.as_str()),
                        time(s.created_at),
                        time(s.updated_at),
                    ]
                })
                .collect(),
            "runs" => st
                .runs
                .iter()
                .map(|r| {
                    let c = &r.counters;
                    vec![
                        t(&r.run_id),
                        t(&r.pipeline),
                        t(r.status.as_str()),
                        time(r.started_at),
                        otime(r.ended_at),
                        n(c.rows_read),
                        n(c.rows_written),
                        n(c.pages),
                        n(c.bytes),
                        n(c.rows_skipped),
                        n(c.rows_discarded),
                        ot(r.cursor_start.as_deref()),
                        ot(r.cursor_end.as_deref()),
                        ot(r.error.as_deref()),
                        n(r.holder.pid as u64),
                        t(&r.holder.host),
                        time(r.heartbeat_at),
                    ]
                })
                .collect(),
            "cursors" => st
                .cursors
                .iter()
                .map(|(p, c)| {
                    vec![
                        t(p),
                        t(&c.kind),
                        t(&c.value),
                        t(&c.run_id),
                        time(c.at),
                        ot(c.boundary.as_deref()),
                    ]
                })
                .collect(),
            "cursor_history" => st
                .cursor_history
                .iter()
                .enumerate()
                .map(|(i, (c, at, boundary))| {
                    vec![
                        n(i as u64 + 1),
                        t(&c.pipeline),
                        t(&c.kind),
                        t(&c.value),
                        t(&c.run_id),
                        time(*at),
                        ot(boundary.as_deref()),
                    ]
                })
                .collect(),
            "tables" => st
                .tables
                .iter()
                .map(|(name, r)| {
                    let v = r.schema_version.map_or(RawValue::Null, RawValue::Int);
                    vec![
                        t(name),
                        n(r.rows),
                        n(r.files),
                        v,
                        time(r.created_at),
                        time(r.updated_at),
                    ]
                })
                .collect(),
            "files" => st
                .files
                .iter()
                .map(|f| {
                    let e = &f.entry;
                    vec![
                        t(&e.path),
                        t(&e.table),
                        t(&e.run_id),
                        n(e.rows),
                        n(e.bytes),
                        time(f.created_at),
                        otime(f.retired_at),
                    ]
                })
                .collect(),
            "schema_versions" => st
                .schema_versions
                .iter()
                .map(|v| {
                    vec![
                        t(&v.table),
                        RawValue::Int(v.version),
                        t(&v.schema),
                        t(&v.run_id),
                        time(v.at),
                    ]
                })
                .collect(),
            "schedules" => st
                .schedules
                .values()
                .map(|s| {
                    vec![
                        t(&s.pipeline),
                        t(&s.schedule),
                        time(s.next_fire_at),
                        time(s.slot_at),
                        n(s.attempt.into()),
                        n(s.consecutive_failures.into()),
                        n(s.suspended.into()),
                        ot(s.suspended_reason.as_deref()),
                        ot(s.last_run_id.as_deref()),
                        ot(s.last_status.map(RunStatus::as_str)),
                        otime(s.last_fired_at),
                        time(s.updated_at),
                    ]
                })
                .collect(),
            "source_schemas" => st
                .source_schemas
                .values()
                .map(|s| {
                    vec![
                        t(&s.source),
                        t(&s.table),
                        t(&s.columns),
                        time(s.discovered_at),
                    ]
                })
                .collect(),
            _ => st
                .events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    vec![
                        n(i as u64 + 1),
                        time(e.at),
                        t(&e.kind),
                        t(&e.subject),
                        t(&e.message),
                        ot(e.run_id.as_deref()),
                    ]
                })
                .collect(),
        };
        Ok(RawTable {
            columns: decl.columns(),
            rows,
        })
    }
}
