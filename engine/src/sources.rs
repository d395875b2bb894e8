//! Source registration: each source becomes a DataFusion schema whose tables come from its
//! connector; option values are resolved (`env:NAME`, `${NAME:-default}`) only here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::TableType;

use crate::catalog::{Catalog, SourceSchema};
use crate::error::Result;
use crate::ports::{Clock, Source};
use crate::schema::{columns_text, parse_columns_text};
use crate::types::SourceSpec;

pub use hakiri_core::sources::{RESERVED_SCHEMAS, resolve_value};

/// The schema `<source>`: tables resolved through the source's connector. Each table's
/// schema is kept in `hakiri.source_schemas` when it is discovered, so listings (`\dt`,
/// `information_schema`, `pg_catalog`) answer from there and never wait on the source.
#[derive(Debug)]
pub struct SourceSchemaProvider {
    spec: SourceSpec,
    connector: Arc<dyn Source>,
    hints: crate::engine::SchemaHints,
    catalog: Arc<dyn Catalog>,
    clock: Arc<dyn Clock>,
    /// The schemas discovered so far, by table (loaded from the catalog).
    known: RwLock<HashMap<String, SchemaRef>>,
}

impl SourceSchemaProvider {
    pub fn new(
        spec: SourceSpec,
        connector: Arc<dyn Source>,
        hints: crate::engine::SchemaHints,
        catalog: Arc<dyn Catalog>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let mut known = HashMap::new();
        for s in catalog.source_schemas(&spec.name)? {
            // An entry that no longer reads back is discovered again when needed.
            if let Ok(schema) = parse_columns_text(&s.columns) {
                known.insert(s.table, schema);
            }
        }
        Ok(SourceSchemaProvider {
            spec,
            connector,
            hints,
            catalog,
            clock,
            known: RwLock::new(known),
        })
    }

    /// The table's schema for a listing: built when that needs no remote system, else the
    /// one last discovered (`None` when never discovered). Never waits on the source.
    pub async fn listing_schema(&self, table: &str) -> DfResult<Option<SchemaRef>> {
        if !self.connector.remote_discovery(&self.spec, table) {
            return Ok(self.table(table).await?.map(|t| t.schema()));
        }
        Ok(self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned())
    }

    /// Discovers `table`'s schema again (asking the source) and keeps it.
    pub async fn refresh(&self, table: &str) -> Result<SchemaRef> {
        let hint = self.hint(table);
        let schema = self
            .connector
            .table(&self.spec, table, hint)
            .await?
            .schema();
        self.store(table, &schema)?;
        Ok(schema)
    }

    fn hint(&self, table: &str) -> Option<SchemaRef> {
        self.hints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{}.{table}", self.spec.name))
            .cloned()
    }

    /// Keeps a discovered schema when it is new or changed (a failure to store it only
    /// costs a later listing its columns, so it is logged, not raised).
    fn remember(&self, table: &str, schema: &SchemaRef) {
        let same = self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            == Some(schema);
        if same {
            return;
        }
        if let Err(e) = self.store(table, schema) {
            tracing::warn!(
                "could not keep the schema of {}.{table} in the catalog: {e}",
                self.spec.name
            );
        }
    }

    fn store(&self, table: &str, schema: &SchemaRef) -> Result<()> {
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.to_string(), schema.clone());
        self.catalog.put_source_schema(&SourceSchema {
            source: self.spec.name.clone(),
            table: table.to_string(),
            columns: columns_text(schema),
            discovered_at: self.clock.now(),
        })
    }
}

#[async_trait]
impl SchemaProvider for SourceSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.connector.table_names(&self.spec)
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = self
            .connector
            .table(&self.spec, name, self.hint(name))
            .await?;
        self.remember(name, &table.schema());
        Ok(Some(table))
    }

    /// Listing tables (`information_schema.tables`, `SHOW TABLES`) asks for each table's
    /// type; answering it without building the table keeps listings off the network.
    async fn table_type(&self, name: &str) -> DfResult<Option<TableType>> {
        Ok(self.table_exist(name).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.connector
            .table_names(&self.spec)
            .iter()
            .any(|t| t == name)
    }
}
