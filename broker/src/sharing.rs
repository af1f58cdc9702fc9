//! The sharing rate (数据共享率): which departments' records have been disclosed to someone
//! outside the department — read by a grid worker or an officer, found in a search,
//! delivered to or pulled by another department's subscription.
//!
//! Guarantees:
//! - A source record counts as shared once, the first time any disclosure outside its
//!   department shows it (the profile's sources after the view: a department the caller may
//!   not know about is not counted). Its own department's readers never count.
//! - Marking costs a disclosure no store write: the rows are remembered in memory (as
//!   64-bit digests of their keys) and written by a background task in batches
//!   (`sharing/row/<digest>` and a counter per department, in one transaction), so at most
//!   the last second is lost on a crash — a figure, not a record of access (the audit log is
//!   that).
//! - No personal data: the marks are digests of row keys, the figures counts.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::profile::SourceRef;
use model::{Department, RecordKind};
use tokio::sync::watch;
use vault::store::{Store, StoreError};

/// How often marks are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

fn row_key(digest: u64) -> String {
    format!("sharing/row/{digest:016x}")
}

fn count_key(department: Department) -> String {
    format!("sharing/count/{}", department.code())
}

/// The marks of shared rows, and the figures.
#[derive(Debug)]
pub struct SharingTracker {
    store: Arc<Store>,
    /// Digests of rows known to be shared (written or pending).
    known: Mutex<HashSet<u64>>,
    /// Marks waiting for the background writer.
    pending: Mutex<Vec<(u64, Department)>>,
    /// The published counts and the change sequence they were counted at.
    published: Mutex<Option<(u64, BTreeMap<String, u64>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The 64-bit digest of a source row's key.
fn digest(department: Department, kind: RecordKind, source_id: &str) -> u64 {
    let key = vault::store::StoredSource::row_key(department, kind, source_id);
    let hash = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(bytes)
}

impl SharingTracker {
    /// Loads the marks written so far.
    pub fn load(store: Arc<Store>) -> Result<SharingTracker, StoreError> {
        let known = store
            .read()?
            .meta_with_prefix("sharing/row/")?
            .into_iter()
            .filter_map(|(key, _)| u64::from_str_radix(key.rsplit('/').next()?, 16).ok())
            .collect();
        Ok(SharingTracker {
            store,
            known: Mutex::new(known),
            pending: Mutex::new(Vec::new()),
            published: Mutex::new(None),
        })
    }

    /// Marks the sources of a disclosed `kind` entity as shared, unless the reader belongs
    /// to the source's own department.
    pub fn disclosed(&self, reader: Option<Department>, kind: RecordKind, sources: &[SourceRef]) {
        let mut known = lock(&self.known);
        let mut fresh = Vec::new();
        for source in sources {
            if Some(source.department) == reader {
                continue;
            }
            let digest = digest(source.department, kind, &source.source_id);
            if known.insert(digest) {
                fresh.push((digest, source.department));
            }
        }
        drop(known);
        if !fresh.is_empty() {
            lock(&self.pending).extend(fresh);
        }
    }

    /// Writes the pending marks and counts, in one transaction; returns how many were new.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let batch = std::mem::take(&mut *lock(&self.pending));
        if batch.is_empty() {
            return Ok(0);
        }
        let written = self.store.write(|w| {
            let mut added: BTreeMap<Department, u64> = BTreeMap::new();
            for (digest, department) in &batch {
                let key = row_key(*digest);
                if w.meta(&key)?.is_none() {
                    w.put_meta(&key, department.code().as_bytes())?;
                    *added.entry(*department).or_default() += 1;
                }
            }
            for (department, n) in &added {
                let key = count_key(*department);
                let current = w
                    .meta(&key)?
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0);
                w.put_meta(&key, (current + n).to_string().as_bytes())?;
            }
            Ok::<_, StoreError>(added.values().sum::<u64>() as usize)
        });
        if written.is_err() {
            // Not lost: tried again on the next flush.
            lock(&self.pending).extend(batch);
        }
        written
    }

    /// Source records shared per department code.
    pub fn shared(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        Ok(self
            .store
            .read()?
            .meta_with_prefix("sharing/count/")?
            .into_iter()
            .filter_map(|(key, value)| {
                let department = key.rsplit('/').next()?.to_owned();
                let n = String::from_utf8(value).ok()?.parse().ok()?;
                Some((department, n))
            })
            .collect())
    }

    /// Source records each department has sent (tombstones included): a scan of the row
    /// keys, reused until the store changes.
    pub fn published(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let reader = self.store.read()?;
        let seq = reader.change_seq()?;
        let mut cached = lock(&self.published);
        if let Some((at, counts)) = cached.as_ref() {
            if *at == seq {
                return Ok(counts.clone());
            }
        }
        let counts = reader.rows_per_department()?;
        *cached = Some((seq, counts.clone()));
        Ok(counts)
    }

    /// The background writer: flushes every second and at shutdown.
    pub fn spawn(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    _ = tokio::time::sleep(FLUSH_EVERY) => false,
                    _ = shutdown.changed() => true,
                };
                let tracker = self.clone();
                match tokio::task::spawn_blocking(move || tracker.flush()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => tracing::error!(error = %err, "writing sharing marks failed"),
                    Err(err) => tracing::error!(error = %err, "the sharing writer panicked"),
                }
                if stop {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn source(department: Department, id: &str) -> SourceRef {
        SourceRef {
            department,
            source_id: id.to_owned(),
            version: "1".to_owned(),
            received_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_record_counts_once_and_never_for_its_own_department() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(vault::store::open_for_tests(&dir.path().join("s.redb")).unwrap());
        let tracker = SharingTracker::load(store.clone()).unwrap();
        let gongan = source(Department::Gongan, "GA-1");
        let minzheng = source(Department::Minzheng, "MZ-1");
        // Its own department reads it: not shared.
        tracker.disclosed(
            Some(Department::Gongan),
            RecordKind::Resident,
            std::slice::from_ref(&gongan),
        );
        tracker.flush().unwrap();
        assert!(tracker.shared().unwrap().is_empty());
        // A grid worker (no department) and civil affairs read both, twice.
        for reader in [None, Some(Department::Minzheng), None] {
            tracker.disclosed(
                reader,
                RecordKind::Resident,
                &[gongan.clone(), minzheng.clone()],
            );
        }
        tracker.flush().unwrap();
        let shared = tracker.shared().unwrap();
        assert_eq!(shared.get("gongan"), Some(&1));
        assert_eq!(shared.get("minzheng"), Some(&1));
        // Known after a restart: not counted again.
        let again = SharingTracker::load(store).unwrap();
        again.disclosed(None, RecordKind::Resident, &[gongan]);
        again.flush().unwrap();
        assert_eq!(again.shared().unwrap().get("gongan"), Some(&1));
    }
}
