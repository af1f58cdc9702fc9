//! The durable, append-only audit log.
//!
//! Guarantees:
//! - **Durable before acknowledged**: [`AuditLog::append`] returns a sequence number only
//!   after the record's frame is written and `fdatasync`ed. One writer thread does all
//!   writes with group commit (up to `max_batch` records or `max_delay` per sync). The
//!   writer lingers for `max_delay` only while the load is high (the previous batch held at
//!   least `linger_min_batch` records); under light load it syncs at once, so a lone request
//!   pays one `fdatasync`, not the linger time.
//! - **Bounded records**: every record is cut to the [`FieldLimits`] and to
//!   `max_record_bytes` of canonical encoding before it is queued (see [`crate::cut`]); the
//!   stored, cut record is what its Merkle leaf hashes.
//! - **Free-space reserve**: the writer never writes a batch of records that would leave
//!   less than `min_free_bytes` free on the log's file system by its own measure (a
//!   measurement no older than `free_space_check_interval`, taken afresh whenever the bytes
//!   written since could have reached the reserve, minus those bytes). Such a batch is
//!   refused whole with [`AuditError::DiskFull`]: nothing of it is written and nothing is
//!   acknowledged.
//! - **Fail closed, recover when safe**: while appends are refused or a write has failed,
//!   [`AuditLog::is_healthy`] is `false` (see [`AuditHealth`]); the broker must then refuse
//!   personal data. If a write or sync fails, the batch's appends all fail
//!   ([`AuditError::Unavailable`]) and the segment (or `checkpoints.log`) is truncated back
//!   to its last synced length and synced again before anything else is written, so no
//!   part of an unacknowledged record stays behind. The writer then retries by itself: the
//!   next append is a new write attempt, and every `retry_interval` it tests the disk
//!   (writes, syncs and removes `write-probe.tmp`, see [`crate::segment`]) so that it
//!   recovers even when no appends arrive. It is healthy again once a write and sync
//!   succeed, or, after low free space, once the space is back. No restart is needed.
//! - If that truncation itself fails, the log stays unhealthy, retries the truncation, and
//!   writes nothing until it succeeds (fail closed). A crash in that state may recover
//!   records whose appends were reported failed (if their bytes reached the disk); it never
//!   loses an acknowledged one.
//! - **Consistent state**: the in-memory Merkle tree, indexes and `size` advance only after a
//!   successful sync, so they always describe exactly the acknowledged records; `seq`
//!   numbers stay contiguous across failures (a failed batch's numbers are reused by the
//!   next successful one, whose bytes replace the truncated ones).
//! - **Crash recovery**: [`AuditLog::open`] re-reads and re-hashes every record and rebuilds
//!   the Merkle tree. A torn or garbled *final* frame of the last segment (a write that was
//!   never acknowledged) is truncated away; damage anywhere else, or a truncation that would
//!   drop records covered by a signed checkpoint, is [`AuditError::Corrupt`].
//! - **Signed checkpoints**: the writer signs a checkpoint every `checkpoint_interval` when
//!   the log grew and is healthy, on [`AuditLog::checkpoint_now`] and on
//!   [`AuditLog::close`]. On open the latest checkpoint must match the recomputed root.
//! - Record `seq` = Merkle leaf index = position in the log, assigned by the writer.
//!
//! Not guaranteed: exclusion of a second process opening the same directory (do not do it);
//! free space taken by *other* writers between two measurements (the reserve absorbs it, and
//! a write that still fails is recovered as above).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::checkpoint::{
    validate_key_name, CheckpointError, CheckpointSigner, PublicKey, SignedCheckpoint,
};
use crate::cut::{bound_record, FieldLimits, MIN_RECORD_BYTES};
use crate::merkle::{hash_leaf, Hash, MerkleTree, ProofError};
use crate::record::{AuditRecord, Decision, RECORD_FORMAT_VERSION};
use crate::segment::{
    decode_header, encode_frame, encode_header, frame_check, list_segments, read_frame,
    segment_name, split_checkpoints, Frame, HeaderError, CHECKPOINTS_FILE, HEADER_LEN,
    LOG_FORMAT_VERSION, MAX_RECORD_BYTES, PROBE_FILE, PUBLIC_KEY_FILE,
};
use crate::space::{FreeSpaceProbe, StatvfsFreeSpace};

mod shared;
use shared::Replica;
pub use shared::SharedLog;

/// Tuning and identity of an audit log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Checkpoint origin and signing key name, e.g. `safegrid.example.gov.cn/audit`
    /// (no spaces, no `+`).
    pub origin: String,
    /// Most records written per `fdatasync`.
    pub max_batch: usize,
    /// Longest time the writer waits for more records before syncing a batch.
    pub max_delay: Duration,
    /// The writer waits up to `max_delay` for more records only if the previous batch had at
    /// least this many records (high load); otherwise it syncs what is queued at once.
    pub linger_min_batch: usize,
    /// How often a checkpoint is signed while the log grows.
    pub checkpoint_interval: Duration,
    /// A new segment is started once the current one reaches this size (a segment may
    /// exceed it by one batch).
    pub segment_max_bytes: u64,
    /// Largest canonical encoding of a stored record, in bytes: a longer record is cut (see
    /// [`crate::cut`]). From [`MIN_RECORD_BYTES`] to [`MAX_RECORD_BYTES`].
    pub max_record_bytes: usize,
    /// Longest text fields and lists kept in a stored record.
    pub field_limits: FieldLimits,
    /// Free space the log leaves on its file system: a batch that would leave less is
    /// refused with [`AuditError::DiskFull`] until space returns. `0` turns the guard off.
    pub min_free_bytes: u64,
    /// Longest time between two measurements of free space while writes succeed (it is also
    /// measured whenever the bytes written since could have reached the reserve, and before
    /// every batch while appends are refused).
    pub free_space_check_interval: Duration,
    /// How free space is measured: [`StatvfsFreeSpace`] unless a test substitutes its own.
    pub free_space: Arc<dyn FreeSpaceProbe>,
    /// While the log is unhealthy but recoverable, how often the writer checks again by
    /// itself, so it recovers even when no appends arrive (a broker whose readiness check
    /// fails receives none).
    pub retry_interval: Duration,
    /// With a shared log ([`AuditLog::open_shared`]): how often the replica copies what other
    /// brokers appended.
    pub pull_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            origin: "safegrid/audit".to_owned(),
            max_batch: 1024,
            max_delay: Duration::from_millis(2),
            linger_min_batch: 128,
            checkpoint_interval: Duration::from_secs(5),
            segment_max_bytes: 64 * 1024 * 1024,
            max_record_bytes: 16 * 1024,
            field_limits: FieldLimits::default(),
            min_free_bytes: 64 * 1024 * 1024,
            free_space_check_interval: Duration::from_secs(1),
            free_space: Arc::new(StatvfsFreeSpace),
            retry_interval: Duration::from_secs(1),
            pull_interval: Duration::from_millis(200),
        }
    }
}

/// Everything that can go wrong with the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An I/O operation failed.
    #[error("audit log I/O error ({context}): {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The log on disk is damaged at a place recovery must not silently repair.
    #[error("audit log corrupt in {segment} at byte {offset}")]
    Corrupt { segment: String, offset: u64 },
    /// The log was written by a newer, unknown format version.
    #[error("audit log format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// The log is unhealthy or closed, or the write of this record failed: it was not
    /// recorded (fail closed).
    #[error("audit log unavailable")]
    Unavailable,
    /// The record was refused because writing it would leave less than the configured
    /// reserve free on the log's file system; nothing was written. Appends succeed again
    /// once space is freed.
    #[error(
        "audit log refused the record: {free_bytes} bytes free on its file system, \
         {reserve_bytes} must stay free"
    )]
    DiskFull { free_bytes: u64, reserve_bytes: u64 },
    /// The record's canonical encoding exceeds the size limit.
    #[error("audit record of {len} bytes exceeds the limit of {max}")]
    RecordTooLarge { len: usize, max: usize },
    /// The record could not be encoded.
    #[error("audit record encoding failed: {0}")]
    Encode(#[from] serde_json::Error),
    /// No record with that sequence number.
    #[error("audit record {0} not found")]
    NotFound(u64),
    /// The shared log (the database) could not be reached or refused the request.
    #[error("the shared audit log is unavailable: {0}")]
    Shared(String),
    /// The shared log and this broker's replica disagree; nothing more is written.
    #[error("the shared audit log and this broker's replica disagree: {0}")]
    Diverged(String),
    /// A proof was requested for sizes or indices the log does not have.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A signing key, key name or checkpoint problem.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The directory's public key file names a different key than the signer.
    #[error("{path} holds a different public key than the configured signing key")]
    KeyMismatch { path: PathBuf },
    /// The stored latest checkpoint does not match the records on disk.
    #[error("checkpoint at size {size} does not match the log (log size {log_size})")]
    CheckpointMismatch { size: u64, log_size: u64 },
    /// Invalid configuration.
    #[error("invalid audit configuration: {0}")]
    Config(String),
}

/// Bytes of zeros the writer keeps written ahead of the current segment's last record, so
/// that an append changes no file size and its `fdatasync` has no inode to write (on this
/// machine's ext4 a sync into a written-ahead file cost 115 µs against 133–170 µs; the
/// audit writer's syncs were a quarter of the broker's CPU under lookups). Only the last
/// segment ever has such a tail: a segment is cut to its records before the next one starts,
/// recovery cuts it, and readers accept zeros after the last record of the last segment.
pub(crate) const WRITE_AHEAD_BYTES: u64 = 1 << 20;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AuditError {
    let context = context.into();
    move |source| AuditError::Io { context, source }
}

/// A filter over the log. Results are returned **oldest first** (ascending `seq`);
/// `after_seq` is the paging cursor: pass the `seq` of the last record of the previous page.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Actor subject (`actor.sub`).
    pub actor: Option<String>,
    /// A unified entity id in `entities`.
    pub entity: Option<String>,
    /// A resident reference (keyed HMAC) in `residents`.
    pub resident: Option<String>,
    /// Records at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Records strictly before this time.
    pub to: Option<DateTime<Utc>>,
    /// Declared purpose.
    pub purpose: Option<String>,
    /// Policy decision.
    pub decision: Option<Decision>,
    /// Action name.
    pub action: Option<String>,
    /// One resident named both ways: a record matches if `residents` holds the keyed
    /// reference **or** `entities` holds the unified id (a refused read names only the id).
    pub subject: Option<ResidentSubject>,
    /// Only records with `seq > after_seq`.
    pub after_seq: Option<u64>,
    /// Only records with `seq < before_seq` (e.g. the size of a checkpoint).
    pub before_seq: Option<u64>,
    /// Page size; `0` means [`AuditQuery::DEFAULT_LIMIT`].
    pub limit: usize,
}

/// A resident as the log knows them: the keyed reference stored in
/// [`AuditRecord::residents`] and the unified entity id stored in [`AuditRecord::entities`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResidentSubject {
    /// Keyed HMAC reference (as in `residents`).
    pub reference: String,
    /// Unified entity id (as in `entities`).
    pub entity: String,
}

impl AuditQuery {
    /// The page size used when `limit` is 0.
    pub const DEFAULT_LIMIT: usize = 100;

    fn matches(&self, r: &AuditRecord) -> bool {
        fn eq(want: &Option<String>, got: &str) -> bool {
            want.as_deref().is_none_or(|w| w == got)
        }
        fn eq_opt(want: &Option<String>, got: &Option<String>) -> bool {
            want.is_none() || want.as_deref() == got.as_deref()
        }
        fn contains(want: &Option<String>, got: &[String]) -> bool {
            want.as_deref().is_none_or(|w| got.iter().any(|g| g == w))
        }
        eq(&self.actor, &r.actor.sub)
            && contains(&self.entity, &r.entities)
            && contains(&self.resident, &r.residents)
            && self.from.is_none_or(|f| r.time >= f)
            && self.to.is_none_or(|t| r.time < t)
            && eq_opt(&self.purpose, &r.purpose)
            && self.decision.is_none_or(|d| r.decision == d)
            && eq(&self.action, &r.action)
            && self.subject.as_ref().is_none_or(|s| {
                r.residents.contains(&s.reference) || r.entities.contains(&s.entity)
            })
    }
}

/// Where a record's bytes live.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u32,
    /// Offset of the record bytes (after the length prefix).
    offset: u64,
    len: u32,
}

#[derive(Debug, Default)]
struct State {
    tree: MerkleTree,
    locations: Vec<Location>,
    segments: Vec<Arc<File>>,
    request_ids: HashMap<String, u64>,
    latest_checkpoint: Option<SignedCheckpoint>,
}

/// Upper bounds, in seconds, of the buckets of [`AuditLog::sync_latency`].
pub const SYNC_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// How long writing and syncing record batches took, since the log was opened.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncLatency {
    /// (upper bound in seconds, batches that took at most that long), cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// Batches written and synced.
    pub count: u64,
    pub sum_seconds: f64,
}

#[derive(Debug, Default)]
struct SyncCounters {
    buckets: [AtomicU64; SYNC_BUCKETS.len()],
    count: AtomicU64,
    nanos: AtomicU64,
}

impl SyncCounters {
    fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(SYNC_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SyncLatency {
        SyncLatency {
            buckets: self
                .buckets
                .iter()
                .zip(SYNC_BUCKETS)
                .map(|(count, bound)| (bound, count.load(Ordering::Relaxed)))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Whether the log is taking records, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditHealth {
    /// Appends are written.
    Healthy,
    /// Appends are refused with [`AuditError::DiskFull`]: free space is below
    /// `min_free_bytes`. Healthy again as soon as space is freed.
    LowDiskSpace,
    /// A write or sync failed; the unacknowledged bytes are (or will be, before anything else
    /// is written) truncated away. Appends fail until a write and sync succeed again.
    Recovering,
    /// [`AuditLog::close`] was called, or the writer stopped.
    Closed,
    /// The shared log and this broker's replica disagree (an entry changed or missing, a
    /// checkpoint that does not match, a database restored to an earlier time). Appends are
    /// refused until an operator has looked and restarted the broker.
    Diverged,
}

impl AuditHealth {
    /// A stable lower-case name, e.g. for a metric label: `healthy`, `low_disk_space`,
    /// `recovering`, `closed`, `diverged`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditHealth::Healthy => "healthy",
            AuditHealth::LowDiskSpace => "low_disk_space",
            AuditHealth::Recovering => "recovering",
            AuditHealth::Closed => "closed",
            AuditHealth::Diverged => "diverged",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => AuditHealth::Healthy,
            1 => AuditHealth::LowDiskSpace,
            3 => AuditHealth::Diverged,
            _ => AuditHealth::Recovering,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            AuditHealth::Healthy => 0,
            AuditHealth::LowDiskSpace => 1,
            AuditHealth::Recovering | AuditHealth::Closed => 2,
            AuditHealth::Diverged => 3,
        }
    }
}

/// Test hook: how the writer's disk operations fail.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InjectedFailure {
    /// Nothing fails.
    Nothing = 0,
    /// Every write, sync, truncation and disk test fails.
    Everything = 1,
    /// A segment write stores half of its bytes, then fails as if the disk were full.
    PartialWrite = 2,
    /// A segment write stores all of its bytes, then the sync fails.
    Sync = 3,
}

#[derive(Debug, Default)]
struct Shared {
    state: RwLock<State>,
    /// An [`AuditHealth`] other than `Closed` (see [`AuditHealth::to_u8`]).
    health: AtomicU8,
    closed: AtomicBool,
    queue_depth: AtomicUsize,
    size: AtomicU64,
    sync: SyncCounters,
    /// Last measured free space; `u64::MAX` if never measured or the measurement failed.
    free_bytes: AtomicU64,
    space_refusals: AtomicU64,
    write_failures: AtomicU64,
    records_cut: AtomicU64,
    #[cfg(test)]
    injected: AtomicU8,
}

impl Shared {
    // A panic while holding the lock leaves the state consistent (it is only ever
    // updated after a successful sync, field by field), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where record `seq` is: its segment file and its place in it.
    fn locate(&self, seq: u64) -> Result<(Arc<File>, Location), AuditError> {
        let state = self.read();
        let loc = usize::try_from(seq)
            .ok()
            .and_then(|i| state.locations.get(i).copied())
            .ok_or(AuditError::NotFound(seq))?;
        let file = state
            .segments
            .get(loc.segment as usize)
            .cloned()
            .ok_or(AuditError::NotFound(seq))?;
        Ok((file, loc))
    }
}

type Reply<T> = oneshot::Sender<Result<T, AuditError>>;

enum Command {
    Append(Box<AuditRecord>, Reply<u64>),
    Checkpoint(Reply<SignedCheckpoint>),
    Close(Reply<()>),
}

/// A handle to an open audit log; cheap to clone and share between tasks.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    max_record_bytes: usize,
    field_limits: FieldLimits,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, recovers it, writes `checkpoint-public.key`, and
    /// starts the writer thread.
    pub fn open(
        dir: &Path,
        signer: CheckpointSigner,
        config: AuditConfig,
    ) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(dir, signer, config, None)
    }

    /// Opens the log in `dir` as this broker's replica of a log several brokers share (see
    /// [`SharedLog`] and the `shared` module): checks that the replica is a prefix of the
    /// shared log, copies the rest, then starts the writer. `holder` names this broker for the
    /// signing lease. Appends are acknowledged once in the shared log and in the replica.
    pub fn open_shared(
        dir: &Path,
        signer: CheckpointSigner,
        config: AuditConfig,
        log: Arc<dyn SharedLog>,
        holder: String,
    ) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(dir, signer, config, Some((log, holder)))
    }

    fn open_with(
        dir: &Path,
        signer: CheckpointSigner,
        config: AuditConfig,
        shared_log: Option<(Arc<dyn SharedLog>, String)>,
    ) -> Result<AuditLog, AuditError> {
        validate_key_name(&config.origin)?;
        if config.max_batch == 0 {
            return Err(AuditError::Config("max_batch must be at least 1".into()));
        }
        if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&config.max_record_bytes) {
            return Err(AuditError::Config(format!(
                "max_record_bytes must be from {MIN_RECORD_BYTES} to {MAX_RECORD_BYTES}"
            )));
        }
        config.field_limits.validate().map_err(AuditError::Config)?;
        std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let public_key = signer.public_key(&config.origin)?;
        write_public_key(dir, &public_key)?;

        let (latest_checkpoint, checkpoints_file, checkpoints_len) =
            recover_checkpoints(dir, &public_key)?;
        let min_size = latest_checkpoint.as_ref().map_or(0, |c| c.size);
        let recovered = recover_segments(dir, min_size)?;
        let mut state = recovered.state;
        if let Some(cp) = &latest_checkpoint {
            let log_size = state.tree.size();
            match state.tree.root_at(cp.size) {
                Ok(root) if root == cp.root => {}
                _ => {
                    return Err(AuditError::CheckpointMismatch {
                        size: cp.size,
                        log_size,
                    })
                }
            }
        }
        state.latest_checkpoint = latest_checkpoint.clone();
        let size = state.tree.size();
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            size: AtomicU64::new(size),
            free_bytes: AtomicU64::new(u64::MAX),
            ..Shared::default()
        });
        let (tx, rx) = mpsc::channel();
        let max_record_bytes = config.max_record_bytes;
        let field_limits = config.field_limits;
        let replica = shared_log.map(|(log, holder)| Replica::new(log, holder, public_key.clone()));
        let mut writer = Writer {
            replica,
            dir: dir.to_path_buf(),
            origin: config.origin.clone(),
            signer,
            shared: Arc::clone(&shared),
            file: recovered.current,
            segment_index: recovered.current_index,
            segment_len: recovered.current_len,
            segment_allocated: recovered.current_len,
            segment_records: recovered.current_records,
            size,
            checkpoints: checkpoints_file,
            checkpoints_len,
            last_checkpoint_size: latest_checkpoint.map(|c| c.size),
            space: SpaceGuard {
                probe: Arc::clone(&config.free_space),
                reserve: config.min_free_bytes,
                interval: config.free_space_check_interval,
                measured_at: None,
                free: u64::MAX,
                written_since: 0,
            },
            low_space: false,
            io_suspect: false,
            segment_dirty: false,
            checkpoints_dirty: false,
            next_retry: None,
            last_batch: 0,
            config,
        };
        writer.join_shared()?;
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err("spawn audit writer thread"))?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                tx,
                shared,
                max_record_bytes,
                field_limits,
            }),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends `record` and returns its `seq` once it is durable on disk.
    ///
    /// The log sets `v`, `seq` and `cut`, and cuts over-long fields and lists (see
    /// [`crate::cut`]); the caller sets everything else (including `time`). Fails with
    /// [`AuditError::DiskFull`] while free space is below the reserve and with
    /// [`AuditError::Unavailable`] if the log is closed or the write failed; either way the
    /// record was not recorded, and a later append may succeed.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(AuditError::Unavailable);
        }
        // Even while unhealthy the record goes to the writer: the writer checks again (free
        // space, or a new write attempt) and so the log recovers on its own.
        let (record, was_cut) = bound_record(
            record,
            self.inner.max_record_bytes,
            &self.inner.field_limits,
        )?;
        if was_cut {
            shared.records_cut.fetch_add(1, Ordering::Relaxed);
        }
        let (reply, answer) = oneshot::channel();
        shared.queue_depth.fetch_add(1, Ordering::Relaxed);
        if self
            .inner
            .tx
            .send(Command::Append(Box::new(record), reply))
            .is_err()
        {
            shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
            return Err(AuditError::Unavailable);
        }
        answer.await.map_err(|_| AuditError::Unavailable)?
    }

    /// `true` while appends are being written: `false` while free space is below the
    /// reserve, after a failed write or checkpoint until a write succeeds again, and after
    /// [`AuditLog::close`]. See [`AuditLog::health`] for the reason.
    pub fn is_healthy(&self) -> bool {
        self.health() == AuditHealth::Healthy
    }

    /// Whether the log is taking records, and if not, why.
    pub fn health(&self) -> AuditHealth {
        let s = &self.inner.shared;
        if s.closed.load(Ordering::Acquire) {
            return AuditHealth::Closed;
        }
        AuditHealth::from_u8(s.health.load(Ordering::Acquire))
    }

    /// Free bytes on the log's file system at the last measurement (`None` before the first
    /// one, if it failed, or with `min_free_bytes` = 0).
    pub fn free_bytes(&self) -> Option<u64> {
        match self.inner.shared.free_bytes.load(Ordering::Relaxed) {
            u64::MAX => None,
            free => Some(free),
        }
    }

    /// Appends refused with [`AuditError::DiskFull`] since the log was opened.
    pub fn space_refusals(&self) -> u64 {
        self.inner.shared.space_refusals.load(Ordering::Relaxed)
    }

    /// Failed writes, syncs, truncations and disk tests since the log was opened.
    pub fn write_failures(&self) -> u64 {
        self.inner.shared.write_failures.load(Ordering::Relaxed)
    }

    /// Records cut to fit the size limits since the log was opened.
    pub fn records_cut(&self) -> u64 {
        self.inner.shared.records_cut.load(Ordering::Relaxed)
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.inner.shared.queue_depth.load(Ordering::Relaxed)
    }

    /// Latency of writing and syncing (fsync) each group-committed batch of records.
    pub fn sync_latency(&self) -> SyncLatency {
        self.inner.shared.sync.snapshot()
    }

    /// Number of durable records (the current tree size).
    pub fn size(&self) -> u64 {
        self.inner.shared.size.load(Ordering::Acquire)
    }

    /// The newest signed checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.inner.shared.read().latest_checkpoint.clone()
    }

    /// Path of `checkpoint-public.key`, the verifier key file of this log.
    pub fn public_key_path(&self) -> PathBuf {
        self.inner.dir.join(PUBLIC_KEY_FILE)
    }

    /// Signs a checkpoint over everything durable now (returns the latest one unchanged if
    /// the log has not grown since).
    pub async fn checkpoint_now(&self) -> Result<SignedCheckpoint, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Checkpoint(reply))
            .map_err(|_| AuditError::Unavailable)?;
        answer.await.map_err(|_| AuditError::Unavailable)?
    }

    /// Writes everything queued, signs a final checkpoint and stops the writer. Later
    /// appends fail with [`AuditError::Unavailable`].
    pub async fn close(&self) -> Result<(), AuditError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Close(reply))
            .map_err(|_| AuditError::Unavailable)?;
        let result = answer.await.map_err(|_| AuditError::Unavailable)?;
        self.inner.shared.closed.store(true, Ordering::Release);
        result
    }

    /// The root of the tree of the first `size` records.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        Ok(self.inner.shared.read().tree.root_at(size)?)
    }

    /// The audit path of record `index` in the tree of size `tree_size`.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, AuditError> {
        Ok(self
            .inner
            .shared
            .read()
            .tree
            .inclusion_proof(index, tree_size)?)
    }

    /// The consistency proof between tree sizes `old <= new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        Ok(self.inner.shared.read().tree.consistency_proof(old, new)?)
    }

    /// The Merkle leaf hash of record `seq`.
    pub fn leaf_hash(&self, seq: u64) -> Option<Hash> {
        self.inner.shared.read().tree.leaf_hash(seq)
    }

    /// The `seq` of the first record written for `request_id`.
    pub fn find_by_request_id(&self, request_id: &str) -> Option<u64> {
        self.inner
            .shared
            .read()
            .request_ids
            .get(request_id)
            .copied()
    }

    /// Reads record `seq` from disk (re-checking its frame hash). Blocking file I/O.
    pub fn read(&self, seq: u64) -> Result<AuditRecord, AuditError> {
        let (file, loc) = self.inner.shared.locate(seq)?;
        read_at(&file, loc)
    }

    /// Records matching `query`, oldest first, at most `query.limit` (see [`AuditQuery`]).
    /// A full scan from the cursor: blocking file I/O proportional to the records scanned.
    pub fn search(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        let limit = if query.limit == 0 {
            AuditQuery::DEFAULT_LIMIT
        } else {
            query.limit
        };
        let mut out = Vec::new();
        self.scan(query, |record, _| {
            out.push(record);
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Calls `visit` with every record matching `query` (ignoring `limit`), oldest first,
    /// together with its canonical bytes exactly as stored (so `hash_leaf(bytes)` is its
    /// Merkle leaf). Stops early when `visit` returns `false`. Blocking file I/O.
    pub fn scan(
        &self,
        query: &AuditQuery,
        mut visit: impl FnMut(AuditRecord, &[u8]) -> bool,
    ) -> Result<(), AuditError> {
        const CHUNK: usize = 1024;
        let mut next = query.after_seq.map_or(0, |s| {
            usize::try_from(s.saturating_add(1)).unwrap_or(usize::MAX)
        });
        let before = query
            .before_seq
            .map_or(usize::MAX, |s| usize::try_from(s).unwrap_or(usize::MAX));
        loop {
            let (files, chunk) = {
                let state = self.inner.shared.read();
                let stop = state.locations.len().min(before);
                if next >= stop {
                    return Ok(());
                }
                let end = (next + CHUNK).min(stop);
                (state.segments.clone(), state.locations[next..end].to_vec())
            };
            for loc in &chunk {
                let file = files
                    .get(loc.segment as usize)
                    .ok_or(AuditError::NotFound(next as u64))?;
                let bytes = read_bytes_at(file, *loc)?;
                let record = decode_at(&bytes, *loc)?;
                if query.matches(&record) && !visit(record, &bytes) {
                    return Ok(());
                }
            }
            next += chunk.len();
        }
    }

    /// Test hook: make every following write fail as if the disk had failed.
    #[cfg(test)]
    pub(crate) fn inject_write_failure(&self) {
        self.inject(InjectedFailure::Everything);
    }

    /// Test hook: how the writer's following disk operations fail.
    #[cfg(test)]
    pub(crate) fn inject(&self, failure: InjectedFailure) {
        self.inner
            .shared
            .injected
            .store(failure as u8, Ordering::SeqCst);
    }
}

fn read_at(file: &File, loc: Location) -> Result<AuditRecord, AuditError> {
    decode_at(&read_bytes_at(file, loc)?, loc)
}

/// The record bytes at `loc`, after checking their frame hash.
fn read_bytes_at(file: &File, loc: Location) -> Result<Vec<u8>, AuditError> {
    let mut buf = vec![0u8; loc.len as usize + 4];
    file.read_exact_at(&mut buf, loc.offset)
        .map_err(io_err("read audit record"))?;
    let check = buf.split_off(loc.len as usize);
    if check != frame_check(&buf) {
        return Err(corrupt_at(loc));
    }
    Ok(buf)
}

fn decode_at(bytes: &[u8], loc: Location) -> Result<AuditRecord, AuditError> {
    AuditRecord::from_canonical_bytes(bytes).map_err(|_| corrupt_at(loc))
}

fn corrupt_at(loc: Location) -> AuditError {
    AuditError::Corrupt {
        segment: segment_name(loc.segment),
        offset: loc.offset - 4,
    }
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("sync directory {}", dir.display())))
}

fn write_public_key(dir: &Path, key: &PublicKey) -> Result<(), AuditError> {
    let path = dir.join(PUBLIC_KEY_FILE);
    let text = format!("{key}\n");
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.trim() == text.trim() => return Ok(()),
        Ok(_) => return Err(AuditError::KeyMismatch { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
    }
    let mut f = File::create(&path).map_err(io_err(format!("create {}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("write {}", path.display())))?;
    sync_dir(dir)
}

/// Reads `checkpoints.log`, truncating an incomplete final entry, and returns the latest
/// checkpoint plus the file opened for appending and its length.
fn recover_checkpoints(
    dir: &Path,
    key: &PublicKey,
) -> Result<(Option<SignedCheckpoint>, File, u64), AuditError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io_err(format!("open {}", path.display())))?;
    let raw = std::fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
    // A torn write can split a UTF-8 sequence; only the valid prefix can hold whole notes.
    let valid_len = match std::str::from_utf8(&raw) {
        Ok(_) => raw.len(),
        Err(e) => e.valid_up_to(),
    };
    let text = std::str::from_utf8(&raw[..valid_len]).unwrap_or_default();
    let (entries, tail) = split_checkpoints(text);
    let mut latest = None;
    for entry in &entries {
        let cp = SignedCheckpoint::open(entry.note, key).map_err(|_| AuditError::Corrupt {
            segment: CHECKPOINTS_FILE.into(),
            offset: entry.offset as u64,
        })?;
        latest = Some(cp);
    }
    let keep = tail.unwrap_or(valid_len);
    if keep < raw.len() {
        tracing::warn!(
            file = CHECKPOINTS_FILE,
            dropped_bytes = raw.len() - keep,
            "truncating incomplete final checkpoint entry"
        );
        file.set_len(keep as u64)
            .and_then(|()| file.sync_all())
            .map_err(io_err(format!("truncate {}", path.display())))?;
    }
    Ok((latest, file, keep as u64))
}

struct Recovered {
    state: State,
    current: File,
    current_index: u32,
    current_len: u64,
    current_records: u64,
}

fn create_segment(dir: &Path, index: u32, first_seq: u64) -> Result<File, AuditError> {
    let path = dir.join(segment_name(index));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("create {}", path.display())))?;
    file.write_all(&encode_header(first_seq))
        .and_then(|()| file.sync_all())
        .map_err(io_err(format!("write header of {}", path.display())))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Re-reads every segment, rebuilding the tree and indexes (see the module docs for what is
/// repaired and what is an error).
fn recover_segments(dir: &Path, min_size: u64) -> Result<Recovered, AuditError> {
    let mut segments = list_segments(dir).map_err(io_err(format!("list {}", dir.display())))?;
    if segments.is_empty() {
        create_segment(dir, 0, 0)?;
        segments.push((0, dir.join(segment_name(0))));
    }
    let count = segments.len();
    let mut state = State::default();
    let mut current_len = 0u64;
    let mut current_records = 0u64;
    for (pos, (index, path)) in segments.iter().enumerate() {
        let name = segment_name(*index);
        let corrupt = |offset: usize| AuditError::Corrupt {
            segment: name.clone(),
            offset: offset as u64,
        };
        if *index as usize != pos {
            return Err(corrupt(0));
        }
        let last = pos + 1 == count;
        let mut buf = std::fs::read(path).map_err(io_err(format!("read {}", path.display())))?;
        let first_seq = match decode_header(&buf) {
            Ok(seq) => seq,
            Err(HeaderError::Short) if last => {
                // The segment was being created when the process stopped.
                create_segment(dir, *index, state.tree.size())?;
                buf = encode_header(state.tree.size()).to_vec();
                state.tree.size()
            }
            Err(HeaderError::UnsupportedVersion(found)) => {
                return Err(AuditError::UnsupportedVersion {
                    found,
                    supported: LOG_FORMAT_VERSION,
                })
            }
            Err(_) => return Err(corrupt(0)),
        };
        if first_seq != state.tree.size() {
            return Err(corrupt(12));
        }
        let mut off = HEADER_LEN;
        let mut records_here = 0u64;
        let mut truncate_at = None;
        let mut zeros_at = None;
        loop {
            if last && off < buf.len() && is_zero(&buf[off..]) {
                // The zeros the writer keeps ahead of its records.
                zeros_at = Some(off);
                break;
            }
            let damaged_end = match read_frame(&buf, off) {
                Frame::End => break,
                Frame::Ok { bytes, next } => {
                    let seq = state.tree.size();
                    match AuditRecord::from_canonical_bytes(bytes) {
                        Ok(record) if record.seq == seq => {
                            state.tree.push(hash_leaf(bytes));
                            state.locations.push(Location {
                                segment: *index,
                                offset: off as u64 + 4,
                                len: bytes.len() as u32,
                            });
                            state.request_ids.entry(record.request_id).or_insert(seq);
                            records_here += 1;
                            off = next;
                            continue;
                        }
                        _ => next,
                    }
                }
                Frame::Torn => buf.len(),
                Frame::Bad { end } => end,
            };
            // A damaged frame is a torn tail only if it is the last thing in the log (before
            // the zeros written ahead, if any).
            if last && (damaged_end >= buf.len() || is_zero(&buf[damaged_end..])) {
                truncate_at = Some(off);
                break;
            }
            return Err(corrupt(off));
        }
        if let Some(at) = truncate_at {
            if state.tree.size() < min_size {
                return Err(corrupt(at));
            }
            tracing::warn!(
                segment = %name,
                offset = at,
                dropped_bytes = buf.len() - at,
                "truncating torn tail of the audit log (never acknowledged)"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(format!("open {}", path.display())))?;
            f.set_len(at as u64)
                .and_then(|()| f.sync_all())
                .map_err(io_err(format!("truncate {}", path.display())))?;
            buf.truncate(at);
        } else if let Some(at) = zeros_at {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(format!("open {}", path.display())))?;
            truncate_to(&f, at as u64).map_err(io_err(format!("truncate {}", path.display())))?;
            buf.truncate(at);
        }
        let read_handle = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
        state.segments.push(Arc::new(read_handle));
        current_len = buf.len() as u64;
        current_records = records_here;
    }
    if state.tree.size() < min_size {
        return Err(AuditError::CheckpointMismatch {
            size: min_size,
            log_size: state.tree.size(),
        });
    }
    let current_index = (count - 1) as u32;
    let current_path = dir.join(segment_name(current_index));
    let current = OpenOptions::new()
        .write(true)
        .open(&current_path)
        .map_err(io_err(format!("open {}", current_path.display())))?;
    Ok(Recovered {
        state,
        current,
        current_index,
        current_len,
        current_records,
    })
}

/// Free space at the last measurement and what the log wrote since.
struct SpaceGuard {
    probe: Arc<dyn FreeSpaceProbe>,
    /// `min_free_bytes`; 0 = no guard.
    reserve: u64,
    interval: Duration,
    measured_at: Option<Instant>,
    free: u64,
    written_since: u64,
}

impl SpaceGuard {
    /// Whether writing `bytes` more would leave the reserve free by the last measurement (or
    /// no measurement yet), without measuring.
    fn has_room(&self, bytes: u64) -> bool {
        self.reserve == 0
            || self.measured_at.is_none()
            || self
                .free
                .saturating_sub(self.written_since)
                .saturating_sub(bytes)
                >= self.reserve
    }

    /// `Err(free bytes)` if writing `bytes` more would leave less than the reserve free.
    /// Measures again if `fresh`, if the last measurement is older than the interval, or if
    /// the bytes written since could have reached the reserve.
    fn admit(&mut self, dir: &Path, bytes: u64, fresh: bool, shared: &Shared) -> Result<(), u64> {
        if self.reserve == 0 {
            return Ok(());
        }
        let estimate = self.free.saturating_sub(self.written_since);
        let stale = fresh
            || self
                .measured_at
                .is_none_or(|at| at.elapsed() >= self.interval)
            || estimate.saturating_sub(bytes) < self.reserve;
        if stale {
            self.measured_at = Some(Instant::now());
            self.written_since = 0;
            self.free = match self.probe.free_bytes(dir) {
                Ok(free) => free,
                Err(error) => {
                    // An unmeasurable file system is not refused: a real shortage still
                    // shows as a failed write, which is recovered from.
                    tracing::warn!(%error, "cannot measure free space for the audit log");
                    u64::MAX
                }
            };
            shared.free_bytes.store(self.free, Ordering::Relaxed);
        }
        let free = self.free.saturating_sub(self.written_since);
        if free.saturating_sub(bytes) < self.reserve {
            Err(free)
        } else {
            Ok(())
        }
    }

    fn wrote(&mut self, bytes: u64) {
        self.written_since = self.written_since.saturating_add(bytes);
    }
}

/// The single writer: owns the files, batches appends, signs checkpoints.
struct Writer {
    /// With a shared log: this log is its replica.
    replica: Option<Replica>,
    dir: PathBuf,
    origin: String,
    signer: CheckpointSigner,
    config: AuditConfig,
    shared: Arc<Shared>,
    file: File,
    segment_index: u32,
    /// Length of the current segment up to its last synced frame.
    segment_len: u64,
    /// Length of the current segment's file: `segment_len` and the zeros written ahead.
    segment_allocated: u64,
    segment_records: u64,
    size: u64,
    checkpoints: File,
    /// Length of `checkpoints.log` up to its last synced entry.
    checkpoints_len: u64,
    last_checkpoint_size: Option<u64>,
    space: SpaceGuard,
    /// The last batch was refused for lack of free space.
    low_space: bool,
    /// A disk operation failed and no write and sync has succeeded since.
    io_suspect: bool,
    /// A failed write may have left bytes after `segment_len`.
    segment_dirty: bool,
    /// A failed checkpoint may have left bytes after `checkpoints_len`.
    checkpoints_dirty: bool,
    /// When to check again by itself while unhealthy.
    next_retry: Option<Instant>,
    /// Records in the previous batch: a measure of the current load.
    last_batch: usize,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Also on a panic: appends then fail, and the health says so.
        self.shared.closed.store(true, Ordering::Release);
    }
}

type Pending = (Box<AuditRecord>, Reply<u64>);

/// A record encoded at its position, waiting for the local write.
struct Ready {
    seq: u64,
    bytes: Vec<u8>,
    request_id: String,
}

/// A record of a batch, framed in the batch buffer.
struct Encoded {
    seq: u64,
    leaf: Hash,
    /// Offset of the frame in the batch buffer.
    at: u64,
    len: u32,
    request_id: String,
}

/// Answers a batch's appends: positions from `first` on success, the same refusal to each
/// otherwise.
fn answer(replies: Vec<Reply<u64>>, first: u64, result: Result<(), AuditError>) {
    match result {
        Ok(()) => {
            for (seq, reply) in (first..).zip(replies) {
                let _ = reply.send(Ok(seq));
            }
        }
        Err(AuditError::DiskFull {
            free_bytes,
            reserve_bytes,
        }) => {
            for reply in replies {
                let _ = reply.send(Err(AuditError::DiskFull {
                    free_bytes,
                    reserve_bytes,
                }));
            }
        }
        Err(_) => {
            for reply in replies {
                let _ = reply.send(Err(AuditError::Unavailable));
            }
        }
    }
}

/// Whether every byte of `bytes` is zero.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Cuts `file` back to `len` bytes and makes that durable.
fn truncate_to(file: &File, len: u64) -> std::io::Result<()> {
    file.set_len(len)?;
    file.sync_all()?;
    let actual = file.metadata()?.len();
    if actual != len {
        return Err(std::io::Error::other(format!(
            "length is {actual} after truncating to {len}"
        )));
    }
    Ok(())
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.config.max_batch);
        let mut next_checkpoint = Instant::now() + self.config.checkpoint_interval;
        loop {
            let now = Instant::now();
            let mut wait = next_checkpoint.saturating_duration_since(now);
            if let Some(at) = self.next_retry {
                wait = wait.min(at.saturating_duration_since(now));
            }
            if let Some(replica) = &self.replica {
                wait = wait.min(replica.next_pull.saturating_duration_since(now));
            }
            let mut control = None;
            let mut disconnected = false;
            match rx.recv_timeout(wait) {
                Ok(Command::Append(record, reply)) => {
                    self.dequeued();
                    batch.push((record, reply));
                    let linger = if self.last_batch >= self.config.linger_min_batch {
                        self.config.max_delay
                    } else {
                        Duration::ZERO
                    };
                    let deadline = Instant::now() + linger;
                    while batch.len() < self.config.max_batch {
                        let next = match rx.try_recv() {
                            Ok(cmd) => cmd,
                            Err(TryRecvError::Disconnected) => {
                                disconnected = true;
                                break;
                            }
                            Err(TryRecvError::Empty) => {
                                let now = Instant::now();
                                if now >= deadline {
                                    break;
                                }
                                match rx.recv_timeout(deadline - now) {
                                    Ok(cmd) => cmd,
                                    Err(RecvTimeoutError::Timeout) => break,
                                    Err(RecvTimeoutError::Disconnected) => {
                                        disconnected = true;
                                        break;
                                    }
                                }
                            }
                        };
                        match next {
                            Command::Append(record, reply) => {
                                self.dequeued();
                                batch.push((record, reply));
                            }
                            other => {
                                control = Some(other);
                                break;
                            }
                        }
                    }
                    self.last_batch = batch.len();
                    self.commit(&mut batch);
                }
                Ok(other) => control = Some(other),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            match control {
                Some(Command::Checkpoint(reply)) => {
                    let _ = reply.send(self.checkpoint());
                }
                Some(Command::Close(reply)) => {
                    self.pull();
                    let result = self.checkpoint().map(|_| ());
                    self.trim();
                    self.leave();
                    self.shared.closed.store(true, Ordering::Release);
                    let _ = reply.send(result);
                    return;
                }
                Some(Command::Append(..)) | None => {}
            }
            if disconnected {
                let _ = self.checkpoint();
                self.trim();
                return;
            }
            if self.next_retry.is_some_and(|at| Instant::now() >= at) {
                self.retry();
            }
            if self
                .replica
                .as_ref()
                .is_some_and(|r| Instant::now() >= r.next_pull)
            {
                self.pull();
            }
            if Instant::now() >= next_checkpoint {
                let signs = self.lead(self.config.checkpoint_interval);
                let grew = self.last_checkpoint_size != Some(self.size) && self.size > 0;
                if signs && grew && self.health() == AuditHealth::Healthy {
                    let _ = self.checkpoint();
                }
                next_checkpoint = Instant::now() + self.config.checkpoint_interval;
            }
        }
    }

    fn dequeued(&self) {
        self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
    }

    fn health(&self) -> AuditHealth {
        if let Some(health) = self.replica_health() {
            health
        } else if self.low_space {
            AuditHealth::LowDiskSpace
        } else if self.io_suspect {
            AuditHealth::Recovering
        } else {
            AuditHealth::Healthy
        }
    }

    /// Publishes the health and schedules (or cancels) the writer's own retry.
    fn publish(&mut self) {
        let health = self.health();
        let before =
            AuditHealth::from_u8(self.shared.health.swap(health.to_u8(), Ordering::AcqRel));
        if health == AuditHealth::Healthy {
            self.next_retry = None;
            if before != AuditHealth::Healthy {
                tracing::warn!(was = before.as_str(), "audit log writable again");
            }
            return;
        }
        if before == AuditHealth::Healthy {
            tracing::error!(
                state = health.as_str(),
                free_bytes = self.space.free,
                reserve_bytes = self.space.reserve,
                "audit log refusing appends until it can write again"
            );
        }
        if self.next_retry.is_none() {
            self.next_retry = Some(Instant::now() + self.config.retry_interval);
        }
    }

    fn io_failure(&mut self, what: &str, error: &std::io::Error) {
        tracing::error!(
            %error,
            operation = what,
            "audit log write failed; nothing of it is acknowledged"
        );
        self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
        self.io_suspect = true;
        self.publish();
    }

    /// Test hook: fails while every disk operation is set to fail.
    fn injected_failure(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.shared.injected.load(Ordering::SeqCst) == InjectedFailure::Everything as u8 {
            return Err(std::io::Error::other("injected write failure"));
        }
        Ok(())
    }

    /// Appends `buf` to the current segment and syncs it.
    /// Writes `buf` after the last synced frame and syncs it; when it reaches past the zeros
    /// written ahead (and `write_ahead`), writes [`WRITE_AHEAD_BYTES`] more zeros after it in
    /// the same sync.
    fn write_segment(&mut self, buf: &[u8], write_ahead: bool) -> std::io::Result<()> {
        self.injected_failure()?;
        let at = self.segment_len;
        #[cfg(test)]
        {
            let injected = self.shared.injected.load(Ordering::SeqCst);
            if injected == InjectedFailure::PartialWrite as u8 {
                self.file.write_all_at(&buf[..buf.len() / 2], at)?;
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            if injected == InjectedFailure::Sync as u8 {
                self.file.write_all_at(buf, at)?;
                return Err(std::io::Error::other("injected sync failure"));
            }
        }
        let end = at + buf.len() as u64;
        self.file.write_all_at(buf, at)?;
        let allocated = if end <= self.segment_allocated {
            self.segment_allocated
        } else if write_ahead {
            // The zeros are an optimisation: a disk that has no room for them still takes the
            // records (the file is cut back to them).
            match self
                .file
                .write_all_at(&vec![0u8; WRITE_AHEAD_BYTES as usize], end)
            {
                Ok(()) => end + WRITE_AHEAD_BYTES,
                Err(_) => {
                    self.file.set_len(end)?;
                    end
                }
            }
        } else {
            end
        };
        self.file.sync_data()?;
        self.segment_allocated = allocated;
        Ok(())
    }

    /// On a clean stop: cuts the zeros written ahead, so that a stopped log's segments end
    /// with their last record. A failure is left to the next start's recovery, which cuts
    /// them too.
    fn trim(&mut self) {
        if self.segment_allocated > self.segment_len && !self.segment_dirty {
            match truncate_to(&self.file, self.segment_len) {
                Ok(()) => self.segment_allocated = self.segment_len,
                Err(e) => {
                    tracing::warn!(error = %e, "could not cut the audit segment's zeros at close")
                }
            }
        }
    }

    /// Cuts away whatever failed writes may have left after the last synced frame or entry.
    fn repair(&mut self) -> std::io::Result<()> {
        if self.segment_dirty {
            self.injected_failure()?;
            truncate_to(&self.file, self.segment_len)?;
            self.segment_allocated = self.segment_len;
            self.segment_dirty = false;
            tracing::warn!(
                segment = %segment_name(self.segment_index),
                length = self.segment_len,
                "truncated the audit segment back to its last synced record"
            );
        }
        if self.checkpoints_dirty {
            self.injected_failure()?;
            truncate_to(&self.checkpoints, self.checkpoints_len)?;
            self.checkpoints_dirty = false;
        }
        Ok(())
    }

    /// Tests the disk: writes, syncs and removes a small file in the log directory.
    fn probe_disk(&self) -> std::io::Result<()> {
        self.injected_failure()?;
        let path = self.dir.join(PROBE_FILE);
        let written = File::create(&path).and_then(|mut f| {
            f.write_all(&[0u8; 4096])?;
            f.sync_data()
        });
        let removed = match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        written.and(removed)
    }

    /// The writer's own check while unhealthy (also when no appends arrive).
    fn retry(&mut self) {
        self.next_retry = None;
        if self.low_space || self.io_suspect {
            self.low_space = self.space.admit(&self.dir, 0, true, &self.shared).is_err();
        }
        if self.io_suspect && !self.low_space {
            match self.repair().and_then(|()| self.probe_disk()) {
                Ok(()) => self.io_suspect = false,
                Err(e) => {
                    self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "audit log disk test failed; retrying later");
                }
            }
        }
        self.publish();
    }

    fn roll_segment(&mut self) -> Result<(), AuditError> {
        let index = self.segment_index + 1;
        // The segment being closed keeps its records only: zeros written ahead stay in the
        // last segment alone.
        truncate_to(&self.file, self.segment_len).map_err(io_err(format!(
            "truncate {}",
            segment_name(self.segment_index)
        )))?;
        self.segment_allocated = self.segment_len;
        // A failed earlier attempt may have left this file: it is created afresh.
        create_segment(&self.dir, index, self.size)?;
        let path = self.dir.join(segment_name(index));
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let read_handle = File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
        self.shared.write().segments.push(Arc::new(read_handle));
        self.file = file;
        self.segment_index = index;
        self.segment_len = HEADER_LEN as u64;
        self.segment_allocated = HEADER_LEN as u64;
        self.segment_records = 0;
        Ok(())
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if self.replica.is_some() {
            return self.commit_shared(batch);
        }
        let mut ready = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut seq = self.size;
        for (mut record, reply) in batch.drain(..) {
            record.v = RECORD_FORMAT_VERSION;
            record.seq = seq;
            match self.encode(&record) {
                Ok(bytes) => {
                    ready.push(Ready {
                        seq,
                        bytes,
                        request_id: record.request_id,
                    });
                    replies.push(reply);
                    seq += 1;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if ready.is_empty() {
            return;
        }
        let first = self.size;
        let written = self.write_local(ready);
        answer(replies, first, written);
    }

    /// A record's canonical bytes, within the size limit.
    fn encode(&self, record: &AuditRecord) -> Result<Vec<u8>, AuditError> {
        let bytes = record.canonical_bytes()?;
        if bytes.len() > self.config.max_record_bytes {
            // `append` cut the record to fit; kept as a last line of defence.
            return Err(AuditError::RecordTooLarge {
                len: bytes.len(),
                max: self.config.max_record_bytes,
            });
        }
        Ok(bytes)
    }

    /// Writes and syncs `ready` (consecutive records from `self.size`) to the current
    /// segment, then advances the in-memory state. Nothing advances unless all of it is
    /// durable.
    fn write_local(&mut self, ready: Vec<Ready>) -> Result<(), AuditError> {
        let mut buf = Vec::new();
        let mut encoded = Vec::with_capacity(ready.len());
        for r in ready {
            encoded.push(Encoded {
                seq: r.seq,
                leaf: hash_leaf(&r.bytes),
                at: buf.len() as u64,
                len: r.bytes.len() as u32,
                request_id: r.request_id,
            });
            encode_frame(&r.bytes, &mut buf);
        }
        let Some(last) = encoded.last().map(|e| e.seq) else {
            return Ok(());
        };

        // 1. The free-space reserve: refuse the whole batch before writing anything (and the
        // zeros written ahead, when the batch reaches past them).
        let fresh = self.health() != AuditHealth::Healthy;
        // Zeros are written ahead only when they fit above the reserve too: close to it, the
        // batch is written without them (and its sync writes the file's new size).
        let reaches_past = self.segment_len + buf.len() as u64 > self.segment_allocated
            || self.segment_len >= self.config.segment_max_bytes;
        let bytes = buf.len() as u64;
        let admitted = if reaches_past
            && self.space.has_room(bytes + WRITE_AHEAD_BYTES)
            && self
                .space
                .admit(&self.dir, bytes + WRITE_AHEAD_BYTES, fresh, &self.shared)
                .is_ok()
        {
            Ok(true)
        } else {
            self.space
                .admit(&self.dir, bytes, fresh, &self.shared)
                .map(|()| false)
        };
        let write_ahead = match admitted {
            Ok(write_ahead) => write_ahead,
            Err(free) => {
                self.low_space = true;
                self.shared
                    .space_refusals
                    .fetch_add(encoded.len() as u64, Ordering::Relaxed);
                self.publish();
                return Err(AuditError::DiskFull {
                    free_bytes: free,
                    reserve_bytes: self.space.reserve,
                });
            }
        };
        self.low_space = false;

        // 2. Nothing is written after the remains of a failed write.
        if let Err(e) = self.repair() {
            self.io_failure("truncate after a failed write", &e);
            return Err(AuditError::Unavailable);
        }
        if self.segment_len >= self.config.segment_max_bytes && self.segment_records > 0 {
            if let Err(e) = self.roll_segment() {
                self.io_failure("start new segment", &std::io::Error::other(e.to_string()));
                return Err(AuditError::Unavailable);
            }
        }

        // 3. Write and sync; on failure cut the partial batch away at once.
        let started = Instant::now();
        let allocated_before = self.segment_allocated;
        if let Err(e) = self.write_segment(&buf, write_ahead) {
            self.segment_dirty = true;
            self.io_failure("write and sync records", &e);
            if let Err(e) = self.repair() {
                self.io_failure("truncate after a failed write", &e);
            }
            return Err(AuditError::Unavailable);
        }
        self.shared.sync.observe(started.elapsed());
        // Bytes the file grew by: a batch written into the zeros ahead takes no new space.
        self.space
            .wrote(self.segment_allocated.saturating_sub(allocated_before));
        self.io_suspect = false;
        self.publish();

        // 4. Durable: only now does the in-memory state advance.
        let segment = self.segment_index;
        let base = self.segment_len;
        self.segment_len += buf.len() as u64;
        self.segment_records += encoded.len() as u64;
        self.size = last + 1;
        let mut state = self.shared.write();
        for e in encoded {
            state.tree.push(e.leaf);
            state.locations.push(Location {
                segment,
                offset: base + e.at + 4,
                len: e.len,
            });
            state.request_ids.entry(e.request_id).or_insert(e.seq);
        }
        self.shared.size.store(self.size, Ordering::Release);
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<SignedCheckpoint, AuditError> {
        if self.last_checkpoint_size == Some(self.size) {
            if let Some(cp) = self.shared.read().latest_checkpoint.clone() {
                return Ok(cp);
            }
        }
        let root = self.shared.read().tree.root_at(self.size)?;
        let cp = self
            .signer
            .sign_checkpoint(&self.origin, self.size, &root)?;
        self.keep_checkpoint(cp.clone())?;
        self.share_checkpoint(&cp);
        Ok(cp)
    }

    /// Appends a signed checkpoint to `checkpoints.log` and syncs it; it is then the latest.
    fn keep_checkpoint(&mut self, cp: SignedCheckpoint) -> Result<(), AuditError> {
        let entry = format!("{}\n", cp.note);
        if let Err(e) = self.repair() {
            self.io_failure("truncate after a failed write", &e);
            return Err(AuditError::Unavailable);
        }
        let written = self
            .injected_failure()
            .and_then(|()| self.checkpoints.write_all(entry.as_bytes()))
            .and_then(|()| self.checkpoints.sync_data());
        if let Err(e) = written {
            self.checkpoints_dirty = true;
            self.io_failure("write checkpoint", &e);
            if let Err(e) = self.repair() {
                self.io_failure("truncate after a failed checkpoint", &e);
            }
            return Err(AuditError::Unavailable);
        }
        self.checkpoints_len += entry.len() as u64;
        self.last_checkpoint_size = Some(cp.size);
        self.shared.write().latest_checkpoint = Some(cp);
        Ok(())
    }
}
