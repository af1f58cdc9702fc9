//! Ingest through the pipeline alone (validate, resolve, seal, store; no HTTP, no followers),
//! on the demo generator's street, department by department in batches of 5,000.
//!
//! ```text
//! cargo bench -p broker --bench ingest -- [--residents 20000]
//! ```
//!
//! Prints records/s per department and in total. Profile it with
//! `valgrind --tool=callgrind target/release/deps/ingest-* --residents 3000`.

use std::sync::Arc;
use std::time::Instant;

use demo::generate::{DemoConfig, DemoWorld};
use engine::ingest::Pipeline;
use model::Department;
use vault::crypto::MasterKey;
use vault::store::Store;

const BATCH: usize = 5_000;

fn main() -> anyhow::Result<()> {
    let mut residents = 20_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--residents" {
            residents = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(residents);
        }
    }
    let dir = tempfile::tempdir()?;
    let master = MasterKey::load(Some(&dir.path().join("master.key")), true)?;
    let store = Arc::new(Store::open(&dir.path().join("store.redb"))?);
    let keys = Arc::new(vault::keys::load_key_ring(&store, &master)?);
    let world = DemoWorld::new(DemoConfig {
        residents,
        seed: 2026,
        bad_record_rate: 0.0,
    });
    let pipeline = Pipeline::new(store, keys);
    let mut total_records = 0usize;
    let mut total_seconds = 0f64;
    for code in ["zhujian", "gongan", "minzheng", "weijian", "sifa", "wangge"] {
        let department = Department::parse(code).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let bodies: Vec<String> = (0..residents)
            .step_by(BATCH)
            .map(|start| world.ndjson(code, start..(start + BATCH).min(residents)))
            .collect();
        let started = Instant::now();
        let mut records = 0;
        for body in &bodies {
            records += pipeline.ingest(department, body.as_bytes())?.accepted;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{code:>9}: {records:>8} records in {seconds:>6.2} s = {:>7.0} records/s",
            records as f64 / seconds
        );
        total_records += records;
        total_seconds += seconds;
    }
    println!(
        "{:>9}: {total_records:>8} records in {total_seconds:>6.2} s = {:>7.0} records/s",
        "all",
        total_records as f64 / total_seconds
    );
    Ok(())
}
