//! The engine's integration tests: linkage measured on the demo crate's corrupted copies of
//! generated residents (data made by another crate than the one tuned on it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use demo::generate::{DemoConfig, DemoWorld};
use demo::synthetic::{generate, pairwise_metrics, CorruptionRates};
use engine::linkage::{resolve_batch, BatchOptions};

mod support;
use support::link_records;

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
