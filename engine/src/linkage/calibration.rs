//! What a match weight really means, measured on pairs whose truth is known: candidate pairs
//! (the same blocking as every other pair) where both records carry a valid ID number — the
//! same number is the same person, two different numbers are two persons. They are compared
//! without the ID number, exactly as pairs without one are ([`ComparisonVector::compare`]
//! gives two valid numbers no level, and the weight ignores the ID relation), so their weights
//! are the weights the model gives pairs it must decide alone.
//!
//! Why not the model's own posterior: EM's posterior assumes the fields agree independently
//! given match status, and blocking breaks that (every candidate pair already shares a name,
//! a birth date, a phone or an address). On the synthetic evaluation the posterior is badly
//! calibrated: pairs it rates 0.9–0.99 are 99.8–100% true, and for a source with names and
//! addresses only it claims 0.99 where 0.90 is true (BENCHMARKS.md). A precision target read
//! off it is met on paper and missed, or overshot at a large cost in recall, in practice.
//!
//! Method, and why this one:
//! - **Per kind of pair, against the labelled pairs as they look on the same fields.** A
//!   pair to decide is compared on some fields (a pair where one record has no birth date
//!   compares none). It is calibrated against every labelled pair that compares at least those fields,
//!   with the others left out — what that labelled pair would look like had the others been
//!   missing — **and that would still have been a candidate on those fields alone** (it shares
//!   a blocking key that needs no other field, [`KeyKinds::any_within`]). Pairs of ID holders
//!   nearly always have a birth date (it is in the ID number), so without the first a pair
//!   lacking one would be judged by labelled pairs that merely share its weight, built from
//!   other evidence; without the second, by labelled pairs that blocking found through the
//!   very fields it lacks (the same name in the same community reads 99.8% true among people
//!   found by their birth date, and 70% among those found by name and address alone).
//!   Measured, either mistake was off by 0.3 to 0.9 for whole groups of pairs. This assumes
//!   that whether a field is missing says nothing about whether two records are the same
//!   person, given the fields they compare and how blocking found them.
//! - **Binned by weight, made monotone** (pool adjacent violators over the labelled pairs'
//!   distinct weights, linear between them, flat beyond): the share of true matches at a
//!   weight is measured, not modelled, so it holds whatever the dependence between fields;
//!   it only assumes that a higher weight never means a lower match rate, which is what a
//!   threshold on the weight assumes anyway. Each bin's rate is smoothed with half a match
//!   and half a non-match (Jeffreys), so a bin of few pairs never claims certainty, and a bin
//!   merges into the one below when it would rate lower. Estimating `m`/`u` per comparison
//!   pattern from the labels instead would spread the same few hundred labelled non-matches
//!   over hundreds of patterns.
//! - **Moved to the match prior of the pairs the weights decide** (Saerens, Latinne &
//!   Decaestecker 2002): labelled pairs are pairs of ID holders, whose share of true matches
//!   need not be that of the pairs without an ID number. The likelihood ratio of a weight (its
//!   rate's odds over the labelled pairs' prior odds) is taken to be the same in both; the
//!   prior of the pairs to decide is the fixed point at which the mean of their moved
//!   probabilities equals it — the maximum-likelihood mixing proportion, from their weights
//!   alone. Each kind of pair gets its own prior, drawn towards the common one by
//!   [`PRIOR_PSEUDO_PAIRS`] (a kind whose pairs all share one weight has no maximum inside
//!   (0, 1) of its own).
//! - **A kind of pair the labels do not cover is judged on the largest subset of its fields
//!   they do cover** (its other fields ignored): one compared on a field no labelled pair has
//!   (an ID number that is not valid on both sides, for one), or on fields too few labelled
//!   pairs of one class compare (in a source with names and addresses only, the household
//!   register's copies are the only ones with a birth date and a phone, and two of them are
//!   never one person). Keeping the model's posterior for such pairs instead let an
//!   unconverged model link 124 pairs of different persons, all of them, at "precision 1".
//!   Only a kind no subset of whose fields is covered keeps the posterior.
//!   [`Calibration::coverage`] says what share of the pairs to decide were judged on all
//!   their fields.
//!
//! What it cannot see: labelled pairs that differ from the pairs to decide in a way the
//! compared fields do not show — records of ID holders are often cleaner than those of a
//! source that omits the ID, and a cleaner labelled sample makes the estimate optimistic.
//! BENCHMARKS.md measures what that costs.
//!
//! Guarantees:
//! - [`Calibration::fit`] returns `None` (the caller falls back to the model's own estimate)
//!   with fewer labelled matches or non-matches than the minimum, or when there are pairs to
//!   decide and no subset of any of their kinds is covered.
//! - Every probability is finite and strictly between 0 and 1; for one kind of pair it never
//!   falls as the weight rises. The same inputs give the same calibration.
//! - Nothing here panics on empty, one-sided or non-finite input.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::blocking::{Blocker, KeyHashes, KeyKinds};
use super::compare::{ComparisonVector, IdRelation, FIELDS, NULL_LEVEL};
use super::record::LinkRecord;

/// Weights closer than this (bits) are one weight.
const WEIGHT_SLACK: f64 = 1e-6;
/// Smallest and largest match prior.
const MIN_PRIOR: f64 = 1e-6;
/// Rounds of a prior's fixed-point iteration (it converges in tens on real data).
const PRIOR_ROUNDS: u32 = 10_000;
const PRIOR_TOLERANCE: f64 = 1e-12;
/// How many pairs' worth the common prior of the pairs to decide weighs in each kind's own.
pub const PRIOR_PSEUDO_PAIRS: f64 = 100.0;

/// How many labelled pairs are true matches and how many are not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabelCounts {
    pub matches: u64,
    pub non_matches: u64,
}

impl LabelCounts {
    fn at_least(&self, minimum: &LabelCounts) -> bool {
        self.matches >= minimum.matches.max(1) && self.non_matches >= minimum.non_matches.max(1)
    }
}

/// Comparison patterns of labelled pairs, with the kinds of blocking key they share and how
/// many of them are the same person and how many are not. The patterns carry no ID relation:
/// they are what the pairs look like without their ID numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelledPairs {
    counts: HashMap<(u64, KeyKinds), LabelCounts>,
}

impl LabelledPairs {
    /// Adds `n` pairs that look like `vector` (its ID relation is ignored), share the
    /// blocking-key kinds `shared`, and are the same person or not.
    pub fn add(&mut self, vector: &ComparisonVector, shared: KeyKinds, same_person: bool, n: u64) {
        let key = ComparisonVector {
            levels: vector.levels,
            ids: IdRelation::Undetermined,
        }
        .key();
        let entry = self.counts.entry((key, shared)).or_default();
        if same_person {
            entry.matches = entry.matches.saturating_add(n);
        } else {
            entry.non_matches = entry.non_matches.saturating_add(n);
        }
    }

    /// The pairs of pattern counts ([`ComparisonVector::key`]) that two valid ID numbers
    /// label: equal numbers a match, different ones a non-match. Without the records, the
    /// blocking keys they share are read off their levels ([`implied_key_kinds`]), which
    /// cannot tell every shared key; [`LabelledPairs::from_candidates`] knows them.
    pub fn from_counts(counts: &HashMap<u64, u64>) -> LabelledPairs {
        let mut out = LabelledPairs::default();
        for (&key, &n) in counts {
            let vector = ComparisonVector::from_key(key);
            let shared = implied_key_kinds(&vector);
            match vector.ids {
                IdRelation::BothValidEqual => out.add(&vector, shared, true, n),
                IdRelation::BothValidDifferent => out.add(&vector, shared, false, n),
                IdRelation::Undetermined => {}
            }
        }
        out
    }

    /// The pairs among candidate pairs `pairs` of `records` that two valid ID numbers label;
    /// `patterns[i]` is the [`ComparisonVector::key`] of `pairs[i]`.
    pub fn from_candidates(
        records: &[LinkRecord],
        pairs: &[(u32, u32)],
        patterns: &[u64],
    ) -> LabelledPairs {
        // Each ID holder's keys once (on every core for large batches), then every pair.
        let hashes = key_hashes_of_id_holders(records);
        let mut out = LabelledPairs::default();
        for (&(a, b), &key) in pairs.iter().zip(patterns) {
            let vector = ComparisonVector::from_key(key);
            let same_person = match vector.ids {
                IdRelation::BothValidEqual => true,
                IdRelation::BothValidDifferent => false,
                IdRelation::Undetermined => continue,
            };
            let of = |i: u32| hashes.get(i as usize).and_then(Option::as_ref);
            if let (Some(x), Some(y)) = (of(a), of(b)) {
                out.add(&vector, x.shared(y), same_person, 1);
            }
        }
        out
    }

    /// The candidate pairs of `records` (blocked by `blocker`) that two valid ID numbers label.
    pub fn from_records(records: &[LinkRecord], blocker: &Blocker) -> LabelledPairs {
        let with_id: Vec<LinkRecord> = records
            .iter()
            .filter(|r| r.valid_id().is_some())
            .cloned()
            .collect();
        let pairs = blocker.candidate_pairs(&with_id).pairs;
        let patterns: Vec<u64> = pairs
            .iter()
            .map(
                |&(a, b)| match (with_id.get(a as usize), with_id.get(b as usize)) {
                    (Some(x), Some(y)) => ComparisonVector::compare(x, y).key(),
                    _ => 0,
                },
            )
            .collect();
        LabelledPairs::from_candidates(&with_id, &pairs, &patterns)
    }

    /// Adds every pair of `other`.
    pub fn extend(&mut self, other: &LabelledPairs) {
        for (&key, &n) in &other.counts {
            let entry = self.counts.entry(key).or_default();
            entry.matches = entry.matches.saturating_add(n.matches);
            entry.non_matches = entry.non_matches.saturating_add(n.non_matches);
        }
    }

    /// Labelled matches and non-matches in all.
    pub fn totals(&self) -> LabelCounts {
        let mut total = LabelCounts::default();
        for n in self.counts.values() {
            total.matches = total.matches.saturating_add(n.matches);
            total.non_matches = total.non_matches.saturating_add(n.non_matches);
        }
        total
    }

    /// Every pattern with the key kinds its pairs share and its counts, in key order.
    pub fn patterns(&self) -> Vec<(ComparisonVector, KeyKinds, LabelCounts)> {
        let mut out: Vec<(ComparisonVector, KeyKinds, LabelCounts)> = self
            .counts
            .iter()
            .map(|(&(key, shared), &n)| (ComparisonVector::from_key(key), shared, n))
            .collect();
        out.sort_by_key(|(v, shared, _)| (v.key(), *shared));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The blocking keys of every record with a valid ID number (`None` for the others).
fn key_hashes_of_id_holders(records: &[LinkRecord]) -> Vec<Option<KeyHashes>> {
    let hash = |r: &LinkRecord| r.valid_id().map(|_| KeyHashes::of(r));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || records.len() < 100_000 {
        return records.iter().map(hash).collect();
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(hash).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(records.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// The blocking-key kinds a pair's levels imply it shares (records not at hand). Exact for
/// the phone (the same digits) and the name-and-building key (the same name characters,
/// compound and building: same room or building); the others only where the levels leave no
/// doubt (the same pinyin and birth date; the same pinyin and a room or building, which is
/// the same compound), so a pair whose key the levels do not show counts only for its own
/// kind of pair.
pub fn implied_key_kinds(vector: &ComparisonVector) -> KeyKinds {
    use super::compare::Field;
    let level = |field: Field| vector.levels[field as usize];
    let (name, birth) = (level(Field::Name), level(Field::BirthDate));
    let (phone, address) = (level(Field::Phone), level(Field::Address));
    let mut kinds = KeyKinds::NONE;
    if name <= 1 && birth == 0 {
        kinds = kinds
            .union(KeyKinds::SURNAME_BIRTH)
            .union(KeyKinds::PINYIN_YEAR);
    }
    if phone == 0 {
        kinds = kinds.union(KeyKinds::PHONE);
    }
    if name <= 1 && address <= 1 {
        kinds = kinds.union(KeyKinds::NAME_COMPOUND);
    }
    if name == 0 && address <= 1 {
        kinds = kinds.union(KeyKinds::NAME_BUILDING);
    }
    kinds
}

/// What calibration needs of a model.
pub trait Scorer {
    /// The match weight of a comparison (ID relation ignored; a missing field adds nothing).
    fn weight(&self, vector: &ComparisonVector) -> f64;
    /// The model's own match probability of a comparison, for kinds of pair that no labelled
    /// pairs cover.
    fn posterior(&self, vector: &ComparisonVector) -> f64;
}

/// The fields a comparison compares, one bit per field.
type FieldSet = u8;

fn fields_of(vector: &ComparisonVector) -> FieldSet {
    vector
        .levels
        .iter()
        .enumerate()
        .filter(|(_, level)| **level != NULL_LEVEL)
        .fold(0, |set, (f, _)| set | 1 << f)
}

/// `vector` compared on `fields` only.
fn restricted(vector: &ComparisonVector, fields: FieldSet) -> ComparisonVector {
    let mut levels = [NULL_LEVEL; FIELDS];
    for (f, level) in levels.iter_mut().enumerate() {
        if fields & 1 << f != 0 {
            *level = vector.levels[f];
        }
    }
    ComparisonVector {
        levels,
        ids: IdRelation::Undetermined,
    }
}

/// A run of adjacent labelled weights with one rate.
#[derive(Clone, Copy, Debug)]
struct Bin {
    matches: f64,
    non_matches: f64,
}

impl Bin {
    /// The smoothed share of matches (Jeffreys: half a pair of each kind added).
    fn rate(&self) -> f64 {
        (self.matches + 0.5) / (self.matches + self.non_matches + 1.0)
    }
}

/// The match probability by weight for one kind of pair.
#[derive(Clone, Debug, PartialEq)]
struct Curve {
    /// Each labelled weight with the rate of its bin, ascending; rates never fall.
    points: Vec<(f64, f64)>,
    /// Share of matches among the labelled pairs it was fitted on.
    labelled_prior: f64,
    /// Estimated share of matches among the pairs judged on it.
    prior: f64,
    /// The labelled pairs it was fitted on.
    held: LabelCounts,
}

impl Curve {
    /// From `(weight, matches, non_matches)` of labelled pairs; `None` without a finite weight.
    fn fit(mut steps: Vec<(f64, f64, f64)>, labelled: LabelCounts) -> Option<Curve> {
        steps.retain(|(w, _, _)| w.is_finite());
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        // One weight (within the slack) is one step.
        let mut merged: Vec<(f64, f64, f64)> = Vec::with_capacity(steps.len());
        for (w, matches, non_matches) in steps {
            match merged.last_mut() {
                Some(last) if w - last.0 <= WEIGHT_SLACK => {
                    last.1 += matches;
                    last.2 += non_matches;
                }
                _ => merged.push((w, matches, non_matches)),
            }
        }
        if merged.is_empty() {
            return None;
        }
        // Pool adjacent violators: a bin never rates at or below the one under it. Each bin
        // remembers how many weights it holds.
        let mut bins: Vec<(Bin, usize)> = Vec::with_capacity(merged.len());
        for &(_, matches, non_matches) in &merged {
            bins.push((
                Bin {
                    matches,
                    non_matches,
                },
                1,
            ));
            while let [.., (below, below_len), (top, top_len)] = bins.as_mut_slice() {
                if below.rate() < top.rate() {
                    break;
                }
                below.matches += top.matches;
                below.non_matches += top.non_matches;
                *below_len += *top_len;
                bins.pop();
            }
        }
        let rates = bins
            .iter()
            .flat_map(|(bin, len)| std::iter::repeat_n(bin.rate(), *len));
        let points: Vec<(f64, f64)> = merged.iter().map(|s| s.0).zip(rates).collect();
        let total = (labelled.matches + labelled.non_matches) as f64;
        let labelled_prior = (labelled.matches as f64 / total).clamp(MIN_PRIOR, 1.0 - MIN_PRIOR);
        Some(Curve {
            points,
            labelled_prior,
            prior: labelled_prior,
            held: labelled,
        })
    }

    /// The labelled rate at `weight`: linear between the two labelled weights around it,
    /// the nearest one's beyond them.
    fn labelled_rate(&self, weight: f64) -> f64 {
        let above = self.points.partition_point(|(w, _)| *w <= weight);
        match (
            above.checked_sub(1).and_then(|i| self.points.get(i)),
            self.points.get(above),
        ) {
            (Some(&(w0, r0)), Some(&(w1, r1))) if w1 > w0 => {
                r0 + (r1 - r0) * (weight - w0) / (w1 - w0)
            }
            (Some(&(_, r)), _) | (None, Some(&(_, r))) => r,
            (None, None) => self.labelled_prior,
        }
    }

    /// A labelled rate moved from the labelled pairs' prior to `prior`.
    fn shift(&self, rate: f64, prior: f64) -> f64 {
        let odds = |p: f64| p / (1.0 - p);
        let shifted = odds(rate) * odds(prior) / odds(self.labelled_prior);
        shifted / (1.0 + shifted)
    }

    fn probability(&self, weight: f64) -> f64 {
        let rate = if weight.is_nan() {
            self.labelled_prior
        } else {
            self.labelled_rate(weight)
        };
        self.shift(rate, self.prior)
    }
}

/// The fixed point of `step` from `start`, kept inside (0, 1).
fn fixed_point(start: f64, step: impl Fn(f64) -> f64) -> f64 {
    let mut prior = start.clamp(MIN_PRIOR, 1.0 - MIN_PRIOR);
    for _ in 0..PRIOR_ROUNDS {
        let next = step(prior);
        if !next.is_finite() {
            break;
        }
        let next = next.clamp(MIN_PRIOR, 1.0 - MIN_PRIOR);
        let moved = (next - prior).abs();
        prior = next;
        if moved < PRIOR_TOLERANCE {
            break;
        }
    }
    prior
}

/// Match probabilities of the pairs to decide, measured on labelled pairs (module
/// documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// A curve per set of fields the labelled pairs cover that some pairs are judged on.
    curves: BTreeMap<FieldSet, Curve>,
    /// For each kind of pair to decide, the fields it is judged on: all of its own when they
    /// are covered, else the largest covered subset of them; absent when none is.
    judged_on: BTreeMap<FieldSet, FieldSet>,
    labelled: LabelCounts,
    coverage: f64,
    match_share: f64,
}

/// Fits the curves of kinds of pair on demand, each once.
struct Kinds<'a, S> {
    scorer: &'a S,
    labelled: Vec<(ComparisonVector, KeyKinds, LabelCounts)>,
    minimum: LabelCounts,
    fitted: BTreeMap<FieldSet, Option<Curve>>,
}

impl<S: Scorer> Kinds<'_, S> {
    /// The curve of pairs compared on `fields`, if at least the minimum labelled pairs
    /// compare them and blocking would have found them on those fields alone.
    fn curve(&mut self, fields: FieldSet) -> Option<&Curve> {
        if !self.fitted.contains_key(&fields) {
            let mut steps = Vec::new();
            let mut held = LabelCounts::default();
            for (vector, shared, n) in &self.labelled {
                let own = fields_of(vector);
                if own & fields != fields || (own != fields && !shared.any_within(fields)) {
                    continue;
                }
                let w = self.scorer.weight(&restricted(vector, fields));
                steps.push((w, n.matches as f64, n.non_matches as f64));
                held.matches = held.matches.saturating_add(n.matches);
                held.non_matches = held.non_matches.saturating_add(n.non_matches);
            }
            let curve = if held.at_least(&self.minimum) {
                Curve::fit(steps, held)
            } else {
                None
            };
            self.fitted.insert(fields, curve);
        }
        self.fitted.get(&fields).and_then(Option::as_ref)
    }

    /// The fields pairs compared on `fields` are judged on: all of them if covered, else the
    /// covered subset with the most fields (of those, the one most labelled pairs cover, the
    /// first in a fixed order on a tie).
    fn judged_on(&mut self, fields: FieldSet) -> Option<FieldSet> {
        if self.curve(fields).is_some() {
            return Some(fields);
        }
        let size = fields.count_ones();
        for dropped in 1..=size {
            let mut best: Option<(u64, FieldSet)> = None;
            // Every subset of `fields` with `size - dropped` fields.
            let mut subset = fields;
            loop {
                subset = subset.wrapping_sub(1) & fields;
                if subset.count_ones() == size - dropped {
                    if let Some(held) = self.curve(subset).map(|c| c.held) {
                        let n = held.matches + held.non_matches;
                        if best.is_none_or(|(m, _)| n > m) {
                            best = Some((n, subset));
                        }
                    }
                }
                if subset == 0 {
                    break;
                }
            }
            if let Some((_, subset)) = best {
                return Some(subset);
            }
        }
        None
    }
}

impl Calibration {
    /// Calibrates `scorer` on `labelled` for the pairs to decide, `unlabelled` (patterns with
    /// how many pairs have each; those two valid ID numbers decide are ignored). A kind of
    /// pair is covered when at least `minimum` labelled matches and non-matches compare its
    /// fields (and blocking would find them on those fields). `None` with fewer labelled
    /// matches or non-matches than `minimum` in all (at least one of each is always
    /// required), or when no pair to decide can be judged on any covered set of fields.
    pub fn fit(
        scorer: &impl Scorer,
        labelled: &LabelledPairs,
        unlabelled: &[(ComparisonVector, f64)],
        minimum: LabelCounts,
    ) -> Option<Calibration> {
        let totals = labelled.totals();
        if !totals.at_least(&minimum) {
            return None;
        }
        let mut to_decide: BTreeMap<FieldSet, Vec<(ComparisonVector, f64)>> = BTreeMap::new();
        for (vector, n) in unlabelled {
            if vector.ids == IdRelation::Undetermined && n.is_finite() && *n > 0.0 {
                to_decide
                    .entry(fields_of(vector))
                    .or_default()
                    .push((*vector, *n));
            }
        }
        let mut kinds = Kinds {
            scorer,
            labelled: labelled.patterns(),
            minimum,
            fitted: BTreeMap::new(),
        };
        let mut judged_on = BTreeMap::new();
        // Per curve: the labelled rate and count of each pair judged on it.
        let mut rated: BTreeMap<FieldSet, Vec<(f64, f64)>> = BTreeMap::new();
        let (mut pairs, mut covered, mut judged) = (0.0, 0.0, 0.0);
        for (&fields, vectors) in &to_decide {
            let n: f64 = vectors.iter().map(|(_, n)| n).sum();
            pairs += n;
            let Some(on) = kinds.judged_on(fields) else {
                continue;
            };
            judged_on.insert(fields, on);
            judged += n;
            if on == fields {
                covered += n;
            }
            if let Some(curve) = kinds.curve(on) {
                let rates = rated.entry(on).or_default();
                for (vector, n) in vectors {
                    let w = scorer.weight(&restricted(vector, on));
                    if !w.is_nan() {
                        rates.push((curve.labelled_rate(w), *n));
                    }
                }
            }
        }
        if pairs > 0.0 && judged == 0.0 {
            return None;
        }
        let mut curves: BTreeMap<FieldSet, Curve> = kinds
            .fitted
            .into_iter()
            .filter(|(fields, _)| rated.contains_key(fields))
            .filter_map(|(fields, curve)| curve.map(|c| (fields, c)))
            .collect();
        // The common prior of the judged pairs, then each curve's own drawn towards it.
        let rated_total: f64 = rated.values().flatten().map(|(_, n)| n).sum();
        let start = curves
            .values()
            .map(|c| c.labelled_prior)
            .next()
            .unwrap_or(0.5);
        let common = if rated_total > 0.0 {
            fixed_point(start, |prior| {
                rated
                    .iter()
                    .filter_map(|(fields, rates)| curves.get(fields).map(|c| (c, rates)))
                    .flat_map(|(c, rates)| rates.iter().map(move |&(r, n)| n * c.shift(r, prior)))
                    .sum::<f64>()
                    / rated_total
            })
        } else {
            start
        };
        for (fields, curve) in curves.iter_mut() {
            let rates = rated.get(fields).map_or(&[][..], Vec::as_slice);
            let n: f64 = rates.iter().map(|(_, n)| n).sum();
            curve.prior = fixed_point(common, |prior| {
                let expected: f64 = rates.iter().map(|&(r, n)| n * curve.shift(r, prior)).sum();
                (expected + PRIOR_PSEUDO_PAIRS * common) / (n + PRIOR_PSEUDO_PAIRS)
            });
        }
        let mut calibration = Calibration {
            curves,
            judged_on,
            labelled: totals,
            coverage: if pairs > 0.0 { covered / pairs } else { 1.0 },
            match_share: 0.0,
        };
        let expected: f64 = to_decide
            .values()
            .flatten()
            .map(|(v, n)| n * calibration.probability(scorer, v))
            .sum();
        calibration.match_share = if pairs > 0.0 { expected / pairs } else { 0.0 };
        Some(calibration)
    }

    /// The probability that a pair to decide that compares as `vector` is a true match: from
    /// the labelled pairs, on the fields its kind is judged on; `scorer`'s posterior for a
    /// kind no labelled pairs cover (or not seen when fitting).
    pub fn probability(&self, scorer: &impl Scorer, vector: &ComparisonVector) -> f64 {
        let judged = self
            .judged_on
            .get(&fields_of(vector))
            .and_then(|on| Some((*on, self.curves.get(on)?)));
        match judged {
            Some((on, curve)) => curve.probability(scorer.weight(&restricted(vector, on))),
            None => {
                let p = scorer.posterior(vector);
                if p.is_finite() {
                    p.clamp(MIN_PRIOR, 1.0 - MIN_PRIOR)
                } else {
                    0.5
                }
            }
        }
    }

    /// Whether pairs that compare as `vector` are judged on all the fields they compare
    /// (their kind is covered by enough labelled pairs), not on a subset or the posterior.
    pub fn covers(&self, vector: &ComparisonVector) -> bool {
        let fields = fields_of(vector);
        self.judged_on.get(&fields) == Some(&fields)
    }

    /// The labelled pairs it was fitted on.
    pub fn labelled(&self) -> LabelCounts {
        self.labelled
    }

    /// Share of the pairs to decide whose kind the labelled pairs cover on all its fields
    /// (the rest are judged on a covered subset of their fields, or, with none, keep the
    /// model's posterior).
    pub fn coverage(&self) -> f64 {
        self.coverage
    }

    /// The estimated share of true matches among the pairs to decide.
    pub fn match_share(&self) -> f64 {
        self.match_share
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Weights by hand: the name level counts 10 - 5 * level, a birth date that agrees 1,
    /// one that differs -8, the address 3 in the same room, -1 in the same community, else
    /// -5; the posterior is a fixed 0.5.
    struct ByHand;

    impl Scorer for ByHand {
        fn weight(&self, v: &ComparisonVector) -> f64 {
            let name = match v.levels[0] {
                NULL_LEVEL => 0.0,
                level => 10.0 - 5.0 * f64::from(level),
            };
            let birth = match v.levels[1] {
                NULL_LEVEL => 0.0,
                0 => 1.0,
                _ => -8.0,
            };
            let address = match v.levels[3] {
                NULL_LEVEL => 0.0,
                0 => 3.0,
                2 => -1.0,
                _ => -5.0,
            };
            name + birth + address
        }

        fn posterior(&self, _: &ComparisonVector) -> f64 {
            0.5
        }
    }

    fn pattern(name: u8, birth: u8) -> ComparisonVector {
        let mut levels = [NULL_LEVEL; FIELDS];
        levels[0] = name;
        levels[1] = birth;
        ComparisonVector {
            levels,
            ids: IdRelation::Undetermined,
        }
    }

    fn name_only(level: u8) -> ComparisonVector {
        pattern(level, NULL_LEVEL)
    }

    const MIN: LabelCounts = LabelCounts {
        matches: 200,
        non_matches: 200,
    };

    #[test]
    fn recovers_the_match_rate_of_each_weight_with_the_same_prior() {
        // Weight 10: 990 of 1,000 true; weight 5: 600 of 1,000; weight 0: 10 of 1,000.
        let mut labelled = LabelledPairs::default();
        for (level, matches) in [(0u8, 990u64), (1, 600), (2, 10)] {
            labelled.add(&name_only(level), KeyKinds::NONE, true, matches);
            labelled.add(&name_only(level), KeyKinds::NONE, false, 1_000 - matches);
        }
        // The pairs to decide look the same, in the same proportions.
        let unlabelled: Vec<(ComparisonVector, f64)> =
            (0..3).map(|l| (name_only(l), 1_000.0)).collect();
        let c = Calibration::fit(&ByHand, &labelled, &unlabelled, MIN).unwrap();
        assert_eq!(
            c.labelled(),
            LabelCounts {
                matches: 1_600,
                non_matches: 1_400
            }
        );
        assert_eq!(c.coverage(), 1.0);
        assert!((c.match_share() - 1_600.0 / 3_000.0).abs() < 1e-3, "{c:?}");
        for (level, rate) in [(0, 0.99), (1, 0.6), (2, 0.01)] {
            let p = c.probability(&ByHand, &name_only(level));
            assert!((p - rate).abs() < 0.001, "{level}: {p}");
        }
        // Between two labelled weights: on the line between their rates.
        let curve = c.curves.values().next().unwrap();
        assert!((curve.probability(7.5) - 0.795).abs() < 0.002);
        assert!((curve.probability(-3.0) - 0.0105).abs() < 0.001);
        assert!((curve.probability(40.0) - 0.9895).abs() < 0.001);
    }

    #[test]
    fn the_pairs_to_decide_get_their_own_match_prior() {
        // Labelled: as many matches as non-matches, in a strong bin and a weak one.
        let mut labelled = LabelledPairs::default();
        labelled.add(&name_only(0), KeyKinds::NONE, true, 900);
        labelled.add(&name_only(0), KeyKinds::NONE, false, 100);
        labelled.add(&name_only(2), KeyKinds::NONE, true, 100);
        labelled.add(&name_only(2), KeyKinds::NONE, false, 900);
        // To decide: a quarter matches, drawn from the same likelihood ratios (90% of the
        // matches and 10% of the non-matches at weight 10).
        let (matches, non_matches) = (1_000.0, 3_000.0);
        let unlabelled = [
            (name_only(0), 0.9 * matches + 0.1 * non_matches),
            (name_only(2), 0.1 * matches + 0.9 * non_matches),
        ];
        let c = Calibration::fit(&ByHand, &labelled, &unlabelled, MIN).unwrap();
        assert!((c.match_share() - 0.25).abs() < 0.005, "{c:?}");
        // At weight 10: 900 true of 1,200, not the labelled pairs' 0.9.
        let p = c.probability(&ByHand, &name_only(0));
        assert!((p - 0.75).abs() < 0.005, "{p}");
    }

    /// A pair on name, birth date and address (the others missing).
    fn full(name: u8, birth: u8, address: u8) -> ComparisonVector {
        let mut v = pattern(name, birth);
        v.levels[3] = address;
        v
    }

    #[test]
    fn a_pair_without_a_field_is_judged_by_labelled_pairs_seen_as_blocking_would_find_it() {
        let found_by = |kinds: &[KeyKinds]| kinds.iter().fold(KeyKinds::NONE, |k, o| k.union(*o));
        let birth_keys = found_by(&[KeyKinds::SURNAME_BIRTH, KeyKinds::PINYIN_YEAR]);
        // Every labelled pair compares name, birth date and address (same room 0, same
        // community 2, elsewhere 3).
        let mut labelled = LabelledPairs::default();
        // The same person in the same room, found by every key.
        let everything = found_by(&[birth_keys, KeyKinds::NAME_COMPOUND, KeyKinds::NAME_BUILDING]);
        labelled.add(&full(0, 0, 0), everything, true, 1_000);
        // The same person moved to another compound of the community: found by birth date.
        labelled.add(&full(0, 0, 2), birth_keys, true, 1_000);
        // Namesakes in the same compound: found by name and compound.
        labelled.add(&full(0, 1, 2), KeyKinds::NAME_COMPOUND, false, 1_000);
        // Strangers with the same surname and birth date.
        labelled.add(&full(4, 0, 3), KeyKinds::SURNAME_BIRTH, false, 1_000);
        // To decide: pairs without birth dates. One with the same name in the same community
        // can only have been found by name and compound: it is a namesake, not a move.
        let same_room = full(0, NULL_LEVEL, 0);
        let same_community = full(0, NULL_LEVEL, 2);
        let unlabelled = [(same_room, 500.0), (same_community, 500.0)];
        let c = Calibration::fit(&ByHand, &labelled, &unlabelled, MIN).unwrap();
        assert_eq!(c.coverage(), 1.0);
        assert!(c.probability(&ByHand, &same_room) > 0.99);
        let p = c.probability(&ByHand, &same_community);
        assert!(p < 0.01, "same name, same community, no birth date: {p}");
        // Had the moves been found by name and compound too, they would count: half and half.
        let mut as_if = labelled.clone();
        as_if.add(&full(0, 0, 2), KeyKinds::NAME_COMPOUND, true, 1_000);
        let c = Calibration::fit(&ByHand, &as_if, &unlabelled, MIN).unwrap();
        let curve = &c.curves[&fields_of(&same_community)];
        let rate = curve.labelled_rate(ByHand.weight(&same_community));
        assert!((rate - 0.5).abs() < 0.01, "{rate}");
    }

    #[test]
    fn a_kind_no_labelled_pair_covers_is_judged_on_the_fields_they_do() {
        let mut labelled = LabelledPairs::default();
        labelled.add(&name_only(0), KeyKinds::NONE, true, 300);
        labelled.add(&name_only(2), KeyKinds::NONE, false, 300);
        // A pair also compared on an ID number that is not valid on both sides: no labelled
        // pair compares it, so it is judged on its name alone.
        let mut with_id = name_only(0);
        with_id.levels[5] = 1;
        // A pair compared on the phone alone: nothing covers it, the posterior stays.
        let mut phone = name_only(0);
        phone.levels = [NULL_LEVEL; FIELDS];
        phone.levels[2] = 0;
        let unlabelled = [(name_only(0), 300.0), (with_id, 100.0), (phone, 100.0)];
        let c = Calibration::fit(&ByHand, &labelled, &unlabelled, MIN).unwrap();
        assert_eq!(
            c.probability(&ByHand, &with_id),
            c.probability(&ByHand, &name_only(0))
        );
        assert!(c.probability(&ByHand, &with_id) > 0.99);
        assert_eq!(c.probability(&ByHand, &phone), 0.5);
        assert!((c.coverage() - 0.6).abs() < 1e-12, "{}", c.coverage());
        // Only pairs nothing covers: no calibration at all.
        assert!(Calibration::fit(&ByHand, &labelled, &[(phone, 10.0)], MIN).is_none());
    }

    #[test]
    fn rates_only_rise_with_the_weight_and_never_reach_certainty() {
        let mut labelled = LabelledPairs::default();
        // A strong weight with a worse rate than a weaker one, and a pure bin of 3 pairs.
        labelled.add(&name_only(0), KeyKinds::NONE, true, 3);
        labelled.add(&pattern(1, NULL_LEVEL), KeyKinds::NONE, true, 500);
        labelled.add(&pattern(1, NULL_LEVEL), KeyKinds::NONE, false, 20);
        labelled.add(&name_only(2), KeyKinds::NONE, true, 800);
        labelled.add(&name_only(2), KeyKinds::NONE, false, 10);
        labelled.add(&name_only(3), KeyKinds::NONE, false, 400);
        let unlabelled = [(name_only(1), 1.0)];
        let c = Calibration::fit(&ByHand, &labelled, &unlabelled, MIN).unwrap();
        let curve = c.curves.values().next().unwrap();
        let mut last = 0.0;
        for w in [-10.0, -5.0, 0.0, 2.5, 5.0, 7.5, 10.0, 20.0] {
            let p = curve.probability(w);
            assert!(p > 0.0 && p < 1.0 && p >= last, "{w}: {p} after {last}");
            last = p;
        }
        // The violator (weight 5 under weight 0's better rate) and the 3 pure pairs pooled.
        assert_eq!(curve.labelled_rate(10.0), curve.labelled_rate(0.0));
        assert!(curve.labelled_rate(10.0) < 1.0 - 1.0 / 2_000.0);
    }

    #[test]
    fn too_few_labels_give_no_calibration() {
        let mut labelled = LabelledPairs::default();
        labelled.add(&name_only(0), KeyKinds::NONE, true, 5_000);
        labelled.add(&name_only(2), KeyKinds::NONE, false, 199);
        let unlabelled = [(name_only(0), 5.0)];
        assert!(Calibration::fit(&ByHand, &labelled, &unlabelled, MIN).is_none());
        labelled.add(&name_only(3), KeyKinds::NONE, false, 1);
        assert!(Calibration::fit(&ByHand, &labelled, &unlabelled, MIN).is_some());
        // Some of each is needed whatever the minimum.
        let mut only_matches = LabelledPairs::default();
        only_matches.add(&name_only(0), KeyKinds::NONE, true, 10);
        let none = LabelCounts::default();
        assert!(Calibration::fit(&ByHand, &only_matches, &[], none).is_none());
        assert!(Calibration::fit(&ByHand, &LabelledPairs::default(), &[], none).is_none());
    }

    #[test]
    fn degenerate_weights_do_not_panic() {
        struct Odd;
        impl Scorer for Odd {
            fn weight(&self, v: &ComparisonVector) -> f64 {
                match v.levels[0] {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => f64::NEG_INFINITY,
                    _ => 1.0,
                }
            }
            fn posterior(&self, _: &ComparisonVector) -> f64 {
                f64::NAN
            }
        }
        let mut labelled = LabelledPairs::default();
        labelled.add(&name_only(0), KeyKinds::NONE, true, 300);
        labelled.add(&name_only(1), KeyKinds::NONE, false, 300);
        let unlabelled = [
            (name_only(0), 3.0),
            (name_only(1), f64::INFINITY),
            (name_only(2), -1.0),
            (name_only(3), 2.0),
            (name_only(4), f64::NAN),
        ];
        // No finite labelled weight: nothing covered, and so no calibration.
        assert!(Calibration::fit(&Odd, &labelled, &unlabelled, MIN).is_none());
        // With one, every probability is still a probability.
        labelled.add(&name_only(3), KeyKinds::NONE, true, 1);
        let c = Calibration::fit(&Odd, &labelled, &unlabelled, MIN).unwrap();
        for vector in [0, 1, 2, 3, 4]
            .map(name_only)
            .into_iter()
            .chain([pattern(4, 4)])
        {
            let p = c.probability(&Odd, &vector);
            assert!(p.is_finite() && p > 0.0 && p < 1.0, "{vector:?}: {p}");
        }
        assert!(c.match_share().is_finite() && c.coverage().is_finite());
    }

    #[test]
    fn labelled_pairs_come_from_valid_id_numbers_and_forget_them() {
        let mut counts = HashMap::new();
        let mut v = name_only(1);
        v.ids = IdRelation::BothValidEqual;
        counts.insert(v.key(), 7);
        v.ids = IdRelation::BothValidDifferent;
        counts.insert(v.key(), 3);
        v.ids = IdRelation::Undetermined;
        counts.insert(v.key(), 1_000);
        let labelled = LabelledPairs::from_counts(&counts);
        assert_eq!(
            labelled.totals(),
            LabelCounts {
                matches: 7,
                non_matches: 3
            }
        );
        let patterns = labelled.patterns();
        assert_eq!(patterns.len(), 1);
        assert_eq!(patterns[0].0.ids, IdRelation::Undetermined);
        let mut twice = labelled.clone();
        twice.extend(&labelled);
        assert_eq!(twice.totals().matches, 14);
    }
}
