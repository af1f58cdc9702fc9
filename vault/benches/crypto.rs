//! Field sealing, opening and blind indexes: the per-field costs of the ingest and read paths.
//!
//! Run: `cargo bench -p broker --bench crypto`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ring::rand::SystemRandom;

use model::Department;
use vault::crypto::{FieldContext, KeyMaterial, KeyRing, SecretKey};

fn key_ring() -> KeyRing {
    let rng = SystemRandom::new();
    let key = || SecretKey::generate(&rng).expect("system random works");
    KeyRing::new(KeyMaterial {
        data_keys: vec![(Department::Gongan, 1, key())],
        blind_index: (1, key()),
        blind_index_retiring: Vec::new(),
        entity_id: key(),
        audit_subject: key(),
    })
}

fn bench(c: &mut Criterion) {
    let keys = key_ring();
    let ctx = FieldContext {
        department: Department::Gongan,
        row: "gongan/resident/GA-000123",
        field: "name",
    };
    let mut group = c.benchmark_group("field");
    for size in [16usize, 64, 512] {
        let plaintext = vec![b'x'; size];
        let sealed = keys.seal(ctx, &plaintext).expect("seal");
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
            b.iter(|| keys.seal(ctx, p).expect("seal"))
        });
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| keys.open(ctx, s).expect("open"))
        });
    }
    group.finish();
    c.bench_function("blind_index/id_number", |b| {
        b.iter(|| keys.blind_index("id_number", "11010519491231002X"))
    });
    c.bench_function("blind_index/phone", |b| {
        b.iter(|| keys.blind_index("phone", "13812345678"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
