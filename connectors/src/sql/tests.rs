#![allow(clippy::unwrap_used)]

//! Tests against a real PostgreSQL server named by `SAFEGRID_TEST_PG_URL`
//! (`connectors/scripts/ci-postgres.sh start` prints one; `bash scripts/test.sh` starts it and
//! sets the variable). Without it they fail and say so: a skipped test would pass unseen.

use std::collections::HashSet;

use sqlx::{Connection, PgConnection};

use crate::connector::BoxFuture;
use crate::{
    build, ConnectorConfig, ConnectorError, MappedRecord, NdjsonSink, RecordSink, SinkReceipt,
};

const URL_ENV: &str = "SAFEGRID_TEST_PG_URL";

fn pg_url() -> String {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{URL_ENV} is not set: run `bash scripts/test.sh`, which starts a throwaway \
             PostgreSQL (connectors/scripts/ci-postgres.sh) and sets it"
        ),
    }
}

fn config(table: &str, page_size: u32) -> ConnectorConfig {
    ConnectorConfig::from_toml(&format!(
        r#"
department = "minzheng"
name = "mz-db-{table}"

[source]
type = "sql"
url_env = "{URL_ENV}"
table = "public.{table}"
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

/// Creates a fresh table; rows sharing `updated_at` make ties at page boundaries.
async fn setup(conn: &mut PgConnection, table: &str, rows: &[(i64, &str, &str, &str, &str)]) {
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, id_number text, name text, gender text, \
         updated_at timestamptz)"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    insert(conn, table, rows).await;
}

async fn insert(conn: &mut PgConnection, table: &str, rows: &[(i64, &str, &str, &str, &str)]) {
    for (id, id_number, name, gender, updated_at) in rows {
        sqlx::query(&format!(
            "INSERT INTO {table} (id, id_number, name, gender, updated_at) \
             VALUES ($1, $2, $3, $4, $5::text::timestamptz)"
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

const T0: &str = "2026-11-01 08:00:00+08";
const T1: &str = "2026-11-01 09:00:00.123456+08";
const T2: &str = "2026-11-02 08:00:00+08";

fn base_rows() -> Vec<(i64, &'static str, &'static str, &'static str, &'static str)> {
    vec![
        (1, "11010519491231002X", "张三", "2", T0),
        (2, "110105198001010016", "王五", "1", T1),
        (3, "110105198001010024", "赵六", "2", T1),
        (4, "110105197511030514", "钱七", "3", T1),
        (5, "11010519900215063X", "孙八", "2", T2),
    ]
}

#[tokio::test]
async fn first_run_takes_all_then_only_new_and_changed_rows() {
    let url = pg_url();
    let table = format!("conn_incremental_{}", std::process::id());
    let mut conn = PgConnection::connect(&url).await.unwrap();
    setup(&mut conn, &table, &base_rows()).await;
    // A row without a watermark is never read.
    sqlx::query(&format!(
        "INSERT INTO {table} (id, id_number, name, gender, updated_at) VALUES (99, NULL, '无名', '1', NULL)"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
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
    assert_eq!(
        sink.records[1].1["version"],
        "2026-11-01T01:00:00.123456+00:00"
    );
    assert_eq!(sink.failures.len(), 1);
    let failure = &sink.failures[0];
    assert_eq!(
        (failure.code.as_str(), failure.field.as_str(), failure.line),
        ("mapping_unknown_code", "gender", 4)
    );
    assert_eq!(failure.source_file, format!("sql:public.{table}"));
    assert_eq!((report.pages, report.rows_read, report.batches), (3, 5, 3));

    // New row 6, row 2 changed: the second run takes exactly those, in watermark order.
    insert(
        &mut conn,
        &table,
        &[(
            6,
            "110105194912310038",
            "周九",
            "1",
            "2026-11-03 08:00:00+08",
        )],
    )
    .await;
    sqlx::query(&format!(
        "UPDATE {table} SET name = '王五一', updated_at = '2026-11-04 08:00:00+08' WHERE id = 2"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
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

    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A sink that fails on its `fail_on`-th batch, as a broker that crashed would.
#[derive(Debug, Default)]
pub(super) struct CrashingSink {
    pub(super) inner: NdjsonSink,
    pub(super) submits: usize,
    pub(super) fail_on: usize,
}

impl RecordSink for CrashingSink {
    fn submit<'a>(
        &'a mut self,
        department: &'a str,
        batch: Vec<MappedRecord>,
    ) -> BoxFuture<'a, Result<SinkReceipt, ConnectorError>> {
        self.submits += 1;
        if self.submits == self.fail_on {
            return Box::pin(async { Err(ConnectorError::Sink("simulated crash".to_owned())) });
        }
        self.inner.submit(department, batch)
    }
}

#[tokio::test]
async fn restart_after_a_crash_resumes_without_duplicates_or_gaps() {
    let url = pg_url();
    let table = format!("conn_crash_{}", std::process::id());
    let mut conn = PgConnection::connect(&url).await.unwrap();
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

    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[test]
fn configuration_needs_one_url_and_one_of_table_or_query() {
    let state = tempfile::tempdir().unwrap();
    let good = config("t", 10);
    assert!(build(&good, state.path()).is_ok());
    let mut both = good.clone();
    if let crate::SourceConfig::Sql(sql) = &mut both.source {
        sql.query = Some("SELECT 1".to_owned());
    }
    assert_eq!(
        build(&both, state.path()).err().unwrap().code(),
        "connector_config"
    );
    let text = toml::to_string(&good)
        .unwrap()
        .replace("url_env", "password");
    assert!(ConnectorConfig::from_toml(&text).is_err());
}

#[tokio::test]
async fn a_query_with_a_bigint_watermark_pages_by_counter() {
    let url = pg_url();
    let table = format!("conn_query_{}", std::process::id());
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {table} (code text PRIMARY KEY, seq bigint NOT NULL, xm text, dept text)"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table} VALUES ('b', 1, '张三', 'mz'), ('a', 1, '李四', 'mz'), \
         ('c', 2, '王五', 'mz'), ('d', 3, '外部', 'other')"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut config = config(&table, 1);
    if let crate::SourceConfig::Sql(sql) = &mut config.source {
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
    // Ties on seq = 1 are ordered by the text key; one row per page. Rows of other
    // departments are filtered out by the query.
    assert_eq!(sink.source_ids(), vec!["a", "b", "c"]);
    assert_eq!(sink.records[0].1["version"], 1);
    assert_eq!(sink.records[0].0.source_file, "sql:query");
    assert_eq!(report.pages, 3);
    sqlx::query(&format!(
        "INSERT INTO {table} VALUES ('a2', 4, '赵六', 'mz')"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut sink = NdjsonSink::new();
    connector.run(&mut sink).await.unwrap();
    assert_eq!(sink.source_ids(), vec!["a2"]);
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[test]
fn the_url_scheme_picks_the_database_and_is_never_repeated() {
    use super::Database;
    for (url, database) in [
        ("postgres://u:p@h/db", Database::Postgres),
        ("postgresql://u:p@h/db", Database::Postgres),
        ("mysql://u:p@h:3306/db", Database::MySql),
        ("MariaDB://u:p@h/db", Database::MySql),
    ] {
        assert_eq!(Database::from_url(url).unwrap(), database, "{url}");
    }
    for url in ["sqlserver://sa:hunter2@h/db", "u:hunter2@h/db", ""] {
        let err = Database::from_url(url).unwrap_err();
        assert_eq!(err.code(), "connector_config");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("mysql://"), "{err}");
    }
    // A URL written in the file is checked when the connector is built.
    let state = tempfile::tempdir().unwrap();
    let mut config = config("t", 10);
    if let crate::SourceConfig::Sql(sql) = &mut config.source {
        sql.url_env = None;
        sql.url = Some(crate::Secret::new("oracle://scott:tiger@h/db"));
    }
    let err = build(&config, state.path()).err().unwrap();
    assert_eq!(err.code(), "connector_config");
    assert!(!err.to_string().contains("tiger"), "{err}");
}

#[tokio::test]
async fn errors_name_a_missing_table_but_never_repeat_a_value() {
    let url = pg_url();
    let state = tempfile::tempdir().unwrap();
    let err = build(&config("no_such_table_here", 10), state.path())
        .unwrap()
        .run(&mut NdjsonSink::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "sql_source");
    let message = err.to_string();
    assert!(message.contains("42P01"), "{message}");
    assert!(message.contains("no_such_table_here"), "{message}");

    // A cast in the department's query fails on a row: PostgreSQL's message would quote the
    // value (`invalid input syntax for type integer: "张三"`); the error keeps only the code.
    let table = format!("conn_errors_{}", std::process::id());
    let mut conn = PgConnection::connect(&url).await.unwrap();
    setup(&mut conn, &table, &base_rows()).await;
    let mut config = config(&table, 10);
    if let crate::SourceConfig::Sql(sql) = &mut config.source {
        sql.table = None;
        sql.query = Some(format!(
            "SELECT id, updated_at, name::int AS n FROM {table}"
        ));
    }
    config.mapping.fields.clear();
    config.mapping.codes.clear();
    let err = build(&config, state.path())
        .unwrap()
        .run(&mut NdjsonSink::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "sql_source");
    let message = err.to_string();
    assert!(message.contains("22P02"), "{message}");
    assert!(!message.contains("张三"), "{message}");
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
}
