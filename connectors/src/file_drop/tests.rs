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

/// A file outside the drop folder (another department's list, or a system file).
const SECRET_CSV: &str = "编号,身份证号,姓名,性别\n77,110105197511030514,机密人员,1\n";
const GOOD_CSV: &str = "编号,身份证号,姓名,性别,出生日期,民族,联系电话,低保\n\
1,11010519491231002X,张三,2,19491231,01,13812345678,是\n";

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Everything the sink received, as text: records, failures and their messages.
fn everything_delivered(sink: &NdjsonSink) -> String {
    let mut text = sink.to_ndjson();
    for failure in &sink.failures {
        text.push_str(&format!("{failure} {failure:?}\n"));
    }
    text
}

fn failures(sink: &NdjsonSink) -> Vec<(String, usize, String)> {
    let mut out: Vec<(String, usize, String)> = sink
        .failures
        .iter()
        .map(|f| (f.source_file.clone(), f.line, f.code.clone()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_symlink_in_the_folder_is_reported_and_its_target_never_read() {
    let drop = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.csv");
    std::fs::write(&secret, SECRET_CSV).unwrap();
    std::os::unix::fs::symlink(&secret, drop.path().join("leak.csv")).unwrap();
    std::os::unix::fs::symlink(outside.path(), drop.path().join("other-dept.csv")).unwrap();
    std::fs::write(drop.path().join("good.csv"), GOOD_CSV).unwrap();

    let mut connector = build(&config(drop.path(), ""), state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    let report = connector.run(&mut sink).await.unwrap();

    assert_eq!(sink.source_ids(), vec!["MZ-1"], "the regular file is read");
    assert_eq!(
        failures(&sink),
        vec![
            ("leak.csv".to_owned(), 0, "file_not_regular".to_owned()),
            (
                "other-dept.csv".to_owned(),
                0,
                "file_not_regular".to_owned()
            ),
        ]
    );
    for failure in &sink.failures {
        assert!(failure.message.contains("symbolic link"), "{failure}");
    }
    let delivered = everything_delivered(&sink);
    for secret_value in ["机密人员", "110105197511030514", "MZ-77", "secret.csv"] {
        assert!(!delivered.contains(secret_value), "{secret_value} leaked");
    }
    assert_eq!(
        (
            report.files_processed,
            report.files_refused,
            report.rows_read
        ),
        (1, 2, 3)
    );

    // The links themselves were moved aside; their targets are untouched.
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), SECRET_CSV);
    let processed = drop.path().join("processed");
    let moved_links = std::fs::read_dir(&processed)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().unwrap().is_symlink())
        .count();
    assert_eq!(moved_links, 2);
    assert!(std::fs::symlink_metadata(drop.path().join("leak.csv")).is_err());

    // Reported once: the next run finds nothing.
    let again = connector.run(&mut sink).await.unwrap();
    assert_eq!((again.rows_read, again.files_refused), (0, 0));
}

#[tokio::test]
async fn fifos_folders_and_sockets_named_like_data_files_are_reported_not_read() {
    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    mkfifo(&drop.path().join("pipe.csv"));
    std::fs::create_dir(drop.path().join("folder.csv")).unwrap();
    std::fs::write(drop.path().join("folder.csv").join("inner.csv"), SECRET_CSV).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(drop.path().join("sock.ndjson")).unwrap();
    // The processed folder of an earlier run is not reported.
    std::fs::create_dir(drop.path().join("processed")).unwrap();

    let mut connector = build(&config(drop.path(), ""), state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    // A FIFO that was read would block the run for ever: bound it.
    let report = tokio::time::timeout(std::time::Duration::from_secs(20), connector.run(&mut sink))
        .await
        .expect("a FIFO must never block a run")
        .unwrap();

    assert!(sink.records.is_empty());
    assert_eq!(
        failures(&sink),
        vec![
            ("folder.csv".to_owned(), 0, "file_not_regular".to_owned()),
            ("pipe.csv".to_owned(), 0, "file_not_regular".to_owned()),
            ("sock.ndjson".to_owned(), 0, "file_not_regular".to_owned()),
        ]
    );
    let messages: Vec<&str> = sink.failures.iter().map(|f| f.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("a folder")),
        "{messages:?}"
    );
    assert!(messages.iter().any(|m| m.contains("FIFO")), "{messages:?}");
    assert!(
        messages.iter().any(|m| m.contains("socket")),
        "{messages:?}"
    );
    assert!(!everything_delivered(&sink).contains("机密人员"));
    assert_eq!((report.files_refused, report.files_processed), (3, 0));
    let left: Vec<String> = std::fs::read_dir(drop.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["processed"]);
}

#[test]
fn opening_refuses_links_fifos_and_folders_swapped_in_after_listing() {
    use super::open::{read_settled, Opened};
    use std::time::Duration;

    let drop = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.csv");
    std::fs::write(&secret, SECRET_CSV).unwrap();
    let regular = drop.path().join("a.csv");
    std::fs::write(&regular, GOOD_CSV).unwrap();
    let link = drop.path().join("b.csv");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let fifo = drop.path().join("c.csv");
    mkfifo(&fifo);
    let folder = drop.path().join("d.csv");
    std::fs::create_dir(&folder).unwrap();

    // What the run does with each entry after listing it, whatever the entry now is.
    let open = |path: std::path::PathBuf| {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(read_settled(&path, Duration::ZERO, 1 << 20));
        });
        result
            .recv_timeout(Duration::from_secs(20))
            .expect("opening must never block")
            .unwrap()
    };
    match open(regular) {
        Opened::Settled { bytes, .. } => assert_eq!(bytes, GOOD_CSV.as_bytes()),
        other => panic!("a regular file is read: {other:?}"),
    }
    for (path, what) in [(link, "symbolic link"), (fifo, "FIFO"), (folder, "folder")] {
        match open(path.clone()) {
            Opened::Refused(refusal) => {
                assert_eq!(refusal.code, "file_not_regular", "{}", path.display());
                assert!(refusal.message.contains(what), "{}", refusal.message);
                assert!(!refusal.message.contains("机密人员"));
            }
            other => panic!("{} must be refused: {other:?}", path.display()),
        }
    }
    assert!(matches!(
        open(drop.path().join("gone.csv")),
        Opened::Vanished
    ));
}

#[tokio::test]
async fn a_file_over_max_file_bytes_is_refused_unread() {
    let drop = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let small = "{\"编号\":\"9\",\"姓名\":\"孙八\",\"性别\":\"1\"}\n";
    assert!(small.len() <= 100 && RESIDENTS_CSV.len() > 100);
    std::fs::write(drop.path().join("big.csv"), RESIDENTS_CSV).unwrap();
    std::fs::write(drop.path().join("small.ndjson"), small).unwrap();

    let mut connector = build(&config(drop.path(), "max_file_bytes = 100"), state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    let report = connector.run(&mut sink).await.unwrap();

    assert_eq!(
        sink.source_ids(),
        vec!["MZ-9"],
        "only the small file is read"
    );
    assert_eq!(
        failures(&sink),
        vec![("big.csv".to_owned(), 0, "file_too_large".to_owned())]
    );
    let message = &sink.failures[0].message;
    assert!(
        message.contains("max_file_bytes = 100")
            && message.contains(&RESIDENTS_CSV.len().to_string()),
        "{message}"
    );
    assert!(!everything_delivered(&sink).contains("张三"));
    assert_eq!(
        (
            report.files_refused,
            report.files_processed,
            report.rows_read
        ),
        (1, 1, 2)
    );
    // Moved aside whole, for the department to split and drop again.
    let processed = drop.path().join("processed");
    let moved = files_in(&processed)
        .into_iter()
        .find(|name| name.starts_with("big."))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(processed.join(moved)).unwrap(),
        RESIDENTS_CSV
    );

    // The default cap is 256 MiB; a cap of 0 is a configuration error.
    let default = config(drop.path(), "");
    let crate::SourceConfig::FileDrop(source) = &default.source else {
        unreachable!()
    };
    assert_eq!(source.max_file_bytes, 256 * 1024 * 1024);
    let Err(err) = build(&config(drop.path(), "max_file_bytes = 0"), state.path()) else {
        panic!("max_file_bytes = 0 must be refused");
    };
    assert_eq!(err.code(), "connector_config");
    assert!(err.to_string().contains("max_file_bytes"), "{err}");
}
