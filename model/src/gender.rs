//! Gender as departments record it.
//!
//! Guarantees: [`Gender::parse`] maps every spelling departments use (English words and
//! letters, Chinese, and the GB/T 2261.1 codes) to one of three values, and serde always
//! writes the lowercase English word.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A person's gender; `Unknown` covers both "unknown" and "not stated" (GB/T 2261.1 0 and 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
    Unknown,
}

/// Why a string is not a gender. The message never quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenderError {
    #[error(
        "gender is not recognised: use male, female or unknown (also m/f, 男/女/未知, or the \
         GB/T 2261.1 codes 1, 2, 0, 9)"
    )]
    Invalid,
}

impl GenderError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GenderError::Invalid => "gender_invalid",
        }
    }
}

impl Gender {
    /// Parses `male`/`female`/`unknown` (any case), `m`/`f`, `男`/`女`/`未知` (also `男性`,
    /// `女性`, `未说明`), and the GB/T 2261.1 codes `1`, `2`, `0`, `9`. Surrounding whitespace
    /// is ignored.
    pub fn parse(input: &str) -> Result<Gender, GenderError> {
        let trimmed = input.trim();
        let gender = match trimmed.to_ascii_lowercase().as_str() {
            "male" | "m" | "男" | "男性" | "1" => Gender::Male,
            "female" | "f" | "女" | "女性" | "2" => Gender::Female,
            "unknown" | "未知" | "未知的性别" | "未说明" | "未说明的性别" | "0" | "9" => {
                Gender::Unknown
            }
            _ => return Err(GenderError::Invalid),
        };
        Ok(gender)
    }

    /// The lowercase English word, as serde writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Gender::Male => "male",
            Gender::Female => "female",
            Gender::Unknown => "unknown",
        }
    }

    /// The Chinese word shown to users: 男, 女 or 未知.
    pub fn chinese(&self) -> &'static str {
        match self {
            Gender::Male => "男",
            Gender::Female => "女",
            Gender::Unknown => "未知",
        }
    }
}

impl fmt::Display for Gender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Gender {
    type Err = GenderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Gender::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_spelling() {
        let cases = [
            ("male", Gender::Male),
            ("MALE", Gender::Male),
            (" M ", Gender::Male),
            ("男", Gender::Male),
            ("男性", Gender::Male),
            ("1", Gender::Male),
            ("Female", Gender::Female),
            ("f", Gender::Female),
            ("女", Gender::Female),
            ("2", Gender::Female),
            ("unknown", Gender::Unknown),
            ("未知", Gender::Unknown),
            ("未说明的性别", Gender::Unknown),
            ("0", Gender::Unknown),
            ("9", Gender::Unknown),
        ];
        for (input, expected) in cases {
            assert_eq!(Gender::parse(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn rejects_other_values() {
        for input in ["", "3", "x", "males", "男女", "nan"] {
            let err = Gender::parse(input).unwrap_err();
            assert_eq!(err.code(), "gender_invalid");
            assert!(input.is_empty() || !err.to_string().contains(input));
        }
    }

    #[test]
    fn names_and_serde() {
        assert_eq!(Gender::Female.as_str(), "female");
        assert_eq!(Gender::Female.chinese(), "女");
        assert_eq!(Gender::Unknown.to_string(), "unknown");
        assert_eq!(serde_json::to_string(&Gender::Male).unwrap(), "\"male\"");
        let back: Gender = serde_json::from_str("\"unknown\"").unwrap();
        assert_eq!(back, Gender::Unknown);
        assert!(serde_json::from_str::<Gender>("\"Male\"").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_and_round_trip(input in any::<String>()) {
            if let Ok(gender) = Gender::parse(&input) {
                prop_assert_eq!(Gender::parse(gender.as_str()), Ok(gender));
                prop_assert_eq!(Gender::parse(gender.chinese()), Ok(gender));
            }
        }
    }
}
