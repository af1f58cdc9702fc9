//! A log several brokers share: the system of record is a [`SharedLog`] (the PostgreSQL
//! store's `audit_log` table), and each broker's log directory is a verified replica of it.
//!
//! - **Appends**: a batch is written to the shared log first, at the positions its head hands
//!   out under its lock, and committed there (with the database's synchronous replication);
//!   then the replica catches up to it — the entries other brokers appended before it, then
//!   the batch — writes and syncs them like any batch, and only then are the appends
//!   answered. A record's `seq` is its position in the shared log, and the replica's Merkle
//!   tree is the shared log's.
//! - **Following**: every `pull_interval` the writer copies what other brokers appended, and
//!   adopts the checkpoints signed since, each checked against its key and against the root of
//!   the replica's own tree at its size.
//! - **Checkpoints**: all brokers hold the same signing key (it is kept, wrapped, in the
//!   store), and Ed25519 signatures are deterministic, so a checkpoint of a size is the same
//!   note whoever signs it. Periodic signing is left to the holder of a lease in the database
//!   (by the database's clock) so that brokers do not repeat each other's work.
//! - **Fail closed**: while the shared log cannot be reached, appends fail and the log is
//!   unhealthy (`recovering`); it recovers by itself at the next pull that succeeds. An entry
//!   that is not where its position says, or a checkpoint whose root is not the replica's, or
//!   a shared log shorter than the replica (a database restored to an earlier time) stops
//!   the log for good (`diverged`): an operator must look.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{PublicKey, SignedCheckpoint};
use crate::record::{AuditRecord, RECORD_FORMAT_VERSION};

use super::{answer, AuditError, AuditHealth, Pending, Ready, Writer};

/// The shared log's storage (implemented over the PostgreSQL store by the broker). Errors
/// are messages for the operators' log: they must not hold secrets.
pub trait SharedLog: Send + Sync + 'static {
    /// Under the log head's lock: asks `encode` for the entries given the first free position,
    /// stores them from there and commits. Returns that first position.
    fn append(&self, encode: &mut dyn FnMut(u64) -> Vec<Vec<u8>>) -> Result<u64, String>;
    /// Entries from position `from`, at most `limit`, in order.
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, String>;
    /// The number of entries.
    fn size(&self) -> Result<u64, String>;
    /// Keeps a signed checkpoint note (the first one kept for a size stays).
    fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), String>;
    /// Checkpoints over more than `size` entries, smallest first.
    fn checkpoints_after(&self, size: u64) -> Result<Vec<(u64, String)>, String>;
    /// Takes or renews the signing lease for `holder` for `seconds`; `true` if it has it.
    fn lead(&self, holder: &str, seconds: u32) -> Result<bool, String>;
    /// Gives the lease up, if `holder` has it.
    fn release(&self, holder: &str) -> Result<(), String>;
}

/// Entries read from the shared log per request.
const CHUNK: usize = 1024;

/// The writer's side of a shared log.
pub(super) struct Replica {
    pub(super) log: Arc<dyn SharedLog>,
    /// This broker's name for the signing lease.
    pub(super) holder: String,
    pub(super) key: PublicKey,
    pub(super) leading: bool,
    pub(super) next_pull: Instant,
    /// The shared log could not be reached at the last attempt.
    pub(super) down: bool,
    /// The shared log and the replica disagree: nothing more is written.
    pub(super) diverged: bool,
}

impl Replica {
    pub(super) fn new(log: Arc<dyn SharedLog>, holder: String, key: PublicKey) -> Replica {
        Replica {
            log,
            holder,
            key,
            leading: false,
            next_pull: Instant::now(),
            down: false,
            diverged: false,
        }
    }
}

impl Writer {
    fn replica(&mut self) -> Option<&mut Replica> {
        self.replica.as_mut()
    }

    /// At open: the replica must be a prefix of the shared log; then it copies the rest.
    pub(super) fn join_shared(&mut self) -> Result<(), AuditError> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        let log = Arc::clone(&replica.log);
        let shared_len = log.size().map_err(AuditError::Shared)?;
        if shared_len == 0 && self.size > 0 {
            return Err(AuditError::Diverged(format!(
                "the shared log is empty and this data directory's log holds {} entries: \
                 move it into the database with `safegrid migrate`, or move audit/ aside if \
                 this broker joins a store whose log starts afresh",
                self.size
            )));
        }
        if shared_len < self.size {
            return Err(AuditError::Diverged(format!(
                "the shared log holds {shared_len} entries and this broker's replica {}: \
                 was the database restored to an earlier time?",
                self.size
            )));
        }
        if self.size > 0 {
            let last = self.size - 1;
            let theirs = log.read(last, 1).map_err(AuditError::Shared)?;
            let ours = self.read_local(last)?;
            if theirs.first() != Some(&ours) {
                return Err(AuditError::Diverged(format!(
                    "entry {last} of this broker's replica is not the shared log's: the data \
                     directory belongs to another log"
                )));
            }
        }
        self.catch_up(None)?;
        self.adopt_checkpoints()
    }

    /// The bytes of local record `seq`.
    fn read_local(&self, seq: u64) -> Result<Vec<u8>, AuditError> {
        let (file, loc) = self.shared.locate(seq)?;
        super::read_bytes_at(&file, loc)
    }

    /// Copies shared entries from the replica's size up to `until` (all of them if `None`)
    /// into the replica.
    fn catch_up(&mut self, until: Option<u64>) -> Result<(), AuditError> {
        let Some(log) = self.replica.as_ref().map(|r| Arc::clone(&r.log)) else {
            return Ok(());
        };
        loop {
            let want = until.map_or(CHUNK, |u| (u.saturating_sub(self.size) as usize).min(CHUNK));
            if want == 0 {
                return Ok(());
            }
            let entries = log.read(self.size, want).map_err(AuditError::Shared)?;
            if entries.is_empty() {
                return match until {
                    Some(u) if u > self.size => Err(self.diverge(format!(
                        "the shared log ends at {} before position {u} it handed out",
                        self.size
                    ))),
                    _ => Ok(()),
                };
            }
            let ready = self.check_entries(self.size, entries)?;
            self.write_local(ready)?;
        }
    }

    /// Entries read from the shared log at `from..`, checked: each decodes to a record whose
    /// `seq` is its position.
    fn check_entries(
        &mut self,
        from: u64,
        entries: Vec<Vec<u8>>,
    ) -> Result<Vec<Ready>, AuditError> {
        let mut ready = Vec::with_capacity(entries.len());
        for (seq, bytes) in (from..).zip(entries) {
            match AuditRecord::from_canonical_bytes(&bytes) {
                Ok(record) if record.seq == seq => ready.push(Ready {
                    seq,
                    bytes,
                    request_id: record.request_id,
                }),
                _ => {
                    return Err(self.diverge(format!(
                        "the shared log's entry at position {seq} is not a record of that position"
                    )))
                }
            }
        }
        Ok(ready)
    }

    fn diverge(&mut self, reason: String) -> AuditError {
        tracing::error!(%reason, "the shared audit log and this broker's replica disagree; appends stop");
        if let Some(replica) = self.replica() {
            replica.diverged = true;
        }
        self.publish();
        AuditError::Diverged(reason)
    }

    /// Notes whether the shared log answered.
    fn reached(&mut self, ok: bool) {
        let changed = self.replica().is_some_and(|r| {
            let was = r.down;
            r.down = !ok;
            was != r.down
        });
        if changed {
            self.publish();
        }
    }

    /// A batch in shared mode: into the shared log, then the replica up to and including it.
    pub(super) fn commit_shared(&mut self, batch: &mut Vec<Pending>) {
        let mut records = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut bytes = 0u64;
        for (mut record, reply) in batch.drain(..) {
            record.v = RECORD_FORMAT_VERSION;
            // The longest a position prints: the size check holds at any position.
            record.seq = u64::MAX;
            match self.encode(&record) {
                Ok(encoded) => {
                    bytes += encoded.len() as u64 + 8;
                    records.push(record);
                    replies.push(reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if records.is_empty() {
            return;
        }
        let Some(log) = self.replica.as_ref().map(|r| Arc::clone(&r.log)) else {
            return;
        };
        if self.replica.as_ref().is_some_and(|r| r.diverged) {
            return answer(replies, 0, Err(AuditError::Unavailable));
        }
        // The replica's free-space reserve before the shared log: a batch the replica could not
        // take is refused before anything of it is committed anywhere.
        let fresh = self.health() != AuditHealth::Healthy;
        if let Err(free) = self.space.admit(&self.dir, bytes, fresh, &self.shared) {
            self.low_space = true;
            self.shared
                .space_refusals
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            self.publish();
            let reserve = self.space.reserve;
            return answer(
                replies,
                0,
                Err(AuditError::DiskFull {
                    free_bytes: free,
                    reserve_bytes: reserve,
                }),
            );
        }
        let mut ready = Vec::with_capacity(records.len());
        let appended = log.append(&mut |first| {
            ready.clear();
            records
                .iter_mut()
                .zip(first..)
                .map(|(record, seq)| {
                    record.seq = seq;
                    // Cannot fail: the same record was encoded above with a longer position.
                    let bytes = record.canonical_bytes().unwrap_or_default();
                    ready.push(Ready {
                        seq,
                        bytes: bytes.clone(),
                        request_id: record.request_id.clone(),
                    });
                    bytes
                })
                .collect()
        });
        let first = match appended {
            Ok(first) => first,
            Err(reason) => {
                tracing::error!(%reason, "the shared audit log refused a batch; nothing of it is acknowledged");
                self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                self.reached(false);
                return answer(replies, 0, Err(AuditError::Unavailable));
            }
        };
        self.reached(true);
        // Committed in the system of record. The replica takes what came before, then the batch;
        // if it cannot, the appends are refused (fail closed) although the shared log holds
        // them: an access logged that was then refused, never the other way round.
        if first < self.size {
            let err = self.diverge(format!(
                "the shared log handed out position {first}, below this replica's {}",
                self.size
            ));
            return answer(replies, first, Err(err));
        }
        let result = self
            .catch_up(Some(first))
            .and_then(|()| self.write_local(ready));
        answer(replies, first, result);
    }

    /// Copies what other brokers appended and adopts new checkpoints (every pull interval).
    pub(super) fn pull(&mut self) {
        let interval = self.config.pull_interval;
        let Some(replica) = self.replica() else {
            return;
        };
        replica.next_pull = Instant::now() + interval;
        if replica.diverged {
            return;
        }
        let result = self.catch_up(None).and_then(|()| self.adopt_checkpoints());
        match result {
            Ok(()) => self.reached(true),
            Err(AuditError::Shared(reason)) => {
                tracing::warn!(%reason, "cannot read the shared audit log; retrying");
                self.reached(false);
            }
            Err(AuditError::Diverged(_)) => {}
            Err(error) => tracing::warn!(%error, "cannot copy the shared audit log; retrying"),
        }
    }

    /// Checkpoints signed since the replica's latest, up to its size: each checked and kept.
    fn adopt_checkpoints(&mut self) -> Result<(), AuditError> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        let (log, key) = (Arc::clone(&replica.log), replica.key.clone());
        let after = self.last_checkpoint_size.unwrap_or(0);
        let notes = log.checkpoints_after(after).map_err(AuditError::Shared)?;
        for (size, note) in notes {
            if size > self.size {
                break;
            }
            let checkpoint = match SignedCheckpoint::open(&note, &key) {
                Ok(cp) if cp.size == size => cp,
                _ => {
                    return Err(self.diverge(format!(
                        "the shared log's checkpoint at size {size} does not verify with the key"
                    )))
                }
            };
            let root = self.shared.read().tree.root_at(size)?;
            if root != checkpoint.root {
                return Err(self.diverge(format!(
                    "the shared log's checkpoint at size {size} signs another root than this \
                     replica's: an entry was changed"
                )));
            }
            self.keep_checkpoint(checkpoint)?;
        }
        Ok(())
    }

    /// At each checkpoint interval: renews the signing lease; `true` if this broker signs.
    pub(super) fn lead(&mut self, interval: Duration) -> bool {
        let Some(replica) = self.replica() else {
            return true;
        };
        let seconds =
            u32::try_from(interval.as_secs().saturating_mul(3).max(3)).unwrap_or(u32::MAX);
        replica.leading = match replica.log.lead(&replica.holder, seconds) {
            Ok(leading) => leading,
            Err(reason) => {
                tracing::warn!(%reason, "cannot renew the audit signing lease");
                false
            }
        };
        replica.leading
    }

    /// After a checkpoint is signed: it goes to the shared log too.
    pub(super) fn share_checkpoint(&mut self, checkpoint: &SignedCheckpoint) {
        if let Some(replica) = &self.replica {
            if let Err(reason) = replica
                .log
                .put_checkpoint(checkpoint.size, &checkpoint.note)
            {
                tracing::warn!(%reason, "cannot keep the checkpoint in the shared audit log");
            }
        }
    }

    /// On close: the lease goes to whoever asks next.
    pub(super) fn leave(&mut self) {
        if let Some(replica) = &self.replica {
            if replica.leading {
                let _ = replica.log.release(&replica.holder);
            }
        }
    }

    /// The replica's part of the log's health.
    pub(super) fn replica_health(&self) -> Option<AuditHealth> {
        let replica = self.replica.as_ref()?;
        if replica.diverged {
            Some(AuditHealth::Diverged)
        } else if replica.down {
            Some(AuditHealth::Recovering)
        } else {
            None
        }
    }
}

use std::sync::atomic::Ordering;

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
