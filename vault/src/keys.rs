//! Key bootstrap: the data keys of every department, the blind-index key, the entity-id key
//! and the audit keys, created on first start and kept in the store wrapped by the master key.
//!
//! Guarantees: a key is generated once and never silently replaced — a store whose wrapped
//! keys do not open under the given master key refuses to start (wrong master key), instead
//! of creating fresh keys that would orphan the data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use model::Department;
use ring::rand::SystemRandom;

use crate::crypto::{CryptoError, KeyMaterial, KeyRing, MasterKey, SecretKey};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Meta-key prefix of the wrapped blind-index keys (`keys/blind-index/<version>`).
pub const BLIND_INDEX_PREFIX: &str = "keys/blind-index/";

/// The wrapping label of a blind-index key version.
pub fn blind_index_label(version: u32) -> String {
    format!("blind-index/{version}")
}

/// Loads every key from the store, creating missing ones (version 1) in one transaction.
pub fn load_key_ring(store: &Store, master: &MasterKey) -> Result<KeyRing, KeyError> {
    let rng = SystemRandom::new();
    store.write(|w| -> Result<KeyRing, KeyError> {
        let load =
            |w: &mut crate::store::StoreWriter, label: String| -> Result<SecretKey, KeyError> {
                let meta_key = format!("keys/{label}");
                match w.meta(&meta_key)? {
                    Some(wrapped) => Ok(master.unwrap_key(&wrapped, &label)?),
                    None => {
                        let key = SecretKey::generate(&rng)?;
                        w.put_meta(&meta_key, &master.wrap(&key, &label)?)?;
                        Ok(key)
                    }
                }
            };
        let mut data_keys = Vec::new();
        for department in Department::ALL {
            // Version 1 always exists; rotation adds higher versions under the same prefix.
            let mut version = 1;
            loop {
                let label = format!("data/{}/{version}", department.code());
                let exists = version == 1 || w.meta(&format!("keys/{label}"))?.is_some();
                if !exists {
                    break;
                }
                data_keys.push((department, version, load(w, label)?));
                version += 1;
            }
        }
        // Blind-index versions: the highest is current; older ones stay until a rotation's
        // re-computation retires them (`rotation::reblind`).
        let mut blind_versions: Vec<u32> = w
            .meta_keys(BLIND_INDEX_PREFIX)?
            .iter()
            .filter_map(|key| key[BLIND_INDEX_PREFIX.len()..].parse().ok())
            .collect();
        if blind_versions.is_empty() {
            blind_versions.push(1);
        }
        blind_versions.sort_unstable_by_key(|version| std::cmp::Reverse(*version));
        let mut blind_keys = Vec::new();
        for version in blind_versions {
            blind_keys.push((version, load(w, blind_index_label(version))?));
        }
        let blind_index = blind_keys.remove(0);
        let material = KeyMaterial {
            data_keys,
            blind_index,
            blind_index_retiring: blind_keys,
            entity_id: load(w, "entity-id/1".to_owned())?,
            audit_subject: load(w, "audit-subject/1".to_owned())?,
        };
        Ok(KeyRing::new(material))
    })
}

/// Loads (or creates) a wrapped secret blob such as a signing key's PKCS#8 bytes.
pub fn load_or_create_secret(
    store: &Store,
    master: &MasterKey,
    label: &str,
    create: impl FnOnce() -> Result<Vec<u8>, CryptoError>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
    store.write(|w| {
        let meta_key = format!("keys/{label}");
        match w.meta(&meta_key)? {
            Some(wrapped) => Ok(master.unwrap_bytes(&wrapped, label)?),
            None => {
                let secret = zeroize::Zeroizing::new(create()?);
                w.put_meta(&meta_key, &master.wrap_bytes(&secret, label)?)?;
                Ok(secret)
            }
        }
    })
}

/// `<DIR>.master-key`: beside the data directory, never inside it.
pub fn default_master_key_path(data_dir: &Path) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "safegrid".into());
    name.push(".master-key");
    data_dir.with_file_name(name)
}

/// Loads the master key the way `serve` does.
pub fn load_master_key(
    data_dir: &Path,
    explicit: Option<&Path>,
    dev: bool,
) -> anyhow::Result<MasterKey> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => default_master_key_path(data_dir),
    };
    let absolute_data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if let Some(parent) = path.parent().and_then(|p| std::fs::canonicalize(p).ok()) {
        if parent.starts_with(&absolute_data) {
            bail!(
                "the master key {} must not live inside the data directory {}",
                path.display(),
                data_dir.display()
            );
        }
    }
    MasterKey::load(Some(&path), dev)
        .with_context(|| format!("loading the master key ({})", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::FieldContext;

    #[test]
    fn keys_survive_restart_and_wrong_master_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let sealed = {
            let store = Store::open(&path).unwrap();
            let ring = load_key_ring(&store, &MasterKey::for_tests(1)).unwrap();
            let ctx = FieldContext {
                department: Department::Weijian,
                row: "r",
                field: "f",
            };
            ring.seal(ctx, b"x").unwrap()
        };
        let store = Store::open(&path).unwrap();
        let ring = load_key_ring(&store, &MasterKey::for_tests(1)).unwrap();
        let ctx = FieldContext {
            department: Department::Weijian,
            row: "r",
            field: "f",
        };
        assert_eq!(ring.open(ctx, &sealed).unwrap(), b"x");
        assert!(matches!(
            load_key_ring(&store, &MasterKey::for_tests(2)),
            Err(KeyError::Crypto(CryptoError::Unwrap))
        ));
    }
}
