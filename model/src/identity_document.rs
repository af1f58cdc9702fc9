//! Identity documents a person may hold besides an ID number — passports, travel permits,
//! military ID and others — none of which carries a GB 11643 check.
//!
//! Guarantees: an [`IdentityDocument`] has a type from the closed set
//! [`IdentityDocumentType`]; a number normalised to uppercase with no spaces (full-width
//! letters and digits folded to ASCII) whose length and characters fit that type: ASCII
//! letters and digits, and Chinese characters too for `military_id` and `other`; and an
//! issuing country that is an ISO 3166-1 alpha-3 code: always present for a passport, always
//! `CHN` for the documents only mainland authorities issue, optional for `other`. `Debug`
//! never shows the number, and no error message (including serde's) contains the input.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::country::{CountryCode, CountryError};
use crate::id_number::PersonalStrVisitor;

/// The kinds of document a resident record may list under `documents`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityDocumentType {
    /// 护照, of any state: the issuing state's `country` is required.
    Passport,
    /// 港澳居民来往内地通行证 (回乡证): `H` (Hong Kong) or `M` (Macao), the 8-digit lifelong
    /// number and optionally the 2-digit issue count.
    HongKongMacaoTravelPermit,
    /// 台湾居民来往大陆通行证 (台胞证): the 8-digit lifelong number and optionally the
    /// 2-digit issue count.
    TaiwanTravelPermit,
    /// 外国人永久居留证 of the 2004 and 2017 formats: the 3-letter nationality and 12 digits.
    /// The 2023 card's 18-digit number is an ID number and goes in `id_number`.
    ForeignPermanentResidentLegacy,
    /// 军人身份证件 (军官证, 士兵证, 文职干部证 …), as printed (`南字第1234567号`).
    MilitaryId,
    /// Anything else (往来港澳通行证, a Hong Kong identity card, …); never matched on.
    Other,
}

impl IdentityDocumentType {
    pub const ALL: [IdentityDocumentType; 6] = [
        IdentityDocumentType::Passport,
        IdentityDocumentType::HongKongMacaoTravelPermit,
        IdentityDocumentType::TaiwanTravelPermit,
        IdentityDocumentType::ForeignPermanentResidentLegacy,
        IdentityDocumentType::MilitaryId,
        IdentityDocumentType::Other,
    ];

    /// Parses a type code (case and surrounding whitespace do not matter).
    pub fn parse(input: &str) -> Result<IdentityDocumentType, IdentityDocumentError> {
        let code = input.trim().to_ascii_lowercase();
        if code.is_empty() {
            return Err(IdentityDocumentError::TypeMissing);
        }
        IdentityDocumentType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == code)
            .ok_or(IdentityDocumentError::TypeUnknown)
    }

    /// Stable snake_case code, part of the API contract.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityDocumentType::Passport => "passport",
            IdentityDocumentType::HongKongMacaoTravelPermit => "hong_kong_macao_travel_permit",
            IdentityDocumentType::TaiwanTravelPermit => "taiwan_travel_permit",
            IdentityDocumentType::ForeignPermanentResidentLegacy => {
                "foreign_permanent_resident_legacy"
            }
            IdentityDocumentType::MilitaryId => "military_id",
            IdentityDocumentType::Other => "other",
        }
    }

    /// The document's Chinese name, for user-facing text.
    pub fn chinese_name(self) -> &'static str {
        match self {
            IdentityDocumentType::Passport => "护照",
            IdentityDocumentType::HongKongMacaoTravelPermit => "港澳居民来往内地通行证",
            IdentityDocumentType::TaiwanTravelPermit => "台湾居民来往大陆通行证",
            IdentityDocumentType::ForeignPermanentResidentLegacy => "外国人永久居留证（旧版）",
            IdentityDocumentType::MilitaryId => "军人身份证件",
            IdentityDocumentType::Other => "其他证件",
        }
    }

    /// The issuing state when the type decides it: China for the documents only mainland
    /// authorities issue.
    pub fn implied_country(self) -> Option<CountryCode> {
        match self {
            IdentityDocumentType::HongKongMacaoTravelPermit
            | IdentityDocumentType::TaiwanTravelPermit
            | IdentityDocumentType::ForeignPermanentResidentLegacy
            | IdentityDocumentType::MilitaryId => Some(CountryCode::CHINA),
            IdentityDocumentType::Passport | IdentityDocumentType::Other => None,
        }
    }

    /// What a number of this type looks like, for error messages.
    fn number_rule(self) -> &'static str {
        match self {
            IdentityDocumentType::Passport => {
                "5 to 20 letters and digits, at least one a digit; a Chinese passport has 9: \
                 one or two letters, then digits"
            }
            IdentityDocumentType::HongKongMacaoTravelPermit => {
                "H (Hong Kong) or M (Macao) and 8 digits, optionally followed by the 2-digit \
                 issue count"
            }
            IdentityDocumentType::TaiwanTravelPermit => {
                "8 digits, optionally followed by the 2-digit issue count"
            }
            IdentityDocumentType::ForeignPermanentResidentLegacy => {
                "the 3-letter nationality code (ISO 3166-1 alpha-3) and 12 digits; the \
                 18-digit number of the 2023 card goes in id_number"
            }
            IdentityDocumentType::MilitaryId => {
                "4 to 20 letters, digits or Chinese characters, at least one a digit, as \
                 printed on the card"
            }
            IdentityDocumentType::Other => "1 to 32 letters, digits or Chinese characters",
        }
    }
}

/// One identity document: its type, normalised number and issuing country.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityDocument {
    document_type: IdentityDocumentType,
    number: String,
    country: Option<CountryCode>,
}

/// Why a document is not valid. Messages never quote the input; [`Self::field`] names the
/// part of the document at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityDocumentError {
    #[error(
        "document type is missing: use one of passport, hong_kong_macao_travel_permit, \
         taiwan_travel_permit, foreign_permanent_resident_legacy, military_id, other"
    )]
    TypeMissing,
    #[error(
        "document type is unknown: use one of passport, hong_kong_macao_travel_permit, \
         taiwan_travel_permit, foreign_permanent_resident_legacy, military_id, other; numbers \
         with a GB 11643 check (resident identity cards, residence permits, the 2023 foreign \
         permanent resident ID card) go in id_number"
    )]
    TypeUnknown,
    #[error("document number is missing: supply the number as printed on the document")]
    NumberMissing,
    #[error(
        "document number has the wrong length for a {}: it must be {}",
        .0.as_str(),
        .0.number_rule()
    )]
    NumberLength(IdentityDocumentType),
    #[error(
        "document number does not fit a {}: it must be {}; remove punctuation such as - ( ) /",
        .0.as_str(),
        .0.number_rule()
    )]
    NumberFormat(IdentityDocumentType),
    #[error(
        "document number does not start with a foreign nationality: its first three letters \
         must be an ISO 3166-1 alpha-3 code other than CHN (USA, JPN, KOR …)"
    )]
    NumberNationality,
    #[error("document country is missing: a passport needs the issuing state (ISO 3166-1 alpha-3, e.g. CHN, USA)")]
    CountryMissing,
    #[error(
        "document country is not an ISO 3166-1 alpha-3 code: use three letters such as CHN, \
         HKG, USA, JPN (not a name, and not the two-letter code)"
    )]
    CountryUnknown,
    #[error(
        "document country does not fit a {}: mainland authorities issue it, so the country \
         is CHN or left out",
        .0.as_str()
    )]
    CountryMismatch(IdentityDocumentType),
}

impl IdentityDocumentError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityDocumentError::TypeMissing => "document_type_missing",
            IdentityDocumentError::TypeUnknown => "document_type_unknown",
            IdentityDocumentError::NumberMissing => "document_number_missing",
            IdentityDocumentError::NumberLength(_) => "document_number_length",
            IdentityDocumentError::NumberFormat(_) => "document_number_format",
            IdentityDocumentError::NumberNationality => "document_number_nationality",
            IdentityDocumentError::CountryMissing => "document_country_missing",
            IdentityDocumentError::CountryUnknown => "document_country_unknown",
            IdentityDocumentError::CountryMismatch(_) => "document_country_mismatch",
        }
    }

    /// The key of the document object the error is about: `type`, `number` or `country`.
    pub fn field(&self) -> &'static str {
        match self {
            IdentityDocumentError::TypeMissing | IdentityDocumentError::TypeUnknown => "type",
            IdentityDocumentError::NumberMissing
            | IdentityDocumentError::NumberLength(_)
            | IdentityDocumentError::NumberFormat(_)
            | IdentityDocumentError::NumberNationality => "number",
            IdentityDocumentError::CountryMissing
            | IdentityDocumentError::CountryUnknown
            | IdentityDocumentError::CountryMismatch(_) => "country",
        }
    }
}

impl IdentityDocument {
    /// Parses a document from its type code, number and optional issuing country (an empty
    /// or whitespace-only country counts as absent).
    pub fn parse(
        document_type: &str,
        number: &str,
        country: Option<&str>,
    ) -> Result<IdentityDocument, IdentityDocumentError> {
        IdentityDocument::new(IdentityDocumentType::parse(document_type)?, number, country)
    }

    /// [`IdentityDocument::parse`] with the type already known.
    pub fn new(
        document_type: IdentityDocumentType,
        number: &str,
        country: Option<&str>,
    ) -> Result<IdentityDocument, IdentityDocumentError> {
        let number = normalise_number(number, document_type)?;
        let country = match country.map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(text) => Some(CountryCode::parse(text).map_err(|err| match err {
                CountryError::Empty => IdentityDocumentError::CountryMissing,
                CountryError::Unknown => IdentityDocumentError::CountryUnknown,
            })?),
        };
        let country = match (document_type.implied_country(), country) {
            (Some(implied), Some(given)) if given != implied => {
                return Err(IdentityDocumentError::CountryMismatch(document_type))
            }
            (Some(implied), _) => Some(implied),
            (None, None) if document_type == IdentityDocumentType::Passport => {
                return Err(IdentityDocumentError::CountryMissing)
            }
            (None, given) => given,
        };
        check_number(document_type, &number, country)?;
        Ok(IdentityDocument {
            document_type,
            number,
            country,
        })
    }

    pub fn document_type(&self) -> IdentityDocumentType {
        self.document_type
    }

    /// The normalised number: uppercase, no spaces.
    pub fn number(&self) -> &str {
        &self.number
    }

    /// The issuing state; always present except for an `other` document sent without one.
    pub fn country(&self) -> Option<CountryCode> {
        self.country
    }

    /// The text two records must share to hold the same document: type, issuing country and
    /// the part of the number that stays with the holder (a travel permit's lifelong number,
    /// without the issue count). `None` for `other`, whose type says too little to match on.
    pub fn match_key(&self) -> Option<String> {
        let stable = match self.document_type {
            IdentityDocumentType::Other => return None,
            IdentityDocumentType::HongKongMacaoTravelPermit => self.number.get(..9),
            IdentityDocumentType::TaiwanTravelPermit => self.number.get(..8),
            _ => Some(self.number.as_str()),
        }?;
        let country = self.country.map(|c| c.as_str()).unwrap_or_default();
        Some(format!(
            "{}:{country}:{stable}",
            self.document_type.as_str()
        ))
    }
}

/// Removes whitespace, folds full-width forms and uppercases; refuses any character that
/// no document number has.
fn normalise_number(
    input: &str,
    document_type: IdentityDocumentType,
) -> Result<String, IdentityDocumentError> {
    let mut number = String::with_capacity(input.len());
    for c in input.chars() {
        if c.is_whitespace() {
            continue;
        }
        let c = match c {
            '！'..='～' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
            _ => c,
        };
        if c.is_ascii_alphanumeric() || is_chinese_character(c) {
            number.push(c.to_ascii_uppercase());
        } else {
            return Err(IdentityDocumentError::NumberFormat(document_type));
        }
    }
    if number.is_empty() {
        return Err(IdentityDocumentError::NumberMissing);
    }
    Ok(number)
}

/// A CJK unified ideograph (basic block or extension A).
fn is_chinese_character(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

/// Checks a normalised number against its type's rule.
fn check_number(
    document_type: IdentityDocumentType,
    number: &str,
    country: Option<CountryCode>,
) -> Result<(), IdentityDocumentError> {
    use IdentityDocumentType as T;
    let length = number.chars().count();
    let length_error = IdentityDocumentError::NumberLength(document_type);
    let format_error = IdentityDocumentError::NumberFormat(document_type);
    let ascii = number.is_ascii();
    let has_digit = number.bytes().any(|b| b.is_ascii_digit());
    let all_digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    match document_type {
        T::Passport => {
            if !ascii {
                return Err(format_error);
            }
            if country == Some(CountryCode::CHINA) {
                // Chinese passports: one or two letters, then digits, 9 characters in all.
                if length != 9 {
                    return Err(length_error);
                }
                if !number.get(2..).is_some_and(all_digits) {
                    return Err(format_error);
                }
            } else if !(5..=20).contains(&length) {
                return Err(length_error);
            }
            if !has_digit {
                return Err(format_error);
            }
        }
        T::HongKongMacaoTravelPermit => {
            if length != 9 && length != 11 {
                return Err(length_error);
            }
            let Some((letter, digits)) = number.split_at_checked(1) else {
                return Err(format_error);
            };
            if !matches!(letter, "H" | "M") || !all_digits(digits) {
                return Err(format_error);
            }
        }
        T::TaiwanTravelPermit => {
            if !all_digits(number) {
                return Err(format_error);
            }
            if length != 8 && length != 10 {
                return Err(length_error);
            }
        }
        T::ForeignPermanentResidentLegacy => {
            if length != 15 {
                return Err(length_error);
            }
            let Some((nationality, digits)) = number.split_at_checked(3) else {
                return Err(format_error);
            };
            if !nationality.bytes().all(|b| b.is_ascii_uppercase()) || !all_digits(digits) {
                return Err(format_error);
            }
            match CountryCode::parse(nationality) {
                Ok(code) if code != CountryCode::CHINA => {}
                _ => return Err(IdentityDocumentError::NumberNationality),
            }
        }
        T::MilitaryId => {
            if !(4..=20).contains(&length) {
                return Err(length_error);
            }
            if !has_digit {
                return Err(format_error);
            }
        }
        T::Other => {
            if !(1..=32).contains(&length) {
                return Err(length_error);
            }
        }
    }
    Ok(())
}

impl fmt::Debug for IdentityDocument {
    /// Prints the type, the country and the number's length, never the number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityDocument")
            .field("type", &self.document_type)
            .field("country", &self.country)
            .field(
                "number",
                &format_args!("<{} characters>", self.number.chars().count()),
            )
            .finish()
    }
}

impl Serialize for IdentityDocument {
    /// `{"type": "passport", "number": "E12345678", "country": "CHN"}`; `country` is left
    /// out when there is none.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2 + usize::from(self.country.is_some())))?;
        map.serialize_entry("type", &self.document_type)?;
        map.serialize_entry("number", &self.number)?;
        if let Some(country) = &self.country {
            map.serialize_entry("country", country)?;
        }
        map.end()
    }
}

/// A string read without serde echoing it in a type error.
struct OpaqueText(String);

impl<'de> Deserialize<'de> for OpaqueText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PersonalStrVisitor::new("a string", |s: &str| Ok(OpaqueText(s.to_owned())))
            .deserialize(deserializer)
    }
}

/// The document object as sent, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentFields {
    #[serde(rename = "type")]
    document_type: OpaqueText,
    number: OpaqueText,
    #[serde(default)]
    country: Option<OpaqueText>,
}

impl<'de> Deserialize<'de> for IdentityDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = DocumentFields::deserialize(deserializer)?;
        IdentityDocument::parse(
            &fields.document_type.0,
            &fields.number.0,
            fields.country.as_ref().map(|c| c.0.as_str()),
        )
        .map_err(|e| de::Error::custom(format!("{}: {e}", e.code())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(kind: &str, number: &str, country: Option<&str>) -> IdentityDocument {
        IdentityDocument::parse(kind, number, country).unwrap()
    }

    fn code(kind: &str, number: &str, country: Option<&str>) -> &'static str {
        IdentityDocument::parse(kind, number, country)
            .unwrap_err()
            .code()
    }

    #[test]
    fn valid_documents_of_every_type() {
        let cases = [
            (
                "passport",
                "E12345678",
                Some("CHN"),
                "E12345678",
                Some("CHN"),
            ),
            (
                "passport",
                "EA1234567",
                Some("chn"),
                "EA1234567",
                Some("CHN"),
            ),
            (
                "passport",
                "K12345678",
                Some("CHN"),
                "K12345678",
                Some("CHN"),
            ),
            (
                "passport",
                "123456789",
                Some("USA"),
                "123456789",
                Some("USA"),
            ),
            (
                "passport",
                "c01x00t47",
                Some("DEU"),
                "C01X00T47",
                Some("DEU"),
            ),
            (
                "passport",
                "TR 1234567",
                Some("JPN"),
                "TR1234567",
                Some("JPN"),
            ),
            (
                "passport",
                "312345678",
                Some("TWN"),
                "312345678",
                Some("TWN"),
            ),
            (
                "hong_kong_macao_travel_permit",
                "H12345678",
                None,
                "H12345678",
                Some("CHN"),
            ),
            (
                "hong_kong_macao_travel_permit",
                "m1234567801",
                Some("CHN"),
                "M1234567801",
                Some("CHN"),
            ),
            (
                "taiwan_travel_permit",
                "12345678",
                None,
                "12345678",
                Some("CHN"),
            ),
            (
                "taiwan_travel_permit",
                "1234567801",
                None,
                "1234567801",
                Some("CHN"),
            ),
            (
                "foreign_permanent_resident_legacy",
                "usa110012345678",
                None,
                "USA110012345678",
                Some("CHN"),
            ),
            (
                "military_id",
                "南字第1234567号",
                None,
                "南字第1234567号",
                Some("CHN"),
            ),
            (
                "military_id",
                "JZ 2019 0001",
                Some("CHN"),
                "JZ20190001",
                Some("CHN"),
            ),
            ("other", "C668668E", Some("HKG"), "C668668E", Some("HKG")),
            ("other", "ABC", None, "ABC", None),
        ];
        for (kind, number, country, normalised, stored_country) in cases {
            let document = doc(kind, number, country);
            assert_eq!(document.document_type().as_str(), kind);
            assert_eq!(document.number(), normalised, "{kind} {number}");
            assert_eq!(document.country().map(|c| c.as_str()), stored_country);
        }
    }

    #[test]
    fn numbers_normalise_to_uppercase_without_spaces() {
        let wide = doc("passport", "\u{3000}ｅ１２３４ ５６７８\t", Some("ＣＨＮ"));
        assert_eq!(wide.number(), "E12345678");
        assert_eq!(wide, doc(" PASSPORT ", "e12345678", Some("CHN")));
    }

    #[test]
    fn each_error_has_its_code_and_field() {
        let long = "A".repeat(33);
        let cases = [
            (
                "",
                "E12345678",
                Some("CHN"),
                "document_type_missing",
                "type",
            ),
            (
                "id_card",
                "E12345678",
                Some("CHN"),
                "document_type_unknown",
                "type",
            ),
            (
                "resident_id",
                "E12345678",
                Some("CHN"),
                "document_type_unknown",
                "type",
            ),
            (
                "passport",
                "  ",
                Some("CHN"),
                "document_number_missing",
                "number",
            ),
            (
                "passport",
                "E1234-5678",
                Some("CHN"),
                "document_number_format",
                "number",
            ),
            (
                "passport",
                "E12345678",
                None,
                "document_country_missing",
                "country",
            ),
            (
                "passport",
                "E12345678",
                Some("CN"),
                "document_country_unknown",
                "country",
            ),
            (
                "passport",
                "E12345678",
                Some("中国"),
                "document_country_unknown",
                "country",
            ),
            (
                "passport",
                "E1234567",
                Some("CHN"),
                "document_number_length",
                "number",
            ),
            (
                "passport",
                "EAB123456",
                Some("CHN"),
                "document_number_format",
                "number",
            ),
            (
                "passport",
                "ABCDEFG",
                Some("USA"),
                "document_number_format",
                "number",
            ),
            (
                "passport",
                "1234",
                Some("USA"),
                "document_number_length",
                "number",
            ),
            (
                "passport",
                "护照12345",
                Some("USA"),
                "document_number_format",
                "number",
            ),
            (
                "hong_kong_macao_travel_permit",
                "H1234567",
                None,
                "document_number_length",
                "number",
            ),
            (
                "hong_kong_macao_travel_permit",
                "H123456789",
                None,
                "document_number_length",
                "number",
            ),
            (
                "hong_kong_macao_travel_permit",
                "K12345678",
                None,
                "document_number_format",
                "number",
            ),
            (
                "hong_kong_macao_travel_permit",
                "H12345678",
                Some("HKG"),
                "document_country_mismatch",
                "country",
            ),
            (
                "taiwan_travel_permit",
                "1234567",
                None,
                "document_number_length",
                "number",
            ),
            (
                "taiwan_travel_permit",
                "A1234567",
                None,
                "document_number_format",
                "number",
            ),
            (
                "taiwan_travel_permit",
                "12345678",
                Some("TWN"),
                "document_country_mismatch",
                "country",
            ),
            (
                "foreign_permanent_resident_legacy",
                "USA11001234567",
                None,
                "document_number_length",
                "number",
            ),
            (
                "foreign_permanent_resident_legacy",
                "US1110012345678",
                None,
                "document_number_format",
                "number",
            ),
            (
                "foreign_permanent_resident_legacy",
                "QQQ110012345678",
                None,
                "document_number_nationality",
                "number",
            ),
            (
                "foreign_permanent_resident_legacy",
                "CHN110012345678",
                None,
                "document_number_nationality",
                "number",
            ),
            (
                "military_id",
                "123",
                None,
                "document_number_length",
                "number",
            ),
            (
                "military_id",
                "南字第号",
                None,
                "document_number_format",
                "number",
            ),
            (
                "military_id",
                "南字第1234567号",
                Some("USA"),
                "document_country_mismatch",
                "country",
            ),
            (
                "other",
                long.as_str(),
                None,
                "document_number_length",
                "number",
            ),
            ("other", "A/B", None, "document_number_format", "number"),
            (
                "other",
                "ABC",
                Some("XXX"),
                "document_country_unknown",
                "country",
            ),
        ];
        for (kind, number, country, expected, field) in cases {
            let err = IdentityDocument::parse(kind, number, country).unwrap_err();
            assert_eq!(err.code(), expected, "{kind} {number} {country:?}");
            assert_eq!(err.field(), field, "{kind} {number}");
        }
    }

    #[test]
    fn an_empty_country_is_absent() {
        assert_eq!(
            code("passport", "E12345678", Some(" ")),
            "document_country_missing"
        );
        assert_eq!(doc("other", "ABC", Some("")).country(), None);
    }

    #[test]
    fn error_messages_never_contain_the_input() {
        let inputs = [
            ("passport", "E1234-5678", Some("CHN")),
            ("passport", "E1234567", Some("CHN")),
            ("hong_kong_macao_travel_permit", "K12345678", None),
            ("foreign_permanent_resident_legacy", "QQQ110012345678", None),
            ("passport", "E12345678", Some("ZZZ")),
        ];
        for (kind, number, country) in inputs {
            let err = IdentityDocument::parse(kind, number, country).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(number), "{shown}");
            assert!(!shown.contains("ZZZ"), "{shown}");
        }
    }

    #[test]
    fn match_keys_keep_what_stays_with_the_holder() {
        assert_eq!(
            doc("passport", "E12345678", Some("CHN"))
                .match_key()
                .unwrap(),
            "passport:CHN:E12345678"
        );
        assert_eq!(
            doc("hong_kong_macao_travel_permit", "H1234567801", None).match_key(),
            doc("hong_kong_macao_travel_permit", "H1234567802", None).match_key()
        );
        assert_eq!(
            doc("hong_kong_macao_travel_permit", "H1234567801", None)
                .match_key()
                .unwrap(),
            "hong_kong_macao_travel_permit:CHN:H12345678"
        );
        assert_eq!(
            doc("taiwan_travel_permit", "1234567801", None).match_key(),
            doc("taiwan_travel_permit", "12345678", None).match_key()
        );
        assert_ne!(
            doc("passport", "123456789", Some("USA")).match_key(),
            doc("passport", "123456789", Some("CAN")).match_key()
        );
        assert_eq!(doc("other", "ABC", None).match_key(), None);
    }

    #[test]
    fn debug_never_shows_the_number() {
        let document = doc("passport", "E12345678", Some("CHN"));
        let shown = format!("{document:?}");
        assert_eq!(
            shown,
            "IdentityDocument { type: Passport, country: Some(CountryCode(CHN)), number: <9 characters> }"
        );
        let military = doc("military_id", "南字第1234567号", None);
        assert!(!format!("{military:?}").contains("1234567"));
    }

    #[test]
    fn type_codes_are_stable_and_serde_agrees() {
        let codes: Vec<&str> = IdentityDocumentType::ALL
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(
            codes,
            [
                "passport",
                "hong_kong_macao_travel_permit",
                "taiwan_travel_permit",
                "foreign_permanent_resident_legacy",
                "military_id",
                "other"
            ]
        );
        for kind in IdentityDocumentType::ALL {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
            assert_eq!(IdentityDocumentType::parse(kind.as_str()), Ok(kind));
            assert!(!kind.chinese_name().is_empty());
        }
    }

    #[test]
    fn serde_round_trips_as_an_object() {
        let document = doc("passport", "e12345678", Some("chn"));
        let json = serde_json::to_string(&document).unwrap();
        assert_eq!(
            json,
            r#"{"type":"passport","number":"E12345678","country":"CHN"}"#
        );
        assert_eq!(
            serde_json::from_str::<IdentityDocument>(&json).unwrap(),
            document
        );
        let other = doc("other", "ABC", None);
        let json = serde_json::to_string(&other).unwrap();
        assert_eq!(json, r#"{"type":"other","number":"ABC"}"#);
        assert_eq!(
            serde_json::from_str::<IdentityDocument>(&json).unwrap(),
            other
        );
        let null_country: IdentityDocument =
            serde_json::from_str(r#"{"type":"other","number":"ABC","country":null}"#).unwrap();
        assert_eq!(null_country, other);
    }

    #[test]
    fn serde_errors_carry_the_code_but_not_the_value() {
        let cases = [
            (
                r#"{"type":"passport","number":"E1234-5678","country":"CHN"}"#,
                "E1234-5678",
                "document_number_format",
            ),
            (
                r#"{"type":"passport","number":12345678,"country":"USA"}"#,
                "12345678",
                "invalid type",
            ),
            (
                r#"{"type":"passport","number":"E12345678","country":"QQQ"}"#,
                "QQQ",
                "document_country_unknown",
            ),
            (
                r#"{"type":"passport","number":"E12345678","issuer":"CHN"}"#,
                "E12345678",
                "unknown field",
            ),
        ];
        for (text, secret, expected) in cases {
            let message = serde_json::from_str::<IdentityDocument>(text)
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains(secret), "{message}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_and_normalises_idempotently(
            kind in prop::sample::select(IdentityDocumentType::ALL.to_vec()),
            number in any::<String>(),
            country in prop::option::of("[A-Za-z]{3}"),
        ) {
            if let Ok(document) = IdentityDocument::new(kind, &number, country.as_deref()) {
                let again = IdentityDocument::new(
                    kind,
                    document.number(),
                    document.country().map(|c| c.as_str()),
                );
                prop_assert_eq!(again, Ok(document.clone()));
                let shown = format!("{:?}", document);
                // Only short numbers can coincide with the uppercase text of Debug (`CHN`).
                prop_assert!(
                    !shown.contains(document.number()) || document.number().chars().count() < 4
                );
            }
        }

        #[test]
        fn generated_permits_parse_and_hide_their_number(
            letter in prop::sample::select(vec!["H", "M"]),
            lifelong in 0u32..100_000_000,
            issue in prop::option::of(0u32..100),
        ) {
            let issue = issue.map(|n| format!("{n:02}")).unwrap_or_default();
            let number = format!("{letter}{lifelong:08}{issue}");
            let document = IdentityDocument::parse("hong_kong_macao_travel_permit", &number, None).unwrap();
            prop_assert_eq!(document.number(), number.as_str());
            let shown = format!("{document:?}");
            prop_assert!(!shown.contains(&number));
            let key = document.match_key().unwrap();
            prop_assert!(key.ends_with(&number[..9]));
            let json = serde_json::to_string(&document).unwrap();
            prop_assert_eq!(serde_json::from_str::<IdentityDocument>(&json).unwrap(), document);
        }
    }
}
