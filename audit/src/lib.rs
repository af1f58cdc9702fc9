//! SafeGrid's append-only, tamper-evident access log.
//!
//! Every access to personal data becomes an [`AuditRecord`] appended to an [`AuditLog`]:
//! cut to a bounded size ([`cut`]), durable (fdatasync, group commit) before
//! [`AuditLog::append`] returns, chained into an RFC 6962 Merkle tree ([`merkle`]), and
//! periodically committed to by an Ed25519-signed checkpoint in the C2SP signed-note form
//! ([`checkpoint`]). Anyone holding the public key can check the log directory offline with
//! [`verify::verify_log_dir`].
//!
//! Layout of a log directory: see [`segment`].

pub mod anomaly;
pub mod checkpoint;
pub mod cut;
pub mod log;
pub mod merkle;
pub mod record;
pub mod segment;
pub mod space;
pub mod verify;

pub use anomaly::{detect_anomalies, Anomaly, AnomalyConfig, AnomalyKind, SCOPE_MOVE_ACTION};
pub use checkpoint::{CheckpointError, CheckpointSigner, PublicKey, SignedCheckpoint};
pub use cut::{FieldLimits, ListCut, RecordCut, MIN_RECORD_BYTES};
pub use log::{
    AuditConfig, AuditError, AuditHealth, AuditLog, AuditQuery, ResidentSubject, SharedLog,
    SyncLatency, SYNC_BUCKETS,
};
pub use merkle::{hash_leaf, verify_consistency, verify_inclusion, Hash, MerkleTree, ProofError};
pub use record::{Actor, AuditRecord, Decision, RecordDecodeError, RECORD_FORMAT_VERSION};
pub use space::{FreeSpaceProbe, StatvfsFreeSpace};
pub use verify::{
    checkpoint_notes, for_each_record, load_public_key, verify_log_dir, InclusionReport,
    VerifyError, VerifyOptions, VerifyReport,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
use tests as tests_support;
