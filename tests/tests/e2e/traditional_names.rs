//! One Chinese text normalisation across the broker: a resident published in traditional
//! characters (王強) is found by what a grid worker types in simplified characters (王强), in
//! pinyin and in initials, and another department's record of the same person written in
//! simplified characters, without an ID number, joins the same resident.

use demo::generate::{DemoConfig, DemoWorld};
use e2e_tests::{hit_ids, id, TestApp};
use serde_json::json;

const PERSONS: usize = 400;

/// The demo street published by three departments with ID numbers (what the linkage model
/// learns from), a gongan resident written 王強, and the model estimated.
async fn setup() -> (TestApp, DemoWorld, String) {
    let app = TestApp::spawn().await;
    let world = DemoWorld::new(DemoConfig {
        residents: PERSONS,
        seed: 29,
        bad_record_rate: 0.0,
    });
    for dept in ["gongan", "minzheng", "weijian"] {
        app.ingest(dept, world.ndjson(dept, 0..PERSONS)).await;
    }
    let grid = world.person(0).grid.clone();
    let record = json!({"kind":"resident","source_id":"GA-TRAD-1","version":"1",
        "id_number": id("11010519800312123"), "name":"王強", "gender":"male",
        "birth_date":"1980-03-12", "address":"北京市朝阳区某街道安和里3号楼2单元501",
        "grid": grid});
    app.ingest("gongan", format!("{record}\n")).await;
    let state = &app.broker.as_ref().expect("running").state;
    let pipeline = state.pipeline.clone();
    let model = tokio::task::spawn_blocking(move || pipeline.train_linker())
        .await
        .expect("training task")
        .expect("training");
    assert!(model.is_some(), "enough residents to estimate the model");
    let officer = app.token("street_officer", &[world.street_code()], None);
    let (status, body) = app
        .get(
            "/v1/residents/by-source/gongan/GA-TRAD-1",
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let unified = body["id"].as_str().expect("id").to_owned();
    (app, world, unified)
}

#[tokio::test]
async fn a_name_published_in_traditional_characters_is_found_and_linked_in_simplified_ones() {
    let (app, world, unified) = setup().await;
    let officer = app.token("street_officer", &[world.street_code()], None);
    // The index follows the store within a moment: wait until the resident is indexed.
    let started = std::time::Instant::now();
    loop {
        let (_, body) = app
            .get(
                &format!("/v1/residents?q={}", urlencode("王強")),
                &officer,
                Some("routine_visit"),
            )
            .await;
        if hit_ids(&body).contains(&unified) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "never indexed: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    for q in ["王强", "王強", "wangqiang", "wang qiang", "wq", "WANGQIANG"] {
        let path = format!("/v1/residents?q={}", urlencode(q));
        let (status, body) = app.get(&path, &officer, Some("routine_visit")).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert!(
            hit_ids(&body).contains(&unified),
            "{q} finds the resident published as 王強: {body}"
        );
    }
    // Not any 王: a different given name written in traditional characters is not a hit.
    let (_, body) = app
        .get(
            &format!("/v1/residents?q={}", urlencode("王國")),
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert!(!hit_ids(&body).contains(&unified), "{body}");

    // Another department writes the same person in simplified characters, without an ID
    // number and without a phone: only the name, birth date and address say who it is.
    let record = json!({"kind":"resident","source_id":"WJ-SIMP-1","version":"1",
        "name":"王强", "gender":"male", "birth_date":"1980-03-12",
        "address":"朝阳区某街道安和里3号楼2单元501室", "grid": world.person(0).grid});
    app.ingest("weijian", format!("{record}\n")).await;
    let (status, body) = app
        .get(
            "/v1/residents/by-source/weijian/WJ-SIMP-1",
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"].as_str(), Some(unified.as_str()), "{body}");

    // The abuse next to the use: the same name and address with another birth date is
    // another person, and stays one.
    let other = json!({"kind":"resident","source_id":"WJ-SIMP-2","version":"1",
        "name":"王强", "gender":"male", "birth_date":"1961-09-30",
        "address":"朝阳区某街道安和里5号楼1单元101", "grid": world.person(0).grid});
    app.ingest("weijian", format!("{other}\n")).await;
    let (_, body) = app
        .get(
            "/v1/residents/by-source/weijian/WJ-SIMP-2",
            &officer,
            Some("routine_visit"),
        )
        .await;
    assert_ne!(body["id"].as_str(), Some(unified.as_str()), "{body}");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
