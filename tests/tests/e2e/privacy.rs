//! Privacy controls end to end, over TLS with real tokens: every role x purpose x field class
//! gets exactly the level the default policy gives it; free text never leaks what fields hide;
//! break-glass, preview and hot reload work as a compliance office expects.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e_tests::id;
use e2e_tests::{TestApp, GRID, STREET};
use serde_json::{json, Value};

const NAME: &str = "赵丽华";
const PHONE_GA: &str = "13812345678";
const PHONE_MZ: &str = "13912345678";

fn line(value: Value) -> String {
    format!("{value}\n")
}

/// One resident with a value of every field class, published by five departments, and an
/// event whose description names her, her phone and her ID number.
async fn publish(app: &TestApp) -> (String, String, String) {
    let id18 = id("11010519520304002");
    app.ingest("gongan", line(json!({"kind":"resident","source_id":"GA-1","version":"1",
        "id_number":id18,"name":NAME,"birth_date":"1952-03-04","phone":PHONE_GA,
        "address":"北京市朝阳区望京街道幸福里小区3号楼2单元501","house_source_id":"ZJ-1","grid":GRID}))).await;
    app.ingest(
        "minzheng",
        line(json!({"kind":"resident","source_id":"MZ-1","version":"1",
        "id_number":id18,"name":NAME,"phone":PHONE_MZ,"house_source_id":"ZJ-1","grid":GRID,
        "tags":["低保","独居老人"],"attributes":{"allowance_monthly":1200}})),
    )
    .await;
    app.ingest("weijian", line(json!({"kind":"resident","source_id":"WJ-1","version":"1",
        "id_number":id18,"name":NAME,"grid":GRID,"tags":["慢性病"],"attributes":{"diagnosis":"糖尿病"}}))).await;
    app.ingest("sifa", line(json!({"kind":"resident","source_id":"SF-1","version":"1",
        "id_number":id18,"name":NAME,"grid":GRID,"tags":["社区矫正"],"attributes":{"case_type":"缓刑"}}))).await;
    app.ingest("wangge", line(json!({"kind":"event","source_id":"WG-1","version":"1","type":"dispute",
        "title":"邻里纠纷","description":format!("{NAME}（身份证号{id18}，电话{PHONE_GA}）反映楼上漏水"),
        "grid":GRID,"status":"open","party_id_numbers":[id18]}))).await;
    let resident = app.unified_id("resident", "gongan", "GA-1").await;
    let event = app.unified_id("event", "wangge", "WG-1").await;
    (resident, event, id18)
}

/// The level a response shows for each class, read off the fixture's known values.
fn observe(
    resident: &Value,
    event: &Value,
    id18: &str,
    analyst: bool,
) -> BTreeMap<&'static str, &'static str> {
    let mut seen = BTreeMap::new();
    let fields = &resident["fields"];
    let tags: Vec<&str> = resident["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["tag"].as_str()).collect())
        .unwrap_or_default();
    let level = |clear: bool, masked: bool| {
        if clear {
            "clear"
        } else if masked {
            "masked"
        } else {
            "hidden"
        }
    };
    let id = fields["id_number"]["value"].as_str().unwrap_or("");
    seen.insert(
        "identifier",
        level(
            id == id18,
            id == "110105********0021" || id.contains("********"),
        ),
    );
    let phone = fields["phone"]["value"].as_str().unwrap_or("");
    let expected_phone = if analyst { PHONE_MZ } else { PHONE_GA };
    seen.insert(
        "personal",
        level(phone == expected_phone, phone.contains("****")),
    );
    seen.insert("public", level(fields["grid"]["value"] == GRID, false));
    seen.insert(
        "internal",
        level(fields["house_source_id"]["value"] == "ZJ-1", false),
    );
    seen.insert(
        "welfare",
        level(tags.contains(&"低保"), tags.contains(&"民政关注")),
    );
    seen.insert(
        "elderly",
        level(tags.contains(&"独居老人"), tags.contains(&"老年关爱")),
    );
    seen.insert(
        "health",
        level(tags.contains(&"慢性病"), tags.contains(&"健康关注")),
    );
    seen.insert(
        "criminal_justice",
        level(tags.contains(&"社区矫正"), tags.contains(&"重点关注")),
    );
    let attr = |dept: &str, key: &str| resident["attributes"][dept][key].clone();
    seen.insert(
        "welfare_detail",
        level(
            attr("minzheng", "allowance_monthly") == 1200,
            attr("minzheng", "allowance_monthly") == "***",
        ),
    );
    seen.insert(
        "health_detail",
        level(
            attr("weijian", "diagnosis") == "糖尿病",
            attr("weijian", "diagnosis") == "***",
        ),
    );
    seen.insert(
        "criminal_justice_detail",
        level(
            attr("sifa", "case_type") == "缓刑",
            attr("sifa", "case_type") == "***",
        ),
    );
    let description = event["fields"]["description"]["value"]
        .as_str()
        .unwrap_or("");
    seen.insert(
        "free_text",
        level(
            description.contains(id18),
            description.contains("反映楼上漏水"),
        ),
    );
    seen
}

/// The default policy, written out independently of the implementation (DESIGN.md's table).
fn expected(role: &str, purpose: &str) -> BTreeMap<&'static str, &'static str> {
    let case = purpose == "case_investigation";
    let rows: Vec<(&'static str, &'static str)> = match role {
        "grid_worker" => vec![
            ("public", "clear"),
            ("internal", "clear"),
            ("personal", "clear"),
            ("identifier", "masked"),
            ("free_text", "masked"),
            (
                "welfare",
                if purpose == "elderly_care" {
                    "clear"
                } else {
                    "masked"
                },
            ),
            (
                "elderly",
                if purpose == "elderly_care" {
                    "clear"
                } else {
                    "masked"
                },
            ),
            ("welfare_detail", "hidden"),
            (
                "health",
                if purpose == "emergency" {
                    "clear"
                } else {
                    "hidden"
                },
            ),
            ("health_detail", "hidden"),
            ("criminal_justice", "hidden"),
            ("criminal_justice_detail", "hidden"),
        ],
        "community_officer" => vec![
            ("public", "clear"),
            ("internal", "clear"),
            ("personal", "clear"),
            ("identifier", "masked"),
            ("free_text", "masked"),
            ("welfare", "clear"),
            ("elderly", "clear"),
            ("welfare_detail", "clear"),
            ("health", "masked"),
            ("health_detail", "hidden"),
            ("criminal_justice", "masked"),
            ("criminal_justice_detail", "hidden"),
        ],
        "street_officer" => vec![
            ("public", "clear"),
            ("internal", "clear"),
            ("personal", "clear"),
            ("identifier", if case { "clear" } else { "masked" }),
            ("free_text", if case { "clear" } else { "masked" }),
            ("welfare", "clear"),
            ("elderly", "clear"),
            ("welfare_detail", "clear"),
            ("health", if case { "clear" } else { "masked" }),
            // 卫健 never shares the diagnosis outside the department.
            ("health_detail", "hidden"),
            ("criminal_justice", if case { "clear" } else { "masked" }),
            (
                "criminal_justice_detail",
                if case { "clear" } else { "masked" },
            ),
        ],
        // A 民政 analyst sees 民政's own record only.
        "dept_analyst" => vec![
            ("public", "clear"),
            ("internal", "clear"),
            ("personal", "clear"),
            ("identifier", "masked"),
            ("free_text", "hidden"),
            ("welfare", "clear"),
            ("elderly", "clear"),
            ("welfare_detail", "clear"),
            ("health", "hidden"),
            ("health_detail", "hidden"),
            ("criminal_justice", "hidden"),
            ("criminal_justice_detail", "hidden"),
        ],
        _ => vec![],
    };
    rows.into_iter().collect()
}

#[tokio::test]
async fn every_role_purpose_and_field_class_gets_exactly_its_level() {
    let app = TestApp::spawn().await;
    let (resident, event, id18) = publish(&app).await;
    for role in [
        "grid_worker",
        "community_officer",
        "street_officer",
        "dept_analyst",
    ] {
        let dept = (role == "dept_analyst").then_some("minzheng");
        let token = app.token(role, &[STREET], dept);
        for purpose in [
            "routine_visit",
            "elderly_care",
            "emergency",
            "case_investigation",
        ] {
            let (status, profile) = app
                .get(&format!("/v1/residents/{resident}"), &token, Some(purpose))
                .await;
            assert_eq!(status, 200, "{role} {purpose}: {profile}");
            let (status, event_profile) = app
                .get(&format!("/v1/events/{event}"), &token, Some(purpose))
                .await;
            let event_profile = if status == 200 {
                event_profile
            } else {
                Value::Null
            };
            let seen = observe(&profile, &event_profile, &id18, role == "dept_analyst");
            assert_eq!(seen, expected(role, purpose), "{role} {purpose}");
            // Whatever the level, the birth date never sits beside a masked ID.
            if seen["identifier"] != "clear" {
                let birth = profile["fields"]["birth_date"]["value"]
                    .as_str()
                    .unwrap_or("");
                assert!(birth.len() <= 4, "{role} {purpose}: birth date {birth}");
            }
        }
    }
    for role in [
        "dept_publisher",
        "compliance_officer",
        "security_admin",
        "system_admin",
    ] {
        let token = app.token(role, &[STREET], Some("gongan"));
        for purpose in ["routine_visit", "emergency", "case_investigation"] {
            let (status, body) = app
                .get(&format!("/v1/residents/{resident}"), &token, Some(purpose))
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("role_cannot_read")),
                "{role}"
            );
        }
    }
}

#[tokio::test]
async fn hidden_departments_leave_no_trace_for_a_grid_worker() {
    let app = TestApp::spawn().await;
    let (resident, _, _) = publish(&app).await;
    let token = app.token("grid_worker", &[GRID], None);
    let (_, profile) = app
        .get(
            &format!("/v1/residents/{resident}"),
            &token,
            Some("routine_visit"),
        )
        .await;
    let text = profile.to_string();
    for trace in [
        "weijian",
        "sifa",
        "社区矫正",
        "慢性病",
        "健康关注",
        "重点关注",
        "缓刑",
        "糖尿病",
    ] {
        assert!(!text.contains(trace), "{trace} in {text}");
    }
    // Nor through the by-source lookup.
    let (status, _) = app
        .get(
            "/v1/residents/by-source/weijian/WJ-1",
            &token,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn free_text_is_redacted_for_everyone_who_sees_it_masked() {
    let app = TestApp::spawn().await;
    let (_, event, id18) = publish(&app).await;
    let token = app.token("grid_worker", &[GRID], None);
    let (status, body) = app
        .get(
            &format!("/v1/events/{event}"),
            &token,
            Some("dispute_mediation"),
        )
        .await;
    assert_eq!(status, 200);
    let description = body["fields"]["description"]["value"]
        .as_str()
        .expect("description");
    assert!(!description.contains(&id18), "{description}");
    assert!(!description.contains(PHONE_GA), "{description}");
    assert!(!description.contains(NAME), "{description}");
    assert!(description.contains("赵**"), "{description}");
    assert!(description.contains("138****5678"), "{description}");
    assert!(!body.to_string().contains(&id18));
}

#[tokio::test]
async fn break_glass_lifts_to_the_roles_own_ceiling_and_only_for_allowed_roles() {
    let app = TestApp::spawn().await;
    let (resident, _, id18) = publish(&app).await;
    let path = format!("{}/v1/residents/{resident}", app.url);
    let officer = app.token("community_officer", &[STREET], None);
    let response = app
        .client
        .get(&path)
        .bearer_auth(&officer)
        .header("x-purpose", "emergency")
        .header("x-break-glass", "独居老人失联，紧急入户")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    // Break-glass lifts the community officer to its `break_glass` levels (health in clear)
    // but never past what the role may ever see (ID numbers masked) or an owner's
    // restriction (卫健's diagnosis).
    assert_ne!(body["fields"]["id_number"]["value"], id18.as_str());
    assert!(body["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["tag"] == "慢性病")));
    assert!(!body.to_string().contains("糖尿病"), "{body}");
    let worker = app.token("grid_worker", &[STREET], None);
    let response = app
        .client
        .get(&path)
        .bearer_auth(&worker)
        .header("x-purpose", "emergency")
        .header("x-break-glass", "想看")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "break_glass_not_allowed");
}

#[tokio::test]
async fn preview_is_for_compliance_and_security_only() {
    let app = TestApp::spawn().await;
    for role in ["compliance_officer", "security_admin"] {
        let token = app.token(role, &[STREET], None);
        let (status, preview) = app
            .get(
                "/v1/policy/preview?role=grid_worker&purpose=routine_visit",
                &token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{role}");
        let id_field = preview["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["kind"] == "resident" && f["field"] == "id_number")
            .expect("id_number")
            .clone();
        assert_eq!(id_field["level"], "masked");
        let weijian = preview["departments"]
            .as_array()
            .expect("departments")
            .iter()
            .find(|d| d["department"] == "weijian")
            .expect("weijian")
            .clone();
        assert_eq!(weijian["visible"], false);
    }
    let (status, _) = app
        .get(
            "/v1/policy/preview?role=grid_worker&purpose=routine_visit",
            &app.token("grid_worker", &[STREET], None),
            None,
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_policy_change_takes_effect_without_restart_and_only_security_may_make_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let policy_dir = root.path().join("policies");
    std::fs::create_dir_all(&policy_dir).expect("dir");
    std::fs::write(policy_dir.join("model.conf"), policies::DEFAULT_MODEL).expect("write");
    std::fs::write(policy_dir.join("policy.csv"), policies::DEFAULT_POLICY).expect("write");
    let config = broker::config::Config {
        policy_dir: Some(policy_dir.clone()),
        ..broker::config::Config::default()
    };
    let app = TestApp::spawn_with(config).await;
    let (resident, _, _) = publish(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let tags = |profile: &Value| profile["tags"].to_string();
    let (_, before) = app
        .get(
            &format!("/v1/residents/{resident}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert!(!tags(&before).contains("健康关注"));
    let changed = format!(
        "{}\np, grid_worker, *, field:health, masked\n",
        policies::DEFAULT_POLICY
    );

    // A compliance officer cannot change policy (三员分立).
    let response = app
        .client
        .put(format!("{}/v1/policy/files/policy.csv", app.url))
        .bearer_auth(app.token("compliance_officer", &[STREET], None))
        .body(changed.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    // A broken file is refused with the compiler's reason and changes nothing.
    let response = app
        .client
        .put(format!("{}/v1/policy/files/field_classes.csv", app.url))
        .bearer_auth(app.token("security_admin", &[STREET], None))
        .body("resident, name, nonsense\n")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    // A security admin can.
    let response = app
        .client
        .put(format!("{}/v1/policy/files/policy.csv", app.url))
        .bearer_auth(app.token("security_admin", &[STREET], None))
        .body(changed)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let (_, after) = app
        .get(
            &format!("/v1/residents/{resident}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert!(tags(&after).contains("健康关注"), "{after}");

    // Editing the file on disk is picked up by the watcher too.
    std::fs::write(policy_dir.join("policy.csv"), policies::DEFAULT_POLICY).expect("write");
    let mut reverted = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, now) = app
            .get(
                &format!("/v1/residents/{resident}"),
                &worker,
                Some("routine_visit"),
            )
            .await;
        if !tags(&now).contains("健康关注") {
            reverted = true;
            break;
        }
    }
    assert!(reverted, "the file edit was not picked up within 4 s");
}
