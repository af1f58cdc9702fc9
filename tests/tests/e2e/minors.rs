//! Children under 14 end to end: their personal information is sensitive personal information
//! (PIPL arts. 28 and 31). A child and an adult published into one house over HTTPS; what a
//! grid worker and a community officer on a routine visit or doing child protection see of
//! each — the profile, the house, search hits —, that break-glass does not lift the child's
//! level, that the policy preview shows the `minor` class, and that every read is audited.

use std::time::{Duration, Instant};

use e2e_tests::{hit_ids, id, TestApp, COMMUNITY, GRID};
use serde_json::{json, Value};

const ADDRESS: &str = "北京市朝阳区望京街道幸福里小区3号楼2单元501";
const CHILD: &str = "王小明";
const CHILD_PHONE: &str = "13800001111";
const ADULT: &str = "王建国";
const ADULT_PHONE: &str = "13900002222";
const GUARDIAN: &str = "祖母";

struct Household {
    child: String,
    child_id: String,
    adult: String,
    house: String,
}

fn line(value: Value) -> String {
    format!("{value}\n")
}

/// A child who turned 10 today (in China) and an adult of 46, registered in one house; civil
/// affairs follows the child as left behind (留守儿童) with its guardian.
async fn publish_household(app: &TestApp) -> Household {
    let birth = policies::minor::today_in_china()
        .checked_sub_months(chrono::Months::new(120))
        .expect("ten years ago is a date");
    let child_id = id(&format!("110105{}005", birth.format("%Y%m%d")));
    app.ingest(
        "zhujian",
        line(
            json!({"kind":"house","source_id":"ZJ-7","version":"1","address":ADDRESS,
            "grid":GRID,"usage":"own"}),
        ),
    )
    .await;
    app.ingest(
        "gongan",
        [
            json!({"kind":"resident","source_id":"GA-C","version":"1","id_number":child_id,
                "name":CHILD,"birth_date":birth.format("%Y-%m-%d").to_string(),
                "phone":CHILD_PHONE,"address":ADDRESS,"house_source_id":"ZJ-7","grid":GRID,
                "tags":["户籍人口"]}),
            json!({"kind":"resident","source_id":"GA-A","version":"1",
                "id_number":id("11010519800101003"),"name":ADULT,"birth_date":"1980-01-01",
                "phone":ADULT_PHONE,"address":ADDRESS,"house_source_id":"ZJ-7","grid":GRID,
                "tags":["户籍人口"]}),
        ]
        .into_iter()
        .map(line)
        .collect::<String>(),
    )
    .await;
    app.ingest(
        "minzheng",
        line(
            json!({"kind":"resident","source_id":"MZ-C","version":"1","id_number":child_id,
            "name":CHILD,"grid":GRID,"tags":["留守儿童"],"attributes":{"guardian":GUARDIAN}}),
        ),
    )
    .await;
    Household {
        child: app.unified_id("resident", "gongan", "GA-C").await,
        child_id,
        adult: app.unified_id("resident", "gongan", "GA-A").await,
        house: app.unified_id("house", "zhujian", "ZJ-7").await,
    }
}

fn value<'a>(profile: &'a Value, field: &str) -> &'a Value {
    &profile["fields"][field]["value"]
}

fn tags(profile: &Value) -> Vec<String> {
    profile["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["tag"].as_str().map(str::to_owned))
        .collect()
}

/// GET with a purpose and optional extra headers; returns status, request id and body.
async fn read(
    app: &TestApp,
    path: &str,
    token: &str,
    purpose: &str,
    break_glass: Option<&str>,
) -> (u16, String, Value) {
    let mut request = app
        .client
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .header("x-purpose", purpose);
    if let Some(reason) = break_glass {
        request = request.header("x-break-glass", reason);
    }
    let response = request.send().await.expect("the request is sent");
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        request_id,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Waits until a search for `q` finds `wanted` (the index follows the store asynchronously).
async fn search_until(app: &TestApp, q: &str, token: &str, purpose: &str, wanted: &[&str]) {
    let started = Instant::now();
    loop {
        let (status, _, page) =
            read(app, &format!("/v1/residents?q={q}"), token, purpose, None).await;
        let ids = hit_ids(&page);
        if status == 200 && wanted.iter().all(|w| ids.iter().any(|i| i == w)) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{q} never found {wanted:?}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The summary of hit `id` in a search page.
fn summary<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|item| item["id"] == id)
        .map(|item| &item["summary"])
        .unwrap_or(&Value::Null)
}

/// Audit records about `entity`, as a compliance officer reads them.
async fn audited(app: &TestApp, entity: &str) -> Vec<Value> {
    let (status, page) = app
        .get(
            &format!("/v1/audit/records?entity={entity}&limit=500"),
            &app.compliance(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["records"].as_array().cloned().unwrap_or_default()
}

/// The audit record of one request.
fn record_of<'a>(records: &'a [Value], request_id: &str) -> &'a Value {
    assert!(
        !request_id.is_empty(),
        "every response carries a request id"
    );
    records
        .iter()
        .find(|r| r["request_id"] == request_id)
        .unwrap_or_else(|| panic!("request {request_id} was not audited: {records:?}"))
}

fn fields_clear(record: &Value) -> Vec<&str> {
    record["fields_clear"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[tokio::test]
async fn a_child_is_masked_unless_child_protection_work_unlocks_it() {
    let app = TestApp::spawn().await;
    let home = publish_household(&app).await;
    let child_path = format!("/v1/residents/{}", home.child);
    let adult_path = format!("/v1/residents/{}", home.adult);
    let worker = app.token("grid_worker", &[GRID], None);
    let officer = app.token("community_officer", &[COMMUNITY], None);
    let masked_id = format!("{}********{}", &home.child_id[..6], &home.child_id[14..]);
    // The reads that showed the child masked: (request id, who and why).
    let mut masked_reads: Vec<(String, String)> = Vec::new();

    // A grid worker on a routine visit reads the adult in clear …
    let (status, request, adult) = read(&app, &adult_path, &worker, "routine_visit", None).await;
    assert_eq!(status, 200, "{adult}");
    assert_eq!(value(&adult, "name"), ADULT);
    assert_eq!(value(&adult, "phone"), ADULT_PHONE);
    let adult_read = request;
    // … and the child masked, for a routine visit and for child protection alike.
    for purpose in ["routine_visit", "child_protection"] {
        let (status, request, child) = read(&app, &child_path, &worker, purpose, None).await;
        assert_eq!(status, 200, "{child}");
        assert_eq!(value(&child, "name"), "王**", "{purpose}: {child}");
        assert_eq!(value(&child, "phone"), "138****1111", "{purpose}: {child}");
        assert_eq!(value(&child, "id_number"), masked_id.as_str(), "{purpose}");
        assert_eq!(
            value(&child, "address"),
            "北京市朝阳区望京街道幸福里小区3号楼****"
        );
        assert_eq!(value(&child, "age"), "***", "{purpose}: {child}");
        assert_eq!(
            value(&child, "grid"),
            GRID,
            "where the child lives stays readable"
        );
        let tags = tags(&child);
        assert!(tags.contains(&"民政关注".to_owned()), "{purpose}: {child}");
        let text = child.to_string();
        for secret in [
            CHILD,
            CHILD_PHONE,
            home.child_id.as_str(),
            GUARDIAN,
            "留守儿童",
            "户籍人口",
        ] {
            assert!(!text.contains(secret), "{purpose}: {secret} in {text}");
        }
        masked_reads.push((request, format!("grid_worker {purpose}")));
    }

    // A community officer on a routine visit: the child masked too.
    let (status, request, child) = read(&app, &child_path, &officer, "routine_visit", None).await;
    assert_eq!(status, 200, "{child}");
    assert_eq!(value(&child, "name"), "王**", "{child}");
    assert!(!child.to_string().contains(GUARDIAN), "{child}");
    masked_reads.push((request, "community_officer routine_visit".to_owned()));
    // Doing child protection: the name, the phone, the welfare tag and detail in clear; the
    // ID number stays masked (never a community officer's in clear).
    let (status, request, child) =
        read(&app, &child_path, &officer, "child_protection", None).await;
    assert_eq!(status, 200, "{child}");
    assert_eq!(value(&child, "name"), CHILD, "{child}");
    assert_eq!(value(&child, "phone"), CHILD_PHONE, "{child}");
    assert_eq!(value(&child, "id_number"), masked_id.as_str(), "{child}");
    assert!(tags(&child).contains(&"留守儿童".to_owned()), "{child}");
    assert_eq!(
        child["attributes"]["minzheng"]["guardian"], GUARDIAN,
        "{child}"
    );
    assert!(!child.to_string().contains(&home.child_id), "{child}");
    let protection_read = request;
    // Break-glass in an emergency does not lift the child above the minor level.
    let (status, request, child) = read(
        &app,
        &child_path,
        &officer,
        "emergency",
        Some("火灾现场需要联系监护人"),
    )
    .await;
    assert_eq!(status, 200, "{child}");
    assert_eq!(value(&child, "name"), "王**", "{child}");
    assert!(!child.to_string().contains(CHILD_PHONE), "{child}");
    let glass_read = request;

    // The house lists both occupants; the adult is named.
    let (status, request, house) = read(
        &app,
        &format!("/v1/houses/{}", home.house),
        &worker,
        "routine_visit",
        None,
    )
    .await;
    assert_eq!(status, 200, "{house}");
    let occupants = house["related"]["occupants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let label_of = |id: &str| {
        occupants
            .iter()
            .find(|o| o["id"] == id)
            .map(|o| o["label"].clone())
    };
    assert_eq!(label_of(&home.adult), Some(json!(ADULT)), "{house}");
    assert!(
        label_of(&home.child).is_some(),
        "the child is listed: {house}"
    );
    let house_read = request;

    // Search: both found by the building, which the child's masked address still shows;
    // the child's hit shows what its profile shows. By the unit, which the child's masked
    // address hides, only the adult.
    search_until(
        &app,
        "幸福里3号楼",
        &worker,
        "routine_visit",
        &[&home.child, &home.adult],
    )
    .await;
    let (status, _, by_unit) = read(
        &app,
        "/v1/residents?q=3号楼2单元",
        &worker,
        "routine_visit",
        None,
    )
    .await;
    assert_eq!(status, 200, "{by_unit}");
    assert_eq!(hit_ids(&by_unit), vec![home.adult.clone()], "{by_unit}");
    let (status, request, page) = read(
        &app,
        "/v1/residents?q=幸福里3号楼",
        &worker,
        "routine_visit",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(summary(&page, &home.adult)["name"], ADULT, "{page}");
    assert_eq!(summary(&page, &home.child)["name"], "王**", "{page}");
    for secret in [CHILD, CHILD_PHONE, home.child_id.as_str()] {
        assert!(!page.to_string().contains(secret), "{secret} in {page}");
    }
    let worker_search = request;
    let (status, request, page) = read(
        &app,
        "/v1/residents?q=3号楼2单元",
        &officer,
        "child_protection",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(summary(&page, &home.child)["name"], CHILD, "{page}");
    let protection_search = request;

    // Every read is on the record, with its purpose and what it showed in clear.
    let about_child = audited(&app, &home.child).await;
    for (request, what) in &masked_reads {
        let record = record_of(&about_child, request);
        assert_eq!(record["action"], "read_resident", "{what}");
        assert_eq!(record["decision"], "masked", "{what}: {record}");
        let clear = fields_clear(record);
        for personal in ["name", "phone", "id_number", "birth_date", "age", "address"] {
            assert!(
                !clear.contains(&personal),
                "{what}: {personal} in clear: {record}"
            );
        }
        assert!(
            record["residents"].as_array().is_some_and(|r| r.len() == 1),
            "{record}"
        );
    }
    let record = record_of(&about_child, &protection_read);
    assert_eq!(record["purpose"], "child_protection", "{record}");
    assert!(fields_clear(record).contains(&"name"), "{record}");
    assert!(!fields_clear(record).contains(&"id_number"), "{record}");
    let record = record_of(&about_child, &glass_read);
    assert_eq!(record["decision"], "break_glass", "{record}");
    assert!(!fields_clear(record).contains(&"name"), "{record}");
    for request in [&worker_search, &protection_search] {
        let record = record_of(&about_child, request);
        assert_eq!(record["action"], "search", "{record}");
    }
    let about_adult = audited(&app, &home.adult).await;
    let record = record_of(&about_adult, &adult_read);
    assert_eq!(record["action"], "read_resident", "{record}");
    assert!(fields_clear(record).contains(&"name"), "{record}");
    let about_house = audited(&app, &home.house).await;
    assert_eq!(record_of(&about_house, &house_read)["action"], "read_house");
}

#[tokio::test]
async fn the_policy_preview_shows_the_minor_class() {
    let app = TestApp::spawn().await;
    let preview = |role: &'static str, purpose: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .get(
                    &format!("/v1/policy/preview?role={role}&purpose={purpose}"),
                    &app.compliance(),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{role} {purpose}: {body}");
            body
        }
    };
    let class = |body: &Value| {
        body["classes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["class"] == "minor")
            .map(|c| c["level"].clone())
    };
    let field = |body: &Value, kind: &str, name: &str| {
        body["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["kind"] == kind && f["field"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    for (role, purpose, minor, name) in [
        ("grid_worker", "routine_visit", "masked", "masked"),
        ("grid_worker", "child_protection", "masked", "masked"),
        ("community_officer", "routine_visit", "masked", "masked"),
        ("community_officer", "child_protection", "clear", "clear"),
        ("street_officer", "child_protection", "clear", "clear"),
        ("compliance_officer", "child_protection", "hidden", "hidden"),
    ] {
        let body = preview(role, purpose).await;
        assert_eq!(class(&body), Some(json!(minor)), "{role} {purpose}: {body}");
        let name_field = field(&body, "resident", "name");
        assert_eq!(name_field["minor"], name, "{role} {purpose}: {name_field}");
        // The field's own level is kept beside it: an adult's name is clear for readers.
        let reads = role != "compliance_officer";
        assert_eq!(name_field["level"] == "clear", reads, "{name_field}");
        // Public and internal fields are not capped; an ID number never rises to clear.
        assert_eq!(
            field(&body, "resident", "grid")["minor"],
            field(&body, "resident", "grid")["level"]
        );
        assert_ne!(
            field(&body, "resident", "id_number")["minor"],
            "clear",
            "{body}"
        );
        // Only resident fields describe a child.
        assert!(
            field(&body, "house", "address").get("minor").is_none(),
            "{body}"
        );
    }
    // The new purpose is among those configured; one that is not is refused.
    let (status, info) = app.get("/v1/policy", &app.compliance(), None).await;
    assert_eq!(status, 200, "{info}");
    assert!(info["purposes"]
        .as_array()
        .is_some_and(|p| p.contains(&json!("child_protection"))));
    let (status, body) = app
        .get(
            "/v1/policy/preview?role=grid_worker&purpose=child_care",
            &app.compliance(),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("purpose_unknown"))
    );
}

/// A house's `occupants` name a child at the `minor` level: the related entity carries the
/// occupant's known birth dates, so the view tells the child from the adult beside it.
#[tokio::test]
async fn a_child_among_a_houses_occupants_is_named_at_the_minor_level() {
    let app = TestApp::spawn().await;
    let home = publish_household(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let (status, house) = app
        .get(
            &format!("/v1/houses/{}", home.house),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200, "{house}");
    assert!(house.to_string().contains(ADULT), "{house}");
    assert!(!house.to_string().contains(CHILD), "{house}");
}

/// Open: the search index does not know who is under 14, so a full name the caller sees only
/// masked on the child's profile still finds the child (the hit itself shows it masked).
#[tokio::test]
async fn a_grid_worker_cannot_find_a_child_by_a_name_it_sees_only_masked() {
    let app = TestApp::spawn().await;
    let home = publish_household(&app).await;
    let worker = app.token("grid_worker", &[GRID], None);
    search_until(&app, ADULT, &worker, "routine_visit", &[&home.adult]).await;
    let (status, page) = app
        .get(
            &format!("/v1/residents?q={CHILD}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(!hit_ids(&page).contains(&home.child), "{page}");
    // What the worker does see of the child (the surname of a masked name) still finds it.
    search_until(
        &app,
        "王",
        &worker,
        "routine_visit",
        &[&home.child, &home.adult],
    )
    .await;
    let officer = app.token("community_officer", &[COMMUNITY], None);
    let (_, page) = app
        .get(
            &format!("/v1/residents?q={CHILD}"),
            &officer,
            Some("child_protection"),
        )
        .await;
    assert!(hit_ids(&page).contains(&home.child), "{page}");
}
