//! The `s3` connector: CSV, JSON and Parquet objects in a bucket of any S3-compatible store
//! (AWS, MinIO, Ceph, moto, ...) through `object_store`. Tables are declared like the file
//! connector's (`tables.<name>.path` is a key, a prefix ending in `/`, or a glob) and share
//! its table: live queries and file-level increments (`CURSOR TOKEN` loads each object once).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use hakiri_core::ports::{OptionSpec, Source, validate_options};
use hakiri_core::sources::resolve_value;
use hakiri_core::types::SourceSpec;
use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::error::{Error, Result};
use crate::file::{listing_table, no_such_table, tables, validate_tables};

const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "bucket",
        required: true,
        secret: false,
        help: "the bucket's name",
    },
    OptionSpec {
        name: "endpoint",
        required: false,
        secret: false,
        help: "the store's URL, e.g. http://127.0.0.1:9000 (default: AWS for the region)",
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
    OptionSpec {
        name: "anonymous",
        required: false,
        secret: false,
        help: "true to send unsigned requests (public buckets); then no keys are needed",
    },
    OptionSpec {
        name: "path_style",
        required: false,
        secret: false,
        help: "true: http://endpoint/bucket/key (default with an endpoint); false: http://bucket.endpoint/key",
    },
    OptionSpec {
        name: "allow_http",
        required: false,
        secret: false,
        help: "allow a plain-http endpoint (default: true when the endpoint says http://)",
    },
    OptionSpec {
        name: "timeout_seconds",
        required: false,
        secret: false,
        help: "per-request timeout, and the time a failing request is retried for (default 30)",
    },
    OptionSpec {
        name: "format",
        required: false,
        secret: false,
        help: "csv | json | parquet, default for all tables (default: from the key's extension)",
    },
    OptionSpec {
        name: "tables.*",
        required: false,
        secret: false,
        help: "tables.<name>.path (a key, a prefix ending in '/', or a glob) and tables.<name>.format",
    },
];

/// The `s3` connector type.
#[derive(Debug, Default)]
pub struct S3Source;

/// The resolved connection settings of one s3 source.
struct Settings {
    bucket: String,
    endpoint: Option<String>,
}

fn flag(spec: &SourceSpec, name: &str) -> Result<Option<bool>> {
    spec.options
        .get(name)
        .map(|v| crate::parse_flag(name, v))
        .transpose()
        .map_err(|e| Error::InvalidInput(format!("source '{}' (type s3): {e}", spec.name)))
}

fn get(spec: &SourceSpec, name: &str) -> Result<Option<String>> {
    spec.options
        .get(name)
        .map(|v| resolve_value(name, v))
        .transpose()
}

/// The object store of an s3 source's options (bucket, endpoint, region, credentials as
/// secret references, timeout_seconds, path_style, allow_http); nothing is contacted yet.
/// `hakiri sync` builds its bucket's store with it too.
pub fn object_store(spec: &SourceSpec) -> Result<Arc<dyn ObjectStore>> {
    store(spec).map(|(_, s)| s)
}

/// Builds the source's object store; nothing is contacted yet.
fn store(spec: &SourceSpec) -> Result<(Settings, Arc<dyn ObjectStore>)> {
    let bucket = get(spec, "bucket")?.unwrap_or_default();
    let endpoint = get(spec, "endpoint")?;
    let region = get(spec, "region")?.unwrap_or_else(|| "us-east-1".to_string());
    let timeout = match spec.options.get("timeout_seconds") {
        None => 30,
        Some(v) => v.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
            Error::InvalidInput(format!(
                "option 'timeout_seconds' of source '{}' must be a positive whole number, not '{v}'",
                spec.name
            ))
        })?,
    };
    let anonymous = flag(spec, "anonymous")?.unwrap_or(false);
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_region(region)
        .with_skip_signature(anonymous)
        // A bounded retry: object_store's default retries for three minutes, which turns a
        // wrong endpoint into a long hang instead of an error.
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(timeout),
        })
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(timeout.min(10)))
                .with_timeout(Duration::from_secs(timeout)),
        );
    if let Some(endpoint) = &endpoint {
        let plain = endpoint.starts_with("http://");
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(flag(spec, "allow_http")?.unwrap_or(plain))
            .with_virtual_hosted_style_request(!flag(spec, "path_style")?.unwrap_or(true));
    } else if let Some(path_style) = flag(spec, "path_style")? {
        builder = builder.with_virtual_hosted_style_request(!path_style);
    }
    match (get(spec, "access_key_id")?, get(spec, "secret_access_key")?) {
        (Some(id), Some(key)) => {
            builder = builder.with_access_key_id(id).with_secret_access_key(key);
            if let Some(token) = get(spec, "session_token")? {
                builder = builder.with_token(token);
            }
        }
        (None, None) if anonymous => {}
        _ => {
            return Err(Error::Config(format!(
                "source '{}' (type s3) needs access_key_id and secret_access_key (secret references such as 'env:AWS_ACCESS_KEY_ID'), or anonymous = true for a public bucket",
                spec.name
            )));
        }
    }
    let store = builder.build().map_err(|e| {
        Error::InvalidInput(format!(
            "source '{}' (type s3) is not configured right: {e}",
            spec.name
        ))
    })?;
    Ok((Settings { bucket, endpoint }, Arc::new(store)))
}

/// What went wrong with the store, for the hint: read from object_store's error kinds
/// (a GET or HEAD maps S3's 404, 403 and 401 to `NotFound`, `PermissionDenied` and
/// `Unauthenticated`) and its HTTP error kind (a connection or a timeout).
#[derive(Debug, PartialEq)]
pub enum StoreFault {
    NoBucket,
    Credentials,
    Unreachable,
}

fn fault(e: &Error) -> Option<StoreFault> {
    store_fault(store_error(e)?)
}

/// What an object-store failure says about the store's settings (`None`: nothing they fix).
pub fn store_fault(store: &object_store::Error) -> Option<StoreFault> {
    match store {
        object_store::Error::NotFound { .. } => return Some(StoreFault::NoBucket),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => return Some(StoreFault::Credentials),
        _ => {}
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(store);
    while let Some(e) = cur {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind::{Connect, Request, Timeout};
            if matches!(http.kind(), Connect | Request | Timeout) {
                return Some(StoreFault::Unreachable);
            }
        }
        cur = e.source();
    }
    // A LIST request's failure comes as `Generic` with its status hidden in a private type
    // (object_store 0.13's `RetryError`): only S3's error code in the response's text
    // tells a missing bucket or refused credentials apart. The library should expose it.
    let text = store.to_string();
    if text.contains("NoSuchBucket") {
        Some(StoreFault::NoBucket)
    } else if [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
    ]
    .iter()
    .any(|code| text.contains(code))
    {
        Some(StoreFault::Credentials)
    } else {
        None
    }
}

/// The object_store error under a Hakiri error (through DataFusion's wrapping).
fn store_error(e: &Error) -> Option<&object_store::Error> {
    let Error::DataFusion(df) = e.kind() else {
        return None;
    };
    let mut cur: &datafusion::error::DataFusionError = df;
    loop {
        use datafusion::error::DataFusionError as D;
        match cur {
            D::ObjectStore(s) => return Some(s),
            D::Context(_, inner) => cur = inner,
            D::Shared(inner) => cur = inner,
            D::External(b) => {
                return b
                    .downcast_ref::<object_store::Error>()
                    .or_else(|| b.downcast_ref::<Error>().and_then(store_error));
            }
            _ => return None,
        }
    }
}

/// What to do next about an object-store failure; `None` when it is nothing the source's
/// options can fix.
fn hint(spec: &SourceSpec, settings: &Settings, e: &Error) -> Option<String> {
    let at = settings.endpoint.as_deref().unwrap_or("AWS");
    let fix = match fault(e)? {
        StoreFault::NoBucket => format!(
            "bucket '{}' does not exist at {at}: check the source's bucket option",
            settings.bucket
        ),
        StoreFault::Credentials => "the store refused the credentials: check access_key_id and secret_access_key (and region)".to_string(),
        StoreFault::Unreachable => {
            format!("cannot reach {at}: check the endpoint option and that the store is running")
        }
    };
    Some(format!("{e}\n  source '{}' (type s3): {fix}", spec.name))
}

#[async_trait]
impl Source for S3Source {
    fn connector(&self) -> &'static str {
        "s3"
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate(&self, spec: &SourceSpec) -> Result<()> {
        validate_options(
            &format!("source '{}' (type s3)", spec.name),
            OPTIONS,
            spec.options.keys(),
        )?;
        validate_tables(spec, "s3")?;
        for name in ["anonymous", "path_style", "allow_http"] {
            flag(spec, name)?;
        }
        Ok(())
    }

    fn table_names(&self, spec: &SourceSpec) -> Vec<String> {
        tables(spec).into_keys().collect()
    }

    /// Objects carry their own schema, so a schema hint has nothing to add.
    async fn table(
        &self,
        spec: &SourceSpec,
        table: &str,
        _hint: Option<SchemaRef>,
    ) -> Result<Arc<dyn TableProvider>> {
        let all = tables(spec);
        let Some(opts) = all.get(table) else {
            return Err(no_such_table(spec, table));
        };
        let (settings, store) = store(spec)?;
        let key = resolve_value("path", &opts["path"])?;
        let location = format!("s3://{}/{}", settings.bucket, key.trim_start_matches('/'));
        let format = opts
            .get("format")
            .or(spec.options.get("format"))
            .cloned()
            .unwrap_or_default();
        listing_table(&spec.name, table, &location, &format, Some(store))
            .await
            .map_err(|e| match hint(spec, &settings, &e) {
                Some(message) => Error::Upstream(message),
                None => e,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError;

    fn wrapped(store: object_store::Error) -> Error {
        let df = DataFusionError::ObjectStore(Box::new(store));
        Error::from(DataFusionError::Context("listing".into(), Box::new(df)))
            .context(|e| format!("reading lake.events: {e}"))
    }

    /// The fault comes from object_store's error kind, under DataFusion's and Hakiri's
    /// wrapping, whatever the message says.
    #[test]
    fn faults_come_from_the_store_errors_kind() {
        let source = || Box::new(std::io::Error::other("no message to read")) as _;
        let not_found = object_store::Error::NotFound {
            path: "incoming/".into(),
            source: source(),
        };
        assert_eq!(fault(&wrapped(not_found)), Some(StoreFault::NoBucket));
        let denied = object_store::Error::PermissionDenied {
            path: "incoming/".into(),
            source: source(),
        };
        assert_eq!(fault(&wrapped(denied)), Some(StoreFault::Credentials));
        let other = object_store::Error::NotImplemented {
            operation: "x".into(),
            implementer: "y".into(),
        };
        assert_eq!(fault(&wrapped(other)), None);
        assert_eq!(fault(&Error::Upstream("NoSuchBucket".into())), None);
    }
}
