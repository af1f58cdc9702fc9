//! The 18-character identity numbers of the state's GB 11643 family: resident identity card
//! numbers (居民身份证号码, GB 11643-1999) and the numbers built to the same standard for
//! people who hold no resident identity card.
//!
//! Guarantees: an [`IdNumber`] is always the 18-character form: 17 ASCII digits and a check
//! digit (`0`-`9` or uppercase `X`) that matches GB 11643, and a real birth date in characters
//! 7-14 between 1900-01-01 and today (China time). Its first characters say which document it
//! is, and that prefix is checked: a resident identity card number starts with a known
//! province code; a residence permit for Hong Kong and Macao residents (港澳居民居住证) with
//! `810000` or `820000`; one for Taiwan residents (台湾居民居住证) with `830000`; and a foreign
//! permanent resident ID card number (外国人永久居留身份证, 2023 format) with `9`, a mainland
//! province code and an ISO 3166-1 numeric nationality code. The prefixes do not overlap, so
//! one number is one [`IdNumberDocument`]. First-generation 15-digit numbers, which only
//! resident identity cards had, are upgraded to 18 on parse. `Debug` shows only the prefix
//! that names the region (never a foreigner's nationality) and the last four characters,
//! there is no `Display`, and no error message (including serde's) ever contains the input.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::country::CountryCode;
use crate::date::today_in_china;
use crate::gender::Gender;

/// GB 11643 weights of the first 17 digits.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each value of the weighted sum modulo 11.
const CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// A valid 18-character number of the GB 11643 family: a resident identity card number, a
/// residence permit number for Hong Kong, Macao or Taiwan residents, or a foreign permanent
/// resident ID card number ([`IdNumber::document`] tells which).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdNumber {
    /// Normalised 18-character number; ordering and equality are decided by it alone, since
    /// `birth_date` is a function of it.
    number: String,
    /// Kept at parse time so that reading it back cannot fail.
    birth_date: NaiveDate,
}

/// Which document an [`IdNumber`] is the number of; decided by its first characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdNumberDocument {
    /// 居民身份证: starts with a province code (11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71).
    ResidentId,
    /// 外国人永久居留身份证, 2023 format: `9`, the issuing province, the nationality.
    ForeignPermanentResident,
    /// 港澳居民居住证: `810000` (Hong Kong) or `820000` (Macao).
    HongKongMacaoResidencePermit,
    /// 台湾居民居住证: `830000`.
    TaiwanResidencePermit,
}

impl IdNumberDocument {
    pub const ALL: [IdNumberDocument; 4] = [
        IdNumberDocument::ResidentId,
        IdNumberDocument::ForeignPermanentResident,
        IdNumberDocument::HongKongMacaoResidencePermit,
        IdNumberDocument::TaiwanResidencePermit,
    ];

    /// Stable snake_case name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            IdNumberDocument::ResidentId => "resident_id",
            IdNumberDocument::ForeignPermanentResident => "foreign_permanent_resident",
            IdNumberDocument::HongKongMacaoResidencePermit => "hong_kong_macao_residence_permit",
            IdNumberDocument::TaiwanResidencePermit => "taiwan_residence_permit",
        }
    }

    /// The document's Chinese name, for user-facing text.
    pub fn chinese_name(self) -> &'static str {
        match self {
            IdNumberDocument::ResidentId => "居民身份证",
            IdNumberDocument::ForeignPermanentResident => "外国人永久居留身份证",
            IdNumberDocument::HongKongMacaoResidencePermit => "港澳居民居住证",
            IdNumberDocument::TaiwanResidencePermit => "台湾居民居住证",
        }
    }

    /// The document the first 17 digits of a number belong to, by prefix alone.
    fn of(first17: &str) -> IdNumberDocument {
        match first17.as_bytes() {
            [b'9', ..] => IdNumberDocument::ForeignPermanentResident,
            [b'8', b'1' | b'2', ..] => IdNumberDocument::HongKongMacaoResidencePermit,
            [b'8', b'3', ..] => IdNumberDocument::TaiwanResidencePermit,
            _ => IdNumberDocument::ResidentId,
        }
    }
}

/// Why a string is not an ID number. Messages never quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error(
        "ID number is missing: supply the 18-character number of the resident identity card, \
         residence permit or foreign permanent resident ID card"
    )]
    Empty,
    #[error(
        "ID number has the wrong length: it must have 18 characters (or 15 digits for a \
         first-generation card); check for missing or extra digits"
    )]
    Length,
    #[error(
        "ID number contains an invalid character: only digits are allowed, and X only as the \
         last of 18 characters; remove letters, punctuation and inner spaces"
    )]
    Format,
    #[error(
        "ID number region code is invalid: a resident identity card number starts with a \
         province code (11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71), a residence permit for \
         Hong Kong, Macao or Taiwan residents with 810000, 820000 or 830000, a foreign permanent \
         resident ID card number with 9; a 15-digit number can only be a first-generation \
         resident identity card; check the first six digits"
    )]
    Region,
    #[error(
        "ID number birth date is invalid: digits 7-14 must be a real date (YYYYMMDD) between \
         1900-01-01 and today; check them against the card"
    )]
    BirthDate,
    #[error(
        "ID number check digit does not match: at least one character is mistyped; compare \
         the number with the card"
    )]
    Checksum,
    #[error(
        "ID number looks like a residence permit for Hong Kong, Macao or Taiwan residents (it \
         starts with 81, 82 or 83), but those start with exactly 810000, 820000 or 830000; \
         check the first six digits against the permit"
    )]
    PermitRegion,
    #[error(
        "ID number looks like a foreign permanent resident ID card (it starts with 9), but \
         digits 2-3 must be the code of the issuing province (11-15, 21-23, 31-37, 41-46, \
         50-54, 61-65); check the first three digits against the card"
    )]
    IssuingProvince,
    #[error(
        "ID number looks like a foreign permanent resident ID card (it starts with 9), but \
         digits 4-6 are not the numeric code of a foreign nationality (ISO 3166-1, e.g. 840, \
         392); check them against the card"
    )]
    Nationality,
}

impl IdNumberError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IdNumberError::Empty => "id_number_missing",
            IdNumberError::Length => "id_number_length",
            IdNumberError::Format => "id_number_format",
            IdNumberError::Region => "id_number_region",
            IdNumberError::BirthDate => "id_number_birth_date",
            IdNumberError::Checksum => "id_number_checksum",
            IdNumberError::PermitRegion => "id_number_permit_region",
            IdNumberError::IssuingProvince => "id_number_issuing_province",
            IdNumberError::Nationality => "id_number_nationality",
        }
    }
}

/// GB 11643 check character for the first 17 digits of an ID number, or `None` unless
/// `first17` is exactly 17 ASCII digits.
pub fn check_digit(first17: &str) -> Option<char> {
    if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first17
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, weight)| u32::from(b - b'0') * weight)
        .sum();
    CHECK_CHARS.get((sum % 11) as usize).copied()
}

impl IdNumber {
    /// Parses an 18-character number of any [`IdNumberDocument`], or a first-generation
    /// 15-digit resident identity card number.
    ///
    /// Surrounding whitespace (including the full-width space) is ignored, full-width digits
    /// are read as digits, and `x`, `ｘ`, `Ｘ` as `X`.
    pub fn parse(input: &str) -> Result<IdNumber, IdNumberError> {
        Self::parse_on(input, today_in_china())
    }

    /// [`IdNumber::parse`] with "today" given, so the birth-date bound is testable.
    fn parse_on(input: &str, today: NaiveDate) -> Result<IdNumber, IdNumberError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(IdNumberError::Empty);
        }
        let length = trimmed.chars().count();
        if length != 15 && length != 18 {
            return Err(IdNumberError::Length);
        }
        let normalised = trimmed
            .chars()
            .map(normalise_char)
            .collect::<Option<String>>()
            .ok_or(IdNumberError::Format)?;

        // From here on `normalised` is ASCII, so byte ranges are character ranges.
        let (first17, given_check) = if length == 15 {
            let region = normalised.get(..6).ok_or(IdNumberError::Format)?;
            let rest = normalised.get(6..).ok_or(IdNumberError::Format)?;
            (format!("{region}19{rest}"), None)
        } else {
            let first17 = normalised.get(..17).ok_or(IdNumberError::Format)?;
            let last = normalised.get(17..).ok_or(IdNumberError::Format)?;
            (first17.to_owned(), Some(last))
        };
        let computed_check = check_digit(&first17).ok_or(IdNumberError::Format)?;

        check_prefix(&first17, length == 15)?;
        let birth_date = first17
            .get(6..14)
            .and_then(parse_compact_date)
            .filter(|date| earliest_birth_date().is_some_and(|min| *date >= min))
            .filter(|date| *date <= today)
            .ok_or(IdNumberError::BirthDate)?;
        if let Some(given) = given_check {
            let mut given_chars = given.chars();
            if given_chars.next() != Some(computed_check) || given_chars.next().is_some() {
                return Err(IdNumberError::Checksum);
            }
        }

        let mut number = first17;
        number.push(computed_check);
        Ok(IdNumber { number, birth_date })
    }

    /// The normalised 18-character number.
    pub fn as_str(&self) -> &str {
        &self.number
    }

    /// Date of birth encoded in characters 7-14.
    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    /// Gender encoded by the 17th digit: odd is male, even is female. GB 11643 rules this for
    /// resident identity cards and residence permits; for the foreign permanent resident ID
    /// card, which the National Immigration Administration modelled on GB 11643, the same
    /// reading is assumed.
    pub fn gender(&self) -> Gender {
        match self.number.as_bytes().get(16) {
            Some(digit) if (digit - b'0') % 2 == 1 => Gender::Male,
            Some(_) => Gender::Female,
            None => Gender::Unknown,
        }
    }

    /// The first six characters: for a resident identity card the administrative region code
    /// of the place of first registration; for a residence permit `810000`, `820000` or
    /// `830000`. For a foreign permanent resident ID card they are `9`, the issuing province
    /// and the nationality, not a division code: check [`IdNumber::document`] before reading
    /// them as one.
    pub fn region_code(&self) -> &str {
        self.number.get(..6).unwrap_or_default()
    }

    /// Which document this is the number of.
    pub fn document(&self) -> IdNumberDocument {
        IdNumberDocument::of(&self.number)
    }

    /// The two-digit province-level code the number names: the province of first
    /// registration (resident identity card), `81`, `82` or `83` (residence permits), or the
    /// province whose authority issued the card (foreign permanent resident ID card).
    pub fn province_code(&self) -> &str {
        let range = match self.document() {
            IdNumberDocument::ForeignPermanentResident => 1..3,
            _ => 0..2,
        };
        self.number.get(range).unwrap_or_default()
    }

    /// The holder's nationality, for a foreign permanent resident ID card; `None` for the
    /// other documents, whose holders are Chinese citizens.
    pub fn nationality(&self) -> Option<CountryCode> {
        match self.document() {
            IdNumberDocument::ForeignPermanentResident => {
                self.number.get(3..6).and_then(CountryCode::from_numeric)
            }
            _ => None,
        }
    }

    /// Whether `input` looks like a first-generation 15-digit number (15 digits after
    /// trimming); says nothing about its validity.
    pub fn is_legacy_15(input: &str) -> bool {
        let trimmed = input.trim();
        trimmed.chars().count() == 15 && trimmed.chars().all(|c| fold_digit(c).is_some())
    }
}

/// Maps one input character to its normalised form, or `None` if it cannot appear.
fn normalise_char(c: char) -> Option<char> {
    match c {
        'x' | 'X' | 'ｘ' | 'Ｘ' => Some('X'),
        _ => fold_digit(c),
    }
}

/// An ASCII or full-width digit as an ASCII digit.
fn fold_digit(c: char) -> Option<char> {
    match c {
        '0'..='9' => Some(c),
        '０'..='９' => char::from_digit(u32::from(c) - u32::from('０'), 10),
        _ => None,
    }
}

/// Checks the prefix of the first 17 digits (ASCII digits) against the document it names.
/// `legacy` is set for a number that came in the first-generation 15-digit form.
fn check_prefix(first17: &str, legacy: bool) -> Result<(), IdNumberError> {
    let two_digits = |range: std::ops::Range<usize>| {
        first17
            .get(range)
            .and_then(|digits| digits.parse::<u8>().ok())
    };
    let document = IdNumberDocument::of(first17);
    if legacy && document != IdNumberDocument::ResidentId {
        return Err(IdNumberError::Region);
    }
    match document {
        IdNumberDocument::ResidentId => {
            if !two_digits(0..2).is_some_and(is_resident_province) {
                return Err(IdNumberError::Region);
            }
        }
        IdNumberDocument::HongKongMacaoResidencePermit
        | IdNumberDocument::TaiwanResidencePermit => {
            if first17.get(2..6) != Some("0000") {
                return Err(IdNumberError::PermitRegion);
            }
        }
        IdNumberDocument::ForeignPermanentResident => {
            if !two_digits(1..3).is_some_and(is_mainland_province) {
                return Err(IdNumberError::IssuingProvince);
            }
            let nationality = first17.get(3..6).and_then(CountryCode::from_numeric);
            if nationality.is_none_or(|country| country == CountryCode::CHINA) {
                return Err(IdNumberError::Nationality);
            }
        }
    }
    Ok(())
}

/// The province-level codes of the mainland (GB/T 2260).
fn is_mainland_province(prefix: u8) -> bool {
    matches!(
        prefix,
        11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65
    )
}

/// The first two digits a resident identity card number may start with: a mainland province
/// or Taiwan (71), as GB/T 2260 lists them.
fn is_resident_province(prefix: u8) -> bool {
    is_mainland_province(prefix) || prefix == 71
}

fn earliest_birth_date() -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1900, 1, 1)
}

/// `YYYYMMDD` (ASCII digits) as a date.
fn parse_compact_date(yyyymmdd: &str) -> Option<NaiveDate> {
    let year = yyyymmdd.get(..4)?.parse().ok()?;
    let month = yyyymmdd.get(4..6)?.parse().ok()?;
    let day = yyyymmdd.get(6..8)?.parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

impl fmt::Debug for IdNumber {
    /// Prints `IdNumber(110105********002X)`: the birth date never reaches a log, nor a
    /// foreigner's nationality (`IdNumber(911***********0017)`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = match self.document() {
            IdNumberDocument::ForeignPermanentResident => 3,
            _ => 6,
        };
        let head = self.number.get(..shown).unwrap_or_default();
        let stars = "*".repeat(14 - shown);
        let tail = self.number.get(14..).unwrap_or_default();
        write!(f, "IdNumber({head}{stars}{tail})")
    }
}

impl FromStr for IdNumber {
    type Err = IdNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdNumber::parse(s)
    }
}

impl Serialize for IdNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.number)
    }
}

impl<'de> Deserialize<'de> for IdNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PersonalStrVisitor::new("an ID number string", |s: &str| {
            IdNumber::parse(s).map_err(|e| format!("{}: {e}", e.code()))
        })
        .deserialize(deserializer)
    }
}

/// Deserializes a personal-data string through `parse` without echoing the value.
///
/// Serde's default messages quote what they got (`invalid type: integer `13812345678``), which
/// would carry an ID or phone number into logs and API responses; this visitor names only the
/// kind of value. Shared with `phone.rs`.
///
/// Human-readable formats are asked for `deserialize_any`: serde_json's `deserialize_str`
/// builds its type-mismatch error itself, quoting the number, before any visitor method runs.
/// Binary formats, which seldom support `deserialize_any`, are asked for a string.
pub(crate) struct PersonalStrVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
    value: PhantomData<T>,
}

impl<T> PersonalStrVisitor<T> {
    /// `parse` must return a message that does not contain its input.
    pub(crate) fn new(expecting: &'static str, parse: fn(&str) -> Result<T, String>) -> Self {
        PersonalStrVisitor {
            expecting,
            parse,
            value: PhantomData,
        }
    }
}

impl<T> PersonalStrVisitor<T> {
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<T, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(self)
        } else {
            deserializer.deserialize_str(self)
        }
    }
}

impl<T> Visitor<'_> for PersonalStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<T, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(E::invalid_type(Unexpected::Other("non-UTF-8 bytes"), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Err(E::invalid_type(Unexpected::Other("number"), &self))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Err(E::invalid_type(Unexpected::Other("number"), &self))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<T, E> {
        Err(E::invalid_type(Unexpected::Other("number"), &self))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<T, E> {
        Err(E::invalid_type(Unexpected::Other("number"), &self))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Err(E::invalid_type(Unexpected::Other("number"), &self))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 110105 19490101 002 + check digit X: a valid number used throughout.
    const VALID: &str = "11010519491231002X";

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn with_check(first17: &str) -> String {
        format!("{first17}{}", check_digit(first17).unwrap())
    }

    #[test]
    fn check_digit_matches_the_standards_examples() {
        // The two worked examples of GB 11643-1999.
        assert_eq!(check_digit("11010519491231002"), Some('X'));
        assert_eq!(check_digit("44052418800101001"), Some('4'));
        assert_eq!(check_digit("44030819900307451"), Some('6'));
        assert_eq!(check_digit("1101051949123100"), None);
        assert_eq!(check_digit("1101051949123100A"), None);
        assert_eq!(check_digit("１１０１０５１９４９１２３１００２"), None);
    }

    #[test]
    fn parses_valid_number_and_reads_fields() {
        let id = IdNumber::parse(VALID).unwrap();
        assert_eq!(id.as_str(), VALID);
        assert_eq!(id.region_code(), "110105");
        assert_eq!(id.birth_date(), day(1949, 12, 31));
        assert_eq!(id.gender(), Gender::Female);
        let male = IdNumber::parse(&with_check("44030819900307451")).unwrap();
        assert_eq!(male.gender(), Gender::Male);
    }

    #[test]
    fn normalises_case_width_and_whitespace() {
        for input in [
            "11010519491231002x",
            "  11010519491231002X\t",
            "\u{3000}１１０１０５１９４９１２３１００２ｘ\u{3000}",
            "11010519491231002Ｘ",
        ] {
            assert_eq!(IdNumber::parse(input).unwrap().as_str(), VALID, "{input}");
        }
    }

    #[test]
    fn upgrades_fifteen_digit_numbers() {
        let old = "110105491231002";
        assert!(IdNumber::is_legacy_15(old));
        assert!(!IdNumber::is_legacy_15(VALID));
        let id = IdNumber::parse(old).unwrap();
        assert_eq!(id.as_str(), VALID);
        assert_eq!(id.birth_date(), day(1949, 12, 31));
        assert_eq!(
            IdNumber::parse("11010549123100X"),
            Err(IdNumberError::Format)
        );
    }

    #[test]
    fn each_error_has_its_code() {
        let cases = [
            ("", "id_number_missing"),
            (" \u{3000} ", "id_number_missing"),
            ("1101051949123100", "id_number_length"),
            ("11010519491231002X1", "id_number_length"),
            ("1101051949123100AX", "id_number_format"),
            ("110105194912310X2X", "id_number_format"),
            ("110105 19491231002X", "id_number_length"),
            ("1101051949 231002X", "id_number_format"),
            ("00010519491231002X", "id_number_region"),
            ("19010519491231002X", "id_number_region"),
            ("11010519490230002X", "id_number_birth_date"),
            ("11010518991231002X", "id_number_birth_date"),
            ("110105199902300", "id_number_birth_date"),
            ("110105194912310021", "id_number_checksum"),
            ("11010519491231003X", "id_number_checksum"),
        ];
        for (input, code) in cases {
            let err = IdNumber::parse(input).unwrap_err();
            assert_eq!(err.code(), code, "{input:?}");
        }
    }

    #[test]
    fn birth_date_may_not_be_in_the_future() {
        let first17 = "11010520260315001";
        let id = with_check(first17);
        assert!(IdNumber::parse_on(&id, day(2026, 3, 15)).is_ok());
        assert_eq!(
            IdNumber::parse_on(&id, day(2026, 3, 14)),
            Err(IdNumberError::BirthDate)
        );
        assert_eq!(
            IdNumber::parse_on(&with_check("11010519000101001"), day(2026, 1, 1))
                .map(|id| id.birth_date()),
            Ok(day(1900, 1, 1))
        );
    }

    #[test]
    fn accepts_every_listed_province() {
        for prefix in [11, 15, 21, 23, 31, 37, 41, 46, 50, 54, 61, 65, 71] {
            let id = with_check(&format!("{prefix}010519491231002"));
            assert!(IdNumber::parse(&id).is_ok(), "{prefix}");
            assert_eq!(
                IdNumber::parse(&id).unwrap().document(),
                IdNumberDocument::ResidentId
            );
        }
        for prefix in [
            10, 16, 20, 24, 30, 38, 40, 47, 49, 55, 60, 66, 70, 72, 80, 84,
        ] {
            let id = with_check(&format!("{prefix}010519491231002"));
            assert_eq!(IdNumber::parse(&id), Err(IdNumberError::Region), "{prefix}");
        }
        // 81-83 name residence permits and 9 the foreign permanent resident ID card: a
        // resident-style region code after them is a wrong prefix of that document.
        for prefix in [81, 82, 83] {
            let id = with_check(&format!("{prefix}010519491231002"));
            assert_eq!(
                IdNumber::parse(&id),
                Err(IdNumberError::PermitRegion),
                "{prefix}"
            );
        }
        for prefix in [90, 91, 92] {
            let id = with_check(&format!("{prefix}010519491231002"));
            assert_eq!(
                IdNumber::parse(&id),
                Err(IdNumberError::IssuingProvince),
                "{prefix}"
            );
        }
    }

    /// Hong Kong resident, born 1994-08-23, sequence 002 (female).
    const HONG_KONG: &str = "81000019940823002";
    /// Macao resident, born 2001-02-28, sequence 011 (male).
    const MACAO: &str = "82000020010228011";
    /// Taiwan resident, born 1992-01-30, sequence 002.
    const TAIWAN: &str = "83000019920130002";
    /// Foreigner, card issued in Jiangsu (32), Saudi national (682), born 1985-01-01.
    const FOREIGNER: &str = "93268219850101001";
    /// Foreigner, card issued in Beijing (11), United States national (840), born 1980-02-29.
    const FOREIGNER_BEIJING: &str = "91184019800229002";

    #[test]
    fn each_document_parses_with_its_computed_check_character() {
        let cases = [
            (
                "11010519491231002",
                IdNumberDocument::ResidentId,
                day(1949, 12, 31),
            ),
            (
                HONG_KONG,
                IdNumberDocument::HongKongMacaoResidencePermit,
                day(1994, 8, 23),
            ),
            (
                MACAO,
                IdNumberDocument::HongKongMacaoResidencePermit,
                day(2001, 2, 28),
            ),
            (
                TAIWAN,
                IdNumberDocument::TaiwanResidencePermit,
                day(1992, 1, 30),
            ),
            (
                FOREIGNER,
                IdNumberDocument::ForeignPermanentResident,
                day(1985, 1, 1),
            ),
            (
                FOREIGNER_BEIJING,
                IdNumberDocument::ForeignPermanentResident,
                day(1980, 2, 29),
            ),
        ];
        for (first17, document, birth) in cases {
            let number = with_check(first17);
            let id = IdNumber::parse(&number).unwrap();
            assert_eq!(id.as_str(), number);
            assert_eq!(id.document(), document, "{first17}");
            assert_eq!(id.birth_date(), birth, "{first17}");
            // Lowercase x, full-width digits and spaces normalise as for resident cards.
            let wide: String = number
                .chars()
                .map(|c| match c {
                    '0'..='9' => char::from_u32(u32::from(c) + 0xFEE0).unwrap(),
                    'X' => 'x',
                    other => other,
                })
                .collect();
            assert_eq!(IdNumber::parse(&format!(" {wide}\u{3000}")), Ok(id));
        }
        // Published sample numbers: Beijing police's residence permit samples and a
        // foreign permanent resident sample, with the check characters they print.
        for (number, document) in [
            (
                "810000199408230021",
                IdNumberDocument::HongKongMacaoResidencePermit,
            ),
            (
                "830000199201300022",
                IdNumberDocument::TaiwanResidencePermit,
            ),
            (
                "932682198501010017",
                IdNumberDocument::ForeignPermanentResident,
            ),
        ] {
            assert_eq!(IdNumber::parse(number).unwrap().document(), document);
        }
    }

    #[test]
    fn documents_read_their_fields() {
        let hong_kong = IdNumber::parse(&with_check(HONG_KONG)).unwrap();
        assert_eq!(hong_kong.region_code(), "810000");
        assert_eq!(hong_kong.province_code(), "81");
        assert_eq!(hong_kong.nationality(), None);
        assert_eq!(hong_kong.gender(), Gender::Female);
        let macao = IdNumber::parse(&with_check(MACAO)).unwrap();
        assert_eq!(macao.province_code(), "82");
        assert_eq!(macao.gender(), Gender::Male);
        let taiwan = IdNumber::parse(&with_check(TAIWAN)).unwrap();
        assert_eq!(taiwan.province_code(), "83");
        let foreigner = IdNumber::parse(&with_check(FOREIGNER)).unwrap();
        assert_eq!(foreigner.province_code(), "32");
        assert_eq!(foreigner.nationality().map(|c| c.as_str()), Some("SAU"));
        assert_eq!(foreigner.gender(), Gender::Male);
        let american = IdNumber::parse(&with_check(FOREIGNER_BEIJING)).unwrap();
        assert_eq!(american.province_code(), "11");
        assert_eq!(american.nationality().map(|c| c.as_str()), Some("USA"));
        let resident = IdNumber::parse(VALID).unwrap();
        assert_eq!(resident.province_code(), "11");
        assert_eq!(resident.nationality(), None);
        assert_eq!(resident.document(), IdNumberDocument::ResidentId);
    }

    #[test]
    fn a_wrong_check_character_is_a_checksum_error_for_every_document() {
        for first17 in [
            "11010519491231002",
            HONG_KONG,
            MACAO,
            TAIWAN,
            FOREIGNER,
            FOREIGNER_BEIJING,
        ] {
            let right = check_digit(first17).unwrap();
            for wrong in CHECK_CHARS.iter().filter(|c| **c != right) {
                assert_eq!(
                    IdNumber::parse(&format!("{first17}{wrong}")),
                    Err(IdNumberError::Checksum),
                    "{first17}{wrong}"
                );
            }
        }
    }

    #[test]
    fn a_wrong_birth_date_is_refused_for_every_document() {
        let today = day(2026, 3, 15);
        for prefix in ["110105", "810000", "820000", "830000", "932682", "911840"] {
            for date in ["19490230", "18991231", "20261301", "20260316", "00000000"] {
                let number = with_check(&format!("{prefix}{date}002"));
                assert_eq!(
                    IdNumber::parse_on(&number, today),
                    Err(IdNumberError::BirthDate),
                    "{prefix} {date}"
                );
            }
            let today_born = with_check(&format!("{prefix}20260315002"));
            assert!(IdNumber::parse_on(&today_born, today).is_ok(), "{prefix}");
        }
    }

    #[test]
    fn a_wrong_prefix_names_the_document_it_looks_like() {
        let cases = [
            // Residence permits: exactly 810000, 820000, 830000.
            ("81000119940823002", IdNumberError::PermitRegion),
            ("81010019940823002", IdNumberError::PermitRegion),
            ("82110019940823002", IdNumberError::PermitRegion),
            ("83000919920130002", IdNumberError::PermitRegion),
            // Foreign permanent resident: 9, a mainland province, a foreign nationality.
            ("90084019800229002", IdNumberError::IssuingProvince),
            ("97184019800229002", IdNumberError::IssuingProvince),
            ("98184019800229002", IdNumberError::IssuingProvince),
            ("99184019800229002", IdNumberError::IssuingProvince),
            ("91684019800229002", IdNumberError::IssuingProvince),
            ("91100019800229002", IdNumberError::Nationality),
            ("91199919800229002", IdNumberError::Nationality),
            ("91115619800229002", IdNumberError::Nationality),
            // Neither a province nor a document prefix.
            ("84000019940823002", IdNumberError::Region),
            ("00000019940823002", IdNumberError::Region),
        ];
        for (first17, error) in cases {
            let number = with_check(first17);
            assert_eq!(IdNumber::parse(&number), Err(error.clone()), "{first17}");
            assert!(!error.to_string().contains(&number));
        }
        assert_eq!(
            IdNumberError::PermitRegion.code(),
            "id_number_permit_region"
        );
        assert_eq!(
            IdNumberError::IssuingProvince.code(),
            "id_number_issuing_province"
        );
        assert_eq!(IdNumberError::Nationality.code(), "id_number_nationality");
    }

    #[test]
    fn only_resident_cards_had_fifteen_digits() {
        for old in ["810000940823002", "830000920130002", "911840800229002"] {
            assert_eq!(IdNumber::parse(old), Err(IdNumberError::Region), "{old}");
        }
        let upgraded = IdNumber::parse("710105491231002").unwrap();
        assert_eq!(upgraded.document(), IdNumberDocument::ResidentId);
    }

    #[test]
    fn document_names_are_stable() {
        let names: Vec<&str> = IdNumberDocument::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(
            names,
            [
                "resident_id",
                "foreign_permanent_resident",
                "hong_kong_macao_residence_permit",
                "taiwan_residence_permit"
            ]
        );
        for document in IdNumberDocument::ALL {
            assert_eq!(
                serde_json::to_string(&document).unwrap(),
                format!("\"{}\"", document.as_str())
            );
            assert!(!document.chinese_name().is_empty());
        }
    }

    #[test]
    fn debug_masks_the_birth_date() {
        let id = IdNumber::parse(VALID).unwrap();
        let shown = format!("{id:?}");
        assert_eq!(shown, "IdNumber(110105********002X)");
        assert!(!shown.contains("19491231"));
    }

    #[test]
    fn debug_masks_the_birth_date_and_nationality_of_every_document() {
        let permit = IdNumber::parse("810000199408230021").unwrap();
        assert_eq!(format!("{permit:?}"), "IdNumber(810000********0021)");
        let foreigner = IdNumber::parse("932682198501010017").unwrap();
        let shown = format!("{foreigner:?}");
        assert_eq!(shown, "IdNumber(932***********0017)");
        assert!(!shown.contains("682"), "{shown}");
        assert!(!shown.contains("19850101"), "{shown}");
    }

    #[test]
    fn serde_round_trips_as_a_string() {
        let id = IdNumber::parse(VALID).unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{VALID}\""));
        let back: IdNumber = serde_json::from_str("\"11010519491231002x\"").unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn serde_errors_carry_the_code_but_not_the_value() {
        let err = serde_json::from_str::<IdNumber>("\"110105194912310021\"").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("id_number_checksum"), "{message}");
        assert!(!message.contains("110105194912310021"), "{message}");

        let err = serde_json::from_str::<IdNumber>("110105194912310021").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("invalid type"), "{message}");
        assert!(!message.contains("110105194912310021"), "{message}");
    }

    #[test]
    fn error_messages_never_contain_the_input() {
        for input in [
            "1101051949123100AX",
            "00010519491231002X",
            "110105194912310021",
        ] {
            let err = IdNumber::parse(input).unwrap_err();
            assert!(!err.to_string().contains(input));
        }
    }

    fn valid_first17() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![11u8, 32, 44, 65, 71]),
            0u32..10_000,
            1900i32..2020,
            1u32..=12,
            1u32..=28,
            0u32..1000,
        )
            .prop_map(|(province, area, year, month, day, sequence)| {
                format!("{province}{area:04}{year}{month:02}{day:02}{sequence:03}")
            })
    }

    /// The first 17 digits of a valid number of any document, with that document.
    fn any_document_first17() -> impl Strategy<Value = (String, IdNumberDocument)> {
        let birth = (1900i32..2020, 1u32..=12, 1u32..=28, 0u32..1000)
            .prop_map(|(y, m, d, seq)| format!("{y}{m:02}{d:02}{seq:03}"));
        (
            prop::sample::select(vec![
                ("110105", IdNumberDocument::ResidentId),
                ("440308", IdNumberDocument::ResidentId),
                ("810000", IdNumberDocument::HongKongMacaoResidencePermit),
                ("820000", IdNumberDocument::HongKongMacaoResidencePermit),
                ("830000", IdNumberDocument::TaiwanResidencePermit),
                ("911840", IdNumberDocument::ForeignPermanentResident),
                ("932682", IdNumberDocument::ForeignPermanentResident),
                ("944392", IdNumberDocument::ForeignPermanentResident),
                ("965410", IdNumberDocument::ForeignPermanentResident),
            ]),
            birth,
        )
            .prop_map(|((prefix, document), rest)| (format!("{prefix}{rest}"), document))
    }

    proptest! {
        #[test]
        fn every_document_parses_classifies_and_masks((first17, document) in any_document_first17()) {
            let number = with_check(&first17);
            let id = IdNumber::parse(&number).unwrap();
            prop_assert_eq!(id.document(), document);
            prop_assert_eq!(id.as_str(), number.as_str());
            prop_assert_eq!(IdNumber::parse(id.as_str()), Ok(id.clone()));
            let shown = format!("{:?}", id);
            prop_assert!(!shown.contains(&number));
            prop_assert!(!shown.contains(&number[6..14]));
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<IdNumber>(&json).unwrap(), id);
        }

        #[test]
        fn one_changed_digit_fails_for_every_document(
            (first17, _document) in any_document_first17(),
            position in 0usize..17,
            delta in 1u8..10,
        ) {
            let number = with_check(&first17);
            let mut bytes = number.clone().into_bytes();
            let original = bytes[position] - b'0';
            bytes[position] = b'0' + (original + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            let err = IdNumber::parse(&changed).unwrap_err();
            prop_assert!(!err.to_string().contains(&changed));
        }

        #[test]
        fn arbitrary_strings_never_panic_and_round_trip(input in any::<String>()) {
            if let Ok(id) = IdNumber::parse(&input) {
                prop_assert_eq!(IdNumber::parse(id.as_str()), Ok(id.clone()));
            }
        }

        #[test]
        fn digit_like_strings_never_panic_and_round_trip(input in "[0-9０-９xXｘ \u{3000}]{0,20}") {
            if let Ok(id) = IdNumber::parse(&input) {
                prop_assert_eq!(IdNumber::parse(id.as_str()), Ok(id.clone()));
                prop_assert_eq!(id.as_str().len(), 18);
            }
        }

        #[test]
        fn generated_numbers_parse_and_mask(first17 in valid_first17()) {
            let number = with_check(&first17);
            let id = IdNumber::parse(&number).unwrap();
            prop_assert_eq!(id.as_str(), number.as_str());
            prop_assert_eq!(IdNumber::parse(id.as_str()), Ok(id.clone()));
            let shown = format!("{:?}", id);
            prop_assert!(!shown.contains(&number));
        }

        #[test]
        fn one_changed_digit_fails(first17 in valid_first17(), position in 0usize..17, delta in 1u8..10) {
            let number = with_check(&first17);
            let mut bytes = number.clone().into_bytes();
            let original = bytes[position] - b'0';
            bytes[position] = b'0' + (original + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(IdNumber::parse(&changed).is_err());
        }
    }
}
