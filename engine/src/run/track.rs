//! Cursor tracking, one kind each: what a part's rows say about where the cursor goes.
//! Pure: Arrow batches in, the rows to keep and the cursor's evidence out; no files, no
//! network (the unit tests in `run::tests` drive it with batches).
//!
//! - monotonic: the NULL rule, a backfill window's end, the `>=` boundary rows, the maximum;
//! - token: nothing here, the source keeps its token and boundary page (`RunReport`);
//! - snapshot: a content hash of the rows, the id when the source gives none;
//! - no cursor: nothing.

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::kernels::{boolean::or_kleene, cmp};
use datafusion::arrow::compute::{filter_record_batch, is_not_null, is_null};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;

use crate::cursor::{self, BoundaryRows, ContentHash, RowHasher, Skipper, column_max};
use crate::error::{Error, Result};
use crate::rewind::Window;
use crate::types::{CursorKind, NullRule, PipelineSpec, WriteMode};

/// A run's cursor between commits: what it reads from and what it must not go below.
#[derive(Debug, Clone, Default)]
pub(crate) struct CursorState {
    /// The committed cursor (or INITIAL before the first commit; a backfill's window start).
    pub cursor: Option<String>,
    /// `cursor` is the pipeline's INITIAL value: nothing was committed yet.
    pub is_initial: bool,
    /// The records already written at the committed cursor, skipped when read again.
    pub boundary: Option<BoundaryRows>,
    /// A monotonic append run whose query reads `>= $cursor`: the rows at the committed
    /// value are read again and those in `boundary` skipped.
    pub inclusive_append: bool,
    /// A backfill's window (`cursor` is its start). It never moves the committed cursor.
    pub window: Option<Window>,
    /// The committed monotonic cursor, below which the cursor never moves.
    pub floor: Option<String>,
}

impl CursorState {
    /// The state a run starts from: the committed cursor (or INITIAL) and its boundary (as
    /// the catalog keeps it), or a backfill's window.
    ///
    /// # Errors
    /// `InvalidInput` for a backfill of a pipeline that has no committed cursor yet.
    pub fn start(
        spec: &PipelineSpec,
        committed: Option<String>,
        committed_is_initial: bool,
        boundary_text: Option<String>,
        window: Option<Window>,
    ) -> Result<Self> {
        let floor = committed.clone().filter(|_| !committed_is_initial);
        if window.is_some() && floor.is_none() {
            return Err(Error::InvalidInput(format!(
                "pipeline '{0}' has no committed cursor yet: run it once (hakiri run {0}) before backfilling a window",
                spec.name
            )));
        }
        let (cursor, is_initial) = match &window {
            Some(w) => (Some(w.from.clone()), false),
            None => (committed, committed_is_initial),
        };
        let boundary = match boundary_text {
            Some(text) if !committed_is_initial && window.is_none() => {
                Some(BoundaryRows::parse(&text, &spec.name)?)
            }
            _ => None,
        };
        Ok(CursorState {
            cursor,
            is_initial,
            boundary,
            inclusive_append: reads_boundary_again(spec)?,
            window,
            floor,
        })
    }

    /// The value the catalog holds now: a backfill's cursor is its window's start and the
    /// committed value its floor.
    pub fn committed_value(&self) -> Option<&str> {
        match &self.window {
            Some(_) => self.floor.as_deref(),
            None => self.cursor.as_deref(),
        }
    }

    /// Whether the query's `$cursor` is shifted by LAG: not before the first commit and not
    /// in a backfill, which reads its window as given.
    pub fn applies_lag(&self) -> bool {
        !self.is_initial && self.window.is_none()
    }
}

/// Whether a pipeline is a monotonic append whose query reads `>= $cursor`: each run reads
/// the rows at the committed value again, and those already written are skipped by hash.
fn reads_boundary_again(spec: &PipelineSpec) -> Result<bool> {
    let monotonic = spec
        .cursor
        .as_ref()
        .is_some_and(|c| c.kind == CursorKind::Monotonic);
    if !monotonic || spec.mode != WriteMode::Append {
        return Ok(false);
    }
    let mut body = crate::sql::parse_pipeline_body(&spec.sql)?;
    let boundaries = cursor::rewrite_predicate(&mut body.query, &spec.name)?;
    Ok(boundaries.contains(&cursor::Boundary::Inclusive))
}

/// What a part's rows said about the cursor.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    /// The largest monotonic cursor value written.
    pub max: Option<ScalarValue>,
    /// A snapshot's content hash (its id when the source gives none).
    pub hash: Option<String>,
    /// Rows with a NULL monotonic cursor (skipped or loaded, by the NULL rule).
    pub null_cursor_rows: u64,
    /// A `>=` monotonic append run: the rows written at the new cursor value.
    pub boundary: Option<BoundaryRows>,
    /// Rows earlier runs wrote at the committed value that this one did not read again.
    pub boundary_missing: u64,
}

/// The cursor tracking of one part, by the pipeline's cursor kind.
pub(crate) enum Tracker {
    /// No cursor, or a token (the source tracks it).
    Untracked,
    Monotonic(Box<Monotonic>),
    Snapshot(ContentHash),
}

impl Tracker {
    /// The tracker for `spec`'s cursor over rows of `input` (the plan's output).
    ///
    /// # Errors
    /// `InvalidInput` when the cursor column is not in the SELECT's output or a committed
    /// value does not fit its type.
    pub fn new(spec: &PipelineSpec, state: &CursorState, input: &SchemaRef) -> Result<Self> {
        Ok(match spec.cursor.as_ref().map(|c| (c, c.kind)) {
            Some((c, CursorKind::Monotonic)) => {
                let column = c.column.as_deref().unwrap_or_default();
                let idx = column_index(spec, input, column, "cursor")?;
                Tracker::Monotonic(Box::new(Monotonic::new(
                    spec, state, input, idx, c.on_null,
                )?))
            }
            Some((_, CursorKind::SnapshotId)) => Tracker::Snapshot(ContentHash::new()),
            Some((_, CursorKind::OpaqueToken)) | None => Tracker::Untracked,
        })
    }

    /// Applies the cursor's rules to a batch as read: returns the rows to keep and how many
    /// were skipped (`ON NULL SKIP`, or written already at a `>=` boundary).
    ///
    /// # Errors
    /// `InvalidInput` for a NULL cursor under `ON NULL FAIL`.
    pub fn observe(&mut self, batch: RecordBatch) -> Result<(RecordBatch, u64)> {
        match self {
            Tracker::Monotonic(m) => m.observe(batch),
            Tracker::Untracked | Tracker::Snapshot(_) => Ok((batch, 0)),
        }
    }

    /// Records a batch as written (conformed to the table): a snapshot's content.
    pub fn written(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Tracker::Snapshot(h) = self {
            h.update(batch)?;
        }
        Ok(())
    }

    pub fn finish(self, state: &CursorState) -> Tracked {
        match self {
            Tracker::Untracked => Tracked::default(),
            Tracker::Snapshot(h) => Tracked {
                hash: Some(h.finish()),
                ..Tracked::default()
            },
            Tracker::Monotonic(m) => m.finish(state),
        }
    }
}

/// A column of the plan's output, by name.
pub(crate) fn column_index(
    spec: &PipelineSpec,
    input: &SchemaRef,
    column: &str,
    what: &str,
) -> Result<usize> {
    input.index_of(column).map_err(|_| {
        Error::InvalidInput(format!(
            "pipeline '{}': {what} column '{column}' is not in the SELECT's output; its columns are {}",
            spec.name,
            input
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// A monotonic cursor's tracking: NULLs, a backfill's end, the `>=` boundary, the maximum.
pub(crate) struct Monotonic {
    pipeline: String,
    column: String,
    idx: usize,
    rule: NullRule,
    /// A backfill's end: rows past it are left out.
    window_to: Option<ScalarValue>,
    at_boundary: Option<AtBoundary>,
    max: Option<ScalarValue>,
    nulls: u64,
}

impl Monotonic {
    fn new(
        spec: &PipelineSpec,
        state: &CursorState,
        input: &SchemaRef,
        idx: usize,
        rule: NullRule,
    ) -> Result<Self> {
        let ty = input.field(idx).data_type();
        let window_to = match state.window.as_ref().and_then(|w| w.to.as_ref()) {
            Some(to) => Some(cursor::bind(to, ty, None, &spec.name)?),
            None => None,
        };
        let at_boundary = if state.inclusive_append {
            let committed = match (&state.cursor, &state.boundary) {
                (Some(value), Some(b)) if !state.is_initial => {
                    Some((cursor::bind(value, ty, None, &spec.name)?, b.skipper()))
                }
                _ => None,
            };
            Some(AtBoundary {
                hasher: RowHasher::new(input)?,
                idx,
                committed,
                at_max: Vec::new(),
            })
        } else {
            None
        };
        Ok(Monotonic {
            pipeline: spec.name.clone(),
            column: input.field(idx).name().clone(),
            idx,
            rule,
            window_to,
            at_boundary,
            max: None,
            nulls: 0,
        })
    }

    fn observe(&mut self, mut batch: RecordBatch) -> Result<(RecordBatch, u64)> {
        let mut skipped = 0;
        let idx = self.idx;
        let n = batch.column(idx).null_count() as u64;
        if n > 0 {
            match self.rule {
                NullRule::Fail => {
                    return Err(Error::InvalidInput(format!(
                        "pipeline '{}': {n} row(s) have a NULL cursor column '{c}'; a NULL cannot be compared with the cursor. Choose what happens to them: CURSOR MONOTONIC ({c}) ... ON NULL SKIP (leave them out, counted) or ON NULL LOAD (load them), or COALESCE the column in the SELECT",
                        self.pipeline,
                        c = self.column,
                    )));
                }
                NullRule::Skip => {
                    let keep = is_not_null(batch.column(idx).as_ref())?;
                    batch = filter_record_batch(&batch, &keep)?;
                    skipped += n;
                }
                NullRule::Load => {}
            }
            self.nulls += n;
        }
        if let Some(to) = &self.window_to {
            let keep = cmp::lt_eq(batch.column(idx), &to.to_scalar()?)?;
            // NULL cursors (ON NULL LOAD) are not past the window's end.
            let keep = or_kleene(&keep, &is_null(batch.column(idx).as_ref())?)?;
            batch = filter_record_batch(&batch, &keep)?;
        }
        let hashes = match self.at_boundary.as_mut() {
            Some(b) => {
                let (kept, hashes, n) = b.skip_written(&batch)?;
                batch = kept;
                skipped += n;
                hashes
            }
            None => Vec::new(),
        };
        if let Some(v) = column_max(batch.column(idx))? {
            let order = self.max.as_ref().map(|m| v.partial_cmp(m));
            if matches!(order, None | Some(Some(std::cmp::Ordering::Greater))) {
                self.max = Some(v.clone());
                if let Some(b) = self.at_boundary.as_mut() {
                    b.at_max.clear();
                }
            }
            if let Some(b) = self.at_boundary.as_mut()
                && order != Some(Some(std::cmp::Ordering::Less))
            {
                b.collect_at(&batch, &v, &hashes)?;
            }
        }
        Ok((batch, skipped))
    }

    fn finish(self, state: &CursorState) -> Tracked {
        let (boundary, boundary_missing) = match self.at_boundary {
            Some(b) => {
                let missing = b.committed.as_ref().map_or(0, |(_, s)| s.missing());
                (b.finish(state, self.max.as_ref()), missing)
            }
            None => (None, 0),
        };
        Tracked {
            max: self.max,
            hash: None,
            null_cursor_rows: self.nulls,
            boundary,
            boundary_missing,
        }
    }
}

/// A `>=` monotonic append run's boundary rows: the rows at the committed value that
/// earlier runs wrote are skipped, and the rows at the largest value seen are collected
/// (hashed) as the next commit's boundary.
struct AtBoundary {
    hasher: RowHasher,
    /// The cursor column.
    idx: usize,
    /// The committed cursor value and what was written at it.
    committed: Option<(ScalarValue, Skipper)>,
    /// Hashes of the rows written at the largest cursor value so far.
    at_max: Vec<u64>,
}

impl AtBoundary {
    /// Drops the rows earlier runs wrote at the committed value; returns the rows kept,
    /// their hashes and how many were dropped.
    fn skip_written(&mut self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<u64>, u64)> {
        let hashes = self.hasher.hashes(batch)?;
        let Some((value, skipper)) = self.committed.as_mut() else {
            return Ok((batch.clone(), hashes, 0));
        };
        let at = cmp::eq(batch.column(self.idx), &value.to_scalar()?)?;
        let keep: Vec<bool> = (0..batch.num_rows())
            .map(|i| !(at.is_valid(i) && at.value(i) && skipper.skip(hashes[i])))
            .collect();
        let skipped = keep.iter().filter(|k| !**k).count() as u64;
        if skipped == 0 {
            return Ok((batch.clone(), hashes, 0));
        }
        let mask = BooleanArray::from(keep.clone());
        let kept_hashes = hashes
            .into_iter()
            .zip(&keep)
            .filter_map(|(h, k)| k.then_some(h))
            .collect();
        Ok((filter_record_batch(batch, &mask)?, kept_hashes, skipped))
    }

    /// Adds the rows of `batch` whose cursor equals `max` (the largest value so far).
    fn collect_at(&mut self, batch: &RecordBatch, max: &ScalarValue, hashes: &[u64]) -> Result<()> {
        let at = cmp::eq(batch.column(self.idx), &max.to_scalar()?)?;
        for (i, h) in hashes.iter().enumerate() {
            if at.is_valid(i) && at.value(i) {
                self.at_max.push(*h);
            }
        }
        Ok(())
    }

    /// The boundary to commit: the rows at the new cursor value, which include the
    /// committed boundary's when the value did not move; the committed one when the part
    /// wrote nothing.
    fn finish(self, state: &CursorState, max: Option<&ScalarValue>) -> Option<BoundaryRows> {
        let Some(max) = max else {
            return state.boundary.clone();
        };
        let mut hashes = Vec::new();
        if let (Some((value, _)), Some(b)) = (&self.committed, &state.boundary)
            && value.partial_cmp(max) == Some(std::cmp::Ordering::Equal)
        {
            hashes.extend(&b.hashes);
        }
        hashes.extend(self.at_max);
        Some(BoundaryRows { hashes })
    }
}
