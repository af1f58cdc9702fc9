//! Offline verification of a log directory with nothing but the public key.
//!
//! Guarantees: [`verify_log_dir`] succeeds only if
//! 1. every segment and every frame is intact: headers, lengths, frame hashes, record
//!    encodings and `seq` numbers all check, with **no** tolerance for a torn tail
//!    (verification is strict; a log left torn by a crash passes again once
//!    [`AuditLog::open`](crate::AuditLog::open) has recovered it);
//! 2. every entry of `checkpoints.log` carries a valid signature by the given key, and its
//!    root equals the root recomputed from the records at its size (so any record changed,
//!    removed or reordered after a checkpoint is caught);
//! 3. a saved (older) checkpoint, if given, verifies and is consistent with the current log
//!    (an RFC 9162 consistency proof from it to the full log checks);
//! 4. the record of a given request id, if asked, is included under the latest signed
//!    checkpoint (an RFC 9162 inclusion proof checks).
//!
//! Records after the latest checkpoint are reported as `unsigned_records`: they are intact
//! but not yet covered by a signature.

use std::path::Path;

use crate::checkpoint::{PublicKey, SignedCheckpoint};
use crate::merkle::{hash_leaf, verify_consistency, verify_inclusion, Hash, MerkleTree};
use crate::record::AuditRecord;
use crate::segment::{
    decode_header, list_segments, read_frame, segment_name, split_checkpoints, Frame, HeaderError,
    CHECKPOINTS_FILE, HEADER_LEN,
};

/// What to check beyond the log's own integrity.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The text of a checkpoint saved earlier (a signed note); must be a prefix of the log.
    pub saved_checkpoint: Option<String>,
    /// A request id whose record must be included under the latest checkpoint.
    pub request_id: Option<String>,
}

/// Proof that a record is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionReport {
    /// The record's position.
    pub seq: u64,
    /// The checkpoint size the proof is against.
    pub checkpoint_size: u64,
    /// The audit path.
    pub proof: Vec<Hash>,
}

/// What a successful verification established.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// Segment files read.
    pub segments: usize,
    /// Checkpoints verified (signature and root).
    pub checkpoints: usize,
    /// The newest checkpoint.
    pub latest_checkpoint: Option<SignedCheckpoint>,
    /// Records after the newest checkpoint (intact, not yet signed).
    pub unsigned_records: u64,
    /// Root over all records.
    pub root: Hash,
    /// Size of the saved checkpoint that was shown consistent, if one was given.
    pub saved_checkpoint_size: Option<u64>,
    /// Inclusion of the requested record, if one was asked for.
    pub inclusion: Option<InclusionReport>,
}

/// Why verification failed. Each kind has its own process exit code ([`VerifyError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A segment is damaged or not a valid log (exit code 2).
    #[error("malformed log: {file} at byte {offset}: {reason}")]
    Malformed {
        file: String,
        offset: u64,
        reason: String,
    },
    /// A checkpoint does not parse or its signature does not verify (exit code 3).
    #[error("bad checkpoint signature: {0}")]
    BadSignature(String),
    /// A checkpoint's root differs from the records on disk, or the log is shorter than a
    /// checkpoint: the log was altered after it was checkpointed (exit code 4).
    #[error("root mismatch: {0}")]
    RootMismatch(String),
    /// The saved checkpoint is not a prefix of the current log (exit code 5).
    #[error("inconsistent with the saved checkpoint: {0}")]
    Inconsistent(String),
    /// The request id has no record, or it is not included under the latest checkpoint
    /// (exit code 6).
    #[error("request {request_id:?} not verified: {reason}")]
    NotIncluded { request_id: String, reason: String },
    /// The public key file is unreadable or invalid, or another I/O problem (exit code 7).
    #[error("public key or I/O error: {0}")]
    KeyOrIo(String),
}

impl VerifyError {
    /// The process exit code for `safegrid audit verify`.
    pub fn exit_code(&self) -> i32 {
        match self {
            VerifyError::Malformed { .. } => 2,
            VerifyError::BadSignature(_) => 3,
            VerifyError::RootMismatch(_) => 4,
            VerifyError::Inconsistent(_) => 5,
            VerifyError::NotIncluded { .. } => 6,
            VerifyError::KeyOrIo(_) => 7,
        }
    }
}

/// Reads a `checkpoint-public.key` file.
pub fn load_public_key(path: &Path) -> Result<PublicKey, VerifyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| VerifyError::KeyOrIo(format!("read {}: {e}", path.display())))?;
    PublicKey::parse(&text).map_err(|e| VerifyError::KeyOrIo(format!("{}: {e}", path.display())))
}

fn malformed(file: &str, offset: usize, reason: impl Into<String>) -> VerifyError {
    VerifyError::Malformed {
        file: file.to_owned(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// Calls `visit` with every record of the log in `dir` and its bytes as stored, in order,
/// reading the segments strictly (headers, frames and their checks, each record at its
/// position). Returns the number of segment files.
pub fn for_each_record(
    dir: &Path,
    mut visit: impl FnMut(&AuditRecord, &[u8]),
) -> Result<usize, VerifyError> {
    let io = |what: &str, e: std::io::Error| VerifyError::KeyOrIo(format!("{what}: {e}"));
    let segments = list_segments(dir).map_err(|e| io(&format!("list {}", dir.display()), e))?;
    if segments.is_empty() {
        return Err(malformed(&dir.display().to_string(), 0, "no segment files"));
    }
    let mut next_seq = 0u64;
    for (pos, (index, path)) in segments.iter().enumerate() {
        let name = segment_name(*index);
        if *index as usize != pos {
            return Err(malformed(&name, 0, format!("expected segment {pos}")));
        }
        let buf = std::fs::read(path).map_err(|e| io(&format!("read {}", path.display()), e))?;
        let first_seq = decode_header(&buf).map_err(|e| {
            let reason = match e {
                HeaderError::Short => "truncated header".to_owned(),
                HeaderError::BadMagic => "not a segment file".to_owned(),
                HeaderError::UnsupportedVersion(v) => format!("unsupported format version {v}"),
            };
            malformed(&name, 0, reason)
        })?;
        if first_seq != next_seq {
            return Err(malformed(
                &name,
                12,
                format!("first seq {first_seq}, expected {next_seq}"),
            ));
        }
        let mut off = HEADER_LEN;
        let last = pos + 1 == segments.len();
        loop {
            if last && off < buf.len() && crate::log::is_zero(&buf[off..]) {
                // The zeros a running writer keeps written ahead of its last record: nothing
                // else may follow the last record, and nothing may follow in other segments.
                break;
            }
            match read_frame(&buf, off) {
                Frame::End => break,
                Frame::Torn => return Err(malformed(&name, off, "incomplete frame")),
                Frame::Bad { .. } => return Err(malformed(&name, off, "frame check failed")),
                Frame::Ok { bytes, next } => {
                    let record = AuditRecord::from_canonical_bytes(bytes)
                        .map_err(|e| malformed(&name, off, e.to_string()))?;
                    if record.seq != next_seq {
                        return Err(malformed(
                            &name,
                            off,
                            format!("record seq {}, expected {next_seq}", record.seq),
                        ));
                    }
                    visit(&record, bytes);
                    next_seq += 1;
                    off = next;
                }
            }
        }
    }
    Ok(segments.len())
}

/// The signed checkpoint notes of the log in `dir`, oldest first (unverified: see
/// [`verify_log_dir`]).
pub fn checkpoint_notes(dir: &Path) -> Result<Vec<String>, VerifyError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| VerifyError::BadSignature(format!("{CHECKPOINTS_FILE} is not UTF-8")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(VerifyError::KeyOrIo(format!(
                "read {}: {e}",
                path.display()
            )));
        }
    };
    let (entries, _) = split_checkpoints(&text);
    Ok(entries.iter().map(|e| e.note.to_owned()).collect())
}

/// Verifies the log in `dir` (see the module docs for what is checked).
pub fn verify_log_dir(
    dir: &Path,
    public_key: &PublicKey,
    opts: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let io = |what: &str, e: std::io::Error| VerifyError::KeyOrIo(format!("{what}: {e}"));

    // 1. Every segment, strictly.
    let mut tree = MerkleTree::new();
    let mut wanted_seq = None;
    let segments = for_each_record(dir, |record, bytes| {
        if wanted_seq.is_none() && opts.request_id.as_deref() == Some(record.request_id.as_str()) {
            wanted_seq = Some(record.seq);
        }
        tree.push(hash_leaf(bytes));
    })?;
    let records = tree.size();

    // 2. Every checkpoint: signature and root.
    let cp_path = dir.join(CHECKPOINTS_FILE);
    let cp_text = match std::fs::read(&cp_path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| VerifyError::BadSignature(format!("{CHECKPOINTS_FILE} is not UTF-8")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&format!("read {}", cp_path.display()), e)),
    };
    let (entries, tail) = split_checkpoints(&cp_text);
    if let Some(at) = tail {
        return Err(VerifyError::BadSignature(format!(
            "{CHECKPOINTS_FILE}: incomplete entry at byte {at}"
        )));
    }
    let mut latest: Option<SignedCheckpoint> = None;
    for entry in &entries {
        let cp = SignedCheckpoint::open(entry.note, public_key).map_err(|e| {
            VerifyError::BadSignature(format!(
                "{CHECKPOINTS_FILE} entry at byte {}: {e}",
                entry.offset
            ))
        })?;
        if cp.size > records {
            return Err(VerifyError::RootMismatch(format!(
                "checkpoint at size {} but the log has only {records} records",
                cp.size
            )));
        }
        let root = tree
            .root_at(cp.size)
            .map_err(|e| VerifyError::RootMismatch(e.to_string()))?;
        if root != cp.root {
            return Err(VerifyError::RootMismatch(format!(
                "records up to size {} do not match the signed root",
                cp.size
            )));
        }
        latest = Some(cp);
    }
    let root = tree.root();

    // 3. The saved checkpoint is a prefix of the log.
    let saved_checkpoint_size = match &opts.saved_checkpoint {
        None => None,
        Some(note) => {
            let saved = SignedCheckpoint::open(note, public_key)
                .map_err(|e| VerifyError::BadSignature(format!("saved checkpoint: {e}")))?;
            if saved.size > records {
                return Err(VerifyError::Inconsistent(format!(
                    "saved checkpoint has size {} but the log has only {records} records",
                    saved.size
                )));
            }
            let proof = tree
                .consistency_proof(saved.size, records)
                .map_err(|e| VerifyError::Inconsistent(e.to_string()))?;
            verify_consistency(saved.size, records, &saved.root, &root, &proof).map_err(|e| {
                VerifyError::Inconsistent(format!("size {} -> {records}: {e}", saved.size))
            })?;
            Some(saved.size)
        }
    };

    // 4. The requested record is included under the latest checkpoint.
    let inclusion = match &opts.request_id {
        None => None,
        Some(request_id) => {
            let not_included = |reason: String| VerifyError::NotIncluded {
                request_id: request_id.clone(),
                reason,
            };
            let seq = wanted_seq.ok_or_else(|| not_included("no record".into()))?;
            let cp = latest.as_ref().filter(|cp| seq < cp.size).ok_or_else(|| {
                not_included(format!("record {seq} is not yet under a signed checkpoint"))
            })?;
            let leaf = tree
                .leaf_hash(seq)
                .ok_or_else(|| not_included(format!("record {seq} missing")))?;
            let proof = tree
                .inclusion_proof(seq, cp.size)
                .map_err(|e| not_included(e.to_string()))?;
            verify_inclusion(&leaf, seq, cp.size, &proof, &cp.root)
                .map_err(|e| not_included(e.to_string()))?;
            Some(InclusionReport {
                seq,
                checkpoint_size: cp.size,
                proof,
            })
        }
    };

    Ok(VerifyReport {
        records,
        segments,
        checkpoints: entries.len(),
        unsigned_records: records - latest.as_ref().map_or(0, |c| c.size),
        latest_checkpoint: latest,
        root,
        saved_checkpoint_size,
        inclusion,
    })
}
