//! Probabilistic entity resolution for residents beyond the exact ID number: records without
//! an ID number (or with an invalid one) are matched by name, pinyin, birth date, phone and
//! address with a Fellegi–Sunter model whose weights EM estimates on the data itself.
//!
//! A pure algorithm: no store, no keys, no I/O. The pipeline is
//! [`LinkRecord`] (normalise once) -> [`blocking_keys`] / [`Blocker`] (which pairs to compare)
//! -> [`ComparisonVector`] (a level per field) -> [`LinkageModel`] (weights by EM; thresholds
//! from the precision estimated on the pairs valid ID numbers label, [`calibration`];
//! [`Decision`]) -> [`cluster`] (union-find); [`resolve_batch`] runs all of it over a batch,
//! and the demo crate's `synthetic` module makes corrupted department copies of demo persons
//! to measure it.
//!
//! Guarantees, whatever the data:
//! - **Two different valid ID numbers never merge**: [`LinkageModel::decide`] says
//!   [`Decision::Distinct`] for such a pair, and [`cluster`] refuses any link that would put
//!   two different valid numbers into one cluster.
//! - **The same valid ID number always merges** (15-digit legacy numbers are upgraded first),
//!   as the deterministic ingest path already does.
//! - Nothing here panics on input data; a field that cannot be read is unknown, and an unknown
//!   field is no evidence either way.
//! - Deterministic: the same records and settings give the same model, links and clusters.

pub mod address;
pub mod blocking;
pub mod calibration;
pub mod cluster;
pub mod compare;
pub mod fellegi_sunter;
pub mod record;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use address::AddressParts;
pub use blocking::{blocking_keys, shared_key_kinds, Blocker, CandidatePairs, KeyHashes, KeyKinds};
pub use calibration::{Calibration, LabelCounts, LabelledPairs, Scorer};
pub use cluster::{cluster, Clusters};
pub use compare::{ComparisonVector, Field, IdRelation};
pub use fellegi_sunter::{
    estimate_u_from_random_pairs, Decision, EmSettings, EstimateSource, LinkRule, LinkageModel,
    ModelEstimate, ReviewRule, ThresholdChoice, Thresholds,
};
pub use record::{LinkInput, LinkRecord};

/// Settings of a batch resolution.
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    pub blocker: Blocker,
    pub em: EmSettings,
    /// Estimate `u` from this many random pairs and keep it fixed during EM (0: let EM
    /// estimate `u` on the candidate pairs).
    pub random_u_samples: usize,
    /// Labelled pairs from outside the batch (e.g. [`LabelledPairs::from_records`] of other
    /// records of the same sources that carry valid ID numbers), added to the batch's own
    /// for calibrating the thresholds; EM does not see them.
    pub labelled: LabelledPairs,
}

/// A pair with its match weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    pub a: u32,
    pub b: u32,
    pub weight: f64,
}

/// Counts and timings of a batch resolution.
#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    pub records: usize,
    pub candidate_pairs: usize,
    pub oversized_blocks: usize,
    pub auto_links: usize,
    pub reviews: usize,
    pub refused_links: usize,
    pub blocking: Duration,
    pub comparing: Duration,
    pub estimating: Duration,
    pub clustering: Duration,
}

/// The outcome of resolving a batch.
#[derive(Debug, Clone)]
pub struct BatchResolution {
    /// `cluster_of[i]`: the smallest record index in record `i`'s entity.
    pub cluster_of: Vec<u32>,
    pub model: LinkageModel,
    /// Pairs between the thresholds, for the review queue (not merged).
    pub reviews: Vec<ScoredPair>,
    pub stats: BatchStats,
}

/// Resolves a batch end to end: blocking, comparison, EM, decision, clustering.
pub fn resolve_batch(records: &[LinkRecord], options: &BatchOptions) -> BatchResolution {
    let mut stats = BatchStats {
        records: records.len(),
        ..BatchStats::default()
    };
    let started = Instant::now();
    let candidates = options.blocker.candidate_pairs(records);
    stats.candidate_pairs = candidates.pairs.len();
    stats.oversized_blocks = candidates.oversized_blocks;
    stats.blocking = started.elapsed();

    let started = Instant::now();
    let keys = compare_pairs(records, &candidates.pairs);
    stats.comparing = started.elapsed();

    let started = Instant::now();
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for key in &keys {
        *counts.entry(*key).or_insert(0) += 1;
    }
    let mut settings = options.em.clone();
    if options.random_u_samples > 0 && settings.fixed_u.is_none() {
        settings.fixed_u = Some(estimate_u_from_random_pairs(
            records,
            options.random_u_samples,
            0x5afe_941d,
        ));
    }
    // The review budget is a share of the records the weights decide about.
    let without_id = records.iter().filter(|r| r.valid_id().is_none()).count();
    // The candidate pairs two valid ID numbers label, compared without them.
    let mut labelled = LabelledPairs::from_candidates(records, &candidates.pairs, &keys);
    labelled.extend(&options.labelled);
    let model =
        LinkageModel::estimate_from_counts(&counts, &labelled, without_id as u64, &settings);
    let decisions: HashMap<u64, (Decision, f64)> = counts
        .keys()
        .map(|&key| {
            let vector = ComparisonVector::from_key(key);
            let weight = model.vector_weight(&vector);
            (key, (model.decide_vector(&vector), weight))
        })
        .collect();
    stats.estimating = started.elapsed();

    let started = Instant::now();
    let mut links = Vec::new();
    let mut reviews = Vec::new();
    for (&(a, b), key) in candidates.pairs.iter().zip(&keys) {
        let Some(&(decision, weight)) = decisions.get(key) else {
            continue;
        };
        match decision {
            Decision::Link => links.push((a, b, weight)),
            Decision::Review => reviews.push(ScoredPair { a, b, weight }),
            Decision::Distinct => {}
        }
    }
    stats.auto_links = links.len();
    stats.reviews = reviews.len();
    let clusters = cluster(records, &mut links);
    stats.refused_links = clusters.refused_links;
    stats.clustering = started.elapsed();
    BatchResolution {
        cluster_of: clusters.cluster_of,
        model,
        reviews,
        stats,
    }
}

/// Comparison-vector keys of every pair, on every core.
fn compare_pairs(records: &[LinkRecord], pairs: &[(u32, u32)]) -> Vec<u64> {
    // A pair outside the batch (impossible from the blocker) compares as all-unknown.
    let unknown = ComparisonVector {
        levels: [compare::NULL_LEVEL; compare::FIELDS],
        ids: IdRelation::Undetermined,
    }
    .key();
    let compare = |&(a, b): &(u32, u32)| -> u64 {
        match (records.get(a as usize), records.get(b as usize)) {
            (Some(x), Some(y)) => ComparisonVector::compare(x, y).key(),
            _ => unknown,
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || pairs.len() < 100_000 {
        return pairs.iter().map(compare).collect();
    }
    let chunk = pairs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(compare).collect::<Vec<u64>>()))
            .collect();
        let mut out = Vec::with_capacity(pairs.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
