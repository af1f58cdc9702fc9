//! The shared log with an in-memory system of record: two replicas (two brokers) appending at
//! once, a third joining later, a changed entry, a database restored to an earlier time, and
//! a database that goes away and comes back.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::tests_support::{config, public_key, record, signer};
use crate::*;

#[derive(Default)]
struct MemoryLog {
    entries: Mutex<Vec<Vec<u8>>>,
    checkpoints: Mutex<BTreeMap<u64, String>>,
    lease: Mutex<Option<String>>,
    down: AtomicBool,
}

impl MemoryLog {
    fn up(&self) -> Result<(), String> {
        if self.down.load(Ordering::SeqCst) {
            Err("connection refused".to_owned())
        } else {
            Ok(())
        }
    }
}

impl SharedLog for MemoryLog {
    fn append(&self, encode: &mut dyn FnMut(u64) -> Vec<Vec<u8>>) -> Result<u64, String> {
        self.up()?;
        let mut entries = self.entries.lock().unwrap();
        let first = entries.len() as u64;
        entries.extend(encode(first));
        Ok(first)
    }
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, String> {
        self.up()?;
        let entries = self.entries.lock().unwrap();
        Ok(entries
            .iter()
            .skip(from as usize)
            .take(limit)
            .cloned()
            .collect())
    }
    fn size(&self) -> Result<u64, String> {
        self.up()?;
        Ok(self.entries.lock().unwrap().len() as u64)
    }
    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), String> {
        self.up()?;
        self.checkpoints
            .lock()
            .unwrap()
            .entry(size)
            .or_insert_with(|| note.to_owned());
        Ok(())
    }
    fn checkpoints_after(&self, size: u64) -> Result<Vec<(u64, String)>, String> {
        self.up()?;
        Ok(self
            .checkpoints
            .lock()
            .unwrap()
            .range(size + 1..)
            .map(|(s, n)| (*s, n.clone()))
            .collect())
    }
    fn lead(&self, holder: &str, _seconds: u32) -> Result<bool, String> {
        self.up()?;
        let mut lease = self.lease.lock().unwrap();
        let held = lease.get_or_insert_with(|| holder.to_owned());
        Ok(held == holder)
    }
    fn release(&self, holder: &str) -> Result<(), String> {
        let mut lease = self.lease.lock().unwrap();
        if lease.as_deref() == Some(holder) {
            *lease = None;
        }
        Ok(())
    }
}

fn fast() -> AuditConfig {
    AuditConfig {
        pull_interval: Duration::from_millis(20),
        checkpoint_interval: Duration::from_millis(50),
        ..config()
    }
}

fn open(dir: &std::path::Path, log: &Arc<MemoryLog>, holder: &str) -> Result<AuditLog, AuditError> {
    let shared: Arc<dyn SharedLog> = log.clone();
    AuditLog::open_shared(dir, signer(), fast(), shared, holder.to_owned())
}

async fn settled(logs: &[&AuditLog], size: u64) {
    for _ in 0..500 {
        if logs.iter().all(|l| l.size() == size) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "replicas did not reach {size}: {:?}",
        logs.iter().map(|l| l.size()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_append_to_one_log_and_each_replica_is_all_of_it() {
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let shared = Arc::new(MemoryLog::default());
    let a = open(a_dir.path(), &shared, "broker-a").unwrap();
    let b = open(b_dir.path(), &shared, "broker-b").unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let log = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(
            async move { log.append(record(i)).await.unwrap() },
        ));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..200).collect::<Vec<_>>(),
        "one position each, no gap"
    );
    settled(&[&a, &b], 200).await;
    assert_eq!(a.root_at(200).unwrap(), b.root_at(200).unwrap());
    // What broker B logged is found through broker A, at the position B was answered.
    let seq = a
        .find_by_request_id("req-1")
        .expect("B's record in A's replica");
    assert_eq!(b.find_by_request_id("req-1"), Some(seq));
    assert_eq!(a.read(seq).unwrap().request_id, "req-1");

    // A broker that joins later copies the whole log and adopts the checkpoints.
    a.checkpoint_now().await.unwrap();
    let c = open(c_dir.path(), &shared, "broker-c").unwrap();
    assert_eq!(c.size(), 200);
    assert_eq!(c.latest_checkpoint().unwrap().size, 200);
    for log in [&a, &b, &c] {
        log.close().await.unwrap();
    }
    // Every replica verifies offline as a log of its own, under every checkpoint.
    for dir in [&a_dir, &b_dir, &c_dir] {
        let report = verify_log_dir(dir.path(), &public_key(), VerifyOptions::default()).unwrap();
        assert_eq!(report.records, 200);
        assert!(report.checkpoints >= 1);
        assert_eq!(report.latest_checkpoint.unwrap().size, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_entry_or_a_database_restored_to_an_earlier_time_is_refused() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared = Arc::new(MemoryLog::default());
    let a = open(a_dir.path(), &shared, "broker-a").unwrap();
    for i in 0..20 {
        a.append(record(i)).await.unwrap();
    }
    a.checkpoint_now().await.unwrap();
    a.close().await.unwrap();

    // Someone with access to the database rewrites entry 7 (a read by one officer made to look
    // like another's): a new replica recomputes the tree and the signed root does not match.
    let original = shared.entries.lock().unwrap()[7].clone();
    let forged = String::from_utf8(original.clone())
        .unwrap()
        .replace("user-1", "user-2");
    assert_ne!(forged.as_bytes(), original.as_slice());
    shared.entries.lock().unwrap()[7] = forged.into_bytes();
    let err = open(b_dir.path(), &shared, "broker-b").unwrap_err();
    assert!(matches!(err, AuditError::Diverged(_)), "{err}");
    shared.entries.lock().unwrap()[7] = original;

    // A data directory with a log of its own, on a store whose shared log is empty (the log
    // was not migrated): refused, saying how to move it.
    let empty = Arc::new(MemoryLog::default());
    let err = open(a_dir.path(), &empty, "broker-a").unwrap_err();
    assert!(err.to_string().contains("safegrid migrate"), "{err}");

    // The database restored to a time before the last entries the replica holds.
    shared.entries.lock().unwrap().truncate(15);
    let err = open(a_dir.path(), &shared, "broker-a").unwrap_err();
    assert!(matches!(err, AuditError::Diverged(_)), "{err}");
    assert!(err.to_string().contains("earlier time"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_appends_fail_closed_and_resume_after() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(MemoryLog::default());
    let log = open(dir.path(), &shared, "broker-a").unwrap();
    assert_eq!(log.append(record(0)).await.unwrap(), 0);
    shared.down.store(true, Ordering::SeqCst);
    assert!(matches!(
        log.append(record(1)).await,
        Err(AuditError::Unavailable)
    ));
    assert_eq!(log.health(), AuditHealth::Recovering);
    assert_eq!(log.size(), 1, "nothing of the refused append stays");
    shared.down.store(false, Ordering::SeqCst);
    for _ in 0..200 {
        if log.is_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        log.is_healthy(),
        "healthy again once the database answers, without an append"
    );
    assert_eq!(log.append(record(2)).await.unwrap(), 1);
    log.close().await.unwrap();
}
