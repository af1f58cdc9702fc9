//! Mainland China telephone numbers.
//!
//! Guarantees: a [`Phone`] is either a mobile number `1[3-9]` + 9 digits, written
//! `13812345678`, or a landline with a valid area code (`010`, `020`-`029`, or four digits
//! `03xx`-`09xx`) and a 7- or 8-digit local number, written `010-12345678`. Equal numbers have
//! equal text whatever spacing, punctuation or country prefix the input used. `Debug` shows
//! only the first and last digits, there is no `Display`, and no error message (including
//! serde's) ever contains the input.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id_number::PersonalStrVisitor;

/// Whether a number reaches a mobile phone or a fixed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneKind {
    Mobile,
    Landline,
}

impl PhoneKind {
    /// Lowercase English name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PhoneKind::Mobile => "mobile",
            PhoneKind::Landline => "landline",
        }
    }
}

/// A valid mainland mobile or landline number in normal form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

/// Why a string is not a phone number. Messages never quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is missing: supply a mobile or landline number")]
    Missing,
    #[error(
        "phone number is not in a recognised form: a mobile number is 11 digits starting \
         13-19, a landline is an area code (010, 020-029 or 0xxx) and a 7 or 8-digit local \
         number; only spaces, hyphens, parentheses and a +86 prefix may be added"
    )]
    Format,
    #[error(
        "phone number has the wrong number of digits: a mobile number has 11, a landline's \
         local number 7 or 8 after the area code"
    )]
    Length,
    #[error(
        "landline number has no area code: write the city's area code (such as 010 or 0755) \
         in front of the local number"
    )]
    AreaCodeMissing,
}

impl PhoneError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PhoneError::Missing => "phone_missing",
            PhoneError::Format => "phone_format",
            PhoneError::Length => "phone_length",
            PhoneError::AreaCodeMissing => "phone_area_code_missing",
        }
    }
}

impl Phone {
    /// Parses a mobile or landline number.
    ///
    /// Whitespace, hyphens and parentheses (ASCII or full-width) are ignored, full-width
    /// digits are read as digits, and a `+86` or `0086` country prefix is removed, as is a
    /// bare `86` in front of an 11-digit mobile number. After a country prefix a landline may
    /// omit its leading `0` (`+86 10 12345678`).
    pub fn parse(input: &str) -> Result<Phone, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Missing);
        }
        let mut cleaned = String::with_capacity(trimmed.len());
        for c in trimmed.chars() {
            match c {
                '0'..='9' | '+' => cleaned.push(c),
                '＋' => cleaned.push('+'),
                '０'..='９' => {
                    let digit = char::from_digit(u32::from(c) - u32::from('０'), 10);
                    cleaned.push(digit.ok_or(PhoneError::Format)?);
                }
                _ if c.is_whitespace() || is_ignored_punctuation(c) => {}
                _ => return Err(PhoneError::Format),
            }
        }

        let national = strip_country_prefix(&cleaned);
        if national.is_empty() || !national.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::Format);
        }
        match national.as_bytes() {
            [b'0', ..] => parse_landline(&national),
            // A bare local number; local numbers may start with 1, as in 010-12345678.
            digits if digits.len() == 7 || digits.len() == 8 => Err(PhoneError::AreaCodeMissing),
            [b'1', ..] => parse_mobile(&national),
            _ => Err(PhoneError::Format),
        }
    }

    /// The normal form: `13812345678` or `010-12345678`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Mobile or landline.
    pub fn kind(&self) -> PhoneKind {
        if self.0.contains('-') {
            PhoneKind::Landline
        } else {
            PhoneKind::Mobile
        }
    }

    /// The digits alone (`01012345678`), the stable input for blind indexes.
    pub fn digits(&self) -> String {
        self.0.chars().filter(char::is_ascii_digit).collect()
    }

    /// A landline's area code (`010`), or `None` for a mobile number.
    pub fn area_code(&self) -> Option<&str> {
        self.0.split_once('-').map(|(area, _)| area)
    }

    /// The last `n` digits of the subscriber number (for a landline, of the local number
    /// without the area code); all of them if it has fewer.
    pub fn last_digits(&self, n: usize) -> &str {
        let subscriber = self.subscriber_number();
        let start = subscriber.len().saturating_sub(n);
        subscriber.get(start..).unwrap_or(subscriber)
    }

    /// The mobile number, or the landline's local number.
    fn subscriber_number(&self) -> &str {
        self.0.split_once('-').map_or(&self.0, |(_, local)| local)
    }
}

/// Punctuation people put inside phone numbers.
fn is_ignored_punctuation(c: char) -> bool {
    matches!(
        c,
        '-' | '(' | ')' | '（' | '）' | '－' | '\u{2010}'..='\u{2015}' | '\u{2212}'
    )
}

/// Removes a country prefix, restoring a landline's trunk `0` that international format drops.
fn strip_country_prefix(cleaned: &str) -> String {
    let international = cleaned
        .strip_prefix("+86")
        .or_else(|| cleaned.strip_prefix("0086"));
    if let Some(rest) = international {
        return if looks_mobile(rest) || rest.starts_with('0') {
            rest.to_owned()
        } else {
            format!("0{rest}")
        };
    }
    match cleaned.strip_prefix("86") {
        Some(rest) if rest.len() == 11 && looks_mobile(rest) => rest.to_owned(),
        _ => cleaned.to_owned(),
    }
}

/// Starts like a mobile number (`1` then `3`-`9`), whatever its length.
fn looks_mobile(digits: &str) -> bool {
    matches!(digits.as_bytes(), [b'1', b'3'..=b'9', ..])
}

fn parse_mobile(digits: &str) -> Result<Phone, PhoneError> {
    if digits.len() != 11 {
        return Err(PhoneError::Length);
    }
    if !looks_mobile(digits) {
        return Err(PhoneError::Format);
    }
    Ok(Phone(digits.to_owned()))
}

fn parse_landline(digits: &str) -> Result<Phone, PhoneError> {
    let area_len = match digits.as_bytes() {
        [b'0', b'1', b'0', ..] | [b'0', b'2', ..] => 3,
        [b'0', b'3'..=b'9', ..] => 4,
        _ => return Err(PhoneError::Format),
    };
    let area = digits.get(..area_len).ok_or(PhoneError::Length)?;
    let local = digits.get(area_len..).ok_or(PhoneError::Length)?;
    if local.len() != 7 && local.len() != 8 {
        return Err(PhoneError::Length);
    }
    // A local number never starts with the trunk prefix.
    if local.starts_with('0') {
        return Err(PhoneError::Format);
    }
    Ok(Phone(format!("{area}-{local}")))
}

impl fmt::Debug for Phone {
    /// Prints `Phone(138****5678)` or `Phone(010-****5678)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = self.last_digits(4);
        match self.area_code() {
            Some(area) => write!(f, "Phone({area}-****{tail})"),
            None => {
                let head = self.0.get(..3).unwrap_or_default();
                write!(f, "Phone({head}****{tail})")
            }
        }
    }
}

impl FromStr for Phone {
    type Err = PhoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phone::parse(s)
    }
}

impl Serialize for Phone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Phone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PersonalStrVisitor::new("a phone number string", |s: &str| {
            Phone::parse(s).map_err(|e| format!("{}: {e}", e.code()))
        })
        .deserialize(deserializer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn phone(s: &str) -> Phone {
        Phone::parse(s).unwrap()
    }

    #[test]
    fn normalises_mobile_numbers() {
        for input in [
            "13812345678",
            " 138 1234 5678 ",
            "138-1234-5678",
            "+86 138 1234 5678",
            "+86-13812345678",
            "＋８６１３８１２３４５６７８",
            "008613812345678",
            "8613812345678",
            "(+86)13812345678",
            "１３８\u{3000}１２３４\u{3000}５６７８",
        ] {
            let parsed = Phone::parse(input).unwrap();
            assert_eq!(parsed.as_str(), "13812345678", "{input:?}");
            assert_eq!(parsed.kind(), PhoneKind::Mobile);
        }
    }

    #[test]
    fn normalises_landlines() {
        let cases = [
            ("010-12345678", "010-12345678"),
            ("(010)12345678", "010-12345678"),
            ("（010）1234 5678", "010-12345678"),
            ("01012345678", "010-12345678"),
            ("+86 10 12345678", "010-12345678"),
            ("0086-10-12345678", "010-12345678"),
            ("+86 (0)10 12345678", "010-12345678"),
            ("020-87654321", "020-87654321"),
            ("029 8765432", "029-8765432"),
            ("0755-1234567", "0755-1234567"),
            ("07551234567", "0755-1234567"),
            ("075512345678", "0755-12345678"),
            ("0991-2345678", "0991-2345678"),
        ];
        for (input, expected) in cases {
            let parsed = Phone::parse(input).unwrap();
            assert_eq!(parsed.as_str(), expected, "{input:?}");
            assert_eq!(parsed.kind(), PhoneKind::Landline);
        }
    }

    #[test]
    fn errors_have_codes() {
        let cases = [
            ("", "phone_missing"),
            ("\u{3000}", "phone_missing"),
            ("1381234567", "phone_length"),
            ("138123456789", "phone_length"),
            ("12812345678", "phone_format"),
            ("10012345678", "phone_format"),
            ("138-1234-567a", "phone_format"),
            ("138.1234.5678", "phone_format"),
            ("+1 415 555 0100", "phone_format"),
            ("--", "phone_format"),
            ("12345678", "phone_area_code_missing"),
            ("1234567", "phone_area_code_missing"),
            ("13812345", "phone_area_code_missing"),
            ("8765-4321", "phone_area_code_missing"),
            ("123456", "phone_length"),
            ("4001234567", "phone_format"),
            ("011-12345678", "phone_format"),
            ("0012345678", "phone_format"),
            ("010-123456", "phone_length"),
            ("010-123456789", "phone_length"),
            ("0755-123456", "phone_length"),
            ("010-02345678", "phone_format"),
            ("+86 1381234567", "phone_length"),
            ("86138123456", "phone_format"),
        ];
        for (input, code) in cases {
            let err = Phone::parse(input).unwrap_err();
            assert_eq!(err.code(), code, "{input:?}");
            assert!(input.trim().is_empty() || !err.to_string().contains(input.trim()));
        }
    }

    #[test]
    fn accessors() {
        let mobile = phone("13812345678");
        assert_eq!(mobile.digits(), "13812345678");
        assert_eq!(mobile.area_code(), None);
        assert_eq!(mobile.last_digits(4), "5678");
        assert_eq!(mobile.last_digits(0), "");
        assert_eq!(mobile.last_digits(99), "13812345678");

        let landline = phone("0755-1234567");
        assert_eq!(landline.digits(), "07551234567");
        assert_eq!(landline.area_code(), Some("0755"));
        assert_eq!(landline.last_digits(4), "4567");
        assert_eq!(landline.last_digits(20), "1234567");
        assert_eq!(PhoneKind::Landline.as_str(), "landline");
    }

    #[test]
    fn debug_is_masked() {
        assert_eq!(format!("{:?}", phone("13812345678")), "Phone(138****5678)");
        assert_eq!(
            format!("{:?}", phone("010-12345678")),
            "Phone(010-****5678)"
        );
        assert_eq!(
            format!("{:?}", phone("0755-1234567")),
            "Phone(0755-****4567)"
        );
    }

    #[test]
    fn serde_round_trips_without_leaking() {
        let mobile = phone("13812345678");
        let json = serde_json::to_string(&mobile).unwrap();
        assert_eq!(json, "\"13812345678\"");
        assert_eq!(serde_json::from_str::<Phone>(&json).unwrap(), mobile);
        assert_eq!(
            serde_json::from_str::<Phone>("\"+86 138-1234-5678\"").unwrap(),
            mobile
        );

        let err = serde_json::from_str::<Phone>("\"1381234567\"").unwrap_err();
        assert!(err.to_string().contains("phone_length"), "{err}");
        assert!(!err.to_string().contains("1381234567"), "{err}");
        let err = serde_json::from_str::<Phone>("13812345678").unwrap_err();
        assert!(!err.to_string().contains("13812345678"), "{err}");
    }

    fn valid_phone() -> impl Strategy<Value = String> {
        prop_oneof![
            "1[3-9][0-9]{9}",
            "(010|02[0-9]|0[3-9][0-9]{2})-[1-9][0-9]{6,7}",
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_and_round_trip(input in any::<String>()) {
            if let Ok(parsed) = Phone::parse(&input) {
                prop_assert_eq!(Phone::parse(parsed.as_str()), Ok(parsed.clone()));
                prop_assert_eq!(Phone::parse(&parsed.digits()), Ok(parsed.clone()));
            }
        }

        #[test]
        fn phone_like_strings_never_panic_and_round_trip(
            input in "[0-9０-９+＋()（） \\-]{0,20}"
        ) {
            if let Ok(parsed) = Phone::parse(&input) {
                prop_assert_eq!(Phone::parse(parsed.as_str()), Ok(parsed.clone()));
                prop_assert_eq!(Phone::parse(&parsed.digits()), Ok(parsed.clone()));
            }
        }

        #[test]
        fn valid_numbers_parse_to_themselves_and_mask(number in valid_phone()) {
            let parsed = Phone::parse(&number).unwrap();
            prop_assert_eq!(parsed.as_str(), number.as_str());
            let shown = format!("{:?}", parsed);
            prop_assert!(!shown.contains(&parsed.digits()));
            prop_assert!(!shown.contains(parsed.subscriber_number()));
            let international = format!("+86 {}", parsed.digits().trim_start_matches('0'));
            prop_assert_eq!(Phone::parse(&international), Ok(parsed));
        }
    }
}
