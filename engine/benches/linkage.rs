//! Linkage evaluation and timing: pairwise precision / recall / F1 of probabilistic resident
//! resolution on corrupted department copies of the demo world under three threshold rules —
//! the fixed floors (posterior 0.5 / 0.05), the thresholds from the model's own estimate, and
//! the thresholds from the precision estimated on candidate pairs that valid ID numbers label
//! (the default) —, each estimate next to what the truth says, the same copies decided the way
//! ingest decides (a link no second field corroborates needs the threshold measured for such
//! pairs alone), next to other rules for those links ([`IngestVariant`]), and the wall time of
//! resolving a large batch end to end.
//!
//! Scenarios (b)–(e) hold few or no ID numbers. The broker they stand for also holds the
//! household register and the other departments' records that do carry ID numbers; that is
//! where its labelled pairs come from. So for them the bench also generates such a register:
//! copies of the same persons, corrupted at the scenario's rates but carrying ID numbers as in
//! (a) (all of `gongan`'s, 70% of the others'), with another seed. Its candidate pairs (blocked
//! among themselves) where both records carry valid ID numbers are the extra labelled pairs
//! ([`BatchOptions::labelled`]); its records are not in the batch, so each scenario's records,
//! its model and what is measured on it stay as they were. Variants: (b) with its own labels
//! only, and (d)/(e) with a register corrupted at (a)'s milder rates rather than their own.
//!
//! Two more test the ingest rule for links without a corroborating field: (f) is (c) with
//! every grid-centre (`wangge`) copy reduced to its name and address (a source of that kind
//! among richer ones), and (g) decides (f)'s records with (c)'s model, as ingest would until
//! the model is estimated again after such a source arrived.
//!
//! `cargo bench -p engine --bench linkage` runs the default sizes;
//! `cargo bench -p engine --bench linkage -- --persons 20000 --records 1000000` sets them
//! (`--records 0` skips the timing run); `--target-precision 0.99`, `--review-budget 0.05` and
//! `--min-labelled 500` (both minima) change the threshold settings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use demo::generate::{DemoConfig, DemoWorld};
use demo::synthetic::{generate, pairwise_metrics, CorruptionRates, PairMetrics, SyntheticSet};
use engine::linkage::{
    cluster, resolve_batch, BatchOptions, BatchResolution, Calibration, ComparisonVector, Decision,
    EmSettings, EstimateSource, IdRelation, LabelledPairs, LinkRecord, LinkageModel,
};
use engine::linking::ingest_decision;

#[path = "../tests/support/mod.rs"]
mod support;
use support::link_records;

/// Seed of the register's corruption, mixed into the scenario's.
const REGISTER_SEED: u64 = 0x4e67_15fe;

struct Args {
    persons: usize,
    records: usize,
    seed: u64,
    /// Overrides of the threshold settings ([`engine::linkage::EmSettings`]).
    target_precision: Option<f64>,
    review_budget: Option<f64>,
    min_labelled: Option<u64>,
}

fn args() -> Args {
    let mut out = Args {
        persons: 40_000,
        records: 1_000_000,
        seed: 2026,
        target_precision: None,
        review_budget: None,
        min_labelled: None,
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
            "--target-precision" => out.target_precision = it.next().and_then(|v| v.parse().ok()),
            "--review-budget" => out.review_budget = it.next().and_then(|v| v.parse().ok()),
            "--min-labelled" => out.min_labelled = it.next().and_then(|v| v.parse().ok()),
            _ => {} // `--bench` and filters from cargo
        }
    }
    out
}

/// How the thresholds are chosen.
#[derive(Clone, Copy, PartialEq)]
enum Rule {
    /// Posterior 0.5 / 0.05, as before thresholds followed an estimate.
    Fixed,
    /// The model's own (EM posterior) estimate of its precision.
    Model,
    /// The precision estimated on labelled pairs (the default; the model's when too few).
    Labelled,
}

impl Rule {
    const ALL: [Rule; 3] = [Rule::Fixed, Rule::Model, Rule::Labelled];

    fn name(self) -> &'static str {
        match self {
            Rule::Fixed => "fixed 0.5/0.05",
            Rule::Model => "model's estimate",
            Rule::Labelled => "labelled pairs",
        }
    }

    fn settings(self, base: &EmSettings) -> EmSettings {
        match self {
            Rule::Fixed => EmSettings {
                target_precision: 0.0,
                review_budget: 1e9,
                min_labelled_matches: u64::MAX,
                min_labelled_non_matches: u64::MAX,
                ..base.clone()
            },
            Rule::Model => EmSettings {
                min_labelled_matches: u64::MAX,
                min_labelled_non_matches: u64::MAX,
                ..base.clone()
            },
            Rule::Labelled => base.clone(),
        }
    }
}

/// One scenario: its records, and the labelled pairs from outside the batch.
struct Scenario {
    name: String,
    set: SyntheticSet,
    records: Vec<LinkRecord>,
    /// Extra labelled pairs (from the register), with what they are.
    register: Option<(&'static str, LabelledPairs)>,
}

struct Row {
    rule: Rule,
    set_records: usize,
    persons: usize,
    with_id: f64,
    /// Review pairs per record without a valid ID number.
    review_share: f64,
    resolution: BatchResolution,
    metrics: PairMetrics,
    review_true: usize,
    normalise: Duration,
    /// Share of true pairs among the automatic links the weights decided (not two valid ID
    /// numbers): what the estimated precision estimates.
    link_precision: f64,
    /// Share of true pairs among the candidate pairs the weights decide.
    match_share: f64,
    /// Every record without a valid ID number offered once to the model as ingest does,
    /// under each variant of the ingest rule ([`IngestVariant::ALL`]).
    ingest: Vec<IngestOutcome>,
    /// Pairs the weights decide, by the model's posterior match probability.
    posterior_bands: [BandCell; BANDS.len()],
    /// The same pairs by their calibrated match probability (when there is a calibration).
    calibrated_bands: Option<[BandCell; BANDS.len()]>,
}

/// Lower ends of the probability bands of the calibration tables, highest first.
const BANDS: [f64; 7] = [0.999, 0.995, 0.99, 0.95, 0.9, 0.5, 0.05];

/// The pairs in one probability band: how many, the sum of their probabilities, how many are
/// truly the same person.
#[derive(Clone, Copy, Default)]
struct BandCell {
    pairs: usize,
    estimated: f64,
    true_pairs: usize,
}

fn band_of(p: f64) -> Option<usize> {
    BANDS.iter().position(|low| p >= *low)
}

/// The copies decided the way ingest decides: each record without a valid ID number is
/// offered to the model with every other copy already stored (as the relink pass does); it
/// links to its best candidate that [`ingest_decision`] (or the variant measured) links, else
/// files at most one review.
#[derive(Clone)]
struct IngestOutcome {
    links: usize,
    /// Share of the links that join the same person.
    link_precision: f64,
    /// Records that filed a review, per record without a valid ID number.
    review_share: f64,
    metrics: PairMetrics,
}

/// Rules at ingest for a pair at or above the link threshold that no second field
/// corroborates ([`ComparisonVector::corroborated`]); every other pair is decided as
/// [`ingest_decision`] decides. Measured side by side on the same pairs and model (BENCHMARKS.md,
/// "At ingest").
#[derive(Clone, Copy, PartialEq)]
enum IngestVariant {
    /// [`ingest_decision`]: links at or above the threshold at which labelled pairs measured
    /// such pairs alone to meet the target (`Thresholds::uncorroborated`), else review.
    InForce,
    /// (i) Always to review (the rule before 5 December).
    CorroborationAlways,
    /// (ii) Links when the thresholds followed labelled pairs; to review under the model's own
    /// estimate.
    CorroborationOnFallback,
    /// (iii-b) Links when the thresholds followed labelled pairs and the pair's kind (the
    /// fields it compares) is judged on all its fields by them.
    KindCovered,
    /// (iii-c) Links when the thresholds followed labelled pairs and the pair's own calibrated
    /// match probability meets the target.
    OwnProbability,
}

impl IngestVariant {
    const ALL: [IngestVariant; 5] = [
        IngestVariant::InForce,
        IngestVariant::CorroborationAlways,
        IngestVariant::CorroborationOnFallback,
        IngestVariant::KindCovered,
        IngestVariant::OwnProbability,
    ];

    fn name(self) -> &'static str {
        match self {
            IngestVariant::InForce => "in force: (iii-a) their own threshold",
            IngestVariant::CorroborationAlways => "(i) always review (before)",
            IngestVariant::CorroborationOnFallback => "(ii) review only on the model's estimate",
            IngestVariant::KindCovered => "(iii-b) link if their kind is covered",
            IngestVariant::OwnProbability => "(iii-c) link if their own p >= target",
        }
    }

    fn decide(
        self,
        model: &LinkageModel,
        vector: &ComparisonVector,
        calibration: Option<&Calibration>,
        target: f64,
    ) -> Decision {
        let in_force = ingest_decision(model, vector);
        if self == IngestVariant::InForce
            || model.decide_vector(vector) != Decision::Link
            || vector.corroborated()
        {
            return in_force;
        }
        let calibration =
            calibration.filter(|_| model.choice.estimate_from == EstimateSource::LabelledPairs);
        let link = calibration.is_some_and(|c| match self {
            IngestVariant::InForce | IngestVariant::CorroborationAlways => false,
            IngestVariant::CorroborationOnFallback => true,
            IngestVariant::KindCovered => c.covers(vector),
            IngestVariant::OwnProbability => c.probability(model, vector) >= target,
        });
        if link {
            Decision::Link
        } else {
            Decision::Review
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn scenario(
    name: &str,
    set: SyntheticSet,
    register: Option<(&'static str, &SyntheticSet)>,
    blocker: &engine::linkage::Blocker,
) -> Scenario {
    let records = link_records(&set);
    let register = register.map(|(what, register)| {
        (
            what,
            LabelledPairs::from_records(&link_records(register), blocker),
        )
    });
    Scenario {
        name: name.to_owned(),
        set,
        records,
        register,
    }
}

fn run(scenario: &Scenario, rule: Rule, base: &BatchOptions) -> Row {
    let records = &scenario.records;
    let set = &scenario.set;
    let options = BatchOptions {
        em: rule.settings(&base.em),
        labelled: scenario
            .register
            .as_ref()
            .map(|(_, l)| l.clone())
            .unwrap_or_default(),
        ..base.clone()
    };
    let resolution = resolve_batch(records, &options);
    let metrics = pairwise_metrics(&resolution.cluster_of, &set.truth);
    let decided = pair_decisions(records, set, &resolution.model, None, &options);
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
        rule,
        set_records: records.len(),
        persons: set.persons,
        with_id,
        review_share,
        resolution,
        metrics,
        review_true,
        // Normalised once per scenario, before; the timing run sets it.
        normalise: Duration::ZERO,
        link_precision: decided.link_precision,
        match_share: decided.match_share,
        ingest: decided.ingest,
        posterior_bands: decided.posterior_bands,
        calibrated_bands: decided.calibrated_bands,
    }
}

struct PairDecisions {
    link_precision: f64,
    match_share: f64,
    ingest: Vec<IngestOutcome>,
    posterior_bands: [BandCell; BANDS.len()],
    calibrated_bands: Option<[BandCell; BANDS.len()]>,
}

/// The measured precision of the links the weights decided, the true match share among the
/// pairs they decide, the ingest-path outcome under each rule ([`IngestOutcome`],
/// [`IngestVariant`]) and the calibration of the posterior and of the calibrated estimate,
/// from the batch's candidate pairs and `model`; the calibration is fitted on the records
/// the model was `estimated_on` (these records when `None`).
fn pair_decisions(
    records: &[LinkRecord],
    set: &SyntheticSet,
    model: &LinkageModel,
    estimated_on: Option<&[LinkRecord]>,
    options: &BatchOptions,
) -> PairDecisions {
    let same = |a: u32, b: u32| set.truth.get(a as usize) == set.truth.get(b as usize);
    let (mut linked, mut linked_true) = (0usize, 0usize);
    let (mut undetermined, mut undetermined_true) = (0usize, 0usize);
    // Per variant and record without a valid ID: its best link and its best review.
    let variants = IngestVariant::ALL.len();
    let mut best_link: Vec<Vec<Option<(f64, u32)>>> = vec![vec![None; records.len()]; variants];
    let mut best_review: Vec<Vec<Option<(f64, u32)>>> = vec![vec![None; records.len()]; variants];
    let better = |slot: &mut Option<(f64, u32)>, weight: f64, other: u32| {
        if slot.is_none_or(|(w, o)| weight > w || (weight == w && other < o)) {
            *slot = Some((weight, other));
        }
    };
    let pairs = options.blocker.candidate_pairs(records).pairs;
    let vectors: Vec<ComparisonVector> = pairs
        .iter()
        .map(|&(a, b)| ComparisonVector::compare(&records[a as usize], &records[b as usize]))
        .collect();
    // The calibration the model's thresholds followed, fitted again as the estimation did.
    let calibrate = |records: &[LinkRecord], pairs: &[(u32, u32)], vectors: &[ComparisonVector]| {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for vector in vectors {
            *counts.entry(vector.key()).or_insert(0) += 1;
        }
        let keys: Vec<u64> = vectors.iter().map(ComparisonVector::key).collect();
        let mut labelled = LabelledPairs::from_candidates(records, pairs, &keys);
        labelled.extend(&options.labelled);
        let mut patterns: Vec<(ComparisonVector, f64)> = counts
            .iter()
            .map(|(&key, &n)| (ComparisonVector::from_key(key), n as f64))
            .collect();
        patterns.sort_by_key(|(v, _)| v.key());
        model.calibrate(&patterns, &labelled, &options.em)
    };
    let target = options.em.target_precision;
    let calibration = match estimated_on {
        None => calibrate(records, &pairs, &vectors),
        Some(other) => {
            let pairs = options.blocker.candidate_pairs(other).pairs;
            let vectors: Vec<ComparisonVector> = pairs
                .iter()
                .map(|&(a, b)| ComparisonVector::compare(&other[a as usize], &other[b as usize]))
                .collect();
            calibrate(other, &pairs, &vectors)
        }
    };
    let mut posterior_bands = [BandCell::default(); BANDS.len()];
    let mut calibrated_bands = [BandCell::default(); BANDS.len()];
    for (&(a, b), vector) in pairs.iter().zip(&vectors) {
        let weight = model.vector_weight(vector);
        if vector.ids == IdRelation::Undetermined {
            undetermined += 1;
            undetermined_true += usize::from(same(a, b));
            let g = model.probability(weight);
            if let Some(band) = band_of(g) {
                let cell = &mut posterior_bands[band];
                cell.pairs += 1;
                cell.estimated += g;
                cell.true_pairs += usize::from(same(a, b));
            }
            if let Some(c) = &calibration {
                let p = c.probability(model, vector);
                if let Some(band) = band_of(p) {
                    let cell = &mut calibrated_bands[band];
                    cell.pairs += 1;
                    cell.estimated += p;
                    cell.true_pairs += usize::from(same(a, b));
                }
            }
            if model.decide_vector(vector) == Decision::Link {
                linked += 1;
                linked_true += usize::from(same(a, b));
            }
        }
        for (v, variant) in IngestVariant::ALL.iter().enumerate() {
            let decision = variant.decide(model, vector, calibration.as_ref(), target);
            for (incoming, other) in [(a, b), (b, a)] {
                if records[incoming as usize].valid_id().is_some() {
                    continue;
                }
                match decision {
                    Decision::Link => better(&mut best_link[v][incoming as usize], weight, other),
                    Decision::Review => {
                        better(&mut best_review[v][incoming as usize], weight, other)
                    }
                    Decision::Distinct => {}
                }
            }
        }
    }
    let without_id = records.iter().filter(|r| r.valid_id().is_none()).count();
    let ingest = (0..variants)
        .map(|v| {
            let mut links: Vec<(u32, u32, f64)> = Vec::new();
            let mut reviews = 0usize;
            for (incoming, (link, review)) in best_link[v].iter().zip(&best_review[v]).enumerate() {
                match (link, review) {
                    (Some((weight, other)), _) => links.push((incoming as u32, *other, *weight)),
                    (None, Some(_)) => reviews += 1,
                    (None, None) => {}
                }
            }
            let right = links.iter().filter(|&&(a, b, _)| same(a, b)).count();
            IngestOutcome {
                links: links.len(),
                link_precision: if links.is_empty() {
                    1.0
                } else {
                    right as f64 / links.len() as f64
                },
                review_share: reviews as f64 / without_id.max(1) as f64,
                metrics: pairwise_metrics(&cluster(records, &mut links).cluster_of, &set.truth),
            }
        })
        .collect();
    let ratio = |part: usize, whole: usize| {
        if whole == 0 {
            1.0
        } else {
            part as f64 / whole as f64
        }
    };
    PairDecisions {
        link_precision: ratio(linked_true, linked),
        match_share: ratio(undetermined_true, undetermined),
        ingest,
        posterior_bands,
        calibrated_bands: calibration.map(|_| calibrated_bands),
    }
}

fn print_quality(scenarios: &[Scenario], rows: &[Vec<Row>]) {
    println!(
        "| scenario | rule | records | with valid ID | true pairs | candidate pairs | auto links | review pairs (true) | review per ID-less record | precision | recall | F1 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (scenario, rows) in scenarios.iter().zip(rows) {
        for row in rows {
            let s = &row.resolution.stats;
            println!(
                "| {} | {} | {} | {:.0}% | {} | {} | {} | {} ({}) | {:.2}% | {:.4} | {:.4} | {:.4} |",
                scenario.name,
                row.rule.name(),
                row.set_records,
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
}

fn print_timing(row: &Row, name: &str) {
    println!(
        "| scenario | records | normalise s | blocking s | compare s | EM s | cluster s | total s | candidate pairs | oversized blocks | EM rounds |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let s = &row.resolution.stats;
    let total = row.normalise + s.blocking + s.comparing + s.estimating + s.clustering;
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        name,
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

/// The thresholds each rule chose, what set them, and the estimate next to the truth.
fn print_thresholds(scenarios: &[Scenario], rows: &[Vec<Row>]) {
    println!(
        "| scenario | rule | EM converged | labelled pairs: matches / non-matches (from the register) | estimate from (coverage) | link threshold bits (posterior) | set by | review threshold bits (posterior) | set by | uncorroborated link threshold bits (posterior) | estimated precision | model's own claim | measured link precision | match share estimated / measured | estimated recall | review per ID-less record |"
    );
    println!("|---|---|---|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (scenario, rows) in scenarios.iter().zip(rows) {
        for row in rows {
            let model = &row.resolution.model;
            let t = model.thresholds;
            let c = model.choice;
            let register = scenario.register.as_ref().map_or(String::new(), |(_, l)| {
                let n = l.totals();
                format!(" ({} / {})", n.matches, n.non_matches)
            });
            let uncorroborated = t.uncorroborated.map_or("none".to_owned(), |w| {
                format!("{w:.2} ({:.4})", model.probability(w))
            });
            println!(
                "| {} | {} | {} | {} / {}{} | {}{} | {:.2} ({:.4}) | {} | {:.2} ({:.4}) | {} | {} | {:.4} | {:.4} | {:.4} | {:.3} / {:.3} | {:.4} | {:.2}% |",
                scenario.name,
                row.rule.name(),
                if model.converged { "yes" } else { "no" },
                c.labelled.matches,
                c.labelled.non_matches,
                register,
                c.estimate_from.as_str(),
                if c.estimate_from == EstimateSource::LabelledPairs {
                    format!(" ({:.1}%)", c.labelled_coverage * 100.0)
                } else {
                    String::new()
                },
                t.upper,
                model.probability(t.upper),
                c.upper_from.as_str(),
                t.lower,
                model.probability(t.lower),
                c.lower_from.as_str(),
                uncorroborated,
                model.estimate.precision,
                model.estimate.model_precision,
                row.link_precision,
                c.match_share,
                row.match_share,
                model.estimate.recall,
                row.review_share * 100.0,
            );
        }
    }
}

fn band_table(title: &str, cells: &[(String, [BandCell; BANDS.len()])]) {
    println!("\n## {title}: estimated / measured share of true pairs (pairs), by band\n");
    let mut header = String::from("| scenario |");
    let mut rule = String::from("|---|");
    for (i, low) in BANDS.iter().enumerate() {
        let high = if i == 0 { 1.0 } else { BANDS[i - 1] };
        header.push_str(&format!(" {low}–{high} |"));
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for (name, bands) in cells {
        let cells: Vec<String> = bands
            .iter()
            .map(|c| {
                if c.pairs == 0 {
                    "–".to_owned()
                } else {
                    format!(
                        "{:.3} / {:.3} ({})",
                        c.estimated / c.pairs as f64,
                        c.true_pairs as f64 / c.pairs as f64,
                        c.pairs
                    )
                }
            })
            .collect();
        println!("| {} | {} |", name, cells.join(" | "));
    }
}

/// The same copies decided as ingest decides ([`IngestOutcome`]).
fn print_ingest(scenarios: &[Scenario], rows: &[Vec<Row>]) {
    println!(
        "| scenario | rule | records linked by the model | records with a review per ID-less record | precision | recall | F1 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (scenario, rows) in scenarios.iter().zip(rows) {
        for row in rows {
            let i = &row.ingest[0];
            println!(
                "| {} | {} | {} | {:.2}% | {:.4} | {:.4} | {:.4} |",
                scenario.name,
                row.rule.name(),
                i.links,
                i.review_share * 100.0,
                i.metrics.precision,
                i.metrics.recall,
                i.metrics.f1,
            );
        }
    }
}

/// Each ingest rule of [`IngestVariant::ALL`] on each scenario.
fn print_ingest_variants(outcomes: &[(String, Vec<IngestOutcome>)]) {
    println!(
        "| scenario | rule for uncorroborated links | records linked by the model | their links right | records with a review per ID-less record | precision | recall | F1 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (name, outcomes) in outcomes {
        for (variant, i) in IngestVariant::ALL.iter().zip(outcomes) {
            println!(
                "| {} | {} | {} | {:.4} | {:.2}% | {:.4} | {:.4} | {:.4} |",
                name,
                variant.name(),
                i.links,
                i.link_precision,
                i.review_share * 100.0,
                i.metrics.precision,
                i.metrics.recall,
                i.metrics.f1,
            );
        }
    }
}

/// (g): a source that arrives after the model was estimated. The model of (c), estimated
/// (with its register) before the grid centre's names-and-addresses copies existed, decides
/// (f)'s records, which are (c)'s with those copies reduced; its thresholds and calibration
/// are those of (c)'s pairs.
fn late_source(
    scenarios: &[Scenario],
    rows: &[Vec<Row>],
    options: &BatchOptions,
) -> Option<(String, Vec<IngestOutcome>)> {
    let find = |prefix: &str| scenarios.iter().position(|s| s.name.starts_with(prefix));
    let (c, f) = (find("(c)")?, find("(f)")?);
    let model = &rows[c]
        .iter()
        .find(|r| r.rule == Rule::Labelled)?
        .resolution
        .model;
    let options = BatchOptions {
        labelled: scenarios[c]
            .register
            .as_ref()
            .map(|(_, l)| l.clone())
            .unwrap_or_default(),
        ..options.clone()
    };
    let decided = pair_decisions(
        &scenarios[f].records,
        &scenarios[f].set,
        model,
        Some(&scenarios[c].records),
        &options,
    );
    Some((
        "(g) (f)'s records decided by (c)'s model (a source arriving after the estimation)"
            .to_owned(),
        decided.ingest,
    ))
}

fn print_model(name: &str, row: &Row) {
    let model = &row.resolution.model;
    println!(
        "model of {}: prior {:.4}, {} EM rounds, converged {}, {} persons",
        name, model.prior, model.iterations, model.converged, row.persons,
    );
    for field in engine::linkage::Field::ALL {
        let weights: Vec<String> = field
            .level_names()
            .iter()
            .enumerate()
            .map(|(l, level)| format!("{level} {:+.1}", model.level_weight(field, l as u8)))
            .collect();
        println!("  {:<10} {}", field.as_str(), weights.join(", "));
    }
}

/// `set` with every copy of `department` reduced to its name and address.
fn names_and_addresses_from(department: &str, mut set: SyntheticSet) -> SyntheticSet {
    let mut reduced = 0;
    for r in &mut set.residents {
        if r.department.code() == department {
            r.birth_date = None;
            r.phone = None;
            r.id_number = None;
            reduced += 1;
        }
    }
    println!(
        "(f): {reduced} {department} copies of {} reduced to names and addresses",
        set.residents.len()
    );
    set
}

/// `rates` with ID numbers as in (a): every `gongan` copy, 70% of the others.
fn with_register_ids(rates: &CorruptionRates) -> CorruptionRates {
    let ids = CorruptionRates::mostly_with_ids();
    CorruptionRates {
        gongan_missing_id: ids.gongan_missing_id,
        other_missing_id: ids.other_missing_id,
        legacy_id: ids.legacy_id,
        mistyped_id: ids.mistyped_id,
        ..rates.clone()
    }
}

fn main() {
    let args = args();
    let mut options = BatchOptions::default();
    if let Some(target) = args.target_precision {
        options.em.target_precision = target;
    }
    if let Some(budget) = args.review_budget {
        options.em.review_budget = budget;
    }
    if let Some(min) = args.min_labelled {
        options.em.min_labelled_matches = min;
        options.em.min_labelled_non_matches = min;
    }
    let blocker = options.blocker;
    let persons = 0..args.persons;

    let world = DemoWorld::new(DemoConfig {
        residents: args.persons.max(1),
        seed: args.seed,
        bad_record_rate: 0.0,
    });
    let register_seed = args.seed ^ REGISTER_SEED;
    let with_ids_rates = CorruptionRates::mostly_with_ids();
    let without_ids_rates = CorruptionRates::mostly_without_ids();
    let none = CorruptionRates {
        gongan_missing_id: 1.0,
        other_missing_id: 1.0,
        ..CorruptionRates::mostly_with_ids()
    };
    // Data made differently from what the fixed thresholds were chosen on: another generator
    // seed (other people, names, addresses), heavier corruption, and a subset that holds only
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
    let address_only = CorruptionRates {
        missing_birth_date: 1.0,
        missing_phone: 1.0,
        ..none.clone()
    };
    let register = |world: &DemoWorld, rates: &CorruptionRates, seed: u64| {
        generate(world, persons.clone(), &with_register_ids(rates), seed)
    };
    let without_ids = generate(&world, persons.clone(), &without_ids_rates, args.seed);
    let register_b = register(&world, &without_ids_rates, register_seed);
    let register_c = register(&world, &none, register_seed);
    let other_register_seed = other_seed ^ REGISTER_SEED;
    let register_d = register(&other_world, &harsher, other_register_seed);
    let register_e = register(&other_world, &address_only, other_register_seed);
    let milder_register = register(&other_world, &with_ids_rates, other_register_seed);
    let harsher_set = generate(&other_world, persons.clone(), &harsher, other_seed);
    let address_only_set = generate(&other_world, persons.clone(), &address_only, other_seed);
    let scenarios = vec![
        scenario(
            "(a) mostly with IDs",
            generate(&world, persons.clone(), &with_ids_rates, args.seed),
            None,
            &blocker,
        ),
        scenario(
            "(b) no-ID subset (95% without), + register",
            without_ids.clone(),
            Some(("same rates", &register_b)),
            &blocker,
        ),
        scenario(
            "(b) no-ID subset, its own labels only",
            without_ids,
            None,
            &blocker,
        ),
        scenario(
            "(c) no IDs at all, + register",
            generate(&world, persons.clone(), &none, args.seed),
            Some(("same rates", &register_c)),
            &blocker,
        ),
        scenario(
            "(d) another seed, no IDs, harsher corruption, + register",
            harsher_set.clone(),
            Some(("same rates", &register_d)),
            &blocker,
        ),
        scenario(
            "(d) + a register corrupted at (a)'s milder rates",
            harsher_set,
            Some(("(a)'s rates", &milder_register)),
            &blocker,
        ),
        scenario(
            "(e) another seed, names and addresses only, + register",
            address_only_set.clone(),
            Some(("same rates", &register_e)),
            &blocker,
        ),
        scenario(
            "(e) + a register corrupted at (a)'s milder rates",
            address_only_set,
            Some(("(a)'s rates", &milder_register)),
            &blocker,
        ),
        scenario(
            "(f) (c) with the grid centre (wangge) holding names and addresses only, + register",
            names_and_addresses_from(
                "wangge",
                generate(&world, persons.clone(), &none, args.seed),
            ),
            Some(("same rates", &register_c)),
            &blocker,
        ),
    ];
    let rows: Vec<Vec<Row>> = scenarios
        .iter()
        .map(|s| {
            Rule::ALL
                .iter()
                .map(|&rule| run(s, rule, &options))
                .collect()
        })
        .collect();
    println!("## Linkage quality (pairwise, auto links only; review pairs count as not linked)\n");
    print_quality(&scenarios, &rows);
    println!("\n## Thresholds, what set them, and the estimate next to the truth\n");
    print_thresholds(&scenarios, &rows);
    let labelled_rows = || {
        scenarios.iter().zip(&rows).filter_map(|(s, rows)| {
            rows.iter()
                .find(|r| r.rule == Rule::Labelled)
                .map(|r| (s, r))
        })
    };
    band_table(
        "The model's posterior",
        &labelled_rows()
            .map(|(s, r)| (s.name.clone(), r.posterior_bands))
            .collect::<Vec<_>>(),
    );
    band_table(
        "The estimate calibrated on labelled pairs",
        &labelled_rows()
            .filter_map(|(s, r)| r.calibrated_bands.map(|b| (s.name.clone(), b)))
            .collect::<Vec<_>>(),
    );
    println!(
        "\n## Decided as ingest decides (a link no second field corroborates needs the threshold measured for such pairs)\n"
    );
    print_ingest(&scenarios, &rows);
    println!("\n## At ingest, each rule for links no second field corroborates (thresholds: labelled pairs)\n");
    let mut variants: Vec<(String, Vec<IngestOutcome>)> = labelled_rows()
        .map(|(s, r)| (s.name.clone(), r.ingest.clone()))
        .collect();
    if let Some(late) = late_source(&scenarios, &rows, &options) {
        variants.push(late);
    }
    print_ingest_variants(&variants);
    println!();
    for (s, r) in labelled_rows() {
        print_model(&s.name, r);
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
        let mut large = generate(&world, 0..persons, &with_ids_rates, args.seed);
        large.residents.truncate(args.records);
        large.truth.truncate(args.records);
        let generated = started.elapsed();
        let started = Instant::now();
        let records = link_records(&large);
        let normalise = started.elapsed();
        let large = Scenario {
            name: "(a) mostly with IDs, large".to_owned(),
            set: large,
            records,
            register: None,
        };
        let mut row = run(&large, Rule::Labelled, &options);
        row.normalise = normalise;
        println!(
            "\n## Resolution time ({} threads; generating the copies took {} s, not counted)\n",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            secs(generated)
        );
        print_timing(&row, &large.name);
        println!();
        print_quality(std::slice::from_ref(&large), &[vec![row]]);
    }
}
