//! Brokers on one PostgreSQL store (`[store] backend = "postgres"`): what one broker stores,
//! another serves — profile, search, the change feed its index follows — under the same gate;
//! a broker that stops costs the other nothing; and the database holds no personal value in
//! plaintext.
//!
//! Needs the PostgreSQL of `SAFEGRID_TEST_PG_URL` (`bash scripts/test.sh` starts one) and its
//! `psql` client to read the tables back; fails, never skips, without them.

use std::time::{Duration, Instant};

use broker::config::{Config, StoreBackend, StoreUrl};
use e2e_tests::{
    contains_bytes, fresh_schema, hit_ids, id, postgres_bytes, postgres_store, TestApp, GRID,
    OTHER_GRID, STREET,
};
use serde_json::{json, Value};

fn config(schema: &str) -> Config {
    Config {
        store: broker::config::StoreSection {
            schema: schema.to_owned(),
            ..postgres_store()
        },
        ..Config::default()
    }
}

fn line(value: Value) -> String {
    format!("{value}\n")
}

/// Searches on `app` until `id` is among the hits (its index follows the shared change feed).
async fn search_until_found(app: &TestApp, token: &str, q: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = app
            .get(
                &format!("/v1/residents?q={q}"),
                token,
                Some("routine_visit"),
            )
            .await;
        if status == 200 && hit_ids(&body).iter().any(|hit| hit == id) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{q} never found {id}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_on_one_database_serve_what_either_stored() {
    let schema = fresh_schema("two");
    let mut first = TestApp::spawn_with(config(&schema)).await;
    let id18 = id("11010519800101123");
    let phone = "13698765432";
    first
        .ingest(
            "gongan",
            line(
                json!({"kind":"resident","source_id":"GA-PG-1","version":"1",
            "id_number":id18,"name":"欧阳明轩","birth_date":"1980-01-01","phone":phone,
            "grid":GRID}),
            ),
        )
        .await;
    let resident = first.unified_id("resident", "gongan", "GA-PG-1").await;

    // A second broker, started after the write: its own (empty) index is built from the
    // database, and it opens the first broker's ciphertext with the shared master key.
    let second = TestApp::spawn_sharing(config(&schema), &first.master_key_path()).await;
    let worker = second.token("grid_worker", &[GRID], None);
    let (status, profile) = second
        .get(
            &format!("/v1/residents/{resident}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    let shown = profile.to_string();
    assert!(shown.contains("110105********123"), "masked ID: {profile}");
    assert!(!shown.contains(&id18), "a grid worker sees the ID masked");
    assert!(shown.contains("欧阳明轩"), "{profile}");
    search_until_found(&second, &worker, "欧阳明轩", &resident).await;

    // The gate is the same on the second broker: another grid's worker sees nothing.
    let outsider = second.token("grid_worker", &[OTHER_GRID], None);
    let (status, _) = second
        .get(
            &format!("/v1/residents/{resident}"),
            &outsider,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = second
        .get("/v1/residents?q=欧阳明轩", &outsider, Some("routine_visit"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(hit_ids(&body).is_empty(), "{body}");

    // A write through the second broker reaches the first one's index.
    second
        .ingest(
            "minzheng",
            line(
                json!({"kind":"resident","source_id":"MZ-PG-2","version":"1",
            "id_number":id("11010519900202234"),"name":"司马长风","grid":GRID}),
            ),
        )
        .await;
    let other = second.unified_id("resident", "minzheng", "MZ-PG-2").await;
    let first_worker = first.token("grid_worker", &[GRID], None);
    search_until_found(&first, &first_worker, "司马长风", &other).await;

    // The first broker stops; the second still reads and writes.
    first.stop().await;
    second
        .ingest(
            "gongan",
            line(
                json!({"kind":"resident","source_id":"GA-PG-3","version":"1",
            "id_number":id("11010519700303345"),"name":"诸葛青云","grid":GRID}),
            ),
        )
        .await;
    let third = second.unified_id("resident", "gongan", "GA-PG-3").await;
    search_until_found(&second, &worker, "诸葛青云", &third).await;
    let officer = second.token("street_officer", &[STREET], None);
    let (status, _) = second
        .get(
            &format!("/v1/residents/{resident}"),
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200);

    // Nothing personal in plaintext anywhere in the database: every key, value and member
    // of the schema's tables, read back as bytes.
    let bytes = postgres_bytes(&schema);
    assert!(bytes.len() > 1000, "the tables hold the records");
    for secret in [id18.as_str(), phone, "欧阳明轩", "司马长风", "5432"] {
        assert!(
            !contains_bytes(&bytes, secret.as_bytes()),
            "{secret} is in the database in plaintext"
        );
    }
}

/// One access log for all brokers: a read through the second broker is in the first one's
/// compliance search and in the resident's "who looked at my data" report, at the position
/// the second broker was given; each broker's replica verifies offline as a whole log.
#[tokio::test]
async fn brokers_sharing_a_database_keep_one_access_log() {
    let schema = fresh_schema("audit");
    let mut first = TestApp::spawn_with(config(&schema)).await;
    first
        .ingest(
            "gongan",
            line(
                json!({"kind":"resident","source_id":"GA-AU-1","version":"1",
                "id_number":id("11010519800101123"),"name":"欧阳明轩","grid":GRID}),
            ),
        )
        .await;
    let resident = first.unified_id("resident", "gongan", "GA-AU-1").await;
    let mut second = TestApp::spawn_sharing(config(&schema), &first.master_key_path()).await;
    let worker = second.token("grid_worker", &[GRID], None);
    let read = second
        .get_traced(
            &format!("/v1/residents/{resident}"),
            &worker,
            Some("routine_visit"),
            None,
        )
        .await;
    assert_eq!(read.status, 200, "{}", read.body);

    // The compliance officer asks the first broker, which never served that read.
    let officer = first.compliance();
    let mut found = None;
    for _ in 0..100 {
        let (status, body) = first
            .get(
                &format!("/v1/audit/records?resident={resident}"),
                &officer,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        found = body["records"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["request_id"] == read.request_id.as_str())
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let found = found.expect("the second broker's read is in the first broker's log");
    assert_eq!(found["actor"]["sub"], "test-grid_worker", "{found}");
    let (status, report) = first
        .get(
            &format!("/v1/audit/residents/{resident}/report"),
            &officer,
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let accesses = report["accesses"].as_array().cloned().unwrap_or_default();
    assert!(
        accesses
            .iter()
            .any(|a| a["action"] == "read_resident" && a["roles"] == json!(["grid_worker"])),
        "the resident's report lists the read made through the other broker: {report}"
    );

    // Both replicas hold the same log: each verifies offline with the shared key, and the
    // later one's latest checkpoint covers the earlier one's records.
    let dirs = [first.data_dir.join("audit"), second.data_dir.join("audit")];
    first.stop().await;
    second.stop().await;
    let key = audit::load_public_key(&dirs[0].join("checkpoint-public.key")).unwrap();
    let reports: Vec<audit::VerifyReport> = dirs
        .iter()
        .map(|dir| audit::verify_log_dir(dir, &key, audit::VerifyOptions::default()).unwrap())
        .collect();
    let (a, b) = (&reports[0], &reports[1]);
    let seq = found["seq"].as_u64().expect("seq");
    assert!(
        seq < a.records.min(b.records),
        "{seq}: {} / {}",
        a.records,
        b.records
    );
    // Each replica's signed log is a prefix of the other's (consistency proofs over the
    // files): one log, not two.
    let (shorter, longer) = if a.records <= b.records {
        (0, 1)
    } else {
        (1, 0)
    };
    let signed = reports[shorter]
        .latest_checkpoint
        .clone()
        .expect("a checkpoint at stop");
    let options = audit::VerifyOptions {
        saved_checkpoint: Some(signed.note.clone()),
        ..audit::VerifyOptions::default()
    };
    audit::verify_log_dir(&dirs[longer], &key, options).unwrap();
}

/// A broker pointed at a database it cannot reach does not start, and says which setting to
/// fix without printing the password.
#[tokio::test]
async fn a_broker_without_its_database_refuses_to_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = Config::default();
    config.store.backend = StoreBackend::Postgres;
    config.store.url = Some(StoreUrl::new(format!(
        "postgres://safegrid:pw-Secr3t@127.0.0.1:{port}/safegrid"
    )));
    config.metrics_listen = "127.0.0.1:0".to_owned();
    let root = tempfile::tempdir().unwrap();
    let started = broker::app::start(broker::app::ServeOptions {
        data_dir: root.path().join("data"),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        config,
        master_key: None,
        dev: true,
        insecure_http: false,
    })
    .await;
    let err = format!("{:#}", started.expect_err("no database, no broker"));
    assert!(err.contains("PostgreSQL store"), "{err}");
    assert!(!err.contains("pw-Secr3t"), "{err}");
}

/// Two brokers on one database, one subscription: each change reaches the receiver once (one
/// broker holds the subscription's delivery lease), and when the broker delivering it stops,
/// the other carries on from the stored cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_sharing_a_database_deliver_each_change_once() {
    let receiver = e2e_tests::receiver::Receiver::start().await;
    let schema = fresh_schema("deliver");
    let with_receiver = || {
        let mut config = config(&schema);
        config.exchange.ca_file = Some(receiver.cert.clone());
        config
    };
    let mut first = TestApp::spawn_with(with_receiver()).await;
    let second = TestApp::spawn_sharing(with_receiver(), &first.master_key_path()).await;
    let token = first.token("dept_subscriber", &[STREET], Some("sifa"));
    let response = first
        .client
        .post(format!("{}/v1/subscriptions", first.url))
        .bearer_auth(&token)
        .json(
            &json!({"kinds":["event"],"types":["dispute"],"grids":[STREET],
            "purpose":"dispute_mediation","url":receiver.url("/hook")}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let dispute = |n: usize| {
        line(
            json!({"kind":"event","source_id":format!("WG-PG-{n}"),"version":1,
            "type":"dispute","title":format!("楼道堆物纠纷{n}"),"grid":GRID}),
        )
    };
    // Batches through both brokers at once: both workers wake to the same changes.
    for round in 0..3 {
        let batch = |from: usize| (from..from + 5).map(dispute).collect::<String>();
        tokio::join!(
            first.ingest("wangge", batch(round * 10)),
            second.ingest("wangge", batch(round * 10 + 5)),
        );
    }
    let seqs = |received: &[e2e_tests::receiver::Received]| -> Vec<u64> {
        received
            .iter()
            .filter(|r| r.answered == 200)
            .filter_map(|r| r.json()["seq"].as_u64())
            .collect()
    };
    receiver
        .wait_for(Duration::from_secs(20), "thirty disputes", |r| {
            seqs(r).len() >= 30
        })
        .await;
    // Both brokers had every chance to send them again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivered = seqs(&receiver.received());
    let distinct: std::collections::BTreeSet<u64> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), 30, "each change once: {delivered:?}");
    assert_eq!(distinct.len(), 30);

    // One broker stops (cleanly: a holder hands its lease over); the other delivers the rest.
    first.stop().await;
    for n in 30..32 {
        second.ingest("wangge", dispute(n)).await;
    }
    receiver
        .wait_for(Duration::from_secs(20), "32 disputes", |r| {
            seqs(r).len() >= 32
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = seqs(&receiver.received());
    let distinct: std::collections::BTreeSet<u64> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), 32, "each change once: {delivered:?}");
    assert_eq!(distinct.len(), 32);
}
