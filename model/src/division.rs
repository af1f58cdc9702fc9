//! Administrative division codes (行政区划代码) down to the grid.
//!
//! SafeGrid extends the six-digit district code by three digits per level: street (9),
//! community (12) and grid (15). Guarantees: a [`DivisionCode`] is 6, 9, 12 or 15 ASCII digits,
//! so its level is known, and a code's ancestors are exactly its shorter prefixes of those
//! lengths: [`DivisionCode::contains`] is a prefix test.
//!
//! Names, for display only: [`DivisionCode::district_name`] gives the province, prefecture
//! and county names of a code's first six digits from the GB/T 2260 table embedded in the
//! crate (`model/data/gb2260.tsv`, see its README for the source, version and licence), and
//! [`DivisionCode::display_name`] adds the deeper levels' digits. Names never decide
//! anything: scope and authorization use the digits alone.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How deep a division code reaches, from the largest area to the smallest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DivisionLevel {
    /// 区/县: 6 digits.
    District,
    /// 街道/乡镇: 9 digits.
    Street,
    /// 社区/村: 12 digits.
    Community,
    /// 网格: 15 digits.
    Grid,
}

impl DivisionLevel {
    /// Number of digits in a code of this level.
    pub fn digits(self) -> usize {
        match self {
            DivisionLevel::District => 6,
            DivisionLevel::Street => 9,
            DivisionLevel::Community => 12,
            DivisionLevel::Grid => 15,
        }
    }

    /// The level of a code with this many digits, if any.
    pub fn from_digits(digits: usize) -> Option<DivisionLevel> {
        match digits {
            6 => Some(DivisionLevel::District),
            9 => Some(DivisionLevel::Street),
            12 => Some(DivisionLevel::Community),
            15 => Some(DivisionLevel::Grid),
            _ => None,
        }
    }

    /// The enclosing level, or `None` for a district.
    pub fn parent(self) -> Option<DivisionLevel> {
        match self {
            DivisionLevel::District => None,
            DivisionLevel::Street => Some(DivisionLevel::District),
            DivisionLevel::Community => Some(DivisionLevel::Street),
            DivisionLevel::Grid => Some(DivisionLevel::Community),
        }
    }

    /// Lowercase English name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DivisionLevel::District => "district",
            DivisionLevel::Street => "street",
            DivisionLevel::Community => "community",
            DivisionLevel::Grid => "grid",
        }
    }
}

impl fmt::Display for DivisionLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A district, street, community or grid code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DivisionCode(String);

/// Why a string is not a division code. Messages never quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DivisionError {
    #[error("division code is missing: supply a 6, 9, 12 or 15-digit code")]
    Missing,
    #[error(
        "division code has the wrong length: it must have 6 (district), 9 (street), \
         12 (community) or 15 (grid) digits"
    )]
    Length,
    #[error("division code contains a non-digit: use digits only, without separators")]
    Format,
}

impl DivisionError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DivisionError::Missing => "division_missing",
            DivisionError::Length => "division_length",
            DivisionError::Format => "division_format",
        }
    }
}

impl DivisionCode {
    /// Parses a code of 6, 9, 12 or 15 digits; surrounding whitespace is ignored and
    /// full-width digits are read as digits.
    pub fn parse(input: &str) -> Result<DivisionCode, DivisionError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(DivisionError::Missing);
        }
        let digits = trimmed
            .chars()
            .map(fold_digit)
            .collect::<Option<String>>()
            .ok_or(DivisionError::Format)?;
        if DivisionLevel::from_digits(digits.len()).is_none() {
            return Err(DivisionError::Length);
        }
        Ok(DivisionCode(digits))
    }

    /// The code's digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The level given by the code's length.
    pub fn level(&self) -> DivisionLevel {
        // `parse` admits only lengths that have a level; Grid is the only one left.
        DivisionLevel::from_digits(self.0.len()).unwrap_or(DivisionLevel::Grid)
    }

    /// Whether `other` is this division or lies inside it.
    pub fn contains(&self, other: &DivisionCode) -> bool {
        other.0.starts_with(&self.0)
    }

    /// The enclosing division, or `None` for a district.
    pub fn parent(&self) -> Option<DivisionCode> {
        self.ancestor(self.level().parent()?)
    }

    /// The district this code lies in (itself for a district).
    pub fn district(&self) -> DivisionCode {
        self.ancestor(DivisionLevel::District)
            .unwrap_or_else(|| self.clone())
    }

    /// The street this code lies in (itself for a street), or `None` for a district.
    pub fn street(&self) -> Option<DivisionCode> {
        self.ancestor(DivisionLevel::Street)
    }

    /// The community this code lies in (itself for a community), or `None` above it.
    pub fn community(&self) -> Option<DivisionCode> {
        self.ancestor(DivisionLevel::Community)
    }

    /// The prefix of `level`'s length, if this code is at least that deep.
    fn ancestor(&self, level: DivisionLevel) -> Option<DivisionCode> {
        self.0
            .get(..level.digits())
            .map(|prefix| DivisionCode(prefix.to_owned()))
    }

    /// The names of the division of the code's first six digits and of the divisions above
    /// it, largest first and separated by a space — `浙江省 杭州市 西湖区` for `330106…`,
    /// `北京市 东城区` for `110101…` (a direct-administered municipality has no prefecture
    /// row), `湖北省 仙桃市` for `429004` (a county-level city under its province) — from the
    /// embedded GB/T 2260 table. `None` when those six digits are not in the table (an
    /// unknown code, a newer division than the table, or a statistics-only code). Placeholder
    /// rows (`市辖区`, `县`, `省直辖县级行政区划`) are never shown.
    pub fn district_name(&self) -> Option<String> {
        let district = self.0.get(..6)?;
        let names = &*DIVISION_NAMES;
        let own = names.get(district)?;
        let province = format!("{}0000", &district[..2]);
        let prefecture = format!("{}00", &district[..4]);
        let mut parts: Vec<&str> = Vec::with_capacity(3);
        if district != province {
            if let Some(name) = names.get(province.as_str()) {
                parts.push(name);
            }
            if district != prefecture {
                if let Some(name) = names.get(prefecture.as_str()) {
                    parts.push(name);
                }
            }
        }
        parts.push(own);
        Some(parts.join(" "))
    }

    /// [`Self::district_name`] followed by the digits of each deeper level with its name:
    /// `浙江省 杭州市 西湖区 街道001 社区002 网格003` for `330106001002003`. `None` when the
    /// district is not in the table.
    pub fn display_name(&self) -> Option<String> {
        let mut out = self.district_name()?;
        let levels = [
            (DivisionLevel::Street, "街道"),
            (DivisionLevel::Community, "社区"),
            (DivisionLevel::Grid, "网格"),
        ];
        for (level, label) in levels {
            let end = level.digits();
            if let Some(digits) = self.0.get(end - 3..end) {
                out.push(' ');
                out.push_str(label);
                out.push_str(digits);
            }
        }
        Some(out)
    }
}

/// The embedded GB/T 2260 table: `code<TAB>name` lines after a `#` header.
const GB2260: &str = include_str!("../data/gb2260.tsv");

/// Names a table row may carry that stand for no division of their own.
fn is_placeholder(name: &str) -> bool {
    matches!(name, "市辖区" | "县") || name.ends_with("直辖县级行政区划")
}

/// One row of the table: a six-digit code and its name, or `None` for a comment, a blank
/// line, a placeholder, or anything malformed (the tests check that every line of the
/// shipped table is a row or a comment).
fn parse_row(line: &str) -> Option<(&str, &str)> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (code, name) = line.split_once('\t')?;
    let well_formed = code.len() == 6
        && code.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && !name.chars().any(char::is_whitespace);
    (well_formed && !is_placeholder(name)).then_some((code, name))
}

/// Code -> name, parsed from [`GB2260`] once, at first use.
static DIVISION_NAMES: LazyLock<HashMap<&'static str, &'static str>> =
    LazyLock::new(|| GB2260.lines().filter_map(parse_row).collect());

/// An ASCII or full-width digit as an ASCII digit.
fn fold_digit(c: char) -> Option<char> {
    match c {
        '0'..='9' => Some(c),
        '０'..='９' => char::from_digit(u32::from(c) - u32::from('０'), 10),
        _ => None,
    }
}

impl fmt::Display for DivisionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DivisionCode {
    type Err = DivisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DivisionCode::parse(s)
    }
}

impl Serialize for DivisionCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DivisionCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DivisionCode::parse(&text)
            .map_err(|e| serde::de::Error::custom(format_args!("{}: {e}", e.code())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(s: &str) -> DivisionCode {
        DivisionCode::parse(s).unwrap()
    }

    #[test]
    fn levels_follow_length() {
        assert_eq!(code("440305").level(), DivisionLevel::District);
        assert_eq!(code("440305001").level(), DivisionLevel::Street);
        assert_eq!(code("440305001002").level(), DivisionLevel::Community);
        assert_eq!(code(" 440305001002003 ").level(), DivisionLevel::Grid);
        assert_eq!(code("４４０３０５").as_str(), "440305");
    }

    #[test]
    fn errors_have_codes() {
        let cases = [
            ("", "division_missing"),
            ("  ", "division_missing"),
            ("44030", "division_length"),
            ("4403050", "division_length"),
            ("4403050010020031", "division_length"),
            ("440-305", "division_format"),
            ("44030a", "division_format"),
        ];
        for (input, expected) in cases {
            let err = DivisionCode::parse(input).unwrap_err();
            assert_eq!(err.code(), expected, "{input:?}");
            assert!(input.trim().is_empty() || !err.to_string().contains(input.trim()));
        }
    }

    #[test]
    fn ancestors_are_prefixes() {
        let grid = code("440305001002003");
        assert_eq!(grid.parent(), Some(code("440305001002")));
        assert_eq!(grid.community(), Some(code("440305001002")));
        assert_eq!(grid.street(), Some(code("440305001")));
        assert_eq!(grid.district(), code("440305"));
        let street = code("440305001");
        assert_eq!(street.street(), Some(street.clone()));
        assert_eq!(street.community(), None);
        assert_eq!(street.parent(), Some(code("440305")));
        assert_eq!(code("440305").parent(), None);
        assert_eq!(code("440305").street(), None);
    }

    #[test]
    fn contains_is_reflexive_and_downward_only() {
        let street = code("440305001");
        assert!(street.contains(&street));
        assert!(street.contains(&code("440305001002")));
        assert!(street.contains(&code("440305001999888")));
        assert!(!street.contains(&code("440305002001")));
        assert!(!street.contains(&code("440305")));
        assert!(code("440305").contains(&street));
    }

    #[test]
    fn serde_and_display() {
        let grid = code("440305001002003");
        assert_eq!(grid.to_string(), "440305001002003");
        let json = serde_json::to_string(&grid).unwrap();
        assert_eq!(json, "\"440305001002003\"");
        assert_eq!(serde_json::from_str::<DivisionCode>(&json).unwrap(), grid);
        let err = serde_json::from_str::<DivisionCode>("\"4403\"").unwrap_err();
        assert!(err.to_string().contains("division_length"));
        assert_eq!(
            serde_json::to_string(&DivisionLevel::Community).unwrap(),
            "\"community\""
        );
    }

    #[test]
    fn well_known_codes_have_their_names() {
        let name = |c: &str| code(c).district_name();
        assert_eq!(name("110101").as_deref(), Some("北京市 东城区"));
        assert_eq!(name("110105001").as_deref(), Some("北京市 朝阳区"));
        assert_eq!(name("330106").as_deref(), Some("浙江省 杭州市 西湖区"));
        // County-level cities: under a prefecture, and directly under a province.
        assert_eq!(name("330182").as_deref(), Some("浙江省 杭州市 建德市"));
        assert_eq!(name("429004").as_deref(), Some("湖北省 仙桃市"));
        // A prefecture without counties, a prefecture, a province.
        assert_eq!(name("441900").as_deref(), Some("广东省 东莞市"));
        assert_eq!(name("330100").as_deref(), Some("浙江省 杭州市"));
        assert_eq!(name("330000").as_deref(), Some("浙江省"));
        assert_eq!(name("500101").as_deref(), Some("重庆市 万州区"));
        assert_eq!(
            code("330106001002003").display_name().as_deref(),
            Some("浙江省 杭州市 西湖区 街道001 社区002 网格003")
        );
        assert_eq!(
            code("110105001").display_name().as_deref(),
            Some("北京市 朝阳区 街道001")
        );
        assert_eq!(
            code("110101").display_name().as_deref(),
            Some("北京市 东城区")
        );
    }

    #[test]
    fn unknown_codes_have_no_name() {
        for unknown in ["999999", "000000", "110100", "110199001", "130171001002003"] {
            assert_eq!(code(unknown).district_name(), None, "{unknown}");
            assert_eq!(code(unknown).display_name(), None, "{unknown}");
        }
    }

    #[test]
    fn placeholder_rows_are_never_names() {
        assert_eq!(parse_row("110100\t市辖区"), None);
        assert_eq!(parse_row("500200\t县"), None);
        assert_eq!(parse_row("429000\t省直辖县级行政区划"), None);
        assert_eq!(parse_row("659000\t自治区直辖县级行政区划"), None);
        assert_eq!(parse_row("330106\t西湖区"), Some(("330106", "西湖区")));
        for malformed in [
            "33010\t西湖区",
            "3301066\t西湖区",
            "33010a\t西湖区",
            "330106\t",
            "330106 西湖区",
            "330106\t西 湖区",
        ] {
            assert_eq!(parse_row(malformed), None, "{malformed:?}");
        }
    }

    /// Every line of the shipped table is a comment or a row, every code is given once, in
    /// order, and every county or prefecture has its province.
    #[test]
    fn every_line_of_the_table_parses_and_codes_are_unique() {
        let mut codes = Vec::new();
        for (number, line) in GB2260.lines().enumerate() {
            if line.starts_with('#') {
                assert!(
                    codes.is_empty(),
                    "line {}: comments only at the top",
                    number + 1
                );
                continue;
            }
            let (code, _) = parse_row(line)
                .unwrap_or_else(|| panic!("line {} does not parse: {line:?}", number + 1));
            codes.push(code);
        }
        assert!((3_000..4_000).contains(&codes.len()), "{}", codes.len());
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, codes, "codes are unique and sorted");
        assert_eq!(DIVISION_NAMES.len(), codes.len());
        for code in &codes {
            let province = format!("{}0000", &code[..2]);
            assert!(DIVISION_NAMES.contains_key(province.as_str()), "{code}");
        }
        assert_eq!(
            codes.iter().filter(|c| c.ends_with("0000")).count(),
            34,
            "31 provinces, Hong Kong, Macao and Taiwan"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_and_round_trip(input in any::<String>()) {
            if let Ok(parsed) = DivisionCode::parse(&input) {
                prop_assert_eq!(DivisionCode::parse(parsed.as_str()), Ok(parsed.clone()));
            }
        }

        #[test]
        fn every_ancestor_contains_the_code(digits in "[0-9]{6}([0-9]{3}){0,3}") {
            let parsed = code(&digits);
            prop_assert_eq!(DivisionCode::parse(parsed.as_str()), Ok(parsed.clone()));
            let mut current = Some(parsed.clone());
            while let Some(ancestor) = current {
                prop_assert!(ancestor.contains(&parsed));
                prop_assert!(ancestor.level() <= parsed.level());
                current = ancestor.parent();
            }
            prop_assert_eq!(parsed.district().level(), DivisionLevel::District);
            prop_assert_eq!(parsed.district_name(), parsed.district().district_name());
            if let Some(name) = parsed.display_name() {
                prop_assert!(name.starts_with(&parsed.district_name().unwrap_or_default()));
            }
        }
    }
}
