//! Key rotation: a new data-key version per department, the resumable re-encryption of that
//! department's sealed fields to it, and master-key rotation (re-wrapping the stored keys).
//!
//! Guarantees:
//! - [`rotate_data_key`] adds version `n + 1` of a department's data key; old versions stay
//!   in the store, so every sealed field keeps opening while re-encryption runs.
//! - [`reencrypt`] walks the department's rows in key order in batches; each batch is one
//!   store transaction that re-seals the fields and records the last row key done
//!   (`reencrypt/<department>` in the meta table), so a run stopped at any point resumes
//!   where it stopped: nothing is lost, and nothing is sealed twice (a field already under
//!   the current version is left alone — [`KeyRing::sealed_version`]).
//! - [`rotate_master`] re-wraps every stored key (`keys/…` in the meta table) and the dev
//!   JWT key under the new master key in one transaction; data is untouched. The new master
//!   key is read only from its file, never from the environment.
//! - Plaintext lives only in zeroized buffers while a field is re-sealed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use model::Department;

use crate::crypto::{CryptoError, FieldContext, KeyRing, MasterKey, SecretKey};
use crate::keys::{load_key_ring, KeyError};
use crate::store::{Store, StoreError};

/// Rows re-sealed per transaction.
pub const BATCH_ROWS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("row {row}, field {field}: {source}")]
    Field {
        row: String,
        field: String,
        source: CryptoError,
    },
    #[error("{0}")]
    Io(String),
}

/// Progress of one department's re-encryption, kept in the meta table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    /// The key version fields are moved to.
    pub target: u32,
    /// The last row key finished; the walk resumes after it.
    pub cursor: Option<String>,
    /// Every row has been visited since the last rotation.
    pub done: bool,
    /// Rows visited and fields re-sealed so far.
    pub rows: u64,
    pub fields: u64,
}

fn progress_key(department: Department) -> String {
    format!("reencrypt/{}", department.code())
}

/// The stored progress of `department`, if a rotation ever happened.
pub fn progress(store: &Store, department: Department) -> Result<Option<Progress>, RotationError> {
    let Some(bytes) = store.meta(&progress_key(department))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        RotationError::Store(StoreError::Corrupt {
            key: progress_key(department),
            reason: e.to_string(),
        })
    })
}

/// Adds a new data-key version for `department` (new writes use it after the next start)
/// and resets its re-encryption progress. Returns the new version.
pub fn rotate_data_key(
    store: &Store,
    master: &MasterKey,
    department: Department,
) -> Result<u32, RotationError> {
    // Makes sure version 1 (and every other key) exists and opens under this master key.
    load_key_ring(store, master)?;
    let rng = SystemRandom::new();
    store.write(|w| -> Result<u32, RotationError> {
        let mut version = 1;
        while w
            .meta(&format!("keys/data/{}/{}", department.code(), version + 1))?
            .is_some()
        {
            version += 1;
        }
        let next = version + 1;
        let label = format!("data/{}/{next}", department.code());
        let key = SecretKey::generate(&rng)?;
        w.put_meta(&format!("keys/{label}"), &master.wrap(&key, &label)?)?;
        let progress = Progress {
            target: next,
            ..Progress::default()
        };
        w.put_meta(&progress_key(department), &encode(&progress))?;
        Ok(next)
    })
}

fn encode(progress: &Progress) -> Vec<u8> {
    serde_json::to_vec(progress).unwrap_or_default()
}

/// What one [`reencrypt`] run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReencryptReport {
    pub progress: Progress,
    /// Rows visited in this run.
    pub rows_this_run: u64,
}

/// Moves every sealed field of `department` to its current key version, resuming from the
/// stored cursor. Stops after `limit` rows (if given) or when `stop` turns true, with the
/// progress saved; call again to continue.
pub fn reencrypt(
    store: &Store,
    keys: &KeyRing,
    department: Department,
    limit: Option<u64>,
    stop: &AtomicBool,
) -> Result<ReencryptReport, RotationError> {
    let current = keys
        .current_version(department)
        .ok_or_else(|| CryptoError::MissingKey {
            department: department.code().to_owned(),
            version: 0,
        })?;
    let prefix = format!("{}/", department.code());
    let mut progress = progress(store, department)?.unwrap_or_default();
    if progress.target != current {
        // A rotation the stored progress does not know about (or none yet): start over.
        progress = Progress {
            target: current,
            ..Progress::default()
        };
    }
    let mut rows_this_run = 0u64;
    while !progress.done && !stop.load(Ordering::Relaxed) {
        let budget = match limit {
            Some(limit) => {
                let left = limit.saturating_sub(rows_this_run);
                if left == 0 {
                    break;
                }
                usize::try_from(left).unwrap_or(BATCH_ROWS).min(BATCH_ROWS)
            }
            None => BATCH_ROWS,
        };
        let rows = store
            .read()?
            .source_keys_after(&prefix, progress.cursor.as_deref(), budget)?;
        let mut next = progress.clone();
        next.done = rows.is_empty();
        store.write(|w| -> Result<(), RotationError> {
            for row in &rows {
                let Some(old) = w.source(row)? else { continue };
                let mut new = old.clone();
                let mut changed = 0u64;
                for (field, sealed) in new.sealed.iter_mut() {
                    if KeyRing::sealed_version(sealed)? == current {
                        continue;
                    }
                    let ctx = FieldContext {
                        department: old.department,
                        row,
                        field,
                    };
                    let field_error = |source| RotationError::Field {
                        row: row.clone(),
                        field: field.clone(),
                        source,
                    };
                    let plain = Zeroizing::new(keys.open(ctx, sealed).map_err(field_error)?);
                    *sealed = keys.seal(ctx, &plain).map_err(field_error)?;
                    changed += 1;
                }
                if changed > 0 {
                    w.put_source(&new, Some(&old))?;
                }
                next.fields += changed;
                next.rows += 1;
            }
            if let Some(last) = rows.last() {
                next.cursor = Some(last.clone());
            }
            w.put_meta(&progress_key(department), &encode(&next))?;
            Ok(())
        })?;
        rows_this_run += rows.len() as u64;
        progress = next;
    }
    Ok(ReencryptReport {
        progress,
        rows_this_run,
    })
}

/// Departments whose re-encryption is pending (rotated, not done).
pub fn pending(store: &Store) -> Result<Vec<Department>, RotationError> {
    let mut out = Vec::new();
    for department in Department::ALL {
        if progress(store, department)?.is_some_and(|p| !p.done) {
            out.push(department);
        }
    }
    Ok(out)
}

/// Resumes pending re-encryptions in the background of a running broker; stops (progress
/// saved) on shutdown.
pub fn spawn_pending(
    store: Arc<Store>,
    keys: Arc<KeyRing>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let worker_stop = stop.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let departments = match pending(&store) {
            Ok(departments) => departments,
            Err(err) => {
                tracing::error!(error = %err, "cannot read re-encryption progress");
                return;
            }
        };
        for department in departments {
            match reencrypt(&store, &keys, department, None, &worker_stop) {
                Ok(report) => tracing::info!(
                    department = department.code(),
                    rows = report.progress.rows,
                    fields = report.progress.fields,
                    done = report.progress.done,
                    "re-encryption"
                ),
                Err(err) => {
                    tracing::error!(department = department.code(), error = %err, "re-encryption stopped")
                }
            }
        }
    });
    tokio::spawn(async move {
        tokio::pin!(worker);
        tokio::select! {
            _ = &mut worker => {}
            _ = shutdown.changed() => {
                stop.store(true, Ordering::Relaxed);
                let _ = worker.await;
            }
        }
    })
}

/// Re-wraps every stored key and the dev JWT key under `new`. Returns how many were re-wrapped.
pub fn rotate_master(
    data_dir: &Path,
    store: &Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, RotationError> {
    // Refuse a wrong old key before touching anything.
    load_key_ring(store, old)?;
    let dev_key = data_dir.join("dev").join("jwt-signing.key.wrapped");
    let dev_temporary = dev_key.with_extension("wrapped.new");
    let dev_rewrapped = match std::fs::read_to_string(&dev_key) {
        Ok(text) => {
            let wrapped = STANDARD
                .decode(text.trim())
                .map_err(|_| RotationError::Io(format!("{} is not base64", dev_key.display())))?;
            let secret = old.unwrap_bytes(&wrapped, "dev/jwt-signing")?;
            let rewrapped = new.wrap_bytes(&secret, "dev/jwt-signing")?;
            let _ = std::fs::remove_file(&dev_temporary);
            crate::crypto::write_private_file(
                &dev_temporary,
                STANDARD.encode(rewrapped).as_bytes(),
            )
            .map_err(|e| RotationError::Io(format!("writing {}: {e}", dev_temporary.display())))?;
            true
        }
        Err(_) => false,
    };
    let count = store.write(|w| -> Result<usize, RotationError> {
        let keys = w.meta_keys("keys/")?;
        for meta_key in &keys {
            let label = &meta_key["keys/".len()..];
            let Some(wrapped) = w.meta(meta_key)? else {
                continue;
            };
            let secret = old.unwrap_bytes(&wrapped, label)?;
            w.put_meta(meta_key, &new.wrap_bytes(&secret, label)?)?;
        }
        Ok(keys.len())
    })?;
    if dev_rewrapped {
        std::fs::rename(&dev_temporary, &dev_key)
            .map_err(|e| RotationError::Io(format!("replacing {}: {e}", dev_key.display())))?;
    }
    Ok(count + usize::from(dev_rewrapped))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn master_rotation_rewraps_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let old = MasterKey::for_tests(1);
        let new = MasterKey::for_tests(2);
        rotate_data_key(&store, &old, Department::Gongan).unwrap();
        let before = load_key_ring(&store, &old).unwrap();
        let ctx = FieldContext {
            department: Department::Gongan,
            row: "gongan/resident/1",
            field: "name",
        };
        let sealed = before.seal(ctx, b"x").unwrap();
        assert_eq!(KeyRing::sealed_version(&sealed).unwrap(), 2);
        assert!(rotate_master(dir.path(), &store, &old, &new).unwrap() >= 11);
        assert!(
            load_key_ring(&store, &old).is_err(),
            "the old master key no longer opens"
        );
        let after = load_key_ring(&store, &new).unwrap();
        assert_eq!(after.open(ctx, &sealed).unwrap(), b"x");
    }
}
