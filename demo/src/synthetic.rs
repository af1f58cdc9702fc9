//! Evaluation data: department copies of the demo world's persons with the corruptions real
//! Chinese records have, and pairwise precision / recall against the truth.
//!
//! Guarantees:
//! - Deterministic: the copies of person `i` depend only on `(seed, i, rates)`, so any range
//!   of persons can be generated on its own (and in parallel) with the same result.
//! - Every copy keeps its person's index as truth; corruptions never change who a record is
//!   about: homophone and near-homophone given-name characters (tables in [`super::hanzi`]),
//!   traditional characters, 15-digit legacy ID numbers (the same person once upgraded),
//!   missing and mistyped ID numbers, phone typos, transpositions, new and missing phones,
//!   moves to another building, other address formats, missing and mistyped birth dates.

use std::collections::HashMap;
use std::ops::Range;

use chrono::{Datelike, Duration};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use model::{Department, Gender};

use crate::generate::{DemoWorld, Person};
use chinese_text::hanzi::{surname_len, traditional, HOMOPHONES, NEAR_HOMOPHONES};

/// How often each corruption happens, per department copy (each in 0.0..=1.0).
#[derive(Debug, Clone)]
pub struct CorruptionRates {
    /// `gongan` (the household register) copy without an ID number.
    pub gongan_missing_id: f64,
    /// Other departments' copy without an ID number.
    pub other_missing_id: f64,
    /// Copy keeps the 15-digit legacy number (persons who have one).
    pub legacy_id: f64,
    /// Copy has an ID number with one mistyped digit (fails the checksum).
    pub mistyped_id: f64,
    /// Given-name character replaced by a homophone (same pinyin).
    pub homophone: f64,
    /// Given-name character replaced by a near homophone (n/l, -n/-ng, zh/z …).
    pub near_homophone: f64,
    /// Name written in traditional characters.
    pub traditional: f64,
    pub missing_birth_date: f64,
    /// Birth date off by a few days.
    pub mistyped_birth_date: f64,
    pub missing_phone: f64,
    /// A different (new) phone number.
    pub changed_phone: f64,
    /// One phone digit wrong.
    pub phone_typo: f64,
    /// Two adjacent phone digits swapped.
    pub phone_transposition: f64,
    /// Address in another building of the compound.
    pub moved: f64,
    pub missing_gender: f64,
    /// A grid-centre (`wangge`) copy besides the departments that publish the person.
    pub grid_centre_copy: f64,
}

impl CorruptionRates {
    /// Most records carry ID numbers: all of `gongan`'s, 70% of the others'.
    pub fn mostly_with_ids() -> CorruptionRates {
        CorruptionRates {
            gongan_missing_id: 0.0,
            other_missing_id: 0.30,
            legacy_id: 0.15,
            mistyped_id: 0.01,
            homophone: 0.06,
            near_homophone: 0.02,
            traditional: 0.04,
            missing_birth_date: 0.10,
            mistyped_birth_date: 0.01,
            missing_phone: 0.12,
            changed_phone: 0.05,
            phone_typo: 0.03,
            phone_transposition: 0.01,
            moved: 0.06,
            missing_gender: 0.02,
            grid_centre_copy: 0.6,
        }
    }

    /// The no-ID subset: 95% of every department's records lack an ID number.
    pub fn mostly_without_ids() -> CorruptionRates {
        CorruptionRates {
            gongan_missing_id: 0.95,
            other_missing_id: 0.95,
            ..CorruptionRates::mostly_with_ids()
        }
    }
}

/// One department's copy of a resident, as it would arrive (before normalisation).
#[derive(Debug, Clone)]
pub struct RawResident {
    pub department: Department,
    pub row_key: String,
    pub id_number: Option<String>,
    pub name: String,
    pub birth_date: Option<chrono::NaiveDate>,
    pub gender: Option<Gender>,
    pub phone: Option<String>,
    pub address: String,
    pub grid: String,
}

/// Department copies with their truth.
#[derive(Debug, Clone, Default)]
pub struct SyntheticSet {
    pub residents: Vec<RawResident>,
    /// `truth[i]`: the person index copy `i` is about.
    pub truth: Vec<u32>,
    pub persons: usize,
}

/// Department copies of persons `persons` of `world`.
pub fn generate(
    world: &DemoWorld,
    persons: Range<usize>,
    rates: &CorruptionRates,
    seed: u64,
) -> SyntheticSet {
    let persons = persons.start.min(world.residents())..persons.end.min(world.residents());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = persons.len();
    if threads < 2 || count < 10_000 {
        return generate_range(world, persons, rates, seed);
    }
    let chunk = count.div_ceil(threads);
    let parts: Vec<SyntheticSet> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = persons.start + t * chunk;
                let end = (start + chunk).min(persons.end);
                scope.spawn(move || generate_range(world, start..end, rates, seed))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut out = SyntheticSet {
        persons: count,
        ..SyntheticSet::default()
    };
    for part in parts {
        out.residents.extend(part.residents);
        out.truth.extend(part.truth);
    }
    out
}

fn generate_range(
    world: &DemoWorld,
    persons: Range<usize>,
    rates: &CorruptionRates,
    seed: u64,
) -> SyntheticSet {
    let mut out = SyntheticSet {
        persons: persons.len(),
        ..SyntheticSet::default()
    };
    for index in persons {
        let person = world.person(index);
        let mut rng =
            StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut departments: Vec<&str> = person.departments.clone();
        if !departments.contains(&"wangge") && rng.gen_bool(rates.grid_centre_copy) {
            departments.push("wangge");
        }
        for (copy, code) in departments.iter().enumerate() {
            let Ok(department) = Department::parse(code) else {
                continue;
            };
            let resident = corrupt_copy(&person, department, copy, rates, &mut rng);
            out.residents.push(resident);
            out.truth.push(index as u32);
        }
    }
    out
}

fn corrupt_copy(
    person: &Person,
    department: Department,
    copy: usize,
    rates: &CorruptionRates,
    rng: &mut StdRng,
) -> RawResident {
    let authority = department == Department::Gongan;
    let missing_id = if authority {
        rates.gongan_missing_id
    } else {
        rates.other_missing_id
    };
    let id = if rng.gen_bool(missing_id) {
        None
    } else if !authority && person.legacy_id_number.is_some() && rng.gen_bool(rates.legacy_id) {
        person.legacy_id_number.clone()
    } else if !authority && rng.gen_bool(rates.mistyped_id) {
        Some(mistype_digit(&person.id_number, 17, rng))
    } else {
        Some(person.id_number.clone())
    };

    let mut name = person.name.clone();
    let mut birth_date = Some(person.birth_date);
    let mut gender = match person.gender {
        "male" => Some(Gender::Male),
        "female" => Some(Gender::Female),
        _ => None,
    };
    let mut phone = person.phone.clone();
    let mut address = person.address.clone();
    if !authority {
        let roll: f64 = rng.gen();
        if roll < rates.homophone {
            name = substitute_given(&name, rng, false);
        } else if roll < rates.homophone + rates.near_homophone {
            name = substitute_given(&name, rng, true);
        } else if roll < rates.homophone + rates.near_homophone + rates.traditional {
            name = name.chars().map(|c| traditional(c).unwrap_or(c)).collect();
        }
        if rng.gen_bool(0.02) {
            name.push(' ');
        }
        if rng.gen_bool(rates.missing_birth_date) {
            birth_date = None;
        } else if rng.gen_bool(rates.mistyped_birth_date) {
            let days = rng.gen_range(1..=3) * if rng.gen_bool(0.5) { 1 } else { -1 };
            birth_date = person.birth_date.checked_add_signed(Duration::days(days));
        }
        if rng.gen_bool(rates.missing_gender) {
            gender = None;
        }
        let roll: f64 = rng.gen();
        let changed = rates.missing_phone + rates.changed_phone;
        let typo = changed + rates.phone_typo;
        if roll < rates.missing_phone {
            phone = None;
        } else if roll < changed {
            let number: u32 = rng.gen_range(0..1_000_000_000);
            phone = Some(format!("1{}{number:09}", rng.gen_range(3..=9)));
        } else if roll < typo {
            phone = phone.map(|p| mistype_digit(&p, p.len(), rng));
        } else if roll < typo + rates.phone_transposition {
            phone = phone.map(|p| transpose_digits(&p, rng));
        }
        let moved = rng.gen_bool(rates.moved);
        address = restyle_address(&person.address, moved, rng);
    }
    // A department without the ID number still records what the person told it.
    let birth_date = if id.is_some() && !authority {
        // With an ID number the model takes a missing birth date from it.
        birth_date.or(Some(person.birth_date))
    } else {
        birth_date
    };
    RawResident {
        department,
        row_key: format!("{}/resident/{}-{copy}", department.code(), person.index),
        id_number: id,
        name,
        birth_date: birth_date.filter(|d| d.year() > 1900),
        gender,
        phone,
        address,
        grid: person.grid.clone(),
    }
}

/// Replaces one given-name character by a homophone (or near homophone) if it has one.
fn substitute_given(name: &str, rng: &mut StdRng, near: bool) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    let surname = surname_len(name);
    let mut options: Vec<(usize, char)> = Vec::new();
    for (position, &c) in chars.iter().enumerate().skip(surname) {
        if near {
            for &(a, b) in NEAR_HOMOPHONES {
                if a == c {
                    options.push((position, b));
                } else if b == c {
                    options.push((position, a));
                }
            }
        } else {
            for group in HOMOPHONES.iter().filter(|g| g.contains(&c)) {
                options.extend(group.iter().filter(|&&o| o != c).map(|&o| (position, o)));
            }
        }
    }
    if options.is_empty() {
        return name.to_owned();
    }
    let (position, replacement) = options[rng.gen_range(0..options.len())];
    chars[position] = replacement;
    chars.into_iter().collect()
}

/// One digit among the first `span` replaced by another digit.
fn mistype_digit(text: &str, span: usize, rng: &mut StdRng) -> String {
    let mut bytes: Vec<u8> = text.bytes().collect();
    let span = span.min(bytes.len());
    if span == 0 {
        return text.to_owned();
    }
    let at = rng.gen_range(0..span);
    if bytes[at].is_ascii_digit() {
        let old = bytes[at] - b'0';
        bytes[at] = b'0' + (old + rng.gen_range(1..=9)) % 10;
    }
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_owned())
}

fn transpose_digits(text: &str, rng: &mut StdRng) -> String {
    let mut bytes: Vec<u8> = text.bytes().collect();
    if bytes.len() < 3 {
        return text.to_owned();
    }
    let at = rng.gen_range(1..bytes.len() - 1);
    bytes.swap(at, at + 1);
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_owned())
}

/// The address in one of the forms departments use; `moved` puts it in another building of
/// the same compound.
fn restyle_address(address: &str, moved: bool, rng: &mut StdRng) -> String {
    let parts = chinese_text::address::parse(address);
    let (Some(compound), Some(mut building)) = (parts.compound_name(), parts.building_no()) else {
        return address.to_owned();
    };
    let mut unit = parts.unit_no().unwrap_or(1);
    let mut room = parts.room_no().unwrap_or(101);
    if moved {
        building += rng.gen_range(1..=6);
        unit = rng.gen_range(1..=4);
        room = rng.gen_range(1..=18) * 100 + rng.gen_range(1..=4);
    }
    match rng.gen_range(0..100u32) {
        0..=59 => format!("北京市朝阳区望京街道{compound}{building}号楼{unit}单元{room}"),
        60..=74 => format!("朝阳区望京街道{compound}{building}号楼{unit}单元{room}"),
        75..=89 => format!("北京市朝阳区望京街道{compound}{building}号楼{unit}单元{room}室"),
        _ => format!("北京市朝阳区{compound}{building}-{unit}-{room}"),
    }
}

/// Pairwise agreement of a clustering with the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PairMetrics {
    /// Pairs in the same predicted cluster and the same true entity.
    pub true_positives: u64,
    /// Pairs in the same predicted cluster.
    pub predicted_pairs: u64,
    /// Pairs of the same true entity.
    pub true_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Pairwise precision, recall and F1 of `predicted` cluster labels against `truth` labels.
pub fn pairwise_metrics(predicted: &[u32], truth: &[u32]) -> PairMetrics {
    fn pairs(n: u64) -> u64 {
        n * n.saturating_sub(1) / 2
    }
    let mut both: HashMap<(u32, u32), u64> = HashMap::new();
    let mut by_predicted: HashMap<u32, u64> = HashMap::new();
    let mut by_truth: HashMap<u32, u64> = HashMap::new();
    for (&p, &t) in predicted.iter().zip(truth) {
        *both.entry((p, t)).or_insert(0) += 1;
        *by_predicted.entry(p).or_insert(0) += 1;
        *by_truth.entry(t).or_insert(0) += 1;
    }
    let true_positives: u64 = both.values().map(|&n| pairs(n)).sum();
    let predicted_pairs: u64 = by_predicted.values().map(|&n| pairs(n)).sum();
    let true_pairs: u64 = by_truth.values().map(|&n| pairs(n)).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let precision = ratio(true_positives, predicted_pairs);
    let recall = ratio(true_positives, true_pairs);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    PairMetrics {
        true_positives,
        predicted_pairs,
        true_pairs,
        precision,
        recall,
        f1,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::generate::DemoConfig;

    #[test]
    fn metrics_count_pairs() {
        // Truth {0,1,2} {3}; predicted {0,1} {2,3}.
        let m = pairwise_metrics(&[0, 0, 2, 2], &[7, 7, 7, 8]);
        assert_eq!(
            (m.true_positives, m.predicted_pairs, m.true_pairs),
            (1, 2, 3)
        );
        assert!((m.precision - 0.5).abs() < 1e-12);
        assert!((m.recall - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn generation_is_deterministic_per_range() {
        let world = DemoWorld::new(DemoConfig {
            residents: 200,
            ..DemoConfig::default()
        });
        let rates = CorruptionRates::mostly_with_ids();
        let whole = generate(&world, 0..200, &rates, 7);
        let mut parts = generate(&world, 0..120, &rates, 7);
        let rest = generate(&world, 120..200, &rates, 7);
        parts.residents.extend(rest.residents);
        parts.truth.extend(rest.truth);
        assert_eq!(whole.truth, parts.truth);
        let names = |s: &SyntheticSet| {
            s.residents
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&whole), names(&parts));
        assert!(whole.residents.len() > 200);
    }
}
