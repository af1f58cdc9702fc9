//! Ingest through the pipeline alone (validate, resolve, seal, store; no HTTP, no followers),
//! on the demo generator's street, department by department in batches of 5,000.
//!
//! ```text
//! cargo bench -p engine --bench ingest -- [--residents 20000] [--link-latency 1000]
//! ```
//!
//! Prints records/s per department and in total. With `--link-latency N`, then estimates the
//! linkage model on the stored street and publishes N records without an ID number, one per
//! batch (a department's copy of a known person, written by 卫健 with another phone format
//! and the address in another form), and prints the time from receipt to the stored link
//! (p50, p95, max) and how many joined the right person. Profile it with
//! `valgrind --tool=callgrind target/release/deps/ingest-* --residents 3000`.

use std::sync::Arc;
use std::time::Instant;

use demo::generate::{DemoConfig, DemoWorld};
use engine::ingest::Pipeline;
use model::Department;
use vault::crypto::MasterKey;
use vault::store::Store;

const BATCH: usize = 5_000;

/// The `safegrid` binary's allocator: the pipeline allocates per field and per link, and
/// glibc's costs about a quarter of its instructions (BENCHMARKS.md, "Ingest and the demo").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut residents = 20_000usize;
    let mut link_latency = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match arg.as_str() {
            "--residents" => residents = value.unwrap_or(residents),
            "--link-latency" => link_latency = value.unwrap_or(link_latency),
            _ => {}
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
    if link_latency > 0 {
        receipt_to_link(&pipeline, &world, residents, link_latency)?;
    }
    Ok(())
}

/// Publishes `n` records without an ID number, one per batch, each a weijian copy of a
/// person gongan holds, and measures the time from receipt to the stored link.
fn receipt_to_link(
    pipeline: &Pipeline,
    world: &DemoWorld,
    residents: usize,
    n: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    pipeline
        .train_linker()?
        .ok_or_else(|| anyhow::anyhow!("too few residents to estimate a model"))?;
    println!(
        "linkage model estimated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let department = Department::parse("weijian").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut times = Vec::with_capacity(n);
    let (mut joined, mut tried) = (0usize, 0usize);
    for index in (0..residents).step_by((residents / n).max(1)).take(n) {
        let person = world.person(index);
        if !person.in_gongan {
            continue;
        }
        let address = person.address.replacen("号楼", "栋", 1);
        let record = serde_json::json!({"kind": "resident", "source_id": format!("WJ-NOID-{index}"),
            "version": "1", "name": person.name, "birth_date": person.birth_date.to_string(),
            "gender": person.gender, "address": address, "grid": person.grid});
        let body = format!("{record}\n");
        let received = Instant::now();
        pipeline.ingest(department, body.as_bytes())?;
        times.push(received.elapsed().as_secs_f64() * 1000.0);
        tried += 1;
        let snapshot = pipeline.store().read()?;
        let entity = |row: &str| snapshot.source(row).ok().flatten().map(|s| s.entity);
        let known = entity(&format!("gongan/resident/GA-{:08}", index + 1));
        if known.is_some() && known == entity(&format!("weijian/resident/WJ-NOID-{index}")) {
            joined += 1;
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "receipt to link, one record per batch: {tried} records, p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; {joined} joined the right person",
        at(0.5),
        at(0.95),
        times.last().copied().unwrap_or_default()
    );
    Ok(())
}
