//! Tests of the log and the offline verifier against real files.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};

use crate::log::InjectedFailure;
use crate::segment::{list_segments, HEADER_LEN};
use crate::*;

const ORIGIN: &str = "safegrid.test/audit";

pub(crate) fn pkcs8() -> Vec<u8> {
    // A fixed key per test process keeps reopen tests simple.
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    KEY.get_or_init(CheckpointSigner::generate_pkcs8).clone()
}

pub(crate) fn signer() -> CheckpointSigner {
    CheckpointSigner::from_pkcs8(&pkcs8()).unwrap()
}

pub(crate) fn public_key() -> PublicKey {
    signer().public_key(ORIGIN).unwrap()
}

pub(crate) fn config() -> AuditConfig {
    AuditConfig {
        origin: ORIGIN.into(),
        max_delay: Duration::from_millis(1),
        checkpoint_interval: Duration::from_secs(3600),
        ..AuditConfig::default()
    }
}

pub(crate) fn record(i: u64) -> AuditRecord {
    let mut r = AuditRecord::new(
        format!("req-{i}"),
        Actor {
            sub: format!("user-{}", i % 3),
            name: "网格员".into(),
            roles: vec!["grid_worker".into()],
            dept: None,
        },
        if i.is_multiple_of(2) {
            "read_resident"
        } else {
            "search"
        },
        "/v1/residents/{id}",
        if i.is_multiple_of(5) {
            Decision::Deny
        } else {
            Decision::Masked
        },
    );
    r.time =
        Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap() + chrono::Duration::seconds(i as i64);
    r.residents = vec![format!("hmac-{}", i % 4)];
    r.entities = vec![format!("ent-{}", i % 4)];
    r.purpose = Some("routine_visit".into());
    r
}

async fn filled_log(dir: &Path, n: u64, cfg: AuditConfig) -> AuditLog {
    let log = AuditLog::open(dir, signer(), cfg).unwrap();
    for i in 0..n {
        assert_eq!(log.append(record(i)).await.unwrap(), i);
    }
    log
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs = list_segments(dir).unwrap();
    assert_eq!(segs.len(), 1);
    segs[0].1.clone()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn verify(dir: &Path, opts: VerifyOptions) -> Result<VerifyReport, VerifyError> {
    verify_log_dir(dir, &public_key(), opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_durable_readable_and_provable() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), signer(), config()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25u64 {
                let mut r = record(t * 100 + i);
                r.request_id = format!("t{t}-{i}");
                seqs.push(log.append(r).await.unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
    assert_eq!(log.size(), 200);
    assert_eq!(log.queue_depth(), 0);
    assert!(log.is_healthy());

    let seq = log.find_by_request_id("t3-7").unwrap();
    let back = log.read(seq).unwrap();
    assert_eq!(back.seq, seq);
    assert_eq!(back.request_id, "t3-7");
    assert!(log.find_by_request_id("nope").is_none());
    assert!(matches!(log.read(200), Err(AuditError::NotFound(200))));

    let cp = log.checkpoint_now().await.unwrap();
    assert_eq!(cp.size, 200);
    assert_eq!(cp.root, log.root_at(200).unwrap());
    SignedCheckpoint::open(&cp.note, &public_key()).unwrap();
    for (index, size) in [(0, 1), (seq, 200), (199, 200), (5, 77)] {
        let proof = log.inclusion_proof(index, size).unwrap();
        let leaf = log.leaf_hash(index).unwrap();
        verify_inclusion(&leaf, index, size, &proof, &log.root_at(size).unwrap()).unwrap();
    }
    let proof = log.consistency_proof(77, 200).unwrap();
    verify_consistency(77, 200, &log.root_at(77).unwrap(), &cp.root, &proof).unwrap();
    log.close().await.unwrap();
    assert!(!log.is_healthy());
    assert!(matches!(
        log.append(record(1)).await,
        Err(AuditError::Unavailable)
    ));
}

#[tokio::test]
async fn search_filters_and_pages_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let log = filled_log(tmp.path(), 40, config()).await;
    let q = AuditQuery {
        actor: Some("user-1".into()),
        limit: 5,
        ..AuditQuery::default()
    };
    let page1 = log.search(&q).unwrap();
    assert_eq!(
        page1.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 4, 7, 10, 13]
    );
    let page2 = log
        .search(&AuditQuery {
            after_seq: Some(13),
            ..q.clone()
        })
        .unwrap();
    assert_eq!(page2[0].seq, 16);

    let denied = log
        .search(&AuditQuery {
            decision: Some(Decision::Deny),
            resident: Some("hmac-0".into()),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(denied.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 20]);
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    let window = log
        .search(&AuditQuery {
            from: Some(t0 + chrono::Duration::seconds(10)),
            to: Some(t0 + chrono::Duration::seconds(12)),
            action: Some("read_resident".into()),
            entity: Some("ent-2".into()),
            purpose: Some("routine_visit".into()),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(window.iter().map(|r| r.seq).collect::<Vec<_>>(), [10]);
    assert!(log
        .search(&AuditQuery {
            purpose: Some("emergency".into()),
            ..AuditQuery::default()
        })
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn reopen_recovers_tree_and_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let log = filled_log(tmp.path(), 30, config()).await;
    let root = log.root_at(30).unwrap();
    log.close().await.unwrap();
    drop(log);

    let log = AuditLog::open(tmp.path(), signer(), config()).unwrap();
    assert_eq!(log.size(), 30);
    assert_eq!(log.root_at(30).unwrap(), root);
    assert_eq!(log.latest_checkpoint().unwrap().size, 30);
    assert_eq!(log.find_by_request_id("req-29"), Some(29));
    assert_eq!(log.append(record(30)).await.unwrap(), 30);
    log.close().await.unwrap();
    let report = verify(
        tmp.path(),
        VerifyOptions {
            request_id: Some("req-30".into()),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.records, 31);
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.unsigned_records, 0);
    assert_eq!(report.inclusion.unwrap().seq, 30);
}

#[tokio::test]
async fn every_synced_batch_is_timed() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(tmp.path(), signer(), config()).unwrap();
    assert_eq!(log.sync_latency().count, 0);
    for i in 0..5 {
        log.append(record(i)).await.unwrap();
    }
    let latency = log.sync_latency();
    // Appended one after another, each record is its own batch.
    assert_eq!(latency.count, 5);
    assert!(latency.sum_seconds > 0.0);
    assert_eq!(latency.buckets.len(), SYNC_BUCKETS.len());
    let counts: Vec<u64> = latency.buckets.iter().map(|(_, n)| *n).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {counts:?}"
    );
    assert!(counts.last().unwrap() <= &5);
    log.close().await.unwrap();
}

/// Simulates a crash: the files as they are while the writer is still running.
async fn crashed_copy(n_checkpointed: u64, n_more: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let log = filled_log(&live, n_checkpointed, config()).await;
    log.checkpoint_now().await.unwrap();
    for i in n_checkpointed..n_checkpointed + n_more {
        assert_eq!(log.append(record(i)).await.unwrap(), i);
    }
    let crashed = tmp.path().join("crashed");
    copy_dir(&live, &crashed);
    // Keep the live writer running until the copy is done; then let it go.
    drop(log);
    (tmp, crashed)
}

#[tokio::test]
async fn torn_tail_mid_record_is_truncated_to_last_complete_record() {
    let (_tmp, crashed) = crashed_copy(10, 5).await;
    let seg = only_segment(&crashed);
    let written = std::fs::read(&seg).unwrap();
    // The copy of a running log ends in the zeros its writer keeps ahead.
    let full = written[..records_end(&written)].to_vec();
    assert!(written.len() > full.len() && written[full.len()..].iter().all(|&b| b == 0));
    let frame_start = {
        // Find where the last frame (seq 14) starts by walking frames.
        let mut off = HEADER_LEN;
        let mut starts = Vec::new();
        while off < full.len() {
            starts.push(off);
            let len = u32::from_le_bytes(full[off..off + 4].try_into().unwrap()) as usize;
            off += len + 8;
        }
        assert_eq!(starts.len(), 15);
        starts[14]
    };
    // Cut the final record at every possible point: its write was never acknowledged.
    for cut in frame_start + 1..full.len() {
        let case = crashed.with_extension(format!("cut{cut}"));
        copy_dir(&crashed, &case);
        std::fs::write(only_segment(&case), &full[..cut]).unwrap();
        let log = AuditLog::open(&case, signer(), config()).unwrap();
        assert_eq!(log.size(), 14, "cut at {cut}");
        for i in 0..14 {
            assert_eq!(log.read(i).unwrap(), {
                let mut r = record(i);
                r.seq = i;
                r
            });
        }
        assert_eq!(
            std::fs::metadata(only_segment(&case)).unwrap().len() as usize,
            frame_start
        );
        assert_eq!(log.append(record(99)).await.unwrap(), 14);
        log.close().await.unwrap();
        verify(&case, VerifyOptions::default()).unwrap();
        std::fs::remove_dir_all(&case).unwrap();
    }

    // Garbage after the last complete frame (a torn write of a new batch) is dropped too.
    let mut torn = full.clone();
    torn.extend_from_slice(&[200, 0, 0, 0, b'{', b'"']);
    std::fs::write(&seg, &torn).unwrap();
    assert!(matches!(
        verify(&crashed, VerifyOptions::default()),
        Err(VerifyError::Malformed { .. })
    ));
    let log = AuditLog::open(&crashed, signer(), config()).unwrap();
    assert_eq!(log.size(), 15);
    assert_eq!(std::fs::read(&seg).unwrap(), full);
}

#[tokio::test]
async fn damage_before_the_tail_or_below_a_checkpoint_is_an_error() {
    let (_tmp, crashed) = crashed_copy(10, 0).await;
    let seg = only_segment(&crashed);
    let written = std::fs::read(&seg).unwrap();
    let full = written[..records_end(&written)].to_vec();

    // A flipped byte in the middle: Corrupt, not silently dropped.
    let mut bad = full.clone();
    bad[HEADER_LEN + 30] ^= 0x20;
    std::fs::write(&seg, &bad).unwrap();
    match AuditLog::open(&crashed, signer(), config()) {
        Err(AuditError::Corrupt { segment, offset }) => {
            assert_eq!(segment, "segment-000000.log");
            assert_eq!(offset, HEADER_LEN as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // Cutting into a record covered by the signed checkpoint is not a torn tail.
    std::fs::write(&seg, &full[..full.len() - 3]).unwrap();
    assert!(matches!(
        AuditLog::open(&crashed, signer(), config()),
        Err(AuditError::Corrupt { .. })
    ));

    // A newer on-disk format is refused with a clear error.
    let mut newer = full.clone();
    newer[8] = 2;
    std::fs::write(&seg, &newer).unwrap();
    let err = AuditLog::open(&crashed, signer(), config()).unwrap_err();
    assert!(matches!(
        err,
        AuditError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
    assert!(err.to_string().contains("version 2"));
}

#[tokio::test]
async fn write_failure_fails_closed_until_a_write_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let log = filled_log(tmp.path(), 3, config()).await;
    log.inject_write_failure();
    assert!(matches!(
        log.append(record(3)).await,
        Err(AuditError::Unavailable)
    ));
    assert!(!log.is_healthy());
    assert_eq!(log.health(), AuditHealth::Recovering);
    assert!(matches!(
        log.append(record(4)).await,
        Err(AuditError::Unavailable)
    ));
    assert!(log.checkpoint_now().await.is_err());
    assert_eq!(log.size(), 3);
    assert!(log.write_failures() >= 3);
    // Reads of durable records still work for compliance review.
    assert_eq!(log.read(2).unwrap().request_id, "req-2");
    // The disk works again: the next append is written, with the next seq.
    log.inject(InjectedFailure::Nothing);
    assert_eq!(log.append(record(3)).await.unwrap(), 3);
    assert!(log.is_healthy());
    log.close().await.unwrap();
    assert_eq!(
        verify(tmp.path(), VerifyOptions::default())
            .unwrap()
            .records,
        4
    );
}

#[tokio::test]
async fn another_signing_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = filled_log(tmp.path(), 1, config()).await;
    log.close().await.unwrap();
    let other = CheckpointSigner::from_pkcs8(&CheckpointSigner::generate_pkcs8()).unwrap();
    assert!(matches!(
        AuditLog::open(tmp.path(), other, config()),
        Err(AuditError::KeyMismatch { .. })
    ));
    let bad_origin = AuditConfig {
        origin: "has space".into(),
        ..config()
    };
    assert!(AuditLog::open(tmp.path(), signer(), bad_origin).is_err());
}

#[tokio::test]
async fn segments_roll_over_and_everything_still_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        segment_max_bytes: 2_000,
        ..config()
    };
    let log = filled_log(tmp.path(), 40, cfg.clone()).await;
    log.close().await.unwrap();
    let segs = list_segments(tmp.path()).unwrap().len();
    assert!(segs >= 5, "{segs} segments");
    let log = AuditLog::open(tmp.path(), signer(), cfg).unwrap();
    assert_eq!(log.size(), 40);
    assert_eq!(log.read(39).unwrap().request_id, "req-39");
    assert_eq!(log.read(0).unwrap().request_id, "req-0");
    log.close().await.unwrap();
    let report = verify(tmp.path(), VerifyOptions::default()).unwrap();
    assert_eq!(report.segments, segs);
    assert_eq!(report.records, 40);
}

#[tokio::test]
async fn periodic_checkpoints_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        checkpoint_interval: Duration::from_millis(50),
        ..config()
    };
    let log = filled_log(tmp.path(), 5, cfg).await;
    let mut waited = 0;
    while log.latest_checkpoint().map(|c| c.size) != Some(5) && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(log.latest_checkpoint().unwrap().size, 5);
}

#[tokio::test]
async fn verification_passes_and_each_failure_has_its_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = filled_log(&dir, 12, config()).await;
    let saved = log.checkpoint_now().await.unwrap();
    for i in 12..20 {
        log.append(record(i)).await.unwrap();
    }
    log.close().await.unwrap();
    drop(log);

    let key = load_public_key(&dir.join(segment::PUBLIC_KEY_FILE)).unwrap();
    assert_eq!(key, public_key());
    let ok = verify_log_dir(
        &dir,
        &key,
        VerifyOptions {
            saved_checkpoint: Some(saved.note.clone()),
            request_id: Some("req-17".into()),
        },
    )
    .unwrap();
    assert_eq!(ok.records, 20);
    assert_eq!(ok.saved_checkpoint_size, Some(12));
    assert_eq!(ok.inclusion.unwrap().checkpoint_size, 20);

    let code = |dir: &Path, opts: VerifyOptions| verify(dir, opts).unwrap_err().exit_code();
    let case = |name: &str| {
        let d = tmp.path().join(name);
        copy_dir(&dir, &d);
        d
    };

    // 2: a damaged frame.
    let d = case("frame");
    let seg = only_segment(&d);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[HEADER_LEN + 50] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    assert_eq!(code(&d, VerifyOptions::default()), 2);

    // 4: a record rewritten by someone who also fixed up its frame hash.
    let d = case("rewritten");
    let seg = only_segment(&d);
    let text = std::fs::read(&seg).unwrap();
    let needle = b"\"outcome\":\"ok\"";
    let at = text
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut rewritten = text.clone();
    rewritten[at + 11..at + 13].copy_from_slice(b"OK");
    let frame_end = HEADER_LEN
        + 4
        + u32::from_le_bytes(text[HEADER_LEN..HEADER_LEN + 4].try_into().unwrap()) as usize;
    assert!(at < frame_end);
    let check = segment::frame_check(&rewritten[HEADER_LEN + 4..frame_end]);
    rewritten[frame_end..frame_end + 4].copy_from_slice(&check);
    std::fs::write(&seg, &rewritten).unwrap();
    assert_eq!(code(&d, VerifyOptions::default()), 4);

    // 4: records removed after they were checkpointed.
    let d = case("truncated");
    let seg = only_segment(&d);
    let len = u32::from_le_bytes(text[HEADER_LEN..HEADER_LEN + 4].try_into().unwrap()) as usize;
    let mut starts = vec![HEADER_LEN];
    let mut off = HEADER_LEN + len + 8;
    while off < text.len() {
        starts.push(off);
        off += u32::from_le_bytes(text[off..off + 4].try_into().unwrap()) as usize + 8;
    }
    std::fs::write(&seg, &text[..starts[19]]).unwrap();
    assert_eq!(code(&d, VerifyOptions::default()), 4);

    // 3: a checkpoint signed by another key, and a damaged checkpoints.log.
    let other = CheckpointSigner::from_pkcs8(&CheckpointSigner::generate_pkcs8()).unwrap();
    let other_key = other.public_key(ORIGIN).unwrap();
    assert_eq!(
        verify_log_dir(&dir, &other_key, VerifyOptions::default())
            .unwrap_err()
            .exit_code(),
        3
    );
    let d = case("cpfile");
    let cp_path = d.join(segment::CHECKPOINTS_FILE);
    let cp_text = std::fs::read_to_string(&cp_path).unwrap();
    std::fs::write(&cp_path, cp_text.replacen("\n12\n", "\n11\n", 1)).unwrap();
    assert_eq!(code(&d, VerifyOptions::default()), 3);

    // 5: a saved checkpoint from a forked log with the same key.
    let fork = tmp.path().join("fork");
    let flog = filled_log(&fork, 11, config()).await;
    let mut odd = record(11);
    odd.outcome = "forked".into();
    flog.append(odd).await.unwrap();
    let forked = flog.checkpoint_now().await.unwrap();
    flog.close().await.unwrap();
    let saved_fork = VerifyOptions {
        saved_checkpoint: Some(forked.note.clone()),
        ..VerifyOptions::default()
    };
    assert_eq!(code(&dir, saved_fork), 5);
    let too_new = signer().sign_checkpoint(ORIGIN, 500, &[0; 32]).unwrap();
    let saved_too_new = VerifyOptions {
        saved_checkpoint: Some(too_new.note),
        ..VerifyOptions::default()
    };
    assert_eq!(code(&dir, saved_too_new), 5);

    // 6: unknown request id, and a record not yet under a checkpoint.
    let unknown = VerifyOptions {
        request_id: Some("req-404".into()),
        ..VerifyOptions::default()
    };
    assert_eq!(code(&dir, unknown), 6);
    let d = case("unsigned");
    let log = AuditLog::open(&d, signer(), config()).unwrap();
    let mut late = record(20);
    late.request_id = "late".into();
    log.append(late).await.unwrap();
    let copy = tmp.path().join("unsigned-copy");
    copy_dir(&d, &copy);
    drop(log);
    let late_opts = VerifyOptions {
        request_id: Some("late".into()),
        ..VerifyOptions::default()
    };
    assert_eq!(code(&copy, late_opts), 6);
    assert_eq!(
        verify(&copy, VerifyOptions::default())
            .unwrap()
            .unsigned_records,
        1
    );

    // 7: a bad public key file, a missing directory.
    let key_path = tmp.path().join("bad.key");
    std::fs::write(&key_path, "not a key").unwrap();
    assert_eq!(load_public_key(&key_path).unwrap_err().exit_code(), 7);
    assert_eq!(
        code(&tmp.path().join("missing"), VerifyOptions::default()),
        7
    );
}

#[tokio::test]
async fn every_single_byte_flip_in_a_segment_fails_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = filled_log(&dir, 3, config()).await;
    log.close().await.unwrap();
    drop(log);
    verify(&dir, VerifyOptions::default()).unwrap();
    let seg = only_segment(&dir);
    let original = std::fs::read(&seg).unwrap();
    for i in 0..original.len() {
        for mask in [0x01u8, 0x80] {
            let mut bytes = original.clone();
            bytes[i] ^= mask;
            std::fs::write(&seg, &bytes).unwrap();
            assert!(
                verify(&dir, VerifyOptions::default()).is_err(),
                "flip {mask:#x} of byte {i} of {} went unnoticed",
                original.len()
            );
        }
    }
    // And in the checkpoint file.
    std::fs::write(&seg, &original).unwrap();
    let cp = dir.join(segment::CHECKPOINTS_FILE);
    let cp_original = std::fs::read(&cp).unwrap();
    for i in 0..cp_original.len() {
        let mut bytes = cp_original.clone();
        bytes[i] ^= 0x01;
        std::fs::write(&cp, &bytes).unwrap();
        assert!(
            verify(&dir, VerifyOptions::default()).is_err(),
            "flip of checkpoint byte {i} went unnoticed"
        );
    }
    std::fs::write(&cp, &cp_original).unwrap();
    verify(&dir, VerifyOptions::default()).unwrap();
}

#[tokio::test]
async fn scan_yields_stored_bytes_and_subject_matches_either_name() {
    let tmp = tempfile::tempdir().unwrap();
    let log = filled_log(tmp.path(), 12, config()).await;
    let mut tree = MerkleTree::new();
    log.scan(&AuditQuery::default(), |record, bytes| {
        assert_eq!(record.canonical_bytes().unwrap(), bytes);
        tree.push(hash_leaf(bytes));
        true
    })
    .unwrap();
    assert_eq!(tree.root(), log.root_at(12).unwrap());

    // hmac-1 is on seqs 1, 5, 9; ent-2 on 2, 6, 10: a subject naming both finds all six.
    let subject = AuditQuery {
        subject: Some(ResidentSubject {
            reference: "hmac-1".into(),
            entity: "ent-2".into(),
        }),
        ..AuditQuery::default()
    };
    let seqs = |q: &AuditQuery| {
        log.search(q)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&subject), [1, 2, 5, 6, 9, 10]);
    let bounded = AuditQuery {
        after_seq: Some(1),
        before_seq: Some(9),
        ..subject
    };
    assert_eq!(seqs(&bounded), [2, 5, 6]);
    let mut seen = 0;
    log.scan(&AuditQuery::default(), |_, _| {
        seen += 1;
        seen < 3
    })
    .unwrap();
    assert_eq!(seen, 3, "scan stops when told");
}

/// Free space the test sets, and how often the log asked for it.
#[derive(Debug)]
struct FakeDisk {
    free: AtomicU64,
    probes: AtomicU64,
}

impl FakeDisk {
    fn new(free: u64) -> Arc<Self> {
        Arc::new(FakeDisk {
            free: AtomicU64::new(free),
            probes: AtomicU64::new(0),
        })
    }
    fn set(&self, free: u64) {
        self.free.store(free, Ordering::SeqCst);
    }
    fn probes(&self) -> u64 {
        self.probes.load(Ordering::SeqCst)
    }
}

impl FreeSpaceProbe for FakeDisk {
    fn free_bytes(&self, _dir: &Path) -> std::io::Result<u64> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        Ok(self.free.load(Ordering::SeqCst))
    }
}

const MIB: u64 = 1024 * 1024;

/// Length of the only segment's records: where its frames end, before the zeros a running
/// writer keeps written ahead.
fn segment_len(dir: &Path) -> u64 {
    records_end(&std::fs::read(only_segment(dir)).unwrap()) as u64
}

/// Where the frames of a segment's bytes end (at a zero length, or the end).
fn records_end(bytes: &[u8]) -> usize {
    let mut off = HEADER_LEN;
    while let Some(len) = bytes.get(off..off + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        off += len + 8;
    }
    off.min(bytes.len())
}

/// Opens a copy of `dir` (never a second writer on the live one) and returns its size.
fn recovered_copy_size(dir: &Path, scratch: &Path) -> (u64, u64) {
    copy_dir(dir, scratch);
    let log = AuditLog::open(scratch, signer(), config()).unwrap();
    let size = log.size();
    drop(log);
    (size, segment_len(scratch))
}

/// Polls `done` for up to five seconds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn an_oversized_record_is_cut_to_the_cap_and_the_log_still_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        max_record_bytes: 4096,
        ..config()
    };
    let log = filled_log(tmp.path(), 2, cfg.clone()).await;
    let endpoint = format!("/v1/residents/{}", "路".repeat(350_000));
    assert!(endpoint.len() > 1_000_000);
    let entities: Vec<String> = (0..100_000).map(|i| format!("r_{i:020}")).collect();
    let mut big = record(2);
    big.endpoint = endpoint.clone();
    big.entities = entities.clone();
    big.request_id = "big".into();
    assert_eq!(log.append(big).await.unwrap(), 2);
    assert_eq!(log.append(record(3)).await.unwrap(), 3);
    assert_eq!(log.records_cut(), 1);

    let stored = log.read(2).unwrap();
    let sha = |bytes: &[u8]| {
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()[..16])
    };
    let (prefix, marker) = stored.endpoint.split_once('…').unwrap();
    assert!(endpoint.starts_with(prefix) && !prefix.is_empty());
    assert_eq!(marker, format!("[cut sha256:{}]", sha(endpoint.as_bytes())));
    assert!(stored.endpoint.chars().count() <= cfg.field_limits.text_chars);
    assert!(!stored.entities.is_empty());
    assert!(stored.entities.len() <= cfg.field_limits.max_entities);
    assert_eq!(stored.entities[..], entities[..stored.entities.len()]);
    let cut = stored.cut.clone().unwrap();
    let entities_cut = cut.entities.unwrap();
    assert_eq!(entities_cut.total, 100_000);
    assert_eq!(
        entities_cut.sha256,
        sha(&serde_json::to_vec(&entities).unwrap())
    );
    assert_eq!(cut.strings, 1);
    // The uncut records carry no `cut` at all.
    assert!(log.read(3).unwrap().cut.is_none());
    let mut sizes = Vec::new();
    log.scan(&AuditQuery::default(), |_, bytes| {
        sizes.push(bytes.len());
        true
    })
    .unwrap();
    assert_eq!(sizes.len(), 4);
    assert!(sizes.iter().all(|&n| n <= 4096), "{sizes:?}");
    log.close().await.unwrap();
    drop(log);

    let report = verify(
        tmp.path(),
        VerifyOptions {
            request_id: Some("big".into()),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.records, 4);
    assert_eq!(report.inclusion.unwrap().seq, 2);
    let log = AuditLog::open(tmp.path(), signer(), cfg).unwrap();
    assert_eq!(log.read(2).unwrap(), stored);
}

#[tokio::test]
async fn record_size_limits_below_the_floor_are_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    for cfg in [
        AuditConfig {
            max_record_bytes: MIN_RECORD_BYTES - 1,
            ..config()
        },
        AuditConfig {
            max_record_bytes: segment::MAX_RECORD_BYTES + 1,
            ..config()
        },
        AuditConfig {
            field_limits: FieldLimits {
                text_chars: 10,
                ..FieldLimits::default()
            },
            ..config()
        },
    ] {
        assert!(matches!(
            AuditLog::open(tmp.path(), signer(), cfg),
            Err(AuditError::Config(_))
        ));
    }
}

#[tokio::test]
async fn free_space_is_measured_at_most_once_per_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = FakeDisk::new(10 * 1024 * MIB);
    let cfg = AuditConfig {
        min_free_bytes: 64 * MIB,
        free_space: disk.clone(),
        free_space_check_interval: Duration::from_secs(3600),
        ..config()
    };
    let log = filled_log(tmp.path(), 200, cfg).await;
    assert_eq!(disk.probes(), 1, "one measurement, not one per record");
    assert_eq!(log.free_bytes(), Some(10 * 1024 * MIB));

    // Close to the reserve, the bytes the log writes itself trigger a new measurement.
    let tmp = tempfile::tempdir().unwrap();
    let disk = FakeDisk::new(64 * MIB + 4000);
    let cfg = AuditConfig {
        min_free_bytes: 64 * MIB,
        free_space: disk.clone(),
        free_space_check_interval: Duration::from_secs(3600),
        ..config()
    };
    let log = filled_log(tmp.path(), 40, cfg).await;
    assert!(disk.probes() > 1 && disk.probes() < 40, "{}", disk.probes());
    drop(log);
}

#[tokio::test]
async fn low_free_space_refuses_appends_without_writing_and_recovers_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let disk = FakeDisk::new(100 * MIB);
    let cfg = AuditConfig {
        min_free_bytes: 8 * MIB,
        free_space: disk.clone(),
        free_space_check_interval: Duration::ZERO,
        retry_interval: Duration::from_millis(20),
        ..config()
    };
    let log = filled_log(&dir, 3, cfg).await;
    let len = segment_len(&dir);

    disk.set(5 * MIB);
    for i in 0..3 {
        match log.append(record(3 + i)).await {
            Err(AuditError::DiskFull {
                free_bytes,
                reserve_bytes,
            }) => {
                assert_eq!((free_bytes, reserve_bytes), (5 * MIB, 8 * MIB));
            }
            other => panic!("expected DiskFull, got {other:?}"),
        }
    }
    let message = AuditError::DiskFull {
        free_bytes: 5,
        reserve_bytes: 8,
    }
    .to_string();
    assert!(message.contains("5 bytes free") && message.contains("8 must stay free"));
    assert!(!log.is_healthy());
    assert_eq!(log.health(), AuditHealth::LowDiskSpace);
    assert_eq!(log.space_refusals(), 3);
    assert_eq!(log.free_bytes(), Some(5 * MIB));
    assert_eq!(log.size(), 3);
    assert_eq!(
        segment_len(&dir),
        len,
        "nothing of a refused record is written"
    );
    assert_eq!(
        recovered_copy_size(&dir, &tmp.path().join("copy1")),
        (3, len)
    );

    // Space returns: the next append is written, with the next seq, without reopening.
    disk.set(100 * MIB);
    assert_eq!(log.append(record(3)).await.unwrap(), 3);
    assert!(log.is_healthy());

    // And with no append at all, the writer notices by itself (a broker out of rotation
    // because /readyz failed gets no requests to trigger it).
    disk.set(0);
    assert!(matches!(
        log.append(record(4)).await,
        Err(AuditError::DiskFull { .. })
    ));
    assert!(!log.is_healthy());
    disk.set(100 * MIB);
    eventually("recovery without appends", || log.is_healthy()).await;
    assert_eq!(log.append(record(4)).await.unwrap(), 4);
    log.close().await.unwrap();
    let report = verify(&dir, VerifyOptions::default()).unwrap();
    assert_eq!(report.records, 5);
}

#[tokio::test]
async fn a_failed_write_is_truncated_away_and_the_log_recovers_with_contiguous_seqs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let cfg = AuditConfig {
        retry_interval: Duration::from_secs(3600),
        ..config()
    };
    let log = filled_log(&dir, 5, cfg).await;
    let len = segment_len(&dir);

    // Half a batch reaches the disk, then the disk is full.
    log.inject(InjectedFailure::PartialWrite);
    assert!(matches!(
        log.append(record(5)).await,
        Err(AuditError::Unavailable)
    ));
    assert_eq!(log.health(), AuditHealth::Recovering);
    assert_eq!(segment_len(&dir), len, "the half record was truncated away");
    // Every byte reached the disk, then the sync failed: none of it may stay either.
    log.inject(InjectedFailure::Sync);
    assert!(matches!(
        log.append(record(5)).await,
        Err(AuditError::Unavailable)
    ));
    assert_eq!(segment_len(&dir), len);
    assert_eq!(log.size(), 5);
    assert_eq!(
        recovered_copy_size(&dir, &tmp.path().join("copy1")),
        (5, len)
    );
    // A checkpoint that fails leaves checkpoints.log as it was.
    let cp_path = dir.join(segment::CHECKPOINTS_FILE);
    let cp_before = std::fs::read(&cp_path).unwrap();
    log.inject_write_failure();
    assert!(log.checkpoint_now().await.is_err());
    assert_eq!(std::fs::read(&cp_path).unwrap(), cp_before);

    log.inject(InjectedFailure::Nothing);
    let mut tasks = Vec::new();
    for i in 5..25u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(
            async move { log.append(record(i)).await.unwrap() },
        ));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (5..25).collect::<Vec<_>>(), "no gap, no duplicate");
    assert!(log.is_healthy());
    assert!(log.write_failures() >= 3);
    log.checkpoint_now().await.unwrap();
    log.close().await.unwrap();
    drop(log);

    let log = AuditLog::open(&dir, signer(), config()).unwrap();
    assert_eq!(log.size(), 25);
    let mut next = 0;
    log.scan(&AuditQuery::default(), |r, _| {
        assert_eq!(r.seq, next);
        next += 1;
        true
    })
    .unwrap();
    assert_eq!(next, 25);
    log.close().await.unwrap();
    let report = verify(&dir, VerifyOptions::default()).unwrap();
    assert_eq!(report.records, 25);
    assert_eq!(report.unsigned_records, 0);
}

#[tokio::test]
async fn after_a_failed_write_the_writer_tests_the_disk_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        retry_interval: Duration::from_millis(20),
        ..config()
    };
    let log = filled_log(tmp.path(), 2, cfg).await;
    log.inject_write_failure();
    assert!(log.append(record(2)).await.is_err());
    // While the disk still fails, the writer's own tests fail too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(log.health(), AuditHealth::Recovering);
    log.inject(InjectedFailure::Nothing);
    eventually("the disk test to pass", || log.is_healthy()).await;
    assert!(!tmp.path().join(segment::PROBE_FILE).exists());
    assert_eq!(log.append(record(2)).await.unwrap(), 2);
    log.close().await.unwrap();
    verify(tmp.path(), VerifyOptions::default()).unwrap();
}

/// A 2 MiB tmpfs mounted for one test, unmounted on drop (also when the test fails).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `None` unless running as root on Linux and the mount succeeds.
    fn mount(path: &Path) -> Option<Tmpfs> {
        use std::os::unix::fs::MetadataExt as _;
        if !cfg!(target_os = "linux") || std::fs::metadata("/proc/self").ok()?.uid() != 0 {
            return None;
        }
        std::fs::create_dir_all(path).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for _ in 0..20 {
            let unmounted = std::process::Command::new("umount")
                .arg(&self.path)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if unmounted {
                return;
            }
            // The writer thread may still be closing its files.
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills the file system of `dir` with `filler` until at most `leave` bytes are free.
fn fill(dir: &Path, filler: &Path, leave: u64) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(filler).unwrap();
    let chunk = vec![0xA5u8; 16 * 1024];
    while StatvfsFreeSpace.free_bytes(dir).unwrap() > leave {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // Top up byte by byte-ish so a tiny final write really finds the disk full.
    if leave == 0 {
        while f.write_all(&chunk[..512]).is_ok() {}
    }
    let _ = f.sync_all();
}

#[tokio::test]
async fn a_really_full_file_system_is_refused_then_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("tmpfs");
    let Some(_tmpfs) = Tmpfs::mount(&mount) else {
        eprintln!(
            "skipped a_really_full_file_system_is_refused_then_recovered: \
             needs root on Linux and a tmpfs mount"
        );
        return;
    };
    let filler = mount.join("filler");

    // The guard: refused below the reserve, nothing written, back when the filler goes.
    let dir = mount.join("guarded");
    let cfg = AuditConfig {
        min_free_bytes: 256 * 1024,
        free_space_check_interval: Duration::ZERO,
        ..config()
    };
    let log = filled_log(&dir, 5, cfg).await;
    let len = segment_len(&dir);
    fill(&mount, &filler, 128 * 1024);
    assert!(matches!(
        log.append(record(5)).await,
        Err(AuditError::DiskFull { .. })
    ));
    assert_eq!(log.health(), AuditHealth::LowDiskSpace);
    assert_eq!(segment_len(&dir), len);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(log.append(record(5)).await.unwrap(), 5);
    assert!(log.is_healthy());
    log.close().await.unwrap();
    drop(log);
    verify(&dir, VerifyOptions::default()).unwrap();

    // Without the guard the write itself fails (ENOSPC), possibly half done; the segment is
    // cut back, and once space is freed the log goes on with the next seq.
    let dir = mount.join("unguarded");
    let cfg = AuditConfig {
        min_free_bytes: 0,
        retry_interval: Duration::from_secs(3600),
        ..config()
    };
    let log = filled_log(&dir, 3, cfg).await;
    fill(&mount, &filler, 0);
    let mut next = 3;
    let mut failed_at_len = None;
    // The first appends go into the zeros the writer wrote ahead (1 MiB) before the disk
    // filled: the write that needs new space fails.
    for _ in 0..10_000 {
        let len = segment_len(&dir);
        let mut r = record(next);
        r.outcome = "x".repeat(200);
        match log.append(r).await {
            Ok(seq) => {
                assert_eq!(seq, next);
                next += 1;
            }
            Err(AuditError::Unavailable) => {
                failed_at_len = Some(len);
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let len = failed_at_len.expect("a write on a full file system fails");
    assert_eq!(log.health(), AuditHealth::Recovering);
    assert_eq!(segment_len(&dir), len, "no partial record is left");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(log.append(record(next)).await.unwrap(), next);
    assert!(log.is_healthy());
    log.close().await.unwrap();
    drop(log);
    let report = verify(&dir, VerifyOptions::default()).unwrap();
    assert_eq!(report.records, next + 1);
}

#[tokio::test]
async fn appends_go_into_zeros_written_ahead_and_a_clean_stop_cuts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let log = filled_log(tmp.path(), 1, config()).await;
    let seg = only_segment(tmp.path());
    let file_len = std::fs::metadata(&seg).unwrap().len();
    assert!(file_len >= segment_len(tmp.path()) + crate::log::WRITE_AHEAD_BYTES);
    for i in 1..40 {
        assert_eq!(log.append(record(i)).await.unwrap(), i);
    }
    // The file did not grow: the records went into the zeros (no size change to sync).
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), file_len);
    let records = segment_len(tmp.path());
    log.close().await.unwrap();
    drop(log);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), records);
    assert_eq!(
        verify(tmp.path(), VerifyOptions::default())
            .unwrap()
            .records,
        40
    );
}

#[tokio::test]
async fn a_crashed_log_with_zeros_ahead_verifies_and_recovers_every_record() {
    let (_tmp, crashed) = crashed_copy(10, 5).await;
    let seg = only_segment(&crashed);
    let written = std::fs::read(&seg).unwrap();
    let records = records_end(&written);
    assert!(written.len() > records);
    // The offline verifier accepts the zeros after the last record of the last segment.
    assert_eq!(
        verify(&crashed, VerifyOptions::default()).unwrap().records,
        15
    );
    let log = AuditLog::open(&crashed, signer(), config()).unwrap();
    assert_eq!(log.size(), 15);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, records);
    assert_eq!(log.append(record(15)).await.unwrap(), 15);
    log.close().await.unwrap();
    assert_eq!(
        verify(&crashed, VerifyOptions::default()).unwrap().records,
        16
    );
}

#[tokio::test]
async fn a_torn_batch_before_the_zeros_is_cut_and_anything_else_there_is_damage() {
    let (tmp, crashed) = crashed_copy(10, 5).await;
    let seg = only_segment(&crashed);
    let written = std::fs::read(&seg).unwrap();
    let records = records_end(&written);

    // A batch whose write stopped half way, inside the zeros: never acknowledged, cut.
    let mut frame = Vec::new();
    crate::segment::encode_frame(br#"{"seq":15}"#, &mut frame);
    let case = tmp.path().join("torn");
    copy_dir(&crashed, &case);
    let mut torn = written.clone();
    torn[records..records + frame.len() / 2].copy_from_slice(&frame[..frame.len() / 2]);
    std::fs::write(only_segment(&case), &torn).unwrap();
    let log = AuditLog::open(&case, signer(), config()).unwrap();
    assert_eq!(log.size(), 15);
    assert_eq!(
        std::fs::metadata(only_segment(&case)).unwrap().len() as usize,
        records
    );
    drop(log);

    // One byte changed far into the zeros: not a torn write, refused by both readers.
    let case = tmp.path().join("stray");
    copy_dir(&crashed, &case);
    let mut stray = written.clone();
    let at = written.len() - 100;
    stray[at] = 1;
    std::fs::write(only_segment(&case), &stray).unwrap();
    assert!(matches!(
        verify(&case, VerifyOptions::default()),
        Err(VerifyError::Malformed { .. })
    ));
    assert!(matches!(
        AuditLog::open(&case, signer(), config()),
        Err(AuditError::Corrupt { .. })
    ));

    // Zeros after the records of a segment that is not the last: damage too.
    let multi = tmp.path().join("multi");
    let cfg = AuditConfig {
        segment_max_bytes: 2_000,
        ..config()
    };
    let log = filled_log(&multi, 12, cfg.clone()).await;
    // While it runs, only the last segment has zeros after its records.
    let segments = list_segments(&multi).unwrap();
    assert!(segments.len() >= 2, "{segments:?}");
    for (_, path) in &segments[..segments.len() - 1] {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(records_end(&bytes), bytes.len(), "{}", path.display());
    }
    log.close().await.unwrap();
    drop(log);
    assert_eq!(
        verify(&multi, VerifyOptions::default()).unwrap().records,
        12
    );
    let first = &segments[0].1;
    let mut bytes = std::fs::read(first).unwrap();
    bytes.extend_from_slice(&[0u8; 64]);
    std::fs::write(first, &bytes).unwrap();
    assert!(matches!(
        verify(&multi, VerifyOptions::default()),
        Err(VerifyError::Malformed { .. })
    ));
    assert!(matches!(
        AuditLog::open(&multi, signer(), cfg),
        Err(AuditError::Corrupt { .. })
    ));
}
