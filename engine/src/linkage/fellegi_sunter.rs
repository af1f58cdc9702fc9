//! The Fellegi–Sunter model: per field and level, the probability `m` that a true match
//! agrees at that level and `u` that a non-match does; a pair's match weight is the sum of
//! `log2(m/u)` over the fields both records have. Parameters are estimated by EM on the
//! candidate pairs of the data itself.
//!
//! Guarantees:
//! - [`LinkageModel::decide`] returns [`Decision::Distinct`] whenever both records carry valid
//!   ID numbers that differ, and [`Decision::Link`] when they carry the same valid number,
//!   whatever the other fields say; otherwise it compares the match weight with the two
//!   thresholds (`>= upper` link, `>= lower` review, else distinct).
//! - Every `m` and `u` is strictly between 0 and 1 and each field's levels sum to 1, so every
//!   weight is finite. A missing field adds 0.
//! - Estimation is deterministic (same pairs, same settings => same model) and terminates
//!   after at most `max_iterations` rounds. Pairs whose valid ID numbers already decide them
//!   keep that label during EM (equal: match, different: non-match).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::compare::{
    ComparisonVector, Field, IdRelation, FIELDS, LEVEL_COUNTS, MAX_LEVELS, NULL_LEVEL,
};
use super::record::LinkRecord;

/// Probabilities per field and level (unused levels are 0).
pub type LevelTable = [[f64; MAX_LEVELS]; FIELDS];

/// Smallest probability kept, so that no weight is infinite.
const MIN_PROBABILITY: f64 = 1e-6;

/// What to do with a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The same person: merge automatically.
    Link,
    /// Unsure: an officer decides (the review queue).
    Review,
    /// Different persons.
    Distinct,
}

/// Match-weight thresholds, in bits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// At or above: review queue.
    pub lower: f64,
    /// At or above: link automatically.
    pub upper: f64,
}

/// How to estimate a model.
#[derive(Clone, Debug)]
pub struct EmSettings {
    pub max_iterations: u32,
    /// Stop when no parameter moves by more than this.
    pub tolerance: f64,
    /// Match proportion among candidate pairs to start from (when no labelled pairs say).
    pub initial_prior: f64,
    /// `u` probabilities estimated elsewhere (e.g. [`estimate_u_from_random_pairs`]), kept
    /// fixed during EM.
    pub fixed_u: Option<LevelTable>,
    /// Posterior match probability at which a pair is linked automatically.
    pub link_probability: f64,
    /// Posterior match probability at which a pair goes to review.
    pub review_probability: f64,
}

impl Default for EmSettings {
    fn default() -> Self {
        EmSettings {
            max_iterations: 50,
            tolerance: 1e-5,
            initial_prior: 0.1,
            fixed_u: None,
            // The model's posterior is conservative on this data (conditional independence
            // undercounts name + address together); on the synthetic evaluation, 0.5 / 0.05
            // links >99.9% correctly and leaves a small review band. See BENCHMARKS.md.
            link_probability: 0.5,
            review_probability: 0.05,
        }
    }
}

/// What a model estimates about its own decisions, on the candidate pairs it was estimated
/// on: from each comparison pattern's posterior match probability, without labelled data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelEstimate {
    /// Expected share of true matches among the pairs at or above the link threshold.
    pub precision: f64,
    /// Expected share of all true matches that are at or above the link threshold.
    pub recall: f64,
    /// Share of the pairs that fall in the review band.
    pub review_share: f64,
}

/// A fitted Fellegi–Sunter model with its decision thresholds; serialisable for storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkageModel {
    /// `m[field][level]`: probability of the level among true matches.
    pub m: LevelTable,
    /// `u[field][level]`: probability of the level among non-matches.
    pub u: LevelTable,
    /// Proportion of matches among the candidate pairs it was estimated on.
    pub prior: f64,
    pub thresholds: Thresholds,
    /// EM rounds run.
    pub iterations: u32,
    /// Whether EM stopped because parameters stopped moving.
    pub converged: bool,
    /// Number of pairs estimated on.
    pub pairs: u64,
    /// The model's own estimate of its precision, recall and review share (absent in models
    /// stored before it was computed).
    #[serde(default)]
    pub estimate: ModelEstimate,
}

impl LinkageModel {
    /// Estimates a model by EM on candidate pairs with default settings.
    pub fn estimate(pairs: &[ComparisonVector]) -> LinkageModel {
        Self::estimate_with(pairs, &EmSettings::default())
    }

    /// Estimates a model by EM on candidate pairs.
    pub fn estimate_with(pairs: &[ComparisonVector], settings: &EmSettings) -> LinkageModel {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for pair in pairs {
            *counts.entry(pair.key()).or_insert(0) += 1;
        }
        Self::estimate_from_counts(&counts, settings)
    }

    /// Estimates a model by EM from pattern counts (keys of [`ComparisonVector::key`]).
    pub fn estimate_from_counts(counts: &HashMap<u64, u64>, settings: &EmSettings) -> LinkageModel {
        let mut patterns: Vec<(ComparisonVector, f64)> = counts
            .iter()
            .map(|(&key, &n)| (ComparisonVector::from_key(key), n as f64))
            .collect();
        // Deterministic summation order.
        patterns.sort_by_key(|(v, _)| v.key());
        let total: f64 = patterns.iter().map(|(_, n)| n).sum();

        let (mut m, mut u, mut prior) = initial_parameters(&patterns, settings);
        let mut iterations = 0;
        let mut converged = false;
        while iterations < settings.max_iterations {
            iterations += 1;
            let mut m_acc = [[0.0; MAX_LEVELS]; FIELDS];
            let mut u_acc = [[0.0; MAX_LEVELS]; FIELDS];
            let mut matched = 0.0;
            for (vector, n) in &patterns {
                let g = posterior_of(vector, &m, &u, prior);
                matched += n * g;
                for (f, &level) in vector.levels.iter().enumerate() {
                    if level != NULL_LEVEL {
                        let l = usize::from(level);
                        m_acc[f][l] += n * g;
                        u_acc[f][l] += n * (1.0 - g);
                    }
                }
            }
            let new_m = normalise(&m_acc);
            let new_u = match &settings.fixed_u {
                Some(fixed) => normalise(fixed),
                None => normalise(&u_acc),
            };
            let new_prior = if total > 0.0 {
                (matched / total).clamp(MIN_PROBABILITY, 1.0 - MIN_PROBABILITY)
            } else {
                prior
            };
            let change = max_change(&m, &new_m)
                .max(max_change(&u, &new_u))
                .max((prior - new_prior).abs());
            m = new_m;
            u = new_u;
            prior = new_prior;
            if change < settings.tolerance {
                converged = true;
                break;
            }
        }
        let mut model = LinkageModel {
            m,
            u,
            prior,
            thresholds: Thresholds {
                lower: 0.0,
                upper: 0.0,
            },
            iterations,
            converged,
            pairs: total as u64,
            estimate: ModelEstimate::default(),
        };
        model.thresholds = Thresholds {
            lower: model.weight_at_probability(settings.review_probability),
            upper: model.weight_at_probability(settings.link_probability),
        };
        model.estimate = model.estimate_on(&patterns);
        model
    }

    /// Expected precision and recall of the link threshold and the review share, summing
    /// each pattern's posterior match probability over the pairs that have it.
    fn estimate_on(&self, patterns: &[(ComparisonVector, f64)]) -> ModelEstimate {
        let (mut linked, mut linked_matches, mut review, mut matches, mut total) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        for (vector, n) in patterns {
            let g = posterior_of(vector, &self.m, &self.u, self.prior);
            let weight = self.vector_weight(vector);
            total += n;
            matches += n * g;
            if weight >= self.thresholds.upper {
                linked += n;
                linked_matches += n * g;
            } else if weight >= self.thresholds.lower {
                review += n;
            }
        }
        let share = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
        ModelEstimate {
            precision: if linked > 0.0 {
                linked_matches / linked
            } else {
                1.0
            },
            recall: share(linked_matches, matches),
            review_share: share(review, total),
        }
    }

    /// `log2(m/u)` of one field at one level.
    pub fn level_weight(&self, field: Field, level: u8) -> f64 {
        let f = field as usize;
        let l = usize::from(level);
        if level == NULL_LEVEL || l >= LEVEL_COUNTS[f] {
            return 0.0;
        }
        (self.m[f][l] / self.u[f][l]).log2()
    }

    /// Match weight of a comparison vector (ID relation ignored).
    pub fn vector_weight(&self, vector: &ComparisonVector) -> f64 {
        Field::ALL
            .iter()
            .zip(vector.levels)
            .map(|(&field, level)| self.level_weight(field, level))
            .sum()
    }

    /// Match weight of two records (ID relation ignored; see [`LinkageModel::decide`]).
    pub fn score(&self, a: &LinkRecord, b: &LinkRecord) -> f64 {
        self.vector_weight(&ComparisonVector::compare(a, b))
    }

    /// Link, review or distinct, with the ID-number rules first.
    pub fn decide(&self, a: &LinkRecord, b: &LinkRecord) -> Decision {
        self.decide_vector(&ComparisonVector::compare(a, b))
    }

    /// [`LinkageModel::decide`] for an already computed comparison.
    pub fn decide_vector(&self, vector: &ComparisonVector) -> Decision {
        match vector.ids {
            IdRelation::BothValidDifferent => Decision::Distinct,
            IdRelation::BothValidEqual => Decision::Link,
            IdRelation::Undetermined => self.decide_weight(self.vector_weight(vector)),
        }
    }

    /// The decision for a match weight alone.
    pub fn decide_weight(&self, weight: f64) -> Decision {
        if weight >= self.thresholds.upper {
            Decision::Link
        } else if weight >= self.thresholds.lower {
            Decision::Review
        } else {
            Decision::Distinct
        }
    }

    /// Posterior match probability of a weight among candidate pairs.
    pub fn probability(&self, weight: f64) -> f64 {
        let prior_odds = self.prior / (1.0 - self.prior);
        let odds = prior_odds * weight.exp2();
        odds / (1.0 + odds)
    }

    /// The weight at which the posterior match probability is `p`.
    pub fn weight_at_probability(&self, p: f64) -> f64 {
        let p = p.clamp(MIN_PROBABILITY, 1.0 - MIN_PROBABILITY);
        (p / (1.0 - p)).log2() - (self.prior / (1.0 - self.prior)).log2()
    }
}

/// `u` probabilities from random pairs of records (nearly all non-matches): `samples` pairs
/// drawn by a fixed-seed generator.
pub fn estimate_u_from_random_pairs(
    records: &[LinkRecord],
    samples: usize,
    seed: u64,
) -> LevelTable {
    use rand::{Rng, SeedableRng};
    let mut acc = [[0.0; MAX_LEVELS]; FIELDS];
    if records.len() >= 2 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..samples {
            let i = rng.gen_range(0..records.len());
            let j = rng.gen_range(0..records.len());
            if i == j {
                continue;
            }
            let vector = ComparisonVector::compare(&records[i], &records[j]);
            for (f, &level) in vector.levels.iter().enumerate() {
                if level != NULL_LEVEL {
                    acc[f][usize::from(level)] += 1.0;
                }
            }
        }
    }
    normalise(&acc)
}

fn posterior_of(vector: &ComparisonVector, m: &LevelTable, u: &LevelTable, prior: f64) -> f64 {
    match vector.ids {
        IdRelation::BothValidEqual => return 1.0,
        IdRelation::BothValidDifferent => return 0.0,
        IdRelation::Undetermined => {}
    }
    let mut log_m = prior.ln();
    let mut log_u = (1.0 - prior).ln();
    for (f, &level) in vector.levels.iter().enumerate() {
        if level != NULL_LEVEL {
            let l = usize::from(level);
            log_m += m[f][l].ln();
            log_u += u[f][l].ln();
        }
    }
    1.0 / (1.0 + (log_u - log_m).exp())
}

/// Start values: from the pairs that valid ID numbers label, if there are enough of both
/// kinds; else agreement-heavy `m`, disagreement-heavy `u`.
fn initial_parameters(
    patterns: &[(ComparisonVector, f64)],
    settings: &EmSettings,
) -> (LevelTable, LevelTable, f64) {
    let mut m_acc = [[0.0; MAX_LEVELS]; FIELDS];
    let mut u_acc = [[0.0; MAX_LEVELS]; FIELDS];
    let (mut matches, mut non_matches) = (0.0, 0.0);
    for (vector, n) in patterns {
        let acc = match vector.ids {
            IdRelation::BothValidEqual => {
                matches += n;
                &mut m_acc
            }
            IdRelation::BothValidDifferent => {
                non_matches += n;
                &mut u_acc
            }
            IdRelation::Undetermined => continue,
        };
        for (f, &level) in vector.levels.iter().enumerate() {
            if level != NULL_LEVEL {
                acc[f][usize::from(level)] += n;
            }
        }
    }
    let mut m = [[0.0; MAX_LEVELS]; FIELDS];
    let mut u = [[0.0; MAX_LEVELS]; FIELDS];
    for f in 0..FIELDS {
        let levels = LEVEL_COUNTS[f];
        for l in 0..levels {
            // Level 0 most likely for matches, the last level most likely for non-matches.
            m[f][l] = 0.5f64.powi(2 * l as i32);
            u[f][l] = 0.5f64.powi(2 * (levels - 1 - l) as i32);
        }
    }
    let labelled = matches >= 50.0 && non_matches >= 50.0;
    let mut prior = settings.initial_prior;
    if labelled {
        for f in 0..FIELDS {
            if m_acc[f].iter().sum::<f64>() >= 20.0 {
                m[f] = m_acc[f];
            }
            if u_acc[f].iter().sum::<f64>() >= 20.0 {
                u[f] = u_acc[f];
            }
        }
        prior = matches / (matches + non_matches);
    }
    let u = match &settings.fixed_u {
        Some(fixed) => *fixed,
        None => u,
    };
    (
        normalise(&m),
        normalise(&u),
        prior.clamp(MIN_PROBABILITY, 1.0 - MIN_PROBABILITY),
    )
}

/// Each field's levels to probabilities, every one at least [`MIN_PROBABILITY`].
fn normalise(table: &LevelTable) -> LevelTable {
    let mut out = [[0.0; MAX_LEVELS]; FIELDS];
    for f in 0..FIELDS {
        let levels = LEVEL_COUNTS[f];
        let sum: f64 = table[f][..levels].iter().map(|v| v.max(0.0)).sum();
        for l in 0..levels {
            let p = if sum > 0.0 {
                table[f][l].max(0.0) / sum
            } else {
                1.0 / levels as f64
            };
            out[f][l] = p.max(MIN_PROBABILITY);
        }
        let clamped: f64 = out[f][..levels].iter().sum();
        for value in &mut out[f][..levels] {
            *value /= clamped;
        }
    }
    out
}

fn max_change(a: &LevelTable, b: &LevelTable) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::needless_range_loop)]
mod tests {
    use super::*;
    use crate::linkage::record::LinkInput;
    use model::{id_number_check_digit, Department};

    /// Expected pattern counts of a two-class mixture over name, birth date, phone, address.
    fn mixture(m: &LevelTable, u: &LevelTable, prior: f64, total: f64) -> HashMap<u64, u64> {
        let mut counts = HashMap::new();
        let fields = [0usize, 1, 2, 3];
        let mut levels = [0usize; 4];
        loop {
            let mut pm = prior;
            let mut pu = 1.0 - prior;
            for (k, &f) in fields.iter().enumerate() {
                pm *= m[f][levels[k]];
                pu *= u[f][levels[k]];
            }
            let mut vector = ComparisonVector {
                levels: [NULL_LEVEL; FIELDS],
                ids: IdRelation::Undetermined,
            };
            for (k, &f) in fields.iter().enumerate() {
                vector.levels[f] = levels[k] as u8;
            }
            counts.insert(vector.key(), ((pm + pu) * total).round() as u64);
            // Next combination.
            let mut k = 0;
            loop {
                if k == fields.len() {
                    return counts;
                }
                levels[k] += 1;
                if levels[k] < LEVEL_COUNTS[fields[k]] {
                    break;
                }
                levels[k] = 0;
                k += 1;
            }
        }
    }

    fn table(rows: &[&[f64]]) -> LevelTable {
        let mut t = [[0.0; MAX_LEVELS]; FIELDS];
        for (f, row) in rows.iter().enumerate() {
            t[f][..row.len()].copy_from_slice(row);
        }
        for f in rows.len()..FIELDS {
            for l in 0..LEVEL_COUNTS[f] {
                t[f][l] = 1.0 / LEVEL_COUNTS[f] as f64;
            }
        }
        t
    }

    #[test]
    fn em_recovers_a_known_mixture() {
        let m = table(&[
            &[0.85, 0.08, 0.04, 0.02, 0.01],
            &[0.9, 0.04, 0.03, 0.03],
            &[0.8, 0.05, 0.15],
            &[0.7, 0.15, 0.1, 0.05],
        ]);
        let u = table(&[
            &[0.01, 0.01, 0.03, 0.05, 0.9],
            &[0.02, 0.03, 0.1, 0.85],
            &[0.005, 0.005, 0.99],
            &[0.05, 0.1, 0.35, 0.5],
        ]);
        let counts = mixture(&m, &u, 0.2, 1e7);
        let model = LinkageModel::estimate_from_counts(
            &counts,
            &EmSettings {
                max_iterations: 500,
                tolerance: 1e-9,
                ..EmSettings::default()
            },
        );
        assert!(
            model.converged,
            "EM did not converge in {} rounds",
            model.iterations
        );
        assert!((model.prior - 0.2).abs() < 0.005, "prior {}", model.prior);
        for f in 0..4 {
            for l in 0..LEVEL_COUNTS[f] {
                assert!(
                    (model.m[f][l] - m[f][l]).abs() < 0.01,
                    "m[{f}][{l}] = {}",
                    model.m[f][l]
                );
                assert!(
                    (model.u[f][l] - u[f][l]).abs() < 0.01,
                    "u[{f}][{l}] = {}",
                    model.u[f][l]
                );
            }
        }
        // Agreement on a name is evidence for, disagreement evidence against.
        assert!(model.level_weight(Field::Name, 0) > 5.0);
        assert!(model.level_weight(Field::Name, 4) < -5.0);
        assert!(model.thresholds.upper > model.thresholds.lower);
    }

    #[test]
    fn probabilities_stay_inside_zero_one() {
        let mut counts = HashMap::new();
        let v = ComparisonVector {
            levels: [0, 0, 0, 0, 0, NULL_LEVEL],
            ids: IdRelation::Undetermined,
        };
        counts.insert(v.key(), 10);
        let model = LinkageModel::estimate_from_counts(&counts, &EmSettings::default());
        for f in 0..FIELDS {
            let sum_m: f64 = model.m[f][..LEVEL_COUNTS[f]].iter().sum();
            assert!((sum_m - 1.0).abs() < 1e-9);
            assert!(model.m[f][..LEVEL_COUNTS[f]]
                .iter()
                .all(|p| *p > 0.0 && *p < 1.0));
            assert!(model.u[f][..LEVEL_COUNTS[f]]
                .iter()
                .all(|p| *p > 0.0 && *p < 1.0));
        }
        assert!(model.vector_weight(&v).is_finite());
        let json = serde_json::to_string(&model).unwrap();
        let back: LinkageModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back.thresholds, model.thresholds);
        assert!(max_change(&back.m, &model.m) < 1e-12 && max_change(&back.u, &model.u) < 1e-12);
    }

    fn person(id: &str) -> LinkRecord {
        LinkRecord::from_input(&LinkInput {
            department: Department::Gongan,
            row_key: "gongan/resident/1",
            id_number: Some(id),
            name: Some("张伟"),
            birth_date: None,
            gender: None,
            phone: Some("13812345678"),
            address: Some("北京市朝阳区望京街道幸福里小区3号楼2单元501"),
            grid: Some("110105001001003"),
        })
    }

    #[test]
    fn two_different_valid_ids_are_never_linked() {
        // Everything agrees except the ID numbers (same birth date, different sequence).
        let valid = |first17: &str| format!("{first17}{}", id_number_check_digit(first17).unwrap());
        let a = person("11010519491231002X");
        let b = person(&valid("11010519491231004"));
        assert!(a.id_valid() && b.id_valid());
        // A model that trusts every agreement completely still refuses.
        let model = LinkageModel {
            m: table(&[&[0.99, 0.0025, 0.0025, 0.0025, 0.0025]]),
            u: table(&[&[0.0001, 0.0001, 0.0001, 0.0001, 0.9996]]),
            prior: 0.5,
            thresholds: Thresholds {
                lower: -100.0,
                upper: -50.0,
            },
            iterations: 0,
            converged: true,
            pairs: 0,
            estimate: ModelEstimate::default(),
        };
        assert!(model.score(&a, &b) > 10.0);
        assert_eq!(model.decide(&a, &b), Decision::Distinct);
        assert_eq!(model.decide(&a, &a.clone()), Decision::Link);
        // The 15-digit legacy form of the same number is the same person.
        let legacy = person("110105491231002");
        assert_eq!(model.decide(&a, &legacy), Decision::Link);
    }

    #[test]
    fn the_model_estimates_its_own_precision_recall_and_review_share() {
        use crate::linkage::compare::{ComparisonVector, IdRelation, LEVEL_COUNTS};
        // Many pairs that agree on everything and many that disagree on everything, and a
        // few in between: EM separates them, and the estimate follows from the posteriors.
        let mut counts: HashMap<u64, u64> = HashMap::new();
        let vector = |different: bool| {
            let mut levels = [0u8; FIELDS];
            for (level, count) in levels.iter_mut().zip(LEVEL_COUNTS) {
                *level = if different { (count - 1) as u8 } else { 0 };
            }
            ComparisonVector {
                levels,
                ids: IdRelation::Undetermined,
            }
        };
        let agree = vector(false);
        let differ = vector(true);
        let mut mixed = vector(false);
        mixed.levels[1] = (LEVEL_COUNTS[1] - 1) as u8;
        counts.insert(agree.key(), 900);
        counts.insert(differ.key(), 9000);
        counts.insert(mixed.key(), 40);
        let model = LinkageModel::estimate_from_counts(&counts, &EmSettings::default());
        let e = model.estimate;
        assert!(e.precision > 0.99 && e.precision <= 1.0, "{e:?}");
        assert!(e.recall > 0.9 && e.recall <= 1.0, "{e:?}");
        assert!((0.0..0.05).contains(&e.review_share), "{e:?}");
        // Stored models from before the estimate still load.
        let mut json = serde_json::to_value(&model).unwrap();
        json.as_object_mut().unwrap().remove("estimate");
        let old: LinkageModel = serde_json::from_value(json).unwrap();
        assert_eq!(old.estimate, ModelEstimate::default());
    }
}
