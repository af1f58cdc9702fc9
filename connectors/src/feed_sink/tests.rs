#![allow(clippy::unwrap_used)]

//! The sink against a real PostgreSQL server named by `SAFEGRID_TEST_PG_URL`
//! (`connectors/scripts/ci-postgres.sh start` prints one; `bash scripts/test.sh` starts it and
//! sets the variable). Without it the database tests fail and say so: a skipped test would pass
//! unseen. Each test works in a schema of its own. The feed is scripted here: these tests are
//! about the sink, not the broker's feed (tests/tests/e2e/sink.rs runs both).

use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};

use super::postgres::{PgPlan, PgTarget};
use super::*;
use crate::connector::BoxFuture;

const URL_ENV: &str = "SAFEGRID_TEST_PG_URL";
const SUB: &str = "sub_0123abcd";

fn pg_url() -> String {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{URL_ENV} is not set: run `bash scripts/test.sh`, which starts a throwaway \
             PostgreSQL (connectors/scripts/ci-postgres.sh) and sets it"
        ),
    }
}

/// A fresh schema `sink_<name>_<pid>` and a connection to look into it.
async fn schema(name: &str) -> (String, PgConnection) {
    let mut conn = PgConnection::connect(&pg_url()).await.unwrap();
    let schema = format!("sink_{name}_{}", std::process::id());
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    (schema, conn)
}

fn config(schema: &str, extra: &str) -> FeedSinkConfig {
    FeedSinkConfig::from_toml(&format!(
        r#"
department = "sifa"
name = "sifa-disputes-to-pg"
[sink]
subscription = "{SUB}"
page_size = 2
{extra}
[sink.postgres]
url_env = "{URL_ENV}"
table = "{schema}.disputes"
"#
    ))
    .unwrap()
}

fn item(seq: u64, change: Change, id: &str, title: &str) -> FeedItem {
    FeedItem {
        delivery_id: format!("d_{seq}"),
        subscription_id: SUB.to_owned(),
        seq,
        change,
        kind: "event".to_owned(),
        id: id.to_owned(),
        record: match change {
            Change::Upsert => Some(json!({"id": id, "kind": "event", "fields": {
                "title": {"value": title, "source": "wangge", "version": "1"}}})),
            Change::Delete => None,
        },
    }
}

/// A feed that answers from a fixed change log the way the broker's does: at most `limit`
/// items after `after` (without `after`: from the start); `next` is the last item's seq on a
/// full page, else `head` (past changes this subscriber may not see).
struct ScriptedFeed {
    log: Vec<FeedItem>,
    head: u64,
    asked: Vec<Option<u64>>,
    /// The call (1-based) that fails as a broken connection does.
    fail_on_call: Option<usize>,
}

impl ScriptedFeed {
    fn new(log: Vec<FeedItem>, head: u64) -> ScriptedFeed {
        ScriptedFeed {
            log,
            head,
            asked: Vec::new(),
            fail_on_call: None,
        }
    }
}

impl FeedSource for ScriptedFeed {
    fn page(
        &mut self,
        asked: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<FeedPage, ConnectorError>> {
        self.asked.push(asked);
        let after = asked.unwrap_or(0);
        if self.fail_on_call == Some(self.asked.len()) {
            return Box::pin(async {
                Err(ConnectorError::Rest("the connection broke off".to_owned()))
            });
        }
        let items: Vec<FeedItem> = self
            .log
            .iter()
            .filter(|i| i.seq > after)
            .take(limit as usize)
            .cloned()
            .collect();
        let next = match items.last() {
            Some(last) if items.len() == limit as usize => last.seq,
            _ => self.head.max(after),
        };
        Box::pin(async move { Ok(FeedPage { items, next }) })
    }
}

/// The rows of a table: id -> (seq, change, record title).
async fn rows(conn: &mut PgConnection, table: &str) -> Vec<(String, i64, String, Option<String>)> {
    sqlx::query(&format!(
        "SELECT id, seq, change, record->'fields'->'title'->>'value' AS title FROM {table} \
         ORDER BY id"
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .into_iter()
    .map(|row| {
        (
            row.get("id"),
            row.get("seq"),
            row.get("change"),
            row.get("title"),
        )
    })
    .collect()
}

async fn cursor(conn: &mut PgConnection, schema: &str) -> Option<i64> {
    sqlx::query_scalar(&format!(
        "SELECT next_seq FROM {schema}.safegrid_sink_cursor \
         WHERE target_table = $1 AND subscription_id = $2"
    ))
    .bind(format!("{schema}.disputes"))
    .bind(SUB)
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

fn row(
    id: &str,
    seq: i64,
    change: &str,
    title: Option<&str>,
) -> (String, i64, String, Option<String>) {
    (
        id.to_owned(),
        seq,
        change.to_owned(),
        title.map(str::to_owned),
    )
}

/// Three disputes, one updated, one withdrawn; changes 5, 7, 8 and 9 are not for this
/// subscriber.
fn base_log() -> Vec<FeedItem> {
    vec![
        item(1, Change::Upsert, "e_1", "邻里噪音纠纷"),
        item(2, Change::Upsert, "e_2", "停车位纠纷"),
        item(3, Change::Upsert, "e_3", "漏水纠纷"),
        item(4, Change::Upsert, "e_1", "邻里噪音纠纷（已调解）"),
        item(6, Change::Delete, "e_2", ""),
    ]
}

#[tokio::test]
async fn pages_are_applied_with_their_cursor_until_next_stops_advancing() {
    let (schema, mut conn) = schema("pages").await;
    let sink = FeedSink::new(&config(&schema, "")).unwrap();
    let mut feed = ScriptedFeed::new(base_log(), 9);
    let mut progress = Vec::new();
    let report = sink
        .run(&mut feed, &mut |page: &PageApplied| progress.push(*page))
        .await
        .unwrap();

    // The first request goes without `after`: 1,2 (next 2); after 2 -> 3,4 (next 4);
    // after 4 -> 6 (next 9); after 9 -> nothing, the run stops.
    assert_eq!(feed.asked, vec![None, Some(2), Some(4), Some(9)]);
    assert_eq!(
        progress
            .iter()
            .map(|p| (p.page, p.cursor))
            .collect::<Vec<_>>(),
        vec![(1, 2), (2, 4), (3, 9)]
    );
    assert_eq!(
        (
            report.pages,
            report.changes,
            report.upserts,
            report.deletes,
            report.skipped
        ),
        (3, 5, 4, 1, 0)
    );
    assert_eq!(
        (report.cursor_from, report.cursor, report.caught_up),
        (None, Some(9), true)
    );
    assert_eq!(report.table, format!("{schema}.disputes"));
    let table = format!("{schema}.disputes");
    assert_eq!(
        rows(&mut conn, &table).await,
        vec![
            row("e_1", 4, "upsert", Some("邻里噪音纠纷（已调解）")),
            // A delete keeps a tombstone without the personal data.
            row("e_2", 6, "delete", None),
            row("e_3", 3, "upsert", Some("漏水纠纷")),
        ]
    );
    let tombstone: Option<Value> =
        sqlx::query_scalar(&format!("SELECT record FROM {table} WHERE id = 'e_2'"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(tombstone, None);
    assert_eq!(cursor(&mut conn, &schema).await, Some(9));

    // The table has the documented shape, keyed by id.
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'disputes' ORDER BY ordinal_position",
    )
    .bind(&schema)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(c, t)| (c.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        columns,
        vec![
            ("id", "text"),
            ("kind", "text"),
            ("seq", "bigint"),
            ("change", "text"),
            ("record", "jsonb"),
            ("subscription_id", "text"),
            ("delivery_id", "text"),
            ("received_at", "timestamp with time zone"),
        ]
    );
    let duplicate = sqlx::query(&format!(
        "INSERT INTO {table} (id, kind, seq, change, record, subscription_id, delivery_id) \
         VALUES ('e_1', 'event', 99, 'upsert', '{{}}', 'x', 'y')"
    ))
    .execute(&mut conn)
    .await;
    assert!(duplicate.is_err(), "id is the primary key");

    // Nothing new: the next run asks once and writes nothing.
    let mut feed = ScriptedFeed::new(base_log(), 9);
    let report = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap();
    assert_eq!(feed.asked, vec![Some(9)]);
    assert_eq!(
        (report.pages, report.cursor_from, report.cursor),
        (0, Some(9), Some(9))
    );

    // New changes: only they are asked for and applied.
    let mut log = base_log();
    log.push(item(10, Change::Upsert, "e_3", "漏水纠纷（已修复）"));
    log.push(item(11, Change::Upsert, "e_4", "占道经营纠纷"));
    let mut feed = ScriptedFeed::new(log, 11);
    let report = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap();
    assert_eq!(feed.asked, vec![Some(9), Some(11)]);
    assert_eq!(
        (report.upserts, report.deletes, report.cursor),
        (2, 0, Some(11))
    );
    let rows = rows(&mut conn, &table).await;
    assert_eq!(
        rows[2],
        row("e_3", 10, "upsert", Some("漏水纠纷（已修复）"))
    );
    assert_eq!(rows[3], row("e_4", 11, "upsert", Some("占道经营纠纷")));
}

#[tokio::test]
async fn an_older_seq_never_overwrites_a_newer_one() {
    let (schema, mut conn) = schema("order").await;
    let table = format!("{schema}.disputes");
    let mut one_page = config(&schema, "");
    one_page.sink.page_size = Some(10);
    let sink = FeedSink::new(&one_page).unwrap();
    // In one page, e_1 changes twice: only the later change is written.
    let mut feed = ScriptedFeed::new(base_log(), 6);
    let report = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap();
    assert_eq!(
        (
            report.changes,
            report.upserts,
            report.deletes,
            report.skipped
        ),
        (5, 2, 1, 2)
    );
    let before = rows(&mut conn, &table).await;
    assert_eq!(
        before[0],
        row("e_1", 4, "upsert", Some("邻里噪音纠纷（已调解）"))
    );

    // Someone rewinds the cursor by hand: replaying the feed changes no row, and the
    // withdrawn e_2 does not come back.
    sqlx::query(&format!(
        "UPDATE {schema}.safegrid_sink_cursor SET next_seq = NULL"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut feed = ScriptedFeed::new(base_log(), 6);
    let report = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap();
    assert_eq!((report.upserts, report.deletes, report.skipped), (0, 0, 5));
    assert_eq!(rows(&mut conn, &table).await, before);
    assert_eq!(cursor(&mut conn, &schema).await, Some(6));
}

#[tokio::test]
async fn a_run_broken_between_pages_resumes_from_the_last_committed_page() {
    let (schema, mut conn) = schema("resume").await;
    let table = format!("{schema}.disputes");
    let sink = FeedSink::new(&config(&schema, "")).unwrap();
    let mut feed = ScriptedFeed::new(base_log(), 9);
    feed.fail_on_call = Some(2);
    let mut committed = Vec::new();
    let err = sink
        .run(&mut feed, &mut |page: &PageApplied| {
            committed.push(page.cursor)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "rest_source");
    assert_eq!(committed, vec![2]);
    assert_eq!(cursor(&mut conn, &schema).await, Some(2));
    assert_eq!(rows(&mut conn, &table).await.len(), 2);

    let mut feed = ScriptedFeed::new(base_log(), 9);
    let report = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap();
    assert_eq!(feed.asked, vec![Some(2), Some(4), Some(9)]);
    assert_eq!((report.cursor_from, report.cursor), (Some(2), Some(9)));
    // Each change applied once: nothing of the first page came again.
    assert_eq!((report.changes, report.upserts, report.deletes), (3, 2, 1));
    assert_eq!(rows(&mut conn, &table).await.len(), 3);
}

#[tokio::test]
async fn a_crash_inside_a_page_leaves_neither_its_rows_nor_its_cursor() {
    let (schema, mut conn) = schema("crash").await;
    let table = format!("{schema}.disputes");
    let sink = FeedSink::new(&config(&schema, "")).unwrap();
    // First run creates the table and applies seq 1-2.
    let mut log = base_log();
    log.truncate(2);
    let mut feed = ScriptedFeed::new(log, 2);
    sink.run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap();

    // The database fails in the middle of the next page, after e_3 went in and the cursor
    // moved within the transaction. The function's message quotes the record: never repeated.
    sqlx::query(&format!(
        "CREATE FUNCTION {schema}.fail_on_crash() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.id = 'e_crash' THEN RAISE EXCEPTION 'boom %', NEW.record; END IF; \
         RETURN NEW; END $$"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE TRIGGER fail_on_crash BEFORE INSERT ON {table} FOR EACH ROW \
         EXECUTE FUNCTION {schema}.fail_on_crash()"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut log = base_log();
    log.truncate(3);
    log.push(item(4, Change::Upsert, "e_crash", "个人隐私标题"));
    let mut feed = ScriptedFeed::new(log.clone(), 4);
    let err = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.code(), "sink_failed");
    assert!(
        text.contains("P0001") && text.contains("disputes"),
        "{text}"
    );
    assert!(!text.contains("个人隐私标题"), "{text}");
    assert_eq!(cursor(&mut conn, &schema).await, Some(2));
    let ids: Vec<String> = rows(&mut conn, &table)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(ids, vec!["e_1", "e_2"]);

    // Repaired, the page is applied once.
    sqlx::query(&format!("DROP TRIGGER fail_on_crash ON {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut feed = ScriptedFeed::new(log, 4);
    let report = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap();
    assert_eq!(feed.asked, vec![Some(2), Some(4)]);
    assert_eq!(
        (report.upserts, report.skipped, report.cursor),
        (2, 0, Some(4))
    );
    let ids: Vec<String> = rows(&mut conn, &table)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(ids, vec!["e_1", "e_2", "e_3", "e_crash"]);
}

#[tokio::test]
async fn two_runs_at_once_cannot_both_apply_a_page() {
    let (schema, mut conn) = schema("race").await;
    let table = format!("{schema}.disputes");
    let config = config(&schema, "");
    let plan = PgPlan::new(&config.sink.postgres, SUB).unwrap();
    let url = Secret::new(pg_url());
    let mut first = PgTarget::open(&url, &plan).await.unwrap();
    let mut second = PgTarget::open(&url, &plan).await.unwrap();
    let page = FeedPage {
        items: vec![item(1, Change::Upsert, "e_1", "纠纷")],
        next: 1,
    };
    first.apply(&page).await.unwrap();
    // The second run read the cursor (none yet) before the first one moved it.
    let err = second.apply(&page).await.unwrap_err();
    assert!(err.to_string().contains("another run"), "{err}");
    assert_eq!(cursor(&mut conn, &schema).await, Some(1));
    assert_eq!(rows(&mut conn, &table).await.len(), 1);
    first.close().await;
    second.close().await;
}

#[tokio::test]
async fn one_table_receives_one_subscription() {
    let (schema, _conn) = schema("onesub").await;
    let sink = FeedSink::new(&config(&schema, "")).unwrap();
    let mut feed = ScriptedFeed::new(base_log(), 9);
    sink.run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap();

    let mut second = config(&schema, "");
    second.sink.subscription = "sub_other".to_owned();
    let sink = FeedSink::new(&second).unwrap();
    let mut feed = ScriptedFeed::new(Vec::new(), 0);
    let err = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), "connector_config");
    assert!(err.to_string().contains(SUB), "{err}");
    assert!(
        feed.asked.is_empty(),
        "nothing is asked before the table is checked"
    );
}

#[tokio::test]
async fn the_database_url_is_never_in_an_error() {
    let (schema, _conn) = schema("secret").await;
    let sink = FeedSink::new(&config(&schema, "")).unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    for url in [
        format!("postgres://sifa:pa55w0rd-x@127.0.0.1:{port}/sifa"),
        "postgres://sifa:pa55w0rd-x@[not-a-host/sifa".to_owned(),
        "mysql://sifa:pa55w0rd-x@127.0.0.1/sifa".to_owned(),
    ] {
        let mut feed = ScriptedFeed::new(Vec::new(), 0);
        let err = sink
            .run_with_database(&Secret::new(url), &mut feed, &mut |_: &PageApplied| {})
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("pa55w0rd"), "{text}");
        assert!(!text.contains("sifa:"), "{text}");
    }
    // An unset variable is named, so the operator knows what to set.
    let mut unset = config(&schema, "");
    unset.sink.postgres.url_env = "SAFEGRID_SINK_TEST_UNSET_URL".to_owned();
    let sink = FeedSink::new(&unset).unwrap();
    let mut feed = ScriptedFeed::new(Vec::new(), 0);
    let err = sink
        .run(&mut feed, &mut |_: &PageApplied| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("SAFEGRID_SINK_TEST_UNSET_URL"),
        "{err}"
    );
    // The configuration holds only the variable's name.
    assert!(!format!("{:?}", config(&schema, "")).contains("postgres://"));
}

#[test]
fn table_names_are_plain_identifiers_only() {
    for good in [
        "t",
        "_t1",
        "safegrid_disputes",
        "sifa.disputes",
        &"a".repeat(63),
    ] {
        let name = TableName::parse(good).unwrap();
        assert_eq!(name.to_string(), good);
    }
    for bad in [
        "",
        "Disputes",
        "public.Disputes",
        "a.b.c",
        ".t",
        "s.",
        "\"t\"",
        "t;drop table x",
        "t t",
        "1t",
        "t-1",
        "ｔ",
        "表",
        &"a".repeat(64),
    ] {
        let err = TableName::parse(bad).unwrap_err();
        assert_eq!(err.code(), "connector_config", "{bad}");
    }
    // A bad name in the configuration is refused before anything runs, naming the key.
    let mut config = config("s", "");
    config.sink.postgres.table = "x; DROP TABLE y".to_owned();
    let err = FeedSink::new(&config).unwrap_err();
    assert!(err.to_string().contains("sink.postgres.table"), "{err}");
    config.sink.postgres.table = "s.t".to_owned();
    config.sink.postgres.cursor_table = Some("s.t".to_owned());
    assert!(FeedSink::new(&config).is_err());
    config.sink.postgres.cursor_table = Some("Cursor".to_owned());
    let err = FeedSink::new(&config).unwrap_err();
    assert!(err.to_string().contains("cursor_table"), "{err}");
}

#[test]
fn the_sink_section_is_checked() {
    let refused = |edit: &dyn Fn(&mut FeedSinkConfig)| {
        let mut config = config("s", "");
        edit(&mut config);
        FeedSink::new(&config).unwrap_err().to_string()
    };
    assert!(refused(&|c| c.sink.page_size = Some(1001)).contains("page_size"));
    assert!(refused(&|c| c.sink.page_size = Some(0)).contains("page_size"));
    assert!(refused(&|c| c.sink.max_attempts = Some(0)).contains("max_attempts"));
    assert!(refused(&|c| c.sink.max_pages = Some(0)).contains("max_pages"));
    assert!(refused(&|c| c.sink.timeout_seconds = Some(0)).contains("timeout_seconds"));
    let path = refused(&|c| c.sink.subscription = "sub_1/../../admin".to_owned());
    assert!(path.contains("subscription"), "{path}");
    assert!(refused(&|c| c.sink.subscription = String::new()).contains("subscription"));
}

#[test]
fn a_page_that_breaks_the_feed_contract_is_refused_whole() {
    let good = FeedPage {
        items: vec![
            item(5, Change::Upsert, "e_1", "纠纷"),
            item(7, Change::Delete, "e_2", ""),
        ],
        next: 9,
    };
    good.check(Some(4), SUB).unwrap();
    good.check(None, SUB).unwrap();
    FeedPage {
        items: Vec::new(),
        next: 4,
    }
    .check(Some(4), SUB)
    .unwrap();

    let broken = |edit: &dyn Fn(&mut FeedPage)| {
        let mut page = good.clone();
        edit(&mut page);
        page.check(Some(4), SUB).unwrap_err().to_string()
    };
    let mut first = good.clone();
    first.next = 6;
    assert!(first.check(None, SUB).is_err(), "next before the last item");
    assert!(broken(&|p| p.items[0].seq = 4).contains("does not follow"));
    assert!(broken(&|p| p.items[1].seq = 5).contains("does not follow"));
    assert!(broken(&|p| p.next = 6).contains("before the last item"));
    assert!(broken(&|p| p.next = 3).contains("before the cursor"));
    assert!(broken(&|p| p.items[1].subscription_id = "sub_x".to_owned())
        .contains("another subscription"));
    assert!(broken(&|p| p.items[0].record = None).contains("without a record"));
    assert!(broken(&|p| p.items[0].id = String::new()).contains("id"));
    let text = broken(&|p| p.items[0].record = Some(json!("张三")));
    assert!(!text.contains("张三"), "{text}");
    // Debug never shows a record.
    assert!(!format!("{good:?}").contains("纠纷"));
}
