//! Moving committed Parquet files between the store and the remote, streamed in chunks
//! (never a whole file in memory): `<store>/<table>/<file>` is `tables/<table>/<file>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use hakiri_catalog::FileEntry;
use hakiri_core::Error;
use object_store::{ObjectStoreExt, PutMode, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Progress;
use crate::delta::DataFile;
use crate::error::{Result, SyncError};
use crate::remote::Remote;

/// Files up to this size go up in one request; larger ones in parts of it.
const PART: usize = 8 * 1024 * 1024;

fn remote_rel(path: &str) -> String {
    format!("tables/{path}")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The Delta view of `files`: name in the table's folder, size, rows, time.
pub fn data_files(root: &Path, files: &[FileEntry]) -> Result<Vec<DataFile>> {
    files
        .iter()
        .map(|f| {
            let path = root.join(&f.path);
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            Ok(DataFile {
                name: f.path.rsplit('/').next().unwrap_or(&f.path).to_string(),
                size: meta.len(),
                rows: f.rows,
                modified_ms,
            })
        })
        .collect()
}

/// Files moved at once: enough to hide a request's latency, few enough for two cores.
const CONCURRENT: usize = 8;

/// Uploads the files of `table` the remote lacks, several at once; returns how many and
/// their bytes. What the remote has is listed once (one LIST, not a HEAD per file).
pub async fn upload(
    remote: &Remote,
    root: &Path,
    table: &str,
    files: &[FileEntry],
    progress: Progress<'_>,
) -> Result<(usize, u64)> {
    let there: HashMap<String, u64> = remote
        .list(&format!("tables/{table}"))
        .await?
        .into_iter()
        .map(|m| (remote.relative(&m.location), m.size))
        .collect();
    let mut todo = Vec::new();
    for f in files {
        let path = root.join(&f.path);
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        let rel = remote_rel(&f.path);
        match there.get(&rel) {
            Some(&s) if s == size => {}
            Some(&s) => {
                return Err(SyncError::Remote {
                    url: remote.url.clone(),
                    action: format!("uploading {rel}"),
                    message: format!(
                        "an object of {s} bytes is there already, and this file has {size}: objects are never overwritten; run 'hakiri sync gc' if it is left from another project's killed push"
                    ),
                }
                .into());
            }
            None => todo.push((path, rel, size)),
        }
    }
    let count = todo.len();
    let total = todo.iter().map(|(_, _, size)| size).sum();
    futures::stream::iter(todo)
        .map(|(path, rel, size)| async move {
            progress(&format!("uploading {rel} ({})", mib(size)));
            upload_one(remote, &path, &rel, size).await
        })
        .buffer_unordered(CONCURRENT)
        .try_collect::<()>()
        .await?;
    Ok((count, total))
}

/// One file: a single conditional PUT (never overwriting), or a multipart upload for a
/// large one, read in chunks.
async fn upload_one(remote: &Remote, path: &Path, rel: &str, size: u64) -> Result<()> {
    let key = remote.key(rel);
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(path, e))?;
    if size as usize <= PART {
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io(path, e))?;
        return match remote
            .store
            .put_opts(&key, PutPayload::from(buf), PutMode::Create.into())
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(remote.fail(format!("uploading {rel}"), e)),
        };
    }
    let upload = remote
        .store
        .put_multipart(&key)
        .await
        .map_err(|e| remote.fail(format!("uploading {rel}"), e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf).await.map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        writer
            .wait_for_capacity(4)
            .await
            .map_err(|e| remote.fail(format!("uploading {rel}"), e))?;
        writer.write(&buf[..n]);
    }
    writer
        .finish()
        .await
        .map_err(|e| remote.fail(format!("uploading {rel}"), e))?;
    Ok(())
}

/// Downloads the files this store lacks into `incoming` (streamed, each written to a
/// `.part` file then renamed, and kept across a killed pull so the next pull resumes);
/// returns the files to [`place`], with how many were downloaded and their bytes.
///
/// They stay out of the store until the pull commits: the store's recovery removes files
/// no catalog row names.
pub async fn download(
    remote: &Remote,
    root: &Path,
    incoming: &Path,
    files: &[FileEntry],
    progress: Progress<'_>,
) -> Result<(Vec<(PathBuf, PathBuf)>, usize, u64)> {
    let fits = |p: &Path, f: &FileEntry| {
        std::fs::metadata(p).is_ok_and(|m| f.bytes == 0 || m.len() == f.bytes)
    };
    let (mut to_place, mut todo) = (Vec::new(), Vec::new());
    for f in files {
        let path = root.join(&f.path);
        if fits(&path, f) {
            continue;
        }
        let staged = incoming.join(&f.path);
        to_place.push((staged.clone(), path));
        if !fits(&staged, f) {
            todo.push((f, staged));
        }
    }
    let count = todo.len();
    let total = futures::stream::iter(todo)
        .map(|(f, staged)| async move {
            progress(&format!("downloading {} ({})", f.path, mib(f.bytes)));
            download_one(remote, f, &staged).await
        })
        .buffer_unordered(CONCURRENT)
        .try_fold(0, |sum, size| async move { Ok(sum + size) })
        .await?;
    Ok((to_place, count, total))
}

/// One file, streamed to `<staged>.part` and renamed to `staged` once whole.
async fn download_one(remote: &Remote, f: &FileEntry, staged: &Path) -> Result<u64> {
    let rel = remote_rel(&f.path);
    let got = remote
        .store
        .get(&remote.key(&rel))
        .await
        .map_err(|e| remote.fail(format!("downloading {rel}"), e))?;
    if let Some(dir) = staged.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io(dir, e))?;
    }
    let part = staged.with_extension("part");
    let mut out = tokio::fs::File::create(&part)
        .await
        .map_err(|e| Error::io(&part, e))?;
    let mut stream = got.into_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| remote.fail(format!("downloading {rel}"), e))?;
        size += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::io(&part, e))?;
    }
    out.sync_all().await.map_err(|e| Error::io(&part, e))?;
    drop(out);
    if f.bytes != 0 && size != f.bytes {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(SyncError::Remote {
            url: remote.url.clone(),
            action: format!("downloading {rel}"),
            message: format!(
                "it has {size} bytes and the remote state says {}: the remote is damaged; push again from the project that wrote it",
                f.bytes
            ),
        }
        .into());
    }
    tokio::fs::rename(&part, staged)
        .await
        .map_err(|e| Error::io(staged, e))?;
    Ok(size)
}

/// Moves downloaded files into the store (renames within one filesystem), just before the
/// pull's catalog transaction names them.
pub fn place(files: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (from, to) in files {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    }
    Ok(())
}
