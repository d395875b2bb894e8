//! The context store's encryption keys (`[store] encryption_key` and `previous_keys`).
//!
//! Every file is written with the current key and names it in its footer's key metadata
//! (`hakiri-key:<id>`, the id a hash of the key, never the key). A reader looks the id up
//! among the current and previous keys, so a store written with several keys reads as one
//! while `hakiri context rekey` rewrites the older files with the current key. Files from
//! before key ids (no metadata) are read with the first of `previous_keys` (listed oldest
//! first), or with the current key when there is none.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::config::EncryptionFactoryOptions;
use datafusion::error::Result as DfResult;
use datafusion::execution::parquet_encryption::EncryptionFactory;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use datafusion::parquet::encryption::encrypt::FileEncryptionProperties;
use datafusion::parquet::errors::ParquetError;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const KEY_ID_PREFIX: &str = "hakiri-key:";

/// The name the store's keys are registered under in a session's runtime.
pub const FACTORY_ID: &str = "hakiri-store";

/// An AES key of the store (16 or 32 bytes); never printed, only its id.
#[derive(Clone)]
pub struct StoreKey {
    bytes: Vec<u8>,
    id: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey({}, <{} bits>)", self.id, self.bytes.len() * 8)
    }
}

impl StoreKey {
    /// A key from its hex text (32 or 64 hex digits: AES-128 or AES-256).
    pub fn from_hex(what: &str, text: &str) -> Result<Self> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .filter(|b| b.len() == 16 || b.len() == 32);
        let bytes = bytes.ok_or_else(|| {
            Error::Config(format!(
                "{what} must be 32 or 64 hex digits (a 128- or 256-bit AES key); it has {} characters: make one with `openssl rand -hex 32`",
                text.len()
            ))
        })?;
        // A domain-separated SHA-256, cut to 64 bits: names the key, reveals nothing usable.
        let digest = Sha256::new()
            .chain_update(b"hakiri store key id\0")
            .chain_update(&bytes)
            .finalize();
        Ok(StoreKey {
            id: hex::encode(&digest[..8]),
            bytes,
        })
    }

    /// The key's id, as file footers and messages name it.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The keys a store is read with: the current one (every new file is written with it) and
/// the ones being rotated out.
#[derive(Debug, Clone)]
pub struct StoreKeys {
    pub current: StoreKey,
    pub previous: Vec<StoreKey>,
}

impl StoreKeys {
    pub fn new(current: StoreKey, previous: Vec<StoreKey>) -> Self {
        StoreKeys { current, previous }
    }

    /// The key a file's footer names.
    fn lookup(&self, metadata: &[u8]) -> std::result::Result<&StoreKey, String> {
        if metadata.is_empty() {
            return Ok(self.previous.first().unwrap_or(&self.current));
        }
        let id = std::str::from_utf8(metadata)
            .ok()
            .and_then(|m| m.strip_prefix(KEY_ID_PREFIX))
            .unwrap_or("(not a Hakiri key id)");
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                let previous: Vec<&str> = self.previous.iter().map(|k| k.id.as_str()).collect();
                format!(
                    "written with store key {id}, which is neither [store] encryption_key (key {}) nor one of previous_keys ({}): add the key it was written with to [store] previous_keys",
                    self.current.id,
                    if previous.is_empty() {
                        "none".to_string()
                    } else {
                        previous.join(", ")
                    }
                )
            })
    }

    /// How files are written: uniform encryption (footer and every column) with the
    /// current key, named in the footer.
    pub(crate) fn encryption(&self) -> Result<Arc<FileEncryptionProperties>> {
        FileEncryptionProperties::builder(self.current.bytes.clone())
            .with_footer_key_metadata(format!("{KEY_ID_PREFIX}{}", self.current.id).into_bytes())
            .build()
            .map_err(|e| Error::Internal(format!("the store key: {e}")))
    }

    /// How files are read: each with the key its footer names. `seen` is told the id of
    /// the key used (it stays `None` for a plain file).
    pub(crate) fn decryption(
        self: &Arc<Self>,
        seen: Option<Arc<Mutex<Option<String>>>>,
    ) -> Result<Arc<FileDecryptionProperties>> {
        FileDecryptionProperties::with_key_retriever(Arc::new(Retriever {
            keys: self.clone(),
            seen,
        }))
        .build()
        .map_err(|e| Error::Internal(format!("the store keys: {e}")))
    }

    /// Lets DataFusion's Parquet reader in `runtime` find the keys (tables read with
    /// `factory_id` = [`FACTORY_ID`]).
    pub fn register(self: &Arc<Self>, runtime: &RuntimeEnv) {
        runtime.register_parquet_encryption_factory(FACTORY_ID, Arc::new(Factory(self.clone())));
    }
}

struct Retriever {
    keys: Arc<StoreKeys>,
    seen: Option<Arc<Mutex<Option<String>>>>,
}

impl KeyRetriever for Retriever {
    fn retrieve_key(&self, metadata: &[u8]) -> std::result::Result<Vec<u8>, ParquetError> {
        let key = self.keys.lookup(metadata).map_err(ParquetError::General)?;
        if let Some(seen) = &self.seen {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.id.clone());
        }
        Ok(key.bytes.clone())
    }
}

#[derive(Debug)]
struct Factory(Arc<StoreKeys>);

#[async_trait]
impl EncryptionFactory for Factory {
    async fn get_file_encryption_properties(
        &self,
        _: &EncryptionFactoryOptions,
        _: &SchemaRef,
        _: &ObjectPath,
    ) -> DfResult<Option<Arc<FileEncryptionProperties>>> {
        Ok(Some(self.0.encryption()?))
    }

    async fn get_file_decryption_properties(
        &self,
        _: &EncryptionFactoryOptions,
        _: &ObjectPath,
    ) -> DfResult<Option<Arc<FileDecryptionProperties>>> {
        Ok(Some(self.0.decryption(None)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f";
    const B: &str = "0f0e0d0c0b0a09080706050403020100";

    #[test]
    fn files_name_their_key_and_are_read_with_it() {
        let a = StoreKey::from_hex("a", A).unwrap();
        let b = StoreKey::from_hex("b", B).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().len(), 16);
        assert!(!format!("{a:?}").contains(A), "the key is never printed");
        let keys = StoreKeys::new(b.clone(), vec![a.clone()]);
        let meta = |k: &StoreKey| format!("{KEY_ID_PREFIX}{}", k.id()).into_bytes();
        assert_eq!(keys.lookup(&meta(&a)).unwrap().id(), a.id());
        assert_eq!(keys.lookup(&meta(&b)).unwrap().id(), b.id());
        // No metadata: written before key ids; read with the first (oldest) previous key.
        assert_eq!(keys.lookup(b"").unwrap().id(), a.id());
        let only_b = StoreKeys::new(b.clone(), Vec::new());
        let e = only_b.lookup(&meta(&a)).unwrap_err();
        assert!(
            e.contains(&format!("written with store key {}", a.id())),
            "{e}"
        );
        assert!(e.contains("previous_keys (none)"), "{e}");
    }
}
