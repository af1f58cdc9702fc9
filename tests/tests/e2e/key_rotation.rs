//! Key rotation end to end: rotate a department's data key (or the blind-index key),
//! interrupt the re-encryption (or the re-computation of blind indexes) halfway, resume it by
//! hand and in the background of a restarted broker, and read or search every record through
//! the API; every field ends under the new version, sealed exactly once more, and the old
//! blind-index key ends deleted with nothing stored under it.

use std::sync::atomic::AtomicBool;

use e2e_tests::{TestApp, GRID, STREET};
use engine::rotation::{progress, reencrypt, rotate_data_key};
use model::{Department, RecordKind};
use serde_json::{json, Value};
use vault::crypto::KeyRing;
use vault::keys::load_key_ring;
use vault::store::Store;

const RESIDENTS: usize = 30;

fn id(n: usize) -> String {
    let first17 = format!("11010519800101{:03}", n);
    let check = model::id_number_check_digit(&first17).expect("17 digits");
    format!("{first17}{check}")
}

/// (fields under `version`, fields under other versions) of gongan's rows.
fn versions(store: &Store, version: u32) -> (usize, usize) {
    let reader = store.read().expect("read");
    let (mut on, mut off) = (0, 0);
    reader
        .for_each_source(RecordKind::Resident, |source| {
            if source.department != Department::Gongan {
                return;
            }
            for sealed in source.sealed.values() {
                if KeyRing::sealed_version(sealed).expect("well-formed") == version {
                    on += 1;
                } else {
                    off += 1;
                }
            }
        })
        .expect("scan");
    (on, off)
}

/// NDJSON of `RESIDENTS` gongan residents `GA-000`…, each with an ID number, a phone, the
/// grid and the fields `more` gives it.
fn residents(more: impl Fn(usize) -> Value) -> String {
    (0..RESIDENTS)
        .map(|n| {
            let mut record = json!({"kind":"resident","source_id":format!("GA-{n:03}"),"version":"1",
                "id_number":id(n),"phone":format!("1381234{n:04}"),"grid":GRID});
            if let (Some(record), Value::Object(more)) = (record.as_object_mut(), more(n)) {
                record.extend(more);
            }
            format!("{record}\n")
        })
        .collect()
}

#[tokio::test]
async fn interrupted_reencryption_resumes_and_every_record_still_opens() {
    let mut app = TestApp::spawn().await;
    let body = residents(|n| json!({"name": format!("王{n}")}));
    let receipt = app.ingest("gongan", body).await;
    assert_eq!(receipt["accepted"], RESIDENTS);
    let first = app.unified_id("resident", "gongan", "GA-000").await;
    app.stop().await;

    let master = vault::keys::load_master_key(&app.data_dir, None, false).expect("master key");
    let fields_before;
    {
        let store = app.open_store();
        let (v1, other) = versions(&store, 1);
        assert_eq!(other, 0);
        assert!(v1 >= RESIDENTS * 2, "id, name and phone are sealed");
        fields_before = v1;
        assert_eq!(
            rotate_data_key(&store, &master, Department::Gongan).expect("rotate"),
            2
        );
        let ring = load_key_ring(&store, &master).expect("keys");
        assert_eq!(ring.current_version(Department::Gongan), Some(2));

        // Interrupted after 7 rows, then after 5 more: progress is kept between runs.
        let stop = AtomicBool::new(false);
        let report = reencrypt(&store, &ring, Department::Gongan, Some(7), &stop).expect("run 1");
        assert_eq!(report.rows_this_run, 7);
        assert!(!report.progress.done);
        let report = reencrypt(&store, &ring, Department::Gongan, Some(5), &stop).expect("run 2");
        assert_eq!(report.rows_this_run, 5);
        assert_eq!(
            report.progress.rows, 12,
            "the second run resumed after the first"
        );
        let (v2, v1) = versions(&store, 2);
        assert!(
            v2 > 0 && v1 > 0,
            "halfway: both versions present ({v2} / {v1})"
        );
        assert_eq!(v2 + v1, fields_before, "no field lost");
    }

    // The restarted broker resumes in the background; every record opens meanwhile.
    let mut app = app.restart().await;
    let token = app.token("street_officer", &[STREET], None);
    for n in [0, 5, 13, 29] {
        let unified = app
            .unified_id("resident", "gongan", &format!("GA-{n:03}"))
            .await;
        let (status, profile) = app
            .get(
                &format!("/v1/residents/{unified}"),
                &token,
                Some("routine_visit"),
            )
            .await;
        assert_eq!(status, 200, "{profile}");
        assert_eq!(profile["fields"]["name"]["value"], format!("王{n}"));
        assert_eq!(
            profile["fields"]["phone"]["value"],
            format!("1381234{n:04}")
        );
    }
    let (status, _) = app
        .get(
            &format!("/v1/residents/{first}"),
            &token,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200);
    // New writes use version 2.
    app.ingest(
        "gongan",
        format!("{}\n", json!({"kind":"resident","source_id":"GA-NEW","version":"1","id_number":id(999),"name":"新","grid":GRID})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    app.stop().await;

    let store = app.open_store();
    let ring = load_key_ring(&store, &master).expect("keys");
    // Finish whatever the background run did not (idempotent if it finished).
    let report = reencrypt(
        &store,
        &ring,
        Department::Gongan,
        None,
        &AtomicBool::new(false),
    )
    .expect("finish");
    assert!(report.progress.done);
    let (v2, v1) = versions(&store, 2);
    assert_eq!(v1, 0, "every field is under the new version");
    assert!(
        v2 > fields_before,
        "the new record is sealed under version 2 as well"
    );
    let stored = progress(&store, Department::Gongan)
        .expect("progress")
        .expect("present");
    assert_eq!(
        stored.fields as usize, fields_before,
        "every old field was re-sealed exactly once, none twice"
    );
}

/// Ids of the residents one search finds.
async fn search_once(app: &TestApp, q: &str, token: &str) -> Vec<String> {
    // Identifiers are searchable only for a purpose that may see them in clear.
    let path = format!("/v1/residents?q={}", urlencode(q));
    let (status, body) = app.get(&path, token, Some("case_investigation")).await;
    assert_eq!(status, 200, "{body}");
    e2e_tests::hit_ids(&body)
}

/// Ids of the residents a search finds, once the follower has indexed what was just ingested.
async fn search_ids(app: &TestApp, q: &str, token: &str) -> Vec<String> {
    let started = std::time::Instant::now();
    loop {
        let ids = search_once(app, q, token).await;
        if !ids.is_empty() || started.elapsed() > std::time::Duration::from_secs(15) {
            return ids;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every resident row with the links the blind-index key computes, as the store holds them.
fn keyed_links(store: &Store) -> Vec<(String, Vec<String>)> {
    let reader = store.read().expect("read");
    let mut out = Vec::new();
    reader
        .for_each_source(RecordKind::Resident, |source| {
            let links = source
                .links
                .iter()
                .filter(|l| engine::keyed::is_blind_keyed_link(l))
                .cloned()
                .collect();
            out.push((source.key(), links));
        })
        .expect("scan");
    out
}

#[tokio::test]
async fn blind_index_rotation_resumes_keeps_lookups_working_and_retires_the_old_key() {
    use engine::keyed::block_lookup_links;
    use engine::linking::link_record;
    use engine::rotation::{reblind, reblind_progress, rotate_blind_key};

    let mut app = TestApp::spawn().await;
    let body = residents(|n| {
        json!({"name": format!("王{}", ["明","丽","强"][n % 3]),
            "address": format!("幸福小区{}号楼", n % 5 + 1)})
    });
    assert_eq!(app.ingest("gongan", body).await["accepted"], RESIDENTS);
    let officer = app.token("street_officer", &[STREET], None);
    let by_phone_before = search_ids(&app, "13812340007", &officer).await;
    let by_id_before = search_ids(&app, &id(11), &officer).await;
    assert_eq!(
        by_phone_before.len(),
        1,
        "the phone number finds one resident"
    );
    assert_eq!(by_id_before.len(), 1, "the ID number finds one resident");
    let index_version_before =
        std::fs::read_to_string(app.data_dir.join("index").join("safegrid-index-version")).ok();
    app.stop().await;

    let master = vault::keys::load_master_key(&app.data_dir, None, false).expect("master key");
    let old_links;
    {
        let store = app.open_store();
        let old_ring = load_key_ring(&store, &master).expect("keys");
        assert_eq!(old_ring.blind_version(), 1);
        old_links = keyed_links(&store);
        assert_eq!(old_links.len(), RESIDENTS);
        assert!(old_links.iter().all(|(_, links)| links.len() >= 3));

        assert_eq!(rotate_blind_key(&store, &master).expect("rotate"), 2);
        let ring = load_key_ring(&store, &master).expect("keys");
        assert_eq!(ring.blind_version(), 2);
        assert_eq!(ring.blind_retiring_versions(), vec![1]);

        // Interrupted after 11 rows: some rows are keyed under version 2, the rest still
        // under version 1, and a lookup finds every row either way.
        let report = reblind(&store, &ring, Some(11), &AtomicBool::new(false)).expect("run 1");
        assert_eq!(report.rows_this_run, 11);
        assert!(!report.progress.done);
        assert_eq!(report.progress.relinked, 11);
        let halfway = keyed_links(&store);
        let moved = halfway
            .iter()
            .zip(&old_links)
            .filter(|(now, before)| now.1 != before.1)
            .count();
        assert_eq!(moved, 11, "exactly the rows walked so far were re-keyed");
        let reader = store.read().expect("read");
        reader
            .for_each_source(RecordKind::Resident, |source| {
                let row = source.key();
                let record = link_record(&ring, source).expect("a resident");
                let found = block_lookup_links(&ring, &record)
                    .iter()
                    .any(|link| reader.linked_rows(link).expect("lookup").contains(&row));
                assert!(found, "{row} is a linkage candidate mid-rotation");
            })
            .expect("scan");
        assert!(
            reblind_progress(&store)
                .expect("progress")
                .is_some_and(|p| !p.done),
            "the restarted broker resumes it"
        );
    }

    // The restarted broker finishes the walk in the background and rebuilds the search index
    // under the new key; once it is ready (`TestApp` waits for `/readyz`) the very first
    // search answers as before, never from a half-built index.
    let mut app = app.restart().await;
    let officer = app.token("street_officer", &[STREET], None);
    assert_eq!(
        search_once(&app, "13812340007", &officer).await,
        by_phone_before
    );
    assert_eq!(search_once(&app, &id(11), &officer).await, by_id_before);
    let index_version_after =
        std::fs::read_to_string(app.data_dir.join("index").join("safegrid-index-version")).ok();
    assert_ne!(
        index_version_before, index_version_after,
        "the index was rebuilt under the new key"
    );
    app.ingest(
        "gongan",
        format!(
            "{}\n",
            json!({"kind":"resident","source_id":"GA-NEW","version":"1",
            "id_number":id(999),"name":"新","phone":"13900000001","grid":GRID})
        ),
    )
    .await;
    app.stop().await;

    let store = app.open_store();
    let ring = load_key_ring(&store, &master).expect("keys");
    // Finish whatever the background run did not (it re-keys nothing twice if it finished).
    let report = reblind(&store, &ring, None, &AtomicBool::new(false)).expect("finish");
    assert!(report.progress.done);
    assert_eq!(report.progress.retired, vec![1], "version 1 was deleted");
    assert!(
        store.meta("keys/blind-index/1").expect("meta").is_none(),
        "the old key is gone from the store"
    );
    let ring = load_key_ring(&store, &master).expect("keys");
    assert_eq!(ring.blind_version(), 2);
    assert!(ring.blind_retiring_versions().is_empty());

    // Every stored keyed link is what ingest computes under version 2, and none of the
    // version-1 links is reachable any more.
    let reader = store.read().expect("read");
    reader
        .for_each_source(RecordKind::Resident, |source| {
            let row = source.key();
            let opened = engine::resolve::open_source(&ring, source.clone()).expect("opens");
            let body: model::ResidentRecord =
                serde_json::from_value(serde_json::Value::Object(opened.fields)).expect("body");
            let expected = engine::keyed::blind_keyed_links(&ring, source.department, &row, &body);
            let mut stored: Vec<&String> = source
                .links
                .iter()
                .filter(|l| engine::keyed::is_blind_keyed_link(l))
                .collect();
            let mut expected: Vec<&String> = expected.iter().collect();
            stored.sort();
            expected.sort();
            assert_eq!(stored, expected, "{row}");
        })
        .expect("scan");
    for (row, links) in &old_links {
        for link in links {
            assert!(
                !reader.linked_rows(link).expect("lookup").contains(row),
                "{row} is still reachable by a version-1 link"
            );
        }
    }
}
