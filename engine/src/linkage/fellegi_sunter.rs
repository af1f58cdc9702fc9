//! The Fellegi–Sunter model: per field and level, the probability `m` that a true match
//! agrees at that level and `u` that a non-match does; a pair's match weight is the sum of
//! `log2(m/u)` over the fields both records have. Parameters are estimated by EM on the
//! candidate pairs of the data itself, and the thresholds follow from an estimate of the
//! precision of the automatic links: measured on candidate pairs that valid ID numbers label
//! ([`super::calibration`]) when there are enough of them, else the model's own posterior.
//!
//! Guarantees:
//! - [`LinkageModel::decide`] returns [`Decision::Distinct`] whenever both records carry valid
//!   ID numbers that differ, and [`Decision::Link`] when they carry the same valid number,
//!   whatever the other fields say; otherwise it compares the match weight with the two
//!   thresholds (`>= upper` link, `>= lower` review, else distinct).
//! - The link threshold is never below the weight of posterior `min_link_probability` and the
//!   review threshold never below that of `min_review_probability` ([`EmSettings`]): the
//!   estimate can only make the decision stricter than those floors.
//! - The estimate is the calibrated one ([`EstimateSource::LabelledPairs`]) when the labelled
//!   pairs hold at least `min_labelled_matches` matches and `min_labelled_non_matches`
//!   non-matches (and cover some of the pairs to decide); else the model's posterior ([`EstimateSource::Model`]), and then, when EM did
//!   not converge, both thresholds are the floors. With fewer than two weights among the
//!   pairs the weights decide, both are the floors whatever the estimate. Otherwise, on those
//!   pairs, the estimated precision of the automatic links is at least the target (no pair
//!   links when no weight reaches it) and the review band holds at most the review budget.
//!   [`LinkageModel::choice`] records the targets, which estimate was used, on how many
//!   labelled pairs, and which rule set each threshold.
//! - The threshold for links that no second field corroborates ([`Thresholds::uncorroborated`],
//!   which ingest applies) is set only from the calibrated estimate, never below the link
//!   threshold: there, the estimated precision of those pairs alone at or above it meets the
//!   target. Under the model's own estimate, or when no weight meets the target, there is none.
//! - Every `m` and `u` is strictly between 0 and 1 and each field's levels sum to 1, so every
//!   weight is finite. A missing field adds 0.
//! - Estimation is deterministic (same pairs, same settings => same model) and terminates
//!   after at most `max_iterations` rounds. Pairs whose valid ID numbers already decide them
//!   keep that label during EM (equal: match, different: non-match).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::calibration::{Calibration, LabelCounts, LabelledPairs, Scorer};
use super::compare::{
    ComparisonVector, Field, IdRelation, FIELDS, LEVEL_COUNTS, MAX_LEVELS, NULL_LEVEL,
};
use super::record::LinkRecord;

/// Probabilities per field and level (unused levels are 0).
pub type LevelTable = [[f64; MAX_LEVELS]; FIELDS];

/// Smallest probability kept, so that no weight is infinite.
const MIN_PROBABILITY: f64 = 1e-6;
/// Weights closer than this (bits) are one weight when thresholds are chosen, and a threshold
/// chosen at a weight sits this far below it: a weight read back from storage or summed again
/// lands on the same side of it.
const WEIGHT_SLACK: f64 = 1e-6;

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
    /// At or above (and at or above `upper`): link automatically at ingest even when no second
    /// field corroborates the name ([`ComparisonVector::corroborated`]); such a pair below it
    /// goes to review. The lowest weight at which the calibrated precision of those pairs
    /// alone meets the target. `None` (they always go to review) when the estimate is the
    /// model's own, when no weight meets the target for them, and in models stored before it
    /// existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncorroborated: Option<f64>,
}

/// How to estimate a model and choose its thresholds.
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
    /// Estimated precision the automatic links must reach: the link threshold is the lowest
    /// weight at which the estimate of everything at or above it still does.
    pub target_precision: f64,
    /// Most review pairs per record without a valid ID number: the review threshold is
    /// raised until the review band holds no more.
    pub review_budget: f64,
    /// Posterior match probability below which nothing is linked automatically, whatever the
    /// estimate: the link threshold's floor (and the threshold itself when the estimate cannot
    /// be used).
    pub min_link_probability: f64,
    /// Posterior match probability below which nothing goes to review: the review band never
    /// reaches lower.
    pub min_review_probability: f64,
    /// Fewest labelled matches (candidate pairs with the same valid ID number) for the
    /// precision to be estimated on labelled pairs rather than taken from the model.
    pub min_labelled_matches: u64,
    /// Fewest labelled non-matches (candidate pairs with two different valid ID numbers)
    /// likewise.
    pub min_labelled_non_matches: u64,
}

impl Default for EmSettings {
    fn default() -> Self {
        EmSettings {
            max_iterations: 50,
            tolerance: 1e-5,
            initial_prior: 0.1,
            fixed_u: None,
            target_precision: 0.995,
            review_budget: 0.02,
            // The thresholds used before they followed the estimate, chosen on the synthetic
            // evaluation (see BENCHMARKS.md): the estimate may only make them stricter.
            min_link_probability: 0.5,
            min_review_probability: 0.05,
            // Chosen before measuring (BENCHMARKS.md): with Jeffreys smoothing a bin of n pure
            // matches rates 1 - 0.5/(n + 1), so a few hundred of each are the least that lets
            // the labels, rather than the smoothing, decide a 0.995 target; and the labelled
            // non-matches are what the tail of wrong links is measured on.
            min_labelled_matches: 200,
            min_labelled_non_matches: 200,
        }
    }
}

/// Which rule set the link threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRule {
    /// The lowest weight at which the estimated precision still meets the target.
    Estimate,
    /// The floor (`min_link_probability`): the target is met there already, or the estimate
    /// cannot be used (the model's own estimate when EM did not converge, or fewer than two
    /// weights to choose between).
    #[default]
    Floor,
    /// No weight meets the target: above every weight the model can give, so nothing links
    /// automatically (the strongest pairs go to review, within the budget).
    TargetUnreached,
}

/// Which rule set the review threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewRule {
    /// Raised so that the review band holds at most the budget.
    Budget,
    /// The floor (`min_review_probability`): the band down to it fits the budget, or the
    /// estimate cannot be used.
    #[default]
    Floor,
}

impl LinkRule {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRule::Estimate => "estimate",
            LinkRule::Floor => "floor",
            LinkRule::TargetUnreached => "target_unreached",
        }
    }
}

impl ReviewRule {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewRule::Budget => "budget",
            ReviewRule::Floor => "floor",
        }
    }
}

/// Which estimate of the precision the thresholds followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateSource {
    /// Candidate pairs labelled by valid ID numbers, compared without them
    /// ([`super::calibration`]).
    LabelledPairs,
    /// The model's own posterior: too few labelled pairs (or a model stored before the
    /// labelled estimate existed).
    #[default]
    Model,
}

impl EstimateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EstimateSource::LabelledPairs => "labelled_pairs",
            EstimateSource::Model => "model",
        }
    }
}

/// How the thresholds were chosen: the targets, the estimate they followed and the rule that
/// set each. A model stored before thresholds followed an estimate reads as targets 0, both
/// rules `floor` and estimate `model` (its thresholds were the floors, posterior 0.5 and
/// 0.05); one stored before the labelled estimate existed reads as estimate `model` with no
/// labelled pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThresholdChoice {
    /// Estimated precision the automatic links were to reach.
    pub target_precision: f64,
    /// Most review pairs per record without a valid ID number.
    pub review_budget: f64,
    /// Records the budget is a share of: those without a valid ID number (every record when
    /// that was not known).
    pub budget_records: u64,
    pub upper_from: LinkRule,
    pub lower_from: ReviewRule,
    /// The estimate the thresholds followed.
    pub estimate_from: EstimateSource,
    /// Labelled candidate pairs there were (used or not: below the minimum the estimate is
    /// the model's).
    pub labelled: LabelCounts,
    /// Estimated share of true matches among the pairs the weights decide, under the
    /// estimate used.
    pub match_share: f64,
    /// Share of the pairs the weights decide whose kind (the fields they compare) enough
    /// labelled pairs cover; the rest were judged on a covered subset of their fields (or,
    /// with none, on the model's posterior). 0 when the estimate is the model's.
    pub labelled_coverage: f64,
}

/// What is estimated about a model's decisions, on the candidate pairs it was estimated on
/// that its weights decide (not those two valid ID numbers decide), at the chosen thresholds:
/// each pair's match probability from the estimate named by [`ThresholdChoice::estimate_from`]
/// (labelled pairs, or the model's posterior). The review counts are counted, not estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelEstimate {
    /// Expected share of true matches among the pairs at or above the link threshold.
    pub precision: f64,
    /// Expected share of all true matches that are at or above the link threshold (1 when
    /// no match is expected, as precision is 1 when nothing is linked).
    pub recall: f64,
    /// Share of the pairs that fall in the review band.
    pub review_share: f64,
    /// Pairs in the review band.
    pub review_pairs: u64,
    /// Review pairs per record of the budget ([`ThresholdChoice::budget_records`]).
    pub review_per_record: f64,
    /// The precision the model's own posterior claims at the same thresholds (equal to
    /// `precision` when that is the estimate used; 0 in models stored before it was kept).
    pub model_precision: f64,
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
    /// The estimate of its precision, recall and review share at its thresholds (absent in
    /// models stored before it was computed).
    #[serde(default)]
    pub estimate: ModelEstimate,
    /// How the thresholds were chosen (absent in models stored before they followed the
    /// estimate).
    #[serde(default)]
    pub choice: ThresholdChoice,
}

impl LinkageModel {
    /// Estimates a model by EM on candidate pairs with default settings; the pairs whose
    /// valid ID numbers decide them are also the labelled pairs its thresholds are calibrated
    /// on, and the review budget is a share of `records_without_id` (every record, when which
    /// have a valid ID number is not known).
    pub fn estimate(pairs: &[ComparisonVector], records_without_id: u64) -> LinkageModel {
        Self::estimate_with(pairs, records_without_id, &EmSettings::default())
    }

    /// Estimates a model by EM on candidate pairs ([`LinkageModel::estimate`]).
    pub fn estimate_with(
        pairs: &[ComparisonVector],
        records_without_id: u64,
        settings: &EmSettings,
    ) -> LinkageModel {
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for pair in pairs {
            *counts.entry(pair.key()).or_insert(0) += 1;
        }
        let labelled = LabelledPairs::from_counts(&counts);
        Self::estimate_from_counts(&counts, &labelled, records_without_id, settings)
    }

    /// Estimates a model by EM from pattern counts (keys of [`ComparisonVector::key`]), then
    /// chooses its thresholds from the estimated precision of the pairs its weights decide:
    /// calibrated on `labelled` (usually [`LabelledPairs::from_counts`] of the same counts,
    /// perhaps with more from elsewhere) when it holds enough of each kind, else the model's
    /// own. The review budget is a share of `records_without_id`.
    pub fn estimate_from_counts(
        counts: &HashMap<u64, u64>,
        labelled: &LabelledPairs,
        records_without_id: u64,
        settings: &EmSettings,
    ) -> LinkageModel {
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
                uncorroborated: None,
            },
            iterations,
            converged,
            pairs: total as u64,
            estimate: ModelEstimate::default(),
            choice: ThresholdChoice::default(),
        };
        let calibration = model.calibrate(&patterns, labelled, settings);
        let (thresholds, choice) = model.choose_thresholds(
            &patterns,
            labelled.totals(),
            calibration.as_ref(),
            records_without_id,
            settings,
        );
        model.thresholds = thresholds;
        model.choice = choice;
        model.estimate = model.estimate_on(&patterns, calibration.as_ref());
        model
    }

    /// The calibration of this model's weights on `labelled`, for the pairs of `patterns`
    /// its weights decide; `None` below the minimum labelled pairs of `settings`.
    pub fn calibrate(
        &self,
        patterns: &[(ComparisonVector, f64)],
        labelled: &LabelledPairs,
        settings: &EmSettings,
    ) -> Option<Calibration> {
        Calibration::fit(
            self,
            labelled,
            patterns,
            LabelCounts {
                matches: settings.min_labelled_matches,
                non_matches: settings.min_labelled_non_matches,
            },
        )
    }

    /// The thresholds from the estimated precision on `patterns` (the calibrated one when
    /// `calibration` is given, else the model's posterior): `upper` the lowest pattern weight
    /// at which the estimated precision of every pair at or above it still meets the target,
    /// never below the floor (above every weight when none meets it); then `lower` the lowest
    /// weight, never below its floor, at which the review band `[lower, upper)` holds at most
    /// the budget. The floors when fewer than two weights are seen among the pairs the
    /// weights decide, or when the estimate is the model's and EM did not converge (the
    /// calibrated estimate measures the weights as they are, converged or not). With the
    /// calibrated estimate and a link threshold that meets the target, `uncorroborated` is
    /// chosen as `upper` is, on the pairs no second field corroborates alone, never below
    /// `upper`.
    fn choose_thresholds(
        &self,
        patterns: &[(ComparisonVector, f64)],
        labelled: LabelCounts,
        calibration: Option<&Calibration>,
        records_without_id: u64,
        settings: &EmSettings,
    ) -> (Thresholds, ThresholdChoice) {
        let floor_upper = self.weight_at_probability(settings.min_link_probability);
        let floor_lower = self
            .weight_at_probability(settings.min_review_probability)
            .min(floor_upper);
        let steps = self.weight_steps(patterns, calibration);
        let (pairs, matches) = steps
            .iter()
            .fold((0.0, 0.0), |(p, m), s| (p + s.pairs, m + s.matches));
        let mut choice = ThresholdChoice {
            target_precision: settings.target_precision,
            review_budget: settings.review_budget,
            budget_records: records_without_id,
            upper_from: LinkRule::Floor,
            lower_from: ReviewRule::Floor,
            estimate_from: if calibration.is_some() {
                EstimateSource::LabelledPairs
            } else {
                EstimateSource::Model
            },
            labelled,
            match_share: if pairs > 0.0 { matches / pairs } else { 0.0 },
            labelled_coverage: calibration.map_or(0.0, Calibration::coverage),
        };
        let floors = Thresholds {
            lower: floor_lower,
            upper: floor_upper,
            uncorroborated: None,
        };
        let usable = calibration.is_some() || self.converged;
        if !usable || steps.len() < 2 {
            return (floors, choice);
        }

        // Strongest first, stopping at the first weight whose precision misses the target:
        // every threshold at or above the chosen one meets it. (Under the model's posterior
        // the precision only falls on the way down; under the calibrated estimate it does
        // within one kind of pair, and the kinds mix.)
        let upper = match lowest_on_target(&steps, settings.target_precision) {
            Some(weight) if weight > floor_upper => {
                choice.upper_from = LinkRule::Estimate;
                weight
            }
            Some(_) => floor_upper,
            None => {
                choice.upper_from = LinkRule::TargetUnreached;
                self.above_every_weight().max(floor_upper)
            }
        };

        let budget = (settings.review_budget * records_without_id as f64).floor();
        let mut lower = floor_lower;
        let mut band = 0.0;
        let mut last_fitting = upper;
        for step in steps
            .iter()
            .filter(|s| s.weight < upper && s.weight >= floor_lower)
        {
            if band + step.pairs > budget {
                lower = if last_fitting < upper {
                    (last_fitting - WEIGHT_SLACK).max(floor_lower)
                } else {
                    upper
                };
                choice.lower_from = ReviewRule::Budget;
                break;
            }
            band += step.pairs;
            last_fitting = step.weight;
        }
        // The pairs no second field corroborates, on their own: measured only on labelled
        // pairs (the model's posterior is what the corroboration rule distrusts).
        let uncorroborated = match (calibration, choice.upper_from) {
            (Some(_), LinkRule::Estimate | LinkRule::Floor) => {
                let steps = self.weight_steps_of(patterns, calibration, |v| !v.corroborated());
                lowest_on_target(&steps, settings.target_precision).map(|w| w.max(upper))
            }
            _ => None,
        };
        (
            Thresholds {
                lower: lower.min(upper),
                upper,
                uncorroborated,
            },
            choice,
        )
    }

    /// A weight no pair can reach (finite, so that it can be stored).
    fn above_every_weight(&self) -> f64 {
        let strongest: f64 = Field::ALL
            .iter()
            .map(|&field| {
                (0..LEVEL_COUNTS[field as usize] as u8)
                    .map(|level| self.level_weight(field, level))
                    .fold(0.0, f64::max)
            })
            .sum();
        strongest + 1.0
    }

    /// The distinct weights of the pairs the weights decide (not two valid ID numbers),
    /// strongest first, with how many pairs have each and how many of them are estimated to
    /// be matches (calibrated when `calibration` is given, else the model's posterior).
    fn weight_steps(
        &self,
        patterns: &[(ComparisonVector, f64)],
        calibration: Option<&Calibration>,
    ) -> Vec<WeightStep> {
        self.weight_steps_of(patterns, calibration, |_| true)
    }

    /// [`LinkageModel::weight_steps`] of the pairs `keep` accepts.
    fn weight_steps_of(
        &self,
        patterns: &[(ComparisonVector, f64)],
        calibration: Option<&Calibration>,
        keep: impl Fn(&ComparisonVector) -> bool,
    ) -> Vec<WeightStep> {
        let mut steps: Vec<WeightStep> = patterns
            .iter()
            .filter(|(vector, n)| {
                vector.ids == IdRelation::Undetermined && *n > 0.0 && keep(vector)
            })
            .map(|(vector, n)| {
                let posterior = posterior_of(vector, &self.m, &self.u, self.prior);
                WeightStep {
                    weight: self.vector_weight(vector),
                    pairs: *n,
                    matches: n * calibration.map_or(posterior, |c| c.probability(self, vector)),
                    model_matches: n * posterior,
                }
            })
            .collect();
        steps.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        steps.dedup_by(|next, kept| {
            if kept.weight - next.weight <= WEIGHT_SLACK {
                kept.pairs += next.pairs;
                kept.matches += next.matches;
                kept.model_matches += next.model_matches;
                true
            } else {
                false
            }
        });
        steps
    }

    /// Expected precision and recall of the link threshold and the review band, summing each
    /// pattern's estimated match probability (calibrated when `calibration` is given, else
    /// the posterior) over the pairs the weights decide; the review band counted.
    fn estimate_on(
        &self,
        patterns: &[(ComparisonVector, f64)],
        calibration: Option<&Calibration>,
    ) -> ModelEstimate {
        let (mut linked, mut linked_matches, mut linked_model_matches) = (0.0, 0.0, 0.0);
        let (mut review, mut matches, mut total) = (0.0, 0.0, 0.0);
        for step in self.weight_steps(patterns, calibration) {
            total += step.pairs;
            matches += step.matches;
            match self.decide_weight(step.weight) {
                Decision::Link => {
                    linked += step.pairs;
                    linked_matches += step.matches;
                    linked_model_matches += step.model_matches;
                }
                Decision::Review => review += step.pairs,
                Decision::Distinct => {}
            }
        }
        let share = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
        // Nothing linked: no wrong link; nothing to find: nothing missed.
        let ratio = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 1.0 };
        ModelEstimate {
            precision: ratio(linked_matches, linked),
            recall: ratio(linked_matches, matches),
            review_share: share(review, total),
            review_pairs: review as u64,
            review_per_record: share(review, self.choice.budget_records as f64),
            model_precision: ratio(linked_model_matches, linked),
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

    /// Whether a pair that no second field corroborates ([`ComparisonVector::corroborated`])
    /// is strong enough to link without one: at or above both link thresholds, never when
    /// [`Thresholds::uncorroborated`] is `None`. Ingest sends such a pair below it to review.
    pub fn links_uncorroborated(&self, vector: &ComparisonVector) -> bool {
        let weight = self.vector_weight(vector);
        self.thresholds
            .uncorroborated
            .is_some_and(|threshold| weight >= threshold && weight >= self.thresholds.upper)
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

/// Just below the lowest weight of `steps` (strongest first) at which the estimated
/// precision of every pair at or above it meets `target`, stopping at the first weight that
/// misses it, so that every threshold at or above the one returned meets it too; `None` when
/// even the strongest weight misses it (or there is none).
fn lowest_on_target(steps: &[WeightStep], target: f64) -> Option<f64> {
    let mut lowest = None;
    let (mut pairs, mut matches) = (0.0, 0.0);
    for step in steps {
        pairs += step.pairs;
        matches += step.matches;
        if matches < target * pairs {
            break;
        }
        lowest = Some(step.weight - WEIGHT_SLACK);
    }
    lowest
}

impl Scorer for LinkageModel {
    fn weight(&self, vector: &ComparisonVector) -> f64 {
        self.vector_weight(vector)
    }

    fn posterior(&self, vector: &ComparisonVector) -> f64 {
        posterior_of(vector, &self.m, &self.u, self.prior)
    }
}

/// The pairs at one match weight.
#[derive(Clone, Copy, Debug)]
struct WeightStep {
    weight: f64,
    pairs: f64,
    /// Expected true matches among them, under the estimate used.
    matches: f64,
    /// Expected true matches among them, under the model's posterior.
    model_matches: f64,
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
    use crate::linkage::blocking::KeyKinds;
    use crate::linkage::record::LinkInput;
    use model::{id_number_check_digit, Department};

    /// Every pattern over name, birth date, phone and address, with its probability among
    /// matches under `m` and among non-matches under `u`.
    fn four_field_patterns(m: &LevelTable, u: &LevelTable) -> Vec<(ComparisonVector, f64, f64)> {
        let mut out = Vec::new();
        let fields = [0usize, 1, 2, 3];
        let mut levels = [0usize; 4];
        loop {
            let (mut pm, mut pu) = (1.0, 1.0);
            let mut vector = ComparisonVector {
                levels: [NULL_LEVEL; FIELDS],
                ids: IdRelation::Undetermined,
            };
            for (k, &f) in fields.iter().enumerate() {
                pm *= m[f][levels[k]];
                pu *= u[f][levels[k]];
                vector.levels[f] = levels[k] as u8;
            }
            out.push((vector, pm, pu));
            // Next combination.
            let mut k = 0;
            loop {
                if k == fields.len() {
                    return out;
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

    /// Expected pattern counts of a two-class mixture over name, birth date, phone, address.
    fn mixture(m: &LevelTable, u: &LevelTable, prior: f64, total: f64) -> HashMap<u64, u64> {
        four_field_patterns(m, u)
            .into_iter()
            .map(|(vector, pm, pu)| {
                let n = (prior * pm + (1.0 - prior) * pu) * total;
                (vector.key(), n.round() as u64)
            })
            .collect()
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
        let model = estimated(
            &counts,
            1_000_000,
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
        let model = estimated(&counts, 20, &EmSettings::default());
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
                uncorroborated: None,
            },
            iterations: 0,
            converged: true,
            pairs: 0,
            estimate: ModelEstimate::default(),
            choice: ThresholdChoice::default(),
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
        let model = estimated(&counts, 10_000, &EmSettings::default());
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

    /// A model estimated on `counts`, calibrated on their labelled pairs (if enough).
    fn estimated(
        counts: &HashMap<u64, u64>,
        records_without_id: u64,
        settings: &EmSettings,
    ) -> LinkageModel {
        let labelled = LabelledPairs::from_counts(counts);
        LinkageModel::estimate_from_counts(counts, &labelled, records_without_id, settings)
    }

    /// The counts as the estimation reads them.
    fn patterns_of(counts: &HashMap<u64, u64>) -> Vec<(ComparisonVector, f64)> {
        let mut patterns: Vec<(ComparisonVector, f64)> = counts
            .iter()
            .map(|(&key, &n)| (ComparisonVector::from_key(key), n as f64))
            .collect();
        patterns.sort_by_key(|(v, _)| v.key());
        patterns
    }

    /// The floors of `model` under the default settings.
    fn floors(model: &LinkageModel) -> Thresholds {
        let settings = EmSettings::default();
        Thresholds {
            lower: model.weight_at_probability(settings.min_review_probability),
            upper: model.weight_at_probability(settings.min_link_probability),
            uncorroborated: None,
        }
    }

    /// The model's estimate had its thresholds been `thresholds`.
    fn estimate_at(
        model: &LinkageModel,
        counts: &HashMap<u64, u64>,
        thresholds: Thresholds,
    ) -> ModelEstimate {
        let mut other = model.clone();
        other.thresholds = thresholds;
        other.estimate_on(&patterns_of(counts), None)
    }

    /// A mixture where names, birth dates, phones and addresses overlap between matches and
    /// non-matches: the posterior 0.5 floor does not reach precision 0.995.
    fn overlapping(prior: f64) -> HashMap<u64, u64> {
        let m = table(&[
            &[0.6, 0.15, 0.1, 0.1, 0.05],
            &[0.7, 0.1, 0.1, 0.1],
            &[0.5, 0.1, 0.4],
            &[0.5, 0.25, 0.15, 0.1],
        ]);
        let u = table(&[
            &[0.1, 0.1, 0.1, 0.2, 0.5],
            &[0.1, 0.1, 0.2, 0.6],
            &[0.05, 0.05, 0.9],
            &[0.15, 0.2, 0.3, 0.35],
        ]);
        mixture(&m, &u, prior, 1e6)
    }

    fn converging() -> EmSettings {
        EmSettings {
            max_iterations: 1_000,
            tolerance: 1e-7,
            ..EmSettings::default()
        }
    }

    #[test]
    fn the_link_threshold_is_the_lowest_weight_whose_estimated_precision_meets_the_target() {
        let counts = overlapping(0.3);
        let model = estimated(&counts, 1_000_000, &converging());
        assert!(model.converged, "{} rounds", model.iterations);
        assert_eq!(
            model.choice.upper_from,
            LinkRule::Estimate,
            "{:?}",
            model.choice
        );
        assert_eq!(model.choice.target_precision, 0.995);
        let floor = floors(&model);
        assert!(
            model.thresholds.upper > floor.upper,
            "{:?} {floor:?}",
            model.thresholds
        );
        // On the estimate, the links meet the target ...
        let e = model.estimate;
        assert!(e.precision >= 0.995, "{e:?}");
        assert!(e.recall > 0.0 && e.recall < 1.0, "{e:?}");
        // ... and the next weight down would not: the threshold is the lowest that does.
        let steps = model.weight_steps(&patterns_of(&counts), None);
        let next_down = steps
            .iter()
            .map(|s| s.weight)
            .find(|w| *w < model.thresholds.upper)
            .unwrap();
        let looser = estimate_at(
            &model,
            &counts,
            Thresholds {
                lower: model.thresholds.lower.min(next_down),
                upper: next_down,
                uncorroborated: None,
            },
        );
        assert!(looser.precision < 0.995, "{looser:?}");
        // At the old fixed threshold (the floor), this data misses the target.
        assert!(estimate_at(&model, &counts, floor).precision < 0.995);
    }

    #[test]
    fn harder_data_and_a_higher_target_give_a_stricter_link_threshold() {
        // The same m and u, fewer matches among the candidate pairs: every weight's posterior
        // is lower, so the links must start higher.
        let model = |prior: f64| {
            let model = estimated(&overlapping(prior), 1_000_000, &converging());
            assert!(model.converged, "prior {prior}");
            model
        };
        let easier = model(0.3);
        let harder = model(0.15);
        assert_eq!(easier.choice.upper_from, LinkRule::Estimate);
        assert_eq!(harder.choice.upper_from, LinkRule::Estimate);
        assert!(
            harder.thresholds.upper > easier.thresholds.upper,
            "{:?} vs {:?}",
            harder.thresholds,
            easier.thresholds
        );
        assert!(harder.estimate.precision >= 0.995 && easier.estimate.precision >= 0.995);
        assert!(harder.estimate.recall < easier.estimate.recall);
        // Harder still: even the strongest pattern misses the target, so nothing links.
        let hardest = model(0.1);
        assert_eq!(hardest.choice.upper_from, LinkRule::TargetUnreached);
        assert!(hardest.thresholds.upper > harder.thresholds.upper);
        for (vector, _) in patterns_of(&overlapping(0.1)) {
            assert_ne!(hardest.decide_vector(&vector), Decision::Link, "{vector:?}");
        }
        assert_eq!(
            (hardest.estimate.precision, hardest.estimate.recall),
            (1.0, 0.0)
        );
        assert!(
            hardest.estimate.review_pairs > 0,
            "the strongest pairs go to review"
        );

        let stricter = estimated(
            &overlapping(0.3),
            1_000_000,
            &EmSettings {
                target_precision: 0.999,
                ..converging()
            },
        );
        assert!(stricter.thresholds.upper > easier.thresholds.upper);
        assert!(
            stricter.estimate.precision >= 0.999,
            "{:?}",
            stricter.estimate
        );
        assert_eq!(stricter.choice.target_precision, 0.999);
    }

    #[test]
    fn the_review_band_never_holds_more_than_the_budget() {
        let counts = overlapping(0.3);
        let mut saw = (false, false);
        for records in [0u64, 10, 1_000, 10_000, 100_000, 1_000_000, 100_000_000] {
            let model = estimated(&counts, records, &converging());
            let budget = (0.02 * records as f64).floor() as u64;
            let e = model.estimate;
            let floor = floors(&model);
            let t = model.thresholds;
            assert!(t.lower <= t.upper && t.lower >= floor.lower, "{t:?}");
            assert_eq!(model.choice.budget_records, records);
            match model.choice.lower_from {
                ReviewRule::Budget => {
                    saw.0 = true;
                    assert!(e.review_pairs <= budget, "{records}: {e:?} budget {budget}");
                    // The widest band that fits: one weight further down would not.
                    let next_down = model
                        .weight_steps(&patterns_of(&counts), None)
                        .iter()
                        .map(|s| s.weight)
                        .find(|w| *w < t.lower)
                        .unwrap();
                    let wider = estimate_at(
                        &model,
                        &counts,
                        Thresholds {
                            lower: next_down,
                            upper: t.upper,
                            uncorroborated: None,
                        },
                    );
                    assert!(wider.review_pairs > budget, "{records}: {wider:?}");
                }
                ReviewRule::Floor => {
                    saw.1 = true;
                    assert_eq!(t.lower, floor.lower);
                    assert!(e.review_pairs <= budget, "{records}: {e:?} budget {budget}");
                }
            }
            if records > 0 {
                assert!(
                    (e.review_per_record - e.review_pairs as f64 / records as f64).abs() < 1e-12
                );
            }
        }
        assert!(saw.0 && saw.1, "both rules seen: {saw:?}");
        // No budget at all: no review band.
        let none = estimated(&counts, 0, &converging());
        assert_eq!(none.thresholds.lower, none.thresholds.upper);
        assert_eq!(none.estimate.review_pairs, 0);
        assert_eq!(
            none.decide_weight(none.thresholds.upper - 1e-3),
            Decision::Distinct
        );
    }

    #[test]
    fn the_link_threshold_never_goes_below_the_floor() {
        // Well separated: the target is met far below posterior 0.5.
        let m = table(&[
            &[0.9, 0.05, 0.03, 0.01, 0.01],
            &[0.95, 0.03, 0.01, 0.01],
            &[0.9, 0.05, 0.05],
            &[0.9, 0.05, 0.03, 0.02],
        ]);
        let u = table(&[
            &[0.001, 0.001, 0.01, 0.02, 0.968],
            &[0.001, 0.01, 0.04, 0.949],
            &[0.001, 0.001, 0.998],
            &[0.01, 0.02, 0.07, 0.9],
        ]);
        let counts = mixture(&m, &u, 0.3, 1e6);
        for target in [0.0, 0.5, 0.9, 0.995] {
            let model = estimated(
                &counts,
                1_000_000,
                &EmSettings {
                    target_precision: target,
                    ..converging()
                },
            );
            let floor = floors(&model);
            assert_eq!(model.choice.upper_from, LinkRule::Floor, "target {target}");
            assert_eq!(model.thresholds.upper, floor.upper, "target {target}");
            assert!(model.estimate.precision >= 0.995, "{:?}", model.estimate);
        }
        // Whatever the target, on data that needs a stricter threshold too.
        for target in [0.0, 0.5, 0.9, 0.995, 0.999, 1.0] {
            let model = estimated(
                &overlapping(0.3),
                1_000_000,
                &EmSettings {
                    target_precision: target,
                    ..converging()
                },
            );
            assert!(
                model.thresholds.upper >= floors(&model).upper,
                "target {target}"
            );
        }
    }

    #[test]
    fn a_target_no_weight_reaches_links_nothing_and_says_so() {
        // A hand-made model whose strongest pattern has posterior 0.99.
        let model = LinkageModel {
            m: table(&[&[0.5, 0.2, 0.1, 0.1, 0.1]]),
            u: table(&[&[0.05, 0.2, 0.1, 0.1, 0.55]]),
            prior: 0.9,
            thresholds: Thresholds {
                lower: 0.0,
                upper: 0.0,
                uncorroborated: None,
            },
            iterations: 3,
            converged: true,
            pairs: 0,
            estimate: ModelEstimate::default(),
            choice: ThresholdChoice::default(),
        };
        let mut counts = HashMap::new();
        for level in 0..5u8 {
            let mut levels = [NULL_LEVEL; FIELDS];
            levels[0] = level;
            let v = ComparisonVector {
                levels,
                ids: IdRelation::Undetermined,
            };
            counts.insert(v.key(), 100);
        }
        let patterns = patterns_of(&counts);
        let (thresholds, choice) = model.choose_thresholds(
            &patterns,
            LabelCounts::default(),
            None,
            1_000,
            &EmSettings::default(),
        );
        assert!(model.probability(model.level_weight(Field::Name, 0)) < 0.995);
        assert_eq!(choice.upper_from, LinkRule::TargetUnreached);
        assert!(thresholds.upper >= floors(&model).upper);
        let mut chosen = model.clone();
        chosen.thresholds = thresholds;
        chosen.choice = choice;
        for (vector, _) in &patterns {
            assert_ne!(chosen.decide_vector(vector), Decision::Link);
        }
        // The budget (20 of 1,000 records) takes the strongest pairs to review: none of the
        // 100 of the strongest pattern fits, so the band is empty.
        assert_eq!(choice.lower_from, ReviewRule::Budget);
        assert_eq!(chosen.estimate_on(&patterns, None).review_pairs, 0);
        let (wide_t, wide) = model.choose_thresholds(
            &patterns,
            LabelCounts::default(),
            None,
            100_000,
            &EmSettings::default(),
        );
        assert_eq!(wide.upper_from, LinkRule::TargetUnreached);
        chosen.thresholds = wide_t;
        assert!(chosen.estimate_on(&patterns, None).review_pairs >= 100);
        assert!(serde_json::to_string(&chosen).is_ok_and(|j| j.contains("target_unreached")));
    }

    #[test]
    fn degenerate_inputs_get_the_floor_thresholds() {
        let check = |model: &LinkageModel, what: &str| {
            let floor = floors(model);
            assert_eq!(model.thresholds, floor, "{what}");
            assert_eq!(model.choice.upper_from, LinkRule::Floor, "{what}");
            assert_eq!(model.choice.lower_from, ReviewRule::Floor, "{what}");
            let e = model.estimate;
            for value in [e.precision, e.recall, e.review_share, e.review_per_record] {
                assert!(
                    value.is_finite() && (0.0..=1.0).contains(&value),
                    "{what}: {e:?}"
                );
            }
        };
        // No pairs at all.
        check(&LinkageModel::estimate(&[], 0), "no pairs");
        check(
            &LinkageModel::estimate(&[], 1_000),
            "no pairs, some records",
        );
        // Every pair the same pattern.
        let v = ComparisonVector {
            levels: [0, 1, 0, 2, 0, NULL_LEVEL],
            ids: IdRelation::Undetermined,
        };
        check(&LinkageModel::estimate(&[v; 500], 500), "one pattern");
        // Only pairs that valid ID numbers decide: nothing for the weights to decide.
        let mut decided = Vec::new();
        for (i, ids) in [IdRelation::BothValidEqual, IdRelation::BothValidDifferent]
            .into_iter()
            .enumerate()
        {
            for level in 0..LEVEL_COUNTS[0] as u8 {
                let mut levels = [i as u8; FIELDS];
                levels[0] = level;
                levels[5] = NULL_LEVEL;
                decided.extend([ComparisonVector { levels, ids }; 60]);
            }
        }
        check(
            &LinkageModel::estimate(&decided, 0),
            "ID-decided pairs only",
        );
        // EM stopped before it converged.
        let counts = overlapping(0.3);
        let unconverged = estimated(
            &counts,
            1_000_000,
            &EmSettings {
                max_iterations: 2,
                ..EmSettings::default()
            },
        );
        assert!(!unconverged.converged);
        check(&unconverged, "EM not converged");
        // The same data, converged, chooses otherwise: the floor above is the rule, not chance.
        let converged = estimated(&counts, 1_000_000, &converging());
        assert_eq!(converged.choice.upper_from, LinkRule::Estimate);
    }

    #[test]
    fn a_threshold_chosen_at_a_weight_links_that_weight_after_storage() {
        let counts = overlapping(0.3);
        let model = estimated(&counts, 1_000_000, &converging());
        let back: LinkageModel =
            serde_json::from_str(&serde_json::to_string(&model).unwrap()).unwrap();
        assert_eq!(back.choice, model.choice);
        for (vector, _) in patterns_of(&counts) {
            assert_eq!(back.decide_vector(&vector), model.decide_vector(&vector));
        }
        // The lowest linked weight is linked, and the estimate counts it.
        let lowest = model
            .weight_steps(&patterns_of(&counts), None)
            .iter()
            .map(|s| s.weight)
            .filter(|w| *w >= model.thresholds.upper)
            .fold(f64::INFINITY, f64::min);
        assert!(lowest - model.thresholds.upper <= 2.0 * WEIGHT_SLACK);
        assert_eq!(back.decide_weight(lowest), Decision::Link);
    }

    /// The tables of [`overlapping`], as a model with the given prior would hold them.
    fn overlapping_tables() -> (LevelTable, LevelTable) {
        let m = table(&[
            &[0.6, 0.15, 0.1, 0.1, 0.05],
            &[0.7, 0.1, 0.1, 0.1],
            &[0.5, 0.1, 0.4],
            &[0.5, 0.25, 0.15, 0.1],
        ]);
        let u = table(&[
            &[0.1, 0.1, 0.1, 0.2, 0.5],
            &[0.1, 0.1, 0.2, 0.6],
            &[0.05, 0.05, 0.9],
            &[0.15, 0.2, 0.3, 0.35],
        ]);
        (m, u)
    }

    /// A converged model with these tables and prior (no thresholds yet).
    fn hand_made(m: &LevelTable, u: &LevelTable, prior: f64) -> LinkageModel {
        LinkageModel {
            m: normalise(m),
            u: normalise(u),
            prior,
            thresholds: Thresholds {
                lower: 0.0,
                upper: 0.0,
                uncorroborated: None,
            },
            iterations: 1,
            converged: true,
            pairs: 0,
            estimate: ModelEstimate::default(),
            choice: ThresholdChoice::default(),
        }
    }

    /// Labelled pairs drawn from `(m, u)`: `matches` same-person pairs, `non_matches` others.
    fn labelled_from(
        m: &LevelTable,
        u: &LevelTable,
        matches: f64,
        non_matches: f64,
    ) -> LabelledPairs {
        let mut labelled = LabelledPairs::default();
        for (vector, pm, pu) in four_field_patterns(m, u) {
            labelled.add(&vector, KeyKinds::NONE, true, (pm * matches).round() as u64);
            labelled.add(
                &vector,
                KeyKinds::NONE,
                false,
                (pu * non_matches).round() as u64,
            );
        }
        labelled
    }

    /// The true precision of linking every pair at or above `threshold` in a mixture of
    /// `(m, u)` with match share `prior`, weighed by `model`.
    fn true_precision(
        model: &LinkageModel,
        m: &LevelTable,
        u: &LevelTable,
        prior: f64,
        threshold: f64,
    ) -> f64 {
        let (mut linked, mut matched) = (0.0, 0.0);
        for (vector, pm, pu) in four_field_patterns(m, u) {
            if model.vector_weight(&vector) >= threshold {
                linked += prior * pm + (1.0 - prior) * pu;
                matched += prior * pm;
            }
        }
        if linked > 0.0 {
            matched / linked
        } else {
            1.0
        }
    }

    #[test]
    fn labelled_pairs_recover_the_true_precision_whatever_the_posterior_says() {
        // The pairs to decide: 30% matches. The model has the right weights but half the
        // prior, so its posterior under-states every pair (a conservative estimate, as EM's
        // is on blocked pairs). The labelled pairs are drawn from the same m and u with
        // another match share (half), as pairs of ID holders would be.
        let (m, u) = overlapping_tables();
        let truth = 0.3;
        let counts = mixture(&m, &u, truth, 1e6);
        let patterns = patterns_of(&counts);
        let labelled = labelled_from(&m, &u, 20_000.0, 20_000.0);
        let model = hand_made(&m, &u, truth / 2.0);
        let settings = EmSettings::default();
        let calibration = model.calibrate(&patterns, &labelled, &settings).unwrap();
        assert!(
            (calibration.match_share() - truth).abs() < 0.01,
            "the match share of the pairs to decide: {}",
            calibration.match_share()
        );
        // At every weight, the calibrated estimate of everything at or above it is the true
        // precision (within the smoothing of the few labelled pairs of rare patterns).
        let steps = model.weight_steps(&patterns, Some(&calibration));
        let (mut pairs, mut matches) = (0.0, 0.0);
        for step in &steps {
            pairs += step.pairs;
            matches += step.matches;
            let truth_here = true_precision(&model, &m, &u, truth, step.weight - WEIGHT_SLACK);
            assert!(
                (matches / pairs - truth_here).abs() < 0.005,
                "at {}: estimated {} true {truth_here}",
                step.weight,
                matches / pairs
            );
        }

        let (raw, raw_choice) =
            model.choose_thresholds(&patterns, labelled.totals(), None, 1_000_000, &settings);
        let (calibrated, choice) = model.choose_thresholds(
            &patterns,
            labelled.totals(),
            Some(&calibration),
            1_000_000,
            &settings,
        );
        assert_eq!(raw_choice.estimate_from, EstimateSource::Model);
        assert_eq!(choice.estimate_from, EstimateSource::LabelledPairs);
        assert_eq!(choice.labelled, labelled.totals());
        assert!((choice.match_share - truth).abs() < 0.01, "{choice:?}");
        // The conservative posterior asked for a stricter threshold than the truth needs.
        assert_eq!(raw_choice.upper_from, LinkRule::Estimate);
        assert_eq!(choice.upper_from, LinkRule::Estimate);
        assert!(calibrated.upper < raw.upper, "{calibrated:?} vs {raw:?}");
        assert!(calibrated.upper >= model.weight_at_probability(0.5));
        // The truth meets the target at the calibrated threshold, which sits within a bit of
        // the lowest threshold at which the truth does (the half pair each bin is smoothed
        // with makes the estimate a little cautious where labelled non-matches are few).
        assert!(true_precision(&model, &m, &u, truth, calibrated.upper) >= 0.995);
        let truth_lowest = steps
            .iter()
            .map(|s| s.weight - WEIGHT_SLACK)
            .take_while(|w| true_precision(&model, &m, &u, truth, *w) >= 0.995)
            .fold(f64::INFINITY, f64::min);
        assert!(
            calibrated.upper >= truth_lowest && calibrated.upper - truth_lowest < 1.0,
            "{calibrated:?}, truth {truth_lowest}"
        );
        assert!(
            raw.upper - truth_lowest > 2.0,
            "{raw:?}, truth {truth_lowest}"
        );

        // The estimate stored with the model is the calibrated one, next to the model's own.
        let mut chosen = model.clone();
        chosen.thresholds = calibrated;
        chosen.choice = choice;
        let e = chosen.estimate_on(&patterns, Some(&calibration));
        assert!(e.precision >= 0.995, "{e:?}");
        assert!(e.model_precision < e.precision, "{e:?}");
        let own = chosen.estimate_on(&patterns, None);
        assert_eq!(own.precision, own.model_precision);
    }

    #[test]
    fn too_few_labelled_pairs_fall_back_to_the_models_own_estimate_and_say_so() {
        // The mixture, with 150 pairs of each kind that valid ID numbers label.
        let mut counts = overlapping(0.3);
        let (m, u) = overlapping_tables();
        for (label, table) in [
            (IdRelation::BothValidEqual, &m),
            (IdRelation::BothValidDifferent, &u),
        ] {
            for (mut vector, pm, pu) in four_field_patterns(table, table) {
                vector.ids = label;
                let n = (pm.max(pu) * 150.0).round() as u64;
                if n > 0 {
                    *counts.entry(vector.key()).or_insert(0) += n;
                }
            }
        }
        let labelled = LabelledPairs::from_counts(&counts);
        let held = labelled.totals();
        assert!(held.matches < 200 && held.non_matches < 200, "{held:?}");
        assert!(held.matches >= 100 && held.non_matches >= 100, "{held:?}");
        let with = |min: u64| {
            LinkageModel::estimate_from_counts(
                &counts,
                &labelled,
                1_000_000,
                &EmSettings {
                    min_labelled_matches: min,
                    min_labelled_non_matches: min,
                    ..converging()
                },
            )
        };
        // Below the default minimum of 200 each: the model's own estimate, as if there were
        // no labels at all, and the labels it had are on record.
        let fallback = with(200);
        let unlabelled = with(u64::MAX);
        assert_eq!(fallback.choice.estimate_from, EstimateSource::Model);
        assert_eq!(fallback.choice.labelled, held);
        assert_eq!(fallback.thresholds, unlabelled.thresholds);
        assert_eq!(fallback.estimate, unlabelled.estimate);
        assert_eq!(
            fallback.estimate.precision,
            fallback.estimate.model_precision
        );
        // Enough under a lower minimum: the labelled estimate.
        let calibrated = with(100);
        assert_eq!(
            calibrated.choice.estimate_from,
            EstimateSource::LabelledPairs
        );
        assert_eq!(calibrated.choice.labelled, held);
        assert!(calibrated.thresholds.upper >= calibrated.weight_at_probability(0.5));
        let json = serde_json::to_string(&calibrated).unwrap();
        assert!(
            json.contains("\"estimate_from\":\"labelled_pairs\""),
            "{json}"
        );
    }

    #[test]
    fn a_calibrated_estimate_is_used_even_when_em_did_not_converge() {
        // The estimate measures the weights as they are; the floors stay the floors.
        let (m, u) = overlapping_tables();
        let counts = overlapping(0.3);
        let patterns = patterns_of(&counts);
        let mut model = hand_made(&m, &u, 0.3);
        model.converged = false;
        let labelled = labelled_from(&m, &u, 5_000.0, 5_000.0);
        let settings = EmSettings::default();
        let calibration = model.calibrate(&patterns, &labelled, &settings);
        let (t, choice) = model.choose_thresholds(
            &patterns,
            labelled.totals(),
            calibration.as_ref(),
            1_000,
            &settings,
        );
        assert_eq!(choice.estimate_from, EstimateSource::LabelledPairs);
        assert_eq!(choice.upper_from, LinkRule::Estimate);
        assert!(t.upper > model.weight_at_probability(0.5));
        let (t, choice) =
            model.choose_thresholds(&patterns, labelled.totals(), None, 1_000, &settings);
        assert_eq!(
            (choice.upper_from, choice.lower_from),
            (LinkRule::Floor, ReviewRule::Floor)
        );
        assert_eq!(t.upper, model.weight_at_probability(0.5));
    }

    #[test]
    fn degenerate_labelled_inputs_never_panic_and_keep_the_floors() {
        let check = |model: &LinkageModel, what: &str| {
            let t = model.thresholds;
            assert!(
                t.lower.is_finite() && t.upper.is_finite() && t.lower <= t.upper,
                "{what}"
            );
            assert!(t.upper >= model.weight_at_probability(0.5) - 1e-9, "{what}");
            let e = model.estimate;
            for value in [
                e.precision,
                e.recall,
                e.review_share,
                e.review_per_record,
                e.model_precision,
            ] {
                assert!(
                    value.is_finite() && (0.0..=1.0).contains(&value),
                    "{what}: {e:?}"
                );
            }
            assert!((0.0..=1.0).contains(&model.choice.match_share), "{what}");
        };
        let (m, u) = overlapping_tables();
        let many = labelled_from(&m, &u, 5_000.0, 5_000.0);
        let settings = converging();
        // Labels but nothing to decide.
        let model = LinkageModel::estimate_from_counts(&HashMap::new(), &many, 0, &settings);
        check(&model, "labels only");
        assert_eq!(model.choice.estimate_from, EstimateSource::LabelledPairs);
        assert_eq!(
            (model.choice.upper_from, model.choice.lower_from),
            (LinkRule::Floor, ReviewRule::Floor)
        );
        // Every labelled pair one pattern, both kinds: one bin, one rate for every weight.
        let mut one = LabelledPairs::default();
        let v = ComparisonVector {
            levels: [0, 0, 0, 0, NULL_LEVEL, NULL_LEVEL],
            ids: IdRelation::Undetermined,
        };
        one.add(&v, KeyKinds::NONE, true, 300);
        one.add(&v, KeyKinds::NONE, false, 300);
        let counts = overlapping(0.3);
        let model = LinkageModel::estimate_from_counts(&counts, &one, 1_000_000, &settings);
        check(&model, "one labelled pattern");
        // A flat rate of one half never meets the target: nothing links.
        assert_eq!(model.choice.upper_from, LinkRule::TargetUnreached);
        // Only matches, only non-matches, nothing at all: no calibration.
        for (matches, non_matches) in [(5_000.0, 0.0), (0.0, 5_000.0), (0.0, 0.0)] {
            let labelled = labelled_from(&m, &u, matches, non_matches);
            let model =
                LinkageModel::estimate_from_counts(&counts, &labelled, 1_000_000, &settings);
            check(&model, "one-sided labels");
            assert_eq!(model.choice.estimate_from, EstimateSource::Model);
        }
        // A single pattern to decide, or none with labels.
        let mut single = HashMap::new();
        single.insert(v.key(), 1_000);
        let model = LinkageModel::estimate_from_counts(&single, &many, 1_000, &settings);
        check(&model, "one pattern to decide");
    }

    /// A pair compared on name, birth date and address only (the others missing).
    fn on(name: u8, birth: u8, address: u8) -> ComparisonVector {
        let mut levels = [NULL_LEVEL; FIELDS];
        levels[Field::Name as usize] = name;
        levels[Field::BirthDate as usize] = birth;
        levels[Field::Address as usize] = address;
        ComparisonVector {
            levels,
            ids: IdRelation::Undetermined,
        }
    }

    /// A converged model in which an exact name weighs 4.2 bits, an exact birth date 6.5 and a
    /// different one -5.5, the same room 3.6, the same building 1, the same community -1.2
    /// and another compound -3.3; posterior 0.5 at 1.2 bits.
    fn names_births_addresses() -> LinkageModel {
        let m = table(&[
            &[0.9, 0.04, 0.03, 0.02, 0.01],
            &[0.9, 0.05, 0.03, 0.02],
            &[0.8, 0.1, 0.1],
            &[0.6, 0.2, 0.15, 0.05],
        ]);
        let u = table(&[
            &[0.05, 0.05, 0.1, 0.2, 0.6],
            &[0.01, 0.02, 0.07, 0.9],
            &[0.01, 0.01, 0.98],
            &[0.05, 0.1, 0.35, 0.5],
        ]);
        hand_made(&m, &u, 0.3)
    }

    /// Pairs with a birth date on both sides: the same name, birth date and room (0.0 bits
    /// from the top), the same name and birth date in another compound, the same name and
    /// room with different birth dates; labelled as they truly are (nearly all matches,
    /// matches, non-matches).
    fn corroborated_pairs(
        patterns: &mut Vec<(ComparisonVector, f64)>,
        labelled: &mut LabelledPairs,
    ) {
        patterns.push((on(0, 0, 0), 10_000.0));
        patterns.push((on(0, 0, 3), 2_000.0));
        patterns.push((on(0, 3, 0), 2_000.0));
        labelled.add(&on(0, 0, 0), KeyKinds::NONE, true, 3_000);
        labelled.add(&on(0, 0, 3), KeyKinds::NONE, true, 1_000);
        labelled.add(&on(0, 3, 0), KeyKinds::NONE, false, 1_000);
    }

    #[test]
    fn a_pair_no_second_field_corroborates_links_only_above_the_threshold_its_own_kind_meets() {
        let model = names_births_addresses();
        let (room, building, community) = (
            on(0, NULL_LEVEL, 0),
            on(0, NULL_LEVEL, 1),
            on(0, NULL_LEVEL, 2),
        );
        assert!(!room.corroborated() && !building.corroborated() && !community.corroborated());
        assert!(on(0, 0, 3).corroborated());
        let mut patterns = Vec::new();
        let mut labelled = LabelledPairs::default();
        corroborated_pairs(&mut patterns, &mut labelled);
        // Names and addresses alone: the same room is nearly always the same person, the same
        // building nine times in ten, the same community seldom.
        patterns.extend([(room, 200.0), (building, 100.0), (community, 500.0)]);
        labelled.add(&room, KeyKinds::NONE, true, 3_000);
        labelled.add(&building, KeyKinds::NONE, true, 900);
        labelled.add(&building, KeyKinds::NONE, false, 100);
        labelled.add(&community, KeyKinds::NONE, true, 10);
        labelled.add(&community, KeyKinds::NONE, false, 990);
        patterns.sort_by_key(|(v, _)| v.key());
        let settings = EmSettings::default();
        let calibration = model.calibrate(&patterns, &labelled, &settings).unwrap();
        let (thresholds, choice) = model.choose_thresholds(
            &patterns,
            labelled.totals(),
            Some(&calibration),
            100_000,
            &settings,
        );
        assert_eq!(choice.upper_from, LinkRule::Estimate, "{thresholds:?}");
        let mut chosen = model.clone();
        chosen.thresholds = thresholds;
        chosen.choice = choice;
        // Among all pairs, those in the same building are few enough for the links to meet
        // the target: the model links them ...
        assert!(calibration.probability(&model, &building) < 0.95);
        assert_eq!(chosen.decide_vector(&building), Decision::Link);
        assert_eq!(chosen.decide_vector(&community), Decision::Review);
        // ... but on their own, pairs without a corroborating field meet it only down to
        // the same room.
        let own = thresholds
            .uncorroborated
            .expect("measured on labelled pairs");
        let weight = |v: &ComparisonVector| model.vector_weight(v);
        assert!(own > thresholds.upper, "{thresholds:?}");
        assert!(
            own <= weight(&room) && own > weight(&building),
            "{thresholds:?}"
        );
        assert!(chosen.links_uncorroborated(&room));
        assert!(!chosen.links_uncorroborated(&building));
        assert!(!chosen.links_uncorroborated(&community));

        // The model's own estimate measures nothing of the kind: no such threshold.
        let (fallback, choice) =
            model.choose_thresholds(&patterns, labelled.totals(), None, 100_000, &settings);
        assert_eq!(choice.estimate_from, EstimateSource::Model);
        assert_eq!(fallback.uncorroborated, None);
        chosen.thresholds = fallback;
        assert!(chosen.decide_vector(&room) == Decision::Link);
        assert!(!chosen.links_uncorroborated(&room));
    }

    #[test]
    fn names_and_addresses_whose_labelled_pairs_miss_the_target_never_link_without_corroboration() {
        let model = names_births_addresses();
        let room = on(0, NULL_LEVEL, 0);
        let community = on(0, NULL_LEVEL, 2);
        let mut patterns = Vec::new();
        let mut labelled = LabelledPairs::default();
        corroborated_pairs(&mut patterns, &mut labelled);
        // The same name in the same room is the same person only seven times in ten (a
        // household's namesakes), and they are few among the pairs to decide.
        patterns.extend([(room, 50.0), (community, 500.0)]);
        labelled.add(&room, KeyKinds::NONE, true, 700);
        labelled.add(&room, KeyKinds::NONE, false, 300);
        labelled.add(&community, KeyKinds::NONE, true, 10);
        labelled.add(&community, KeyKinds::NONE, false, 990);
        patterns.sort_by_key(|(v, _)| v.key());
        let settings = EmSettings::default();
        let calibration = model.calibrate(&patterns, &labelled, &settings).unwrap();
        let (thresholds, choice) = model.choose_thresholds(
            &patterns,
            labelled.totals(),
            Some(&calibration),
            100_000,
            &settings,
        );
        let mut chosen = model.clone();
        chosen.thresholds = thresholds;
        chosen.choice = choice;
        // Mixed with the corroborated pairs, the links still meet the target, so the model
        // links the same name in the same room ...
        assert_eq!(choice.estimate_from, EstimateSource::LabelledPairs);
        assert_eq!(chosen.decide_vector(&room), Decision::Link);
        assert!(calibration.probability(&model, &room) < 0.9);
        // ... but not on their own, at any weight: such a pair never links without a
        // corroborating field, while corroborated pairs still do.
        assert_eq!(thresholds.uncorroborated, None, "{thresholds:?}");
        assert!(!chosen.links_uncorroborated(&room));
        assert_eq!(chosen.decide_vector(&on(0, 0, 3)), Decision::Link);
    }

    #[test]
    fn thresholds_stored_before_the_uncorroborated_one_read_as_never_linking_such_pairs() {
        let old: Thresholds = serde_json::from_str(r#"{"lower": -5.35, "upper": -1.1}"#).unwrap();
        assert_eq!(old.uncorroborated, None);
        assert_eq!((old.lower, old.upper), (-5.35, -1.1));
        // None is not written, so a model without it reads the same in an older version.
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("uncorroborated"), "{json}");
        let new = Thresholds {
            uncorroborated: Some(2.5),
            ..old
        };
        let back: Thresholds = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }
}
