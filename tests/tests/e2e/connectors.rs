//! Department data as it really arrives — a GBK CSV, an Excel workbook, a paged REST API, a
//! department's own JSON schema — through mappings into the broker, with the bad rows kept in
//! quarantine where the department can see why.

use std::path::Path;

use connectors::{build, ConnectorConfig};
use e2e_tests::{TestApp, GRID};
use serde_json::{json, Value};

const MAPPING: &str = r#"
[mapping]
kind = "resident"
source_id = { template = "MZ-{编号}" }
version = { column = "更新时间" }

[mapping.fields]
id_number = "身份证号"
name = "姓名"
gender = "性别"
birth_date = "出生日期"
phone = "联系电话"

[mapping.codes]
gender = "gb2261_gender"

[mapping.transforms]
name = ["traditional_to_simplified"]

[mapping.constants]
grid = "110105001001003"

[[mapping.tags]]
column = "低保"
"#;

fn file_drop_config(folder: &Path) -> ConnectorConfig {
    let text = format!(
        "department = \"minzheng\"\n[source]\ntype = \"file_drop\"\nfolder = {:?}\nsettle_seconds = 0\n{MAPPING}",
        folder.display().to_string()
    );
    ConnectorConfig::from_toml(&text).expect("a valid connector configuration")
}

/// The quarantine as the department's publisher sees it: (line, code) sorted.
async fn rejects(app: &TestApp, dept: &str) -> Vec<(u64, String, Value)> {
    let (status, page) = app
        .get(
            &format!("/v1/ingest/{dept}/rejects"),
            &app.publisher(dept),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let mut out: Vec<(u64, String, Value)> = page["rejects"]
        .as_array()
        .expect("rejects")
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or(0),
                r["code"].as_str().unwrap_or("").to_owned(),
                r["record"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out
}

fn sink(app: &TestApp) -> broker::connect::PipelineSink {
    broker::connect::PipelineSink::new(app.broker.as_ref().expect("running").state.pipeline.clone())
}

#[tokio::test]
async fn a_gbk_csv_lands_and_its_bad_rows_wait_in_quarantine() {
    let app = TestApp::spawn().await;
    let drop = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let csv = "编号,身份证号,姓名,性别,出生日期,联系电话,低保,更新时间\n\
1,11010519491231002X,張三,1,19491231,13812345678,是,2026-11-01 08:00:00\n\
2,110105194912310021,李四,1,19491231,,否,2026-11-01 08:00:00\n\
3,110105198001010016,王五,3,19800101,,,2026-11-01 08:00:00\n\
4,110105198001010024,赵六,2,1980年13月01日,,,2026-11-01 08:00:00\n";
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(csv);
    assert!(
        !unmappable && std::str::from_utf8(&gbk).is_err(),
        "really GBK"
    );
    std::fs::write(drop.path().join("低保名单.csv"), &gbk).expect("write");
    let mut connector = build(&file_drop_config(drop.path()), state.path()).expect("connector");
    let report = connector.run(&mut sink(&app)).await.expect("run");
    assert_eq!((report.accepted, report.rejected), (1, 3));

    // The good row is merged, with the traditional name simplified.
    let id = app.unified_id("resident", "minzheng", "MZ-1").await;
    let officer = app.token("street_officer", &[e2e_tests::STREET], None);
    let (_, profile) = app
        .get(
            &format!("/v1/residents/{id}"),
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(profile["fields"]["name"]["value"], "张三");

    let quarantined = rejects(&app, "minzheng").await;
    let codes: Vec<(u64, &str)> = quarantined
        .iter()
        .map(|(l, c, _)| (*l, c.as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (3, "id_number_checksum"),
            (4, "mapping_unknown_code"),
            (5, "mapping_bad_date")
        ]
    );
    // The department gets its own row back to fix it.
    assert_eq!(quarantined[0].2["姓名"], "李四");
    // Another department sees none of it.
    let (status, _) = app
        .get(
            "/v1/ingest/minzheng/rejects",
            &app.publisher("gongan"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Fixed and re-sent, the record is stored and its quarantine entry closes.
    let fixed_id = format!(
        "11010519491231001{}",
        model::id_number_check_digit("11010519491231001").expect("17 digits")
    );
    let fixed = json!({"kind":"resident","source_id":"MZ-2","version":"2026-11-02T08:00:00Z",
        "id_number":fixed_id,"name":"李四","grid":GRID});
    let receipt = app.ingest("minzheng", format!("{fixed}\n")).await;
    assert_eq!(receipt["created"], 1, "{receipt}");
    let open: Vec<u64> = rejects(&app, "minzheng")
        .await
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(open, vec![4, 5]);
}

#[tokio::test]
async fn an_excel_workbook_lands_through_its_mapping() {
    use rust_xlsxwriter::Workbook;
    let app = TestApp::spawn().await;
    let drop = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    for (col, title) in [
        "编号",
        "身份证号",
        "姓名",
        "性别",
        "出生日期",
        "联系电话",
        "低保",
        "更新时间",
    ]
    .iter()
    .enumerate()
    {
        sheet.write_string(0, col as u16, *title).expect("cell");
    }
    let rows: [[&str; 8]; 3] = [
        [
            "1",
            "１１０１０５１９４９１２３１００２Ｘ",
            "張麗紅",
            "2",
            "1949-12-31",
            "13812345678",
            "是",
            "2026-11-01T08:00:00Z",
        ],
        [
            "2",
            "11010519491231002X",
            "陈伟",
            "1",
            "1949-12-31",
            "12345",
            "",
            "2026-11-01T08:00:00Z",
        ],
        ["3", "", "", "1", "", "", "", "2026-11-01T08:00:00Z"],
    ];
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            sheet
                .write_string(r as u32 + 1, c as u16, *cell)
                .expect("cell");
        }
    }
    std::fs::write(
        drop.path().join("民政.xlsx"),
        workbook.save_to_buffer().expect("xlsx"),
    )
    .expect("write");
    let mut connector = build(&file_drop_config(drop.path()), state.path()).expect("connector");
    let report = connector.run(&mut sink(&app)).await.expect("run");
    assert_eq!(report.accepted, 1, "{report:?}");
    let codes: Vec<String> = rejects(&app, "minzheng")
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        codes,
        vec![
            "phone_length".to_owned(),
            "resident_unidentified".to_owned()
        ]
    );
    let id = app.unified_id("resident", "minzheng", "MZ-1").await;
    let officer = app.token("street_officer", &[e2e_tests::STREET], None);
    let (_, profile) = app
        .get(
            &format!("/v1/residents/{id}"),
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(profile["fields"]["name"]["value"], "张丽红");
}

#[tokio::test]
async fn a_paged_rest_source_lands_and_bad_items_are_quarantined() {
    use axum::extract::Query;
    use axum::routing::get;
    let app = TestApp::spawn().await;
    let good = |n: u32| {
        json!({"编号": n.to_string(), "身份证号": format!("11010519800101{n:03}{}", model::id_number_check_digit(&format!("11010519800101{n:03}")).expect("17 digits")),
        "姓名": "孙八", "性别": "1", "更新时间": "2026-11-01T08:00:00Z"})
    };
    let pages = vec![
        vec![good(1), good(2)],
        vec![
            good(3),
            json!({"编号":"4","身份证号":"123","姓名":"周九","性别":"1","更新时间":"2026-11-01T08:00:00Z"}),
        ],
    ];
    let server = axum::Router::new().route(
        "/residents",
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let pages = pages.clone();
                async move {
                    let page: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
                    let next = (page + 1 < pages.len()).then(|| (page + 1).to_string());
                    axum::Json(
                        json!({"data": pages.get(page).cloned().unwrap_or_default(), "next": next}),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, server).await;
    });
    let text = format!(
        "department = \"minzheng\"\n[source]\ntype = \"rest\"\nurl = \"http://{addr}/residents\"\nitems_path = \"data\"\npaging = \"cursor\"\ncursor_param = \"cursor\"\nnext_cursor_path = \"next\"\n{MAPPING}"
    );
    let config = match ConnectorConfig::from_toml(&text) {
        Ok(config) => config,
        Err(err) => panic!("the REST configuration must parse: {err}"),
    };
    let state = tempfile::tempdir().expect("tempdir");
    let mut connector = build(&config, state.path()).expect("connector");
    let report = connector.run(&mut sink(&app)).await.expect("run");
    assert_eq!((report.accepted, report.rejected), (3, 1), "{report:?}");
    let quarantined = rejects(&app, "minzheng").await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].1, "id_number_length");
}

#[tokio::test]
async fn a_department_pushes_its_own_schema_through_its_mapping() {
    let root = tempfile::tempdir().expect("tempdir");
    let mappings = root.path().join("mappings");
    std::fs::create_dir_all(&mappings).expect("dir");
    std::fs::write(mappings.join("minzheng.toml"), MAPPING).expect("write");
    let config = broker::config::Config {
        mappings_dir: Some(mappings),
        ..broker::config::Config::default()
    };
    let app = TestApp::spawn_with(config).await;
    let body = [
        json!({"编号":"7","身份证号":"11010519491231002X","姓名":"張三","性别":"1","更新时间":"2026-11-01T08:00:00Z"}),
        json!({"编号":"8","身份证号":"11010519491231002X","姓名":"张三","性别":"9x","更新时间":"2026-11-01T08:00:00Z"}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();
    let receipt = app.ingest("minzheng", body).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    assert_eq!(receipt["rejected"][0]["code"], "mapping_unknown_code");
    assert!(receipt["rejected"][0]["quarantine_id"].is_string());
    // The unified format is still accepted when asked for explicitly.
    let unified =
        json!({"kind":"resident","source_id":"MZ-99","version":"1","name":"王五","grid":GRID});
    let response = app
        .client
        .post(format!("{}/v1/ingest/minzheng?format=unified", app.url))
        .bearer_auth(app.publisher("minzheng"))
        .body(format!("{unified}\n"))
        .send()
        .await
        .expect("sent");
    let receipt: Value = response.json().await.expect("json");
    assert_eq!(receipt["created"], 1, "{receipt}");
}
