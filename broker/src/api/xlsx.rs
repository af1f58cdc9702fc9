//! Excel workbooks of API answers, for the people who read them in a spreadsheet: the
//! compliance officer's audit export, a resident's access report, a department's quarantine.
//!
//! Guarantees:
//! - `format` means the same on every route that offers a workbook: absent, empty or the
//!   route's own form (`json`, `ndjson`) answers as before; `xlsx` answers a workbook;
//!   anything else is 400 `format_invalid` naming both.
//! - A workbook holds exactly the text and numbers its caller passes, each as a plain cell:
//!   nothing is written as a formula (a value starting with `=` stays text), so opening the
//!   file computes and fetches nothing. A value longer than Excel's 32,767 characters per
//!   cell is cut and ends in `…` rather than failing the answer.
//! - A workbook answer carries the spreadsheet media type and `Content-Disposition:
//!   attachment` with a file name of ASCII letters, digits, `-`, `_` and `.` only. Callers
//!   build it from fixed words, department codes and dates — never from a request's path or
//!   query — so no ID number and no name can reach it.
//! - Workbooks are built off the async threads.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};

use super::error::ApiError;

/// The media type of an `.xlsx` workbook.
pub const CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Most characters Excel keeps in one cell.
pub const MAX_CELL_CHARS: usize = 32_767;

/// China Standard Time (UTC+8), in which workbooks for Chinese readers show times.
pub const CHINA_TIME_OFFSET_SECONDS: i32 = 8 * 3600;

/// What a route that also offers a workbook was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The route's own form (JSON, or NDJSON for the audit export).
    Own,
    /// An Excel workbook.
    Workbook,
}

/// Reads the `format` parameter of a route whose own form is `own` (`json`, `ndjson`).
pub fn requested_form(format: Option<&str>, own: &'static str) -> Result<Form, ApiError> {
    match format.map(str::trim) {
        None | Some("") => Ok(Form::Own),
        Some("xlsx") => Ok(Form::Workbook),
        Some(other) if other == own => Ok(Form::Own),
        Some(_) => Err(ApiError::bad_request(
            "format_invalid",
            format!("format is {own} (default) or xlsx"),
        )),
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Empty,
    Text(String),
    Number(f64),
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell::Text(text)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::Text(text.to_owned())
    }
}

impl From<Option<String>> for Cell {
    fn from(text: Option<String>) -> Cell {
        text.map_or(Cell::Empty, Cell::Text)
    }
}

impl From<u64> for Cell {
    fn from(n: u64) -> Cell {
        Cell::Number(n as f64)
    }
}

impl From<usize> for Cell {
    fn from(n: usize) -> Cell {
        Cell::Number(n as f64)
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Cell {
        Cell::Number(n as f64)
    }
}

/// One worksheet.
#[derive(Debug, Clone, PartialEq)]
pub enum Sheet {
    /// A bold header row, then one row per item.
    Table {
        name: String,
        header: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    /// One `key | value` row per pair, the key bold (a summary beside a table).
    Pairs {
        name: String,
        pairs: Vec<(String, Cell)>,
    },
}

/// A time in China Standard Time, `YYYY-MM-DD HH:MM:SS`, for sheets read in Chinese.
pub fn china_time(time: chrono::DateTime<chrono::Utc>) -> String {
    match chrono::FixedOffset::east_opt(CHINA_TIME_OFFSET_SECONDS) {
        Some(offset) => time
            .with_timezone(&offset)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        None => time.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    }
}

/// The workbook of `sheets`, in order, built off the async threads. A failure is 500
/// `export_failed` (its cause logged).
pub async fn render(sheets: Vec<Sheet>) -> Result<Vec<u8>, ApiError> {
    tokio::task::spawn_blocking(move || {
        build(&sheets).map_err(|err| ApiError::internal("export_failed", &err))
    })
    .await?
}

/// The workbook of `sheets`, in order.
pub fn build(sheets: &[Sheet]) -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    for sheet in sheets {
        let worksheet = workbook.add_worksheet();
        match sheet {
            Sheet::Table { name, header, rows } => {
                worksheet.set_name(name)?;
                for (col, title) in header.iter().enumerate() {
                    worksheet.write_string_with_format(0, column(col)?, title, &bold)?;
                }
                for (i, cells) in rows.iter().enumerate() {
                    let row = u32::try_from(i + 1).map_err(|_| XlsxError::RowColumnLimitError)?;
                    for (col, cell) in cells.iter().enumerate() {
                        write(worksheet, row, column(col)?, cell)?;
                    }
                }
                worksheet.set_freeze_panes(1, 0)?;
            }
            Sheet::Pairs { name, pairs } => {
                worksheet.set_name(name)?;
                for (i, (key, value)) in pairs.iter().enumerate() {
                    let row = u32::try_from(i).map_err(|_| XlsxError::RowColumnLimitError)?;
                    worksheet.write_string_with_format(row, 0, key, &bold)?;
                    write(worksheet, row, 1, value)?;
                }
            }
        }
        worksheet.autofit();
    }
    workbook.save_to_buffer()
}

fn column(index: usize) -> Result<u16, XlsxError> {
    u16::try_from(index).map_err(|_| XlsxError::RowColumnLimitError)
}

fn write(worksheet: &mut Worksheet, row: u32, col: u16, cell: &Cell) -> Result<(), XlsxError> {
    match cell {
        Cell::Empty => {}
        Cell::Number(n) => {
            worksheet.write_number(row, col, *n)?;
        }
        // `write_string` stores text as text: a leading `=` is never a formula.
        Cell::Text(text) => {
            worksheet.write_string(row, col, fit(text))?;
        }
    }
    Ok(())
}

/// `text`, cut to fit one cell.
fn fit(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().count() <= MAX_CELL_CHARS {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
    cut.push('…');
    std::borrow::Cow::Owned(cut)
}

/// A 200 answer carrying `workbook` as the download `file_name`. A name with any character
/// outside ASCII letters, digits, `-`, `_` and `.` is replaced by `safegrid.xlsx`.
pub fn attachment(workbook: Vec<u8>, file_name: &str) -> Response {
    let safe = !file_name.is_empty()
        && file_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let file_name = if safe { file_name } else { "safegrid.xlsx" };
    let mut response = (StatusCode::OK, workbook).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    #[test]
    fn the_format_parameter_means_the_same_everywhere() {
        assert_eq!(requested_form(None, "json").unwrap(), Form::Own);
        assert_eq!(requested_form(Some(""), "json").unwrap(), Form::Own);
        assert_eq!(requested_form(Some("json"), "json").unwrap(), Form::Own);
        assert_eq!(requested_form(Some("ndjson"), "ndjson").unwrap(), Form::Own);
        assert_eq!(
            requested_form(Some("xlsx"), "json").unwrap(),
            Form::Workbook
        );
        for bad in ["pdf", "XLSX", "ndjson", "csv"] {
            let err = requested_form(Some(bad), "json").unwrap_err();
            assert_eq!(
                (err.status, err.code),
                (StatusCode::BAD_REQUEST, "format_invalid")
            );
            assert!(err.message.contains("json") && err.message.contains("xlsx"));
        }
    }

    #[test]
    fn a_long_value_is_cut_to_one_cell() {
        assert_eq!(fit("短"), "短");
        let exact = "长".repeat(MAX_CELL_CHARS);
        assert_eq!(fit(&exact), exact.as_str());
        let cut = fit(&"长".repeat(MAX_CELL_CHARS + 10)).into_owned();
        assert_eq!(cut.chars().count(), MAX_CELL_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn every_kind_of_cell_and_sheet_builds() {
        let bytes = build(&[
            Sheet::Table {
                name: "表".into(),
                header: vec!["甲".into(), "乙".into(), "丙".into()],
                rows: vec![
                    vec![Cell::from("=1+1"), Cell::from(7u64), Cell::Empty],
                    vec![
                        Cell::from("长".repeat(MAX_CELL_CHARS + 1)),
                        Cell::from(None),
                        Cell::from(-1i64),
                    ],
                ],
            },
            Sheet::Pairs {
                name: "概况".into(),
                pairs: vec![("条数".into(), Cell::from(2usize))],
            },
        ])
        .unwrap();
        assert!(bytes.starts_with(b"PK"), "a zip container");
        // A sheet name Excel refuses is an error, not a broken file.
        let bad = build(&[Sheet::Pairs {
            name: "a/b".into(),
            pairs: Vec::new(),
        }]);
        assert!(bad.is_err());
    }

    #[test]
    fn file_names_are_plain_ascii_or_replaced() {
        let named = |name: &str| {
            attachment(Vec::new(), name).headers()[header::CONTENT_DISPOSITION]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            named("safegrid-rejects-gongan-20261101.xlsx"),
            "attachment; filename=\"safegrid-rejects-gongan-20261101.xlsx\""
        );
        for bad in ["报告.xlsx", "a\"b.xlsx", "a b.xlsx", "a/b.xlsx", ""] {
            assert_eq!(
                named(bad),
                "attachment; filename=\"safegrid.xlsx\"",
                "{bad}"
            );
        }
        assert_eq!(
            attachment(Vec::new(), "x.xlsx").headers()[header::CONTENT_TYPE],
            CONTENT_TYPE
        );
    }

    #[test]
    fn china_time_is_utc_plus_eight() {
        let time = chrono::DateTime::parse_from_rfc3339("2026-11-01T20:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(china_time(time), "2026-11-02 04:30:00");
    }
}
