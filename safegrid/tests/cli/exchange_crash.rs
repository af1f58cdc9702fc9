//! The exchange across a kill -9, with the real `safegrid` binary and a real HTTPS receiver:
//! a department subscribes, many changes are published, the broker is killed with SIGKILL
//! while it is delivering them, and after a restart every change arrives — at least once,
//! none skipped, each entity's changes in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use broker::auth::{TokenRequest, TokenSigner};

use crate::common::{serve_with, Server};
use e2e_tests::receiver::{Received, Receiver};
use serde_json::json;

const GRID: &str = "110105001001003";
const STREET: &str = "110105001";
/// Events published, each in two versions.
const EVENTS: usize = 60;

fn serve(data_dir: &Path, receiver_cert: &Path) -> Server {
    serve_with(
        data_dir,
        &[
            ("SAFEGRID_EXCHANGE_CA_FILE", receiver_cert.as_os_str()),
            ("SAFEGRID_EXCHANGE_MAX_BACKOFF_SECONDS", "1".as_ref()),
        ],
    )
}

fn token(signer: &TokenSigner, role: &str, dept: &str) -> String {
    signer
        .sign(&TokenRequest {
            sub: format!("exchange-crash-{role}"),
            name: None,
            roles: vec![role.to_owned()],
            jurisdiction: vec![STREET.to_owned()],
            dept: Some(dept.to_owned()),
            ttl: Duration::from_secs(600),
        })
        .expect("token")
}

fn events(version: u32) -> String {
    (0..EVENTS)
        .map(|n| {
            format!(
                "{}\n",
                json!({"kind":"event","source_id":format!("WG-{n}"),"version":version,
                    "type":"dispute","title":format!("纠纷{n}第{version}版"),"grid":GRID})
            )
        })
        .collect()
}

async fn publish(client: &reqwest::Client, server: &Server, token: &str, body: String) {
    let response = client
        .post(format!("{}/v1/ingest/wangge", server.url))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("published");
    assert_eq!(response.status(), 200);
}

/// The deliveries the receiver acknowledged, as (seq, entity, title).
fn acknowledged(received: &[Received]) -> Vec<(u64, String, String)> {
    received
        .iter()
        .filter(|d| d.answered == 200)
        .map(Received::json)
        .map(|b| {
            (
                b["seq"].as_u64().unwrap_or(0),
                b["id"].as_str().unwrap_or_default().to_owned(),
                b["record"]["fields"]["title"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_broker_killed_while_delivering_loses_no_change() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data, &receiver.cert);
    let client = broker::client::https_client(&server.cert).unwrap();
    let master = vault::keys::load_master_key(&data, None, false).unwrap();
    let signer = broker::app::dev_token_signer(&data, &master).unwrap();
    let subscriber = token(&signer, "dept_subscriber", "sifa");
    let publisher = token(&signer, "dept_publisher", "wangge");

    let response = client
        .post(format!("{}/v1/subscriptions", server.url))
        .bearer_auth(&subscriber)
        .json(
            &json!({"kinds":["event"],"types":["dispute"],"grids":[STREET],
            "purpose":"dispute_mediation","url":receiver.url("/hook")}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // Two versions of every event: 120 changes.
    publish(&client, &server, &publisher, events(1)).await;
    publish(&client, &server, &publisher, events(2)).await;

    // Killed while it delivers: after some but not all have arrived.
    receiver
        .wait_for(Duration::from_secs(30), "the first deliveries", |r| {
            acknowledged(r).len() >= 10
        })
        .await;
    let mut server = server;
    let child = &mut server.child;
    let killed = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = child.wait();
    let before = acknowledged(&receiver.received()).len();
    assert!(
        before < 2 * EVENTS,
        "the kill came before the end ({before} delivered)"
    );

    let server = serve(&data, &receiver.cert);
    let received = receiver
        .wait_for(
            Duration::from_secs(60),
            "every change after the restart",
            |r| {
                let seqs: BTreeSet<u64> = acknowledged(r).iter().map(|(s, _, _)| *s).collect();
                seqs.len() >= 2 * EVENTS
            },
        )
        .await;
    let delivered = acknowledged(&received);
    let seqs: BTreeSet<u64> = delivered.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(seqs.len(), 2 * EVENTS, "every change, none skipped");
    let (first, last) = (*seqs.first().unwrap(), *seqs.last().unwrap());
    assert_eq!(
        last - first + 1,
        seqs.len() as u64,
        "no gap in the sequence"
    );
    // In order per entity: each entity's sequences only grow in arrival order, except where a
    // delivery in flight at the kill is sent again after the restart (at least once).
    let mut per_entity: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (seq, entity, _) in &delivered {
        per_entity.entry(entity).or_default().push(*seq);
    }
    assert_eq!(per_entity.len(), EVENTS);
    for (entity, seqs) in &per_entity {
        let mut deduped = seqs.clone();
        deduped.dedup();
        assert!(
            deduped.windows(2).all(|w| w[0] < w[1]),
            "{entity}: {seqs:?}"
        );
    }
    server.stop();
}
