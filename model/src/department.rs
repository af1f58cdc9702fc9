//! The street-level departments that publish data to SafeGrid.
//!
//! Guarantees: a [`Department`] is one of the eight known departments; its code (`gongan`, …)
//! is stable and is what serde, `Display` and [`Department::parse`] use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A department that publishes or consumes data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Department {
    /// 公安: public security police station.
    Gongan,
    /// 民政: civil affairs.
    Minzheng,
    /// 卫健: health commission.
    Weijian,
    /// 司法: justice bureau.
    Sifa,
    /// 住建: housing and construction.
    Zhujian,
    /// 城管: urban management.
    Chengguan,
    /// 应急: emergency management.
    Yingji,
    /// 网格中心: the street's grid-management centre.
    Wangge,
}

/// Why a string does not name a department. The message never quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepartmentError {
    #[error(
        "department is not recognised: use one of gongan, minzheng, weijian, sifa, zhujian, \
         chengguan, yingji, wangge"
    )]
    Unknown,
}

impl DepartmentError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DepartmentError::Unknown => "department_unknown",
        }
    }
}

impl Department {
    /// Every department, in declaration order.
    pub const ALL: [Department; 8] = [
        Department::Gongan,
        Department::Minzheng,
        Department::Weijian,
        Department::Sifa,
        Department::Zhujian,
        Department::Chengguan,
        Department::Yingji,
        Department::Wangge,
    ];

    /// Stable lowercase code, as used in configuration, policies and serde.
    pub fn code(&self) -> &'static str {
        match self {
            Department::Gongan => "gongan",
            Department::Minzheng => "minzheng",
            Department::Weijian => "weijian",
            Department::Sifa => "sifa",
            Department::Zhujian => "zhujian",
            Department::Chengguan => "chengguan",
            Department::Yingji => "yingji",
            Department::Wangge => "wangge",
        }
    }

    /// Short Chinese name shown to users.
    pub fn chinese_name(&self) -> &'static str {
        match self {
            Department::Gongan => "公安",
            Department::Minzheng => "民政",
            Department::Weijian => "卫健",
            Department::Sifa => "司法",
            Department::Zhujian => "住建",
            Department::Chengguan => "城管",
            Department::Yingji => "应急",
            Department::Wangge => "网格中心",
        }
    }

    /// Parses a department code, ignoring case and surrounding whitespace. The Chinese name
    /// is accepted too.
    pub fn parse(input: &str) -> Result<Department, DepartmentError> {
        let trimmed = input.trim();
        Department::ALL
            .into_iter()
            .find(|d| d.code().eq_ignore_ascii_case(trimmed) || d.chinese_name() == trimmed)
            .ok_or(DepartmentError::Unknown)
    }
}

impl fmt::Display for Department {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Department {
    type Err = DepartmentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Department::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_codes_in_any_case() {
        assert_eq!(Department::parse("gongan"), Ok(Department::Gongan));
        assert_eq!(Department::parse(" ChengGuan\n"), Ok(Department::Chengguan));
        assert_eq!(Department::parse("网格中心"), Ok(Department::Wangge));
        let err = Department::parse("police").unwrap_err();
        assert_eq!(err.code(), "department_unknown");
        assert!(!err.to_string().contains("police"));
        assert_eq!(Department::parse(""), Err(DepartmentError::Unknown));
    }

    #[test]
    fn every_department_round_trips() {
        for department in Department::ALL {
            assert_eq!(Department::parse(department.code()), Ok(department));
            assert_eq!(department.to_string(), department.code());
            let json = serde_json::to_string(&department).unwrap();
            assert_eq!(json, format!("\"{}\"", department.code()));
            assert_eq!(
                serde_json::from_str::<Department>(&json).unwrap(),
                department
            );
        }
        assert_eq!(Department::Weijian.chinese_name(), "卫健");
    }

    #[test]
    fn codes_and_names_are_distinct() {
        let mut codes: Vec<_> = Department::ALL.iter().map(|d| d.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Department::ALL.len());
        let mut names: Vec<_> = Department::ALL.iter().map(|d| d.chinese_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Department::ALL.len());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_and_round_trip(input in any::<String>()) {
            if let Ok(department) = Department::parse(&input) {
                prop_assert_eq!(Department::parse(department.code()), Ok(department));
            }
        }
    }
}
