//! Connector state on disk: checkpoints and the set of processed file hashes.
//!
//! Guarantees: [`write_atomic`] leaves either the old or the new content, never a torn file
//! (temp file + fsync + rename + fsync of the directory); [`ProcessedHashes::insert`] is
//! durable before it returns.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ConnectorError;

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConnectorError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)
        .map_err(|e| ConnectorError::io(format!("creating {}", dir.display()), e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".to_owned());
    let temp = dir.join(format!(".{file_name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| ConnectorError::io(format!("writing {}", path.display()), e))
}

/// Reads a state file; a missing file is `None`.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ConnectorError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConnectorError::io(format!("reading {}", path.display()), e)),
    }
}

/// SHA-256 of a file's content, as lowercase hex.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The hashes of every file a file-drop connector has ingested: one hex hash per line in an
/// append-only file.
#[derive(Debug)]
pub(crate) struct ProcessedHashes {
    path: PathBuf,
    hashes: HashSet<String>,
}

impl ProcessedHashes {
    pub(crate) fn load(path: PathBuf) -> Result<ProcessedHashes, ConnectorError> {
        let mut hashes = HashSet::new();
        if let Some(bytes) = read_optional(&path)? {
            let text = String::from_utf8(bytes).map_err(|_| ConnectorError::State {
                path: path.clone(),
                message: "not UTF-8".to_owned(),
            })?;
            for line in text.lines() {
                let line = line.trim();
                // A line torn by a crash mid-append is shorter than a hash: ignore it, the
                // file it belonged to is simply ingested again (idempotently).
                if line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
                    hashes.insert(line.to_owned());
                }
            }
        }
        Ok(ProcessedHashes { path, hashes })
    }

    pub(crate) fn contains(&self, hash: &str) -> bool {
        self.hashes.contains(hash)
    }

    pub(crate) fn insert(&mut self, hash: &str) -> Result<(), ConnectorError> {
        if self.hashes.contains(hash) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| ConnectorError::io(format!("creating {}", dir.display()), e))?;
        }
        let append = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            // Start on a fresh line in case a previous append was torn.
            file.write_all(format!("\n{hash}\n").as_bytes())?;
            file.sync_all()
        };
        append().map_err(|e| ConnectorError::io(format!("writing {}", self.path.display()), e))?;
        self.hashes.insert(hash.to_owned());
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_hashes_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(read_optional(&path).unwrap().unwrap(), b"two");
        assert!(read_optional(&dir.path().join("missing"))
            .unwrap()
            .is_none());

        let hash = content_hash(b"abc");
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut set = ProcessedHashes::load(dir.path().join("h")).unwrap();
        set.insert(&hash).unwrap();
        let again = ProcessedHashes::load(dir.path().join("h")).unwrap();
        assert!(again.contains(&hash));
        assert!(!again.contains(&content_hash(b"abd")));
    }
}
