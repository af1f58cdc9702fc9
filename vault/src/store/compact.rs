//! Compaction of a stopped broker's embedded store file (`safegrid compact`).
//!
//! Every transaction copies the B-tree pages it changes, and a file filled by many small
//! batches beside readers holds more free and half-empty pages than data (BENCHMARKS.md,
//! "Store size"). Moving pages to the front of the file (redb's own compaction) drops the free
//! ones but keeps the half-empty ones; this rewrites the store instead.
//!
//! Guarantees:
//! - Every entry of every table is copied in key order into a new file beside the store
//!   (`<file>.compacting`), a chunk per transaction, so B-tree leaves come out full; source
//!   rows are rewritten in today's row layout ([`crate::row`]).
//! - Done means checked: the copy, read back, digests to the same SHA-256 as the original
//!   (every key and value of every table with rows compared as decoded, every change in
//!   order, every link entry). Only then does the copy replace the store, by a rename after both are synced: a
//!   crash or an error at any point leaves the original store as it was (a stale copy is
//!   removed by the next run).
//! - The original stays open, and so locked, until the copy replaced it: a broker cannot
//!   start on it meanwhile, and a running broker's store is refused (the lock is held).
//! - It needs free disk space for the copy (about the compacted size); without it, the copy
//!   is removed and the error says so.

use std::path::{Path, PathBuf};

use super::embedded::Embedded;
use super::{Store, StoreError, DEFAULT_CACHE_BYTES};
use crate::progress::{Progress, Silent};

/// Entries copied per transaction: large enough that commits (each an fsync) are few, small
/// enough that a transaction's dirty pages stay a few tens of MiB.
const CHUNK: usize = 20_000;

/// What [`compact`] did to a store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Rewrites the embedded store file at `path` (see the module); fails while a broker has it
/// open.
pub fn compact(path: &Path) -> Result<Compaction, StoreError> {
    compact_with_progress(path, &Silent)
}

/// [`compact`], reporting the source rows copied.
pub fn compact_with_progress(
    path: &Path,
    progress: &dyn Progress,
) -> Result<Compaction, StoreError> {
    let bytes_before = file_len(path)?;
    // Through `Store`, so a newer format is refused before anything is written, and the
    // file stays locked until the copy has replaced it.
    let original = Store::open(path)?;
    if !original.is_embedded() {
        return Err(StoreError::Unavailable(
            "only the embedded store file is compacted".to_owned(),
        ));
    }
    let copy = copy_path(path);
    remove_if_present(&copy)?;
    if let Err(err) = copy_checked(&original, &copy, progress) {
        let _ = std::fs::remove_file(&copy);
        return Err(err);
    }
    let io = |err: std::io::Error| StoreError::Database(redb::StorageError::Io(err).into());
    std::fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&copy, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    drop(original);
    Ok(Compaction {
        bytes_before,
        bytes_after: file_len(path)?,
    })
}

/// Copies `original` into a new file at `copy`, checks it and drops its free pages.
fn copy_checked(original: &Store, copy: &Path, progress: &dyn Progress) -> Result<(), StoreError> {
    let source = original.engine.as_embedded().ok_or_else(|| {
        StoreError::Unavailable("only the embedded store file is compacted".to_owned())
    })?;
    progress.stage("copying");
    progress.set_total(original.read()?.source_count()?);
    {
        let target = Embedded::open(copy, DEFAULT_CACHE_BYTES)?;
        source.copy_into(
            &target,
            CHUNK,
            &|key, value| Ok(crate::row::encode(&crate::row::decode(key, value)?)),
            progress,
        )?;
    }

    progress.stage("verifying");
    let differs = |what: String| StoreError::Corrupt {
        key: copy.display().to_string(),
        reason: format!(
            "the compacted copy differs from the store ({what}); the store was left as it was"
        ),
    };
    {
        let copied = Store::open(copy)?;
        let (digest, counts) = crate::migrate::summarize(&original.read()?, true)?;
        let (copied_digest, copied_counts) = crate::migrate::summarize(&copied.read()?, true)?;
        if digest != copied_digest || counts != copied_counts {
            return Err(differs(format!("store {counts:?}, copy {copied_counts:?}")));
        }
    }
    let mut engine = Embedded::open(copy, DEFAULT_CACHE_BYTES)?;
    let (links, copied_links) = (source.links_digest()?, engine.links_digest()?);
    if links != copied_links {
        return Err(differs(format!(
            "{} link entries, {} copied",
            links.1, copied_links.1
        )));
    }
    // The chunks' commits left pages behind them.
    progress.stage("dropping free pages");
    while engine.compact()? {}
    Ok(())
}

fn copy_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".compacting");
    path.with_file_name(name)
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::Database(redb::StorageError::Io(err).into()))
        }
        _ => Ok(()),
    }
}

fn file_len(path: &Path) -> Result<u64, StoreError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|err| StoreError::Database(redb::StorageError::Io(err).into()))
}
