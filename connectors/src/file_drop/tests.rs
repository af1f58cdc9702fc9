#![allow(clippy::unwrap_used)]

use std::path::Path;

use model::Record;

use crate::{build, ConnectorConfig, NdjsonSink};

/// A mapping for 民政 resident lists, as a department would write it.
fn config(folder: &Path, extra_source: &str) -> ConnectorConfig {
    let text = format!(
        r#"
department = "minzheng"
batch_size = 2

[source]
type = "file_drop"
folder = {folder:?}
settle_seconds = 0
{extra_source}

[mapping]
kind = "resident"
source_id = {{ template = "MZ-{{编号}}" }}

[mapping.fields]
id_number = "身份证号"
name = "姓名"
gender = "性别"
birth_date = "出生日期"
ethnicity = "民族"
phone = "联系电话"

[mapping.codes]
gender = "gb2261_gender"
ethnicity = "gb3304_ethnicity"

[mapping.transforms]
name = ["traditional_to_simplified"]

[mapping.constants]
grid = "110105001001003"

[[mapping.tags]]
column = "低保"
"#,
        folder = folder.display().to_string()
    );
    ConnectorConfig::from_toml(&text).unwrap()
}

fn assert_valid(sink: &NdjsonSink) {
    for (_, record) in &sink.records {
        Record::from_value(record).unwrap();
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

const RESIDENTS_CSV: &str = "\
编号,身份证号,姓名,性别,出生日期,民族,联系电话,低保
1,11010519491231002X,张三,2,19491231,01,13812345678,是
2,110105194912310021,李四,1,19491231,01,,否
3,110105198001010016,王五,3,19800101,01,,
4,110105198001010024,赵六,2,1980年13月01日,01,,
5,110105197511030514,钱七,1,1975-11-03,2,,是
";

#[tokio::test]
async fn gbk_csv_maps_good_rows_and_reports_bad_ones_by_line() {
    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(RESIDENTS_CSV);
    assert!(!unmappable);
    assert!(
        std::str::from_utf8(&gbk).is_err(),
        "the fixture must really be GBK"
    );
    std::fs::write(drop.path().join("低保名单.csv"), &gbk).unwrap();

    let config = config(drop.path(), "");
    let mut connector = build(&config, state.path()).unwrap();
    assert_eq!(connector.name(), "minzheng-file_drop");
    let mut sink = NdjsonSink::new();
    let report = connector.run(&mut sink).await.unwrap();

    assert_valid(&sink);
    assert_eq!(sink.source_ids(), vec!["MZ-1", "MZ-5"]);
    let first = &sink.records[0].1;
    assert_eq!(first["gender"], "female");
    assert_eq!(first["birth_date"], "1949-12-31");
    assert_eq!(first["ethnicity"], "汉族");
    assert_eq!(first["tags"], serde_json::json!(["低保"]));
    assert_eq!(sink.records[1].1["ethnicity"], "蒙古族");
    assert_eq!(sink.records[1].0.line, 6);
    // Version defaults to the file's modification time.
    assert!(first["version"].as_str().unwrap().ends_with('Z'));

    let failures: Vec<(usize, &str, &str)> = sink
        .failures
        .iter()
        .map(|f| (f.line, f.code.as_str(), f.field.as_str()))
        .collect();
    assert_eq!(
        failures,
        vec![
            (3, "id_number_checksum", "id_number"),
            (4, "mapping_unknown_code", "gender"),
            (5, "mapping_bad_date", "birth_date"),
        ]
    );
    for failure in &sink.failures {
        assert_eq!(failure.source_file, "低保名单.csv");
        assert!(failure.source_id.is_some());
        assert!(!failure.message.contains("110105194912310021"));
    }
    assert_eq!(report.rows_read, 5);
    assert_eq!(report.records_mapped, 2);
    assert_eq!(report.mapping_failures, 3);
    assert_eq!(report.batches, 3, "batch_size = 2");
    assert_eq!(report.files_processed, 1);

    // Moved aside with a timestamp suffix; nothing left to read.
    assert!(files_in(drop.path()).is_empty());
    let processed = files_in(&drop.path().join("processed"));
    assert_eq!(processed.len(), 1);
    assert!(processed[0].starts_with("低保名单.") && processed[0].ends_with("Z.csv"));
    let again = connector.run(&mut sink).await.unwrap();
    assert_eq!((again.rows_read, again.files_processed), (0, 0));

    // The same content under another name, to a fresh connector: never ingested twice.
    std::fs::write(drop.path().join("低保名单(1).csv"), &gbk).unwrap();
    let mut restarted = build(&config, state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    let report = restarted.run(&mut sink).await.unwrap();
    assert_eq!((report.files_duplicate, report.rows_read), (1, 0));
    assert!(sink.records.is_empty());
    assert!(files_in(drop.path()).is_empty());
}

#[tokio::test]
async fn xlsx_keeps_id_digits_simplifies_names_and_reads_dates() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut workbook = Workbook::new();
    workbook
        .add_worksheet()
        .set_name("说明")
        .unwrap()
        .write_string(0, 0, "本表为低保人员名单")
        .unwrap();
    let sheet = workbook.add_worksheet();
    sheet.set_name("居民").unwrap();
    let date_format = Format::new().set_num_format("yyyy-mm-dd");
    for (col, title) in [
        "编号",
        "身份证号",
        "姓名",
        "性别",
        "出生日期",
        "民族",
        "低保",
        "登记日期",
    ]
    .iter()
    .enumerate()
    {
        sheet.write_string(0, col as u16, *title).unwrap();
    }
    // Row 2: traditional characters, a full-width ID stored as text, a real Excel date.
    sheet.write_number(1, 0, 1.0).unwrap();
    sheet
        .write_string(1, 1, "１１０１０５１９４９１２３１００２Ｘ")
        .unwrap();
    sheet.write_string(1, 2, "張麗紅").unwrap();
    sheet.write_number(1, 3, 2.0).unwrap();
    sheet
        .write_datetime_with_format(
            1,
            4,
            ExcelDateTime::from_ymd(1949, 12, 31).unwrap(),
            &date_format,
        )
        .unwrap();
    sheet.write_number(1, 5, 1.0).unwrap();
    sheet.write_string(1, 6, "是").unwrap();
    sheet.write_number(1, 7, 45597.0).unwrap();
    // Row 3: an 18-digit ID typed as a number: Excel kept only 15 digits.
    sheet.write_number(2, 0, 2.0).unwrap();
    sheet.write_number(2, 1, 1.10105194912310e17).unwrap();
    sheet.write_string(2, 2, "陳偉").unwrap();
    sheet.write_number(2, 3, 1.0).unwrap();
    // Row 4: blank, skipped. Row 5: a resident without an ID, found by name.
    sheet.write_number(4, 0, 3.0).unwrap();
    sheet.write_string(4, 2, "劉國華").unwrap();
    sheet.write_string(4, 3, "1").unwrap();
    std::fs::write(
        drop.path().join("民政居民.xlsx"),
        workbook.save_to_buffer().unwrap(),
    )
    .unwrap();

    let mut config = config(drop.path(), "sheet = \"居民\"");
    config
        .mapping
        .fields
        .insert("attributes.登记日期".to_owned(), "登记日期".to_owned());
    config
        .mapping
        .dates
        .insert("attributes.登记日期".to_owned(), "excel_serial".to_owned());
    config.mapping.fields.remove("phone");
    let mut connector = build(&config, state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    connector.run(&mut sink).await.unwrap();

    assert_valid(&sink);
    assert_eq!(sink.source_ids(), vec!["MZ-1", "MZ-3"]);
    let first = &sink.records[0].1;
    assert_eq!(first["id_number"], "11010519491231002X");
    assert_eq!(first["name"], "张丽红");
    assert_eq!(first["birth_date"], "1949-12-31");
    assert_eq!(first["attributes"]["登记日期"], "2024-11-01");
    assert_eq!(first["tags"], serde_json::json!(["低保"]));
    assert_eq!(sink.records[1].1["name"], "刘国华");
    assert_eq!(sink.records[1].0.line, 5);

    assert_eq!(sink.failures.len(), 1);
    let failure = &sink.failures[0];
    assert_eq!(
        (failure.line, failure.code.as_str(), failure.field.as_str()),
        (3, "cell_precision_lost", "id_number")
    );
    assert_eq!(failure.source_file, "民政居民.xlsx");
    assert!(!failure.message.contains("110105"));
}

#[tokio::test]
async fn unsettled_files_wait_and_unreadable_files_reach_quarantine() {
    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let ndjson = "{\"编号\":\"9\",\"姓名\":\"孙八\",\"性别\":\"1\",\"低保\":\"否\"}\n";
    std::fs::write(drop.path().join("a.ndjson"), ndjson).unwrap();
    std::fs::write(drop.path().join("broken.xlsx"), b"not a workbook").unwrap();
    std::fs::write(drop.path().join("notes.txt"), b"ignored").unwrap();

    let mut waiting = config(drop.path(), "");
    if let crate::SourceConfig::FileDrop(source) = &mut waiting.source {
        source.settle_seconds = 3600;
    }
    let mut sink = NdjsonSink::new();
    let report = build(&waiting, state.path())
        .unwrap()
        .run(&mut sink)
        .await
        .unwrap();
    assert_eq!((report.files_waiting, report.rows_read), (2, 0));

    let report = build(&config(drop.path(), ""), state.path())
        .unwrap()
        .run(&mut sink)
        .await
        .unwrap();
    assert_eq!(report.files_processed, 2);
    assert_valid(&sink);
    assert_eq!(sink.source_ids(), vec!["MZ-9"]);
    // JSON rows may leave columns out: no 民族, no 身份证号.
    assert!(sink.records[0].1.get("ethnicity").is_none());
    assert_eq!(sink.failures.len(), 1);
    assert_eq!(
        (sink.failures[0].line, sink.failures[0].code.as_str()),
        (0, "file_unreadable")
    );
    assert_eq!(files_in(drop.path()), vec!["notes.txt"]);
}
