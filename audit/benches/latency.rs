//! Added latency per request from the audit log: how long one durable `append` takes, as a
//! distribution (p50 / p90 / p99 / max), under light and heavier load, for three
//! group-commit policies: always linger 2 ms for more records (the previous default), never
//! linger (batches form only while the previous sync runs), and the adaptive default (linger
//! only once batches reach `linger_min_batch`).
//!
//! Run: `cargo bench -p audit --bench latency` (about 30 s). Prints one `LATENCY` line per
//! scenario; the figures are per append, measured from the call to the durable reply, on the
//! filesystem of the system temp dir (set TMPDIR to measure another disk).

#![allow(clippy::unwrap_used, missing_debug_implementations)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit::{Actor, AuditConfig, AuditLog, AuditRecord, CheckpointSigner, Decision};

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
    r.entities = vec!["r_01234567890123456789".into()];
    r.fields_clear = vec!["name".into(), "phone".into(), "address".into()];
    r.policy_version = Some("sha256:0011223344556677".into());
    r.result_count = 1;
    r
}

fn open_log(dir: &std::path::Path, max_delay: Duration, linger_min_batch: usize) -> AuditLog {
    let signer = CheckpointSigner::from_pkcs8(&CheckpointSigner::generate_pkcs8()).unwrap();
    AuditLog::open(
        dir,
        signer,
        AuditConfig {
            origin: "bench/audit".into(),
            max_delay,
            linger_min_batch,
            ..AuditConfig::default()
        },
    )
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `tasks` appenders, each appending, then pausing `pause` (open-ish loop), for `run`.
async fn scenario(
    log: &AuditLog,
    tasks: usize,
    pause: Duration,
    run: Duration,
) -> (Vec<Duration>, f64) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        let samples = samples.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = 0;
            while start.elapsed() < run {
                let began = Instant::now();
                log.append(sample_record(t * 1_000_000 + i)).await.unwrap();
                mine.push(began.elapsed());
                i += 1;
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            samples.lock().unwrap().extend(mine);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let mut all = samples.lock().unwrap().clone();
    all.sort();
    let rate = all.len() as f64 / secs;
    (all, rate)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    let quick = std::env::args().any(|a| a == "--quick");
    let run = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scenarios: [(&str, usize, Duration); 4] = [
        ("1 appender, back to back", 1, Duration::ZERO),
        (
            "8 appenders, 5 ms apart each (light)",
            8,
            Duration::from_millis(5),
        ),
        (
            "64 appenders, 5 ms apart each",
            64,
            Duration::from_millis(5),
        ),
        (
            "256 appenders, back to back (saturated)",
            256,
            Duration::ZERO,
        ),
    ];
    let default = AuditConfig::default();
    let policies = [
        ("always linger 2 ms", Duration::from_millis(2), 0),
        ("never linger", Duration::ZERO, usize::MAX),
        (
            "adaptive (default)",
            default.max_delay,
            default.linger_min_batch,
        ),
    ];
    for (policy, max_delay, linger_min_batch) in policies {
        for (name, tasks, pause) in scenarios {
            let tmp = tempfile::tempdir().unwrap();
            let log = open_log(tmp.path(), max_delay, linger_min_batch);
            let (samples, rate) = rt.block_on(scenario(&log, tasks, pause, run));
            println!(
                "LATENCY {policy} | {name} | n={} | {:.0} appends/s | p50 {:.2} ms | p90 {:.2} ms | p99 {:.2} ms | max {:.2} ms",
                samples.len(),
                rate,
                ms(percentile(&samples, 0.50)),
                ms(percentile(&samples, 0.90)),
                ms(percentile(&samples, 0.99)),
                ms(percentile(&samples, 1.0)),
            );
            rt.block_on(log.close()).unwrap();
        }
    }
}
