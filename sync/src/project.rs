//! Who this project is to the remote, and what it last synced: `.hakiri/sync/`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use hakiri_core::Error;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::state::Fingerprint;

/// A project as leases and pushes name it: a random id made once, and a name for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    /// `<project>@<host>:<folder>`.
    pub name: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.name, &self.id[..self.id.len().min(8)])
    }
}

/// `.hakiri/sync` of a project.
#[derive(Debug, Clone)]
pub struct ProjectDir {
    dir: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

impl ProjectDir {
    pub fn new(root: &Path) -> Result<Self> {
        let dir = root.join(".hakiri").join("sync");
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(ProjectDir { dir })
    }

    /// This project's identity, made on first use.
    pub fn holder(&self, project: &str, root: &Path) -> Result<Holder> {
        let path = self.dir.join("project.json");
        if let Ok(bytes) = fs::read(&path)
            && let Ok(h) = serde_json::from_slice::<Holder>(&bytes)
        {
            return Ok(h);
        }
        let host = hostname();
        let folder = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let project = if project.is_empty() { &folder } else { project };
        let holder = Holder {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: format!("{project}@{host}:{}", root.display()),
        };
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&holder).expect("serializes"),
        )?;
        Ok(holder)
    }

    /// What the last push or pull left the project with; `None` before the first.
    pub fn base(&self) -> Result<Option<Base>> {
        let path = self.dir.join("base.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Internal(format!(
                    "{} does not read ({e}): delete it and pull with --discard-local",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Where a pull downloads files before it commits them.
    pub fn incoming(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    /// Removes what a committed pull left in [`ProjectDir::incoming`].
    pub fn clear_incoming(&self) {
        let _ = fs::remove_dir_all(self.incoming());
    }

    pub fn set_base(&self, base: &Base) -> Result<()> {
        write_atomic(
            &self.dir.join("base.json"),
            &serde_json::to_vec_pretty(base).expect("serializes"),
        )
    }
}

/// The last sync: the remote state version it saw, and the local state it left.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Base {
    pub remote_version: u64,
    pub local: Fingerprint,
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
