//! The context store: Parquet files under `.hakiri/store/<table>/`, visible only once a
//! catalog transaction names them (ARCHITECTURE.md, commit protocol).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::file_format::parquet::{ParquetFormat, transform_schema_to_view};
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result as DfResult;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

use crate::catalog::{Catalog, FileEntry};
use crate::error::{Error, Result};
use crate::ports::{Destination, StagedWrite, Transform};

/// Column holding the id of the run that loaded a row.
pub const RUN_ID_COLUMN: &str = "_hakiri_run_id";
/// Column holding the time the run that loaded a row started.
pub const LOADED_AT_COLUMN: &str = "_hakiri_loaded_at";

/// Rows per Parquet row group: bounds the writer's buffer.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The context store rooted at `.hakiri/store`.
#[derive(Debug, Clone)]
pub struct ContextStore {
    root: PathBuf,
    /// Each committed file's schema, read once from its Parquet footer (files never change).
    schemas: Arc<Mutex<HashMap<String, SchemaRef>>>,
    /// With keys every file is written encrypted with the current one (Parquet modular
    /// encryption: footer and columns, AES-GCM) and read with the one its footer names.
    key: Option<Arc<StoreKeys>>,
    /// The id of the key each file read so far was written with (`None`: a plain file).
    file_keys: Arc<Mutex<HashMap<String, Option<String>>>>,
}

pub use crate::keys::{StoreKey, StoreKeys};

impl ContextStore {
    pub fn open(root: PathBuf) -> Result<Self> {
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        Ok(ContextStore {
            root,
            schemas: Arc::default(),
            key: None,
            file_keys: Arc::default(),
        })
    }

    /// The store read and written with `keys` (`None`: plain files).
    pub fn with_key(mut self, keys: Option<StoreKeys>) -> Self {
        self.key = keys.map(Arc::new);
        self
    }

    /// A session to read the store's files in (its keys registered).
    pub fn session(&self) -> datafusion::prelude::SessionContext {
        let ctx = datafusion::prelude::SessionContext::new();
        self.register_keys(&ctx);
        ctx
    }

    /// Lets `ctx` read the store's encrypted files.
    pub fn register_keys(&self, ctx: &datafusion::prelude::SessionContext) {
        if let Some(keys) = &self.key {
            keys.register(&ctx.runtime_env());
        }
    }

    /// Whether a committed file is not under the current key (written with a previous one,
    /// or plain before encryption was turned on): `hakiri context rekey` rewrites it.
    pub fn needs_rekey(&self, relative: &str) -> Result<bool> {
        let Some(keys) = &self.key else {
            return Ok(false);
        };
        self.file_schema(relative)?;
        let used = self
            .file_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(relative)
            .cloned()
            .flatten();
        Ok(used.as_deref() != Some(keys.current.id()))
    }

    /// The Arrow schema of a committed file.
    pub fn file_schema(&self, relative: &str) -> Result<SchemaRef> {
        if let Some(s) = self
            .schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(relative)
        {
            return Ok(s.clone());
        }
        let path = self.absolute(relative);
        let file = File::open(&path).map_err(|e| {
            Error::Internal(format!(
                "committed file {} is missing: {e}; the context store was changed outside Hakiri",
                path.display()
            ))
        })?;
        let mut options = ArrowReaderOptions::new();
        let seen = Arc::new(Mutex::new(None));
        if let Some(keys) = &self.key {
            options = options.with_file_decryption_properties(keys.decryption(Some(seen.clone()))?);
        }
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .map_err(|e| self.read_error(&path, e))?;
        let schema = builder.schema().clone();
        let used = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.file_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(relative.to_string(), used);
        self.schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(relative.to_string(), schema.clone());
        Ok(schema)
    }

    /// A table's schema: its files' schemas folded in commit order (see [`crate::schema`]).
    pub fn table_schema(&self, files: &[FileEntry]) -> Result<Option<Schema>> {
        let schemas = files
            .iter()
            .map(|f| self.file_schema(&f.path))
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::schema::fold(schemas))
    }

    /// A table over an explicit list of committed files, read with the table's schema
    /// (DataFusion casts each file's columns to it).
    pub fn table_provider(&self, files: &[FileEntry]) -> Result<Arc<dyn TableProvider>> {
        let schema = self
            .table_schema(files)?
            .ok_or_else(|| Error::Internal("a table needs at least one file".into()))?;
        self.listing_table(files, schema)
    }

    /// A table over `files`, read with `schema` (a whole table's schema, when `files` are
    /// some of its files).
    pub fn table_provider_with(
        &self,
        files: &[FileEntry],
        schema: Schema,
    ) -> Result<Arc<dyn TableProvider>> {
        self.listing_table(files, schema)
    }

    /// The table as queries see it: text and binary columns are read as Arrow's view types,
    /// as DataFusion reads Parquet whose schema it infers (`schema_force_view_types`). Views
    /// point into the decoded pages instead of copying every value: the group-by over a
    /// low-cardinality string of the benchmark takes half the time. (Merges keep
    /// `table_provider`: the files they write keep the table's types.)
    pub fn query_provider(&self, files: &[FileEntry]) -> Result<Arc<dyn TableProvider>> {
        let schema = self
            .table_schema(files)?
            .ok_or_else(|| Error::Internal("a table needs at least one file".into()))?;
        self.listing_table(files, transform_schema_to_view(&schema))
    }

    fn listing_table(&self, files: &[FileEntry], schema: Schema) -> Result<Arc<dyn TableProvider>> {
        let urls = files
            .iter()
            .map(|f| {
                ListingTableUrl::parse(self.absolute(&f.path).to_string_lossy())
                    .map_err(Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut format = ParquetFormat::default();
        if self.key.is_some() {
            // Each file with the key its footer names (the keys are registered in the
            // session: `register_keys`).
            let mut options = TableParquetOptions::default();
            options.crypto.factory_id = Some(crate::keys::FACTORY_ID.to_string());
            format = format.with_options(options);
        }
        let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::new(schema));
        Ok(Arc::new(ListingTable::try_new(config)?))
    }

    /// A footer that cannot be read, with what to do when it is a matter of keys.
    fn read_error(&self, path: &Path, e: ParquetError) -> Error {
        let text = e.to_string();
        if let Some(at) = text.find("written with store key") {
            Error::Config(format!("{} is {}", path.display(), &text[at..]))
        } else if text.contains("decryption properties were not provided") {
            Error::Config(format!(
                "{} is encrypted and this project has no store key: set [store] encryption_key = \"env:HAKIRI_STORE_KEY\" in the manifest and the variable to the store's key",
                path.display()
            ))
        } else if text.contains("unable to decrypt") || text.contains("Failed decryption") {
            Error::Config(format!(
                "the store key does not decrypt {}: it was written with another key; set HAKIRI_STORE_KEY (or what [store] encryption_key names) to the key the store was written with",
                path.display()
            ))
        } else {
            Error::Internal(format!("reading {}: {e}", path.display()))
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn absolute(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Deletes files under the store that the catalog does not name and no live run is
    /// writing. `catalog_view` returns the named files and the ids of live runs; it is
    /// called after the folders are listed, so a run that wrote a listed file had begun by
    /// then and is among the live ones. Returns the paths removed, relative to the store.
    pub fn remove_orphans(
        &self,
        catalog_view: impl FnOnce() -> Result<(Vec<String>, Vec<String>)>,
    ) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let Ok(tables) = fs::read_dir(&self.root) else {
            return Ok(Vec::new());
        };
        for table in tables.flatten() {
            if !table.path().is_dir() {
                continue;
            }
            let tname = table.file_name().to_string_lossy().into_owned();
            for dir in [table.path(), table.path().join("_staging")] {
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                for f in entries.flatten().filter(|f| f.path().is_file()) {
                    let rel = f
                        .path()
                        .strip_prefix(&self.root)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| format!("{tname}/{}", f.file_name().to_string_lossy()));
                    found.push((rel, f.file_name().to_string_lossy().into_owned(), f.path()));
                }
            }
        }
        let (committed, live_runs) = catalog_view()?;
        let committed: std::collections::HashSet<&str> =
            committed.iter().map(|s| s.as_str()).collect();
        let mut removed = Vec::new();
        for (rel, name, path) in found {
            // Run files are named after their run: `<run_id>[-part].parquet[.tmp]`.
            let live = live_runs.iter().any(|r| name.starts_with(r.as_str()));
            if !committed.contains(rel.as_str()) && !live {
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                removed.push(rel);
            }
        }
        Ok(removed)
    }
}

impl Destination for ContextStore {
    fn begin(
        &self,
        table: &str,
        run_id: &str,
        part: u32,
        schema: SchemaRef,
    ) -> Result<Box<dyn StagedWrite>> {
        let dir = self.root.join(table);
        let staging = dir.join("_staging");
        fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        let name = if part == 0 {
            format!("{run_id}.parquet")
        } else {
            format!("{run_id}-{part:04}.parquet")
        };
        let staged = staging.join(format!("{name}.tmp"));
        let file = File::create(&staged).map_err(|e| Error::io(&staged, e))?;
        let props = writer_properties(&schema, self.key.as_deref())?;
        let writer = ArrowWriter::try_new(file, schema, Some(props))
            .map_err(|e| parquet_error(&staged, "opening a Parquet writer", e))?;
        Ok(Box::new(ParquetStagedWrite {
            writer: Some(writer),
            staged,
            dir,
            relative: format!("{table}/{name}"),
            table: table.to_string(),
            run_id: run_id.to_string(),
            rows: 0,
        }))
    }
}

/// How context tables are written: row groups of `ROW_GROUP_ROWS`, text and nested columns
/// Snappy-compressed, fixed-width columns (numbers, times, booleans) stored uncompressed.
/// Snappy gains little on fixed-width values (amounts: 0.73 of their size) and
/// decompressing them was the largest cost of a range query (a quarter of its time, plus
/// the zeroed buffers it fills); the files grow by about 15%.
fn writer_properties(schema: &Schema, keys: Option<&StoreKeys>) -> Result<WriterProperties> {
    let mut props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_compression(Compression::SNAPPY);
    for f in schema.fields() {
        if f.data_type().is_primitive() || *f.data_type() == DataType::Boolean {
            let column = ColumnPath::from(f.name().as_str());
            props = props.set_column_compression(column, Compression::UNCOMPRESSED);
        }
    }
    if let Some(keys) = keys {
        // Uniform encryption: the footer and every column with the current key.
        props = props.with_file_encryption_properties(keys.encryption()?);
    }
    Ok(props.build())
}

/// A Parquet writer's error: a full disk is [`Error::StorageFull`] (the user can act on
/// it), an I/O error is [`Error::Io`], anything else a bug.
fn parquet_error(path: &Path, action: &'static str, e: ParquetError) -> Error {
    if let ParquetError::External(inner) = e {
        return match inner.downcast::<std::io::Error>() {
            Ok(io) if crate::error::io_storage_full(&io) => Error::StorageFull {
                path: path.display().to_string(),
                action,
                source: io,
            },
            Ok(io) => Error::io(path, *io),
            Err(other) => Error::Internal(format!("{action} {}: {other}", path.display())),
        };
    }
    Error::Internal(format!("{action} {}: {e}", path.display()))
}

struct ParquetStagedWrite {
    writer: Option<ArrowWriter<File>>,
    staged: PathBuf,
    dir: PathBuf,
    relative: String,
    table: String,
    run_id: String,
    rows: u64,
}

impl StagedWrite for ParquetStagedWrite {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::Internal("write after finish".into()))?;
        writer
            .write(batch)
            .map_err(|e| parquet_error(&self.staged, "writing Parquet", e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<FileEntry>> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::Internal("finish twice".into()))?;
        let file = writer
            .into_inner()
            .map_err(|e| parquet_error(&self.staged, "closing Parquet", e))?;
        file.sync_all().map_err(|e| Error::io(&self.staged, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io(&self.staged, e))?
            .len();
        drop(file);
        let target = self
            .dir
            .join(Path::new(&self.relative).file_name().unwrap_or_default());
        fs::rename(&self.staged, &target).map_err(|e| Error::io(&target, e))?;
        // Make the rename itself durable before the catalog names the file.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(&self.dir, e))?;
        Ok(vec![FileEntry {
            path: self.relative.clone(),
            table: self.table.clone(),
            run_id: self.run_id.clone(),
            rows: self.rows,
            bytes,
        }])
    }

    fn abort(mut self: Box<Self>) {
        drop(self.writer.take());
        let _ = fs::remove_file(&self.staged);
    }
}

/// Adds the lineage columns `_hakiri_run_id` and `_hakiri_loaded_at` to every batch.
#[derive(Debug, Clone)]
pub struct LineageColumns {
    pub run_id: String,
    pub loaded_at: DateTime<Utc>,
}

fn loaded_at_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl Transform for LineageColumns {
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        if let Some(f) = input
            .fields()
            .iter()
            .find(|f| f.name().starts_with("_hakiri_"))
        {
            return Err(Error::InvalidInput(format!(
                "the pipeline's SELECT returns a column named '{}': names starting with _hakiri_ are reserved for lineage columns; rename it with AS",
                f.name()
            )));
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(RUN_ID_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(LOADED_AT_COLUMN, loaded_at_type(), false));
        Ok(Arc::new(Schema::new(fields)))
    }

    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let schema = self.output_schema(&batch.schema())?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(self.run_id.as_str(), n),
        )));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![self.loaded_at.timestamp_micros(); n])
                .with_timezone("UTC"),
        ));
        RecordBatch::try_new(schema, columns)
            .map_err(|e| Error::Internal(format!("adding lineage columns: {e}")))
    }
}

/// Renders a schema as the text recorded in `hakiri.schema_versions`.
pub fn schema_text(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{} {}{}",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " NOT NULL" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `context` schema: each table resolves to its committed files when a query is planned,
/// so a query sees a consistent snapshot even while a run is writing.
#[derive(Debug)]
pub struct ContextSchemaProvider {
    catalog: Arc<dyn Catalog>,
    store: ContextStore,
}

impl ContextSchemaProvider {
    pub fn new(catalog: Arc<dyn Catalog>, store: ContextStore) -> Self {
        ContextSchemaProvider { catalog, store }
    }
}

#[async_trait]
impl SchemaProvider for ContextSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.catalog
            .tables()
            .map(|t| t.into_iter().map(|t| t.name).collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let files = self.catalog.table_files(name)?;
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.store.query_provider(&files)?))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog
            .table_files(name)
            .map(|f| !f.is_empty())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, ListArray};
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn fixed_width_columns_are_stored_uncompressed_and_text_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContextStore::open(dir.path().to_path_buf()).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Float64, true),
            Field::new("kind", DataType::Utf8, true),
            Field::new_list("tags", Field::new_list_field(DataType::Int64, true), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Float64Array::from(vec![1.5, 2.5])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
                    Some(vec![Some(1)]),
                    None,
                ])),
            ],
        )
        .unwrap();
        let mut write = store.begin("t", "run1", 0, schema).unwrap();
        write.write(&batch).unwrap();
        let files = write.finish().unwrap();
        let file = File::open(store.absolute(&files[0].path)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let row_group = reader.metadata().row_group(0);
        let compression: Vec<(String, Compression)> = row_group
            .columns()
            .iter()
            .map(|c| (c.column_path().string(), c.compression()))
            .collect();
        assert_eq!(
            compression,
            vec![
                ("id".to_string(), Compression::UNCOMPRESSED),
                ("amount".to_string(), Compression::UNCOMPRESSED),
                ("kind".to_string(), Compression::SNAPPY),
                ("tags.list.item".to_string(), Compression::SNAPPY),
            ]
        );
        let read: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(read, vec![batch]);
    }
}
