//! Two `safegrid serve` processes on one PostgreSQL store: one is killed with SIGKILL in the
//! middle of a stream of batches; every batch it acknowledged is readable through the other,
//! which goes on storing (the dead broker's write lock went with its connection).
//!
//! Needs the PostgreSQL of `SAFEGRID_TEST_PG_URL` (`bash scripts/test.sh` starts one).

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{fresh_schema, pg_url, serve_with};
use crate::crash::{batch, publish, signer, token, unified_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_under_load_costs_no_acknowledged_batch() {
    let root = tempfile::tempdir().unwrap();
    let schema = fresh_schema("failover");
    let env: Vec<(&str, OsString)> = vec![
        ("SAFEGRID_STORE_BACKEND", "postgres".into()),
        ("SAFEGRID_STORE_URL", pg_url().into()),
        ("SAFEGRID_STORE_SCHEMA", schema.into()),
    ];
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let first_data = root.path().join("first");
    let mut first = serve_with(&first_data, &env);
    // The second broker shares the first one's master key, as brokers on one store must (dev
    // mode reads it beside the data directory).
    let second_data = root.path().join("second");
    std::fs::copy(
        vault::keys::default_master_key_path(&first_data),
        vault::keys::default_master_key_path(&second_data),
    )
    .unwrap();
    let second = serve_with(&second_data, &env);

    let first_client = broker::client::https_client(&first.cert).unwrap();
    let second_client = broker::client::https_client(&second.cert).unwrap();
    let first_publisher = token(&signer(&first_data), "dept_publisher", Some("gongan"));
    let second_signer = signer(&second_data);
    let second_publisher = token(&second_signer, "dept_publisher", Some("gongan"));
    let officer = token(&second_signer, "street_officer", None);

    // Batches of ten through the first broker until it dies; what it acknowledged is noted.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let stream = {
        let (client, url, token) = (first_client.clone(), first.url.clone(), first_publisher);
        let acknowledged = acknowledged.clone();
        tokio::spawn(async move {
            for b in 0..10_000usize {
                let sources: Vec<(String, usize)> = (0..10)
                    .map(|i| (format!("GA-F-{b}-{i}"), b * 10 + i))
                    .collect();
                match publish(&client, &url, &token, batch(&sources)).await {
                    Ok(receipt) if receipt["accepted"] == 10 => acknowledged
                        .lock()
                        .unwrap()
                        .extend(sources.into_iter().map(|(s, _)| s)),
                    Ok(receipt) => panic!("a batch not wholly accepted: {receipt}"),
                    Err(_) => return b,
                }
            }
            10_000
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let batches = stream.await.unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 50,
        "the first broker acknowledged {} records in {batches} batches before it died",
        acknowledged.len()
    );

    // The second broker writes at once: the dead one's write lock is gone with its session.
    let after: Vec<(String, usize)> = (0..10)
        .map(|i| (format!("GA-AFTER-{i}"), 900_000 + i))
        .collect();
    let receipt = tokio::time::timeout(
        Duration::from_secs(20),
        publish(
            &second_client,
            &second.url,
            &second_publisher,
            batch(&after),
        ),
    )
    .await
    .expect("the second broker writes after the first died")
    .unwrap();
    assert_eq!(receipt["accepted"], 10, "{receipt}");

    // Every acknowledged record, and the new ones, are there through the second broker.
    let mut missing = Vec::new();
    for source in acknowledged.iter().chain(after.iter().map(|(s, _)| s)) {
        if unified_id(&second_client, &second.url, &officer, source)
            .await
            .is_none()
        {
            missing.push(source.clone());
        }
    }
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
    second.stop();
}
