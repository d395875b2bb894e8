//! `pg_catalog` over the engine's catalogs, answering from what is known: a source table's
//! columns come from `SourceSchemaProvider::listing_schema` (the schema last discovered),
//! so psql's `\dt`, `\d` and the catalog queries of BI tools never wait on a source. Other
//! schemas (context, hakiri) are read as datafusion-pg-catalog reads them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::CatalogProviderList;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables, setup_pg_catalog,
};
use hakiri_engine::sources::SourceSchemaProvider;

/// Sets up `pg_catalog` (its functions and tables) with [`ListingCatalog`] behind it.
pub(crate) fn setup(ctx: &SessionContext, catalog_name: &str) -> Result<(), DataFusionError> {
    setup_pg_catalog(ctx, catalog_name, EmptyContextProvider).map_err(|e| *e)?;
    let tables = Arc::new(PgCatalogStaticTables::try_new()?);
    let schema = PgCatalogSchemaProvider::try_new(
        ListingCatalog(ctx.state().catalog_list().clone()),
        tables,
        EmptyContextProvider,
    )?;
    let catalog = ctx.catalog(catalog_name).ok_or_else(|| {
        DataFusionError::Configuration(format!("no catalog {catalog_name} for pg_catalog"))
    })?;
    // Replaces the schema setup_pg_catalog registered over DataFusion's catalogs.
    catalog.register_schema("pg_catalog", Arc::new(schema))?;
    Ok(())
}

/// The engine's catalogs, with source tables' schemas as last discovered.
#[derive(Debug, Clone)]
pub(crate) struct ListingCatalog(Arc<dyn CatalogProviderList>);

#[async_trait]
impl CatalogInfo for ListingCatalog {
    async fn catalog_names(&self) -> Result<Vec<String>, DataFusionError> {
        self.0.catalog_names().await
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        self.0.schema_names(catalog).await
    }

    async fn table_names(
        &self,
        catalog: &str,
        schema: &str,
    ) -> Result<Option<Vec<String>>, DataFusionError> {
        self.0.table_names(catalog, schema).await
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>, DataFusionError> {
        let provider = self.0.catalog(catalog).and_then(|c| c.schema(schema));
        if let Some(source) = provider
            .as_ref()
            .and_then(|p| p.downcast_ref::<SourceSchemaProvider>())
        {
            if !datafusion::catalog::SchemaProvider::table_exist(source, table) {
                return Ok(None);
            }
            // Never discovered: listed without columns until a query or
            // `hakiri source refresh` discovers them.
            let known = source.listing_schema(table).await?;
            return Ok(Some(known.unwrap_or_else(|| Arc::new(Schema::empty()))));
        }
        self.0.table_schema(catalog, schema, table).await
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>, DataFusionError> {
        self.0.table_type(catalog, schema, table).await
    }
}
