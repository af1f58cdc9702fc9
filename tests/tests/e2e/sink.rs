//! A department without a web server receives its subscription into its own PostgreSQL: a real
//! broker's feed (`GET /v1/subscriptions/{id}/feed`) pulled by the sink connector over TLS with
//! a `dept_subscriber` token, applied page by page with the cursor, resumed on the next run.
//!
//! Needs the PostgreSQL of `SAFEGRID_TEST_PG_URL` (`bash scripts/test.sh` starts one) and its
//! `psql` client to look at the rows; fails, never skips, without them.

use connectors::feed_sink::{run_from_broker, PageApplied, SinkReport};
use connectors::{FeedSinkConfig, Secret};
use e2e_tests::{psql, TestApp, GRID, STREET};
use serde_json::{json, Value};

/// The variable the sink's configuration names for its database URL.
const URL_ENV: &str = "SAFEGRID_TEST_PG_URL";

fn dispute(source_id: &str, version: u64, title: &str) -> String {
    json!({"kind": "event", "source_id": source_id, "version": version, "type": "dispute",
        "title": title, "grid": GRID})
    .to_string()
}

/// Runs the sink until its runs together applied `until_upserts` upserts (the feed may trail
/// the store by a moment; a run that finds nothing new changes nothing), and sums the reports.
async fn run_sink(
    app: &TestApp,
    config: &FeedSinkConfig,
    token: &str,
    until_upserts: usize,
) -> SinkReport {
    let ca = app.data_dir.join("dev/tls-cert.pem");
    let started = std::time::Instant::now();
    let mut total: Option<SinkReport> = None;
    loop {
        let client = broker::client::https_client(&ca).expect("an HTTPS client for the dev CA");
        let mut pages = Vec::new();
        let report = run_from_broker(
            config,
            client,
            &app.url,
            &Secret::new(token),
            &mut |page: &PageApplied| pages.push(*page),
        )
        .await
        .expect("the sink runs");
        assert_eq!(pages.len(), report.pages);
        let total = match total.as_mut() {
            None => total.insert(report),
            Some(total) => {
                total.pages += report.pages;
                total.changes += report.changes;
                total.upserts += report.upserts;
                total.deletes += report.deletes;
                total.skipped += report.skipped;
                total.cursor = report.cursor;
                total.caught_up = report.caught_up;
                total
            }
        };
        if total.upserts >= until_upserts {
            return total.clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the feed did not bring {until_upserts} upserts: {total:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_subscription_lands_in_postgresql_and_resumes_from_its_cursor() {
    let app = TestApp::spawn().await;
    let subscriber = app.token("dept_subscriber", &[STREET], Some("sifa"));

    let response = app
        .client
        .post(format!("{}/v1/subscriptions", app.url))
        .bearer_auth(&subscriber)
        .json(
            &json!({"kinds": ["event"], "types": ["dispute"], "grids": [STREET],
            "purpose": "dispute_mediation", "url": "https://127.0.0.1:1/unused"}),
        )
        .send()
        .await
        .expect("the subscription request is sent");
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, 201, "{body}");
    let subscription = body["id"].as_str().expect("a subscription id").to_owned();

    app.ingest(
        "wangge",
        format!(
            "{}\n{}\n",
            dispute("WG-D1", 1, "邻里噪音纠纷"),
            dispute("WG-D2", 1, "停车位纠纷")
        ),
    )
    .await;
    let d1 = app.unified_id("event", "wangge", "WG-D1").await;
    let d2 = app.unified_id("event", "wangge", "WG-D2").await;

    let schema = format!("sink_e2e_{}", std::process::id());
    psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ));
    let table = format!("{schema}.disputes");
    let config = FeedSinkConfig::from_toml(&format!(
        r#"
department = "sifa"
name = "sifa-disputes-to-pg"
[sink]
subscription = "{subscription}"
page_size = 1
[sink.postgres]
url_env = "{URL_ENV}"
table = "{table}"
"#
    ))
    .expect("a valid sink configuration");

    // First run: both disputes, one page each, from where the subscription started.
    let first = run_sink(&app, &config, &subscriber, 2).await;
    assert_eq!((first.upserts, first.deletes, first.skipped), (2, 0, 0));
    assert!(first.caught_up);
    let cursor = first.cursor.expect("a cursor after the first run");
    let rows = |table: &str| {
        psql(&format!(
            "SELECT id, kind, seq, change, record->>'id' FROM {table} ORDER BY seq"
        ))
        .lines()
        .map(|line| line.split('|').map(str::to_owned).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    };
    let before = rows(&table);
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(
        before.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        vec![d1.as_str(), d2.as_str()]
    );
    for row in &before {
        assert_eq!((row[1].as_str(), row[3].as_str()), ("event", "upsert"));
        // The record is the profile as sifa may see it.
        assert_eq!(row[4], row[0], "{row:?}");
        let seq: u64 = row[2].parse().unwrap();
        assert!(seq <= cursor, "{seq} > {cursor}");
    }
    let stored_cursor = psql(&format!(
        "SELECT next_seq FROM {schema}.safegrid_sink_cursor \
         WHERE target_table = '{table}' AND subscription_id = '{subscription}'"
    ));
    assert_eq!(stored_cursor.trim(), cursor.to_string());

    // An update of the first dispute and a third one: only these are applied.
    app.ingest(
        "wangge",
        format!(
            "{}\n{}\n",
            dispute("WG-D1", 2, "邻里噪音纠纷（已调解）"),
            dispute("WG-D3", 1, "漏水纠纷")
        ),
    )
    .await;
    let d3 = app.unified_id("event", "wangge", "WG-D3").await;
    let second = run_sink(&app, &config, &subscriber, 2).await;
    assert_eq!(second.cursor_from, Some(cursor));
    assert_eq!((second.changes, second.upserts, second.skipped), (2, 2, 0));
    let next_cursor = second.cursor.expect("a cursor");
    assert!(next_cursor > cursor);
    let after = rows(&table);
    assert_eq!(after.len(), 3, "{after:?}");
    let seq_of = |rows: &[Vec<String>], id: &str| -> u64 {
        rows.iter()
            .find(|r| r[0] == id)
            .map(|r| r[2].parse().unwrap())
            .unwrap()
    };
    // The second dispute did not change: its row is the one the first run wrote.
    assert_eq!(seq_of(&after, &d2), seq_of(&before, &d2));
    for id in [&d1, &d3] {
        let seq = seq_of(&after, id);
        assert!(cursor < seq && seq <= next_cursor, "{id}: {seq}");
    }

    // Nothing new: one request, nothing written, the cursor stays.
    let client = broker::client::https_client(&app.data_dir.join("dev/tls-cert.pem")).unwrap();
    let idle = run_from_broker(
        &config,
        client,
        &app.url,
        &Secret::new(&subscriber),
        &mut |_: &PageApplied| {},
    )
    .await
    .unwrap();
    assert_eq!((idle.pages, idle.changes), (0, 0));
    assert_eq!(idle.cursor, Some(next_cursor));

    // Another department's token cannot read this subscription; the error names the status.
    let other = app.token("dept_subscriber", &[STREET], Some("minzheng"));
    let client = broker::client::https_client(&app.data_dir.join("dev/tls-cert.pem")).unwrap();
    let err = run_from_broker(
        &config,
        client,
        &app.url,
        &Secret::new(&other),
        &mut |_: &PageApplied| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("HTTP 404") || err.contains("HTTP 403"),
        "{err}"
    );
    assert!(!err.contains(&other), "the token is never printed");
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}
