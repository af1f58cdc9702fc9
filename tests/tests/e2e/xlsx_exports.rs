//! Excel workbooks of a resident's access report and of a department's quarantine
//! (`format=xlsx`), read back with calamine: the same facts as the JSON (the report's
//! withheld case accesses stay out, the quarantine's messages in the reader's language),
//! nothing personal beyond it, and the same refusals as the JSON for the same callers.

use calamine::Reader as _;
use chrono::{DateTime, FixedOffset, Utc};
use e2e_tests::{id, TestApp, GRID, STREET};
use serde_json::{json, Value};

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// A GET with a bearer token, optionally a purpose and an `Accept-Language`.
async fn fetch(
    app: &TestApp,
    path: &str,
    token: &str,
    language: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(format!("{}{path}", app.url))
        .bearer_auth(token);
    if let Some(language) = language {
        request = request.header("accept-language", language);
    }
    request.send().await.expect("the request is sent")
}

/// A workbook answer: its headers checked, its bytes.
struct Download {
    file_name: String,
    content_language: Option<String>,
    next_cursor: Option<String>,
    bytes: Vec<u8>,
}

async fn download(response: reqwest::Response) -> Download {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let disposition = header("content-disposition").unwrap_or_default();
    let content_language = header("content-language");
    let next_cursor = header("x-next-cursor");
    assert_eq!(status, 200, "{content_type} {disposition}");
    assert_eq!(content_type, XLSX);
    let file_name = disposition
        .strip_prefix("attachment; filename=\"")
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("an attachment: {disposition}"))
        .to_owned();
    let bytes = response.bytes().await.expect("the workbook").to_vec();
    Download {
        file_name,
        content_language,
        next_cursor,
        bytes,
    }
}

/// Every sheet of a workbook: name and rows of cell texts.
fn sheets(bytes: &[u8]) -> Vec<(String, Vec<Vec<String>>)> {
    let mut workbook: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec())).expect("an xlsx");
    let names = workbook.sheet_names();
    names
        .into_iter()
        .map(|name| {
            let range = workbook.worksheet_range(&name).expect("a sheet");
            let formulas = workbook.worksheet_formula(&name).expect("its formulas");
            assert!(
                formulas.used_cells().all(|(_, _, f)| f.is_empty()),
                "{name}: a workbook holds no formula"
            );
            let rows = range
                .rows()
                .map(|row| row.iter().map(ToString::to_string).collect())
                .collect();
            (name, rows)
        })
        .collect()
}

fn sheet<'a>(all: &'a [(String, Vec<Vec<String>>)], name: &str) -> &'a [Vec<String>] {
    &all.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no sheet {name} among {:?}", all.iter().map(|s| &s.0)))
        .1
}

/// The value beside `key` on a summary sheet.
fn summary<'a>(rows: &'a [Vec<String>], key: &str) -> &'a str {
    rows.iter()
        .find(|r| r.first().is_some_and(|k| k == key))
        .and_then(|r| r.get(1))
        .unwrap_or_else(|| panic!("no {key} in {rows:?}"))
}

/// The column `title` of a table's rows (its header row first).
fn column(rows: &[Vec<String>], title: &str) -> Vec<String> {
    let at = rows[0]
        .iter()
        .position(|h| h == title)
        .unwrap_or_else(|| panic!("no column {title} in {:?}", rows[0]));
    rows[1..].iter().map(|r| r[at].clone()).collect()
}

fn has_chinese(text: &str) -> bool {
    text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// An RFC 3339 time as the workbooks write it for Chinese readers (UTC+8).
fn china_time(rfc3339: &str) -> String {
    let time: DateTime<Utc> = DateTime::parse_from_rfc3339(rfc3339)
        .expect("an RFC 3339 time")
        .with_timezone(&Utc);
    time.with_timezone(&FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn every_cell(all: &[(String, Vec<Vec<String>>)]) -> Vec<&String> {
    all.iter()
        .flat_map(|(_, rows)| rows.iter().flatten())
        .collect()
}

/// A resident published by gongan, read by a grid worker and (under a case id) by a street
/// officer. Returns the ID number and the unified id.
async fn resident_with_accesses(app: &TestApp) -> (String, String) {
    let number = id("11010519800101123");
    let line = json!({"kind":"resident","source_id":"GA-XL-1","version":"2026-11-01T08:00:00Z",
        "id_number":number,"name":"钱报告","phone":"13812345678","grid":GRID});
    let receipt = app.ingest("gongan", format!("{line}\n")).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    let unified = app.unified_id("resident", "gongan", "GA-XL-1").await;
    let worker = app.token("grid_worker", &[GRID], None);
    let visit = app
        .get_traced(
            &format!("/v1/residents/{unified}"),
            &worker,
            Some("elderly_care"),
            None,
        )
        .await;
    assert_eq!(visit.status, 200);
    let investigator = app.token("street_officer", &[STREET], None);
    let case = app
        .get_traced(
            &format!("/v1/residents/{unified}"),
            &investigator,
            Some("case_investigation"),
            Some("CASE-2026-XL"),
        )
        .await;
    assert_eq!(case.status, 200);
    (number, unified)
}

const REPORT_HEADER: [&str; 8] = [
    "访问时间（北京时间）",
    "单位",
    "部门代码",
    "角色",
    "操作",
    "用途",
    "结果",
    "明文显示的字段",
];

#[tokio::test]
async fn a_residents_report_as_a_workbook_holds_the_json_accesses_in_chinese() {
    let app = TestApp::spawn().await;
    let (number, unified) = resident_with_accesses(&app).await;
    let officer = app.compliance();

    let (status, report) = app
        .get(
            &format!("/v1/audit/residents/{unified}/report"),
            &officer,
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deferred"], 1, "{report}");
    let accesses = report["accesses"].as_array().expect("accesses").clone();

    // Asked by ID number: the same resident, and the number reaches neither the file's name
    // nor any cell.
    let file = download(
        fetch(
            &app,
            &format!("/v1/audit/residents/{number}/report?format=xlsx"),
            &officer,
            None,
        )
        .await,
    )
    .await;
    let name_shape = file
        .file_name
        .strip_prefix("safegrid-resident-report-")
        .and_then(|rest| rest.strip_suffix(".xlsx"))
        .is_some_and(|day| day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()));
    assert!(name_shape, "{}", file.file_name);
    let all = sheets(&file.bytes);
    let rows = sheet(&all, "访问记录");
    assert_eq!(rows[0], REPORT_HEADER, "Chinese headings");
    // The JSON report above is itself an access, listed now after the JSON's ones.
    assert_eq!(rows.len(), 1 + accesses.len() + 1, "{rows:?}");
    for (access, row) in accesses.iter().zip(&rows[1..]) {
        assert_eq!(row[0], china_time(access["time"].as_str().expect("a time")));
        assert_eq!(row[1], access["organisation"].as_str().expect("an office"));
        assert_eq!(row[5], access["purpose"].as_str().unwrap_or_default());
    }
    let last = rows.last().expect("a row");
    assert_eq!(
        (last[1].as_str(), last[4].as_str()),
        ("合规审计人员", "生成访问报告")
    );
    let read = rows
        .iter()
        .find(|r| r[5] == "elderly_care")
        .unwrap_or_else(|| panic!("the grid worker's read in {rows:?}"));
    assert_eq!(
        (read[1].as_str(), read[3].as_str(), read[4].as_str()),
        ("网格员", "网格员", "查看居民档案")
    );
    assert_eq!(read[6], "允许（部分信息遮蔽）", "masked, in words");
    assert!(!read[7].is_empty(), "the fields shown in clear");

    // The case access stays out, exactly as in the JSON; the summary counts it.
    assert!(
        !rows.iter().any(|r| r[5] == "case_investigation"),
        "{rows:?}"
    );
    let facts = sheet(&all, "概况");
    assert_eq!(summary(facts, "居民统一编号"), unified);
    assert_eq!(summary(facts, "暂缓列出的访问次数"), "1");
    assert_eq!(summary(facts, "案件访问暂缓天数"), "90");
    assert_eq!(
        summary(facts, "列出的访问次数"),
        (accesses.len() + 1).to_string()
    );
    assert_eq!(
        summary(facts, "最早访问时间（北京时间）"),
        rows[1][0].as_str()
    );

    // Nothing personal: no ID number (whole or its last digits with the birth date), no
    // worker's id or name, no case id.
    let cells = every_cell(&all);
    for private in [
        number.as_str(),
        &number[6..],
        "test-grid_worker",
        "测试grid_worker",
        "test-street_officer",
        "CASE-2026-XL",
        "钱报告",
    ] {
        assert!(
            !cells.iter().any(|c| c.contains(private)),
            "{private} in the workbook"
        );
        assert!(!file.file_name.contains(private));
    }

    // Without deferral the case access is listed, as in the JSON.
    let open = download(
        fetch(
            &app,
            &format!("/v1/audit/residents/{unified}/report?format=xlsx&defer_days=0"),
            &officer,
            None,
        )
        .await,
    )
    .await;
    let open = sheets(&open.bytes);
    let case = sheet(&open, "访问记录")
        .iter()
        .find(|r| r[5] == "case_investigation")
        .unwrap_or_else(|| panic!("the case access in {open:?}"));
    assert_eq!(case[1], "街道工作人员");
    assert_eq!(summary(sheet(&open, "概况"), "暂缓列出的访问次数"), "0");

    // Each workbook is on the record as a file that left the system.
    let (_, found) = app
        .get(
            &format!("/v1/audit/records?resident={unified}&action=audit_resident_report"),
            &officer,
            None,
        )
        .await;
    let outcomes: Vec<&str> = found["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "format=xlsx").count(),
        2,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
}

#[tokio::test]
async fn the_report_workbook_is_refused_like_the_json_one() {
    let app = TestApp::spawn().await;
    let (_, unified) = resident_with_accesses(&app).await;
    let path = format!("/v1/audit/residents/{unified}/report");
    for token in [
        app.token("grid_worker", &[GRID], None),
        app.token("street_officer", &[STREET], None),
        app.publisher("gongan"),
        app.token("security_admin", &[STREET], None),
    ] {
        let (json_status, json) = app.get(&path, &token, None).await;
        let (xlsx_status, xlsx) = app.get(&format!("{path}?format=xlsx"), &token, None).await;
        assert_eq!(
            (json_status, json["error"]["code"].as_str()),
            (403, Some("role_cannot_read_audit"))
        );
        assert_eq!(
            (xlsx_status, xlsx["error"]["code"].as_str()),
            (403, Some("role_cannot_read_audit")),
            "{xlsx}"
        );
    }
    let unauthenticated = app
        .client
        .get(format!("{}{path}?format=xlsx", app.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(unauthenticated.status(), 401);

    let officer = app.compliance();
    for format in ["pdf", "XLSX", "ndjson", "xlsx%00"] {
        let (status, body) = app
            .get(&format!("{path}?format={format}"), &officer, None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("format_invalid")),
            "{format}: {body}"
        );
    }
    let (status, body) = app
        .get(&format!("{path}?format=json"), &officer, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["resident"], unified.as_str());
    // The refusal is in Chinese for a Chinese reader, with the same code.
    let response = fetch(&app, &format!("{path}?format=pdf"), &officer, Some("zh-CN")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "format_invalid");
    assert!(has_chinese(body["error"]["message"].as_str().unwrap_or("")));
}

/// Publishes two bad gongan records and one good, and files two rejects a connector found:
/// a mapping failure, and one of a department's own code whose message looks like a formula.
/// Returns the bad ID number and the bad name.
async fn quarantine_some(app: &TestApp) -> (String, String) {
    let bad_number = "110105194912310021".to_owned();
    let bad_name = "孙退回".to_owned();
    let batch = [
        json!({"kind":"resident","source_id":"GA-Q-1","version":"2026-11-01T08:00:00Z",
            "id_number":bad_number,"name":bad_name,"grid":GRID}),
        json!({"kind":"resident","source_id":"GA-Q-2","version":"2026-11-01T08:00:00Z",
            "id_number":id("11010519700101001"),"name":"周正常","grid":GRID,"hobby":"x"}),
        json!({"kind":"resident","source_id":"GA-Q-3","version":"2026-11-01T08:00:00Z",
            "id_number":id("11010519700101002"),"name":"吴正常","grid":GRID}),
    ]
    .iter()
    .map(|line| format!("{line}\n"))
    .collect::<String>();
    let receipt = app.ingest("gongan", batch).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    let filed = app
        .client
        .post(format!("{}/v1/ingest/gongan/rejects", app.url))
        .bearer_auth(app.publisher("gongan"))
        .header("accept-language", "zh-CN")
        .json(&json!([
            {"source_file":"旧系统导出.csv","line":7,"code":"legacy_export_error",
             "message":"=HYPERLINK(\"http://evil.example\",\"click\")","row":{"姓名":"郑旧"}},
            {"source_file":"旧系统导出.csv","line":9,"code":"mapping_bad_date","field":"birth_date",
             "message":"column `出生日期` is not a date","row":{"姓名":"王日期"}},
        ]))
        .send()
        .await
        .expect("sent");
    assert_eq!(filed.status(), 200);
    assert_eq!(filed.headers()["content-language"], "zh-CN");
    // The receipt of the filing is in Chinese by code too; a department's own code keeps
    // its text.
    let filed: Value = filed.json().await.expect("a receipt");
    let messages: Vec<(&str, &str)> = filed["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap_or_default(),
                r["message"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(messages.len(), 2, "{filed}");
    for (code, message) in messages {
        match code {
            "mapping_bad_date" => assert!(has_chinese(message), "{message}"),
            _ => assert!(message.starts_with("=HYPERLINK("), "{message}"),
        }
    }
    (bad_number, bad_name)
}

#[tokio::test]
async fn the_quarantine_is_read_in_chinese_and_as_a_workbook_without_the_records() {
    let app = TestApp::spawn().await;
    let (bad_number, bad_name) = quarantine_some(&app).await;
    let publisher = app.publisher("gongan");
    let path = "/v1/ingest/gongan/rejects";

    // The JSON list: English by default, Chinese by code for a Chinese reader.
    let english: Value = fetch(&app, path, &publisher, None)
        .await
        .json()
        .await
        .expect("json");
    let response = fetch(&app, path, &publisher, Some("zh-CN,zh;q=0.9,en;q=0.8")).await;
    assert_eq!(response.headers()["content-language"], "zh-CN");
    let chinese: Value = response.json().await.expect("json");
    let by_code = |page: &Value| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = page["rejects"]
            .as_array()
            .expect("rejects")
            .iter()
            .map(|r| {
                (
                    r["code"].as_str().unwrap_or_default().to_owned(),
                    r["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let (english, chinese) = (by_code(&english), by_code(&chinese));
    let codes: Vec<&str> = english.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        codes,
        [
            "field_unknown",
            "id_number_checksum",
            "legacy_export_error",
            "mapping_bad_date"
        ]
    );
    for ((code, en), (_, zh)) in english.iter().zip(&chinese) {
        if code == "legacy_export_error" {
            assert_eq!(en, zh, "a department's own code keeps its text");
        } else {
            assert!(en != zh && has_chinese(zh), "{code}: {en} / {zh}");
        }
    }
    // The JSON shows the department its own record; the workbook below does not.
    let full = fetch(&app, path, &publisher, None)
        .await
        .text()
        .await
        .expect("text");
    assert!(full.contains(&bad_number) && full.contains(&bad_name));

    let zh = download(
        fetch(
            &app,
            &format!("{path}?format=xlsx"),
            &publisher,
            Some("zh-CN"),
        )
        .await,
    )
    .await;
    assert_eq!(zh.content_language.as_deref(), Some("zh-CN"));
    let day = zh
        .file_name
        .strip_prefix("safegrid-rejects-gongan-")
        .and_then(|rest| rest.strip_suffix(".xlsx"))
        .unwrap_or_else(|| panic!("{}", zh.file_name));
    assert!(day.len() == 8 && day.bytes().all(|b| b.is_ascii_digit()));
    let all = sheets(&zh.bytes);
    let rows = sheet(&all, "退回记录");
    assert_eq!(rows.len(), 1 + 4, "{rows:?}");
    assert!(rows[0].iter().all(|h| has_chinese(h)), "{:?}", rows[0]);
    let mut got: Vec<(String, String)> = column(rows, "原因代码")
        .into_iter()
        .zip(column(rows, "原因说明"))
        .collect();
    got.sort();
    assert_eq!(got, chinese, "the JSON's codes and Chinese messages");
    let lines = column(rows, "行号");
    assert!(lines.contains(&"7".to_owned()), "{lines:?}");
    assert!(column(rows, "源记录编号").contains(&"GA-Q-1".to_owned()));
    assert!(column(rows, "状态").iter().all(|s| s == "待处理"));
    assert_eq!(summary(sheet(&all, "概况"), "条数"), "4");
    assert!(summary(sheet(&all, "概况"), "部门").contains("gongan"));
    // The formula-looking message is a text cell (`sheets` asserts no formula at all).
    assert!(got.iter().any(|(_, m)| m.starts_with("=HYPERLINK(")));
    // Less than the JSON: no record content, so no ID number and no name.
    for cell in every_cell(&all) {
        for private in [
            bad_number.as_str(),
            bad_name.as_str(),
            "周正常",
            "郑旧",
            "王日期",
        ] {
            assert!(!cell.contains(private), "{private} in {cell}");
        }
    }

    // In English for an English reader, messages as the JSON gives them.
    let en = download(fetch(&app, &format!("{path}?format=xlsx"), &publisher, None).await).await;
    let all = sheets(&en.bytes);
    let rows = sheet(&all, "Rejected records");
    let mut got: Vec<(String, String)> = column(rows, "Reason code")
        .into_iter()
        .zip(column(rows, "Message"))
        .collect();
    got.sort();
    assert_eq!(got, english);
    assert!(column(rows, "Status").iter().all(|s| s == "open"));

    // Paged like the JSON: the cursor of the next page in a header and on the summary.
    let first = download(
        fetch(
            &app,
            &format!("{path}?format=xlsx&limit=2"),
            &publisher,
            Some("zh-CN"),
        )
        .await,
    )
    .await;
    let cursor = first.next_cursor.clone().expect("a next page");
    let first_sheets = sheets(&first.bytes);
    assert_eq!(sheet(&first_sheets, "退回记录").len(), 1 + 2);
    assert_eq!(summary(sheet(&first_sheets, "概况"), "下一页游标"), cursor);
    let rest = download(
        fetch(
            &app,
            &format!("{path}?format=xlsx&cursor={cursor}"),
            &publisher,
            Some("zh-CN"),
        )
        .await,
    )
    .await;
    assert!(rest.next_cursor.is_none());
    assert_eq!(sheet(&sheets(&rest.bytes), "退回记录").len(), 1 + 2);

    // Each read, JSON or workbook, is on the record; the workbooks say so.
    let (_, found) = app
        .get(
            "/v1/audit/records?action=read_rejects&limit=500",
            &app.compliance(),
            None,
        )
        .await;
    let outcomes: Vec<&str> = found["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "format=xlsx").count(),
        4,
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn the_quarantine_workbook_is_refused_like_the_json_one() {
    let app = TestApp::spawn().await;
    quarantine_some(&app).await;
    let path = "/v1/ingest/gongan/rejects";
    // Another department's publisher: the same 404 as for a missing list.
    let other = app.publisher("minzheng");
    for query in ["", "?format=xlsx"] {
        let (status, body) = app.get(&format!("{path}{query}"), &other, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{query}: {body}"
        );
    }
    // Roles that do not publish for a department: refused before anything is read.
    for token in [
        app.token("grid_worker", &[GRID], None),
        app.compliance(),
        app.token("dept_analyst", &[STREET], Some("gongan")),
    ] {
        for query in ["", "?format=xlsx"] {
            let (status, body) = app.get(&format!("{path}{query}"), &token, None).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("role_cannot_publish")),
                "{query}: {body}"
            );
        }
    }
    let publisher = app.publisher("gongan");
    for format in ["pdf", "csv", "XLSX"] {
        let (status, body) = app
            .get(&format!("{path}?format={format}"), &publisher, None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("format_invalid")),
            "{format}: {body}"
        );
    }
    // An unknown department is no workbook either: the JSON's answer.
    for query in ["", "?format=xlsx"] {
        let (status, body) = app
            .get(
                &format!("/v1/ingest/nowhere/rejects{query}"),
                &publisher,
                None,
            )
            .await;
        assert_eq!(status, 404, "{query}: {body}");
    }
}
