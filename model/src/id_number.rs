//! Resident identity card numbers (居民身份证号码, GB 11643-1999).
//!
//! Guarantees: an [`IdNumber`] is always the 18-character form: 17 ASCII digits and a check
//! digit (`0`-`9` or uppercase `X`) that matches GB 11643, a known province prefix, and a real
//! birth date between 1900-01-01 and today (China time). First-generation 15-digit numbers are
//! upgraded to 18 on parse. `Debug` shows only the region and the last four characters, there
//! is no `Display`, and no error message (including serde's) ever contains the input.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::date::today_in_china;
use crate::gender::Gender;

/// GB 11643 weights of the first 17 digits.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each value of the weighted sum modulo 11.
const CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// A valid 18-character resident identity card number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdNumber {
    /// Normalised 18-character number; ordering and equality are decided by it alone, since
    /// `birth_date` is a function of it.
    number: String,
    /// Kept at parse time so that reading it back cannot fail.
    birth_date: NaiveDate,
}

/// Why a string is not a resident identity card number. Messages never quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("ID number is missing: supply the 18-character resident identity card number")]
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
        "ID number region code is invalid: the first two digits must name a province (11-15, \
         21-23, 31-37, 41-46, 50-54, 61-65, 71, 81-83, 91); check the first six digits"
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
    /// Parses an 18-character or first-generation 15-digit ID number.
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

        let province = first17.get(..2).and_then(|p| p.parse::<u8>().ok());
        if !province.is_some_and(is_province_prefix) {
            return Err(IdNumberError::Region);
        }
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

    /// Gender encoded by the 17th digit: odd is male, even is female.
    pub fn gender(&self) -> Gender {
        match self.number.as_bytes().get(16) {
            Some(digit) if (digit - b'0') % 2 == 1 => Gender::Male,
            Some(_) => Gender::Female,
            None => Gender::Unknown,
        }
    }

    /// The six-digit administrative region code of the place of first registration.
    pub fn region_code(&self) -> &str {
        self.number.get(..6).unwrap_or_default()
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

fn is_province_prefix(prefix: u8) -> bool {
    matches!(
        prefix,
        11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81..=83 | 91
    )
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
    /// Prints `IdNumber(110105********002X)`: the birth date never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let region = self.region_code();
        let tail = self.number.get(14..).unwrap_or_default();
        write!(f, "IdNumber({region}********{tail})")
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
        for prefix in [
            11, 15, 21, 23, 31, 37, 41, 46, 50, 54, 61, 65, 71, 81, 82, 83, 91,
        ] {
            let id = with_check(&format!("{prefix}010519491231002"));
            assert!(IdNumber::parse(&id).is_ok(), "{prefix}");
        }
        for prefix in [
            10, 16, 20, 24, 30, 38, 40, 47, 49, 55, 60, 66, 70, 72, 80, 84, 90, 92,
        ] {
            let id = with_check(&format!("{prefix}010519491231002"));
            assert_eq!(IdNumber::parse(&id), Err(IdNumberError::Region), "{prefix}");
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
            prop::sample::select(vec![11u8, 32, 44, 65, 71, 81, 91]),
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

    proptest! {
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
