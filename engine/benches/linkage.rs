//! Linkage evaluation and timing: pairwise precision / recall / F1 of probabilistic resident
//! resolution on corrupted department copies of the demo world, and the wall time of
//! resolving a large batch end to end.
//!
//! `cargo bench -p engine --bench linkage` runs the default sizes;
//! `cargo bench -p engine --bench linkage -- --persons 20000 --records 1000000` sets them
//! (`--records 0` skips the timing run).

use std::time::{Duration, Instant};

use demo::generate::{DemoConfig, DemoWorld};
use demo::synthetic::{generate, pairwise_metrics, CorruptionRates, SyntheticSet};
use engine::linkage::{resolve_batch, BatchOptions, BatchResolution, LinkRecord};

#[path = "../tests/support/mod.rs"]
mod support;
use support::link_records;

struct Args {
    persons: usize,
    records: usize,
    seed: u64,
}

fn args() -> Args {
    let mut out = Args {
        persons: 40_000,
        records: 1_000_000,
        seed: 2026,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |target: &mut usize| {
            if let Some(v) = it.next().and_then(|v| v.replace('_', "").parse().ok()) {
                *target = v;
            }
        };
        match arg.as_str() {
            "--persons" => value(&mut out.persons),
            "--records" => value(&mut out.records),
            "--seed" => {
                let mut seed = 0;
                value(&mut seed);
                out.seed = seed as u64;
            }
            _ => {} // `--bench` and filters from cargo
        }
    }
    out
}

struct Row {
    scenario: String,
    set_records: usize,
    persons: usize,
    with_id: f64,
    /// Review pairs per record without a valid ID number.
    review_share: f64,
    resolution: BatchResolution,
    metrics: demo::synthetic::PairMetrics,
    review_true: usize,
    normalise: Duration,
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn run(scenario: &str, set: &SyntheticSet, options: &BatchOptions) -> Row {
    let started = Instant::now();
    let records: Vec<LinkRecord> = link_records(set);
    let normalise = started.elapsed();
    let resolution = resolve_batch(&records, options);
    let metrics = pairwise_metrics(&resolution.cluster_of, &set.truth);
    let review_true = resolution
        .reviews
        .iter()
        .filter(|p| set.truth.get(p.a as usize) == set.truth.get(p.b as usize))
        .count();
    let with_valid_id = records.iter().filter(|r| r.valid_id().is_some()).count();
    let with_id = with_valid_id as f64 / records.len().max(1) as f64;
    let without_id = records.len() - with_valid_id;
    let review_share = resolution.reviews.len() as f64 / without_id.max(1) as f64;
    Row {
        scenario: scenario.to_owned(),
        set_records: records.len(),
        persons: set.persons,
        with_id,
        review_share,
        resolution,
        metrics,
        review_true,
        normalise,
    }
}

fn print_quality(rows: &[Row]) {
    println!(
        "| scenario | records | persons | with valid ID | true pairs | candidate pairs | auto links | review pairs (true) | review per ID-less record | precision | recall | F1 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let s = &row.resolution.stats;
        println!(
            "| {} | {} | {} | {:.0}% | {} | {} | {} | {} ({}) | {:.2}% | {:.4} | {:.4} | {:.4} |",
            row.scenario,
            row.set_records,
            row.persons,
            row.with_id * 100.0,
            row.metrics.true_pairs,
            s.candidate_pairs,
            s.auto_links,
            s.reviews,
            row.review_true,
            row.review_share * 100.0,
            row.metrics.precision,
            row.metrics.recall,
            row.metrics.f1,
        );
    }
}

fn print_timing(rows: &[Row]) {
    println!(
        "| scenario | records | normalise s | blocking s | compare s | EM s | cluster s | total s | candidate pairs | oversized blocks | EM rounds |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let s = &row.resolution.stats;
        let total = row.normalise + s.blocking + s.comparing + s.estimating + s.clustering;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.set_records,
            secs(row.normalise),
            secs(s.blocking),
            secs(s.comparing),
            secs(s.estimating),
            secs(s.clustering),
            secs(total),
            s.candidate_pairs,
            s.oversized_blocks,
            row.resolution.model.iterations,
        );
    }
}

fn print_model(row: &Row) {
    let model = &row.resolution.model;
    println!(
        "model of {}: prior {:.4}, thresholds lower {:.2} / upper {:.2} bits, {} EM rounds, converged {}; its own estimate: precision {:.4}, recall {:.4}, review share {:.4} of pairs (measured: precision {:.4}, recall {:.4})",
        row.scenario,
        model.prior,
        model.thresholds.lower,
        model.thresholds.upper,
        model.iterations,
        model.converged,
        model.estimate.precision,
        model.estimate.recall,
        model.estimate.review_share,
        row.metrics.precision,
        row.metrics.recall,
    );
    for field in engine::linkage::Field::ALL {
        let weights: Vec<String> = field
            .level_names()
            .iter()
            .enumerate()
            .map(|(l, name)| format!("{name} {:+.1}", model.level_weight(field, l as u8)))
            .collect();
        println!("  {:<10} {}", field.as_str(), weights.join(", "));
    }
}

fn main() {
    let args = args();
    let options = BatchOptions::default();

    let world = DemoWorld::new(DemoConfig {
        residents: args.persons.max(1),
        seed: args.seed,
        bad_record_rate: 0.0,
    });
    let with_ids = generate(
        &world,
        0..args.persons,
        &CorruptionRates::mostly_with_ids(),
        args.seed,
    );
    let without_ids = generate(
        &world,
        0..args.persons,
        &CorruptionRates::mostly_without_ids(),
        args.seed,
    );
    let none = CorruptionRates {
        gongan_missing_id: 1.0,
        other_missing_id: 1.0,
        ..CorruptionRates::mostly_with_ids()
    };
    let no_ids_at_all = generate(&world, 0..args.persons, &none, args.seed);
    // Data made differently from what the thresholds were chosen on: another generator seed
    // (other people, names, addresses), heavier corruption, and a subset that holds only
    // names and addresses.
    let other_seed = args.seed.wrapping_mul(31).wrapping_add(7);
    let other_world = DemoWorld::new(DemoConfig {
        residents: args.persons.max(1),
        seed: other_seed,
        bad_record_rate: 0.0,
    });
    let harsher = CorruptionRates {
        gongan_missing_id: 1.0,
        other_missing_id: 1.0,
        homophone: 0.15,
        near_homophone: 0.06,
        traditional: 0.15,
        missing_birth_date: 0.25,
        mistyped_birth_date: 0.05,
        missing_phone: 0.40,
        changed_phone: 0.15,
        phone_typo: 0.08,
        phone_transposition: 0.03,
        moved: 0.15,
        missing_gender: 0.10,
        ..CorruptionRates::mostly_with_ids()
    };
    let harsher_set = generate(&other_world, 0..args.persons, &harsher, other_seed);
    let address_only = CorruptionRates {
        missing_birth_date: 1.0,
        missing_phone: 1.0,
        ..none.clone()
    };
    let address_only_set = generate(&other_world, 0..args.persons, &address_only, other_seed);
    let rows = vec![
        run("(a) mostly with IDs", &with_ids, &options),
        run("(b) no-ID subset (95% without)", &without_ids, &options),
        run("(c) no IDs at all", &no_ids_at_all, &options),
        run(
            "(d) another seed, no IDs, harsher corruption",
            &harsher_set,
            &options,
        ),
        run(
            "(e) another seed, names and addresses only",
            &address_only_set,
            &options,
        ),
    ];
    println!("## Linkage quality (pairwise, auto links only; review pairs count as not linked)\n");
    print_quality(&rows);
    println!();
    for row in &rows {
        print_model(row);
    }

    if args.records > 0 {
        // About 1.85 copies per person: size the world a little larger, then cut the batch
        // to exactly `records` copies.
        let persons = args.records * 10 / 17;
        let world = DemoWorld::new(DemoConfig {
            residents: persons,
            seed: args.seed,
            bad_record_rate: 0.0,
        });
        let started = Instant::now();
        let mut large = generate(
            &world,
            0..persons,
            &CorruptionRates::mostly_with_ids(),
            args.seed,
        );
        large.residents.truncate(args.records);
        large.truth.truncate(args.records);
        let generated = started.elapsed();
        let row = run("(a) mostly with IDs, large", &large, &options);
        println!(
            "\n## Resolution time ({} threads; generating the copies took {} s, not counted)\n",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            secs(generated)
        );
        print_timing(std::slice::from_ref(&row));
        println!();
        print_quality(std::slice::from_ref(&row));
    }
}
