//! Key rotation end to end: rotate a department's data key, interrupt the re-encryption
//! halfway, resume it (by hand and in the background of a restarted broker), and read every
//! record through the API; every field ends under the new version, sealed exactly once more.

use std::sync::atomic::AtomicBool;

use broker::app;
use broker::crypto::KeyRing;
use broker::keys::load_key_ring;
use broker::rotation::{progress, reencrypt, rotate_data_key};
use broker::store::Store;
use e2e_tests::{TestApp, GRID, STREET};
use model::{Department, RecordKind};
use serde_json::json;

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

#[tokio::test]
async fn interrupted_reencryption_resumes_and_every_record_still_opens() {
    let mut app = TestApp::spawn().await;
    let body: String = (0..RESIDENTS)
        .map(|n| {
            format!(
                "{}\n",
                json!({"kind":"resident","source_id":format!("GA-{n:03}"),"version":"1",
                    "id_number":id(n),"name":format!("王{n}"),"phone":format!("1381234{n:04}"),
                    "grid":GRID})
            )
        })
        .collect();
    let receipt = app.ingest("gongan", body).await;
    assert_eq!(receipt["accepted"], RESIDENTS);
    let first = app.unified_id("resident", "gongan", "GA-000").await;
    app.stop().await;

    let master = app::load_master_key(&app.data_dir, None, false).expect("master key");
    let fields_before;
    {
        let store = Store::open(&app.data_dir.join("store.redb")).expect("store");
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

    let store = Store::open(&app.data_dir.join("store.redb")).expect("store");
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
