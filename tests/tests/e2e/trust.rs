//! The trust holes an attacker found, each closed and tested end to end over TLS with real
//! tokens: profile take-over by a publisher, analyst isolation, break-glass above an owner's
//! restriction, related lists that leak, writes that outlive a failed audit, case ids that
//! hide accesses, and tokens the broker should never have taken.

use std::time::Duration;

use broker::auth::{Claims, DEFAULT_AUDIENCE, DEV_ISSUER};
use broker::config::Config;
use e2e_tests::id;
use e2e_tests::{TestApp, COMMUNITY, GRID, OTHER_GRID, STREET};
use serde_json::{json, Value};

/// A grid in another street.
const FOREIGN_GRID: &str = "110105002001001";
const VICTIM: &str = "钱秀英";

fn line(value: Value) -> String {
    format!("{value}\n")
}

fn rejection_codes(receipt: &Value) -> Vec<String> {
    receipt["rejected"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn tags(profile: &Value) -> Vec<String> {
    profile["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["tag"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The victim: registered by gongan in GRID, with welfare, health and justice data.
async fn publish_victim(app: &TestApp) -> (String, String) {
    let id18 = id("11010519480517004");
    app.ingest(
        "gongan",
        line(
            json!({"kind":"resident","source_id":"GA-V","version":"2026-11-01T08:00:00Z",
            "id_number":id18,"name":VICTIM,"birth_date":"1948-05-17","phone":"13812340000",
            "grid":GRID}),
        ),
    )
    .await;
    app.ingest(
        "minzheng",
        line(
            json!({"kind":"resident","source_id":"MZ-V","version":"2026-11-01T08:00:00Z",
            "id_number":id18,"name":VICTIM,"grid":GRID,"tags":["低保"],
            "attributes":{"allowance_monthly":900}}),
        ),
    )
    .await;
    app.ingest(
        "weijian",
        line(
            json!({"kind":"resident","source_id":"WJ-V","version":"2026-11-01T08:00:00Z",
            "id_number":id18,"name":VICTIM,"grid":GRID,"tags":["精神障碍"],
            "attributes":{"diagnosis":"精神分裂症"}}),
        ),
    )
    .await;
    app.ingest(
        "sifa",
        line(
            json!({"kind":"resident","source_id":"SF-V","version":"2026-11-01T08:00:00Z",
            "id_number":id18,"name":VICTIM,"grid":GRID,"tags":["社区矫正"],
            "attributes":{"case_type":"缓刑"}}),
        ),
    )
    .await;
    let unified = app.unified_id("resident", "gongan", "GA-V").await;
    (unified, id18)
}

async fn profile(app: &TestApp, unified: &str, token: &str, purpose: &str) -> (u16, Value) {
    app.get(&format!("/v1/residents/{unified}"), token, Some(purpose))
        .await
}

async fn get_with(
    app: &TestApp,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = app
        .client
        .get(format!("{}{path}", app.url))
        .bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the request is sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Audit records matching a compliance query.
async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, page) = app
        .get(
            &format!("/v1/audit/records?{query}"),
            &app.compliance(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["records"].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// 1. Profile take-over

#[tokio::test]
async fn a_publisher_cannot_take_over_a_profile() {
    let app = TestApp::spawn().await;
    let (victim, id18) = publish_victim(&app).await;
    let own_worker = app.token("grid_worker", &[GRID], None);
    let other_worker = app.token("grid_worker", &[OTHER_GRID], None);

    // The attack as found: the victim's ID, a version in 2099 and a grid of another street.
    let wangge = app.publisher("wangge");
    let attack = line(
        json!({"kind":"resident","source_id":"WG-EVIL","version":"2099-01-01T00:00:00Z",
        "id_number":id18,"name":"攻击者","grid":FOREIGN_GRID}),
    );
    let receipt: Value = app
        .ingest_as(&wangge, "wangge", attack)
        .await
        .json()
        .await
        .expect("receipt");
    assert_eq!(receipt["accepted"], 0, "{receipt}");
    assert_eq!(rejection_codes(&receipt), ["version_in_future"]);

    // With a plausible version, the foreign street is outside the token's jurisdiction.
    let foreign = line(
        json!({"kind":"resident","source_id":"WG-EVIL","version":"2026-11-02T00:00:00Z",
        "id_number":id18,"name":VICTIM,"grid":FOREIGN_GRID}),
    );
    let receipt = app.ingest("wangge", foreign).await;
    assert_eq!(rejection_codes(&receipt), ["grid_outside_jurisdiction"]);
    // A community-bound publisher cannot publish into the neighbouring community either.
    let narrow = app.token("dept_publisher", &[COMMUNITY], Some("wangge"));
    let neighbour = line(json!({"kind":"resident","source_id":"WG-N1","version":"1",
        "id_number":id("11010519850203001"),"name":"邻居","grid":OTHER_GRID}));
    let receipt: Value = app
        .ingest_as(&narrow, "wangge", neighbour)
        .await
        .json()
        .await
        .expect("receipt");
    assert_eq!(rejection_codes(&receipt), ["grid_outside_jurisdiction"]);

    // Inside the street, another name without the birth date waits for review.
    let impostor = line(
        json!({"kind":"resident","source_id":"WG-EVIL","version":"2026-11-02T00:00:00Z",
        "id_number":id18,"name":"攻击者","grid":OTHER_GRID}),
    );
    let receipt = app.ingest("wangge", impostor).await;
    assert_eq!(rejection_codes(&receipt), ["identity_conflict"]);
    assert!(receipt["rejected"][0]["quarantine_id"].is_string());
    // … and so does another name with another birth date.
    let impostor = line(
        json!({"kind":"resident","source_id":"WG-EVIL2","version":"2026-11-02T00:00:00Z",
        "id_number":id18,"name":"攻击者","birth_date":"1990-01-01","grid":OTHER_GRID}),
    );
    let receipt = app.ingest("zhujian", impostor).await;
    assert_eq!(rejection_codes(&receipt), ["identity_conflict"]);

    // The victim stays where the legitimate grid worker sees them, with every department.
    let (status, body) = profile(&app, &victim, &own_worker, "elderly_care").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["grid"], GRID);
    assert_eq!(body["fields"]["name"]["value"], VICTIM);
    assert!(tags(&body).contains(&"低保".to_owned()), "{body}");
    let (status, _) = profile(&app, &victim, &other_worker, "elderly_care").await;
    assert_eq!(status, 404);

    // The same name in traditional characters is the same person, not a conflict.
    let same = line(
        json!({"kind":"resident","source_id":"ZJ-V","version":"2026-11-02T00:00:00Z",
        "id_number":id18,"name":"錢秀英","grid":GRID}),
    );
    let receipt = app.ingest("zhujian", same).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    // A one-character slip without a birth date is a typo, not another person.
    let typo = line(
        json!({"kind":"resident","source_id":"YJ-V","version":"2026-11-02T00:00:00Z",
        "id_number":id18,"name":"钱秀瑛","grid":GRID}),
    );
    let receipt = app.ingest("yingji", typo).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    // The register itself (gongan) is never held against itself.
    let renamed = line(
        json!({"kind":"resident","source_id":"GA-V","version":"2026-11-05T00:00:00Z",
        "id_number":id18,"name":"钱秀华","birth_date":"1948-05-17","grid":GRID}),
    );
    let receipt = app.ingest("gongan", renamed).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
}

#[tokio::test]
async fn a_move_across_communities_is_kept_in_history_and_raised_as_an_anomaly() {
    let app = TestApp::spawn().await;
    let (victim, id18) = publish_victim(&app).await;
    // The grid centre (first for residence) places the same person in another community.
    let moved = line(
        json!({"kind":"resident","source_id":"WG-V","version":"2026-11-03T00:00:00Z",
        "id_number":id18,"name":VICTIM,"grid":OTHER_GRID}),
    );
    let receipt = app.ingest("wangge", moved).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    assert!(
        receipt.get("scope_moves").is_none(),
        "publishers are not told: {receipt}"
    );
    let officer = app.token("street_officer", &[STREET], None);
    let (status, body) = profile(&app, &victim, &officer, "routine_visit").await;
    assert_eq!(status, 200, "{body}");
    let history = body["history"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{body}");
    assert_eq!(history[0]["from"], COMMUNITY);
    assert_eq!(history[0]["to"], &OTHER_GRID[..12]);
    assert_eq!(history[0]["department"], "wangge");

    let (status, report) = app
        .get("/v1/audit/anomalies", &app.compliance(), None)
        .await;
    assert_eq!(status, 200, "{report}");
    let moves: Vec<&Value> = report["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter(|a| a["kind"] == "scope_move")
        .collect();
    assert_eq!(moves.len(), 1, "{report}");
    assert_eq!(moves[0]["actor"], "test-dept_publisher");
    // Publishing within the same community raises nothing.
    let stay = line(
        json!({"kind":"resident","source_id":"WG-V","version":"2026-11-04T00:00:00Z",
        "id_number":id18,"name":VICTIM,"grid":OTHER_GRID}),
    );
    app.ingest("wangge", stay).await;
    let (_, report) = app
        .get("/v1/audit/anomalies", &app.compliance(), None)
        .await;
    let count = report["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter(|a| a["kind"] == "scope_move")
        .count();
    assert_eq!(count, 1, "{report}");
}

// ---------------------------------------------------------------------------------------
// 2. Analyst isolation and 3. break-glass

#[tokio::test]
async fn an_analyst_reads_only_its_own_department_whatever_else_it_holds() {
    let app = TestApp::spawn().await;
    let (victim, _) = publish_victim(&app).await;
    // A dept_analyst token without dept is refused outright.
    let no_dept = app.token("dept_analyst", &[STREET], None);
    let (status, body) = profile(&app, &victim, &no_dept, "routine_visit").await;
    assert_eq!(status, 401, "{body}");

    // An analyst of 民政 who is also a grid worker.
    let token = app
        .signer
        .sign(&broker::auth::TokenRequest {
            sub: "mixed".into(),
            name: None,
            roles: vec!["dept_analyst".into(), "grid_worker".into()],
            jurisdiction: vec![GRID.into()],
            dept: Some("minzheng".into()),
            ttl: Duration::from_secs(600),
        })
        .expect("token");
    let (status, body) = profile(&app, &victim, &token, "routine_visit").await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    for secret in ["精神障碍", "精神分裂症", "社区矫正", "缓刑"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert_eq!(body["attributes"]["minzheng"]["allowance_monthly"], 900);
    assert!(body["attributes"].get("weijian").is_none(), "{body}");
    assert!(body["attributes"].get("sifa").is_none(), "{body}");
    // 司法's analyst reads its own attributes, never 卫健's.
    let sifa = app.token("dept_analyst", &[STREET], Some("sifa"));
    let (status, body) = profile(&app, &victim, &sifa, "routine_visit").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attributes"]["sifa"]["case_type"], "缓刑");
    assert!(!body.to_string().contains("精神"), "{body}");
}

#[tokio::test]
async fn break_glass_never_lifts_a_read_above_the_owner_restriction() {
    let app = TestApp::spawn().await;
    let (victim, id18) = publish_victim(&app).await;
    let officer = app.token("community_officer", &[COMMUNITY], None);
    let (status, body) = get_with(
        &app,
        &format!("/v1/residents/{victim}"),
        &officer,
        &[
            ("x-purpose", "emergency"),
            ("x-break-glass", "火灾现场需要了解病史"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The health tag is lifted to clear; the diagnosis (卫健 never shares it) and the full ID
    // number (never a community officer's) stay out.
    assert!(tags(&body).contains(&"精神障碍".to_owned()), "{body}");
    let text = body.to_string();
    assert!(!text.contains("精神分裂症"), "{text}");
    assert!(!text.contains(&id18), "{text}");
    assert!(body["attributes"].get("weijian").is_none(), "{body}");
    let records = audit(&app, "decision=break_glass").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["break_glass_reason"], "火灾现场需要了解病史");
    // A grid worker may not break the glass at all (and the refusal is on the record).
    let worker = app.token("grid_worker", &[GRID], None);
    let (status, body) = get_with(
        &app,
        &format!("/v1/residents/{victim}"),
        &worker,
        &[("x-purpose", "emergency"), ("x-break-glass", "想看看")],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("break_glass_not_allowed"))
    );
}

// ---------------------------------------------------------------------------------------
// 4. Related lists

#[tokio::test]
async fn related_lists_obey_department_visibility_and_jurisdiction() {
    let app = TestApp::spawn().await;
    let (victim, id18) = publish_victim(&app).await;
    let outsider_id = id("11010519700101005");
    app.ingest(
        "gongan",
        line(json!({"kind":"resident","source_id":"GA-O","version":"1",
            "id_number":outsider_id,"name":"欧阳建国","grid":OTHER_GRID})),
    )
    .await;
    // A justice mediation (a class the grid worker may not see) and a grid centre event.
    app.ingest(
        "sifa",
        line(
            json!({"kind":"event","source_id":"SF-E1","version":"1","type":"mediation",
            "title":"人民调解：赡养纠纷","grid":GRID,"status":"open",
            "party_id_numbers":[id18, outsider_id]}),
        ),
    )
    .await;
    app.ingest(
        "wangge",
        line(
            json!({"kind":"event","source_id":"WG-E1","version":"1","type":"dispute",
            "title":"楼道堆物","grid":GRID,"status":"open",
            "party_id_numbers":[id18, outsider_id]}),
        ),
    )
    .await;
    let officer = app.token("street_officer", &[STREET], None);
    let sifa_event = app.unified_id("event", "sifa", "SF-E1").await;
    let grid_event = app.unified_id("event", "wangge", "WG-E1").await;
    let worker = app.token("grid_worker", &[GRID], None);

    let (status, body) = profile(&app, &victim, &worker, "dispute_mediation").await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<&str> = body["related"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(events, [grid_event.as_str()], "{body}");
    assert!(!body.to_string().contains("赡养"), "{body}");
    // Opening the justice event by id, or by its source, answers like a missing one.
    let (status, _) = app
        .get(
            &format!("/v1/events/{sifa_event}"),
            &worker,
            Some("dispute_mediation"),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get(
            "/v1/events/by-source/sifa/SF-E1",
            &worker,
            Some("dispute_mediation"),
        )
        .await;
    assert_eq!(status, 404);
    // Nor does a search find it.
    let (status, page) = app
        .get("/v1/events?q=赡养", &worker, Some("dispute_mediation"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        !page.to_string().contains(&sifa_event),
        "the justice event was found: {page}"
    );
    assert_eq!(page["total"], 0, "its existence shows in the count: {page}");

    // The grid event: the party inside the jurisdiction is named, the one outside masked.
    let (status, event) = app
        .get(
            &format!("/v1/events/{grid_event}"),
            &worker,
            Some("dispute_mediation"),
        )
        .await;
    assert_eq!(status, 200, "{event}");
    let labels: Vec<&str> = event["related"]["parties"]
        .as_array()
        .expect("parties")
        .iter()
        .filter_map(|p| p["label"].as_str())
        .collect();
    assert!(labels.contains(&VICTIM), "{event}");
    assert!(labels.contains(&"欧阳**"), "{event}");
    assert!(!event.to_string().contains("欧阳建国"), "{event}");
    // The street officer (whose street holds both) reads both names and both events.
    let (_, event) = app
        .get(
            &format!("/v1/events/{grid_event}"),
            &officer,
            Some("dispute_mediation"),
        )
        .await;
    assert!(event.to_string().contains("欧阳建国"), "{event}");
    let (_, body) = profile(&app, &victim, &officer, "dispute_mediation").await;
    assert_eq!(
        body["related"]["events"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Writes audited before they commit, refusals audited

#[tokio::test]
async fn when_the_audit_log_fails_no_write_changes_anything() {
    let root = tempfile::tempdir().expect("tempdir");
    let policy_dir = root.path().join("policies");
    std::fs::create_dir_all(&policy_dir).expect("dir");
    std::fs::write(policy_dir.join("model.conf"), policies::DEFAULT_MODEL).expect("write");
    std::fs::write(policy_dir.join("policy.csv"), policies::DEFAULT_POLICY).expect("write");
    let backup_dir = root.path().join("backups");
    let app = TestApp::spawn_with(Config {
        policy_dir: Some(policy_dir.clone()),
        backup_dir: Some(backup_dir.clone()),
        ..Config::default()
    })
    .await;
    // A quarantined record to dismiss later.
    let receipt = app
        .ingest(
            "gongan",
            line(json!({"kind":"resident","source_id":"GA-BAD",
                "name":"坏记录","grid":GRID})),
        )
        .await;
    let quarantine = receipt["rejected"][0]["quarantine_id"]
        .as_str()
        .expect("quarantined")
        .to_owned();

    // The log stops taking records (as when its disk fails).
    let state = app.broker.as_ref().expect("running").state.clone();
    state.audit.close().await.expect("close");

    let publisher = app.publisher("gongan");
    let response = app
        .ingest_as(
            &publisher,
            "gongan",
            line(json!({"kind":"resident","source_id":"GA-NEW","version":"1",
                "id_number":id("11010519900101003"),"name":"新居民","grid":GRID})),
        )
        .await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("audit_unavailable"))
    );
    let snapshot = state.pipeline.store().read().expect("read");
    let row = vault::store::StoredSource::row_key(
        model::Department::Gongan,
        model::RecordKind::Resident,
        "GA-NEW",
    );
    assert!(
        snapshot.source(&row).expect("store").is_none(),
        "stored without audit"
    );

    let dismiss = app
        .client
        .delete(format!("{}/v1/ingest/gongan/rejects/{quarantine}", app.url))
        .bearer_auth(&publisher)
        .send()
        .await
        .expect("sent");
    assert_eq!(dismiss.status().as_u16(), 503);
    let open = state
        .pipeline
        .store()
        .read()
        .expect("read")
        .quarantine(model::Department::Gongan, None, true, 10)
        .expect("quarantine");
    assert!(
        open.iter()
            .any(|e| e.id == quarantine && e.resolved.is_none()),
        "dismissed without audit"
    );

    let filed = app
        .client
        .post(format!("{}/v1/ingest/gongan/rejects", app.url))
        .bearer_auth(&publisher)
        .json(&json!([{"line":1,"code":"mapping_failed","message":"x","row":{}}]))
        .send()
        .await
        .expect("sent");
    assert_eq!(filed.status().as_u16(), 503);
    let entries = state
        .pipeline
        .store()
        .read()
        .expect("read")
        .quarantine(model::Department::Gongan, None, true, 10)
        .expect("quarantine");
    assert_eq!(entries.len(), 1, "a reject was filed without audit");
    let officer = app.token("street_officer", &[STREET], None);
    let split = app
        .client
        .post(format!("{}/v1/resolution/split", app.url))
        .bearer_auth(&officer)
        .header("x-purpose", "routine_visit")
        .json(&json!({"department":"gongan","source_id":"GA-BAD"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(split.status().as_u16(), 503);

    let security = app.token("security_admin", &[STREET], None);
    let before = std::fs::read_to_string(policy_dir.join("policy.csv")).expect("read");
    let changed = app
        .client
        .put(format!("{}/v1/policy/files/policy.csv", app.url))
        .bearer_auth(&security)
        .body(format!(
            "{before}\np, grid_worker, *, field:health, clear\n"
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(changed.status().as_u16(), 503);
    assert_eq!(
        std::fs::read_to_string(policy_dir.join("policy.csv")).expect("read"),
        before,
        "policy changed without audit"
    );

    let admin = app.token("system_admin", &[STREET], None);
    let backup = app
        .client
        .post(format!("{}/v1/admin/backup", app.url))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    // On a PostgreSQL store a backup is refused before anything (the database has its own).
    let refused = if e2e_tests::on_postgres() { 409 } else { 503 };
    assert_eq!(backup.status().as_u16(), refused);
    let taken = std::fs::read_dir(&backup_dir).map_or(0, |d| d.count());
    assert_eq!(taken, 0, "backup taken without audit");
}

#[tokio::test]
async fn refusals_are_audited_unauthenticated_ones_folded_per_minute() {
    let app = TestApp::spawn().await;
    let (victim, _) = publish_victim(&app).await;
    for _ in 0..5 {
        let response = app
            .client
            .get(format!("{}/v1/residents/{victim}", app.url))
            .header("x-purpose", "routine_visit")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 401);
    }
    let forged = app
        .get(
            &format!("/v1/residents/{victim}"),
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
            Some("routine_visit"),
        )
        .await;
    assert_eq!(forged.0, 401);
    let anonymous = audit(&app, "actor=anonymous").await;
    let missing: Vec<&Value> = anonymous
        .iter()
        .filter(|r| {
            r["outcome"]
                .as_str()
                .unwrap_or("")
                .starts_with("token_missing")
        })
        .collect();
    // Five refusals in (at most) two minutes: one or two records, never five.
    assert!((1..=2).contains(&missing.len()), "{anonymous:?}");
    assert_eq!(missing[0]["decision"], "deny");
    assert_eq!(missing[0]["endpoint"], "/v1/residents/{id}");
    assert!(anonymous.iter().any(|r| r["outcome"] == "token_invalid"));

    // A role that may not review resolution is refused on the record.
    let worker = app.token("grid_worker", &[GRID], None);
    let (status, _) = app
        .get("/v1/resolution/reviews", &worker, Some("routine_visit"))
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .get(
            "/v1/policy/preview?role=grid_worker&purpose=routine_visit",
            &worker,
            None,
        )
        .await;
    assert_eq!(status, 403);
    let refused = audit(&app, "actor=test-grid_worker&decision=deny").await;
    for code in ["role_cannot_resolve", "role_cannot_manage_policy"] {
        assert!(
            refused.iter().any(|r| r["outcome"] == code),
            "{code}: {refused:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 6. Case ids

#[tokio::test]
async fn only_case_handling_roles_may_defer_an_access() {
    let app = TestApp::spawn().await;
    let (victim, _) = publish_victim(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let hidden = app
        .get_traced(
            &format!("/v1/residents/{victim}"),
            &worker,
            Some("routine_visit"),
            Some("x"),
        )
        .await;
    assert_eq!(
        (hidden.status, hidden.body["error"]["code"].as_str()),
        (403, Some("case_id_not_allowed"))
    );
    let officer = app.token("street_officer", &[STREET], None);
    let case = app
        .get_traced(
            &format!("/v1/residents/{victim}"),
            &officer,
            Some("case_investigation"),
            Some("CASE-9"),
        )
        .await;
    assert_eq!(case.status, 200);
    let (status, report) = app
        .get(
            &format!("/v1/audit/residents/{victim}/report"),
            &app.compliance(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deferred"], 1, "{report}");
    // The refused attempt is in the report (as a refusal), not hidden by its case id.
    // A report cannot ask for a longer deferral than the configured window.
    let (status, body) = app
        .get(
            &format!("/v1/audit/residents/{victim}/report?defer_days=3650"),
            &app.compliance(),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("defer_days_invalid"))
    );
}

// ---------------------------------------------------------------------------------------
// 7. Tokens

#[tokio::test]
async fn tokens_the_broker_must_not_take() {
    let app = TestApp::spawn().await;
    let app = &app;
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = |roles: &[&str], jurisdiction: &[&str]| Claims {
        sub: "t".into(),
        name: "t".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        jurisdiction: jurisdiction.iter().map(|j| (*j).to_owned()).collect(),
        dept: None,
        iss: DEV_ISSUER.into(),
        aud: DEFAULT_AUDIENCE.into(),
        exp: now + 600,
        iat: now,
        nbf: None,
    };
    let status_of = |claims: Claims| {
        let token = app.signer.sign_claims(&claims).expect("sign");
        async move { app.get("/v1/whoami", &token, None).await.0 }
    };
    assert_eq!(status_of(claims(&["grid_worker"], &[GRID])).await, 200);
    let not_yet = Claims {
        nbf: Some(now + 3600),
        ..claims(&["grid_worker"], &[GRID])
    };
    assert_eq!(status_of(not_yet).await, 401, "nbf in the future");
    let forever = Claims {
        exp: 7_258_118_400, // 2200-01-01
        ..claims(&["grid_worker"], &[GRID])
    };
    assert_eq!(status_of(forever).await, 401, "valid until 2200");
    let iat_lie = Claims {
        iat: now + 86_400 * 365 * 100,
        exp: now + 86_400 * 365 * 100 + 60,
        ..claims(&["grid_worker"], &[GRID])
    };
    assert_eq!(status_of(iat_lie).await, 401, "an iat in the future");
    assert_eq!(
        status_of(claims(&["grid_worker"], &[])).await,
        401,
        "no jurisdiction"
    );
    assert_eq!(
        status_of(claims(&["wizard", "admin"], &[STREET])).await,
        401,
        "only unknown roles"
    );
    assert_eq!(
        status_of(claims(&["dept_publisher"], &[STREET])).await,
        401,
        "publisher without dept"
    );
    // A known role beside unknown ones still works, and the unknown ones grant nothing.
    assert_eq!(
        status_of(claims(&["wizard", "compliance_officer"], &[STREET])).await,
        200
    );
    let twelve = Claims {
        exp: now + 12 * 3600,
        ..claims(&["grid_worker"], &[GRID])
    };
    assert_eq!(status_of(twelve).await, 200, "12 hours is allowed");
}
