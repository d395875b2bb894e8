//! The remote: a bucket prefix (`s3://bucket/prefix`) or a folder (`file:///path`), all I/O
//! through object_store. Layout under the prefix:
//!
//! - `tables/<table>/`: each context table as a Delta Lake table (its Parquet files, under
//!   their local names, and `_delta_log/`);
//! - `state/<version>.json`: the project's state at each push, written only if absent;
//! - `leases/<pipeline>.json`: who may run and push a pipeline (conditional writes).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use hakiri_core::types::{Origin, SourceSpec, SyncSpec};
use hakiri_table_providers::s3::{StoreFault, store_fault};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use url::Url;

use crate::error::{Result, SyncError};

/// The sync remote of a project.
#[derive(Debug, Clone)]
pub struct Remote {
    /// As configured, for messages.
    pub url: String,
    /// Rooted at the bucket (s3) or at `/` (file).
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `s3://bucket/` or `file:///`: where `store` is rooted.
    root: Url,
    /// The prefix inside `store`.
    prefix: Path,
    endpoint: Option<String>,
    bucket: Option<String>,
    /// Where its options are written, for messages: `[sync]` or a `delta` source.
    section: String,
}

impl Remote {
    /// The remote `spec` names, whose options are written in `section` (`[sync]`, or
    /// `source 'x' (type delta) option`); nothing is contacted yet.
    pub fn open(spec: &SyncSpec, section: &str) -> Result<Remote> {
        let config = |option, message| SyncError::Config {
            section: section.to_string(),
            option,
            message,
        };
        let url = Url::parse(&spec.url).map_err(|e| SyncError::Config {
            section: section.to_string(),
            option: "url",
            message: format!(
                "'{}' is not a URL ({e}): write s3://bucket/prefix or file:///path",
                spec.url
            ),
        })?;
        match url.scheme() {
            "s3" => {
                let bucket = url.host_str().unwrap_or_default().to_string();
                if bucket.is_empty() {
                    return Err(config(
                        "url",
                        format!("'{}' names no bucket: write s3://bucket/prefix", spec.url),
                    )
                    .into());
                }
                let mut options = BTreeMap::from([("bucket".to_string(), bucket.clone())]);
                for (k, v) in [
                    ("endpoint", &spec.endpoint),
                    ("region", &spec.region),
                    ("access_key_id", &spec.access_key_id),
                    ("secret_access_key", &spec.secret_access_key),
                    ("session_token", &spec.session_token),
                ] {
                    if let Some(v) = v {
                        options.insert(k.to_string(), v.clone());
                    }
                }
                let source = SourceSpec {
                    name: "sync".into(),
                    connector: "s3".into(),
                    options,
                    origin: Origin::Manifest,
                };
                let store = hakiri_table_providers::s3::object_store(&source).map_err(|e| {
                    e.context(|m| {
                        format!(
                            "{section} {}",
                            m.to_string().replace("source 'sync' (type s3)", "the bucket")
                        )
                    })
                })?;
                Ok(Remote {
                    url: spec.url.clone(),
                    store,
                    root: Url::parse(&format!("s3://{bucket}/")).expect("a bucket URL"),
                    prefix: Path::from(url.path()),
                    endpoint: spec.endpoint.clone(),
                    bucket: Some(bucket),
                    section: section.to_string(),
                })
            }
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| config("url", format!("'{}' is not a local folder", spec.url)))?;
                if !dir.is_dir() {
                    return Err(config(
                        "url",
                        format!(
                            "the folder {} does not exist: create it (mkdir -p {}) or fix the url",
                            dir.display(),
                            dir.display()
                        ),
                    )
                    .into());
                }
                Ok(Remote {
                    url: spec.url.clone(),
                    store: Arc::new(crate::local::ConditionalLocal::new(LocalFileSystem::new())),
                    root: Url::parse("file:///").expect("the root URL"),
                    prefix: Path::from(url.path()),
                    endpoint: None,
                    bucket: None,
                    section: section.to_string(),
                })
            }
            other => Err(config(
                "url",
                format!(
                    "'{other}://' is not a remote Hakiri syncs to: write s3://bucket/prefix (any S3-compatible store, with endpoint) or file:///path"
                ),
            )
            .into()),
        }
    }

    /// The object at `rel` under the prefix.
    pub(crate) fn key(&self, rel: &str) -> Path {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(rel.split('/').filter(|p| !p.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }

    /// The URL of table `table`'s Delta table.
    pub fn table_url(&self, table: &str) -> Url {
        let key = self.key(&format!("tables/{table}"));
        self.root
            .join(&format!("{key}/"))
            .expect("a table URL under the remote")
    }

    /// The error of an object-store call made while `action`, with what to fix.
    pub(crate) fn fail(
        &self,
        action: impl Into<String>,
        e: object_store::Error,
    ) -> hakiri_core::Error {
        let at = self.endpoint.as_deref().unwrap_or("AWS");
        let fix = match store_fault(&e) {
            Some(StoreFault::NoBucket) if self.bucket.is_some() => format!(
                ": bucket '{}' does not exist at {at}; create it or fix {} url",
                self.bucket.as_deref().unwrap_or_default(),
                self.section
            ),
            Some(StoreFault::Credentials) => format!(
                ": the store refused the credentials; check {} access_key_id and secret_access_key (and region)",
                self.section
            ),
            Some(StoreFault::Unreachable) => {
                format!(
                    ": cannot reach {at}; check {} endpoint and that the store is running",
                    self.section
                )
            }
            _ => String::new(),
        };
        SyncError::Remote {
            url: self.url.clone(),
            action: action.into(),
            message: format!("{e}{fix}"),
        }
        .into()
    }

    /// The bytes of `rel`, `None` when it does not exist.
    pub(crate) async fn get(&self, rel: &str) -> Result<Option<(bytes::Bytes, ObjectMeta)>> {
        match self.store.get(&self.key(rel)).await {
            Ok(r) => {
                let meta = r.meta.clone();
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| self.fail(format!("reading {rel}"), e))?;
                Ok(Some((bytes, meta)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(format!("reading {rel}"), e)),
        }
    }

    /// Writes `rel` only if it does not exist: `false` when it does.
    pub(crate) async fn create(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        match self
            .store
            .put_opts(
                &self.key(rel),
                PutPayload::from(bytes),
                PutMode::Create.into(),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(self.fail(format!("writing {rel}"), e)),
        }
    }

    /// The objects under `rel/`.
    pub(crate) async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.key(rel);
        self.store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.fail(format!("listing {rel}/"), e))
    }

    /// The names of the folders directly under `rel/`.
    pub(crate) async fn folders(&self, rel: &str) -> Result<Vec<String>> {
        let prefix = self.key(rel);
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.fail(format!("listing {rel}/"), e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// `rel` of an object's full location.
    pub(crate) fn relative(&self, location: &Path) -> String {
        let skip = self.prefix.parts().count();
        location
            .parts()
            .skip(skip)
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Fails with what to fix unless the remote answers (a bucket that exists, credentials it
    /// takes): run before a command changes anything.
    pub async fn check(&self) -> Result<()> {
        let prefix = self.key("state");
        match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail("checking that it answers", e)),
        }
    }
}
