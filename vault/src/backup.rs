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
//! - A backup is a directory with a `MANIFEST.json` of SHA-256 digests of the bytes copied;
//!   [`restore`] checks every digest before copying anything and refuses to overwrite an
//!   existing store. Copies keep the source file's permission bits.
//! - Nothing here reads plaintext: store fields stay sealed, and the master key is never
//!   part of a backup (back it up separately).
//! - Progress ([`snapshot_with_progress`], [`backup_offline_with_progress`],
//!   [`restore_with_progress`]) is counted in bytes: a backup's total is the size of the files
//!   it copies; a restore's is twice the backup's size, since every file is read once to
//!   check its digest and once to copy it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::progress::{Progress, Silent};
use crate::store::{Store, StoreError};

const MANIFEST: &str = "MANIFEST.json";

/// Bytes read and written per step of a copy or a digest (and per progress advance).
const CHUNK: usize = 1 << 20;

/// What a backup holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub store_format_version: u32,
    /// Relative path -> SHA-256 (hex).
    pub files: BTreeMap<String, String>,
}

/// The SHA-256 of a file's content, advancing `progress` by the bytes read.
fn sha256_file(path: &Path, progress: &dyn Progress) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
        progress.advance(n as u64);
    }
    Ok(hex::encode(context.finish()))
}

/// Copies `from` to `to` (created or truncated, with `from`'s permission bits from the
/// start), advancing `progress` by the bytes copied; returns the SHA-256 of those bytes.
fn copy_file(from: &Path, to: &Path, progress: &dyn Progress) -> anyhow::Result<String> {
    let mut source =
        std::fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let permissions = source
        .metadata()
        .with_context(|| format!("reading {}", from.display()))?
        .permissions();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(permissions.mode() & 0o777);
    }
    let mut target = options
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    // An existing file keeps its old mode under `open`; set it as the source's.
    target
        .set_permissions(permissions)
        .with_context(|| format!("setting the permissions of {}", to.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = source
            .read(&mut buffer)
            .with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
        target
            .write_all(&buffer[..n])
            .with_context(|| format!("writing {}", to.display()))?;
        progress.advance(n as u64);
    }
    target
        .flush()
        .with_context(|| format!("writing {}", to.display()))?;
    Ok(hex::encode(context.finish()))
}

fn copy_into(
    from: &Path,
    out: &Path,
    relative: &str,
    manifest: &mut Manifest,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let target = out.join(relative);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let digest = copy_file(from, &target, progress)
        .with_context(|| format!("copying {} to {}", from.display(), target.display()))?;
    manifest.files.insert(relative.to_owned(), digest);
    Ok(())
}

/// The audit log's files a backup copies, in name order (the log's transient probe file,
/// written while it recovers from a failed write, is not part of the log).
fn audit_files(data_dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
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
    Ok(entries
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name().and_then(|n| n.to_str())?.to_owned();
            (!name.ends_with(".tmp")).then_some((name, path))
        })
        .collect())
}

/// Size of a file in bytes (0 when it cannot be read: the copy then reports the error).
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Writes a consistent backup of `data_dir` (whose store is open as `store`) into `out`,
/// which must not exist yet.
pub fn snapshot(store: &Store, data_dir: &Path, out: &Path) -> anyhow::Result<Manifest> {
    snapshot_with_progress(store, data_dir, out, &Silent)
}

/// [`snapshot`], reporting the bytes copied to `progress`: the total is the size of the store
/// and the audit files when the backup starts (a serving broker may grow the log meanwhile,
/// and then more is copied than the total said).
pub fn snapshot_with_progress(
    store: &Store,
    data_dir: &Path,
    out: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<Manifest> {
    if !store.is_embedded() {
        bail!(
            "the store is in PostgreSQL: back it up with the database's own tools \
             (pg_basebackup and WAL archiving); a SafeGrid backup copies an embedded store"
        );
    }
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
    let total = file_len(&store_file)
        + audit_files(data_dir)?
            .iter()
            .map(|(_, path)| file_len(path))
            .sum::<u64>();
    progress.set_total(total);
    progress.stage("copying the store");
    // Holding the write transaction keeps every writer out while the file is copied.
    store
        .write(|_| -> Result<(), StoreCopyError> {
            copy_into(&store_file, out, "store.redb", &mut manifest, progress)
                .map_err(StoreCopyError::Copy)
        })
        .map_err(|e| match e {
            StoreCopyError::Copy(err) => err,
            StoreCopyError::Store(err) => anyhow::Error::from(err),
        })?;
    // Listed again after the store copy, so that the log covers every change in it.
    progress.stage("copying the audit log");
    for (name, path) in audit_files(data_dir)? {
        copy_into(
            &path,
            out,
            &format!("audit/{name}"),
            &mut manifest,
            progress,
        )?;
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
    backup_offline_with_progress(data_dir, out, &Silent)
}

/// [`backup_offline`], reporting the bytes copied to `progress` (the total is exact: nothing
/// else writes the data directory meanwhile).
pub fn backup_offline_with_progress(
    data_dir: &Path,
    out: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<Manifest> {
    let store = Store::open(&data_dir.join("store.redb"))
        .context("opening the store (a serving broker holds it: stop the broker first)")?;
    snapshot_with_progress(&store, data_dir, out, progress)
}

/// Restores a backup into `data_dir`, which must not hold a store yet.
pub fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<Manifest> {
    restore_with_progress(from, data_dir, &Silent)
}

/// [`restore`], reporting bytes to `progress`: the total is twice the backup's size (every
/// file is read to check its digest, then copied).
pub fn restore_with_progress(
    from: &Path,
    data_dir: &Path,
    progress: &dyn Progress,
) -> anyhow::Result<Manifest> {
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
    for relative in manifest.files.keys() {
        if relative.contains("..") || relative.starts_with('/') {
            bail!("the manifest names an unsafe path");
        }
    }
    let size: u64 = manifest
        .files
        .keys()
        .map(|relative| file_len(&from.join(relative)))
        .sum();
    progress.set_total(size.saturating_mul(2));
    progress.stage("checking digests");
    for (relative, digest) in &manifest.files {
        if &sha256_file(&from.join(relative), progress)? != digest {
            bail!("{relative} in the backup does not match its digest; the backup is damaged");
        }
    }
    if data_dir.join("store.redb").exists() || data_dir.join("audit").exists() {
        bail!(
            "{} already holds data; restore into an empty directory",
            data_dir.display()
        );
    }
    progress.stage("copying");
    for relative in manifest.files.keys() {
        let target = data_dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        copy_file(&from.join(relative), &target, progress)
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

    /// A backup and its restore report bytes: a total first, then advances that add up to
    /// it (the files' sizes for the backup, twice that for the restore); the copies keep the
    /// files' permission bits.
    #[test]
    fn backup_and_restore_report_their_bytes() {
        use crate::progress::Counting;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("audit")).unwrap();
        std::fs::write(
            data.join("audit/segment-000000.log"),
            vec![7u8; 3 * CHUNK + 5],
        )
        .unwrap();
        std::fs::write(data.join("audit/checkpoints.log"), b"note").unwrap();
        std::fs::write(data.join("audit/probe.tmp"), b"not part of the log").unwrap();
        {
            let store = Store::open(&data.join("store.redb")).unwrap();
            store
                .write(|w| {
                    for i in 0..200 {
                        w.put_meta(&format!("probe/{i}"), &[1u8; 512])?;
                    }
                    Ok::<_, StoreError>(())
                })
                .unwrap();
        }
        let size = file_len(&data.join("store.redb"))
            + file_len(&data.join("audit/segment-000000.log"))
            + file_len(&data.join("audit/checkpoints.log"));

        let backup = Counting::new();
        let out = dir.path().join("b");
        let manifest = backup_offline_with_progress(&data, &out, &backup).unwrap();
        assert_eq!(manifest.files.len(), 3, "{:?}", manifest.files.keys());
        assert_eq!(backup.totals(), vec![size]);
        assert_eq!(backup.advanced(), size);
        assert_eq!(backup.advanced_before_total(), 0);
        assert!(backup.advances() >= 4, "one advance per chunk copied");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode(&out.join("store.redb")),
                mode(&data.join("store.redb"))
            );
        }

        let restore = Counting::new();
        let restored = dir.path().join("restored");
        restore_with_progress(&out, &restored, &restore).unwrap();
        assert_eq!(restore.totals(), vec![2 * size]);
        assert_eq!(restore.advanced(), 2 * size);
        assert_eq!(restore.advanced_before_total(), 0);
        assert_eq!(
            std::fs::read(restored.join("audit/segment-000000.log")).unwrap(),
            vec![7u8; 3 * CHUNK + 5]
        );
        let store = Store::open(&restored.join("store.redb")).unwrap();
        assert_eq!(
            store.meta("probe/199").unwrap().as_deref(),
            Some(&[1u8; 512][..])
        );
    }
}
