//! [`LinkRecord`]: what the linker sees of one resident source record, normalised once so
//! that comparing two records is cheap.
//!
//! Guarantees:
//! - Construction never fails and never panics: a field that cannot be read is absent, and an
//!   absent field is "unknown", never "different".
//! - `id_number`, when present, is upper-case digits/`X`; `id_valid` says whether it is a
//!   valid GB 11643 number (a 15-digit legacy number is upgraded to its 18-digit form and is
//!   valid). Only valid numbers take part in the "two different IDs never merge" constraint.
//! - A missing birth date or gender is taken from a valid ID number, as the model does.
//! - Names are folded ([`fold_name`]): traditional characters, whitespace and separators do
//!   not make two names differ.

use chrono::{Datelike, NaiveDate};

use model::{Department, DivisionCode, Gender, IdNumber, Phone, ResidentRecord};

use super::address::AddressParts;
use chinese_text::hanzi::{fold_name, name_readings, surname_len, CharReadings, Syllable};

/// The fields of a resident record as a department delivered them, before normalisation.
#[derive(Clone, Copy, Debug)]
pub struct LinkInput<'a> {
    pub department: Department,
    /// The store's row key of the source record (`gongan/resident/GA-1`).
    pub row_key: &'a str,
    pub id_number: Option<&'a str>,
    pub name: Option<&'a str>,
    pub birth_date: Option<NaiveDate>,
    pub gender: Option<Gender>,
    pub phone: Option<&'a str>,
    /// Standard address of residence.
    pub address: Option<&'a str>,
    /// 15-digit grid code.
    pub grid: Option<&'a str>,
}

/// One resident source record, normalised for linkage.
#[derive(Clone, Debug)]
pub struct LinkRecord {
    department: Department,
    row_key: String,
    id_number: Option<String>,
    id_valid: bool,
    name: Option<String>,
    birth_date: Option<NaiveDate>,
    gender: Option<Gender>,
    phone: Option<String>,
    address: AddressParts,
    grid: Option<String>,
    /// Readings per name character (surname overrides applied).
    readings: Vec<CharReadings>,
    /// Primary readings concatenated (`zhangwei`).
    pinyin: String,
    /// Primary readings with regional confusions folded ([`Syllable::fuzzy`]).
    fuzzy: Vec<Syllable>,
    /// Characters of `readings` that belong to the surname.
    surname_chars: usize,
    /// Hash of the compound name, for cheap comparison; 0 when unknown.
    compound_hash: u64,
}

impl LinkRecord {
    /// Normalises raw department fields.
    pub fn from_input(input: &LinkInput<'_>) -> LinkRecord {
        let (id_number, id_valid, parsed) = match input.id_number.map(str::trim) {
            None | Some("") => (None, false, None),
            Some(text) => match IdNumber::parse(text) {
                Ok(id) => (Some(id.as_str().to_owned()), true, Some(id)),
                Err(_) => (id_text(text), false, None),
            },
        };
        let birth_date = input
            .birth_date
            .or_else(|| parsed.as_ref().map(IdNumber::birth_date));
        let gender = input
            .gender
            .or_else(|| parsed.as_ref().map(IdNumber::gender));
        let phone = input.phone.and_then(|p| match Phone::parse(p) {
            Ok(phone) => Some(phone.digits()),
            Err(_) => {
                let digits: String = p.chars().filter(char::is_ascii_digit).collect();
                (digits.len() >= 7).then_some(digits)
            }
        });
        let grid = input
            .grid
            .and_then(|g| DivisionCode::parse(g).ok())
            .map(|g| g.as_str().to_owned());
        Self::build(
            input.department,
            input.row_key.to_owned(),
            id_number,
            id_valid,
            input.name,
            birth_date,
            gender,
            phone,
            input.address.map(AddressParts::parse).unwrap_or_default(),
            grid,
        )
    }

    /// Normalises a validated resident record (its ID number, if any, is valid).
    pub fn from_resident(
        department: Department,
        row_key: &str,
        record: &ResidentRecord,
    ) -> LinkRecord {
        let address = record.address.as_deref().map(chinese_text::address::parse);
        Self::from_resident_parsed(department, row_key, record, address.as_ref())
    }

    /// [`Self::from_resident`] with the record's address already read by
    /// `chinese_text::address::parse` (`None`: it has none).
    pub fn from_resident_parsed(
        department: Department,
        row_key: &str,
        record: &ResidentRecord,
        address: Option<&chinese_text::address::AddressParts>,
    ) -> LinkRecord {
        let birth_date = record
            .birth_date
            .or_else(|| record.id_number.as_ref().map(IdNumber::birth_date));
        let gender = record
            .gender
            .or_else(|| record.id_number.as_ref().map(IdNumber::gender));
        Self::build(
            department,
            row_key.to_owned(),
            record.id_number.as_ref().map(|id| id.as_str().to_owned()),
            record.id_number.is_some(),
            record.name.as_deref(),
            birth_date,
            gender,
            record.phone.as_ref().map(Phone::digits),
            address.map(AddressParts::of).unwrap_or_default(),
            record.grid.as_ref().map(|g| g.as_str().to_owned()),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        department: Department,
        row_key: String,
        id_number: Option<String>,
        id_valid: bool,
        name: Option<&str>,
        birth_date: Option<NaiveDate>,
        gender: Option<Gender>,
        phone: Option<String>,
        address: AddressParts,
        grid: Option<String>,
    ) -> LinkRecord {
        let name = name.map(fold_name).filter(|n| !n.is_empty());
        let readings = name.as_deref().map(name_readings).unwrap_or_default();
        let surname_chars = name.as_deref().map(surname_len).unwrap_or(0);
        let mut pinyin = String::with_capacity(readings.len() * 4);
        for r in &readings {
            if let Some(p) = r.primary() {
                pinyin.push_str(&p.letters());
            }
        }
        let fuzzy = readings
            .iter()
            .filter_map(CharReadings::primary)
            .map(Syllable::fuzzy)
            .collect();
        let compound_hash = address.compound.as_deref().map_or(0, stable_hash);
        LinkRecord {
            department,
            row_key,
            id_number,
            id_valid,
            name,
            birth_date,
            gender: gender.filter(|g| *g != Gender::Unknown),
            phone,
            address,
            grid,
            readings,
            pinyin,
            fuzzy,
            surname_chars,
            compound_hash,
        }
    }

    pub fn department(&self) -> Department {
        self.department
    }

    pub fn row_key(&self) -> &str {
        &self.row_key
    }

    /// The normalised ID number (valid or not).
    pub fn id_number(&self) -> Option<&str> {
        self.id_number.as_deref()
    }

    /// The ID number if it is valid.
    pub fn valid_id(&self) -> Option<&str> {
        self.id_number.as_deref().filter(|_| self.id_valid)
    }

    pub fn id_valid(&self) -> bool {
        self.id_valid
    }

    /// The folded name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn birth_date(&self) -> Option<NaiveDate> {
        self.birth_date
    }

    /// Male or female; `None` when unknown.
    pub fn gender(&self) -> Option<Gender> {
        self.gender
    }

    /// Phone digits.
    pub fn phone(&self) -> Option<&str> {
        self.phone.as_deref()
    }

    pub fn address(&self) -> &AddressParts {
        &self.address
    }

    pub fn grid(&self) -> Option<&str> {
        self.grid.as_deref()
    }

    /// The 12-digit community (社区) code of the grid.
    pub fn community_code(&self) -> Option<&str> {
        self.grid.as_deref().and_then(|g| g.get(..12))
    }

    pub fn readings(&self) -> &[CharReadings] {
        &self.readings
    }

    /// Primary pinyin of the whole name (`zhangwei`).
    pub fn pinyin(&self) -> &str {
        &self.pinyin
    }

    /// Primary readings with regional confusions folded, one per character.
    pub fn fuzzy_pinyin(&self) -> &[Syllable] {
        &self.fuzzy
    }

    /// Primary pinyin of the surname (`zhang`, `shan` for 单).
    pub fn surname_pinyin(&self) -> String {
        self.readings
            .iter()
            .take(self.surname_chars)
            .filter_map(CharReadings::primary)
            .map(|s| s.letters())
            .collect()
    }

    pub(crate) fn compound_hash(&self) -> u64 {
        self.compound_hash
    }

    /// `YYYYMMDD` of the birth date.
    pub(crate) fn birth_ymd(&self) -> Option<u32> {
        self.birth_date.and_then(|d| {
            u32::try_from(d.year())
                .ok()
                .map(|y| y * 10_000 + d.month() * 100 + d.day())
        })
    }
}

/// The text of an ID number that failed validation, kept for similarity if it looks like one.
fn id_text(text: &str) -> Option<String> {
    let normalised: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            'x' | 'ｘ' | 'Ｘ' => 'X',
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            _ => c,
        })
        .collect();
    let looks_like_id = matches!(normalised.len(), 15 | 18)
        && normalised.chars().all(|c| c.is_ascii_digit() || c == 'X');
    looks_like_id.then_some(normalised)
}

/// FNV-1a: a hash that is the same in every process (blocking and comparison rely on it).
pub(crate) fn stable_hash(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

/// Normalises every input for linkage, on every core for large sets.
pub fn link_records(inputs: &[LinkInput<'_>]) -> Vec<LinkRecord> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || inputs.len() < 10_000 {
        return inputs.iter().map(LinkRecord::from_input).collect();
    }
    let chunk = inputs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(LinkRecord::from_input).collect::<Vec<_>>())
            })
            .collect();
        let mut out = Vec::with_capacity(inputs.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input<'a>(id: Option<&'a str>, name: &'a str) -> LinkInput<'a> {
        LinkInput {
            department: Department::Minzheng,
            row_key: "minzheng/resident/MZ-1",
            id_number: id,
            name: Some(name),
            birth_date: None,
            gender: None,
            phone: Some("138-1234-5678"),
            address: Some("北京市朝阳区望京街道幸福里小区3号楼2单元501"),
            grid: Some("110105001001003"),
        }
    }

    #[test]
    fn legacy_id_is_upgraded_and_fills_birth_date() {
        let r = LinkRecord::from_input(&input(Some("110105491231002"), "張偉"));
        assert!(r.id_valid());
        assert_eq!(r.valid_id().unwrap().len(), 18);
        assert_eq!(r.birth_date(), NaiveDate::from_ymd_opt(1949, 12, 31));
        assert_eq!(r.gender(), Some(Gender::Female));
        assert_eq!(r.name(), Some("张伟"));
        assert_eq!(r.pinyin(), "zhangwei");
        assert_eq!(r.surname_pinyin(), "zhang");
        assert_eq!(r.phone(), Some("13812345678"));
        assert_eq!(r.community_code(), Some("110105001001"));
        assert_eq!(r.address().building, Some(3));
    }

    #[test]
    fn invalid_id_is_kept_but_not_valid() {
        let r = LinkRecord::from_input(&input(Some("110105194912310021"), "张伟"));
        assert!(!r.id_valid());
        assert_eq!(r.id_number(), Some("110105194912310021"));
        assert_eq!(r.valid_id(), None);
        assert_eq!(r.birth_date(), None);
        let r = LinkRecord::from_input(&input(Some("not an id"), "张伟"));
        assert_eq!(r.id_number(), None);
    }
}
