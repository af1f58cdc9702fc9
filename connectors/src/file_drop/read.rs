//! Readers for dropped files: CSV (UTF-8, UTF-16 or GBK/GB18030), spreadsheets (XLSX, XLS
//! via calamine), JSON arrays and NDJSON.
//!
//! Guarantees: a reader never panics on any input; every data row comes back either as a
//! [`SourceRow`] with its line (CSV line, sheet row number, array position) or as a
//! [`MappingError`] naming the line; numbers in spreadsheets are never silently rounded: a
//! numeric cell that cannot be exact (more than 15 digits, as Excel keeps) is reported as
//! `cell_precision_lost` when the mapping uses its column.

use std::io::Cursor;

use calamine::{Data, Reader};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::mapping::{CellError, MappingError, SourceRow};

/// How CSV text is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoding {
    /// UTF-8 (with or without BOM) if the bytes are valid UTF-8, UTF-16 if they start with its
    /// BOM, else GB18030 (a superset of GBK and GB2312).
    #[default]
    Auto,
    /// UTF-8 only.
    #[serde(alias = "utf8")]
    Utf8,
    /// GBK (read with the GB18030 decoder, which accepts every GBK file).
    Gbk,
    /// GB18030.
    Gb18030,
}

/// A file format this folder reads, from the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    Csv,
    Tsv,
    Workbook,
    Json,
    Ndjson,
}

impl FileFormat {
    pub(crate) fn from_extension(ext: &str) -> Option<FileFormat> {
        match ext.to_ascii_lowercase().as_str() {
            "csv" => Some(FileFormat::Csv),
            "tsv" => Some(FileFormat::Tsv),
            "xlsx" | "xlsm" | "xls" | "xlsb" | "ods" => Some(FileFormat::Workbook),
            "json" => Some(FileFormat::Json),
            "ndjson" | "jsonl" => Some(FileFormat::Ndjson),
            _ => None,
        }
    }
}

/// Settings the readers need.
#[derive(Debug, Clone)]
pub(crate) struct ReadOptions {
    pub encoding: TextEncoding,
    pub delimiter: u8,
    pub sheet: Option<String>,
    pub header_row: Option<u32>,
}

/// One row read from a file: readable, or broken (with what could be read of it).
#[derive(Debug)]
pub(crate) enum ReadRow {
    Row(SourceRow),
    Broken(MappingError, Map<String, Value>),
}

/// A whole file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileError {
    pub code: &'static str,
    pub message: String,
}

fn file_error(code: &'static str, message: impl Into<String>) -> FileError {
    FileError {
        code,
        message: message.into(),
    }
}

fn broken(file: &str, line: usize, code: &str, message: impl Into<String>) -> MappingError {
    MappingError {
        source_file: file.to_owned(),
        line,
        field: String::new(),
        code: code.to_owned(),
        message: message.into(),
        source_id: None,
    }
}

/// Reads all rows of a file.
pub(crate) fn read_rows(
    file: &str,
    bytes: &[u8],
    format: FileFormat,
    options: &ReadOptions,
) -> Result<Vec<ReadRow>, FileError> {
    match format {
        FileFormat::Csv => read_csv(file, &decode(bytes, options.encoding)?, options.delimiter),
        FileFormat::Tsv => read_csv(file, &decode(bytes, options.encoding)?, b'\t'),
        FileFormat::Workbook => read_workbook(file, bytes, options),
        FileFormat::Json => read_json(file, &decode(bytes, options.encoding)?),
        FileFormat::Ndjson => Ok(read_ndjson(file, &decode(bytes, options.encoding)?)),
    }
}

/// Decodes text per the configured encoding.
pub(crate) fn decode(bytes: &[u8], encoding: TextEncoding) -> Result<String, FileError> {
    let utf8 = |b: &[u8]| -> Result<String, FileError> {
        let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
        String::from_utf8(b.to_vec())
            .map_err(|_| file_error("file_encoding", "the file is not valid UTF-8"))
    };
    let gb18030 = |b: &[u8]| -> Result<String, FileError> {
        let (text, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(b);
        if had_errors {
            return Err(file_error(
                "file_encoding",
                "the file is neither UTF-8 nor GBK/GB18030 text",
            ));
        }
        Ok(text.into_owned())
    };
    match encoding {
        TextEncoding::Utf8 => utf8(bytes),
        TextEncoding::Gbk | TextEncoding::Gb18030 => gb18030(bytes),
        TextEncoding::Auto => {
            if let Some((enc, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
                if enc != encoding_rs::UTF_8 {
                    let (text, had_errors) = enc.decode_without_bom_handling(&bytes[bom_len..]);
                    if had_errors {
                        return Err(file_error("file_encoding", "the file is not valid UTF-16"));
                    }
                    return Ok(text.into_owned());
                }
            }
            match utf8(bytes) {
                Ok(text) => Ok(text),
                Err(_) => gb18030(bytes),
            }
        }
    }
}

/// Header names: trimmed; empty ones become `column<N>` (1-based).
fn header_names(cells: impl Iterator<Item = String>) -> Vec<String> {
    cells
        .enumerate()
        .map(|(i, name)| {
            let name = name.trim().trim_start_matches('\u{FEFF}').trim().to_owned();
            if name.is_empty() {
                format!("column{}", i + 1)
            } else {
                name
            }
        })
        .collect()
}

fn read_csv(file: &str, text: &str, delimiter: u8) -> Result<Vec<ReadRow>, FileError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|_| file_error("csv_syntax", "the header line cannot be read"))?
        .clone();
    let headers = header_names(headers.iter().map(str::to_owned));
    if headers.is_empty() {
        return Err(file_error("csv_no_header", "the file has no header line"));
    }
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record
                    .position()
                    .map(|p| first_line_of_record(text, p))
                    .unwrap_or(line);
                if record.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                let mut fields = Map::new();
                for (name, value) in headers.iter().zip(record.iter()) {
                    fields
                        .entry(name.clone())
                        .or_insert_with(|| Value::String(value.to_owned()));
                }
                if record.len() != headers.len() {
                    rows.push(ReadRow::Broken(
                        broken(
                            file,
                            line,
                            "csv_field_count",
                            format!(
                                "the line has {} fields but the header has {}",
                                record.len(),
                                headers.len()
                            ),
                        ),
                        fields,
                    ));
                    continue;
                }
                rows.push(ReadRow::Row(SourceRow {
                    source_file: file.to_owned(),
                    line,
                    fields,
                    cell_errors: Vec::new(),
                    default_version: None,
                    tabular: true,
                }));
            }
            Err(err) => {
                let line = err
                    .position()
                    .map(|p| p.line() as usize)
                    .unwrap_or(line + 1);
                rows.push(ReadRow::Broken(
                    broken(file, line, "csv_syntax", "the line is not valid CSV"),
                    Map::new(),
                ));
                if !matches!(err.kind(), csv::ErrorKind::UnequalLengths { .. }) {
                    // Other errors (I/O, UTF-8) do not recover: stop at the first one.
                    break;
                }
            }
        }
    }
    Ok(rows)
}

/// The line a record starts on. The reader's position points before any blank lines it
/// skipped, so count those too.
fn first_line_of_record(text: &str, position: &csv::Position) -> usize {
    let start = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    let skipped = text
        .as_bytes()
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| **b == b'\n' || **b == b'\r')
        .filter(|b| **b == b'\n')
        .count();
    position.line() as usize + skipped
}

/// Largest magnitude a spreadsheet number can have and still hold every digit: Excel keeps
/// 15 significant digits, so from 10^15 on the last digits are gone.
const MAX_EXACT_CELL: f64 = 1e15;

/// A spreadsheet cell as text, or why it cannot be read faithfully.
fn cell_value(data: &Data) -> Result<Value, (&'static str, String)> {
    Ok(match data {
        Data::Empty => Value::Null,
        Data::String(s) => Value::String(s.clone()),
        Data::Int(i) => Value::String(i.to_string()),
        Data::Float(f) => {
            if !f.is_finite() {
                return Err(("cell_error", "the cell holds no finite number".to_owned()));
            }
            if f.fract() == 0.0 {
                if f.abs() >= MAX_EXACT_CELL {
                    return Err((
                        "cell_precision_lost",
                        "a number with more than 15 digits cannot be exact in a spreadsheet \
                         (ID numbers lose their last digits): format the column as text and \
                         export again"
                            .to_owned(),
                    ));
                }
                // |f| < 10^15 fits an i64 exactly.
                Value::String(format!("{}", *f as i64))
            } else {
                Value::String(f.to_string())
            }
        }
        Data::Bool(b) => Value::String(b.to_string()),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(t) if dt.is_datetime() => {
                if t.time() == chrono::NaiveTime::MIN {
                    Value::String(t.format("%Y-%m-%d").to_string())
                } else {
                    Value::String(t.format("%Y-%m-%d %H:%M:%S").to_string())
                }
            }
            _ => Value::String(dt.as_f64().to_string()),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => Value::String(s.clone()),
        Data::Error(_) => {
            return Err((
                "cell_error",
                "the cell holds a spreadsheet error (#N/A, #REF! …)".to_owned(),
            ))
        }
    })
}

fn read_workbook(
    file: &str,
    bytes: &[u8],
    options: &ReadOptions,
) -> Result<Vec<ReadRow>, FileError> {
    let mut workbook = calamine::open_workbook_auto_from_rs(Cursor::new(bytes.to_vec()))
        .map_err(|_| file_error("file_unreadable", "the file is not a readable workbook"))?;
    let range = match &options.sheet {
        Some(name) => workbook.worksheet_range(name).map_err(|_| {
            file_error(
                "sheet_missing",
                format!("the workbook has no sheet named `{name}`"),
            )
        })?,
        None => workbook
            .worksheet_range_at(0)
            .ok_or_else(|| file_error("sheet_missing", "the workbook has no sheet"))?
            .map_err(|_| file_error("file_unreadable", "the first sheet cannot be read"))?,
    };
    let Some((first_row, _)) = range.start() else {
        return Ok(Vec::new());
    };
    // 1-based sheet row numbers, as Excel shows them.
    let header_line = options.header_row.unwrap_or(first_row + 1) as usize;
    let mut rows_iter = range
        .rows()
        .enumerate()
        .map(|(i, cells)| (first_row as usize + i + 1, cells))
        .skip_while(|(line, _)| *line < header_line);
    let Some((_, header_cells)) = rows_iter.next() else {
        return Err(file_error(
            "sheet_no_header",
            "the sheet has no header row at the configured position",
        ));
    };
    let headers = header_names(header_cells.iter().map(|c| match cell_value(c) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }));
    let mut rows = Vec::new();
    for (line, cells) in rows_iter {
        let mut fields = Map::new();
        let mut cell_errors = Vec::new();
        let mut any = false;
        for (name, data) in headers.iter().zip(cells.iter()) {
            if fields.contains_key(name) {
                continue;
            }
            match cell_value(data) {
                Ok(value) => {
                    any |= !matches!(&value, Value::Null)
                        && !matches!(&value, Value::String(s) if s.trim().is_empty());
                    fields.insert(name.clone(), value);
                }
                Err((code, message)) => {
                    any = true;
                    fields.insert(name.clone(), Value::Null);
                    cell_errors.push(CellError {
                        column: name.clone(),
                        code,
                        message,
                    });
                }
            }
        }
        if !any {
            continue;
        }
        rows.push(ReadRow::Row(SourceRow {
            source_file: file.to_owned(),
            line,
            fields,
            cell_errors,
            default_version: None,
            tabular: true,
        }));
    }
    Ok(rows)
}

fn json_row(file: &str, line: usize, value: Value) -> ReadRow {
    match value {
        Value::Object(fields) => ReadRow::Row(SourceRow {
            source_file: file.to_owned(),
            line,
            fields,
            cell_errors: Vec::new(),
            default_version: None,
            tabular: false,
        }),
        _ => ReadRow::Broken(
            broken(
                file,
                line,
                "record_not_object",
                "each record must be a JSON object",
            ),
            Map::new(),
        ),
    }
}

fn read_json(file: &str, text: &str) -> Result<Vec<ReadRow>, FileError> {
    let trimmed = text.trim_start_matches('\u{FEFF}').trim_start();
    if !trimmed.starts_with('[') {
        // Not an array: NDJSON saved as .json, or one object.
        return Ok(read_ndjson(file, text));
    }
    let value: Value = serde_json::from_str(trimmed).map_err(|err| {
        file_error(
            "json_syntax",
            format!("the file is not valid JSON (line {})", err.line()),
        )
    })?;
    let Value::Array(items) = value else {
        return Err(file_error(
            "json_syntax",
            "expected a JSON array of records",
        ));
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| json_row(file, i + 1, item))
        .collect())
}

fn read_ndjson(file: &str, text: &str) -> Vec<ReadRow> {
    text.trim_start_matches('\u{FEFF}')
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| match serde_json::from_str::<Value>(line) {
            Ok(value) => json_row(file, i + 1, value),
            Err(_) => ReadRow::Broken(
                broken(file, i + 1, "json_syntax", "the line is not valid JSON"),
                Map::new(),
            ),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rows(result: Vec<ReadRow>) -> Vec<SourceRow> {
        result
            .into_iter()
            .filter_map(|r| match r {
                ReadRow::Row(row) => Some(row),
                ReadRow::Broken(..) => None,
            })
            .collect()
    }

    #[test]
    fn decodes_utf8_bom_gbk_and_utf16() {
        assert_eq!(
            decode("\u{FEFF}姓名".as_bytes(), TextEncoding::Auto).unwrap(),
            "姓名"
        );
        let (gbk, _, _) = encoding_rs::GBK.encode("姓名,张三");
        assert_eq!(decode(&gbk, TextEncoding::Auto).unwrap(), "姓名,张三");
        assert_eq!(decode(&gbk, TextEncoding::Gbk).unwrap(), "姓名,张三");
        assert_eq!(
            decode(&gbk, TextEncoding::Utf8).unwrap_err().code,
            "file_encoding"
        );
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "姓名".encode_utf16() {
            utf16.extend(unit.to_le_bytes());
        }
        assert_eq!(decode(&utf16, TextEncoding::Auto).unwrap(), "姓名");
    }

    #[test]
    fn csv_lines_count_from_the_header() {
        let text = "编号,姓名\n1,张三\n\n2,\"李\n四\"\n3\n4,王五\n";
        let read = read_csv("a.csv", text, b',').unwrap();
        let lines: Vec<(usize, bool)> = read
            .iter()
            .map(|r| match r {
                ReadRow::Row(row) => (row.line, true),
                ReadRow::Broken(e, _) => (e.line, false),
            })
            .collect();
        assert_eq!(lines, vec![(2, true), (4, true), (6, false), (7, true)]);
    }

    #[test]
    fn spreadsheet_numbers_keep_their_digits_or_fail() {
        assert_eq!(
            cell_value(&Data::Float(110105.0)).unwrap(),
            Value::String("110105".into())
        );
        assert_eq!(
            cell_value(&Data::Float(1.5)).unwrap(),
            Value::String("1.5".into())
        );
        assert_eq!(
            cell_value(&Data::Float(999_999_999_999_999.0)).unwrap(),
            Value::String("999999999999999".into())
        );
        assert_eq!(
            cell_value(&Data::Float(1.10105194912310e17)).unwrap_err().0,
            "cell_precision_lost"
        );
        assert_eq!(
            cell_value(&Data::String("11010519491231002X".into())).unwrap(),
            Value::String("11010519491231002X".into())
        );
    }

    #[test]
    fn json_arrays_and_ndjson() {
        let read = read_json("a.json", r#"[{"a":1}, 2, {"a":3}]"#).unwrap();
        assert_eq!(
            rows(read).iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let read = read_ndjson("a.ndjson", "{\"a\":1}\n\nnot json\n{\"a\":2}\n");
        assert_eq!(read.len(), 3);
        assert!(
            matches!(&read[1], ReadRow::Broken(e, _) if e.line == 3 && e.code == "json_syntax")
        );
        assert_eq!(read_json("b.json", "[1,").unwrap_err().code, "json_syntax");
    }
}
