//! The run loop's decisions without files or network: every cursor kind × write mode
//! through the same `PartRows` (tracking, conforming, lineage, staging) and commit planner
//! the engine runs, fed Arrow batches and the reports a source would give. The table is
//! simulated in memory as the catalog's commit would leave it (a merge runs the engine's
//! merge query on a `MemTable`).

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::commit::{self, CommitPlan, Decision, Evidence};
use super::part::PartRows;
use super::track::CursorState;
use super::write::{SEQ_COLUMN, WriteStrategy, merge_query};
use crate::cursor::BoundaryRows;
use crate::error::Result;
use crate::ports::RunReport;
use crate::store::LineageColumns;
use crate::types::{
    CursorKind, CursorSpec, EventKind, NullRule, Origin, PipelineBuilder, PipelineSpec,
    RunCounters, SchemaPolicy, WriteMode,
};

const KINDS: [Option<CursorKind>; 4] = [
    None,
    Some(CursorKind::Monotonic),
    Some(CursorKind::OpaqueToken),
    Some(CursorKind::SnapshotId),
];
const MODES: [WriteMode; 3] = [WriteMode::Append, WriteMode::Replace, WriteMode::Merge];

fn cursor(kind: CursorKind) -> CursorSpec {
    CursorSpec {
        kind,
        column: (kind == CursorKind::Monotonic).then(|| "id".to_string()),
        initial: (kind == CursorKind::Monotonic).then(|| "0".to_string()),
        lag: None,
        on_null: NullRule::Fail,
    }
}

fn build(
    kind: Option<CursorKind>,
    mode: WriteMode,
    edit: impl FnOnce(&mut PipelineBuilder),
) -> Result<PipelineSpec> {
    let filter = if kind == Some(CursorKind::Monotonic) {
        " WHERE id > $cursor"
    } else {
        ""
    };
    let mut b = PipelineBuilder::new(
        "p",
        format!("INSERT INTO context.t SELECT id, v FROM s.t{filter}"),
        Origin::Sql,
    );
    b.cursor = kind.map(cursor);
    b.mode = Some(mode);
    if mode == WriteMode::Merge {
        b.key = vec!["id".into()];
    }
    edit(&mut b);
    b.build()
}

fn rows_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
    ]))
}

fn batch(rows: &[(Option<i64>, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        rows_schema(),
        vec![
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

fn ids(batches: &[RecordBatch]) -> Vec<(Option<i64>, String)> {
    let mut out = Vec::new();
    for b in batches {
        let id = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let v = b
            .column_by_name("v")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for i in 0..b.num_rows() {
            out.push((id.is_valid(i).then(|| id.value(i)), v.value(i).to_string()));
        }
    }
    out.sort();
    out
}

fn row(id: i64, v: &str) -> (Option<i64>, String) {
    (Some(id), v.to_string())
}

/// A pipeline's table and cursor across runs, committed as the engine commits.
struct Sim {
    spec: PipelineSpec,
    state: CursorState,
    table: Vec<RecordBatch>,
    table_schema: Option<Schema>,
    counters: RunCounters,
    events: Vec<(EventKind, String)>,
    runs: u32,
}

/// What a part did.
#[derive(Debug)]
enum Outcome {
    Committed { done: bool, replace: bool },
    Unchanged,
}

impl Sim {
    fn new(spec: PipelineSpec) -> Self {
        let state = CursorState::start(
            &spec,
            spec.cursor.as_ref().and_then(|c| c.initial.clone()),
            true,
            None,
            None,
        )
        .unwrap();
        Sim {
            spec,
            state,
            table: Vec::new(),
            table_schema: None,
            counters: RunCounters::default(),
            events: Vec::new(),
            runs: 0,
        }
    }

    fn lineage(&self) -> LineageColumns {
        LineageColumns {
            run_id: format!("run{}", self.runs),
            loaded_at: Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap(),
        }
    }

    /// The rows one part stages from `batches`, and what it found about the cursor.
    fn stage(&mut self, batches: Vec<RecordBatch>) -> Result<(Vec<RecordBatch>, super::Tracked)> {
        let input = batches.first().map_or_else(rows_schema, |b| b.schema());
        let mut part = PartRows::new(
            &self.spec,
            &self.state,
            self.lineage(),
            &input,
            self.table_schema.as_ref(),
        )?;
        let mut staged = Vec::new();
        for b in batches {
            staged.push(part.push(b, &mut self.counters)?);
        }
        let keep = part.keeps_file(self.table_schema.is_some());
        let schema = part.staged_schema();
        let tracked = part.finish(&self.state);
        if keep && staged.is_empty() {
            staged.push(RecordBatch::new_empty(schema));
        }
        if !keep {
            staged.clear();
        }
        Ok((staged, tracked))
    }

    /// One part of a run: stages `batches`, plans the commit with the source's `report`
    /// and `pages`, and applies it to the table as the catalog would.
    async fn part(
        &mut self,
        batches: Vec<RecordBatch>,
        report: RunReport,
        pages: u64,
    ) -> Result<Outcome> {
        let discarded_before = self.counters.rows_discarded;
        let (staged, tracked) = self.stage(batches)?;
        let ev = Evidence {
            tracked: &tracked,
            pages,
            report: &report,
            discarded: self.counters.rows_discarded - discarded_before,
        };
        let plan: CommitPlan = match commit::plan(&self.spec, &self.state, &ev)? {
            Decision::Unchanged { event } => {
                self.events.push(event);
                return Ok(Outcome::Unchanged);
            }
            Decision::Commit(plan) => plan,
        };
        let replace = WriteStrategy::replaces(self.spec.mode, !staged.is_empty());
        let files = if self.spec.mode == WriteMode::Merge && !staged.is_empty() {
            self.merge(&staged).await
        } else {
            staged
        };
        let new_schema = files.first().map(|b| b.schema().as_ref().clone());
        let (after, changes) = commit::schema_after(
            &self.spec.target,
            self.table_schema.as_ref(),
            new_schema.as_ref(),
            replace,
        );
        self.table_schema = after;
        self.events.extend(plan.events.iter().cloned());
        self.events.extend(changes);
        if replace {
            self.table.clear();
        }
        self.table.extend(files);
        self.state.committed(&plan);
        Ok(Outcome::Committed {
            done: plan.done,
            replace,
        })
    }

    /// The engine's merge query over the table and the staged rows. The table's rows are
    /// read in the staged schema as the store reads files of older schemas: missing
    /// columns, the arrival number among them, are NULL.
    async fn merge(&self, staged: &[RecordBatch]) -> Vec<RecordBatch> {
        let fields: Vec<Field> = staged[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let read = |b: &RecordBatch| {
            let cols = schema
                .fields()
                .iter()
                .map(|f| match b.column_by_name(f.name()) {
                    Some(c) => datafusion::arrow::compute::cast(c, f.data_type()).unwrap(),
                    None => datafusion::arrow::array::new_null_array(f.data_type(), b.num_rows()),
                })
                .collect();
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        };
        let all: Vec<RecordBatch> = self.table.iter().chain(staged).map(read).collect();
        let ctx = SessionContext::new();
        let table = MemTable::try_new(schema.clone(), vec![all]).unwrap();
        ctx.register_table("merge_input", Arc::new(table)).unwrap();
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let df = ctx
            .sql(&merge_query(&columns, &self.spec.key))
            .await
            .unwrap();
        df.collect().await.unwrap()
    }

    /// A whole run of a source that returns `rows` (as the plan would give them: a
    /// monotonic run's source applies the pushed `id > $cursor`; a token source returns the
    /// pages after the token, one part each).
    async fn run(&mut self, rows: &[(Option<i64>, &str)]) -> Result<Vec<Outcome>> {
        self.runs += 1;
        let kind = self.spec.cursor.as_ref().map(|c| c.kind);
        let mut outcomes = Vec::new();
        match kind {
            Some(CursorKind::OpaqueToken) => loop {
                // The token is the number of source rows read; a page is two rows.
                let from: usize = self
                    .state
                    .cursor
                    .as_deref()
                    .map_or(0, |t| t.parse().unwrap());
                let page: Vec<_> = rows.iter().skip(from).take(2).cloned().collect();
                let read = from + page.len();
                let report = RunReport {
                    token: Some(read.to_string()),
                    exhausted: read >= rows.len(),
                    ..RunReport::default()
                };
                let pages = u64::from(!page.is_empty());
                let o = self.part(vec![batch(&page)], report, pages).await?;
                let done = matches!(o, Outcome::Committed { done: true, .. });
                outcomes.push(o);
                if done {
                    break;
                }
            },
            Some(CursorKind::Monotonic) => {
                let c: i64 = self.state.cursor.as_deref().unwrap().parse().unwrap();
                let read: Vec<_> = rows
                    .iter()
                    .filter(|r| r.0.is_none_or(|id| id > c))
                    .cloned()
                    .collect();
                outcomes.push(
                    self.part(vec![batch(&read)], RunReport::default(), 1)
                        .await?,
                );
            }
            _ => outcomes.push(
                self.part(vec![batch(rows)], RunReport::default(), 1)
                    .await?,
            ),
        }
        Ok(outcomes)
    }
}

fn refusal(kind: Option<CursorKind>, mode: WriteMode) -> Option<&'static str> {
    match (kind, mode) {
        (Some(CursorKind::SnapshotId), WriteMode::Append | WriteMode::Merge) => {
            Some("a snapshot cursor replaces the table on every changed snapshot")
        }
        (Some(CursorKind::OpaqueToken), WriteMode::Replace) => {
            Some("a token cursor reads only the pages after its token")
        }
        _ => None,
    }
}

/// Two runs of every cursor kind with every write mode: the first reads ids 1-3, the
/// second ids 1-5 with id 2 changed. What the table holds after each says what the
/// combination means; the combinations that cannot mean anything are refused.
#[tokio::test]
async fn every_cursor_kind_with_every_write_mode() {
    let first = [(Some(1), "a"), (Some(2), "b"), (Some(3), "c")];
    let second = [
        (Some(1), "a"),
        (Some(2), "B"),
        (Some(3), "c"),
        (Some(4), "d"),
        (Some(5), "e"),
    ];
    let all_new = vec![
        row(1, "a"),
        row(2, "B"),
        row(3, "c"),
        row(4, "d"),
        row(5, "e"),
    ];
    let appended = vec![
        row(1, "a"),
        row(2, "b"),
        row(3, "c"),
        row(4, "d"),
        row(5, "e"),
    ];
    for kind in KINDS {
        for mode in MODES {
            let what = format!("{kind:?} x {mode:?}");
            let spec = build(kind, mode, |_| {});
            if let Some(why) = refusal(kind, mode) {
                let e = spec.expect_err(&what).to_string();
                assert!(e.contains(why), "{what}: {e}");
                continue;
            }
            let mut sim = Sim::new(spec.expect(&what));
            sim.run(&first).await.unwrap();
            assert_eq!(
                ids(&sim.table),
                vec![row(1, "a"), row(2, "b"), row(3, "c")],
                "{what}: first run"
            );
            let outcomes = sim.run(&second).await.unwrap();
            let expected = match (kind, mode) {
                // No cursor: every run reads everything.
                (None, WriteMode::Append) => {
                    let mut v = vec![row(1, "a"), row(2, "b"), row(3, "c")];
                    v.extend(all_new.clone());
                    v.sort();
                    v
                }
                (None, _) | (Some(CursorKind::SnapshotId), _) => all_new.clone(),
                // An incremental cursor reads only what is new: id 2's change is not seen.
                (Some(CursorKind::Monotonic), WriteMode::Replace) => vec![row(4, "d"), row(5, "e")],
                (Some(_), _) => appended.clone(),
            };
            assert_eq!(ids(&sim.table), expected, "{what}: second run");
            let replaced = outcomes
                .iter()
                .any(|o| matches!(o, Outcome::Committed { replace: true, .. }));
            assert_eq!(
                replaced,
                mode != WriteMode::Append,
                "{what}: whether a commit swapped the table's files"
            );
            // A third run of the same source adds nothing, except where nothing tracks
            // what was read.
            let before = ids(&sim.table);
            let outcomes = sim.run(&second).await.unwrap();
            let after = ids(&sim.table);
            match (kind, mode) {
                (None, WriteMode::Append) => assert_eq!(after.len(), before.len() + 5, "{what}"),
                (Some(CursorKind::Monotonic), WriteMode::Replace) => {
                    assert!(
                        after.is_empty(),
                        "{what}: nothing is past the cursor: {after:?}"
                    )
                }
                (Some(CursorKind::SnapshotId), _) => {
                    assert!(matches!(outcomes[..], [Outcome::Unchanged]), "{what}");
                    assert_eq!(after, before, "{what}");
                }
                _ => assert_eq!(after, before, "{what}: third run"),
            }
            // Lineage columns were added to every staged row, after the query's columns.
            let schema = sim.table_schema.as_ref().unwrap();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(
                names,
                ["id", "v", "_hakiri_run_id", "_hakiri_loaded_at"],
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn a_monotonic_cursor_moves_to_the_maximum_and_never_back() {
    let mut sim = Sim::new(build(Some(CursorKind::Monotonic), WriteMode::Append, |_| {}).unwrap());
    assert!(sim.state.is_initial);
    sim.part(
        vec![
            batch(&[(Some(3), "c")]),
            batch(&[(Some(7), "g"), (Some(5), "e")]),
        ],
        RunReport::default(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(sim.state.cursor.as_deref(), Some("7"));
    assert_eq!(sim.state.floor.as_deref(), Some("7"));
    assert!(!sim.state.is_initial);
    // An empty part keeps the cursor and writes no cursor.
    let (staged, tracked) = sim.stage(vec![batch(&[])]).unwrap();
    assert!(staged.is_empty(), "an append with no rows stages no file");
    let report = RunReport::default();
    let ev = Evidence {
        tracked: &tracked,
        pages: 1,
        report: &report,
        discarded: 0,
    };
    let Decision::Commit(plan) = commit::plan(&sim.spec, &sim.state, &ev).unwrap() else {
        panic!("a monotonic part commits")
    };
    assert_eq!(plan.cursor.as_deref(), Some("7"));
    assert!(plan.commit_cursor.is_none(), "{plan:?}");
    // With LAG (merge), a run reads below the committed value and must not move it back.
    let mut sim = Sim::new(
        build(Some(CursorKind::Monotonic), WriteMode::Merge, |b| {
            b.cursor.as_mut().unwrap().lag = Some("5".into());
        })
        .unwrap(),
    );
    sim.part(vec![batch(&[(Some(10), "j")])], RunReport::default(), 1)
        .await
        .unwrap();
    sim.part(vec![batch(&[(Some(6), "f")])], RunReport::default(), 1)
        .await
        .unwrap();
    assert_eq!(sim.state.cursor.as_deref(), Some("10"));
    assert_eq!(ids(&sim.table), vec![row(6, "f"), row(10, "j")]);
}

#[tokio::test]
async fn null_cursor_rules_fail_skip_or_load() {
    let nulls = || {
        vec![batch(&[
            (Some(1), "a"),
            (None, "x"),
            (Some(2), "b"),
            (None, "y"),
        ])]
    };
    let with = |rule| {
        build(Some(CursorKind::Monotonic), WriteMode::Append, move |b| {
            b.cursor.as_mut().unwrap().on_null = rule;
        })
        .unwrap()
    };
    let mut sim = Sim::new(with(NullRule::Fail));
    let e = sim
        .part(nulls(), RunReport::default(), 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 row(s) have a NULL cursor column 'id'"), "{e}");
    assert!(e.contains("ON NULL SKIP"), "{e}");
    assert!(
        sim.table.is_empty() && sim.state.is_initial,
        "nothing committed"
    );

    let mut sim = Sim::new(with(NullRule::Skip));
    sim.part(nulls(), RunReport::default(), 1).await.unwrap();
    assert_eq!(ids(&sim.table), vec![row(1, "a"), row(2, "b")]);
    assert_eq!(sim.counters.rows_skipped, 2);
    assert_eq!(sim.state.cursor.as_deref(), Some("2"));
    assert!(
        sim.events
            .iter()
            .any(|(k, m)| *k == EventKind::NullCursorRowsSkipped && m.contains("2 row(s)")),
        "{:?}",
        sim.events
    );

    let mut sim = Sim::new(with(NullRule::Load));
    sim.part(nulls(), RunReport::default(), 1).await.unwrap();
    assert_eq!(ids(&sim.table).len(), 4);
    assert_eq!(sim.counters.rows_skipped, 0);
    assert_eq!(
        sim.state.cursor.as_deref(),
        Some("2"),
        "NULLs do not move the cursor"
    );
    assert!(
        sim.events
            .iter()
            .any(|(k, m)| *k == EventKind::NullCursorRowsLoaded && m.contains("ON NULL LOAD")),
        "{:?}",
        sim.events
    );
}

#[tokio::test]
async fn an_inclusive_cursor_skips_the_rows_written_at_its_value() {
    let mut b = PipelineBuilder::new(
        "p",
        "INSERT INTO context.t SELECT id, v FROM s.t WHERE id >= $cursor",
        Origin::Sql,
    );
    b.cursor = Some(cursor(CursorKind::Monotonic));
    let mut sim = Sim::new(b.build().unwrap());
    assert!(sim.state.inclusive_append);
    sim.part(
        vec![batch(&[(Some(1), "a"), (Some(3), "c"), (Some(3), "d")])],
        RunReport::default(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(sim.state.cursor.as_deref(), Some("3"));
    assert_eq!(sim.state.boundary.as_ref().map(BoundaryRows::rows), Some(2));
    // The next run reads `id >= 3` again: the two rows written at 3 are skipped, a new
    // row at 3 is not, and the boundary moves to 4.
    sim.part(
        vec![batch(&[
            (Some(3), "c"),
            (Some(3), "d"),
            (Some(3), "new"),
            (Some(4), "e"),
        ])],
        RunReport::default(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&sim.table),
        vec![
            row(1, "a"),
            row(3, "c"),
            row(3, "d"),
            row(3, "new"),
            row(4, "e")
        ]
    );
    assert_eq!(sim.counters.rows_skipped, 2);
    assert_eq!(sim.state.boundary.as_ref().map(BoundaryRows::rows), Some(1));
    // A row written at the boundary that is gone upstream is reported.
    sim.part(vec![batch(&[(Some(5), "f")])], RunReport::default(), 1)
        .await
        .unwrap();
    assert!(
        sim.events
            .iter()
            .any(|(k, m)| *k == EventKind::BoundaryChanged
                && m.contains("1 row(s) written at cursor value '4'")),
        "{:?}",
        sim.events
    );
}

#[tokio::test]
async fn a_backfill_reads_its_window_and_keeps_the_committed_cursor() {
    let spec = build(Some(CursorKind::Monotonic), WriteMode::Merge, |_| {}).unwrap();
    let window = crate::rewind::Window {
        from: "2".into(),
        to: Some("4".into()),
    };
    let e = CursorState::start(&spec, Some("0".into()), true, None, Some(window.clone()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no committed cursor yet"), "{e}");
    let mut sim = Sim::new(spec.clone());
    sim.state = CursorState::start(&spec, Some("9".into()), false, None, Some(window)).unwrap();
    assert!(!sim.state.applies_lag());
    assert_eq!(sim.state.cursor.as_deref(), Some("2"));
    sim.part(
        vec![batch(&[
            (Some(3), "c"),
            (Some(4), "d"),
            (Some(6), "past the window"),
        ])],
        RunReport::default(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(ids(&sim.table), vec![row(3, "c"), row(4, "d")]);
    assert_eq!(
        sim.state.floor.as_deref(),
        Some("9"),
        "the committed cursor stays"
    );
}

#[tokio::test]
async fn a_token_cursor_commits_every_page_group_and_resumes_after_it() {
    let spec = build(Some(CursorKind::OpaqueToken), WriteMode::Append, |_| {}).unwrap();
    let mut sim = Sim::new(spec);
    let page = |t: Option<&str>, exhausted| RunReport {
        token: t.map(String::from),
        exhausted,
        ..RunReport::default()
    };
    let o = sim
        .part(vec![batch(&[(Some(1), "a")])], page(Some("t1"), false), 10)
        .await
        .unwrap();
    assert!(matches!(
        o,
        Outcome::Committed {
            done: false,
            replace: false
        }
    ));
    assert_eq!(sim.state.cursor.as_deref(), Some("t1"));
    // A page group without a token to resume from cannot be committed.
    let e = sim
        .part(vec![batch(&[(Some(2), "b")])], page(None, false), 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("gave no resume token after 10 page(s)"), "{e}");
    assert_eq!(
        sim.state.cursor.as_deref(),
        Some("t1"),
        "the committed token stays"
    );
    // The last page has no token past it: the page is kept as the boundary, read again
    // (the empty token) by the next run, which skips what it wrote.
    let last = RunReport {
        exhausted: true,
        boundary: Some(BoundaryRows { hashes: vec![42] }),
        ..RunReport::default()
    };
    let o = sim
        .part(vec![batch(&[(Some(2), "b")])], last, 1)
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Committed { done: true, .. }));
    assert_eq!(sim.state.cursor.as_deref(), Some(""));
    assert_eq!(sim.state.boundary, Some(BoundaryRows { hashes: vec![42] }));
    // A run that reads no page is over and keeps the token and boundary.
    let o = sim
        .part(vec![batch(&[])], page(None, false), 0)
        .await
        .unwrap();
    assert!(matches!(o, Outcome::Committed { done: true, .. }));
    assert_eq!(sim.state.boundary, Some(BoundaryRows { hashes: vec![42] }));
    assert_eq!(ids(&sim.table), vec![row(1, "a"), row(2, "b")]);
}

#[tokio::test]
async fn a_snapshot_is_written_once_per_content_or_source_id() {
    let spec = build(Some(CursorKind::SnapshotId), WriteMode::Replace, |_| {}).unwrap();
    let mut sim = Sim::new(spec);
    let rows = || vec![batch(&[(Some(1), "a")]), batch(&[(Some(2), "b")])];
    sim.part(rows(), RunReport::default(), 1).await.unwrap();
    let id = sim.state.cursor.clone().unwrap();
    assert!(id.starts_with("xxh64:2:"), "{id}");
    // The same rows in another order and batching are the same snapshot.
    let reordered = vec![batch(&[(Some(2), "b"), (Some(1), "a")])];
    let o = sim.part(reordered, RunReport::default(), 1).await.unwrap();
    assert!(matches!(o, Outcome::Unchanged));
    assert!(
        matches!(&sim.events[..], [.., (EventKind::SnapshotUnchanged, m)] if m.contains(&id)),
        "{:?}",
        sim.events
    );
    // The source's own id wins over the content hash, and its "unchanged" is believed.
    let etag = RunReport {
        snapshot_id: Some("etag-1".into()),
        ..RunReport::default()
    };
    sim.part(vec![batch(&[(Some(3), "c")])], etag, 1)
        .await
        .unwrap();
    assert_eq!(sim.state.cursor.as_deref(), Some("etag-1"));
    assert_eq!(ids(&sim.table), vec![row(3, "c")]);
    let unchanged = RunReport {
        unchanged: true,
        ..RunReport::default()
    };
    let o = sim.part(vec![batch(&[])], unchanged, 1).await.unwrap();
    assert!(matches!(o, Outcome::Unchanged));
    assert_eq!(ids(&sim.table), vec![row(3, "c")]);
}

#[tokio::test]
async fn merge_numbers_rows_in_arrival_order_and_needs_every_key() {
    let spec = build(None, WriteMode::Merge, |_| {}).unwrap();
    let mut sim = Sim::new(spec);
    let (staged, _) = sim
        .stage(vec![
            batch(&[(Some(1), "a"), (Some(1), "b")]),
            batch(&[(Some(1), "c")]),
        ])
        .unwrap();
    let seq: Vec<i64> = staged
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(SEQ_COLUMN).unwrap();
            let c = c.as_any().downcast_ref::<Int64Array>().unwrap();
            c.values().to_vec()
        })
        .collect();
    assert_eq!(seq, [0, 1, 2]);
    // The last row of a key wins.
    sim.part(
        vec![
            batch(&[(Some(1), "a"), (Some(1), "b")]),
            batch(&[(Some(1), "c")]),
        ],
        RunReport::default(),
        1,
    )
    .await
    .unwrap();
    assert_eq!(ids(&sim.table), vec![row(1, "c")]);
    let e = sim
        .part(vec![batch(&[(None, "no key")])], RunReport::default(), 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 row(s) have a NULL in key column 'id'"), "{e}");
    let e = build(None, WriteMode::Merge, |b| b.key = vec!["nope".into()])
        .map(|spec| Sim::new(spec).stage(vec![batch(&[(Some(1), "a")])]).err())
        .unwrap()
        .unwrap()
        .to_string();
    assert!(
        e.contains("key column 'nope' is not in the SELECT's output; its columns are id, v"),
        "{e}"
    );
}

/// A second schema for the table: `id` as text, and a new column `w`.
fn drifted(rows: &[(&str, &str)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("v", DataType::Utf8, true),
        Field::new("w", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "new"))),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn schema_changes_follow_the_policy_in_each_mode() {
    for mode in MODES {
        for policy in [
            SchemaPolicy::Evolve,
            SchemaPolicy::Discard,
            SchemaPolicy::Freeze,
        ] {
            let what = format!("{mode:?} x {policy:?}");
            let spec = build(None, mode, |b| b.on_schema_change = Some(policy)).unwrap();
            let mut sim = Sim::new(spec);
            sim.part(vec![batch(&[(Some(1), "a")])], RunReport::default(), 1)
                .await
                .unwrap();
            let drift = || vec![drifted(&[("2", "b"), ("three", "c")])];
            let result = sim.part(drift(), RunReport::default(), 1).await;
            let kinds: Vec<EventKind> = sim.events.iter().map(|e| e.0).collect();
            let schema = sim.table_schema.clone().unwrap();
            let id_type = schema.field_with_name("id").unwrap().data_type().clone();
            match policy {
                SchemaPolicy::Freeze => {
                    let e = result.expect_err(&what).to_string();
                    assert!(e.contains("'id'"), "{what}: {e}");
                    assert_eq!(id_type, DataType::Int64, "{what}: nothing committed");
                }
                SchemaPolicy::Discard => {
                    result.expect(&what);
                    // 'three' is not a number: its row is left out and counted; '2' fits.
                    assert_eq!(sim.counters.rows_discarded, 1, "{what}");
                    assert!(
                        kinds.contains(&EventKind::RowsDiscarded),
                        "{what}: {kinds:?}"
                    );
                    assert_eq!(id_type, DataType::Int64, "{what}");
                }
                SchemaPolicy::Evolve => {
                    result.expect(&what);
                    assert_eq!(sim.counters.rows_discarded, 0, "{what}");
                    if mode == WriteMode::Append {
                        // The table keeps its old rows: 'id' becomes text for both.
                        assert_eq!(id_type, DataType::Utf8, "{what}");
                        assert!(
                            kinds.contains(&EventKind::ColumnVariant),
                            "{what}: {kinds:?}"
                        );
                    }
                }
            }
            if policy != SchemaPolicy::Freeze {
                // The new column is added under every policy that commits.
                assert!(schema.field_with_name("w").is_ok(), "{what}: {schema:?}");
                assert!(kinds.contains(&EventKind::ColumnAdded), "{what}: {kinds:?}");
            }
        }
    }
}

#[test]
fn an_empty_part_writes_a_file_only_to_create_or_empty_the_table() {
    for mode in MODES {
        let spec = build(None, mode, |_| {}).unwrap();
        let s = WriteStrategy::new(&spec, &rows_schema()).unwrap();
        assert!(
            s.keeps_empty_part(false),
            "{mode:?}: the first part creates the table"
        );
        assert_eq!(
            s.keeps_empty_part(true),
            mode == WriteMode::Replace,
            "{mode:?}"
        );
    }
}

/// A pipeline stored before a check existed (here a token cursor with MODE REPLACE, put
/// into the catalog without the builder) fails when it runs, as a failed run recorded in
/// `hakiri.runs` with the check's message, and reads nothing.
#[tokio::test]
async fn a_stored_pipeline_that_fails_a_check_is_a_failed_run() {
    let catalog = Arc::new(crate::catalog::MemoryCatalog::new());
    let mut spec = build(Some(CursorKind::OpaqueToken), WriteMode::Append, |_| {}).unwrap();
    spec.mode = WriteMode::Replace;
    crate::catalog::Catalog::upsert_pipeline(catalog.as_ref(), &spec, Utc::now()).unwrap();
    let (_dir, engine) = engine_on(catalog.clone());
    let err = engine.run_pipeline("p", &|_| {}).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("MODE REPLACE would keep only the last page group")
            && msg.contains("nothing from this run was committed"),
        "{msg}"
    );
    let runs = crate::catalog::Catalog::runs(catalog.as_ref(), Some("p")).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, crate::types::RunStatus::Failed);
    assert!(
        runs[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("MODE REPLACE")),
        "{runs:?}"
    );
}

/// An engine in a fresh folder on `catalog`.
fn engine_on(catalog: Arc<dyn crate::catalog::Catalog>) -> (tempfile::TempDir, crate::Engine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::Engine::open(
        dir.path(),
        crate::EngineOptions {
            catalog: Some(catalog),
            ..crate::EngineOptions::default()
        },
    )
    .unwrap();
    (dir, engine)
}

/// The memory catalog with faults: `move_cursor_at_begin` moves a pipeline's cursor (as
/// RESET CURSOR in another process would) just before a run takes its lock, after the run
/// read it; `lose_commit_replies` applies every commit and then reports it failed (a
/// server catalog whose connection broke while it committed).
#[derive(Debug, Default)]
struct Faulty {
    inner: crate::catalog::MemoryCatalog,
    move_cursor_at_begin: bool,
    lose_commit_replies: bool,
}

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> $ret { self.inner.$name($($arg),*) })*
    };
}

impl crate::catalog::Catalog for Faulty {
    fn begin_run(
        &self,
        run: &crate::catalog::NewRun,
        is_alive: crate::catalog::IsAlive<'_>,
    ) -> Result<()> {
        if self.move_cursor_at_begin {
            let moved = crate::catalog::CursorMove {
                pipeline: run.pipeline.clone(),
                kind: "monotonic".into(),
                to: Some("0".into()),
                event: (EventKind::CursorReset, "reset by another process".into()),
                at: run.started_at,
            };
            self.inner.move_cursor(&moved, is_alive)?;
        }
        self.inner.begin_run(run, is_alive)
    }
    fn commit(&self, commit: &crate::catalog::RunCommit) -> Result<crate::catalog::CommitOutcome> {
        let outcome = self.inner.commit(commit)?;
        if self.lose_commit_replies {
            return Err(crate::error::Error::Upstream(
                "the connection to the catalog broke while it committed".into(),
            ));
        }
        Ok(outcome)
    }
    delegate! {
        upsert_source(spec: &crate::types::SourceSpec, now: chrono::DateTime<Utc>) -> Result<()>;
        drop_source(name: &str) -> Result<bool>;
        list_sources() -> Result<Vec<crate::types::SourceSpec>>;
        source_schemas(source: &str) -> Result<Vec<crate::catalog::SourceSchema>>;
        put_source_schema(schema: &crate::catalog::SourceSchema) -> Result<()>;
        upsert_pipeline(spec: &PipelineSpec, now: chrono::DateTime<Utc>) -> Result<()>;
        drop_pipeline(name: &str) -> Result<bool>;
        list_pipelines() -> Result<Vec<PipelineSpec>>;
        cursor(pipeline: &str) -> Result<Option<String>>;
        cursor_boundary(pipeline: &str) -> Result<Option<String>>;
        cursor_history(pipeline: &str) -> Result<Vec<crate::catalog::CursorEntry>>;
        heartbeat(run_id: &str, at: chrono::DateTime<Utc>) -> Result<()>;
        fail_run(run_id: &str, ended_at: chrono::DateTime<Utc>, counters: &RunCounters, error: &str) -> Result<()>;
        move_cursor(m: &crate::catalog::CursorMove, is_alive: crate::catalog::IsAlive<'_>) -> Result<()>;
        runs(pipeline: Option<&str>) -> Result<Vec<crate::catalog::RunRecord>>;
        recover_runs(is_alive: crate::catalog::IsAlive<'_>, now: chrono::DateTime<Utc>) -> Result<Vec<String>>;
        tables() -> Result<Vec<crate::catalog::TableEntry>>;
        table_files(table: &str) -> Result<Vec<crate::catalog::FileEntry>>;
        all_files() -> Result<Vec<String>>;
        purge_retired(before: chrono::DateTime<Utc>) -> Result<Vec<String>>;
        schedules() -> Result<Vec<crate::catalog::ScheduleState>>;
        put_schedule(state: &crate::catalog::ScheduleState) -> Result<()>;
        add_event(at: chrono::DateTime<Utc>, kind: EventKind, subject: &str, message: &str, run_id: Option<&str>) -> Result<()>;
        prune(cutoffs: &crate::catalog::PruneCutoffs) -> Result<crate::catalog::Pruned>;
        drop_table(table: &str, at: chrono::DateTime<Utc>, is_alive: crate::catalog::IsAlive<'_>) -> Result<Option<crate::catalog::DroppedTable>>;
        state_table(name: &str) -> Result<crate::catalog::state_tables::RawTable>;
        replace_state(tables: &[(String, crate::catalog::state_tables::RawTable)]) -> Result<()>;
    }
}

/// Regression: a run read its cursor before taking the run lock, so a RESET CURSOR (or
/// another process's run ending, or DROP CONTEXT TABLE) landing in between was overwritten
/// by the run's commit from the old cursor, skipping the rows between. The run now looks
/// again under the lock and starts from the cursor committed then, saying so in an event.
#[tokio::test]
async fn a_cursor_moved_between_read_and_lock_is_read_again() {
    let catalog = Arc::new(Faulty {
        move_cursor_at_begin: true,
        ..Faulty::default()
    });
    let (_dir, engine) = engine_on(catalog.clone());
    engine
        .execute(
            "CREATE PIPELINE p CURSOR MONOTONIC (id) INITIAL '0' AS \
             INSERT INTO context.t SELECT * FROM (VALUES (10), (20), (50)) AS v(id) WHERE id > $cursor",
        )
        .await
        .unwrap();
    // A committed cursor at 40 (the fault resets it to 0 as the next run takes its lock).
    let first = crate::catalog::NewRun {
        run_id: "r0".into(),
        pipeline: "p".into(),
        started_at: Utc::now(),
        cursor_start: None,
        holder: crate::run::this_holder(),
    };
    crate::catalog::Catalog::begin_run(&catalog.inner, &first, &|_| false).unwrap();
    let mut c = commit_at("r0", "40");
    c.finish = Some(crate::types::RunStatus::Succeeded);
    crate::catalog::Catalog::commit(&catalog.inner, &c).unwrap();

    let summary = engine.run_pipeline("p", &|_| {}).await.unwrap();
    assert_eq!(
        summary.counters.rows_written, 3,
        "read from the reset cursor (0), not from 40"
    );
    let events = crate::catalog::Catalog::state_table(catalog.as_ref(), "events").unwrap();
    assert!(
        format!("{:?}", events.rows).contains("the cursor moved from 40 to 0 while run"),
        "{:?}",
        events.rows
    );
    assert_eq!(
        crate::catalog::Catalog::cursor(catalog.as_ref(), "p")
            .unwrap()
            .as_deref(),
        Some("50")
    );
}

fn commit_at(run: &str, cursor: &str) -> crate::catalog::RunCommit {
    crate::catalog::RunCommit {
        cursor: Some(("monotonic".into(), cursor.into())),
        ..crate::catalog::RunCommit::new(run, "p", "t", Utc::now())
    }
}

/// Regression: a commit reported failed although it landed (the reply lost with the
/// connection) had its files deleted, leaving the table naming missing files. Now only
/// files the catalog does not name are deleted.
#[tokio::test]
async fn a_commit_that_landed_but_was_reported_failed_keeps_its_files() {
    let catalog = Arc::new(Faulty {
        lose_commit_replies: true,
        ..Faulty::default()
    });
    let (_dir, engine) = engine_on(catalog.clone());
    engine
        .execute("CREATE PIPELINE p AS INSERT INTO context.t SELECT 1 AS x")
        .await
        .unwrap();
    let err = engine
        .run_pipeline("p", &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("broke while it committed"), "{err}");
    let files = crate::catalog::Catalog::table_files(catalog.as_ref(), "t").unwrap();
    assert_eq!(files.len(), 1, "the commit landed");
    for f in &files {
        assert!(
            engine.store().absolute(&f.path).exists(),
            "{} is named by the catalog but was deleted",
            f.path
        );
    }
}
