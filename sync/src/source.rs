//! `CREATE SOURCE shared TYPE delta OPTIONS ('url' 's3://bucket/prefix', ...)`: the tables
//! a project pushed to a sync remote, queried live from any project through `deltalake`'s
//! TableProvider (no pull). The source's tables are the Delta tables under
//! `<url>/tables/`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use hakiri_core::ports::{OptionSpec, Source};
use hakiri_core::types::{SourceSpec, SyncSpec};
use hakiri_core::{Error, Result};

use crate::remote::Remote;

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "url",
        required: true,
        secret: false,
        help: "the sync remote: s3://bucket/prefix or file:///path (its tables/ folder holds the Delta tables)",
    },
    OptionSpec {
        name: "endpoint",
        required: false,
        secret: false,
        help: "an S3-compatible endpoint such as http://127.0.0.1:9000 (default: AWS)",
    },
    OptionSpec {
        name: "region",
        required: false,
        secret: false,
        help: "the bucket's region (default us-east-1)",
    },
    OptionSpec {
        name: "access_key_id",
        required: false,
        secret: true,
        help: "access key id, as a secret reference: 'env:AWS_ACCESS_KEY_ID'",
    },
    OptionSpec {
        name: "secret_access_key",
        required: false,
        secret: true,
        help: "secret access key, as a secret reference: 'env:AWS_SECRET_ACCESS_KEY'",
    },
    OptionSpec {
        name: "session_token",
        required: false,
        secret: true,
        help: "session token for temporary credentials, as a secret reference",
    },
];

/// The `delta` connector.
#[derive(Debug, Default)]
pub struct DeltaSource;

fn remote(spec: &SourceSpec) -> Result<Remote> {
    let get = |k: &str| spec.options.get(k).cloned();
    let section = format!("source '{}' (type delta) option", spec.name);
    Remote::open(
        &SyncSpec {
            url: get("url").unwrap_or_default(),
            endpoint: get("endpoint"),
            region: get("region"),
            access_key_id: get("access_key_id"),
            secret_access_key: get("secret_access_key"),
            session_token: get("session_token"),
            lease_ttl: None,
        },
        &section,
    )
}

#[async_trait]
impl Source for DeltaSource {
    fn connector(&self) -> &'static str {
        "delta"
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    /// The tables are the remote's: none is declared.
    fn table_names(&self, _spec: &SourceSpec) -> Vec<String> {
        Vec::new()
    }

    async fn discover(&self, spec: &SourceSpec) -> Result<Vec<String>> {
        let remote = remote(spec)?;
        let mut names = Vec::new();
        for table in remote.folders("tables").await? {
            if !remote
                .list(&format!("tables/{table}/_delta_log"))
                .await?
                .is_empty()
            {
                names.push(table);
            }
        }
        Ok(names)
    }

    async fn table(
        &self,
        spec: &SourceSpec,
        table: &str,
        _hint: Option<SchemaRef>,
    ) -> Result<Arc<dyn TableProvider>> {
        let remote = remote(spec)?;
        let (mut delta, url) = crate::delta::table(&remote, table)?;
        let exists = delta
            .verify_deltatable_existence()
            .await
            .map_err(|e| crate::delta::delta_err(&url, "checking that it exists", e))?;
        if !exists {
            let known = self.discover(spec).await?;
            return Err(Error::SourceTableNotFound {
                name: spec.name.clone(),
                table: table.to_string(),
                message: format!(
                    "{url} holds no Delta table; the remote has: {}",
                    if known.is_empty() {
                        "none (push from a project with 'hakiri sync push')".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
        delta
            .load()
            .await
            .map_err(|e| crate::delta::delta_err(&url, "loading it", e))?;
        delta
            .table_provider()
            .await
            .map_err(|e| crate::delta::delta_err(&url, "reading it", e))
    }
}
