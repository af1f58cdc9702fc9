//! Exchange end to end over HTTPS, with a real HTTPS receiver started by each test: a
//! department subscribes to what its sharing agreement allows and receives it signed, cut
//! to its agreement, in order, across a receiver outage and a broker restart; the feed
//! resumes from a cursor; what a department may not receive is refused.

use std::time::Duration;

use broker::config::Config;
use e2e_tests::receiver::{verify_signature, Received, Receiver};
use e2e_tests::{id, TestApp, GRID, OTHER_GRID, STREET};
use serde_json::{json, Value};

const PARTY: &str = "赵志刚";
const PARTY_PHONE: &str = "13712345678";

fn line(value: Value) -> String {
    format!("{value}\n")
}

/// A broker that trusts the receiver's certificate for deliveries.
async fn broker_for(receiver: &Receiver, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::default();
    config.exchange.ca_file = Some(receiver.cert.clone());
    configure(&mut config);
    TestApp::spawn_with(config).await
}

fn subscriber(app: &TestApp, dept: &str) -> String {
    app.token("dept_subscriber", &[STREET], Some(dept))
}

/// POST /v1/subscriptions; returns status and body.
async fn subscribe(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/v1/subscriptions", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the request is sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POST `body` to `path` as `token`; returns status and body.
async fn post(app: &TestApp, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the request is sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn disputes_for_sifa(app: &TestApp, url: Option<String>) -> (String, String) {
    let mut body = json!({"kinds":["event"],"types":["dispute"],"grids":[STREET],
        "purpose":"dispute_mediation"});
    if let Some(url) = url {
        body["url"] = json!(url);
    }
    let (status, created) = subscribe(app, &subscriber(app, "sifa"), body).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().expect("an id").to_owned(),
        created["secret"].as_str().expect("a secret").to_owned(),
    )
}

fn dispute(source_id: &str, version: u32, title: &str, grid: &str, party: &str) -> String {
    line(
        json!({"kind":"event","source_id":source_id,"version":version,"type":"dispute",
        "title":title,"description":format!("{PARTY}（电话{PARTY_PHONE}）与邻居因噪音争吵"),
        "grid":grid,"party_id_numbers":[party]}),
    )
}

async fn publish_party(app: &TestApp) -> String {
    let party = id("11010519700707002");
    app.ingest(
        "gongan",
        line(
            json!({"kind":"resident","source_id":"GA-P","version":"1","id_number":party,
            "name":PARTY,"phone":PARTY_PHONE,"grid":GRID}),
        ),
    )
    .await;
    party
}

fn bodies(received: &[Received]) -> Vec<Value> {
    received.iter().map(Received::json).collect()
}

#[tokio::test]
async fn a_dispute_reaches_the_justice_office_signed_and_cut_to_its_agreement() {
    let receiver = Receiver::start().await;
    let app = broker_for(&receiver, |_| {}).await;
    let party = publish_party(&app).await;
    let (subscription, secret) = disputes_for_sifa(&app, Some(receiver.url("/hook"))).await;

    let published = std::time::Instant::now();
    app.ingest("wangge", dispute("WG-D1", 1, "楼上噪音纠纷", GRID, &party))
        .await;
    let received = receiver
        .wait_for(Duration::from_secs(5), "the dispute", |r| !r.is_empty())
        .await;
    let latency = published.elapsed();
    assert!(
        latency < Duration::from_secs(2),
        "delivered after {latency:?}"
    );
    let delivery = &received[0];
    let body = delivery.json();
    let event = app.unified_id("event", "wangge", "WG-D1").await;
    assert_eq!(body["change"], "upsert", "{body}");
    assert_eq!(body["kind"], "event");
    assert_eq!(body["id"], event.as_str());
    assert_eq!(body["subscription_id"], subscription.as_str());
    assert_eq!(
        delivery
            .headers
            .get("x-safegrid-delivery")
            .map(String::as_str),
        body["delivery_id"].as_str()
    );
    // Signed with the secret shown once; a wrong secret does not verify.
    let t = verify_signature(delivery, &secret).expect("a valid signature");
    assert!((chrono::Utc::now().timestamp() - t).abs() < 60);
    assert!(verify_signature(delivery, &"0".repeat(64)).is_none());
    // Cut to the agreement: the text in clear for mediation, the parties' ID numbers masked.
    let record = &body["record"];
    assert_eq!(
        record["fields"]["title"]["value"], "楼上噪音纠纷",
        "{record}"
    );
    assert_eq!(record["fields"]["type"]["value"], "dispute");
    let text = record.to_string();
    assert!(
        !text.contains(&party),
        "a full ID number was delivered: {text}"
    );
    assert_eq!(record["related"]["parties"][0]["label"], PARTY, "{record}");

    // Not the justice office's: another type, another street, and the resident itself.
    app.ingest(
        "wangge",
        line(
            json!({"kind":"event","source_id":"WG-F1","version":1,"type":"fire_hazard",
            "title":"楼道堆放杂物","grid":GRID}),
        ),
    )
    .await;
    app.ingest(
        "wangge",
        dispute("WG-D9", 1, "外街道纠纷", "110105002001001", &party),
    )
    .await;
    app.ingest(
        "wangge",
        dispute("WG-D2", 1, "第二起纠纷", OTHER_GRID, &party),
    )
    .await;
    let received = receiver
        .wait_for(Duration::from_secs(5), "the second dispute", |r| {
            r.len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received_after = receiver.received();
    assert_eq!(
        received_after.len(),
        received.len(),
        "{:?}",
        bodies(&received_after)
    );
    let second = app.unified_id("event", "wangge", "WG-D2").await;
    assert_eq!(received[1].json()["id"], second.as_str());

    // The department sees where its deliveries stand; each delivery is an audited access.
    let token = subscriber(&app, "sifa");
    let (status, list) = app
        .get(
            &format!("/v1/subscriptions/{subscription}/deliveries?status=delivered"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
    let (_, subscriptions) = app.get("/v1/subscriptions", &token, None).await;
    assert_eq!(subscriptions["items"][0]["delivered"], 2, "{subscriptions}");
    assert!(
        !subscriptions.to_string().contains(&secret),
        "the secret is shown once"
    );
    let compliance = app.compliance();
    let (status, audit) = app
        .get(
            "/v1/audit/records?action=exchange_delivery",
            &compliance,
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let records = audit["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 2, "{audit}");
    assert_eq!(records[0]["actor"]["dept"], "sifa");
    assert_eq!(records[0]["purpose"], "dispute_mediation");
}

#[tokio::test]
async fn every_change_arrives_in_order_after_the_receiver_comes_back() {
    let mut receiver = Receiver::start().await;
    let app = broker_for(&receiver, |config| config.exchange.max_backoff_seconds = 1).await;
    let party = publish_party(&app).await;
    disputes_for_sifa(&app, Some(receiver.url("/hook"))).await;
    receiver.stop();
    // Five changes of two events while nobody listens.
    for (source, version) in [
        ("WG-A", 1),
        ("WG-B", 1),
        ("WG-A", 2),
        ("WG-A", 3),
        ("WG-B", 2),
    ] {
        app.ingest(
            "wangge",
            dispute(
                source,
                version,
                &format!("{source} v{version}"),
                GRID,
                &party,
            ),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.received().is_empty());
    // Then it answers 503 for a while, then it is fine.
    receiver.answer(503);
    receiver.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.answer(200);
    let received = receiver
        .wait_for(Duration::from_secs(20), "all five changes", |r| {
            let mut seqs: Vec<u64> = r
                .iter()
                .filter(|d| d.answered == 200)
                .filter_map(|d| d.json()["seq"].as_u64())
                .collect();
            seqs.dedup();
            seqs.len() >= 5
        })
        .await;
    assert!(
        received.iter().any(|d| d.answered == 503),
        "the receiver refused some first"
    );
    let ok: Vec<Value> = received
        .iter()
        .filter(|d| d.answered == 200)
        .map(Received::json)
        .collect();
    // At least once: every change's sequence arrived; in order: per entity (and here
    // overall) the sequences only grow; the last one of each entity carries its last text.
    let mut seqs: Vec<u64> = ok.iter().filter_map(|b| b["seq"].as_u64()).collect();
    let delivered_in_order = seqs.windows(2).all(|w| w[0] <= w[1]);
    assert!(delivered_in_order, "{seqs:?}");
    seqs.dedup();
    assert_eq!(seqs.len(), 5, "five distinct changes: {seqs:?}");
    let a = app.unified_id("event", "wangge", "WG-A").await;
    let last_a = ok.iter().rev().find(|b| b["id"] == a.as_str()).expect("A");
    assert_eq!(last_a["record"]["fields"]["title"]["value"], "WG-A v3");
}

#[tokio::test]
async fn the_feed_resumes_from_its_cursor_across_a_restart() {
    let receiver = Receiver::start().await;
    let app = broker_for(&receiver, |_| {}).await;
    let party = publish_party(&app).await;
    let (subscription, _) = disputes_for_sifa(&app, None).await;
    for n in 1..=3 {
        app.ingest(
            "wangge",
            dispute(&format!("WG-{n}"), 1, &format!("纠纷{n}"), GRID, &party),
        )
        .await;
    }
    let token = subscriber(&app, "sifa");
    let (status, page) = app
        .get(
            &format!("/v1/subscriptions/{subscription}/feed?limit=2"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["record"]["fields"]["title"]["value"], "纠纷1");
    let next = page["next"].as_u64().expect("next");
    assert_eq!(Some(next), items[1]["seq"].as_u64());

    let app = app.restart().await;
    let (status, page) = app
        .get(
            &format!("/v1/subscriptions/{subscription}/feed?after={next}"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["record"]["fields"]["title"]["value"], "纠纷3");
    // Nothing new: the same cursor back, no items.
    let last = page["next"].as_u64().expect("next");
    let (_, page) = app
        .get(
            &format!("/v1/subscriptions/{subscription}/feed?after={last}"),
            &token,
            None,
        )
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
    assert_eq!(page["next"].as_u64(), Some(last));
    // Another department's subscriber cannot read it.
    let (status, _) = app
        .get(
            &format!("/v1/subscriptions/{subscription}/feed"),
            &subscriber(&app, "gongan"),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_subscription_beyond_what_the_department_may_receive_is_refused() {
    let receiver = Receiver::start().await;
    let app = broker_for(&receiver, |config| {
        config.exchange.allowed_hosts.insert(
            model::Department::Sifa,
            vec!["receiver.sifa.example".to_owned()],
        );
    })
    .await;
    let sifa = subscriber(&app, "sifa");
    let base = json!({"kinds":["event"],"types":["dispute"],"grids":[STREET],
        "purpose":"dispute_mediation"});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let cases = [
        (
            with("url", json!("https://attacker.example/in")),
            403,
            "delivery_host_not_allowed",
        ),
        (
            with("url", json!("http://receiver.sifa.example/in")),
            400,
            "url_not_https",
        ),
        (
            with("url", json!("https://u:p@receiver.sifa.example/in")),
            400,
            "url_invalid",
        ),
        (
            with("purpose", json!("routine_visit")),
            403,
            "no_sharing_agreement",
        ),
        (
            with("types", json!(["fire_hazard"])),
            403,
            "no_sharing_agreement",
        ),
        (
            json!({"kinds":["resident"],"grids":[STREET],"purpose":"dispute_mediation"}),
            403,
            "no_sharing_agreement",
        ),
        (with("kinds", json!(["resident"])), 400, "types_invalid"),
        (
            with("grids", json!(["110105002"])),
            403,
            "grid_outside_jurisdiction",
        ),
        (with("grids", json!(["11010500"])), 400, "grid_invalid"),
        (with("purpose", json!("curiosity")), 400, "purpose_unknown"),
        (with("kinds", json!(["person"])), 400, "kinds_invalid"),
        (with("types", json!(["Dispute!"])), 400, "types_invalid"),
        (with("secret", json!("mine")), 400, "body_invalid"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = subscribe(&app, &sifa, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    // The allowed host is accepted (the URL is checked again before every delivery).
    let (status, created) = subscribe(
        &app,
        &sifa,
        with("url", json!("https://receiver.sifa.example/in")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    // Roles that are not a department's subscriber, and another department, cannot act.
    for token in [
        app.publisher("sifa"),
        app.token("street_officer", &[STREET], None),
        app.compliance(),
    ] {
        let (status, answer) = subscribe(&app, &token, base.clone()).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"]["code"], "role_cannot_subscribe");
    }
    let id = created["id"].as_str().expect("an id");
    let gongan = subscriber(&app, "gongan");
    let (status, list) = app.get("/v1/subscriptions", &gongan, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let response = app
        .client
        .delete(format!("{}/v1/subscriptions/{id}", app.url))
        .bearer_auth(&gongan)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 404);
    let response = app
        .client
        .delete(format!("{}/v1/subscriptions/{id}", app.url))
        .bearer_auth(&sifa)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 204);
    let (_, list) = app.get("/v1/subscriptions", &sifa, None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_is_listed_and_can_be_sent_again() {
    let receiver = Receiver::start().await;
    let app = broker_for(&receiver, |config| {
        config.exchange.retry_for_seconds = 2;
        config.exchange.max_backoff_seconds = 1;
    })
    .await;
    let party = publish_party(&app).await;
    let (subscription, _) = disputes_for_sifa(&app, Some(receiver.url("/hook"))).await;
    receiver.answer(500);
    app.ingest("wangge", dispute("WG-X", 1, "一直失败", GRID, &party))
        .await;
    let token = subscriber(&app, "sifa");
    let failed = {
        let started = std::time::Instant::now();
        loop {
            let (_, list) = app
                .get(
                    &format!("/v1/subscriptions/{subscription}/deliveries?status=failed"),
                    &token,
                    None,
                )
                .await;
            if let Some(item) = list["items"].as_array().and_then(|i| i.first()) {
                break item.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "never failed: {list}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(failed["http_status"], 500, "{failed}");
    assert!(
        failed["attempts"].as_u64() >= Some(2),
        "retried first: {failed}"
    );
    let attempts = receiver.received().len();
    assert!(attempts >= 2);
    // A later change is not held up by the failed one.
    receiver.answer(200);
    app.ingest("wangge", dispute("WG-Y", 1, "后来的纠纷", GRID, &party))
        .await;
    let y = app.unified_id("event", "wangge", "WG-Y").await;
    receiver
        .wait_for(Duration::from_secs(5), "the later change", |r| {
            r.iter().any(|d| d.json()["id"] == y.as_str())
        })
        .await;
    // The department sends the failed one again.
    let delivery = failed["delivery_id"].as_str().expect("an id");
    let response = app
        .client
        .post(format!(
            "{}/v1/subscriptions/{subscription}/deliveries/{delivery}/retry",
            app.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 202);
    receiver
        .wait_for(Duration::from_secs(5), "the retried delivery", |r| {
            r.iter()
                .skip(attempts)
                .any(|d| d.json()["delivery_id"] == delivery)
        })
        .await;
    let (_, list) = app
        .get(
            &format!("/v1/subscriptions/{subscription}/deliveries?status=failed"),
            &token,
            None,
        )
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    // Retrying something that is not a failed delivery of this subscription: 404.
    let response = app
        .client
        .post(format!(
            "{}/v1/subscriptions/{subscription}/deliveries/dlv_nothing/retry",
            app.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn the_sharing_statistics_reflect_what_was_read_and_received() {
    let receiver = Receiver::start().await;
    let app = broker_for(&receiver, |_| {}).await;
    let party = publish_party(&app).await;
    app.ingest(
        "gongan",
        line(json!({"kind":"resident","source_id":"GA-Q","version":"1",
            "id_number":id("11010519800808003"),"name":"钱多多","grid":GRID})),
    )
    .await;
    app.ingest(
        "minzheng",
        line(json!({"kind":"resident","source_id":"MZ-R","version":"1",
            "id_number":id("11010519810909004"),"name":"孙小美","grid":GRID,
            "tags":["低保"]})),
    )
    .await;
    let (subscription, _) = disputes_for_sifa(&app, None).await;
    app.ingest("wangge", dispute("WG-S", 1, "统计用纠纷", GRID, &party))
        .await;

    let officer = app.token("street_officer", &[STREET], None);
    let stats = |app: &TestApp, token: String| {
        let app_url = app.url.clone();
        let client = app.client.clone();
        async move {
            let response = client
                .get(format!("{app_url}/v1/stats/sharing"))
                .bearer_auth(token)
                .send()
                .await
                .expect("sent");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let of = |stats: &Value, dept: &str, field: &str| {
        stats["departments"]
            .as_array()
            .and_then(|d| d.iter().find(|x| x["department"] == dept))
            .map(|x| x[field].clone())
            .unwrap_or(Value::Null)
    };
    let (status, before) = stats(&app, officer.clone()).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(of(&before, "gongan", "published"), 2, "{before}");
    assert_eq!(of(&before, "gongan", "shared"), 0, "{before}");

    // A grid worker reads one gongan resident; civil affairs' analyst reads its own record
    // (not sharing); the justice office pulls the dispute.
    let worker = app.token("grid_worker", &[GRID], None);
    let resident = app.unified_id("resident", "gongan", "GA-Q").await;
    let (status, _) = app
        .get(
            &format!("/v1/residents/{resident}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200);
    let analyst = app.token("dept_analyst", &[STREET], Some("minzheng"));
    let own = app.unified_id("resident", "minzheng", "MZ-R").await;
    let (status, _) = app
        .get(
            &format!("/v1/residents/{own}"),
            &analyst,
            Some("elderly_care"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, page) = app
        .get(
            &format!("/v1/subscriptions/{subscription}/feed"),
            &subscriber(&app, "sifa"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");

    // A grid worker reports a dispute; the community closes it through its lifecycle.
    let worker_reports = app.token("grid_worker", &[GRID], None);
    let community = app.token("community_officer", &[e2e_tests::COMMUNITY], None);
    let (status, reported) = post(
        &app,
        "/v1/reports",
        &worker_reports,
        &json!({"type":"sanitation","title":"楼道垃圾堆放","grid":GRID,
            "occurred_at":(chrono::Utc::now() - chrono::Duration::hours(5)).to_rfc3339()}),
    )
    .await;
    assert_eq!(status, 201, "{reported}");
    let event = reported["id"].as_str().expect("an id").to_owned();
    for (token, to) in [
        (&community, "accepted"),
        (&community, "dispatched"),
        (&community, "in_progress"),
        (&community, "resolved"),
        (&community, "verified"),
        (&community, "closed"),
    ] {
        let (status, moved) = post(
            &app,
            &format!("/v1/events/{event}/transitions"),
            token,
            &json!({ "to": to }),
        )
        .await;
        assert_eq!(status, 200, "{to}: {moved}");
    }
    let (status, _) = post(
        &app,
        "/v1/reports",
        &worker_reports,
        &json!({"type":"sanitation","title":"还没处理","grid":GRID}),
    )
    .await;
    assert_eq!(status, 201);

    let (_, after) = stats(&app, officer).await;
    assert_eq!(after["events"]["reported"], 2, "{after}");
    assert_eq!(after["events"]["closed"], 1, "{after}");
    let hours = after["events"]["median_hours_to_close"]
        .as_f64()
        .expect("a median");
    assert!((4.9..5.2).contains(&hours), "{after}");
    assert_eq!(of(&after, "gongan", "shared"), 1, "{after}");
    assert_eq!(of(&after, "gongan", "sharing_rate"), 0.5, "{after}");
    assert_eq!(of(&after, "minzheng", "shared"), 0, "{after}");
    assert_eq!(of(&after, "wangge", "published"), 3, "{after}");
    assert_eq!(of(&after, "wangge", "shared"), 1, "{after}");
    assert_eq!(after["total"]["published"], 6, "{after}");
    assert_eq!(after["total"]["shared"], 2, "{after}");
    assert!(!after.to_string().contains("钱多多"));
    // Not for grid workers or departments.
    for token in [worker, subscriber(&app, "sifa")] {
        let (status, body) = stats(&app, token).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "role_cannot_read_statistics");
    }
}

#[tokio::test]
async fn agreements_are_policy_shown_in_the_preview_and_changed_only_by_security() {
    let root = tempfile::tempdir().expect("tempdir");
    let policy_dir = root.path().join("policies");
    std::fs::create_dir_all(&policy_dir).expect("dir");
    std::fs::write(policy_dir.join("model.conf"), policies::DEFAULT_MODEL).expect("write");
    std::fs::write(policy_dir.join("policy.csv"), policies::DEFAULT_POLICY).expect("write");
    let config = Config {
        policy_dir: Some(policy_dir),
        ..Config::default()
    };
    let app = TestApp::spawn_with(config).await;
    let weijian = subscriber(&app, "weijian");
    let ask = json!({"kinds":["event"],"types":["elderly_visit"],"grids":[STREET],
        "purpose":"elderly_care"});
    let (status, refused) = subscribe(&app, &weijian, ask.clone()).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "no_sharing_agreement");

    // The compliance officer sees the agreements and the routing in the preview.
    let compliance = app.compliance();
    let (status, preview) = app
        .get(
            "/v1/policy/preview?role=dept_subscriber&purpose=dispute_mediation&dept=sifa",
            &compliance,
            None,
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    let agreements = preview["agreements"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        agreements
            .iter()
            .any(|a| a["class"] == "free_text" && a["type"] == "dispute" && a["level"] == "clear"),
        "{preview}"
    );
    assert!(
        agreements.iter().all(|a| a["receiver"] == "sifa"),
        "{preview}"
    );
    assert_eq!(preview["routing"]["dispute"][0], "sifa", "{preview}");

    // Only the security administrator changes them; a broken line is refused with its line.
    let mut sharing = policies::TableFiles::defaults().sharing;
    sharing.push_str("weijian, event, elderly_visit, public, elderly_care, clear\n");
    let put = |token: String, body: String| {
        let request = app
            .client
            .put(format!("{}/v1/policy/files/sharing.csv", app.url))
            .bearer_auth(token)
            .body(body);
        async move { request.send().await.expect("sent") }
    };
    let response = put(compliance.clone(), sharing.clone()).await;
    assert_eq!(response.status(), 403);
    let response = put(weijian.clone(), sharing.clone()).await;
    assert_eq!(response.status(), 403);
    let response = put(
        app.token("security_admin", &[STREET], None),
        "weijian, event, elderly_visit, public, elderly_care, everything\n".to_owned(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(body.to_string().contains("line 1"), "{body}");
    let response = put(app.token("security_admin", &[STREET], None), sharing).await;
    assert_eq!(response.status(), 200);
    let (status, created) = subscribe(&app, &weijian, ask).await;
    assert_eq!(status, 201, "{created}");
}

#[tokio::test]
async fn a_grid_workers_report_reaches_each_department_within_a_second_as_its_agreement_allows() {
    let receiver = Receiver::start().await;
    let app = broker_for(&receiver, |_| {}).await;
    let party = publish_party(&app).await;
    let party_id = app.unified_id("resident", "gongan", "GA-P").await;
    // The justice office mediates (text in clear); the police station watches (text masked).
    let (status, sifa) = subscribe(
        &app,
        &subscriber(&app, "sifa"),
        json!({"kinds":["event"],"types":["dispute"],"grids":[STREET],
            "purpose":"dispute_mediation","url":receiver.url("/sifa")}),
    )
    .await;
    assert_eq!(status, 201, "{sifa}");
    let (status, gongan) = subscribe(
        &app,
        &subscriber(&app, "gongan"),
        json!({"kinds":["event"],"types":["dispute"],"grids":[STREET],
            "purpose":"routine_visit","url":receiver.url("/gongan")}),
    )
    .await;
    assert_eq!(status, 201, "{gongan}");

    let worker = app.token("grid_worker", &[GRID], None);
    let description = format!("{PARTY}（电话{PARTY_PHONE}）与楼上住户因漏水争吵");
    let sent = std::time::Instant::now();
    let (status, reported) = post(
        &app,
        "/v1/reports",
        &worker,
        &json!({"type":"dispute","title":"楼上漏水纠纷","description":description,
            "grid":GRID,"parties":[party_id]}),
    )
    .await;
    assert_eq!(status, 201, "{reported}");
    assert_eq!(reported["routed_to"], json!(["sifa", "gongan"]));
    let event = reported["id"].as_str().expect("an event id").to_owned();
    let received = receiver
        .wait_for(Duration::from_secs(5), "both deliveries", |r| {
            r.iter()
                .filter(|d| d.json()["id"] == event.as_str())
                .count()
                >= 2
        })
        .await;
    let within = sent.elapsed();
    assert!(
        within < Duration::from_secs(1),
        "delivered after {within:?}"
    );
    let to = |path: &str| {
        received
            .iter()
            .find(|d| d.path == path && d.json()["id"] == event.as_str())
            .expect("a delivery")
            .clone()
    };
    let (for_sifa, for_gongan) = (to("/sifa"), to("/gongan"));
    let sifa_secret = sifa["secret"].as_str().expect("secret");
    let gongan_secret = gongan["secret"].as_str().expect("secret");
    assert!(verify_signature(&for_sifa, sifa_secret).is_some());
    assert!(verify_signature(&for_gongan, gongan_secret).is_some());
    assert!(
        verify_signature(&for_gongan, sifa_secret).is_none(),
        "each department's secret signs only its own deliveries"
    );
    let sifa_record = for_sifa.json()["record"].clone();
    let gongan_record = for_gongan.json()["record"].clone();
    // Mediation reads the text and the parties' names; the police read the text masked.
    assert_eq!(
        sifa_record["fields"]["description"]["value"],
        description.as_str()
    );
    assert_eq!(sifa_record["related"]["parties"][0]["label"], PARTY);
    let masked = gongan_record["fields"]["description"]["value"]
        .as_str()
        .expect("the description, masked");
    assert!(
        !masked.contains(PARTY_PHONE) && !masked.contains(PARTY),
        "{masked}"
    );
    // No ID number, no phone in clear anywhere in either delivery.
    for body in [&for_sifa, &for_gongan] {
        let text = String::from_utf8_lossy(&body.body).to_string();
        assert!(!text.contains(&party), "{text}");
    }
    assert!(!gongan_record.to_string().contains(PARTY_PHONE));
}
