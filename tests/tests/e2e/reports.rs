//! Reports, visits and the event lifecycle end to end: what a grid worker records reaches
//! the right departments, its parties' profiles and search, and moves from 上报 to 结案 step
//! by step with its history; overdue events are listed until they are closed. And, side by
//! side, what must be refused: parties and grids outside the caller's jurisdiction, ID
//! numbers as parties, roles that may not report or move, skipped states, departments acting
//! on events not routed to them, departments' own events, oversized text and fields a report
//! does not take.

use std::time::{Duration, Instant};

use e2e_tests::{hit_ids, id, TestApp, COMMUNITY, GRID, OTHER_GRID, STREET};
use serde_json::{json, Value};

/// The other community of the street (where [`OTHER_GRID`] lies).
const OTHER_COMMUNITY: &str = "110105001002";
const ADDRESS: &str = "北京市朝阳区望京街道幸福里小区3号楼2单元501";

struct Street {
    /// 张三, in [`GRID`].
    zhang: String,
    zhang_id_number: String,
    /// 李四, in [`GRID`].
    li: String,
    /// 王五, in [`OTHER_GRID`].
    wang: String,
}

async fn street(app: &TestApp) -> Street {
    let zhang_id_number = id("11010519491231002");
    let residents = [
        json!({"kind":"resident","source_id":"GA-1","version":"1","id_number":zhang_id_number,
            "name":"张三","phone":"13812345678","address":ADDRESS,"grid":GRID}),
        json!({"kind":"resident","source_id":"GA-2","version":"1","id_number":id("11010519800101001"),
            "name":"李四","grid":GRID}),
        json!({"kind":"resident","source_id":"GA-3","version":"1","id_number":id("11010519650303004"),
            "name":"王五","grid":OTHER_GRID}),
    ];
    let body: String = residents.iter().map(|r| format!("{r}\n")).collect();
    let receipt = app.ingest("gongan", body).await;
    assert_eq!(receipt["accepted"], 3, "{receipt}");
    Street {
        zhang: app.unified_id("resident", "gongan", "GA-1").await,
        zhang_id_number,
        li: app.unified_id("resident", "gongan", "GA-2").await,
        wang: app.unified_id("resident", "gongan", "GA-3").await,
    }
}

/// POST a JSON body with a token; returns status and JSON body.
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

/// Moves `event` to `to` as `token`; returns status and body.
async fn move_to(
    app: &TestApp,
    event: &str,
    token: &str,
    to: &str,
    note: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({ "to": to });
    if let Some(note) = note {
        body["note"] = json!(note);
    }
    post(
        app,
        &format!("/v1/events/{event}/transitions"),
        token,
        &body,
    )
    .await
}

/// A dispute in [`GRID`] between the given parties, occurred `hours_ago`.
fn dispute(parties: &[&str], hours_ago: i64) -> Value {
    json!({"type":"dispute","title":"幸福里3号楼装修噪音纠纷",
        "description":"张三与李四因装修噪音发生争执，网格员已现场劝解。",
        "grid":GRID,"address":ADDRESS,"parties":parties,
        "occurred_at":(chrono::Utc::now() - chrono::Duration::hours(hours_ago)).to_rfc3339()})
}

/// Reports `body` as `token`, asserting 201; returns the event's id.
async fn report(app: &TestApp, token: &str, body: &Value) -> String {
    let (status, answer) = post(app, "/v1/reports", token, body).await;
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().expect("an event id").to_owned()
}

/// The ids an events search finds, once the index shows `expected` of them (within 10 s).
async fn events_found(app: &TestApp, query: &str, token: &str, expected: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let (status, body) = app
            .get(&format!("/v1/events?{query}"), token, Some("routine_visit"))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        let ids = hit_ids(&body);
        if ids.len() == expected && body["total"] == expected {
            return ids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{query}: expected {expected} events, the index shows {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Audit records of a compliance search.
async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = app
        .get(
            &format!("/v1/audit/records?{query}"),
            &app.compliance(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body["records"].as_array().expect("records").clone()
}

#[tokio::test]
async fn a_reported_dispute_reaches_its_parties_and_search_and_moves_to_closed_with_its_history() {
    let app = TestApp::spawn().await;
    let people = street(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let community = app.token("community_officer", &[COMMUNITY], None);
    let street_officer = app.token("street_officer", &[STREET], None);
    let sifa = app.token("dept_subscriber", &[STREET], Some("sifa"));

    let (status, answer) = post(
        &app,
        "/v1/reports",
        &worker,
        &dispute(&[&people.zhang, &people.li], 1),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["status"], "reported");
    assert_eq!(
        answer["routed_to"],
        json!(["sifa", "gongan"]),
        "routing.csv"
    );
    let event = answer["id"].as_str().unwrap().to_owned();
    assert!(event.starts_with("e_"), "{event}");

    let (status, profile) = app
        .get(
            &format!("/v1/events/{event}"),
            &worker,
            Some("dispute_mediation"),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["fields"]["status"]["value"], "reported");
    assert_eq!(profile["fields"]["type"]["value"], "dispute");
    assert_eq!(
        profile["fields"]["routed_to"]["value"],
        json!(["sifa", "gongan"])
    );
    assert_eq!(
        profile["fields"]["reported_by"]["value"],
        "test-grid_worker"
    );
    assert_eq!(profile["sources"][0]["department"], "wangge");
    assert!(profile["sources"][0]["source_id"]
        .as_str()
        .unwrap()
        .starts_with("RPT-"));
    let mut parties: Vec<&str> = profile["related"]["parties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    parties.sort_unstable();
    let mut expected = vec![people.zhang.as_str(), people.li.as_str()];
    expected.sort_unstable();
    assert_eq!(parties, expected);

    assert_eq!(
        events_found(&app, "q=噪音", &worker, 1).await,
        std::slice::from_ref(&event)
    );
    let (status, zhang) = app
        .get(
            &format!("/v1/residents/{}", people.zhang),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        zhang["related"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == event.as_str()),
        "the party's profile lists the event: {zhang}"
    );

    // 受理 -> 分拨 -> 处置 (the justice office the dispute was routed to) -> 办结 -> 核查 -> 结案.
    let steps = [
        (
            &community,
            "accepted",
            Some("已受理，约张三明日到司法所调解"),
        ),
        (&community, "dispatched", None),
        (&sifa, "in_progress", Some("司法所已介入调解")),
        (&worker, "resolved", Some("双方达成调解协议")),
        (&worker, "verified", None),
        (&community, "closed", Some("结案")),
    ];
    let mut from = "reported";
    for (token, to, note) in steps {
        let (status, moved) = move_to(&app, &event, token, to, note).await;
        assert_eq!(status, 200, "{from} -> {to}: {moved}");
        assert_eq!(
            (moved["from"].as_str(), moved["status"].as_str()),
            (Some(from), Some(to))
        );
        from = to;
    }
    let (status, refused) = move_to(&app, &event, &community, "accepted", None).await;
    assert_eq!(status, 409);
    assert_eq!(refused["error"]["code"], "transition_invalid");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no further"),
        "{refused}"
    );

    // The history, in full for those who may read free text: every step with its actor.
    let (status, profile) = app
        .get(
            &format!("/v1/events/{event}"),
            &street_officer,
            Some("case_investigation"),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["fields"]["status"]["value"], "closed");
    let history = profile["fields"]["history"]["value"].as_array().unwrap();
    let steps: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap(),
                h["to"].as_str().unwrap(),
                h["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("reported", "accepted", "test-community_officer"),
            ("accepted", "dispatched", "test-community_officer"),
            ("dispatched", "in_progress", "test-dept_subscriber"),
            ("in_progress", "resolved", "test-grid_worker"),
            ("resolved", "verified", "test-grid_worker"),
            ("verified", "closed", "test-community_officer"),
        ]
    );
    assert_eq!(history[0]["note"], "已受理，约张三明日到司法所调解");
    assert!(history[0]["at"].as_str().is_some());
    // A worker, who reads free text masked, does not read the notes: they may name people.
    let (_, masked) = app
        .get(
            &format!("/v1/events/{event}"),
            &worker,
            Some("dispute_mediation"),
        )
        .await;
    let shown = &masked["fields"]["history"];
    assert_eq!(shown["value"].as_array().map(Vec::len), Some(6), "{shown}");
    assert!(!shown.to_string().contains("张三"), "{shown}");
    assert_eq!(
        shown["value"][0]["to"], "accepted",
        "the steps show: {shown}"
    );
    assert!(
        shown["value"][0]["note"]
            .as_str()
            .unwrap()
            .contains("司法所调解"),
        "the note shows, its names redacted: {shown}"
    );
    assert_eq!(masked["fields"]["status"]["value"], "closed");

    // Every step is in the access log, with the residents it concerns.
    let moves = audit(&app, &format!("action=transition_event&entity={event}")).await;
    let outcomes: Vec<&str> = moves
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "from=reported to=accepted",
            "from=accepted to=dispatched",
            "from=dispatched to=in_progress",
            "from=in_progress to=resolved",
            "from=resolved to=verified",
            "from=verified to=closed",
        ]
    );
    assert!(moves
        .iter()
        .all(|r| r["residents"].as_array().unwrap().len() == 2));
    let reported = audit(&app, &format!("action=report_event&entity={event}")).await;
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0]["actor"]["sub"], "test-grid_worker");
    assert_eq!(reported[0]["outcome"], "type=dispute routed_to=sifa,gongan");
    let by_resident = audit(
        &app,
        &format!("action=report_event&resident={}", people.zhang),
    )
    .await;
    assert_eq!(
        by_resident.len(),
        1,
        "a compliance officer finds reports about a resident"
    );
}

#[tokio::test]
async fn a_visit_is_an_event_of_its_resident() {
    let app = TestApp::spawn().await;
    let people = street(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let (status, answer) = post(
        &app,
        "/v1/visits",
        &worker,
        &json!({"resident":people.zhang,"purpose":"elderly_care","note":"独居老人，身体尚可，需定期探访。"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["routed_to"],
        json!([]),
        "visits go nowhere by default"
    );
    let visit = answer["id"].as_str().unwrap().to_owned();
    let (status, profile) = app
        .get(
            &format!("/v1/events/{visit}"),
            &worker,
            Some("elderly_care"),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["fields"]["type"]["value"], "visit");
    assert_eq!(profile["grid"], GRID, "the resident's grid");
    assert_eq!(
        profile["related"]["parties"][0]["id"],
        people.zhang.as_str()
    );
    assert_eq!(profile["attributes"]["wangge"]["purpose"], "elderly_care");
    assert!(
        profile["fields"]["description"].is_object(),
        "the note: {profile}"
    );
    let (_, zhang) = app
        .get(
            &format!("/v1/residents/{}", people.zhang),
            &worker,
            Some("elderly_care"),
        )
        .await;
    assert!(zhang["related"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == visit.as_str()));

    // Refused: someone outside the worker's grids (exactly like no one), an ID number, a
    // purpose that is not configured, a field a visit does not take.
    let unknown = "r_00000000000000000000";
    let mut answers = Vec::new();
    for resident in [people.wang.as_str(), unknown] {
        let (status, body) = post(
            &app,
            "/v1/visits",
            &worker,
            &json!({"resident":resident,"purpose":"routine_visit"}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "party_unknown");
        answers.push(body);
    }
    assert_eq!(
        answers[0], answers[1],
        "outside the jurisdiction answers like no one"
    );
    let (status, body) = post(
        &app,
        "/v1/visits",
        &worker,
        &json!({"resident":people.zhang_id_number,"purpose":"routine_visit"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("party_invalid"))
    );
    assert!(!body.to_string().contains(&people.zhang_id_number[..10]));
    for (request, code) in [
        (
            json!({"resident":people.zhang,"purpose":"sightseeing"}),
            "purpose_unknown",
        ),
        (
            json!({"resident":people.zhang,"purpose":"routine_visit","grid":OTHER_GRID}),
            "field_unknown",
        ),
        (json!({"purpose":"routine_visit"}), "field_missing"),
    ] {
        let (status, body) = post(&app, "/v1/visits", &worker, &request).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{request}"
        );
    }
}

#[tokio::test]
async fn reports_outside_the_callers_reach_or_shape_are_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let people = street(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let street_officer = app.token("street_officer", &[STREET], None);

    // Parties: another grid's resident answers exactly like one that does not exist.
    let mut answers = Vec::new();
    for party in [people.wang.as_str(), "r_00000000000000000000"] {
        let (status, body) = post(&app, "/v1/reports", &worker, &dispute(&[party], 1)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "party_unknown");
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1]);
    // The street officer may name them: the refusal above was the worker's jurisdiction.
    report(
        &app,
        &street_officer,
        &dispute(&[&people.wang, &people.zhang], 1),
    )
    .await;

    // An ID number is never a party, and the refusal does not repeat it.
    let (status, body) = post(
        &app,
        "/v1/reports",
        &worker,
        &dispute(&[&people.zhang, &people.zhang_id_number], 1),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("party_invalid"))
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("parties[1]"));
    assert!(!body.to_string().contains(&people.zhang_id_number[6..14]));

    // Another grid.
    let mut elsewhere = dispute(&[], 1);
    elsewhere["grid"] = json!(OTHER_GRID);
    let (status, body) = post(&app, "/v1/reports", &worker, &elsewhere).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("grid_outside_jurisdiction"))
    );

    // Roles that do not report.
    for token in [
        app.publisher("wangge"),
        app.compliance(),
        app.token("dept_subscriber", &[STREET], Some("sifa")),
    ] {
        let (status, body) = post(&app, "/v1/reports", &token, &dispute(&[], 1)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("role_cannot_report")),
            "{body}"
        );
    }

    // The model's limits, and fields a report does not take (a version, a status, parties
    // by ID number, the fields only the broker writes).
    let with = |key: &str, value: Value| {
        let mut body = dispute(&[], 1);
        body[key] = value;
        body
    };
    let cases = [
        (with("title", json!("纠".repeat(201))), "field_too_long"),
        (
            with("description", json!("纠".repeat(10_001))),
            "field_too_long",
        ),
        (
            with("title", json!("噪音\u{7}纠纷")),
            "field_control_characters",
        ),
        (with("type", json!("Dispute!")), "type_invalid"),
        (with("grid", json!("110105")), "grid_invalid"),
        (
            with("occurred_at", json!("2099-01-01T00:00:00Z")),
            "occurred_at_in_future",
        ),
        (with("occurred_at", json!("last week")), "date_format"),
        (
            with("parties", json!("r_00000000000000000000")),
            "field_type",
        ),
        (
            with("version", json!("2026-11-20T08:00:00Z")),
            "field_unknown",
        ),
        (with("status", json!("closed")), "field_unknown"),
        (with("source_id", json!("RPT-mine")), "field_unknown"),
        (
            with("party_id_numbers", json!([people.zhang_id_number])),
            "field_unknown",
        ),
        (with("reported_by", json!("someone-else")), "field_unknown"),
        (with("routed_to", json!(["gongan"])), "field_unknown"),
    ];
    for (body, code) in cases {
        let (status, answer) = post(&app, "/v1/reports", &worker, &body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{answer}"
        );
    }
    let parties: Vec<String> = (0..51).map(|i| format!("r_{i:020x}")).collect();
    let parties: Vec<&str> = parties.iter().map(String::as_str).collect();
    let (status, answer) = post(&app, "/v1/reports", &worker, &dispute(&parties, 1)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("too_many_parties"))
    );

    // Only the street officer's report was stored.
    let found = events_found(&app, "q=噪音", &street_officer, 1).await;
    assert_eq!(found.len(), 1);
    // And every refusal is in the access log, with its reason.
    let refused = audit(&app, "action=refused&actor=test-grid_worker").await;
    let reasons: Vec<&str> = refused
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    for code in [
        "party_unknown",
        "party_invalid",
        "grid_outside_jurisdiction",
        "field_unknown",
        "field_too_long",
    ] {
        assert!(reasons.contains(&code), "{code} in {reasons:?}");
    }
    let roles = audit(&app, "action=refused&actor=test-compliance_officer").await;
    assert!(roles.iter().any(|r| r["outcome"] == "role_cannot_report"));
}

#[tokio::test]
async fn the_lifecycle_refuses_wrong_roles_skipped_states_and_events_it_does_not_manage() {
    let app = TestApp::spawn().await;
    let people = street(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let community = app.token("community_officer", &[COMMUNITY], None);
    let other_community = app.token("community_officer", &[OTHER_COMMUNITY], None);
    let sifa = app.token("dept_subscriber", &[STREET], Some("sifa"));
    let yingji = app.token("dept_subscriber", &[STREET], Some("yingji"));
    let event = report(&app, &worker, &dispute(&[&people.zhang], 1)).await;
    let code = |answer: &(u16, Value)| {
        (
            answer.0,
            answer.1["error"]["code"].as_str().map(str::to_owned),
        )
    };

    // A grid worker may not close (nor accept) an event: the policy's transitions.
    for to in ["closed", "accepted"] {
        let answer = move_to(&app, &event, &worker, to, None).await;
        assert_eq!(
            code(&answer),
            (403, Some("transition_not_allowed".to_owned())),
            "{to}"
        );
    }
    // Skipping a state: the answer names the states the event may move to.
    let answer = move_to(&app, &event, &community, "dispatched", None).await;
    assert_eq!(code(&answer), (409, Some("transition_invalid".to_owned())));
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("accepted or rejected"), "{message}");
    // Outside the officer's jurisdiction: exactly like no such event.
    let outside = move_to(&app, &event, &other_community, "accepted", None).await;
    let missing = move_to(&app, "e_00000000000000000000", &community, "accepted", None).await;
    let malformed = move_to(&app, "not-an-id", &community, "accepted", None).await;
    assert_eq!(outside.0, 404);
    assert_eq!(outside, missing);
    assert_eq!(outside, malformed);

    for (token, to) in [(&community, "accepted"), (&community, "dispatched")] {
        assert_eq!(move_to(&app, &event, token, to, None).await.0, 200, "{to}");
    }
    // A department acts only on events routed to it: emergency management was not.
    let answer = move_to(&app, &event, &yingji, "in_progress", None).await;
    assert_eq!(answer, missing);
    assert_eq!(
        move_to(&app, &event, &sifa, "in_progress", None).await.0,
        200
    );
    // Nor may a department close what it handled.
    let answer = move_to(&app, &event, &sifa, "closed", None).await;
    assert_eq!(
        code(&answer),
        (403, Some("transition_not_allowed".to_owned()))
    );

    // Bodies: the start is no target, a move takes no other fields.
    for (body, expected) in [
        (json!({"to":"reported"}), "state_unknown"),
        (json!({"to":"done"}), "state_unknown"),
        (json!({"to":"resolved","status":"closed"}), "field_unknown"),
        (json!({"note":"x"}), "field_missing"),
        (
            json!({"to":"resolved","note":"x".repeat(2_001)}),
            "field_too_long",
        ),
    ] {
        let answer = post(
            &app,
            &format!("/v1/events/{event}/transitions"),
            &worker,
            &body,
        )
        .await;
        assert_eq!(code(&answer), (400, Some(expected.to_owned())), "{body}");
    }

    // A department's own published event does not move through the lifecycle, and a
    // department cannot publish what only the broker writes.
    let receipt = app
        .ingest(
            "wangge",
            format!(
                "{}\n{}\n",
                json!({"kind":"event","source_id":"WG-1","version":"1","type":"dispute",
                    "title":"楼道堆物","grid":GRID,"status":"reported"}),
                json!({"kind":"event","source_id":"WG-2","version":"1","type":"dispute",
                    "title":"楼道堆物","grid":GRID,"status":"reported","reported_by":"gw-1",
                    "party_entities":[people.zhang]}),
            ),
        )
        .await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    assert_eq!(receipt["rejected"][0]["code"], "field_unknown");
    let published = app.unified_id("event", "wangge", "WG-1").await;
    let answer = move_to(&app, &published, &community, "accepted", None).await;
    assert_eq!(code(&answer), (409, Some("event_not_managed".to_owned())));

    // Two officers accepting one event at once: one move is stored, the other refused
    // (`transition_conflict` when both read it reported, `transition_invalid` when the
    // second read it accepted).
    let second = report(&app, &worker, &dispute(&[], 1)).await;
    let street_officer = app.token("street_officer", &[STREET], None);
    let (a, b) = tokio::join!(
        move_to(&app, &second, &community, "accepted", Some("社区受理")),
        move_to(&app, &second, &street_officer, "accepted", Some("街道受理")),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (_, profile) = app
        .get(
            &format!("/v1/events/{second}"),
            &street_officer,
            Some("case_investigation"),
        )
        .await;
    assert_eq!(profile["fields"]["status"]["value"], "accepted");
    let history = profile["fields"]["history"]["value"].as_array().unwrap();
    assert_eq!(history.len(), 1, "one move stored: {history:?}");

    // Refusals are audited, out-of-scope ones as such.
    let denied = audit(
        &app,
        &format!("action=transition_event&decision=deny&entity={event}"),
    )
    .await;
    let outcomes: Vec<&str> = denied
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["out_of_scope", "out_of_scope"], "{denied:?}");
}

#[tokio::test]
async fn overdue_lists_open_events_past_their_deadline_and_not_once_closed() {
    let app = TestApp::spawn().await;
    street(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let community = app.token("community_officer", &[COMMUNITY], None);
    // With the default deadline (168 hours for every type): eight days ago is late, an hour
    // ago is not.
    let mut late = dispute(&[], 8 * 24);
    late["title"] = json!("八天前的纠纷");
    let late = report(&app, &worker, &late).await;
    let fresh = report(&app, &worker, &dispute(&[], 1)).await;
    events_found(&app, "", &worker, 2).await;
    assert_eq!(
        events_found(&app, "overdue=true", &worker, 1).await,
        std::slice::from_ref(&late)
    );
    assert_eq!(
        events_found(&app, "overdue=true&type=sanitation", &worker, 0).await,
        Vec::<String>::new()
    );
    let (status, body) = app
        .get("/v1/residents?overdue=true", &worker, Some("routine_visit"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("filter_not_supported"))
    );

    // Accepted is still open; once closed it is no longer overdue.
    assert_eq!(
        move_to(&app, &late, &community, "accepted", None).await.0,
        200
    );
    assert_eq!(
        events_found(&app, "status=accepted", &worker, 1).await,
        std::slice::from_ref(&late)
    );
    assert_eq!(
        events_found(&app, "overdue=true", &worker, 1).await,
        std::slice::from_ref(&late)
    );
    for to in [
        "dispatched",
        "in_progress",
        "resolved",
        "verified",
        "closed",
    ] {
        assert_eq!(
            move_to(&app, &late, &community, to, None).await.0,
            200,
            "{to}"
        );
    }
    assert!(events_found(&app, "overdue=true", &worker, 0)
        .await
        .is_empty());
    assert_eq!(
        events_found(&app, "status=closed", &worker, 1).await,
        [late]
    );
    assert_eq!(
        events_found(&app, "status=reported", &worker, 1).await,
        [fresh]
    );
}

#[tokio::test]
async fn configured_deadlines_decide_when_an_event_is_overdue() {
    let mut config = broker::config::Config::default();
    config.events.deadline_hours = [("dispute".to_owned(), 1)].into_iter().collect();
    let app = TestApp::spawn_with(config).await;
    street(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let dispute_two_hours_ago = report(&app, &worker, &dispute(&[], 2)).await;
    let mut sanitation = dispute(&[], 2);
    sanitation["type"] = json!("sanitation");
    report(&app, &worker, &sanitation).await;
    events_found(&app, "", &worker, 2).await;
    assert_eq!(
        events_found(&app, "overdue=true", &worker, 1).await,
        [dispute_two_hours_ago],
        "a dispute is late after an hour; other types after a week"
    );
}

#[tokio::test]
async fn my_events_lists_only_what_the_caller_recorded() {
    let app = TestApp::spawn().await;
    let s = street(&app).await;
    let me = app.token("grid_worker", &[GRID], None);
    let colleague = app
        .signer
        .sign(&broker::auth::TokenRequest {
            sub: "gw-colleague".to_owned(),
            name: Some("同事".to_owned()),
            roles: vec!["grid_worker".to_owned()],
            jurisdiction: vec![GRID.to_owned()],
            dept: None,
            ttl: Duration::from_secs(600),
        })
        .expect("a token");
    let (status, mine) = post(
        &app,
        "/v1/reports",
        &me,
        &json!({"type":"dispute","title":"我上报的纠纷","grid":GRID,"parties":[s.zhang]}),
    )
    .await;
    assert_eq!(status, 201, "{mine}");
    let (status, theirs) = post(
        &app,
        "/v1/reports",
        &colleague,
        &json!({"type":"dispute","title":"同事上报的纠纷","grid":GRID}),
    )
    .await;
    assert_eq!(status, 201, "{theirs}");
    // The index follows the store: wait until both events are searchable.
    let started = Instant::now();
    loop {
        let (_, all) = app
            .get("/v1/events?q=纠纷", &me, Some("routine_visit"))
            .await;
        if all["total"] == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, page) = app
        .get("/v1/events?reported_by=me", &me, Some("routine_visit"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        hit_ids(&page),
        vec![mine["id"].as_str().unwrap_or_default().to_owned()]
    );
    let (_, page) = app
        .get(
            "/v1/events?reported_by=me",
            &colleague,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(
        hit_ids(&page),
        vec![theirs["id"].as_str().unwrap_or_default().to_owned()]
    );
    // Nobody asks for another's: only `me` is taken, and only on events.
    let (status, body) = app
        .get(
            "/v1/events?reported_by=gw-colleague",
            &me,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("filter_invalid"))
    );
    let (status, body) = app
        .get("/v1/residents?reported_by=me", &me, Some("routine_visit"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("filter_not_supported"))
    );
    // It combines with the other event filters.
    let (_, page) = app
        .get(
            "/v1/events?reported_by=me&status=reported",
            &me,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(page["total"], 1, "{page}");
}
