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
use deltalake::kernel::{Action, Add, MetadataExt, Protocol, StructField, StructType};
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

/// The protocol `schema` needs when it has a timestamp-without-zone column and `protocol`
/// lacks Delta's `timestampNtz` feature (`create` adds it itself; a metadata update does
/// not, and readers then refuse the table). `None`: `protocol` will do.
fn with_timestamp_ntz(
    protocol: &Protocol,
    schema: &StructType,
) -> std::result::Result<Option<Protocol>, serde_json::Error> {
    let ntz = schema
        .fields()
        .any(|f| *f.data_type() == deltalake::kernel::DataType::TIMESTAMP_NTZ);
    // The kernel keeps the feature lists to itself: read them as the log spells them.
    let current = serde_json::to_value(protocol)?;
    let features = |key: &str| -> Option<Vec<String>> {
        current.get(key)?.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    };
    let mut reader = features("readerFeatures").unwrap_or_default();
    if !ntz || reader.iter().any(|f| f == "timestampNtz") {
        return Ok(None);
    }
    let mut writer = features("writerFeatures").unwrap_or_else(|| {
        // A legacy protocol (writer version 2) implies these two.
        vec!["appendOnly".to_string(), "invariants".to_string()]
    });
    reader.push("timestampNtz".into());
    writer.push("timestampNtz".into());
    serde_json::from_value(serde_json::json!({
        "minReaderVersion": 3,
        "minWriterVersion": 7,
        "readerFeatures": reader,
        "writerFeatures": writer,
    }))
    .map(Some)
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
/// `schema` is `None` for a table with no files left (emptied): its Delta table keeps its
/// schema and loses every file.
pub async fn publish(
    remote: &Remote,
    name: &str,
    schema: Option<&Schema>,
    files: &[DataFile],
) -> Result<Option<Published>> {
    let (mut t, url) = table(remote, name)?;
    let kernel: Option<StructType> = schema
        .map(|s| (&delta_schema(s)).try_into_kernel())
        .transpose()
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
        let Some(kernel) = kernel else {
            return Ok(None);
        };
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
    // The schema: when every file is new, exactly the files' (a replace run may change a
    // column's type); otherwise the table's with the columns it gained, which older files
    // read as NULL.
    let current = state.schema();
    let replaced_all = files.iter().all(|f| !active.contains(&f.name));
    let fields: Vec<StructField> = match &kernel {
        None => current.fields().cloned().collect(),
        Some(k) if replaced_all && !files.is_empty() => k.fields().cloned().collect(),
        Some(k) => current
            .fields()
            .cloned()
            .chain(
                k.fields()
                    .filter(|f| current.field(f.name()).is_none())
                    .cloned(),
            )
            .collect(),
    };
    let new_schema =
        StructType::try_new(fields).map_err(|e| delta_err(&url, "changing its schema", e))?;
    let schema_changed = new_schema != *current.as_ref();
    if schema_changed {
        let metadata = state
            .metadata()
            .clone()
            .with_schema(&new_schema)
            .map_err(|e| delta_err(&url, "changing its schema", e))?;
        actions.insert(0, Action::Metadata(metadata));
        if let Some(protocol) = with_timestamp_ntz(state.protocol(), &new_schema)
            .map_err(|e| delta_err(&url, "upgrading its protocol", e))?
        {
            actions.insert(0, Action::Protocol(protocol));
        }
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

/// Every file a version of the Delta table of `name` holds or held: the adds of each
/// commit in its log, and the files of its latest snapshot (which may come from a
/// checkpoint whose older commits are gone).
pub async fn referenced_files(remote: &Remote, name: &str) -> Result<BTreeSet<String>> {
    let (_, mut files) = active_files(remote, name).await?;
    for meta in remote.list(&format!("tables/{name}/_delta_log")).await? {
        let rel = remote.relative(&meta.location);
        if !rel.ends_with(".json") {
            continue;
        }
        let Some((bytes, _)) = remote.get(&rel).await? else {
            continue;
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| SyncError::Delta {
                    url: remote.table_url(name).to_string(),
                    action: format!("reading {rel}"),
                    message: e.to_string(),
                })?;
            if let Some(path) = action.pointer("/add/path").and_then(|p| p.as_str()) {
                files.insert(path.to_string());
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::kernel::DataType as DeltaType;

    fn protocol(json: serde_json::Value) -> Protocol {
        serde_json::from_value(json).unwrap()
    }

    /// A metadata update adding a timestamp-without-zone column carries the protocol that
    /// declares `timestampNtz` (readers refuse the table otherwise), keeping the features a
    /// legacy protocol implied; a protocol that has it, or a schema without such a column,
    /// needs no change.
    #[test]
    fn a_new_timestamp_ntz_column_upgrades_the_protocol() {
        let ntz = StructType::try_new([
            StructField::new("id", DeltaType::LONG, true),
            StructField::new("at", DeltaType::TIMESTAMP_NTZ, true),
        ])
        .unwrap();
        let plain = StructType::try_new([StructField::new("id", DeltaType::LONG, true)]).unwrap();
        let legacy = protocol(serde_json::json!({"minReaderVersion": 1, "minWriterVersion": 2}));
        let upgraded = with_timestamp_ntz(&legacy, &ntz)
            .unwrap()
            .expect("an upgrade");
        assert_eq!(
            serde_json::to_value(&upgraded).unwrap(),
            serde_json::json!({
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": ["timestampNtz"],
                "writerFeatures": ["appendOnly", "invariants", "timestampNtz"],
            })
        );
        assert!(with_timestamp_ntz(&upgraded, &ntz).unwrap().is_none());
        assert!(with_timestamp_ntz(&legacy, &plain).unwrap().is_none());
    }
}
