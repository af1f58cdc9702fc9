//! Durable audit appends per second: group commit with many concurrent appenders versus
//! one `fdatasync` per small write, on the same filesystem (the system temp dir).
//!
//! Run: `cargo bench -p audit --bench append`. Besides criterion's own lines, it prints a
//! one-line summary `records/s` for each mode that can be compared run to run.

#![allow(clippy::unwrap_used, missing_debug_implementations)]

use std::fs::OpenOptions;
use std::io::Write as _;
use std::time::{Duration, Instant};

use audit::{Actor, AuditConfig, AuditLog, AuditRecord, CheckpointSigner, Decision};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const TASKS: usize = 256;
const APPENDS_PER_TASK: usize = 40;

fn sample_record(i: usize) -> AuditRecord {
    let mut r = AuditRecord::new(
        format!("req-{i}"),
        Actor {
            sub: "grid-worker-0042".into(),
            name: "王**".into(),
            roles: vec!["grid_worker".into()],
            dept: None,
        },
        "read_resident",
        "/v1/residents/{id}",
        Decision::Masked,
    );
    r.purpose = Some("routine_visit".into());
    r.client_addr = Some("10.1.2.3:50123".into());
    r.residents = vec!["b7f3c1d2e4a5968778695a4b3c2d1e0f".into()];
    r.entities = vec!["res-01HZX3K4Q9".into()];
    r.fields_clear = vec!["name".into(), "phone".into(), "address".into()];
    r.policy_version = Some("2026-11-01.3".into());
    r.result_count = 1;
    r
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One round: TASKS tasks each appending APPENDS_PER_TASK records durably.
async fn group_commit_round(log: &AuditLog) {
    let mut handles = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..APPENDS_PER_TASK {
                log.append(sample_record(t * APPENDS_PER_TASK + i))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

fn open_log(dir: &std::path::Path) -> AuditLog {
    let signer = CheckpointSigner::from_pkcs8(&CheckpointSigner::generate_pkcs8()).unwrap();
    AuditLog::open(
        dir,
        signer,
        AuditConfig {
            origin: "bench/audit".into(),
            ..AuditConfig::default()
        },
    )
    .unwrap()
}

fn summary() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path());
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(3) {
        rt.block_on(group_commit_round(&log));
        rounds += 1;
    }
    let n = rounds * TASKS * APPENDS_PER_TASK;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "SUMMARY group commit ({TASKS} tasks, default max_batch/max_delay): {n} records in {secs:.2} s = {:.0} durable records/s",
        n as f64 / secs
    );
    rt.block_on(log.close()).unwrap();

    let path = tmp.path().join("one-by-one.log");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let bytes = sample_record(0).canonical_bytes().unwrap();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(3) {
        file.write_all(&bytes).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "SUMMARY one fdatasync per record ({} B): {n} records in {secs:.2} s = {:.0} durable records/s",
        bytes.len(),
        n as f64 / secs
    );
}

fn bench_append(c: &mut Criterion) {
    summary();

    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path());
    let mut group = c.benchmark_group("durable_append");
    group.throughput(Throughput::Elements((TASKS * APPENDS_PER_TASK) as u64));
    group.bench_function("group_commit_256_tasks", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(group_commit_round(&log));
            }
            start.elapsed()
        })
    });

    let path = tmp.path().join("one-by-one.log");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let bytes = sample_record(0).canonical_bytes().unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("fdatasync_per_record", |b| {
        b.iter(|| {
            file.write_all(&bytes).unwrap();
            file.sync_data().unwrap();
        })
    });
    group.finish();
    rt.block_on(log.close()).unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench_append
}
criterion_main!(benches);
