//! Dates and timestamps as departments write them.
//!
//! Guarantees: [`parse_date`] and [`parse_timestamp`] accept the common Chinese spellings of a
//! date (`1949-12-31`, `1949/12/31`, `1949.12.31`, `19491231`, `1949年12月31日`), return only
//! years 1900-2100 (for a timestamp: in China time), and read a timestamp without a zone as China Standard Time (UTC+8), the
//! zone every department's clock uses. Error messages never quote the input.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};

/// Offset of China Standard Time from UTC, in hours.
const CHINA_UTC_OFFSET_HOURS: i64 = 8;
const EARLIEST_YEAR: i32 = 1900;
const LATEST_YEAR: i32 = 2100;

/// Why a string is not a date or timestamp. Messages never quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("date is missing: supply a date such as 1949-10-01")]
    Missing,
    #[error(
        "date is not in a recognised form or is not a real calendar day: write it as \
         YYYY-MM-DD, YYYY/MM/DD, YYYY.MM.DD, YYYYMMDD or YYYY年M月D日, with an optional time \
         HH:MM[:SS] or an RFC 3339 timestamp"
    )]
    Format,
    #[error("date is out of range: the year must be between 1900 and 2100")]
    OutOfRange,
}

impl DateError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DateError::Missing => "date_missing",
            DateError::Format => "date_format",
            DateError::OutOfRange => "date_out_of_range",
        }
    }
}

/// Parses a calendar date in any of the forms departments use.
///
/// Accepted: `1949-12-31`, `1949/12/31`, `1949.12.31` (one- or two-digit month and day),
/// `19491231`, `1949年12月31日` (the final `日` or `号` may be left out). Surrounding whitespace
/// is ignored and full-width digits and separators are read as ASCII.
pub fn parse_date(input: &str) -> Result<NaiveDate, DateError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(DateError::Missing);
    }
    let folded: String = trimmed.chars().map(fold_full_width).collect();
    let (year, month, day) = split_date(&folded).ok_or(DateError::Format)?;
    date_from_parts(year, month, day)
}

/// Parses a point in time.
///
/// Accepted: RFC 3339 with a zone (`2026-11-01T08:00:00Z`, `2026-11-01T08:00:00+08:00`); a
/// date in any [`parse_date`] form followed by `T` or a space and `HH:MM[:SS[.fraction]]`,
/// read as China Standard Time; or a date alone, read as midnight China Standard Time.
pub fn parse_timestamp(input: &str) -> Result<DateTime<Utc>, DateError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(DateError::Missing);
    }
    if let Ok(with_zone) = DateTime::parse_from_rfc3339(trimmed) {
        let instant = with_zone.with_timezone(&Utc);
        // The year bound is applied in China time on every path, so that any accepted
        // instant is accepted again whatever zone it is written in.
        check_year(utc_to_china(instant).ok_or(DateError::OutOfRange)?.year())?;
        return Ok(instant);
    }
    let folded: String = trimmed.chars().map(fold_full_width).collect();
    let local = match parse_date(&folded) {
        Ok(date) => NaiveDateTime::from(date),
        Err(DateError::Format) => {
            let (date, time) = folded
                .split_once(['T', 't', ' '])
                .ok_or(DateError::Format)?;
            let date = parse_date(date)?;
            let time = parse_time(time.trim()).ok_or(DateError::Format)?;
            date.and_time(time)
        }
        Err(other) => return Err(other),
    };
    china_to_utc(local).ok_or(DateError::OutOfRange)
}

/// Today's date in China.
pub(crate) fn today_in_china() -> NaiveDate {
    let now = Utc::now().naive_utc();
    now.checked_add_signed(TimeDelta::hours(CHINA_UTC_OFFSET_HOURS))
        .unwrap_or(now)
        .date()
}

/// A wall-clock time in China as a UTC instant.
fn china_to_utc(local: NaiveDateTime) -> Option<DateTime<Utc>> {
    local
        .checked_sub_signed(TimeDelta::hours(CHINA_UTC_OFFSET_HOURS))
        .map(|utc| utc.and_utc())
}

/// A UTC instant as wall-clock time in China.
fn utc_to_china(instant: DateTime<Utc>) -> Option<NaiveDateTime> {
    instant
        .naive_utc()
        .checked_add_signed(TimeDelta::hours(CHINA_UTC_OFFSET_HOURS))
}

/// Splits a (folded) date into year, month and day text, without checking the parts.
fn split_date(s: &str) -> Option<(&str, &str, &str)> {
    if let Some((year, rest)) = s.split_once('年') {
        let (month, rest) = rest.split_once('月')?;
        let day = rest
            .strip_suffix('日')
            .or_else(|| rest.strip_suffix('号'))
            .unwrap_or(rest);
        return Some((year.trim(), month.trim(), day.trim()));
    }
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        return Some((s.get(..4)?, s.get(4..6)?, s.get(6..)?));
    }
    let separator = s.chars().find(|c| !c.is_ascii_digit())?;
    if !matches!(separator, '-' | '/' | '.') {
        return None;
    }
    let mut parts = s.split(separator);
    let parts = (parts.next()?, parts.next()?, parts.next()?, parts.next());
    match parts {
        (year, month, day, None) => Some((year, month, day)),
        _ => None,
    }
}

/// Builds a date from a four-digit year and one- or two-digit month and day.
fn date_from_parts(year: &str, month: &str, day: &str) -> Result<NaiveDate, DateError> {
    let year: i32 = number_of_width(year, 4, 4).ok_or(DateError::Format)?;
    let month: u32 = number_of_width(month, 1, 2).ok_or(DateError::Format)?;
    let day: u32 = number_of_width(day, 1, 2).ok_or(DateError::Format)?;
    check_year(year)?;
    NaiveDate::from_ymd_opt(year, month, day).ok_or(DateError::Format)
}

/// `text` as a number if it is `min..=max` ASCII digits.
fn number_of_width<T: std::str::FromStr>(text: &str, min: usize, max: usize) -> Option<T> {
    let well_formed = (min..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    if well_formed {
        text.parse().ok()
    } else {
        None
    }
}

fn check_year(year: i32) -> Result<(), DateError> {
    if (EARLIEST_YEAR..=LATEST_YEAR).contains(&year) {
        Ok(())
    } else {
        Err(DateError::OutOfRange)
    }
}

/// `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction`.
fn parse_time(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
        .ok()
}

/// Full-width digits, separators and colon as their ASCII forms.
fn fold_full_width(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        // The full-width forms sit at a fixed distance above their ASCII counterparts.
        '０'..='９' | '－' | '／' | '．' | '：' => u32::from(c)
            .checked_sub(0xFEE0)
            .and_then(char::from_u32)
            .unwrap_or(c),
        _ => c,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn parses_every_date_form() {
        let cases = [
            ("1949-12-31", day(1949, 12, 31)),
            ("1949/12/31", day(1949, 12, 31)),
            ("1949.12.31", day(1949, 12, 31)),
            ("19491231", day(1949, 12, 31)),
            ("1949年12月31日", day(1949, 12, 31)),
            ("1949年1月5日", day(1949, 1, 5)),
            ("1949年1月5", day(1949, 1, 5)),
            ("1949年1月5号", day(1949, 1, 5)),
            ("1949-1-5", day(1949, 1, 5)),
            ("1949/1/05", day(1949, 1, 5)),
            ("  2000.2.29\n", day(2000, 2, 29)),
            ("\u{3000}２０２６－１１－０１", day(2026, 11, 1)),
            ("1900-01-01", day(1900, 1, 1)),
            ("2100-12-31", day(2100, 12, 31)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_date(input), Ok(expected), "{input:?}");
        }
    }

    #[test]
    fn date_errors_have_codes() {
        let cases = [
            ("", "date_missing"),
            (" ", "date_missing"),
            ("1949-12", "date_format"),
            ("1949-12-31-1", "date_format"),
            ("1949-12/31", "date_format"),
            ("49-12-31", "date_format"),
            ("1949-123-1", "date_format"),
            ("1949-02-30", "date_format"),
            ("1900-02-29", "date_format"),
            ("1949-13-01", "date_format"),
            ("1949-00-10", "date_format"),
            ("1949年12月", "date_format"),
            ("1949 12 31", "date_format"),
            ("4912310", "date_format"),
            ("yesterday", "date_format"),
            ("1899-12-31", "date_out_of_range"),
            ("2101-01-01", "date_out_of_range"),
            ("18991231", "date_out_of_range"),
        ];
        for (input, code) in cases {
            let err = parse_date(input).unwrap_err();
            assert_eq!(err.code(), code, "{input:?}");
            assert!(input.trim().is_empty() || !err.to_string().contains(input));
        }
    }

    #[test]
    fn timestamps_with_zone_keep_it() {
        assert_eq!(
            parse_timestamp("2026-11-01T08:00:00Z"),
            Ok(utc("2026-11-01T08:00:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-11-01T08:00:00+08:00"),
            Ok(utc("2026-11-01T00:00:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-11-01T08:00:00.250-05:00"),
            Ok(utc("2026-11-01T13:00:00.250Z"))
        );
        // The year bound is in China time: this instant is 1900-01-01 00:00 there.
        assert_eq!(
            parse_timestamp("1899-12-31T16:00:00Z"),
            Ok(utc("1899-12-31T16:00:00Z"))
        );
    }

    #[test]
    fn timestamps_without_zone_are_china_time() {
        let expected = Ok(utc("2026-11-01T00:00:00Z"));
        for input in [
            "2026-11-01 08:00:00",
            "2026-11-01T08:00:00",
            "2026-11-01 08:00",
            "2026/11/1 08:00:00",
            "2026年11月1日 08:00",
            "２０２６－１１－０１　０８：００：００",
        ] {
            assert_eq!(parse_timestamp(input), expected, "{input:?}");
        }
        assert_eq!(
            parse_timestamp("2026-11-01 08:00:00.5"),
            Ok(utc("2026-11-01T00:00:00.5Z"))
        );
    }

    #[test]
    fn date_alone_is_midnight_china_time() {
        assert_eq!(
            parse_timestamp("2026-11-01"),
            Ok(utc("2026-10-31T16:00:00Z"))
        );
        assert_eq!(
            parse_timestamp("1949年10月1日"),
            Ok(utc("1949-09-30T16:00:00Z"))
        );
    }

    #[test]
    fn timestamp_errors_have_codes() {
        let cases = [
            ("", "date_missing"),
            ("2026-11-01 25:00:00", "date_format"),
            ("2026-11-01 08:00:00 CST", "date_format"),
            ("2026-11-01T", "date_format"),
            ("now", "date_format"),
            ("2026-02-30 08:00", "date_format"),
            ("1899-12-31T15:00:00Z", "date_out_of_range"),
            ("2100-12-31T23:00:00-08:00", "date_out_of_range"),
            ("2101-01-01 00:00:00", "date_out_of_range"),
            ("1800-01-01", "date_out_of_range"),
        ];
        for (input, code) in cases {
            let err = parse_timestamp(input).unwrap_err();
            assert_eq!(err.code(), code, "{input:?}");
        }
    }

    #[test]
    fn today_is_a_plausible_date() {
        let today = today_in_china();
        let utc_today = Utc::now().date_naive();
        assert!(today >= utc_today && today <= utc_today.succ_opt().unwrap());
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_and_round_trip(input in any::<String>()) {
            if let Ok(date) = parse_date(&input) {
                prop_assert_eq!(parse_date(&date.format("%Y-%m-%d").to_string()), Ok(date));
            }
            if let Ok(instant) = parse_timestamp(&input) {
                prop_assert_eq!(parse_timestamp(&instant.to_rfc3339()), Ok(instant));
            }
        }

        #[test]
        fn date_like_strings_never_panic_and_round_trip(
            input in "[0-9０-９年月日号 :T/.\\-+Z]{0,26}"
        ) {
            if let Ok(date) = parse_date(&input) {
                prop_assert_eq!(parse_date(&date.format("%Y-%m-%d").to_string()), Ok(date));
                prop_assert_eq!(parse_date(&date.format("%Y年%-m月%-d日").to_string()), Ok(date));
            }
            if let Ok(instant) = parse_timestamp(&input) {
                prop_assert_eq!(parse_timestamp(&instant.to_rfc3339()), Ok(instant));
            }
        }

        #[test]
        fn every_valid_date_parses_in_every_form(days in 0i64..73_000) {
            let date = day(1900, 1, 1) + TimeDelta::days(days);
            prop_assume!(date.year() <= 2100);
            for format in ["%Y-%m-%d", "%Y/%-m/%-d", "%Y.%m.%d", "%Y%m%d", "%Y年%-m月%-d日"] {
                prop_assert_eq!(parse_date(&date.format(format).to_string()), Ok(date));
            }
            let midnight = date.and_hms_opt(0, 0, 0).unwrap().and_utc() - TimeDelta::hours(8);
            prop_assert_eq!(parse_timestamp(&date.format("%Y-%m-%d").to_string()), Ok(midnight));
        }
    }
}
