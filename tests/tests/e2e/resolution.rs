//! Entity resolution beyond the exact ID: a record without an ID number joins the person it
//! clearly is, an unsure pair waits for an officer, the officer's decision is final across
//! re-ingest, and a wrong link can be split.

use demo::generate::{DemoConfig, DemoWorld};
use e2e_tests::TestApp;
use serde_json::{json, Value};

const PERSONS: usize = 400;

async fn setup() -> (TestApp, DemoWorld) {
    let app = TestApp::spawn().await;
    let world = DemoWorld::new(DemoConfig {
        residents: PERSONS,
        seed: 11,
        bad_record_rate: 0.0,
    });
    // Several departments publish the same people with ID numbers: the shared IDs are what
    // the model learns agreement from.
    for dept in ["gongan", "minzheng", "weijian"] {
        app.ingest(dept, world.ndjson(dept, 0..PERSONS)).await;
    }
    let state = &app.broker.as_ref().expect("running").state;
    let pipeline = state.pipeline.clone();
    let model = tokio::task::spawn_blocking(move || pipeline.train_linker())
        .await
        .expect("training task")
        .expect("training");
    assert!(model.is_some(), "enough residents to estimate the model");
    (app, world)
}

fn officer(app: &TestApp, world: &DemoWorld) -> String {
    app.token("street_officer", &[world.street_code()], None)
}

async fn id_of(app: &TestApp, world: &DemoWorld, dept: &str, source_id: &str) -> Option<String> {
    let (status, body) = app
        .get(
            &format!("/v1/residents/by-source/{dept}/{source_id}"),
            &officer(app, world),
            Some("routine_visit"),
        )
        .await;
    (status == 200).then(|| body["id"].as_str().unwrap_or_default().to_owned())
}

/// A gongan person with a phone, and their unified id.
async fn person_with_phone(app: &TestApp, world: &DemoWorld) -> (demo::generate::Person, String) {
    for index in 0..PERSONS {
        let person = world.person(index);
        if !person.in_gongan || person.phone.is_none() {
            continue;
        }
        if let Some(id) = id_of(app, world, "gongan", &format!("GA-{:08}", index + 1)).await {
            return (person, id);
        }
    }
    panic!("no gongan person with a phone");
}

#[tokio::test]
async fn a_record_without_an_id_joins_the_person_it_clearly_is() {
    let (app, world) = setup().await;
    let (person, unified) = person_with_phone(&app, &world).await;
    let record = json!({"kind":"resident","source_id":"MZ-X1","version":"1","name":person.name,
        "birth_date":person.birth_date.to_string(),"phone":person.phone,"address":person.address,"grid":person.grid});
    app.ingest("minzheng", format!("{record}\n")).await;
    assert_eq!(
        id_of(&app, &world, "minzheng", "MZ-X1").await.as_deref(),
        Some(unified.as_str())
    );
    // Someone else entirely, without an ID: their own entity.
    let stranger = json!({"kind":"resident","source_id":"MZ-X2","version":"1","name":"欧阳某某",
        "birth_date":"1931-01-01","grid":person.grid});
    app.ingest("minzheng", format!("{stranger}\n")).await;
    let other = id_of(&app, &world, "minzheng", "MZ-X2")
        .await
        .expect("visible");
    assert_ne!(other, unified);
}

#[tokio::test]
async fn unsure_pairs_wait_for_an_officer_whose_decision_is_final_and_splittable() {
    let (app, world) = setup().await;
    let token = officer(&app, &world);
    // Weaker and weaker evidence for known people, until the model is unsure about one.
    let mut review: Option<Value> = None;
    'search: for index in 0..PERSONS {
        let person = world.person(index);
        if !person.in_gongan {
            continue;
        }
        // A name alone is never enough to link automatically.
        let variants = [json!({"name": person.name, "address": person.address})];
        for (v, fields) in variants.iter().enumerate() {
            let mut record = json!({"kind":"resident","source_id":format!("MZ-R{index}-{v}"),"version":"1","grid":person.grid});
            for (k, value) in fields.as_object().expect("object") {
                record[k] = value.clone();
            }
            app.ingest("minzheng", format!("{record}\n")).await;
            let (status, list) = app
                .get("/v1/resolution/reviews", &token, Some("routine_visit"))
                .await;
            assert_eq!(status, 200, "{list}");
            if let Some(first) = list["reviews"].as_array().and_then(|r| r.first()) {
                review = Some(first.clone());
                break 'search;
            }
        }
    }
    let review = review.expect("some pair lands in the review queue");
    let record_source = review["record"]["source_id"]
        .as_str()
        .expect("source")
        .to_owned();
    let candidate_entity = review["candidate"]["entity"]
        .as_str()
        .expect("entity")
        .to_owned();
    assert_ne!(review["record"]["entity"], review["candidate"]["entity"]);

    // A grid worker may not decide.
    let worker = app.token("grid_worker", &[world.street_code()], None);
    let (status, _) = app
        .get("/v1/resolution/reviews", &worker, Some("routine_visit"))
        .await;
    assert_eq!(status, 403);

    // The officer links them.
    let id = review["id"].as_str().expect("id");
    let response = app
        .client
        .post(format!("{}/v1/resolution/reviews/{id}", app.url))
        .bearer_auth(&token)
        .header("x-purpose", "routine_visit")
        .json(&json!({"decision": "link"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        id_of(&app, &world, "minzheng", &record_source)
            .await
            .as_deref(),
        Some(candidate_entity.as_str())
    );
    // A second decision on the same pair is refused: decisions are final.
    let response = app
        .client
        .post(format!("{}/v1/resolution/reviews/{id}", app.url))
        .bearer_auth(&token)
        .header("x-purpose", "routine_visit")
        .json(&json!({"decision": "distinct"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 409);

    // Re-ingest (a newer version of the same record) keeps the decision.
    let again = json!({"kind":"resident","source_id":record_source,"version":"2","name":"改过的名字","grid":"110105001001001"});
    app.ingest("minzheng", format!("{again}\n")).await;
    assert_eq!(
        id_of(&app, &world, "minzheng", &record_source)
            .await
            .as_deref(),
        Some(candidate_entity.as_str())
    );

    // A wrong link is split off, and stays apart on re-ingest.
    let response = app
        .client
        .post(format!("{}/v1/resolution/split", app.url))
        .bearer_auth(&token)
        .header("x-purpose", "routine_visit")
        .json(&json!({"department": "minzheng", "source_id": record_source}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let alone = id_of(&app, &world, "minzheng", &record_source)
        .await
        .expect("visible");
    assert_ne!(alone, candidate_entity);
    let third = json!({"kind":"resident","source_id":record_source,"version":"3","name":"改过的名字","grid":"110105001001001"});
    app.ingest("minzheng", format!("{third}\n")).await;
    assert_eq!(
        id_of(&app, &world, "minzheng", &record_source)
            .await
            .as_deref(),
        Some(alone.as_str())
    );
}

#[tokio::test]
async fn records_stored_before_the_model_existed_are_linked_once_it_does() {
    let app = TestApp::spawn().await;
    let world = DemoWorld::new(DemoConfig {
        residents: PERSONS,
        seed: 11,
        bad_record_rate: 0.0,
    });
    // Before any model, and before the ID-carrying records of the same people arrive: the
    // civil-affairs office publishes ten of them without ID numbers. They stand alone.
    let early: Vec<(usize, demo::generate::Person)> = (0..PERSONS)
        .map(|i| (i, world.person(i)))
        .filter(|(_, p)| p.in_gongan && p.phone.is_some())
        .take(10)
        .collect();
    let body: String = early
        .iter()
        .map(|(i, p)| {
            format!(
                "{}\n",
                json!({"kind":"resident","source_id":format!("MZ-E{i}"),"version":"1","name":p.name,
                    "birth_date":p.birth_date.to_string(),"phone":p.phone,"address":p.address,"grid":p.grid})
            )
        })
        .collect();
    let stranger = json!({"kind":"resident","source_id":"MZ-S1","version":"1","name":"欧阳某某",
        "birth_date":"1931-01-01","grid":early[0].1.grid});
    app.ingest("minzheng", format!("{body}{stranger}\n")).await;
    let mut alone = Vec::new();
    for (i, _) in &early {
        alone.push(
            id_of(&app, &world, "minzheng", &format!("MZ-E{i}"))
                .await
                .expect("visible"),
        );
    }
    let stranger_before = id_of(&app, &world, "minzheng", "MZ-S1").await;

    // The health office's record of the first of them, already linked to that stand-alone
    // entity (as ingest or an officer would have): it must move with it.
    let (first_index, first_person) = &early[0];
    let health = json!({"kind":"resident","source_id":"WJ-E0","version":"1","name":first_person.name,
        "birth_date":first_person.birth_date.to_string(),"grid":first_person.grid});
    app.ingest("weijian", format!("{health}\n")).await;
    {
        let store = app
            .broker
            .as_ref()
            .expect("running")
            .state
            .pipeline
            .store()
            .clone();
        let row = store
            .read()
            .expect("read")
            .source("weijian/resident/WJ-E0")
            .expect("get")
            .expect("the health record");
        let mut linked = row.clone();
        linked.move_to(&alone[0]);
        store
            .write(|w| w.put_source(&linked, Some(&row)))
            .expect("link the health record");
    }
    assert_eq!(
        id_of(&app, &world, "weijian", "WJ-E0").await.as_deref(),
        Some(alone[0].as_str())
    );

    for dept in ["gongan", "minzheng", "weijian"] {
        app.ingest(dept, world.ndjson(dept, 0..PERSONS)).await;
    }
    let state = &app.broker.as_ref().expect("running").state;
    let pipeline = state.pipeline.clone();
    let (first, again) = tokio::task::spawn_blocking(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let model = pipeline
            .train_linker()
            .expect("training")
            .expect("enough residents to estimate the model");
        engine::linking::schedule_relink(pipeline.store()).expect("schedule");
        let first = pipeline.relink(&model, None, &stop).expect("relink");
        let again = pipeline.relink(&model, None, &stop).expect("relink again");
        (first, again)
    })
    .await
    .expect("relink task");
    assert!(first.done, "{first:?}");
    assert!(first.alone >= 11, "every early row was offered: {first:?}");
    assert_eq!(again, first, "a finished pass does nothing more");

    for ((i, _), old) in early.iter().zip(&alone) {
        let person = id_of(&app, &world, "gongan", &format!("GA-{:08}", i + 1))
            .await
            .expect("the person's gongan record");
        assert_eq!(
            id_of(&app, &world, "minzheng", &format!("MZ-E{i}"))
                .await
                .as_deref(),
            Some(person.as_str()),
            "early record {i} joined the person it clearly is"
        );
        let (status, _) = app
            .get(
                &format!("/v1/residents/{old}"),
                &officer(&app, &world),
                Some("routine_visit"),
            )
            .await;
        assert_eq!(status, 404, "the stand-alone entity is gone");
    }
    assert_eq!(
        id_of(&app, &world, "weijian", "WJ-E0").await,
        id_of(
            &app,
            &world,
            "gongan",
            &format!("GA-{:08}", first_index + 1)
        )
        .await,
        "a row linked to a stand-alone entity moves with it"
    );
    assert_eq!(first.linked, early.len() as u64 + 1, "{first:?}");
    assert_eq!(
        id_of(&app, &world, "minzheng", "MZ-S1").await,
        stranger_before,
        "someone else entirely stays alone"
    );
}

#[tokio::test]
async fn a_record_with_an_id_pulls_in_the_earlier_records_of_the_same_person_without_one() {
    let (app, world) = setup().await;
    let grid = world.person(0).grid.clone();
    // Two records without an ID number, both published before the person's ID record: the
    // person's, and a namesake born 18 years later living elsewhere.
    let same = json!({"kind":"resident","source_id":"MZ-PULL-1","version":"1","name":"司马青山",
        "birth_date":"1972-05-06","phone":"13700001111","address":"某区青松园5号楼1单元202","grid":grid});
    let namesake = json!({"kind":"resident","source_id":"MZ-PULL-2","version":"1","name":"司马青山",
        "birth_date":"1990-01-01","phone":"13900002222","address":"某区柳荫里9号楼3单元101","grid":grid});
    app.ingest("minzheng", format!("{same}\n{namesake}\n"))
        .await;
    let alone = id_of(&app, &world, "minzheng", "MZ-PULL-1")
        .await
        .expect("visible");
    let other = id_of(&app, &world, "minzheng", "MZ-PULL-2")
        .await
        .expect("visible");
    assert_ne!(alone, other, "nothing to link them to yet");

    let with_id = json!({"kind":"resident","source_id":"GA-PULL-1","version":"1","name":"司马青山",
        "id_number": e2e_tests::id("11010519720506123"), "birth_date":"1972-05-06",
        "phone":"13700001111","address":"某区青松园5号楼1单元202","grid":grid});
    let receipt = app.ingest("gongan", format!("{with_id}\n")).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    assert!(
        receipt.get("linked").is_none(),
        "a publisher is not told what other departments hold: {receipt}"
    );
    let person = id_of(&app, &world, "gongan", "GA-PULL-1")
        .await
        .expect("visible");
    // In the same request, not after a background pass.
    assert_eq!(
        id_of(&app, &world, "minzheng", "MZ-PULL-1")
            .await
            .as_deref(),
        Some(person.as_str()),
        "the earlier record joins the person"
    );
    let (status, _) = app
        .get(
            &format!("/v1/residents/{alone}"),
            &officer(&app, &world),
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 404, "its stand-alone id is gone");
    assert_eq!(
        id_of(&app, &world, "minzheng", "MZ-PULL-2")
            .await
            .as_deref(),
        Some(other.as_str()),
        "the namesake stays apart"
    );
}

#[tokio::test]
async fn officers_get_a_report_of_how_records_were_resolved_and_the_model_in_force() {
    let (app, world) = setup().await;
    let (person, unified) = person_with_phone(&app, &world).await;
    let record = json!({"kind":"resident","source_id":"MZ-R1","version":"1","name":person.name,
        "birth_date":person.birth_date.to_string(),"phone":person.phone,"address":person.address,"grid":person.grid});
    app.ingest("minzheng", format!("{record}\n")).await;
    assert_eq!(
        id_of(&app, &world, "minzheng", "MZ-R1").await.as_deref(),
        Some(unified.as_str())
    );

    let (status, report) = app
        .get(
            "/v1/resolution/report",
            &officer(&app, &world),
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let model = &report["model"];
    assert_eq!(model["version"], 1, "{report}");
    let precision = model["estimated_precision"].as_f64().unwrap();
    let recall = model["estimated_recall"].as_f64().unwrap();
    assert!(precision > 0.9 && precision <= 1.0, "{report}");
    assert!(recall > 0.5 && recall <= 1.0, "{report}");
    assert!(model["link_threshold"].as_f64() > model["review_threshold"].as_f64());
    assert!(
        report["residents"].as_u64().unwrap() >= PERSONS as u64,
        "{report}"
    );
    assert!(report["with_id"].as_u64().unwrap() > 0);
    assert!(
        report["linked_without_id"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        !report.to_string().contains(&person.name),
        "counts only, no record named"
    );

    // Only officers, and only over their own jurisdiction.
    let worker = app.token("grid_worker", &[world.street_code()], None);
    let (status, _) = app
        .get("/v1/resolution/report", &worker, Some("routine_visit"))
        .await;
    assert_eq!(status, 403);
    let elsewhere = app.token("community_officer", &["110105002001"], None);
    let (status, other) = app
        .get("/v1/resolution/report", &elsewhere, Some("routine_visit"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        other["residents"], 0,
        "another street's records are not counted: {other}"
    );

    // A re-estimation is a new version of the model.
    let state = &app.broker.as_ref().expect("running").state;
    let pipeline = state.pipeline.clone();
    tokio::task::spawn_blocking(move || pipeline.train_linker())
        .await
        .unwrap()
        .unwrap()
        .expect("estimated again");
    let (_, report) = app
        .get(
            "/v1/resolution/report",
            &officer(&app, &world),
            Some("routine_visit"),
        )
        .await;
    assert_eq!(report["model"]["version"], 2, "{report}");
}

#[tokio::test]
async fn records_that_share_an_identity_document_are_one_person_without_a_model() {
    let app = TestApp::spawn().await;
    let officer = app.token("street_officer", &[e2e_tests::STREET], None);
    let grid = e2e_tests::GRID;
    let id_of = |dept: &'static str, source: &'static str| {
        let (app, officer) = (&app, &officer);
        async move {
            let (status, body) = app
                .get(
                    &format!("/v1/residents/by-source/{dept}/{source}"),
                    officer,
                    Some("routine_visit"),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["id"].as_str().unwrap_or_default().to_owned()
        }
    };
    // A foreign resident known to civil affairs and to health by passport only, written
    // differently; no linkage model exists yet.
    let civil = json!({"kind":"resident","source_id":"MZ-DOC-1","version":"1","name":"安娜",
        "birth_date":"1985-01-01","grid":grid,
        "documents":[{"type":"passport","number":"C12345678","country":"DEU"}]});
    app.ingest("minzheng", format!("{civil}\n")).await;
    let health = json!({"kind":"resident","source_id":"WJ-DOC-1","version":"1","name":"ANNA",
        "birth_date":"1985-01-01","grid":grid,
        "documents":[{"type":"passport","number":"c1234 5678","country":"DEU"}]});
    app.ingest("weijian", format!("{health}\n")).await;
    let person = id_of("minzheng", "MZ-DOC-1").await;
    assert_eq!(
        id_of("weijian", "WJ-DOC-1").await,
        person,
        "the shared passport links them"
    );

    // The same passport number with another birth date is not taken as the same person.
    let clash = json!({"kind":"resident","source_id":"WJ-DOC-2","version":"1","name":"安娜",
        "birth_date":"1990-06-06","grid":grid,
        "documents":[{"type":"passport","number":"C12345678","country":"DEU"}]});
    app.ingest("weijian", format!("{clash}\n")).await;
    assert_ne!(id_of("weijian", "WJ-DOC-2").await, person);
    // Another country's passport with the same number is another document.
    let other_country = json!({"kind":"resident","source_id":"WJ-DOC-3","version":"1",
        "name":"安娜","birth_date":"1985-01-01","grid":grid,
        "documents":[{"type":"passport","number":"C12345678","country":"AUT"}]});
    app.ingest("weijian", format!("{other_country}\n")).await;
    assert_ne!(id_of("weijian", "WJ-DOC-3").await, person);

    // The permanent residence ID card arrives with the same passport: the earlier records
    // join the person it identifies.
    let card = json!({"kind":"resident","source_id":"GA-DOC-1","version":"1","name":"安娜",
        "id_number":"932682198501010017","grid":grid,
        "documents":[{"type":"passport","number":"C12345678","country":"DEU"}]});
    let receipt = app.ingest("gongan", format!("{card}\n")).await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    let carded = id_of("gongan", "GA-DOC-1").await;
    assert_eq!(id_of("minzheng", "MZ-DOC-1").await, carded);
    assert_eq!(id_of("weijian", "WJ-DOC-1").await, carded);
    assert_ne!(
        id_of("weijian", "WJ-DOC-2").await,
        carded,
        "the birth date clash stays apart"
    );
}
