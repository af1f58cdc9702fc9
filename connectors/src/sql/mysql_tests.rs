#![allow(clippy::unwrap_used)]

//! Tests against a real MySQL-family server (MariaDB in CI) named by `SAFEGRID_TEST_MYSQL_URL`
//! (`connectors/scripts/ci-mariadb.sh start` prints one; `bash scripts/test.sh` starts it and
//! sets the variable). Without it they fail and say so, as the PostgreSQL tests do.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, MySqlConnection};

use super::mysql::MySqlReader;
use super::tests::CrashingSink;
use super::{Checkpoint, ReadPlan, Relation, SqlConnector};
use crate::config::Secret;
use crate::connector::BoxFuture;
use crate::{
    build, ConnectorConfig, ConnectorError, MappedRecord, NdjsonSink, RecordSink, SinkReceipt,
    SourceConfig,
};

const URL_ENV: &str = "SAFEGRID_TEST_MYSQL_URL";

fn mysql_url() -> String {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{URL_ENV} is not set: run `bash scripts/test.sh`, which starts a throwaway \
             MariaDB (connectors/scripts/ci-mariadb.sh) and sets it"
        ),
    }
}

async fn connect() -> MySqlConnection {
    let mut conn = MySqlConnection::connect(&mysql_url()).await.unwrap();
    // Department databases keep zero dates: let the tests write them whatever the server's mode.
    exec(&mut conn, "SET SESSION sql_mode = ''").await;
    conn
}

async fn exec(conn: &mut MySqlConnection, sql: &str) {
    sqlx::query(sql).execute(&mut *conn).await.unwrap();
}

fn table_name(test: &str) -> String {
    format!("conn_my_{test}_{}", std::process::id())
}

fn config(table: &str, page_size: u32) -> ConnectorConfig {
    ConnectorConfig::from_toml(&format!(
        r#"
department = "minzheng"
name = "mz-mysql-{table}"

[source]
type = "sql"
url_env = "{URL_ENV}"
table = "{table}"
watermark_column = "updated_at"
key_column = "id"
page_size = {page_size}

[mapping]
kind = "resident"
source_id = {{ template = "MZDB-{{id}}" }}

[mapping.fields]
id_number = "id_number"
name = "name"
gender = "gender"

[mapping.codes]
gender = "gb2261_gender"

[mapping.constants]
grid = "110105001001003"
"#
    ))
    .unwrap()
}

/// Keeps every delivered item, failed rows included, as quarantine would.
#[derive(Debug, Default)]
struct KeepingSink {
    inner: NdjsonSink,
    kept: Vec<MappedRecord>,
}

impl RecordSink for KeepingSink {
    fn submit<'a>(
        &'a mut self,
        department: &'a str,
        batch: Vec<MappedRecord>,
    ) -> BoxFuture<'a, Result<SinkReceipt, ConnectorError>> {
        self.kept.extend(batch.iter().cloned());
        self.inner.submit(department, batch)
    }
}

type Row = (i64, &'static str, &'static str, &'static str, &'static str);

/// A fresh table whose watermark is a DATETIME(6), the usual `updated_at` of these databases.
async fn setup(conn: &mut MySqlConnection, table: &str, rows: &[Row]) {
    exec(conn, &format!("DROP TABLE IF EXISTS {table}")).await;
    exec(
        conn,
        &format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, id_number VARCHAR(18), \
             name VARCHAR(64), gender VARCHAR(2), updated_at DATETIME(6), KEY (updated_at)) \
             DEFAULT CHARSET = utf8mb4"
        ),
    )
    .await;
    insert(conn, table, rows).await;
}

async fn insert(conn: &mut MySqlConnection, table: &str, rows: &[Row]) {
    for (id, id_number, name, gender, updated_at) in rows {
        sqlx::query(&format!(
            "INSERT INTO {table} (id, id_number, name, gender, updated_at) VALUES (?, ?, ?, ?, ?)"
        ))
        .bind(id)
        .bind(id_number)
        .bind(name)
        .bind(gender)
        .bind(updated_at)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
}

const T0: &str = "2026-11-01 08:00:00";
const T1: &str = "2026-11-01 09:00:00.123456";
const T2: &str = "2026-11-02 08:00:00";

fn base_rows() -> Vec<Row> {
    vec![
        (1, "11010519491231002X", "张三", "2", T0),
        (2, "110105198001010016", "王五", "1", T1),
        (3, "110105198001010024", "赵六", "2", T1),
        (4, "110105197511030514", "钱七", "3", T1),
        (5, "11010519900215063X", "孙八", "2", T2),
    ]
}

fn checkpoint_of(config: &ConnectorConfig, state: &Path) -> Option<Checkpoint> {
    SqlConnector::new(config, state)
        .unwrap()
        .checkpoint()
        .unwrap()
}

#[tokio::test]
async fn mysql_first_run_takes_all_then_only_new_and_changed_rows() {
    let table = table_name("incremental");
    let mut conn = connect().await;
    setup(&mut conn, &table, &base_rows()).await;
    // A row without a watermark is never read.
    exec(
        &mut conn,
        &format!(
            "INSERT INTO {table} (id, id_number, name, gender, updated_at) \
             VALUES (99, NULL, '无名', '1', NULL)"
        ),
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let config = config(&table, 2);

    let mut connector = build(&config, state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    let report = connector.run(&mut sink).await.unwrap();
    assert_eq!(
        sink.source_ids(),
        vec!["MZDB-1", "MZDB-2", "MZDB-3", "MZDB-5"]
    );
    for (_, record) in &sink.records {
        model::Record::from_value(record).unwrap();
    }
    // DATETIME has no zone: the version keeps the wall-clock time, which the model reads as
    // China time.
    assert_eq!(sink.records[1].1["version"], "2026-11-01T09:00:00.123456");
    assert_eq!(sink.records[1].1["name"], "王五");
    assert_eq!(sink.failures.len(), 1);
    let failure = &sink.failures[0];
    assert_eq!(
        (failure.code.as_str(), failure.field.as_str(), failure.line),
        ("mapping_unknown_code", "gender", 4)
    );
    assert_eq!(failure.source_file, format!("sql:{table}"));
    assert_eq!((report.pages, report.rows_read, report.batches), (3, 5, 3));
    assert_eq!(
        checkpoint_of(&config, state.path()),
        Some(Checkpoint {
            watermark: "2026-11-02 08:00:00.000000".to_owned(),
            key: "5".to_owned()
        })
    );

    // New row 6, row 2 changed: the second run takes exactly those, in watermark order.
    insert(
        &mut conn,
        &table,
        &[(6, "110105194912310038", "周九", "1", "2026-11-03 08:00:00")],
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "UPDATE {table} SET name = '王五一', updated_at = '2026-11-04 08:00:00' WHERE id = 2"
        ),
    )
    .await;
    let mut sink = NdjsonSink::new();
    let report = connector.run(&mut sink).await.unwrap();
    assert_eq!(sink.source_ids(), vec!["MZDB-6", "MZDB-2"]);
    assert_eq!(sink.records[1].1["name"], "王五一");
    assert_eq!(report.rows_read, 2);

    // Nothing new: nothing read, also by a freshly built connector.
    let mut sink = NdjsonSink::new();
    let report = build(&config, state.path())
        .unwrap()
        .run(&mut sink)
        .await
        .unwrap();
    assert_eq!((report.rows_read, sink.records.len()), (0, 0));

    exec(&mut conn, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn mysql_restart_after_a_crash_resumes_without_duplicates_or_gaps() {
    let table = table_name("crash");
    let mut conn = connect().await;
    let mut rows = base_rows();
    rows[3].3 = "1"; // every row valid here
    rows.push((6, "110105194912310038", "周九", "1", T2));
    rows.push((7, "110105198001010016", "吴十", "1", T2));
    setup(&mut conn, &table, &rows).await;
    let state = tempfile::tempdir().unwrap();
    let config = config(&table, 2);

    let mut sink = CrashingSink {
        fail_on: 2,
        ..CrashingSink::default()
    };
    let err = build(&config, state.path())
        .unwrap()
        .run(&mut sink)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "sink_failed");
    let mut delivered = sink.inner.source_ids();
    assert_eq!(delivered, vec!["MZDB-1", "MZDB-2"]);

    // The process restarts: a new connector from the same state directory.
    let mut sink = NdjsonSink::new();
    build(&config, state.path())
        .unwrap()
        .run(&mut sink)
        .await
        .unwrap();
    assert_eq!(
        sink.source_ids(),
        vec!["MZDB-3", "MZDB-4", "MZDB-5", "MZDB-6", "MZDB-7"]
    );
    delivered.extend(sink.source_ids());
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "no duplicates");
    assert_eq!(delivered.len(), 7, "no gaps");

    exec(&mut conn, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn mysql_a_bad_value_fails_its_own_row_and_its_neighbours_pass() {
    let table = table_name("bad_value");
    let mut conn = connect().await;
    exec(&mut conn, &format!("DROP TABLE IF EXISTS {table}")).await;
    exec(
        &mut conn,
        &format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, id_number VARCHAR(18), \
             name VARCHAR(64), gender VARCHAR(2), birth_date DATE, updated_at DATETIME(6)) \
             DEFAULT CHARSET = utf8mb4"
        ),
    )
    .await;
    // Row 3's watermark and row 4's birth date are MySQL's zero date, which is no date at all.
    exec(
        &mut conn,
        &format!(
            "INSERT INTO {table} VALUES \
             (1, '11010519491231002X', '张三', '2', '1949-12-31', '2026-11-01 08:00:00'), \
             (2, '110105198001010016', '王五', '1', '1980-01-01', '2026-11-01 09:00:00'), \
             (3, '110105198001010024', '赵六', '2', '1980-01-01', '0000-00-00 00:00:00'), \
             (4, '110105197511030514', '钱七', '1', '0000-00-00', '2026-11-01 10:00:00'), \
             (5, '11010519900215063X', '孙八', '2', '1990-02-15', '2026-11-01 11:00:00')"
        ),
    )
    .await;
    let mut config = config(&table, 1);
    config
        .mapping
        .fields
        .insert("birth_date".to_owned(), "birth_date".to_owned());
    let state = tempfile::tempdir().unwrap();

    let mut sink = KeepingSink::default();
    let report = build(&config, state.path())
        .unwrap()
        .run(&mut sink)
        .await
        .unwrap();
    let KeepingSink { inner: sink, kept } = sink;
    // The zero watermark sorts first; the run goes on past it (the next page resumes after a
    // checkpoint holding the zero date) and past the zero birth date.
    assert_eq!(sink.source_ids(), vec!["MZDB-1", "MZDB-2", "MZDB-5"]);
    assert_eq!(sink.records[0].1["birth_date"], "1949-12-31");
    let failures: Vec<(usize, &str, &str)> = sink
        .failures
        .iter()
        .map(|f| (f.line, f.field.as_str(), f.code.as_str()))
        .collect();
    assert_eq!(
        failures,
        vec![
            (1, "version", "cell_error"),
            (4, "birth_date", "cell_error")
        ]
    );
    for failure in &sink.failures {
        assert!(failure.message.contains("DATE"), "{}", failure.message);
        assert!(!failure.message.contains("0000"), "{}", failure.message);
    }
    assert!(sink.failures[0].message.contains("`updated_at`"));
    assert_eq!((report.rows_read, report.mapping_failures), (5, 2));
    // The failed rows wait in quarantine with what could be read of them.
    let quarantined: Vec<&serde_json::Map<String, Value>> = kept
        .iter()
        .filter_map(|r| match r {
            MappedRecord::Failed { row, .. } => Some(row),
            MappedRecord::Mapped { .. } => None,
        })
        .collect();
    assert_eq!(quarantined.len(), 2);
    assert_eq!(quarantined[0]["name"], "赵六");
    assert_eq!(quarantined[0]["updated_at"], Value::Null);
    assert_eq!(quarantined[1]["name"], "钱七");
    assert_eq!(quarantined[1]["birth_date"], Value::Null);
    assert_eq!(quarantined[1]["updated_at"], "2026-11-01T10:00:00");

    // Nothing is read twice.
    let mut sink = NdjsonSink::new();
    let report = build(&config, state.path())
        .unwrap()
        .run(&mut sink)
        .await
        .unwrap();
    assert_eq!(report.rows_read, 0);

    exec(&mut conn, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn mysql_chinese_text_round_trips_in_utf8mb4() {
    let table = table_name("utf8mb4");
    let mut conn = connect().await;
    exec(&mut conn, &format!("DROP TABLE IF EXISTS {table}")).await;
    // Chinese column names, a TEXT column, and a binary-collation column (which the protocol
    // reports as binary).
    exec(
        &mut conn,
        &format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, `身份证号` VARCHAR(18), \
             `姓名` VARCHAR(32), `备注` TEXT, `地址` VARCHAR(128) COLLATE utf8mb4_bin, \
             updated_at DATETIME) DEFAULT CHARSET = utf8mb4"
        ),
    )
    .await;
    // Outside the Basic Multilingual Plane (4 bytes in UTF-8): 𠮷 (U+20BB7), 𡈽 (U+2123D),
    // and an emoji; and rare characters inside it: 龘, 䶮.
    let remark = "𠮷野家 𡈽 🏠 龘䶮 — 低保户，独居";
    let address = "北京市朝阳区𠮷祥里3号楼";
    sqlx::query(&format!("INSERT INTO {table} VALUES (1, ?, ?, ?, ?, ?)"))
        .bind("11010519491231002X")
        .bind("张三")
        .bind(remark)
        .bind(address)
        .bind("2026-11-01 08:00:00")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut config = config(&table, 10);
    config.mapping.fields.clear();
    config.mapping.codes.clear();
    for (field, column) in [
        ("id_number", "身份证号"),
        ("name", "姓名"),
        ("attributes.备注", "备注"),
        ("attributes.地址", "地址"),
    ] {
        config
            .mapping
            .fields
            .insert(field.to_owned(), column.to_owned());
    }
    let state = tempfile::tempdir().unwrap();
    let mut sink = NdjsonSink::new();
    build(&config, state.path())
        .unwrap()
        .run(&mut sink)
        .await
        .unwrap();
    assert_eq!(sink.failures, vec![]);
    let record = &sink.records[0].1;
    assert_eq!(record["name"], "张三");
    assert_eq!(record["attributes"]["备注"], remark);
    assert_eq!(record["attributes"]["地址"], address);

    exec(&mut conn, &format!("DROP TABLE {table}")).await;
}

fn plan(table: &str, watermark: &str, key: &str, state: &Path) -> ReadPlan {
    ReadPlan {
        relation: Relation::Table(vec![table.to_owned()]),
        watermark_column: watermark.to_owned(),
        key_column: key.to_owned(),
        page_size: 10,
        connect_timeout: Duration::from_secs(10),
        checkpoint_path: state.join("t.checkpoint.json"),
    }
}

#[tokio::test]
async fn mysql_column_types_become_the_documented_json() {
    let table = table_name("types");
    let mut conn = connect().await;
    exec(&mut conn, &format!("DROP TABLE IF EXISTS {table}")).await;
    exec(
        &mut conn,
        &format!(
            "CREATE TABLE {table} (id BIGINT UNSIGNED PRIMARY KEY, flag TINYINT(1), \
             small SMALLINT, amount DECIMAL(12,2), ratio DOUBLE, born DATE, \
             seen DATETIME(6), stamped TIMESTAMP(6) NULL, shift TIME, doc JSON, \
             kind ENUM('a','b'), raw VARBINARY(8), note VARCHAR(8), nothing VARCHAR(8)) \
             DEFAULT CHARSET = utf8mb4"
        ),
    )
    .await;
    // The TIMESTAMP is written at 09:00 Beijing time: it is read back as the instant, in UTC.
    exec(&mut conn, "SET time_zone = '+08:00'").await;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO {table} VALUES (18446744073709551615, 2, -7, 1234.50, 1.5, \
             '1949-12-31', '2026-11-01 09:00:00.123456', '2026-11-01 09:00:00.5', '-12:30:00', \
             '{{\"a\": [1, \"二\"]}}', 'b', x'ff00', '文本', NULL)"
        ),
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let url = Secret::new(mysql_url());
    let mut reader = MySqlReader::open(&url, plan(&table, "seen", "id", state.path()))
        .await
        .unwrap();
    let page = reader.page(None).await.unwrap();
    assert_eq!(page.len(), 1);
    let row = &page[0];
    assert!(row.cell_errors.is_empty(), "{:?}", row.cell_errors);
    let expected_doc = if row.fields["doc"].is_string() {
        // MariaDB: JSON is LONGTEXT with a check, and arrives as its text.
        json!("{\"a\": [1, \"二\"]}")
    } else {
        json!({"a": [1, "二"]})
    };
    assert_eq!(
        Value::Object(row.fields.clone()),
        json!({
            "id": 18446744073709551615_u64,
            "flag": 2,
            "small": -7,
            "amount": "1234.50",
            "ratio": 1.5,
            "born": "1949-12-31",
            "seen": "2026-11-01T09:00:00.123456",
            "stamped": "2026-11-01T01:00:00.500+00:00",
            "shift": "-12:30:00",
            "doc": expected_doc,
            "kind": "b",
            "raw": "\\xff00",
            "note": "文本",
            "nothing": null,
        })
    );
    assert_eq!(
        row.position,
        Checkpoint {
            watermark: "2026-11-01 09:00:00.123456".to_owned(),
            key: "18446744073709551615".to_owned()
        }
    );
    reader.close().await;
    exec(&mut conn, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn mysql_decimal_and_timestamp_watermarks_resume_exactly() {
    let mut conn = connect().await;
    // DECIMAL values a double cannot tell apart, and TIMESTAMPs a microsecond apart, with a
    // text key: one row per page, so every page resumes from the checkpoint.
    for (test, watermark_type, values) in [
        (
            "decimal",
            "DECIMAL(30,4)",
            [
                "12345678901234567.0001",
                "12345678901234567.0002",
                "12345678901234567.0002",
            ],
        ),
        (
            "timestamp",
            "TIMESTAMP(6) NULL",
            [
                "2026-11-01 09:00:00.000001",
                "2026-11-01 09:00:00.000002",
                "2026-11-01 09:00:00.000002",
            ],
        ),
    ] {
        let table = table_name(test);
        exec(&mut conn, &format!("DROP TABLE IF EXISTS {table}")).await;
        exec(
            &mut conn,
            &format!(
                "CREATE TABLE {table} (code VARCHAR(8) PRIMARY KEY, seq {watermark_type}, \
                 xm VARCHAR(16), ver INT) DEFAULT CHARSET = utf8mb4"
            ),
        )
        .await;
        for (code, seq) in ["c", "b", "a"].iter().zip(values) {
            sqlx::query(&format!("INSERT INTO {table} VALUES (?, ?, '张三', 1)"))
                .bind(code)
                .bind(seq)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let mut config = config(&table, 1);
        if let SourceConfig::Sql(sql) = &mut config.source {
            sql.watermark_column = "seq".to_owned();
            sql.key_column = "code".to_owned();
        }
        config.mapping.source_id = crate::mapping::SourceIdRule::Column("code".to_owned());
        // A DECIMAL with a fraction is no version: the records take theirs from `ver`.
        config.mapping.version = crate::mapping::VersionRule::Column("ver".to_owned());
        config.mapping.fields.clear();
        config.mapping.codes.clear();
        config
            .mapping
            .fields
            .insert("name".to_owned(), "xm".to_owned());
        let state = tempfile::tempdir().unwrap();
        let mut connector = build(&config, state.path()).unwrap();
        let mut sink = NdjsonSink::new();
        let report = connector.run(&mut sink).await.unwrap();
        // Ties on the watermark are ordered by the key: c first, then a before b.
        assert_eq!(sink.source_ids(), vec!["c", "a", "b"], "{test}");
        assert_eq!(report.pages, 3, "{test}");
        let mut sink = NdjsonSink::new();
        connector.run(&mut sink).await.unwrap();
        assert_eq!(sink.source_ids(), Vec::<String>::new(), "{test}");
        exec(&mut conn, &format!("DROP TABLE {table}")).await;
    }
}

#[tokio::test]
async fn mysql_a_query_with_a_bigint_watermark_pages_by_counter() {
    let table = table_name("query");
    let mut conn = connect().await;
    exec(&mut conn, &format!("DROP TABLE IF EXISTS {table}")).await;
    exec(
        &mut conn,
        &format!(
            "CREATE TABLE {table} (code VARCHAR(8) PRIMARY KEY, seq BIGINT NOT NULL, \
             xm VARCHAR(16), dept VARCHAR(8)) DEFAULT CHARSET = utf8mb4"
        ),
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO {table} VALUES ('b', 1, '张三', 'mz'), ('a', 1, '李四', 'mz'), \
             ('c', 2, '王五', 'mz'), ('d', 3, '外部', 'other')"
        ),
    )
    .await;
    let mut config = config(&table, 1);
    if let SourceConfig::Sql(sql) = &mut config.source {
        sql.table = None;
        sql.query = Some(format!(
            "SELECT code, seq, xm FROM {table} WHERE dept = 'mz';"
        ));
        sql.watermark_column = "seq".to_owned();
        sql.key_column = "code".to_owned();
    }
    config.mapping.source_id = crate::mapping::SourceIdRule::Column("code".to_owned());
    config.mapping.fields.clear();
    config.mapping.codes.clear();
    config
        .mapping
        .fields
        .insert("name".to_owned(), "xm".to_owned());
    let state = tempfile::tempdir().unwrap();
    let mut connector = build(&config, state.path()).unwrap();
    let mut sink = NdjsonSink::new();
    let report = connector.run(&mut sink).await.unwrap();
    assert_eq!(sink.source_ids(), vec!["a", "b", "c"]);
    assert_eq!(sink.records[0].1["version"], 1);
    assert_eq!(sink.records[0].0.source_file, "sql:query");
    assert_eq!(report.pages, 3);
    exec(
        &mut conn,
        &format!("INSERT INTO {table} VALUES ('a2', 4, '赵六', 'mz')"),
    )
    .await;
    let mut sink = NdjsonSink::new();
    connector.run(&mut sink).await.unwrap();
    assert_eq!(sink.source_ids(), vec!["a2"]);
    exec(&mut conn, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn mysql_a_watermark_that_cannot_grow_is_refused_before_any_row_is_read() {
    let mut conn = connect().await;
    for (column_type, reported) in [
        ("VARCHAR(32)", "VARCHAR"),
        ("DOUBLE", "DOUBLE"),
        ("TIME", "TIME"),
    ] {
        let table = table_name("not_monotonic");
        exec(&mut conn, &format!("DROP TABLE IF EXISTS {table}")).await;
        exec(
            &mut conn,
            &format!(
                "CREATE TABLE {table} (id BIGINT PRIMARY KEY, id_number VARCHAR(18), \
                 name VARCHAR(64), gender VARCHAR(2), updated_at {column_type})"
            ),
        )
        .await;
        exec(
            &mut conn,
            &format!(
                "INSERT INTO {table} VALUES (1, '11010519491231002X', '张三', '2', '10:00:00')"
            ),
        )
        .await;
        let state = tempfile::tempdir().unwrap();
        let mut sink = NdjsonSink::new();
        let err = build(&config(&table, 10), state.path())
            .unwrap()
            .run(&mut sink)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "sql_source", "{column_type}");
        let message = err.to_string();
        assert!(message.contains("`updated_at`"), "{message}");
        assert!(message.contains(reported), "{message}");
        assert!(message.contains("DATETIME or TIMESTAMP"), "{message}");
        assert_eq!(sink.batch_sizes.len(), 0, "{column_type}");
        assert_eq!(checkpoint_of(&config(&table, 10), state.path()), None);
        exec(&mut conn, &format!("DROP TABLE {table}")).await;
    }
}

#[tokio::test]
async fn mysql_a_missing_table_or_column_is_named_with_what_to_fix() {
    let mut conn = connect().await;
    let state = tempfile::tempdir().unwrap();
    let err = build(&config("no_such_table_here", 10), state.path())
        .unwrap()
        .run(&mut NdjsonSink::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "sql_source");
    let message = err.to_string();
    assert!(message.contains("1146"), "{message}");
    assert!(message.contains("no_such_table_here"), "{message}");
    assert!(message.contains("check source.table"), "{message}");

    let table = table_name("missing_column");
    setup(&mut conn, &table, &base_rows()).await;
    let mut config = config(&table, 10);
    if let SourceConfig::Sql(sql) = &mut config.source {
        sql.watermark_column = "modified".to_owned();
    }
    let err = build(&config, state.path())
        .unwrap()
        .run(&mut NdjsonSink::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "sql_source");
    let message = err.to_string();
    assert!(message.contains("1054"), "{message}");
    assert!(message.contains("modified"), "{message}");
    assert!(message.contains("source.watermark_column"), "{message}");
    exec(&mut conn, &format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn mysql_a_wrong_password_is_refused_without_repeating_it() {
    let url = mysql_url();
    let (head, tail) = url.rsplit_once('@').unwrap();
    let (user, _password) = head.rsplit_once(':').unwrap();
    let wrong = format!("{user}:wrong-Secret-4711@{tail}");
    let mut config = config("anything", 10);
    if let SourceConfig::Sql(sql) = &mut config.source {
        sql.url_env = None;
        sql.url = Some(Secret::new(wrong));
    }
    let state = tempfile::tempdir().unwrap();
    let err = build(&config, state.path())
        .unwrap()
        .run(&mut NdjsonSink::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "sql_source");
    let message = err.to_string();
    assert!(message.contains("1045"), "{message}");
    assert!(
        message.contains("check the user name and password in the URL"),
        "{message}"
    );
    assert!(!message.contains("wrong-Secret-4711"), "{message}");
    assert!(!format!("{err:?}").contains("wrong-Secret-4711"));
}

#[tokio::test]
async fn mysql_a_checkpoint_that_does_not_fit_the_column_stops_the_run() {
    let table = table_name("stale_checkpoint");
    let mut conn = connect().await;
    setup(&mut conn, &table, &base_rows()).await;
    let config = config(&table, 10);
    for (watermark, key) in [("yesterday", "1"), ("2026-11-01 08:00:00", "one")] {
        let state = tempfile::tempdir().unwrap();
        std::fs::write(
            state
                .path()
                .join(format!("mz-mysql-{table}.checkpoint.json")),
            serde_json::to_vec(&Checkpoint {
                watermark: watermark.to_owned(),
                key: key.to_owned(),
            })
            .unwrap(),
        )
        .unwrap();
        let mut sink = NdjsonSink::new();
        let err = build(&config, state.path())
            .unwrap()
            .run(&mut sink)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "connector_state", "{watermark} {key}");
        assert!(err.to_string().contains("delete the file"), "{err}");
        assert_eq!(sink.batch_sizes.len(), 0);
    }
    exec(&mut conn, &format!("DROP TABLE {table}")).await;
}
