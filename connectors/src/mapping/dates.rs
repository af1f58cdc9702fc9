//! Dates as departments write them, normalised for the unified format.
//!
//! Guarantees: a date comes out as `YYYY-MM-DD`, a point in time as RFC 3339 in UTC; a time
//! without a zone is read as China Standard Time (UTC+8), as `model::parse_timestamp` does.
//! Anything not understood is an error, never a guess.

use chrono::{
    DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc,
};

/// How a column's dates are written. In the TOML: `"auto"`, `"excel_serial"`, or a chrono
/// pattern such as `"%Y%m%d"` or `"%Y年%m月%d日"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DateFormat {
    /// Every form `model::parse_date` / `parse_timestamp` accept: `19491231`, `1949-12-31`,
    /// `1949/12/31`, `1949.12.31`, `1949年12月31日`, with an optional time or an RFC 3339 zone.
    Auto,
    /// Excel's serial day number (days since 1899-12-30; a fraction is the time of day).
    ExcelSerial,
    /// A chrono `strftime` pattern.
    Pattern(String),
}

impl DateFormat {
    pub(crate) fn parse(spec: &str) -> DateFormat {
        match spec.trim() {
            "" | "auto" => DateFormat::Auto,
            "excel_serial" => DateFormat::ExcelSerial,
            other => DateFormat::Pattern(other.to_owned()),
        }
    }
}

/// Whether a field holds a calendar date or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateKind {
    Date,
    Timestamp,
}

/// China Standard Time, UTC+8.
const CHINA: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("8 hours is a valid offset"),
};

fn china() -> FixedOffset {
    CHINA
}

fn local_to_utc(local: NaiveDateTime) -> Option<DateTime<Utc>> {
    china()
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

fn excel_serial(text: &str) -> Option<NaiveDateTime> {
    let serial: f64 = text.trim().parse().ok()?;
    // 1 = 1900-01-01 … 2958465 = 9999-12-31; serials below 61 sit before Excel's phantom
    // 1900-02-29 and are off by one, so they are refused.
    if !(61.0..=2_958_465.0).contains(&serial) {
        return None;
    }
    let base = NaiveDate::from_ymd_opt(1899, 12, 30)?.and_hms_opt(0, 0, 0)?;
    let millis = (serial * 86_400_000.0).round() as i64;
    base.checked_add_signed(Duration::milliseconds(millis))
}

/// Parses `text` in `format` and renders it for a field of `kind`. `None` means "not a date".
pub(crate) fn normalise(text: &str, format: &DateFormat, kind: DateKind) -> Option<String> {
    let text = text.trim();
    let instant: Result<NaiveDate, DateTime<Utc>> = match format {
        DateFormat::Auto => match model::parse_date(text) {
            Ok(date) => Ok(date),
            Err(_) => Err(model::parse_timestamp(text).ok()?),
        },
        DateFormat::ExcelSerial => {
            let local = excel_serial(text)?;
            if local.time() == chrono::NaiveTime::MIN {
                Ok(local.date())
            } else {
                Err(local_to_utc(local)?)
            }
        }
        DateFormat::Pattern(pattern) => {
            if let Ok(with_zone) = DateTime::parse_from_str(text, pattern) {
                Err(with_zone.with_timezone(&Utc))
            } else if let Ok(local) = NaiveDateTime::parse_from_str(text, pattern) {
                Err(local_to_utc(local)?)
            } else {
                Ok(NaiveDate::parse_from_str(text, pattern).ok()?)
            }
        }
    };
    Some(match (instant, kind) {
        (Ok(date), DateKind::Date) => date.format("%Y-%m-%d").to_string(),
        (Ok(date), DateKind::Timestamp) => {
            local_to_utc(date.and_hms_opt(0, 0, 0)?)?.to_rfc3339_opts(SecondsFormat::Secs, true)
        }
        (Err(time), DateKind::Date) => time
            .with_timezone(&china())
            .date_naive()
            .format("%Y-%m-%d")
            .to_string(),
        (Err(time), DateKind::Timestamp) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str, format: &str) -> Option<String> {
        normalise(text, &DateFormat::parse(format), DateKind::Date)
    }

    #[test]
    fn reads_the_chinese_forms() {
        for text in [
            "19491231",
            "1949-12-31",
            "1949年12月31日",
            "1949/12/31",
            "1949.12.31",
        ] {
            assert_eq!(date(text, "auto").as_deref(), Some("1949-12-31"), "{text}");
        }
        assert_eq!(
            date("1949年12月31日", "%Y年%m月%d日").as_deref(),
            Some("1949-12-31")
        );
        assert_eq!(
            date("31/12/1949", "%d/%m/%Y").as_deref(),
            Some("1949-12-31")
        );
        assert_eq!(date("1949-13-01", "auto"), None);
        assert_eq!(date("19491231", "%Y-%m-%d"), None);
    }

    #[test]
    fn reads_excel_serials() {
        assert_eq!(date("18264", "excel_serial").as_deref(), Some("1950-01-01"));
        assert_eq!(date("45597", "excel_serial").as_deref(), Some("2024-11-01"));
        assert_eq!(date("12", "excel_serial"), None);
        assert_eq!(
            normalise("45597.5", &DateFormat::ExcelSerial, DateKind::Timestamp).as_deref(),
            Some("2024-11-01T04:00:00Z")
        );
    }

    #[test]
    fn timestamps_without_zone_are_china_time() {
        assert_eq!(
            normalise("2026-11-01 08:00", &DateFormat::Auto, DateKind::Timestamp).as_deref(),
            Some("2026-11-01T00:00:00Z")
        );
        assert_eq!(
            normalise(
                "2026-11-01T08:00:00+08:00",
                &DateFormat::Auto,
                DateKind::Date
            )
            .as_deref(),
            Some("2026-11-01")
        );
    }
}
