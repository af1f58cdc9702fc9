//! `safegrid migrate`: a street's embedded store moves into PostgreSQL, verified, and the broker
//! started on the database serves what the file held; a second run into the same schema, an
//! unreachable database and a store in use are refused with a message that says what to do.
//!
//! Needs the PostgreSQL of `SAFEGRID_TEST_PG_URL` (`bash scripts/test.sh` starts one).

use std::ffi::OsStr;

use serde_json::{json, Value};

use crate::common::{self, demo, fresh_schema, pg_url, run, serve_with};

fn token(data: &str, role: &str, dept: Option<&str>) -> String {
    let mut args = vec![
        "token",
        "--data-dir",
        data,
        "--sub",
        "migrate-test",
        "--role",
        role,
        "--jurisdiction",
        "110105001",
    ];
    if let Some(dept) = dept {
        args.extend(["--dept", dept]);
    }
    let (ok, text) = run(&args);
    assert!(ok, "token: {text}");
    text.trim().to_owned()
}

#[tokio::test]
async fn a_street_moves_to_postgres_and_is_served_from_it() {
    let root = tempfile::tempdir().unwrap();
    let data_path = root.path().join("street");
    let data = data_path.to_str().unwrap();
    demo(data, 150, 11);

    // One resident whose name the test knows, published to the embedded store.
    let server = serve_with(&data_path, &[]);
    let client = broker::client::https_client(&server.cert).unwrap();
    let publisher = token(data, "dept_publisher", Some("minzheng"));
    let record = json!({"kind": "resident", "source_id": "MZ-MIGRATE-1", "version": "1",
        "grid": "110105001001001", "id_number": "110105198003121238", "name": "慕容雪晴"});
    let receipt: Value = client
        .post(format!("{}/v1/ingest/minzheng", server.url))
        .bearer_auth(&publisher)
        .body(record.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(receipt["accepted"], 1, "{receipt}");

    // A store in use is not copied: its file is locked.
    let schema = fresh_schema("migrate");
    let url = pg_url();
    let migrate = || {
        run(&[
            "migrate",
            "--data-dir",
            data,
            "--to",
            &url,
            "--schema",
            &schema,
        ])
    };
    let (ok, text) = migrate();
    assert!(!ok, "migrated a store in use: {text}");
    assert!(text.contains("stop the broker"), "{text}");
    server.stop();

    let (ok, text) = migrate();
    assert!(ok, "{text}");
    assert!(text.contains("verified: digest"), "{text}");
    assert!(text.contains("sealed fields opened"), "{text}");
    // The access log went with it: every record of the data directory's log, and its root
    // recomputed from the database.
    let copied: u64 = text
        .split("access log: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no access log line: {text}"));
    assert!(copied > 0, "{text}");
    assert!(text.contains("recomputed from the database"), "{text}");
    let (ok, text) = migrate();
    assert!(!ok && text.contains("not empty"), "a second run: {text}");

    // An unreachable database: refused, and the password is not repeated.
    let port = common::free_port();
    let (ok, text) = run(&[
        "migrate",
        "--data-dir",
        data,
        "--to",
        &format!("postgres://safegrid:pw-Secr3t@127.0.0.1:{port}/safegrid"),
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("PostgreSQL store"), "{text}");
    assert!(!text.contains("pw-Secr3t"), "{text}");

    // The file goes; the broker serves the street from the database.
    std::fs::remove_file(data_path.join("store.redb")).unwrap();
    let env: [(&str, &OsStr); 3] = [
        ("SAFEGRID_STORE_BACKEND", OsStr::new("postgres")),
        ("SAFEGRID_STORE_URL", OsStr::new(&url)),
        ("SAFEGRID_STORE_SCHEMA", OsStr::new(&schema)),
    ];
    let server = serve_with(&data_path, &env);
    common::wait_ready(&client, &server.url).await;
    let reader = token(data, "street_officer", None);
    let read = |path: String| {
        let request = client
            .get(format!("{}{path}", server.url))
            .bearer_auth(&reader)
            .header("X-Purpose", "routine_visit");
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let found = read("/v1/residents/by-source/minzheng/MZ-MIGRATE-1".to_owned()).await;
    let id = found["id"]
        .as_str()
        .expect("the resident is there")
        .to_owned();
    let profile = read(format!("/v1/residents/{id}")).await;
    assert_eq!(profile["fields"]["name"]["value"], "慕容雪晴", "{profile}");
    assert!(
        !data_path.join("store.redb").exists(),
        "the broker served from the database, not from a new file"
    );
    server.stop();
    // Its audit directory is now a replica of the database's log: the migrated records, then
    // this session's reads, one log that verifies offline.
    let (ok, text) = run(&[
        "audit",
        "verify",
        "--log-dir",
        data_path.join("audit").to_str().unwrap(),
        "--public-key",
        data_path
            .join("audit/checkpoint-public.key")
            .to_str()
            .unwrap(),
    ]);
    assert!(ok, "{text}");
}
