//! Backup and restore of a data directory: the store, the audit log and its checkpoints.
//!
//! Guarantees:
//! - The store is copied while a write transaction is held, so no batch commits during the
//!   copy: the copy is exactly the store as of one commit (readers are not blocked; writers
//!   wait for the few seconds of the copy).
//! - The audit log is copied *after* the store. Every store change is audited after it
//!   commits, so the copied log holds a record for every change in the copied store (and
//!   possibly a few later ones); a torn final audit frame is truncated on open, as after a
//!   crash. The search index is not copied: it is rebuilt from the store (`safegrid reindex`,
//!   or on start).
//! - A backup is a directory with a `MANIFEST.json` of SHA-256 digests; [`restore`] checks
//!   every digest before copying anything and refuses to overwrite an existing store.
//! - Nothing here reads plaintext: store fields stay sealed, and the master key is never
//!   part of a backup (back it up separately).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

const MANIFEST: &str = "MANIFEST.json";

/// What a backup holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub store_format_version: u32,
    /// Relative path -> SHA-256 (hex).
    pub files: BTreeMap<String, String>,
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(hex::encode(context.finish()))
}

fn copy_into(
    from: &Path,
    out: &Path,
    relative: &str,
    manifest: &mut Manifest,
) -> anyhow::Result<()> {
    let target = out.join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(from, &target)
        .with_context(|| format!("copying {} to {}", from.display(), target.display()))?;
    manifest
        .files
        .insert(relative.to_owned(), sha256_file(&target)?);
    Ok(())
}

/// Writes a consistent backup of `data_dir` (whose store is open as `store`) into `out`,
/// which must not exist yet.
pub fn snapshot(store: &Store, data_dir: &Path, out: &Path) -> anyhow::Result<Manifest> {
    if out.exists() {
        bail!(
            "{} already exists; choose a new backup directory",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut manifest = Manifest {
        created_at: chrono::Utc::now(),
        store_format_version: crate::store::STORE_FORMAT_VERSION,
        files: BTreeMap::new(),
    };
    let store_file = data_dir.join("store.redb");
    // Holding the write transaction keeps every writer out while the file is copied.
    store
        .write(|_| -> Result<(), StoreCopyError> {
            copy_into(&store_file, out, "store.redb", &mut manifest).map_err(StoreCopyError::Copy)
        })
        .map_err(|e| match e {
            StoreCopyError::Copy(err) => err,
            StoreCopyError::Store(err) => anyhow::Error::from(err),
        })?;
    let audit = data_dir.join("audit");
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(&audit) {
        Ok(dir) => dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).with_context(|| format!("listing {}", audit.display())),
    };
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // The log's transient probe file (written while it recovers from a failed write) is
        // not part of the log.
        if name.ends_with(".tmp") {
            continue;
        }
        copy_into(&path, out, &format!("audit/{name}"), &mut manifest)?;
    }
    let text = serde_json::to_vec_pretty(&manifest).context("encoding the manifest")?;
    std::fs::write(out.join(MANIFEST), text).context("writing the manifest")?;
    Ok(manifest)
}

#[derive(Debug)]
enum StoreCopyError {
    Store(StoreError),
    Copy(anyhow::Error),
}

impl From<StoreError> for StoreCopyError {
    fn from(err: StoreError) -> Self {
        StoreCopyError::Store(err)
    }
}

/// Backs up a data directory that no broker is serving (the store is opened exclusively).
pub fn backup_offline(data_dir: &Path, out: &Path) -> anyhow::Result<Manifest> {
    let store = Store::open(&data_dir.join("store.redb"))
        .context("opening the store (a serving broker holds it: stop the broker first)")?;
    snapshot(&store, data_dir, out)
}

/// Restores a backup into `data_dir`, which must not hold a store yet.
pub fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<Manifest> {
    let bytes = std::fs::read(from.join(MANIFEST))
        .with_context(|| format!("reading {}", from.join(MANIFEST).display()))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).context("the manifest is not valid")?;
    if manifest.store_format_version > crate::store::STORE_FORMAT_VERSION {
        bail!(
            "the backup's store format {} is newer than this broker supports ({}); upgrade SafeGrid",
            manifest.store_format_version,
            crate::store::STORE_FORMAT_VERSION
        );
    }
    for (relative, digest) in &manifest.files {
        if relative.contains("..") || relative.starts_with('/') {
            bail!("the manifest names an unsafe path");
        }
        if &sha256_file(&from.join(relative))? != digest {
            bail!("{relative} in the backup does not match its digest; the backup is damaged");
        }
    }
    if data_dir.join("store.redb").exists() || data_dir.join("audit").exists() {
        bail!(
            "{} already holds data; restore into an empty directory",
            data_dir.display()
        );
    }
    for relative in manifest.files.keys() {
        let target = data_dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(from.join(relative), &target)
            .with_context(|| format!("restoring {relative}"))?;
    }
    // Opening checks the format version (and repairs a copy taken while the file was open).
    Store::open(&data_dir.join("store.redb")).context("opening the restored store")?;
    Ok(manifest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backup_of_an_open_store_restores_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("audit")).unwrap();
        std::fs::write(data.join("audit/segment-000000.log"), b"frames").unwrap();
        let store = Store::open(&data.join("store.redb")).unwrap();
        store.write(|w| w.put_meta("probe", b"1")).unwrap();
        let manifest = snapshot(&store, &data, &dir.path().join("b")).unwrap();
        assert!(manifest.files.contains_key("store.redb"));
        assert!(
            snapshot(&store, &data, &dir.path().join("b")).is_err(),
            "never overwrites"
        );
        drop(store);

        let restored = dir.path().join("restored");
        restore(&dir.path().join("b"), &restored).unwrap();
        let store = Store::open(&restored.join("store.redb")).unwrap();
        assert_eq!(store.meta("probe").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(
            restore(&dir.path().join("b"), &restored).is_err(),
            "never overwrites"
        );

        std::fs::write(dir.path().join("b/audit/segment-000000.log"), b"changed").unwrap();
        let err = restore(&dir.path().join("b"), &dir.path().join("other")).unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
    }
}
