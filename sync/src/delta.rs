//! A context table as a Delta Lake table in the remote (`deltalake`): its Parquet files,
//! uploaded under their local names beside `_delta_log/`, become adds; files the store
//! retired become removes; a schema with new columns becomes a metadata update. One
//! commit per push of a changed table, written only if its version is new (deltalake
//! commits with put-if-absent), so a reader sees each table before or after a push.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, MetadataExt, StructType};
use deltalake::logstore::{StorageConfig, default_logstore};
use deltalake::protocol::{DeltaOperation, SaveMode};
use object_store::prefix::PrefixStore;
use url::Url;

use crate::error::{Result, SyncError};
use crate::remote::Remote;

/// The Delta table of `table` in `remote` (not loaded).
pub fn table(remote: &Remote, table: &str) -> Result<(DeltaTable, Url)> {
    let url = remote.table_url(table);
    let prefixed: Arc<dyn object_store::ObjectStore> = Arc::new(PrefixStore::new(
        remote.store.clone(),
        remote.key(&format!("tables/{table}")),
    ));
    let log_store = default_logstore(
        prefixed,
        remote.store.clone(),
        &url,
        &StorageConfig::default(),
    );
    Ok((DeltaTable::new(log_store), url))
}

pub(crate) fn delta_err(url: &Url, action: &str, e: impl std::fmt::Display) -> hakiri_core::Error {
    SyncError::Delta {
        url: url.to_string(),
        action: action.to_string(),
        message: e.to_string(),
    }
    .into()
}

/// Arrow types as Delta spells them: timestamps with a zone are UTC instants in
/// microseconds (Delta `timestamp`); other types are kept.
fn delta_schema(schema: &Schema) -> Schema {
    fn ty(t: &DataType) -> DataType {
        match t {
            DataType::Timestamp(_, Some(_)) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            DataType::Timestamp(_, None) => DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
            other => other.clone(),
        }
    }
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), ty(f.data_type()), true))
            .collect::<Vec<_>>(),
    )
}

/// A file to publish: its name in the table's folder, size and rows.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub name: String,
    pub size: u64,
    pub rows: u64,
    pub modified_ms: i64,
}

/// What a publish did.
#[derive(Debug, Default)]
pub struct Published {
    pub version: u64,
    pub added: usize,
    pub removed: usize,
    pub schema_changed: bool,
}

/// The file names the Delta table of `table` holds now (empty when there is none) and its
/// version.
pub async fn active_files(remote: &Remote, name: &str) -> Result<(Option<u64>, BTreeSet<String>)> {
    let (mut t, url) = table(remote, name)?;
    if !t
        .verify_deltatable_existence()
        .await
        .map_err(|e| delta_err(&url, "checking that it exists", e))?
    {
        return Ok((None, BTreeSet::new()));
    }
    t.load()
        .await
        .map_err(|e| delta_err(&url, "loading it", e))?;
    let state = t.snapshot().map_err(|e| delta_err(&url, "loading it", e))?;
    let files = state
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect();
    Ok((Some(state.version()), files))
}

/// Makes the Delta table of `name` hold exactly `files` with `schema` (the files are in
/// the table's folder already): creates it, or commits adds, removes and a metadata
/// update. No commit when it holds them already.
pub async fn publish(
    remote: &Remote,
    name: &str,
    schema: &Schema,
    files: &[DataFile],
) -> Result<Option<Published>> {
    let (mut t, url) = table(remote, name)?;
    let arrow = delta_schema(schema);
    let kernel: StructType = (&arrow)
        .try_into_kernel()
        .map_err(|e| delta_err(&url, "converting the table's schema to Delta's", e))?;
    let adds = |keep: &BTreeSet<String>| -> Vec<Action> {
        files
            .iter()
            .filter(|f| !keep.contains(&f.name))
            .map(|f| {
                Action::Add(Add {
                    path: f.name.clone(),
                    partition_values: HashMap::new(),
                    size: f.size as i64,
                    modification_time: f.modified_ms,
                    data_change: true,
                    stats: Some(format!("{{\"numRecords\":{}}}", f.rows)),
                    ..Default::default()
                })
            })
            .collect()
    };
    let exists = t
        .verify_deltatable_existence()
        .await
        .map_err(|e| delta_err(&url, "checking that it exists", e))?;
    if !exists {
        let actions = adds(&BTreeSet::new());
        let added = actions.len();
        let created = t
            .create()
            .with_columns(kernel.fields().cloned())
            .with_table_name(name)
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_actions(actions)
            .await
            .map_err(|e| delta_err(&url, "creating it", e))?;
        return Ok(Some(Published {
            version: created.version().unwrap_or_default(),
            added,
            removed: 0,
            schema_changed: true,
        }));
    }
    t.load()
        .await
        .map_err(|e| delta_err(&url, "loading it", e))?;
    let state = t.snapshot().map_err(|e| delta_err(&url, "loading it", e))?;
    let active: BTreeSet<String> = state
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect();
    let wanted: BTreeSet<String> = files.iter().map(|f| f.name.clone()).collect();
    let mut actions: Vec<Action> = state
        .log_data()
        .iter()
        .filter(|f| !wanted.contains(f.path().as_ref()))
        .map(|f| Action::Remove(f.remove_action(true)))
        .collect();
    let removed = actions.len();
    let new_adds = adds(&active);
    let added = new_adds.len();
    // Columns the table gained (a type change keeps Delta's type: the files decide).
    let current = state.schema();
    let mut fields: Vec<_> = current.fields().cloned().collect();
    let mut schema_changed = false;
    for f in kernel.fields() {
        if current.field(f.name()).is_none() {
            fields.push(f.clone());
            schema_changed = true;
        }
    }
    if schema_changed {
        let new_schema =
            StructType::try_new(fields).map_err(|e| delta_err(&url, "widening its schema", e))?;
        let metadata = state
            .metadata()
            .clone()
            .with_schema(&new_schema)
            .map_err(|e| delta_err(&url, "widening its schema", e))?;
        actions.insert(0, Action::Metadata(metadata));
    }
    actions.extend(new_adds);
    if added == 0 && removed == 0 && !schema_changed {
        return Ok(None);
    }
    let op = DeltaOperation::Write {
        mode: if removed > 0 {
            SaveMode::Overwrite
        } else {
            SaveMode::Append
        },
        partition_by: None,
        predicate: None,
    };
    let committed = CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(Some(state as &dyn TableReference), t.log_store(), op)
        .await
        .map_err(|e| delta_err(&url, "committing the push", e))?;
    Ok(Some(Published {
        version: committed.version(),
        added,
        removed,
        schema_changed,
    }))
}
