//! The unified social credit code (统一社会信用代码, GB 32100-2015) of an organization: a
//! company, a sole trader (个体工商户), a school, a social organization.
//!
//! Guarantees: a [`Uscc`] is 18 characters of the code's alphabet (the digits and the
//! capital letters without I, O, S, V and Z), its first character is a registration authority
//! code, its characters 3-8 are digits (the registering division), and its 18th character is
//! the GB 32100 check character of the first 17. Input is read case-insensitively, with
//! full-width characters, spaces and hyphens allowed. The code is public registration data
//! (it is printed on the business licence), so it has a `Display`; an error message still
//! never repeats the input.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The code's 31 characters, each worth its position.
const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// GB 32100 weights of the first 17 characters (3^i mod 31).
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];
/// Registration authority codes (the first character): 1 organisation establishment
/// (机构编制), 5 civil affairs (民政), 9 market regulation (工商), Y other, and the others
/// GB 32100's table lists.
const AUTHORITIES: &[u8] = b"123456789ANY";

/// A valid unified social credit code.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uscc(String);

/// Why a string is not a unified social credit code. Messages never quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    #[error("a unified social credit code has 18 characters (digits and capital letters)")]
    Length,
    #[error(
        "a unified social credit code uses only digits and the capital letters other than \
         I, O, S, V and Z"
    )]
    Character,
    #[error(
        "a unified social credit code starts with a registration authority code (1-9, A, N \
         or Y) and has the six digits of a division code in characters 3-8"
    )]
    Structure,
    #[error(
        "the last character does not match the GB 32100 check: the code was mistyped; copy \
         it again from the business licence"
    )]
    Check,
}

impl UsccError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            UsccError::Length => "uscc_length",
            UsccError::Character => "uscc_character",
            UsccError::Structure => "uscc_structure",
            UsccError::Check => "uscc_check",
        }
    }
}

/// The GB 32100 check character of the first 17 characters of a code (each of them in the
/// code's alphabet), or `None` when one is not.
pub fn check_character(first_17: &[u8]) -> Option<char> {
    if first_17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (byte, weight) in first_17.iter().zip(WEIGHTS) {
        let value = ALPHABET.iter().position(|a| a == byte)?;
        sum += value as u32 * weight;
    }
    let check = (31 - sum % 31) % 31;
    Some(char::from(ALPHABET[check as usize]))
}

impl Uscc {
    /// Parses a code, ignoring case, full-width forms, spaces and hyphens.
    pub fn parse(input: &str) -> Result<Uscc, UsccError> {
        let mut code = String::with_capacity(18);
        for c in input.chars() {
            let c = match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
                _ => c,
            };
            if c.is_whitespace() || c == '-' {
                continue;
            }
            if !c.is_ascii_alphanumeric() {
                return Err(UsccError::Character);
            }
            if code.len() == 18 {
                return Err(UsccError::Length);
            }
            code.push(c.to_ascii_uppercase());
        }
        if code.len() != 18 {
            return Err(UsccError::Length);
        }
        let bytes = code.as_bytes();
        if !bytes.iter().all(|b| ALPHABET.contains(b)) {
            return Err(UsccError::Character);
        }
        if !AUTHORITIES.contains(&bytes[0]) || !bytes[2..8].iter().all(u8::is_ascii_digit) {
            return Err(UsccError::Structure);
        }
        if check_character(&bytes[..17]) != Some(char::from(bytes[17])) {
            return Err(UsccError::Check);
        }
        Ok(Uscc(code))
    }

    /// The 18 characters, uppercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The registering division (characters 3-8).
    pub fn division(&self) -> &str {
        &self.0[2..8]
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uscc({})", self.0)
    }
}

impl Serialize for Uscc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Uscc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Uscc::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Codes printed on real business licences (public registration data).
    const REAL: [&str; 3] = [
        "9144030071526726XG",
        "91330100799655058B",
        "91110000802100433B",
    ];

    #[test]
    fn real_codes_are_accepted_in_every_written_form() {
        for code in REAL {
            assert_eq!(Uscc::parse(code).unwrap().as_str(), code);
            let lower = code.to_lowercase();
            assert_eq!(Uscc::parse(&lower).unwrap().as_str(), code);
            let spaced = format!("{} {}-{}", &code[..6], &code[6..12], &code[12..]);
            assert_eq!(Uscc::parse(&spaced).unwrap().as_str(), code);
            let wide: String = code
                .chars()
                .map(|c| char::from_u32(u32::from(c) + 0xFEE0).unwrap())
                .collect();
            assert_eq!(Uscc::parse(&wide).unwrap().as_str(), code);
        }
        assert_eq!(Uscc::parse(REAL[0]).unwrap().division(), "440300");
    }

    #[test]
    fn every_single_character_slip_is_caught() {
        for code in REAL {
            for position in 0..18 {
                for replacement in ALPHABET.iter().map(|b| char::from(*b)) {
                    let mut chars: Vec<char> = code.chars().collect();
                    if chars[position] == replacement {
                        continue;
                    }
                    chars[position] = replacement;
                    let slipped: String = chars.into_iter().collect();
                    assert!(Uscc::parse(&slipped).is_err(), "{slipped}");
                }
            }
        }
    }

    #[test]
    fn errors_have_stable_codes_and_never_quote_the_input() {
        let cases = [
            ("9144030071526726X", "uscc_length"),
            ("9144030071526726XGG", "uscc_length"),
            ("9144030071526726XI", "uscc_character"),
            ("91440300715267264Z", "uscc_character"),
            ("914403007152672６X中", "uscc_character"),
            ("Z144030071526726XG", "uscc_character"),
            ("B14403007152672600", "uscc_structure"),
            ("91A4030071526726XG", "uscc_structure"),
            ("9144030071526726XH", "uscc_check"),
        ];
        for (input, code) in cases {
            let err = Uscc::parse(input).unwrap_err();
            assert_eq!(err.code(), code, "{input}");
            assert!(!err.to_string().contains(&input[..6]), "{err}");
        }
    }

    #[test]
    fn the_check_character_is_gb_32100s() {
        // A computed code parses; the same code with any other last character does not.
        let body = b"12110105MB0123456";
        let check = check_character(body).unwrap();
        let code = format!("{}{check}", std::str::from_utf8(body).unwrap());
        assert!(Uscc::parse(&code).is_ok());
        assert_eq!(check_character(b"12110105MB012345"), None);
        assert_eq!(check_character(b"12110105MB012345I"), None);
    }

    #[test]
    fn serde_round_trips_and_refuses_bad_codes() {
        let code = Uscc::parse(REAL[1]).unwrap();
        let json = serde_json::to_string(&code).unwrap();
        assert_eq!(json, format!("\"{}\"", REAL[1]));
        assert_eq!(serde_json::from_str::<Uscc>(&json).unwrap(), code);
        assert!(serde_json::from_str::<Uscc>("\"91330100799655058C\"").is_err());
    }
}
