//! Comparison levels: how closely two records agree on each field, as a small integer per
//! field (level 0 is the closest agreement).
//!
//! Guarantees:
//! - Every comparison is symmetric and total; a field missing on either side compares as
//!   [`NULL_LEVEL`] and carries no evidence either way.
//! - Names: same characters, then same pinyin under any reading of every character (surname
//!   overrides applied), then similar pinyin (the same syllables once regional confusions such
//!   as n/l, -n/-ng, zh/z, f/h are folded, or Jaro–Winkler of the primary pinyin >=
//!   [`JARO_WINKLER_THRESHOLD`]), then same initials, else different.
//! - Birth dates: exact, close (same year and month, or at most 7 days apart), same year,
//!   else different.
//! - ID numbers: two valid numbers are never a comparison level but an [`IdRelation`], which
//!   decides on its own (equal: certain match, different: never merge); only pairs where at
//!   least one number is invalid get an ID level.

use serde::{Deserialize, Serialize};

use super::record::LinkRecord;

/// Number of compared fields.
pub const FIELDS: usize = 6;
/// Most levels of any field.
pub const MAX_LEVELS: usize = 5;
/// Levels per field, in [`Field`] order.
pub const LEVEL_COUNTS: [usize; FIELDS] = [5, 4, 3, 4, 2, 3];
/// A field missing on either side.
pub const NULL_LEVEL: u8 = u8::MAX;
/// Lowest Jaro–Winkler similarity of primary pinyin that counts as a similar name.
pub const JARO_WINKLER_THRESHOLD: f64 = 0.92;

/// The compared fields, in comparison-vector order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Name,
    BirthDate,
    Phone,
    Address,
    Gender,
    IdNumber,
}

impl Field {
    pub const ALL: [Field; FIELDS] = [
        Field::Name,
        Field::BirthDate,
        Field::Phone,
        Field::Address,
        Field::Gender,
        Field::IdNumber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::BirthDate => "birth_date",
            Field::Phone => "phone",
            Field::Address => "address",
            Field::Gender => "gender",
            Field::IdNumber => "id_number",
        }
    }

    /// Names of the levels, closest first.
    pub fn level_names(self) -> &'static [&'static str] {
        match self {
            Field::Name => &[
                "exact",
                "same_pinyin",
                "similar_pinyin",
                "same_initials",
                "different",
            ],
            Field::BirthDate => &["exact", "close", "year", "different"],
            Field::Phone => &["exact", "one_edit", "different"],
            Field::Address => &["same_room", "same_building", "same_community", "different"],
            Field::Gender => &["agree", "different"],
            Field::IdNumber => &["equal", "one_edit", "different"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NameLevel {
    Exact = 0,
    SamePinyin = 1,
    SimilarPinyin = 2,
    SameInitials = 3,
    Different = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DateLevel {
    Exact = 0,
    /// Same year and month, or at most 7 days apart (a typo across a month end).
    Close = 1,
    Year = 2,
    Different = 3,
}

/// Phone and ID numbers: equal, one digit substituted or two adjacent digits swapped, else
/// different.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigitsLevel {
    Exact = 0,
    OneEdit = 1,
    Different = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressLevel {
    SameRoom = 0,
    SameBuilding = 1,
    SameCommunity = 2,
    Different = 3,
}

/// How the ID numbers of a pair relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdRelation {
    /// Both valid and equal: the same person, decided upstream.
    BothValidEqual,
    /// Both valid and different: never the same entity.
    BothValidDifferent,
    /// At least one side has no valid number.
    Undetermined,
}

/// The levels of one pair, one per [`Field`], plus how their ID numbers relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ComparisonVector {
    pub levels: [u8; FIELDS],
    pub ids: IdRelation,
}

impl ComparisonVector {
    /// Compares two records field by field.
    pub fn compare(a: &LinkRecord, b: &LinkRecord) -> ComparisonVector {
        let ids = id_relation(a, b);
        let id_level = match ids {
            IdRelation::Undetermined => level(compare_digits(a.id_number(), b.id_number())),
            _ => NULL_LEVEL,
        };
        ComparisonVector {
            levels: [
                level(compare_names(a, b)),
                level(compare_birth_dates(a, b)),
                level(compare_digits(a.phone(), b.phone())),
                level(compare_addresses(a, b)),
                level(compare_genders(a, b)),
                id_level,
            ],
            ids,
        }
    }

    /// A compact key (levels and ID relation) for counting patterns.
    pub fn key(&self) -> u64 {
        let mut key = 0u64;
        for level in self.levels {
            key = key << 8 | u64::from(level);
        }
        let ids = match self.ids {
            IdRelation::BothValidEqual => 1,
            IdRelation::BothValidDifferent => 2,
            IdRelation::Undetermined => 0,
        };
        key << 8 | ids
    }

    /// Whether a second field corroborates the name: the same name (characters or pinyin)
    /// and a strong agreement besides it — birth date exact or close, the same phone, or the
    /// same room with a birth year that agrees. A shared valid ID number always corroborates.
    pub fn corroborated(&self) -> bool {
        if self.ids == IdRelation::BothValidEqual {
            return true;
        }
        let level = |field: Field| self.levels[field as usize];
        let birth = level(Field::BirthDate);
        level(Field::Name) <= 1
            && (birth <= 1
                || level(Field::Phone) == 0
                || (level(Field::Address) == 0 && birth <= 2))
    }

    /// The vector a [`ComparisonVector::key`] came from.
    pub fn from_key(key: u64) -> ComparisonVector {
        let ids = match key & 0xff {
            1 => IdRelation::BothValidEqual,
            2 => IdRelation::BothValidDifferent,
            _ => IdRelation::Undetermined,
        };
        let mut levels = [0u8; FIELDS];
        for (i, level) in levels.iter_mut().enumerate() {
            *level = (key >> (8 * (FIELDS - i))) as u8;
        }
        ComparisonVector { levels, ids }
    }
}

fn level<L: Into<u8>>(value: Option<L>) -> u8 {
    value.map_or(NULL_LEVEL, Into::into)
}

macro_rules! level_into_u8 {
    ($($t:ty),*) => {$(
        impl From<$t> for u8 {
            fn from(level: $t) -> u8 {
                level as u8
            }
        }
    )*};
}
level_into_u8!(NameLevel, DateLevel, DigitsLevel, AddressLevel);

/// How the ID numbers of two records relate.
pub fn id_relation(a: &LinkRecord, b: &LinkRecord) -> IdRelation {
    match (a.valid_id(), b.valid_id()) {
        (Some(x), Some(y)) if x == y => IdRelation::BothValidEqual,
        (Some(_), Some(_)) => IdRelation::BothValidDifferent,
        _ => IdRelation::Undetermined,
    }
}

/// Name level; `None` if either name is missing.
pub fn compare_names(a: &LinkRecord, b: &LinkRecord) -> Option<NameLevel> {
    let (na, nb) = (a.name()?, b.name()?);
    if na == nb {
        return Some(NameLevel::Exact);
    }
    let (ra, rb) = (a.readings(), b.readings());
    if ra.is_empty() || rb.is_empty() {
        return Some(NameLevel::Different);
    }
    if ra.len() == rb.len() && ra.iter().zip(rb).all(|(x, y)| x.shares_reading(y)) {
        return Some(NameLevel::SamePinyin);
    }
    if a.fuzzy_pinyin() == b.fuzzy_pinyin()
        || strsim::jaro_winkler(a.pinyin(), b.pinyin()) >= JARO_WINKLER_THRESHOLD
    {
        return Some(NameLevel::SimilarPinyin);
    }
    let initials = |r: &[chinese_text::hanzi::CharReadings]| -> Vec<u8> {
        r.iter()
            .filter_map(|c| c.primary())
            .map(|s| s.initial())
            .collect()
    };
    if ra.len() == rb.len() && initials(ra) == initials(rb) {
        return Some(NameLevel::SameInitials);
    }
    Some(NameLevel::Different)
}

/// Birth-date level; `None` if either date is missing.
pub fn compare_birth_dates(a: &LinkRecord, b: &LinkRecord) -> Option<DateLevel> {
    let (x, y) = (a.birth_ymd()?, b.birth_ymd()?);
    let days_apart = || {
        let (p, q) = (a.birth_date()?, b.birth_date()?);
        Some(p.signed_duration_since(q).num_days().abs())
    };
    Some(if x == y {
        DateLevel::Exact
    } else if x / 100 == y / 100 || days_apart().is_some_and(|d| d <= 7) {
        DateLevel::Close
    } else if x / 10_000 == y / 10_000 {
        DateLevel::Year
    } else {
        DateLevel::Different
    })
}

/// Digit-string level (phones, ID numbers); `None` if either is missing.
pub fn compare_digits(a: Option<&str>, b: Option<&str>) -> Option<DigitsLevel> {
    let (x, y) = (a?.as_bytes(), b?.as_bytes());
    if x == y {
        return Some(DigitsLevel::Exact);
    }
    if x.len() != y.len() {
        return Some(DigitsLevel::Different);
    }
    let mut diffs = x.iter().zip(y).enumerate().filter(|(_, (p, q))| p != q);
    let first = diffs.next().map(|(i, _)| i);
    let second = diffs.next().map(|(i, _)| i);
    let more = diffs.next().is_some();
    let one_edit = match (first, second, more) {
        (Some(_), None, _) => true,
        (Some(i), Some(j), false) => j == i + 1 && x[i] == y[j] && x[j] == y[i],
        _ => false,
    };
    Some(if one_edit {
        DigitsLevel::OneEdit
    } else {
        DigitsLevel::Different
    })
}

/// Address level; `None` if neither compounds nor grids can be compared.
pub fn compare_addresses(a: &LinkRecord, b: &LinkRecord) -> Option<AddressLevel> {
    let (pa, pb) = (a.address(), b.address());
    let (ca, cb) = (a.compound_hash(), b.compound_hash());
    let same_community = match (a.community_code(), b.community_code()) {
        (Some(x), Some(y)) => Some(x == y),
        _ => None,
    };
    if ca != 0 && ca == cb {
        let same = |x: Option<u32>, y: Option<u32>| x.is_some() && x == y;
        if same(pa.building, pb.building) {
            let units_agree = pa.unit.is_none() || pb.unit.is_none() || pa.unit == pb.unit;
            if units_agree && same(pa.room, pb.room) {
                return Some(AddressLevel::SameRoom);
            }
            return Some(AddressLevel::SameBuilding);
        }
        return Some(AddressLevel::SameCommunity);
    }
    match same_community {
        Some(true) => Some(AddressLevel::SameCommunity),
        Some(false) => Some(AddressLevel::Different),
        None if ca != 0 && cb != 0 => Some(AddressLevel::Different),
        None => None,
    }
}

/// Gender level (0 agree, 1 different); `None` if either is unknown.
pub fn compare_genders(a: &LinkRecord, b: &LinkRecord) -> Option<u8> {
    Some(u8::from(a.gender()? != b.gender()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkage::record::LinkInput;
    use model::Department;

    fn named(name: &str) -> LinkRecord {
        record(name, None, None, None)
    }

    fn record(
        name: &str,
        phone: Option<&str>,
        address: Option<&str>,
        grid: Option<&str>,
    ) -> LinkRecord {
        LinkRecord::from_input(&LinkInput {
            department: Department::Weijian,
            row_key: "weijian/resident/1",
            id_number: None,
            name: Some(name),
            birth_date: None,
            gender: None,
            phone,
            address,
            grid,
        })
    }

    fn names(a: &str, b: &str) -> Option<NameLevel> {
        compare_names(&named(a), &named(b))
    }

    #[test]
    fn name_levels() {
        assert_eq!(names("张伟", "張偉"), Some(NameLevel::Exact));
        assert_eq!(names("张伟", "张玮"), Some(NameLevel::SamePinyin));
        assert_eq!(names("李丽", "李莉"), Some(NameLevel::SamePinyin));
        // 朝 reads zhao or chao: any reading counts.
        assert_eq!(names("王朝", "王超"), Some(NameLevel::SamePinyin));
        // Near homophone: lin / ling.
        assert_eq!(names("王琳琳", "王玲琳"), Some(NameLevel::SimilarPinyin));
        assert_eq!(names("于兰英", "于南英"), Some(NameLevel::SimilarPinyin));
        assert_eq!(names("秦辉", "秦飞"), Some(NameLevel::SimilarPinyin));
        assert_eq!(names("张建国", "周江贵"), Some(NameLevel::SameInitials));
        assert_eq!(names("张伟", "李娜"), Some(NameLevel::Different));
        assert_eq!(
            compare_names(&named("张伟"), &record("", None, None, None)),
            None
        );
    }

    #[test]
    fn surname_override_decides_same_pinyin() {
        // 单 as a surname is shan: 单 and 善 sound alike, 单 and 丹 do not.
        assert_eq!(names("单伟", "善伟"), Some(NameLevel::SamePinyin));
        assert_ne!(names("单伟", "丹伟"), Some(NameLevel::SamePinyin));
        assert_eq!(names("曾敏", "增敏"), Some(NameLevel::SamePinyin));
        assert_eq!(names("查文", "扎文"), Some(NameLevel::SamePinyin));
    }

    #[test]
    fn jaro_winkler_threshold_separates_levels() {
        let jw = |a: &str, b: &str| strsim::jaro_winkler(named(a).pinyin(), named(b).pinyin());
        // lin/ling: above the threshold.
        assert!(jw("王琳琳", "王玲琳") >= JARO_WINKLER_THRESHOLD);
        // Same surname, unrelated given name: below.
        assert!(jw("王建国", "王丽娜") < JARO_WINKLER_THRESHOLD);
        assert_eq!(names("王建国", "王丽娜"), Some(NameLevel::Different));
    }

    #[test]
    fn birth_date_levels() {
        let born = |y, m, d| {
            LinkRecord::from_input(&LinkInput {
                department: Department::Weijian,
                row_key: "r",
                id_number: None,
                name: Some("张伟"),
                birth_date: chrono::NaiveDate::from_ymd_opt(y, m, d),
                gender: None,
                phone: None,
                address: None,
                grid: None,
            })
        };
        let level = |a: &LinkRecord, b: &LinkRecord| compare_birth_dates(a, b);
        let base = born(1960, 4, 30);
        assert_eq!(level(&base, &born(1960, 4, 30)), Some(DateLevel::Exact));
        assert_eq!(level(&base, &born(1960, 4, 3)), Some(DateLevel::Close));
        assert_eq!(level(&base, &born(1960, 5, 2)), Some(DateLevel::Close));
        assert_eq!(level(&base, &born(1960, 9, 2)), Some(DateLevel::Year));
        assert_eq!(level(&base, &born(1961, 4, 30)), Some(DateLevel::Different));
    }

    #[test]
    fn digit_levels() {
        let d = |a: &str, b: &str| compare_digits(Some(a), Some(b));
        assert_eq!(d("13812345678", "13812345678"), Some(DigitsLevel::Exact));
        assert_eq!(d("13812345678", "13812345679"), Some(DigitsLevel::OneEdit));
        assert_eq!(d("13812345678", "13812346578"), Some(DigitsLevel::OneEdit));
        assert_eq!(
            d("13812345678", "13812346587"),
            Some(DigitsLevel::Different)
        );
        assert_eq!(d("13812345678", "1381234567"), Some(DigitsLevel::Different));
        assert_eq!(compare_digits(None, Some("1")), None);
    }

    #[test]
    fn address_levels() {
        let grid = Some("110105001001003");
        let a = |s: &str| record("张伟", None, Some(s), grid);
        let base = a("北京市朝阳区望京街道幸福里小区3号楼2单元501");
        let level = |s: &str| compare_addresses(&base, &a(s));
        assert_eq!(
            level("朝阳区幸福里小区3-2-501"),
            Some(AddressLevel::SameRoom)
        );
        assert_eq!(
            level("幸福里小区3号楼1单元502"),
            Some(AddressLevel::SameBuilding)
        );
        assert_eq!(
            level("幸福里小区5号楼2单元501"),
            Some(AddressLevel::SameCommunity)
        );
        let elsewhere = record(
            "张伟",
            None,
            Some("阳光嘉园1号楼101"),
            Some("110105001002001"),
        );
        assert_eq!(
            compare_addresses(&base, &elsewhere),
            Some(AddressLevel::Different)
        );
        let unknown = record("张伟", None, None, None);
        assert_eq!(compare_addresses(&base, &unknown), None);
    }

    #[test]
    fn vector_key_round_trips() {
        let v = ComparisonVector {
            levels: [1, NULL_LEVEL, 0, 3, 1, NULL_LEVEL],
            ids: IdRelation::BothValidDifferent,
        };
        assert_eq!(ComparisonVector::from_key(v.key()), v);
    }
}
