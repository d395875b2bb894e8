//! A folder remote with conditional updates: object_store's `LocalFileSystem` does
//! `PutMode::Create` atomically but not `PutMode::Update` (compare the ETag, then
//! replace), which the leases need. This store adds it, under an exclusive file lock per
//! object, so a folder shared by projects on one machine (or a network filesystem with
//! working locks) behaves as a bucket does. Written here because object_store 0.13 lacks
//! it; everything else is `LocalFileSystem`'s.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result,
};

#[derive(Debug)]
pub struct ConditionalLocal {
    inner: LocalFileSystem,
}

impl ConditionalLocal {
    pub fn new(inner: LocalFileSystem) -> Self {
        ConditionalLocal { inner }
    }
}

impl fmt::Display for ConditionalLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConditionalLocal({})", self.inner)
    }
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "ConditionalLocal",
        source: Box::new(e),
    }
}

#[async_trait]
impl ObjectStore for ConditionalLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let PutMode::Update(expected) = &opts.mode else {
            return self.inner.put_opts(location, payload, opts).await;
        };
        let file = self.inner.path_to_filesystem(location)?;
        let lock_path = file.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(generic)?;
        let guard = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(generic)?
            .map_err(generic)?;
        let current = match self.inner.head(location).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { path, source }) => {
                return Err(object_store::Error::Precondition { path, source });
            }
            Err(e) => return Err(e),
        };
        if current.e_tag != expected.e_tag {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: format!(
                    "the object's ETag is {:?}, not {:?}",
                    current.e_tag, expected.e_tag
                )
                .into(),
            });
        }
        let mut overwrite = opts.clone();
        overwrite.mode = PutMode::Overwrite;
        let put = self.inner.put_opts(location, payload, overwrite).await;
        drop(guard);
        put
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
