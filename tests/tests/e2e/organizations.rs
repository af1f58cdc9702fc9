//! Organizations (实有单位) end to end over HTTPS: two departments publish one shop under its
//! credit code, one of them with an address only; the broker merges them, derives the grid
//! from the house at the same premises, links the legal representative, and a grid worker
//! finds the shop by what they type. Then the abuse: another grid, a mistyped code beside a
//! good record, a publisher outside its jurisdiction, and no identifier in plaintext on disk.

use std::time::{Duration, Instant};

use e2e_tests::{contains_bytes, files_under, hit_ids, id, TestApp, GRID, OTHER_GRID};
use serde_json::{json, Value};

/// A real credit code's check character applied to an invented body (GB 32100).
fn uscc(first17: &str) -> String {
    let check = model::uscc_check_character(first17.as_bytes()).expect("17 code characters");
    format!("{first17}{check}")
}

const SHOP: &str = "晨光便利店";
const REP: &str = "李明华";
const SHOP_PHONE: &str = "13911112222";

fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

/// Searches `path` until every wanted id is among the hits (the index follows the store).
async fn find_until(app: &TestApp, path: &str, token: &str, wanted: &[&str]) -> Value {
    let started = Instant::now();
    loop {
        let (status, page) = app.get(path, token, Some("routine_visit")).await;
        let ids = hit_ids(&page);
        if status == 200 && wanted.iter().all(|w| ids.iter().any(|i| i == w)) {
            return page;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} never found {wanted:?}: {status} {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn related_ids(profile: &Value, relation: &str) -> Vec<String> {
    profile["related"][relation]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn one_shop_from_two_departments_is_one_organization_linked_and_found() {
    let app = TestApp::spawn().await;
    let code = uscc("92110105MA0000123");
    let rep_id = id("11010519800101003");
    app.ingest(
        "zhujian",
        lines(&[
            json!({"kind":"house","source_id":"ZJ-102","version":"1",
            "address":"北京市朝阳区望京街道幸福里小区3号楼1单元102","grid":GRID,"usage":"commercial"}),
        ]),
    )
    .await;
    app.ingest(
        "gongan",
        lines(&[
            json!({"kind":"resident","source_id":"GA-REP","version":"1","id_number":rep_id,
            "name":REP,"grid":GRID}),
        ]),
    )
    .await;
    // Urban management knows the address (written its own way) and a lower-case code, not
    // the grid.
    let receipt = app
        .ingest(
            "chengguan",
            lines(&[
                json!({"kind":"organization","source_id":"CG-1","version":"1",
                "name":SHOP,"uscc":code.to_lowercase(),"type":"shop",
                "address":"幸福里3栋1单元102室","legal_rep_id_number":rep_id}),
            ]),
        )
        .await;
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    app.ingest(
        "wangge",
        lines(&[
            json!({"kind":"organization","source_id":"WG-1","version":"1",
            "name":SHOP,"uscc":code,"type":"shop","grid":GRID,"phone":SHOP_PHONE,
            "tags":["九小场所"],"attributes":{"fire_extinguishers":2}}),
        ]),
    )
    .await;
    let organization = app.unified_id("organization", "chengguan", "CG-1").await;
    assert_eq!(
        organization,
        app.unified_id("organization", "wangge", "WG-1").await,
        "one credit code, one organization"
    );
    let house = app.unified_id("house", "zhujian", "ZJ-102").await;
    let rep = app.unified_id("resident", "gongan", "GA-REP").await;

    let worker = app.token("grid_worker", &[GRID], None);
    let (status, profile) = app
        .get(
            &format!("/v1/organizations/{organization}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["kind"], "organization");
    assert_eq!(profile["fields"]["name"]["value"], SHOP);
    assert_eq!(profile["fields"]["uscc"]["value"], code.as_str());
    assert_eq!(profile["fields"]["type"]["value"], "shop");
    assert_eq!(profile["fields"]["grid"]["value"], GRID);
    // An identifier: a grid worker sees it masked.
    let masked = profile["fields"]["legal_rep_id_number"]["value"]
        .as_str()
        .expect("the legal representative's ID, masked");
    assert_eq!(masked, format!("110105********{}", &rep_id[14..]));
    assert_eq!(profile["sources"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        related_ids(&profile, "legal_representative"),
        vec![rep.clone()]
    );
    assert_eq!(
        profile["related"]["legal_representative"][0]["label"], REP,
        "{profile}"
    );
    assert_eq!(related_ids(&profile, "premises"), vec![house.clone()]);
    assert!(!profile.to_string().contains(&rep_id), "{profile}");

    // The house and the person know the organization too.
    let (_, house_profile) = app
        .get(
            &format!("/v1/houses/{house}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(
        related_ids(&house_profile, "organizations"),
        vec![organization.clone()]
    );
    assert_eq!(house_profile["related"]["organizations"][0]["label"], SHOP);
    let (_, person) = app
        .get(
            &format!("/v1/residents/{rep}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(
        related_ids(&person, "organizations"),
        vec![organization.clone()]
    );

    // Found by initials, a word, a word's pinyin, the code in lower case, the phone's last
    // four, the representative's last four (what the masked value shows), a tag.
    let wanted = [organization.as_str()];
    for q in [
        "cgbld".to_owned(),
        "cg".to_owned(),
        "bld".to_owned(),
        "便利店".to_owned(),
        "晨光".to_owned(),
        code.to_lowercase(),
        SHOP_PHONE[7..].to_owned(),
        rep_id[14..].to_owned(),
        "九小场所".to_owned(),
        "幸福里3号楼".to_owned(),
    ] {
        find_until(&app, &format!("/v1/organizations?q={q}"), &worker, &wanted).await;
    }
    let page = find_until(&app, &format!("/v1/search?q={SHOP}"), &worker, &wanted).await;
    let hit = page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == organization.as_str()))
        .expect("the organization among the hits");
    assert_eq!(hit["kind"], "organization");
    assert_eq!(hit["summary"]["name"], SHOP);
    find_until(
        &app,
        "/v1/organizations?q=cgbld&type=shop",
        &worker,
        &wanted,
    )
    .await;

    // What a grid worker sees only masked does not find it; nor does another type.
    for (path, why) in [
        (format!("/v1/organizations?q={rep_id}"), "a full masked ID"),
        (
            "/v1/organizations?q=cgbld&type=school".to_owned(),
            "another type",
        ),
        (
            format!("/v1/organizations?q={SHOP_PHONE}"),
            "control: the phone is personal, clear for a grid worker",
        ),
    ] {
        let (status, page) = app.get(&path, &worker, Some("routine_visit")).await;
        assert_eq!(status, 200, "{page}");
        let found = hit_ids(&page).contains(&organization);
        if why.starts_with("control") {
            assert!(found, "{why}: {page}");
        } else {
            assert!(!found, "{why}: {page}");
        }
    }
    let (status, body) = app
        .get(
            "/v1/organizations?q=cgbld&status=open",
            &worker,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("filter_not_supported"))
    );
}

#[tokio::test]
async fn organizations_stay_in_their_grid_and_a_bad_code_costs_only_its_own_row() {
    let app = TestApp::spawn().await;
    let good = uscc("91110105MA0000777");
    let mut mistyped = uscc("91110105MA0000888");
    mistyped.replace_range(17.., if mistyped.ends_with('0') { "1" } else { "0" });
    let rep_id = id("11010519750505004");
    let receipt = app
        .ingest(
            "wangge",
            lines(&[
                json!({"kind":"organization","source_id":"WG-A","version":"1","name":"阳光书店",
                    "uscc":good,"grid":OTHER_GRID,"legal_rep_id_number":rep_id,"phone":SHOP_PHONE}),
                json!({"kind":"organization","source_id":"WG-B","version":"1","name":"阳光书店",
                    "uscc":mistyped,"grid":OTHER_GRID}),
                json!({"kind":"organization","source_id":"WG-C","version":"1","grid":OTHER_GRID}),
                // The same name under another code is another organization.
                json!({"kind":"organization","source_id":"WG-D","version":"1","name":"阳光书店",
                    "uscc":uscc("91110105MA0000999"),"grid":OTHER_GRID}),
            ]),
        )
        .await;
    assert_eq!(receipt["accepted"], 2, "{receipt}");
    let codes: Vec<&str> = receipt["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        ["uscc_check", "organization_unidentified"],
        "{receipt}"
    );
    assert!(!receipt.to_string().contains(&mistyped[..12]), "{receipt}");
    let a = app.unified_id("organization", "wangge", "WG-A").await;
    let d = app.unified_id("organization", "wangge", "WG-D").await;
    assert_ne!(a, d);

    let there = app.token("grid_worker", &[OTHER_GRID], None);
    find_until(&app, "/v1/organizations?q=ygsd", &there, &[&a, &d]).await;
    let here = app.token("grid_worker", &[GRID], None);
    let (status, page) = app
        .get("/v1/organizations?q=ygsd", &here, Some("routine_visit"))
        .await;
    assert_eq!(status, 200);
    assert!(hit_ids(&page).is_empty(), "another grid's shop: {page}");
    let (status, _) = app
        .get(
            &format!("/v1/organizations/{a}"),
            &here,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 404);
    // A resident's id is not an organization's.
    let (status, _) = app
        .get(&format!("/v1/residents/{a}"), &there, Some("routine_visit"))
        .await;
    assert_eq!(status, 404);

    // A publisher limited to one grid cannot place an organization in another.
    let narrow = app.token("dept_publisher", &[GRID], Some("chengguan"));
    let response = app
        .ingest_as(
            &narrow,
            "chengguan",
            lines(&[
                json!({"kind":"organization","source_id":"CG-X","version":"1",
                "name":"外街饭馆","grid":OTHER_GRID}),
            ]),
        )
        .await;
    let receipt: Value = response.json().await.expect("a receipt");
    assert_eq!(
        receipt["rejected"][0]["code"], "grid_outside_jurisdiction",
        "{receipt}"
    );

    // Identifiers are sealed and blind-indexed: never on disk in plaintext.
    for file in files_under(&app.data_dir) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for secret in [rep_id.as_str(), SHOP_PHONE] {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "{secret} in plaintext in {}",
                file.display()
            );
        }
    }
}
