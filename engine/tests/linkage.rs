//! The engine's integration tests: linkage measured on the demo crate's corrupted copies of
//! generated residents (data made by another crate than the one tuned on it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use demo::generate::{DemoConfig, DemoWorld};
use demo::synthetic::{generate, pairwise_metrics, CorruptionRates, RawResident, SyntheticSet};
use engine::linkage::record::link_records as normalise_all;
use engine::linkage::{resolve_batch, BatchOptions, LinkInput, LinkRecord};

/// One synthetic copy as linkage reads it.
fn input(r: &RawResident) -> LinkInput<'_> {
    LinkInput {
        department: r.department,
        row_key: &r.row_key,
        id_number: r.id_number.as_deref(),
        name: Some(&r.name),
        birth_date: r.birth_date,
        gender: r.gender,
        phone: r.phone.as_deref(),
        address: Some(&r.address),
        grid: Some(&r.grid),
    }
}

fn link_records(set: &SyntheticSet) -> Vec<LinkRecord> {
    let inputs: Vec<LinkInput<'_>> = set.residents.iter().map(input).collect();
    normalise_all(&inputs)
}

#[test]
fn small_world_resolves_well_with_ids() {
    let world = DemoWorld::new(DemoConfig {
        residents: 3_000,
        ..DemoConfig::default()
    });
    let set = generate(&world, 0..3_000, &CorruptionRates::mostly_with_ids(), 11);
    let records = link_records(&set);
    let resolution = resolve_batch(&records, &BatchOptions::default());
    let metrics = pairwise_metrics(&resolution.cluster_of, &set.truth);
    assert!(metrics.f1 >= 0.98, "{metrics:?}");
    // The hard constraint holds in the output.
    let mut id_of_cluster: HashMap<u32, &str> = HashMap::new();
    for (record, &c) in records.iter().zip(&resolution.cluster_of) {
        if let Some(id) = record.valid_id() {
            let seen = id_of_cluster.entry(c).or_insert(id);
            assert_eq!(*seen, id, "a cluster holds two valid ID numbers");
        }
    }
}
