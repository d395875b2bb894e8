//! `[catalog] url`: the project's state in PostgreSQL, with TLS as for a Postgres source.

use std::sync::Arc;

use hakiri_engine::catalog::{Catalog, PostgresCatalog, PostgresConnect};
use hakiri_engine::types::CatalogSpec;
use hakiri_engine::{Error, Result};

/// Opens the shared catalog `[catalog]` names (creating its tables on first use).
pub fn open(spec: &CatalogSpec) -> Result<Arc<dyn Catalog>> {
    let url = hakiri_engine::sources::resolve_value("[catalog] url", &spec.url)?;
    let (config, tls, endpoint) =
        hakiri_table_providers::postgres::client_config("[catalog]", &url)
            .map_err(|e| Error::Config(e.to_string()))?;
    let mut config = postgres::Config::from(config);
    // A server that does not answer is given up on (10 s to connect; keepalives notice a
    // dead peer in about a minute), instead of hanging every command behind the catalog.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    config
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(30));
    let connect: PostgresConnect = Box::new(move || config.connect(tls.clone()));
    let catalog = PostgresCatalog::open(connect, &endpoint, &spec.schema)?;
    Ok(Arc::new(catalog))
}
