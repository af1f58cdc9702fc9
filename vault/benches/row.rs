//! A stored source row written and read in the binary encoding against the JSON one it
//! replaced: the per-row cost of every profile read, search hit and ingest write.
//!
//! Run: `cargo bench -p vault --bench row`. The row is shaped like a demo resident's (nine
//! sealed fields of real ciphertext size, six links); its contents are made up here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};

use model::record::Version;
use model::{Department, RecordKind};
use vault::store::StoredSource;

fn resident() -> StoredSource {
    // Plaintext length of each field as JSON, plus the seal's version, nonce and tag.
    let sealed = [
        ("name", 11),
        ("id_number", 20),
        ("phone", 13),
        ("gender", 5),
        ("birth_date", 12),
        ("ethnicity", 6),
        ("address", 60),
        ("hukou_address", 45),
        ("tags", 30),
    ]
    .into_iter()
    .map(|(name, len)| (name.to_owned(), vec![0x5a; len + 29]))
    .collect();
    let hex64 = "9f".repeat(32);
    StoredSource {
        kind: RecordKind::Resident,
        department: Department::Gongan,
        source_id: "GA-00012345".to_owned(),
        version: Version::Time(DateTime::from_timestamp(1_790_000_000, 0).expect("time")),
        deleted: false,
        identified: true,
        entity: "r_0123456789abcdef0123".to_owned(),
        grid: Some("110105001001003".to_owned()),
        received_at: Utc::now(),
        batch_id: "b_0123456789abcdef".to_owned(),
        digest: vec![7; 32],
        clear: BTreeMap::new(),
        sealed,
        links: vec![
            "entity:r_0123456789abcdef0123".to_owned(),
            format!("blind:identity_document:{hex64}"),
            format!("block:{}", &hex64[..32]),
            format!("block:{}", &hex64[..32]),
            "occupant:h_0123456789abcdef0123".to_owned(),
        ],
    }
}

fn bench(c: &mut Criterion) {
    let row = resident();
    let key = row.key();
    let json = serde_json::to_vec(&row).expect("json");
    let binary = vault::row::encode(&row);
    println!(
        "SUMMARY row bytes: JSON {} B, binary {} B",
        json.len(),
        binary.len()
    );
    let mut group = c.benchmark_group("row");
    group.bench_function("encode/json", |b| {
        b.iter(|| serde_json::to_vec(&row).expect("json"))
    });
    group.bench_function("encode/binary", |b| b.iter(|| vault::row::encode(&row)));
    group.bench_function("decode/json", |b| {
        b.iter(|| vault::row::decode(&key, &json).expect("decode"))
    });
    group.bench_function("decode/binary", |b| {
        b.iter(|| vault::row::decode(&key, &binary).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
