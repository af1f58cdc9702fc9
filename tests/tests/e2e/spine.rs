//! The spine end to end: publish over TLS, merge across departments, read one masked
//! profile with provenance, and prove nothing personal is stored in plaintext.

use e2e_tests::id;
use e2e_tests::{contains_bytes, files_under, TestApp, COMMUNITY, GRID, OTHER_GRID, STREET};
use model::IdNumber;
use serde_json::{json, Value};

fn line(value: Value) -> String {
    format!("{value}\n")
}

struct Person {
    id18: String,
    id15: String,
}

/// 张三, born 1949-12-31, published by five departments with realistic disagreements.
async fn publish_zhang_san(app: &TestApp) -> Person {
    let id18 = id("11010519491231002");
    let id15 = format!("{}{}", &id18[..6], &id18[8..17]);
    app.ingest(
        "zhujian",
        line(
            json!({"kind":"house","source_id":"ZJ-55","version":"2026-10-01T08:00:00Z",
            "address":"北京市朝阳区望京街道幸福里小区3号楼2单元501","grid":GRID,"usage":"own",
            "owner_id_number":id18}),
        ),
    )
    .await;
    app.ingest(
        "gongan",
        line(json!({"kind":"resident","source_id":"GA-000123","version":"2026-11-01T08:00:00Z",
            "id_number":id18,"name":"张三","gender":"male","birth_date":"1949-12-31","ethnicity":"汉族",
            "phone":"13812345678","hukou_address":"北京市朝阳区望京街道幸福里小区3号楼2单元501",
            "address":"北京市朝阳区望京街道幸福里小区3号楼2单元501","house_source_id":"ZJ-55",
            "grid":GRID,"tags":["户籍人口"]})),
    )
    .await;
    app.ingest(
        "minzheng",
        line(
            json!({"kind":"resident","source_id":"MZ-77","version":"2026-11-05T08:00:00Z",
            "id_number":id15,"name":"張三","phone":"13912345678","grid":GRID,
            "tags":["独居老人","低保"],"attributes":{"allowance_monthly":1200}}),
        ),
    )
    .await;
    app.ingest(
        "weijian",
        line(
            json!({"kind":"resident","source_id":"WJ-5","version":"2026-11-02T08:00:00Z",
            "id_number":id18,"name":"张三","grid":GRID,"tags":["慢性病"],
            "attributes":{"diagnosis":"高血压"}}),
        ),
    )
    .await;
    app.ingest(
        "wangge",
        format!(
            "{}{}",
            line(json!({"kind":"resident","source_id":"WG-R1","version":"2026-11-20T08:00:00Z",
                "id_number":id18,"name":"张三","address":"北京市朝阳区望京街道幸福里小区5号楼1单元302",
                "grid":GRID})),
            line(json!({"kind":"event","source_id":"WG-9","version":"2026-11-21T08:00:00Z",
                "type":"dispute","title":"邻里噪音纠纷","description":"楼上装修噪音，双方已调解",
                "occurred_at":"2026-11-21T09:30:00+08:00","grid":GRID,"status":"open",
                "house_source_id":"ZJ-55","party_id_numbers":[id18]}))
        ),
    )
    .await;
    Person { id18, id15 }
}

#[tokio::test]
async fn receipt_reports_every_bad_record_and_keeps_the_good_ones() {
    let app = TestApp::spawn().await;
    let good = id("11010519800101001");
    let body = [
        line(json!({"kind":"resident","source_id":"GA-1","version":"1","id_number":good,"name":"李四","grid":GRID})),
        "{not json\n".to_owned(),
        line(json!({"kind":"resident","source_id":"GA-2","version":"1","id_number":"110105198001010011","name":"王五","grid":GRID})),
        line(json!({"kind":"resident","source_id":"GA-3","version":"1","name":"赵六","grid":"12345"})),
        line(json!({"kind":"resident","source_id":"GA-4","version":"1","name":"钱七"})),
        line(json!({"kind":"resident","source_id":"GA-5","version":"1","name":"孙八","grid":GRID,"phone":"12345"})),
        line(json!({"kind":"house","source_id":"GA-H1","version":"1","address":"幸福里3号楼","grid":GRID})),
    ]
    .concat();
    let receipt = app.ingest("gongan", body).await;
    assert_eq!(receipt["accepted"], 2, "{receipt}");
    assert_eq!(receipt["created"], 2);
    let rejected: Vec<(u64, String)> = receipt["rejected"]
        .as_array()
        .expect("rejected list")
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or(0),
                r["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![
            (2, "json_syntax".to_owned()),
            (3, "id_number_checksum".to_owned()),
            (4, "division_length".to_owned()),
            (5, "grid_unresolved".to_owned()),
            (6, "phone_length".to_owned()),
        ]
    );
    assert_eq!(receipt["grid_unresolved"], 1, "{receipt}");
    // No rejection message repeats the value it rejected.
    assert!(!receipt.to_string().contains("110105198001010011"));
}

#[tokio::test]
async fn redelivery_is_idempotent_and_the_receipt_can_be_fetched_again() {
    let app = TestApp::spawn().await;
    let body = line(
        json!({"kind":"resident","source_id":"GA-9","version":"2026-11-01T08:00:00Z",
        "id_number":id("11010519800101001"),"name":"李四","grid":GRID}),
    );
    let first = app.ingest("gongan", body.clone()).await;
    let second = app.ingest("gongan", body).await;
    assert_eq!(first["batch_id"], second["batch_id"]);
    assert_eq!(
        (first["created"].as_u64(), second["created"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(second["unchanged"], 1);
    let batch = second["batch_id"].as_str().expect("batch id");
    let (status, stored) = app
        .get(
            &format!("/v1/ingest/gongan/batches/{batch}"),
            &app.publisher("gongan"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(stored["unchanged"], 1);
    // Another department cannot read gongan's receipts.
    let (status, _) = app
        .get(
            &format!("/v1/ingest/gongan/batches/{batch}"),
            &app.publisher("minzheng"),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn one_person_from_five_departments_merges_with_provenance() {
    let app = TestApp::spawn().await;
    let person = publish_zhang_san(&app).await;
    let unified = app.unified_id("resident", "gongan", "GA-000123").await;
    for (dept, source) in [
        ("minzheng", "MZ-77"),
        ("weijian", "WJ-5"),
        ("wangge", "WG-R1"),
    ] {
        assert_eq!(
            app.unified_id("resident", dept, source).await,
            unified,
            "{dept}"
        );
    }
    let officer = app.token("community_officer", &[COMMUNITY], None);
    let (status, profile) = app
        .get(
            &format!("/v1/residents/{unified}"),
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    let departments: Vec<&str> = profile["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["department"].as_str())
        .collect();
    assert_eq!(departments, vec!["gongan", "minzheng", "weijian", "wangge"]);
    // 公安 is the authority for identity; the traditional-character spelling stays visible.
    let name = &profile["fields"]["name"];
    assert_eq!(name["value"], "张三");
    assert_eq!(name["source"], "gongan");
    assert_eq!(name["version"], "2026-11-01T08:00:00Z");
    assert_eq!(name["conflicts"][0]["value"], "張三");
    assert_eq!(name["conflicts"][0]["source"], "minzheng");
    assert_eq!(profile["fields"]["phone"]["value"], "13812345678");
    assert_eq!(
        profile["fields"]["phone"]["conflicts"][0]["value"],
        "13912345678"
    );
    // The grid centre knows where people actually live.
    assert_eq!(profile["fields"]["address"]["source"], "wangge");
    assert!(profile["fields"]["address"]["value"]
        .as_str()
        .is_some_and(|a| a.contains("5号楼")));
    // The 15-digit legacy ID merged; every ID shown is masked.
    assert_eq!(
        profile["fields"]["id_number"]["value"],
        "110105********002X"
    );
    assert!(!profile.to_string().contains(&person.id18));
    assert!(!profile.to_string().contains(&person.id15));
    let tags: Vec<&str> = profile["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["tag"].as_str())
        .collect();
    // A community officer sees that 卫健 flags the resident (a masked tag), not the diagnosis.
    for tag in ["户籍人口", "独居老人", "低保", "健康关注"] {
        assert!(tags.contains(&tag), "{tag} in {tags:?}");
    }
    assert!(!tags.contains(&"慢性病"));
    assert!(!profile.to_string().contains("高血压"));
    assert_eq!(profile["attributes"]["minzheng"]["allowance_monthly"], 1200);
    // Related entities: the house (with its occupant) and the event (with its party).
    let house = profile["related"]["house"][0]["id"]
        .as_str()
        .expect("house")
        .to_owned();
    let event = profile["related"]["events"][0]["id"]
        .as_str()
        .expect("event")
        .to_owned();
    let (status, house_profile) = app
        .get(
            &format!("/v1/houses/{house}"),
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        house_profile["related"]["occupants"][0]["id"],
        unified.as_str()
    );
    assert_eq!(house_profile["fields"]["usage"]["value"], "own");
    let (status, event_profile) = app
        .get(
            &format!("/v1/events/{event}"),
            &officer,
            Some("dispute_mediation"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        event_profile["related"]["parties"][0]["id"],
        unified.as_str()
    );
    assert_eq!(event_profile["fields"]["type"]["value"], "dispute");
    assert_eq!(app.unified_id("event", "wangge", "WG-9").await, event);
    assert_eq!(app.unified_id("house", "zhujian", "ZJ-55").await, house);
}

#[tokio::test]
async fn a_grid_worker_sees_no_health_data_and_no_birth_date_beside_a_masked_id() {
    let app = TestApp::spawn().await;
    publish_zhang_san(&app).await;
    let unified = app.unified_id("resident", "gongan", "GA-000123").await;
    let worker = app.token("grid_worker", &[GRID], None);
    let (status, profile) = app
        .get(
            &format!("/v1/residents/{unified}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200);
    let text = profile.to_string();
    assert!(!text.contains("慢性病"));
    assert!(!text.contains("高血压"));
    assert!(!text.contains("weijian"));
    assert_eq!(profile["fields"]["birth_date"]["value"], "1949");
    assert_eq!(profile["fields"]["name"]["value"], "张三");
}

#[tokio::test]
async fn out_of_jurisdiction_answers_exactly_like_a_missing_record() {
    let app = TestApp::spawn().await;
    publish_zhang_san(&app).await;
    let unified = app.unified_id("resident", "gongan", "GA-000123").await;
    let elsewhere = app.token("grid_worker", &[OTHER_GRID], None);
    let (status, hidden) = app
        .get(
            &format!("/v1/residents/{unified}"),
            &elsewhere,
            Some("routine_visit"),
        )
        .await;
    let (missing_status, missing) = app
        .get(
            "/v1/residents/r_00000000000000000000",
            &elsewhere,
            Some("routine_visit"),
        )
        .await;
    assert_eq!((status, missing_status), (404, 404));
    assert_eq!(hidden, missing);
    let (status, by_source) = app
        .get(
            "/v1/residents/by-source/gongan/GA-000123",
            &elsewhere,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(by_source, missing);
}

#[tokio::test]
async fn roles_purposes_and_departments_are_enforced() {
    let app = TestApp::spawn().await;
    publish_zhang_san(&app).await;
    let unified = app.unified_id("resident", "gongan", "GA-000123").await;
    let path = format!("/v1/residents/{unified}");
    let worker = app.token("grid_worker", &[STREET], None);
    let (status, body) = app.get(&path, &worker, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("purpose_required"))
    );
    let (status, body) = app.get(&path, &worker, Some("curiosity")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("purpose_unknown"))
    );
    for role in [
        "dept_publisher",
        "compliance_officer",
        "security_admin",
        "system_admin",
    ] {
        let token = app.token(role, &[STREET], Some("gongan"));
        let (status, body) = app.get(&path, &token, Some("routine_visit")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("role_cannot_read")),
            "{role}"
        );
    }
    let (status, body) = app.get(&path, "garbage", Some("routine_visit")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    // A publisher publishes only as itself; a reader cannot publish.
    let record =
        line(json!({"kind":"resident","source_id":"X","version":"1","name":"某某","grid":GRID}));
    let response = app
        .ingest_as(&app.publisher("minzheng"), "gongan", record.clone())
        .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "department_mismatch");
    let response = app.ingest_as(&worker, "gongan", record).await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn an_oversized_batch_gets_a_clear_413() {
    let mut config = broker::config::Config::default();
    config.ingest.max_body_bytes = 4096;
    let app = TestApp::spawn_with(config).await;
    let big = "x".repeat(10_000);
    let response = app.ingest_as(&app.publisher("gongan"), "gongan", big).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_fails_to_open() {
    let app = TestApp::spawn().await;
    let body = [
        line(json!({"kind":"resident","source_id":"GA-A","version":"1","id_number":id("11010519800101001"),"name":"李四","grid":GRID})),
        line(json!({"kind":"resident","source_id":"GA-B","version":"1","id_number":id("11010519810202002"),"name":"王五","grid":GRID})),
    ]
    .concat();
    app.ingest("gongan", body).await;
    let a = app.unified_id("resident", "gongan", "GA-A").await;
    let mut app = app;
    app.stop().await;
    {
        let store = app.open_store();
        let reader = store.read().expect("read");
        let mut row_a = reader
            .source("gongan/resident/GA-A")
            .expect("get")
            .expect("row A");
        let row_b = reader
            .source("gongan/resident/GA-B")
            .expect("get")
            .expect("row B");
        drop(reader);
        let previous = row_a.clone();
        row_a
            .sealed
            .insert("name".to_owned(), row_b.sealed["name"].clone());
        store
            .write(|w| w.put_source(&row_a, Some(&previous)))
            .expect("write the swapped ciphertext");
    }
    let app = app.restart().await;
    let officer = app.token("street_officer", &[STREET], None);
    let (status, body) = app
        .get(
            &format!("/v1/residents/{a}"),
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], "integrity_error");
    assert!(!body.to_string().contains("王五"));
    // A lookup by source answers an id and opens no field, so the broken one does not stop it.
    let (status, body) = app
        .get(
            "/v1/residents/by-source/gongan/GA-A",
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(
        (status, body["id"].as_str()),
        (200, Some(a.as_str())),
        "{body}"
    );

    // The search index caught up past the broken row (the restart waited for `/readyz`): the
    // other resident is found, the broken one is left out and counted.
    let (status, body) = app
        .get("/v1/residents?q=wangwu", &officer, Some("routine_visit"))
        .await;
    assert_eq!((status, body["total"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = app
        .get("/v1/residents?q=lisi", &officer, Some("routine_visit"))
        .await;
    assert_eq!((status, body["total"].as_u64()), (200, Some(0)), "{body}");
    let (_, _, metrics) = app.metrics_text().await;
    assert!(
        metrics.contains("safegrid_index_skipped_entities_total 1"),
        "{metrics}"
    );
    // The administrator sees which entity was skipped and why (its key only).
    let admin = app.token("system_admin", &[STREET], None);
    let (status, problems) = app.get("/v1/admin/problems", &admin, None).await;
    assert_eq!(status, 200, "{problems}");
    assert!(
        problems["problems"].as_array().is_some_and(|list| list
            .iter()
            .any(|p| p["item"] == a.as_str() && p["kind"] == "integrity_error")),
        "{problems}"
    );
    assert!(!problems.to_string().contains("王五"));
    let (status, _) = app.get("/v1/admin/problems", &officer, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn no_plaintext_identifier_anywhere_under_the_data_directory() {
    use demo::generate::{DemoConfig, DemoWorld, DEPARTMENTS};
    let mut app = TestApp::spawn().await;
    let world = DemoWorld::new(DemoConfig {
        residents: 300,
        seed: 7,
        bad_record_rate: 0.02,
    });
    for dept in DEPARTMENTS {
        app.ingest(dept, world.ndjson(dept, 0..300)).await;
    }
    // Read some profiles so the audit log has entries too.
    let officer = app.token("street_officer", &[STREET, world.street_code()], None);
    for index in 0..20 {
        let person = world.person(index);
        if let Ok(id) = IdNumber::parse(&person.id_number) {
            let unified = app
                .broker
                .as_ref()
                .expect("running")
                .state
                .vault
                .resident_entity(&id);
            app.get(
                &format!("/v1/residents/{unified}"),
                &officer,
                Some("case_investigation"),
            )
            .await;
        }
    }
    app.stop().await;
    let files = files_under(&app.data_dir);
    let mut contents: Vec<(std::path::PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).expect("readable");
            (f, bytes)
        })
        .collect();
    // The store itself: the file, or every table of the PostgreSQL schema.
    match app.store.postgres() {
        Some(options) => contents.push((
            std::path::PathBuf::from(format!("postgres schema {}", options.schema)),
            e2e_tests::postgres_bytes(&options.schema),
        )),
        None => assert!(contents.iter().any(|(f, _)| f.ends_with("store.redb"))),
    }
    let mut needles = Vec::new();
    for index in 0..300 {
        let person = world.person(index);
        needles.push(person.id_number.clone());
        needles.extend(person.legacy_id_number.clone());
        needles.extend(person.phone.clone());
    }
    assert!(needles.len() > 500);
    let lengths: std::collections::BTreeSet<usize> = needles.iter().map(String::len).collect();
    let needles: std::collections::HashSet<&[u8]> = needles.iter().map(|n| n.as_bytes()).collect();
    for (file, bytes) in &contents {
        for len in &lengths {
            assert!(
                !bytes.windows(*len).any(|w| needles.contains(w)),
                "a plaintext identifier was found in {}",
                file.display()
            );
        }
    }
    // The master key lives beside the data directory, not in it.
    let master = std::fs::read(vault::keys::default_master_key_path(&app.data_dir)).expect("key");
    for (file, bytes) in &contents {
        assert!(
            !contains_bytes(bytes, master.trim_ascii()),
            "{}",
            file.display()
        );
    }
}

#[tokio::test]
async fn the_system_administrator_backs_up_while_serving_and_the_backup_restores() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = broker::config::Config {
        backup_dir: Some(root.path().join("backups")),
        ..broker::config::Config::default()
    };
    let app = TestApp::spawn_with(config).await;
    let body = line(
        json!({"kind":"resident","source_id":"GA-B1","version":"1","id_number":id("11010519800101001"),"name":"李四","grid":GRID}),
    );
    app.ingest("gongan", body).await;
    // Nobody else may start one (三员分立).
    for role in ["grid_worker", "compliance_officer", "security_admin"] {
        let response = app
            .client
            .post(format!("{}/v1/admin/backup", app.url))
            .bearer_auth(app.token(role, &[STREET], None))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 403, "{role}");
    }
    let response = app
        .client
        .post(format!("{}/v1/admin/backup", app.url))
        .bearer_auth(app.token("system_admin", &[STREET], None))
        .send()
        .await
        .expect("sent");
    if e2e_tests::on_postgres() {
        // A database is backed up by its own tools; the broker says so instead of copying
        // half of what it serves.
        assert_eq!(response.status(), 409);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "backup_store_external", "{body}");
        assert!(!root.path().join("backups").exists());
        return;
    }
    assert_eq!(response.status(), 200);
    let done: Value = response.json().await.expect("json");
    let path = std::path::PathBuf::from(done["path"].as_str().expect("path"));
    assert!(path.starts_with(root.path().join("backups")));
    // The backup restores into a new data directory holding the same record.
    let restored = root.path().join("restored");
    vault::backup::restore(&path, &restored).expect("restore");
    let store = vault::store::Store::open(&restored.join("store.redb")).expect("store");
    let reader = store.read().expect("read");
    assert!(reader
        .source("gongan/resident/GA-B1")
        .expect("get")
        .is_some());
}

/// Departments know addresses, not grid codes: a record without a grid takes the grid of the
/// house at its building, or of the person it belongs to; one whose grid cannot be derived
/// waits in quarantine as `grid_unresolved`; and a derived grid never lets a publisher place
/// a record outside its own jurisdiction.
#[tokio::test]
async fn a_record_without_a_grid_takes_it_from_its_address_or_its_person() {
    let app = TestApp::spawn().await;
    let other_grid = "110105001002004";
    let officer = app.token("street_officer", &[e2e_tests::STREET], None);
    let grid_of = |dept: &'static str, source: &'static str| {
        let (app, officer) = (&app, &officer);
        async move {
            let (status, id) = app
                .get(
                    &format!("/v1/residents/by-source/{dept}/{source}"),
                    officer,
                    Some("routine_visit"),
                )
                .await;
            assert_eq!(status, 200, "{id}");
            let (_, profile) = app
                .get(
                    &format!("/v1/residents/{}", id["id"].as_str().unwrap_or_default()),
                    officer,
                    Some("routine_visit"),
                )
                .await;
            profile["grid"].as_str().unwrap_or_default().to_owned()
        }
    };
    app.ingest(
        "zhujian",
        line(json!({"kind":"house","source_id":"ZJ-G1","version":"1",
            "address":"北京市某区青松园5号楼","grid":GRID})),
    )
    .await;
    app.ingest(
        "gongan",
        line(json!({"kind":"resident","source_id":"GA-G1","version":"1",
            "id_number":id("11010519700202001"),"name":"周立","grid":other_grid})),
    )
    .await;
    let body = [
        // The building's house says which grid.
        line(
            json!({"kind":"resident","source_id":"MZ-G1","version":"1","name":"吴敏",
            "address":"某区青松园5号楼2单元301"}),
        ),
        // The person's household register says which grid.
        line(
            json!({"kind":"resident","source_id":"MZ-G2","version":"1","name":"周立",
            "id_number":id("11010519700202001")}),
        ),
        // Nothing says which grid.
        line(
            json!({"kind":"resident","source_id":"MZ-G3","version":"1","name":"郑和",
            "address":"某区无名园9号楼1单元101"}),
        ),
    ]
    .concat();
    let receipt = app.ingest("minzheng", body).await;
    assert_eq!(receipt["accepted"], 2, "{receipt}");
    assert_eq!(receipt["grid_unresolved"], 1, "{receipt}");
    assert_eq!(
        receipt["rejected"][0]["code"], "grid_unresolved",
        "{receipt}"
    );
    assert!(
        receipt["rejected"][0]["quarantine_id"].is_string(),
        "it waits in quarantine"
    );
    assert_eq!(grid_of("minzheng", "MZ-G1").await, GRID);
    assert_eq!(grid_of("minzheng", "MZ-G2").await, other_grid);

    // A publisher bounded to another community cannot have a record placed, through the
    // address, in this one.
    let bounded = app.token("dept_publisher", &["110105001002"], Some("minzheng"));
    let response = app
        .ingest_as(
            &bounded,
            "minzheng",
            line(
                json!({"kind":"resident","source_id":"MZ-G4","version":"1","name":"冯刚",
                "address":"某区青松园5号楼1单元101"}),
            ),
        )
        .await;
    let receipt: Value = response.json().await.expect("a receipt");
    assert_eq!(receipt["accepted"], 0, "{receipt}");
    assert_eq!(
        receipt["rejected"][0]["code"], "grid_outside_jurisdiction",
        "{receipt}"
    );
}

/// A record waiting for its grid is stored by itself once the evidence arrives: the house at
/// its building, or an officer's assignment of the building (or its compound) to a grid. Only officers assign,
/// only inside their jurisdiction, and the publisher's receipt stays as it was.
#[tokio::test]
async fn a_record_waiting_for_its_grid_is_released_when_the_evidence_arrives() {
    let app = TestApp::spawn().await;
    let officer = app.token("street_officer", &[e2e_tests::STREET], None);
    let visible = |source: &'static str| {
        let (app, officer) = (&app, &officer);
        async move {
            let started = std::time::Instant::now();
            loop {
                if visible_now(app, officer, source).await {
                    return true;
                }
                if started.elapsed() > std::time::Duration::from_secs(15) {
                    return false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let body = [
        line(
            json!({"kind":"resident","source_id":"MZ-W1","version":"1","name":"郑和",
            "address":"某区无名园9号楼1单元101"}),
        ),
        line(
            json!({"kind":"resident","source_id":"MZ-W2","version":"1","name":"卫青",
            "address":"某区新月园2号楼3单元301"}),
        ),
    ]
    .concat();
    let receipt = app.ingest("minzheng", body).await;
    assert_eq!(receipt["grid_unresolved"], 2, "{receipt}");
    let batch = receipt["batch_id"].as_str().expect("batch id").to_owned();

    // The house at the first building arrives: the record is stored by itself.
    app.ingest(
        "zhujian",
        line(json!({"kind":"house","source_id":"ZJ-W1","version":"1",
            "address":"北京市某区无名园9号楼","grid":GRID})),
    )
    .await;
    assert!(
        visible("MZ-W1").await,
        "released once its building's house arrived"
    );

    // Assignments: only officers, only inside their jurisdiction, only a building.
    let assign = |token: String, address: &'static str, grid: &'static str| {
        let app = &app;
        async move {
            let response = app
                .client
                .post(format!("{}/v1/addresses/assign", app.url))
                .bearer_auth(token)
                .json(&json!({"address": address, "grid": grid}))
                .send()
                .await
                .expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    };
    let worker = app.token("grid_worker", &[e2e_tests::STREET], None);
    assert_eq!(assign(worker, "某区新月园2号楼", GRID).await.0, 403);
    let elsewhere = app.token("community_officer", &["110105001002"], None);
    let (status, body) = assign(elsewhere, "某区新月园2号楼", GRID).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("grid_outside_jurisdiction"))
    );
    let (status, body) = assign(officer.clone(), "3号楼2单元", GRID).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("address_without_compound"))
    );
    assert!(!visible_now(&app, &officer, "MZ-W2").await, "still waiting");
    let (status, body) = assign(officer.clone(), "某区新月园2号楼", GRID).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], 1, "{body}");
    assert!(visible("MZ-W2").await);

    // A whole compound, for the buildings no house or assignment speaks for.
    app.ingest(
        "minzheng",
        line(
            json!({"kind":"resident","source_id":"MZ-W3","version":"1","name":"霍光",
            "address":"某区松风苑7号楼2单元101"}),
        ),
    )
    .await;
    assert!(!visible_now(&app, &officer, "MZ-W3").await, "waiting");
    let (status, body) = assign(officer.clone(), "某区松风苑", GRID).await;
    assert_eq!(
        (status, body["released"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert!(visible("MZ-W3").await);

    // The publisher's receipt is the one it was given.
    let publisher = app.publisher("minzheng");
    let (status, kept) = app
        .get(
            &format!("/v1/ingest/minzheng/batches/{batch}"),
            &publisher,
            None,
        )
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["grid_unresolved"], 2, "{kept}");
}

async fn visible_now(app: &TestApp, token: &str, source: &str) -> bool {
    let (status, _) = app
        .get(
            &format!("/v1/residents/by-source/minzheng/{source}"),
            token,
            Some("routine_visit"),
        )
        .await;
    status == 200
}
