//! Measuring free space on the file system that holds the log.
//!
//! Guarantees: [`StatvfsFreeSpace`] reports the bytes an unprivileged process may still
//! allocate there (`f_bavail * f_frsize`, what `df` shows as available), so the log's
//! reserve never counts the blocks the file system keeps back for root.
//!
//! The log asks its [`FreeSpaceProbe`] at most once per batch of records, never per record:
//! while free space is well above the reserve, once per `free_space_check_interval` (see
//! [`AuditConfig`](crate::AuditConfig)); near the reserve, whenever its own writes could
//! have reached it; while it refuses appends, before every batch and every `retry_interval`.

use std::path::Path;

/// A source of the free space on the file system holding a directory.
///
/// [`StatvfsFreeSpace`] is the real one; tests substitute a value they control to simulate
/// a full disk.
pub trait FreeSpaceProbe: std::fmt::Debug + Send + Sync {
    /// Bytes available for new data on the file system holding `dir`.
    fn free_bytes(&self, dir: &Path) -> std::io::Result<u64>;
}

/// Free space as `statvfs(2)` reports it for unprivileged use.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatvfsFreeSpace;

impl FreeSpaceProbe for StatvfsFreeSpace {
    fn free_bytes(&self, dir: &Path) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_reports_some_space_and_errors_on_a_missing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(StatvfsFreeSpace.free_bytes(tmp.path()).unwrap() > 0);
        assert!(StatvfsFreeSpace
            .free_bytes(&tmp.path().join("missing"))
            .is_err());
    }
}
