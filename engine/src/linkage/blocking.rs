//! Blocking: which pairs of records are compared at all.
//!
//! Guarantees:
//! - [`blocking_keys`] is a pure function of the record: the same record gives the same keys
//!   in every process, so the keys can be stored (as keyed blind link keys) and looked up
//!   when a new record arrives. Two records are candidates iff they share a key.
//! - Keys are prefixed by their kind: `sb:` surname pinyin + birth date, `ph:` phone digits,
//!   `nc:` full-name pinyin + compound, `nb:` name characters + compound + building,
//!   `py:` full-name pinyin + birth year. A key needs every one of its parts.
//! - [`Blocker`] never emits a pair twice, never a record with itself, and skips a block
//!   larger than its cap (counted in [`CandidatePairs::oversized_blocks`]) so a very common
//!   key cannot make the work quadratic.
//! - [`shared_key_kinds`] says which kinds of key two records share, and
//!   [`KeyKinds::any_within`] whether one of them needs only some set of compared fields:
//!   what calibration needs to know whether a pair would still be a candidate had some of
//!   its fields been missing.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use super::compare::Field;
use super::record::LinkRecord;

/// The blocking keys of one record.
pub fn blocking_keys(record: &LinkRecord) -> Vec<String> {
    let mut keys = Vec::with_capacity(5);
    for_each_key(record, |key| keys.push(key.to_owned()));
    keys
}

/// Calls `emit` with every blocking key of `record`, reusing one buffer.
fn for_each_key(record: &LinkRecord, mut emit: impl FnMut(&str)) {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(64);
    let pinyin = record.pinyin();
    let birth = record.birth_ymd();
    let compound = record.address().compound.as_deref();
    if let Some(ymd) = birth {
        let surname = record.surname_pinyin();
        if !surname.is_empty() {
            let _ = write!(key, "sb:{surname}:{ymd}");
            emit(&key);
        }
        if !pinyin.is_empty() {
            key.clear();
            let _ = write!(key, "py:{pinyin}:{}", ymd / 10_000);
            emit(&key);
        }
    }
    if let Some(phone) = record.phone() {
        key.clear();
        let _ = write!(key, "ph:{phone}");
        emit(&key);
    }
    if let Some(compound) = compound {
        if !pinyin.is_empty() {
            key.clear();
            let _ = write!(key, "nc:{pinyin}:{compound}");
            emit(&key);
        }
        if let (Some(name), Some(building)) = (record.name(), record.address().building) {
            key.clear();
            let _ = write!(key, "nb:{name}:{compound}:{building}");
            emit(&key);
        }
    }
}

/// A set of blocking-key kinds, one bit each: `sb`, `py`, `ph`, `nc`, `nb`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyKinds(pub u8);

impl KeyKinds {
    pub const NONE: KeyKinds = KeyKinds(0);
    /// `sb:` surname pinyin + birth date.
    pub const SURNAME_BIRTH: KeyKinds = KeyKinds(1);
    /// `py:` full-name pinyin + birth year.
    pub const PINYIN_YEAR: KeyKinds = KeyKinds(2);
    /// `ph:` phone digits.
    pub const PHONE: KeyKinds = KeyKinds(4);
    /// `nc:` full-name pinyin + compound.
    pub const NAME_COMPOUND: KeyKinds = KeyKinds(8);
    /// `nb:` name characters + compound + building.
    pub const NAME_BUILDING: KeyKinds = KeyKinds(16);
    const EACH: [(KeyKinds, &'static str); 5] = [
        (KeyKinds::SURNAME_BIRTH, "sb:"),
        (KeyKinds::PINYIN_YEAR, "py:"),
        (KeyKinds::PHONE, "ph:"),
        (KeyKinds::NAME_COMPOUND, "nc:"),
        (KeyKinds::NAME_BUILDING, "nb:"),
    ];

    fn of_key(key: &str) -> KeyKinds {
        KeyKinds::EACH
            .iter()
            .find(|(_, prefix)| key.starts_with(prefix))
            .map_or(KeyKinds::NONE, |(kind, _)| *kind)
    }

    pub fn union(self, other: KeyKinds) -> KeyKinds {
        KeyKinds(self.0 | other.0)
    }

    pub fn contains(self, other: KeyKinds) -> bool {
        self.0 & other.0 == other.0
    }

    /// The compared fields (bits of [`Field`] positions) a key of one kind needs on both
    /// records: name and birth date, phone, or name and address.
    fn needed_fields(self) -> u8 {
        let bit = |field: Field| 1u8 << field as usize;
        match self {
            KeyKinds::SURNAME_BIRTH | KeyKinds::PINYIN_YEAR => {
                bit(Field::Name) | bit(Field::BirthDate)
            }
            KeyKinds::PHONE => bit(Field::Phone),
            KeyKinds::NAME_COMPOUND | KeyKinds::NAME_BUILDING => {
                bit(Field::Name) | bit(Field::Address)
            }
            _ => u8::MAX,
        }
    }

    /// Whether one of these kinds needs only fields among `fields` (bits of [`Field`]
    /// positions): a pair sharing it would be a candidate compared on those fields alone.
    pub fn any_within(self, fields: u8) -> bool {
        KeyKinds::EACH.iter().any(|(kind, _)| {
            self.contains(*kind) && kind.needed_fields() & fields == kind.needed_fields()
        })
    }
}

/// A record's blocking keys as kinds and hashes, to find the kinds two records share
/// without formatting their keys again for every pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyHashes(Vec<(KeyKinds, u64)>);

impl KeyHashes {
    pub fn of(record: &LinkRecord) -> KeyHashes {
        let mut out = Vec::with_capacity(5);
        for_each_key(record, |key| {
            out.push((KeyKinds::of_key(key), key_hash(key)))
        });
        KeyHashes(out)
    }

    /// The kinds of key both have.
    pub fn shared(&self, other: &KeyHashes) -> KeyKinds {
        self.0
            .iter()
            .filter(|(_, hash)| other.0.iter().any(|(_, h)| h == hash))
            .fold(KeyKinds::NONE, |shared, (kind, _)| shared.union(*kind))
    }
}

/// The kinds of blocking key `a` and `b` share.
pub fn shared_key_kinds(a: &LinkRecord, b: &LinkRecord) -> KeyKinds {
    KeyHashes::of(a).shared(&KeyHashes::of(b))
}

/// Candidate pairs of a batch, `(i, j)` with `i < j`, sorted.
#[derive(Debug, Clone, Default)]
pub struct CandidatePairs {
    pub pairs: Vec<(u32, u32)>,
    /// Blocks skipped because they held more records than the cap.
    pub oversized_blocks: usize,
    /// Records in the skipped blocks (with repetition).
    pub oversized_records: usize,
}

/// In-memory blocking of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Blocker {
    /// Largest block whose pairs are all compared.
    pub max_block: usize,
}

impl Default for Blocker {
    fn default() -> Self {
        Blocker { max_block: 64 }
    }
}

impl Blocker {
    /// Every pair of records that share a blocking key (within the cap).
    pub fn candidate_pairs(&self, records: &[LinkRecord]) -> CandidatePairs {
        let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(records.len() * 5);
        for (index, record) in records.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            for_each_key(record, |key| keyed.push((key_hash(key), index)));
        }
        keyed.sort_unstable();
        let mut out = CandidatePairs::default();
        let mut packed: Vec<u64> = Vec::with_capacity(records.len() * 4);
        for block in keyed.chunk_by(|a, b| a.0 == b.0) {
            if block.len() < 2 {
                continue;
            }
            if block.len() > self.max_block {
                out.oversized_blocks += 1;
                out.oversized_records += block.len();
                continue;
            }
            for (n, &(_, i)) in block.iter().enumerate() {
                for &(_, j) in &block[n + 1..] {
                    // Sorted by (key, index), so i <= j; equal means one record with two keys
                    // that hash alike, which is no pair.
                    if i != j {
                        packed.push(u64::from(i) << 32 | u64::from(j));
                    }
                }
            }
        }
        packed.sort_unstable();
        packed.dedup();
        out.pairs = packed
            .into_iter()
            .map(|p| ((p >> 32) as u32, p as u32))
            .collect();
        out
    }
}

fn key_hash(key: &str) -> u64 {
    // Fixed keys: the same in every run.
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkage::record::LinkInput;
    use chrono::NaiveDate;
    use model::Department;

    fn record(
        name: &str,
        birth: Option<NaiveDate>,
        phone: Option<&str>,
        address: &str,
    ) -> LinkRecord {
        LinkRecord::from_input(&LinkInput {
            department: Department::Minzheng,
            row_key: "r",
            id_number: None,
            name: Some(name),
            birth_date: birth,
            gender: None,
            phone,
            address: Some(address),
            grid: None,
        })
    }

    #[test]
    fn keys_have_every_kind() {
        let birth = NaiveDate::from_ymd_opt(1980, 5, 17);
        let r = record(
            "单伟",
            birth,
            Some("13812345678"),
            "幸福里小区3号楼2单元501",
        );
        let keys = blocking_keys(&r);
        assert_eq!(
            keys,
            vec![
                "sb:shan:19800517",
                "py:shanwei:1980",
                "ph:13812345678",
                "nc:shanwei:幸福里",
                "nb:单伟:幸福里:3",
            ]
        );
        let bare = record("单伟", None, None, "");
        assert!(blocking_keys(&bare).is_empty());
    }

    #[test]
    fn shared_kinds_say_which_fields_a_pair_was_found_by() {
        let birth = NaiveDate::from_ymd_opt(1980, 5, 17);
        let a = record(
            "张伟",
            birth,
            Some("13812345678"),
            "幸福里小区3号楼2单元501",
        );
        // Same phone only.
        let b = record("李娜", None, Some("13812345678"), "阳光嘉园1号楼101");
        assert_eq!(shared_key_kinds(&a, &b), KeyKinds::PHONE);
        // Same name and compound, another building, no phone, the same birth date.
        let c = record("張偉", birth, None, "幸福里小区5号楼1单元101");
        let shared = shared_key_kinds(&a, &c);
        assert!(shared.contains(KeyKinds::NAME_COMPOUND));
        assert!(shared.contains(KeyKinds::SURNAME_BIRTH.union(KeyKinds::PINYIN_YEAR)));
        assert!(!shared.contains(KeyKinds::NAME_BUILDING) && !shared.contains(KeyKinds::PHONE));
        assert_eq!(
            shared_key_kinds(&a, &record("王芳", None, None, "")),
            KeyKinds::NONE
        );
        // Found by phone: a candidate compared on the phone; not on name and address alone.
        let bit = |f: Field| 1u8 << f as usize;
        assert!(KeyKinds::PHONE.any_within(bit(Field::Phone) | bit(Field::Name)));
        assert!(!KeyKinds::PHONE.any_within(bit(Field::Name) | bit(Field::Address)));
        assert!(shared.any_within(bit(Field::Name) | bit(Field::Address)));
        assert!(!KeyKinds::SURNAME_BIRTH.any_within(bit(Field::Name) | bit(Field::Address)));
        assert!(!KeyKinds::NONE.any_within(u8::MAX));
    }

    #[test]
    fn blocker_pairs_once_and_caps_blocks() {
        let birth = NaiveDate::from_ymd_opt(1980, 5, 17);
        let mut records = vec![
            record(
                "张伟",
                birth,
                Some("13812345678"),
                "幸福里小区3号楼2单元501",
            ),
            record("張偉", birth, Some("13812345678"), "幸福里3-2-501"),
            record("李娜", None, None, "阳光嘉园1号楼101"),
        ];
        let pairs = Blocker::default().candidate_pairs(&records);
        assert_eq!(pairs.pairs, vec![(0, 1)]);
        for _ in 0..10 {
            records.push(record(
                "王芳",
                None,
                Some("13900000000"),
                "阳光嘉园1号楼101",
            ));
        }
        let capped = Blocker { max_block: 5 }.candidate_pairs(&records);
        assert_eq!(capped.pairs, vec![(0, 1)]);
        assert!(capped.oversized_blocks >= 1);
    }
}
