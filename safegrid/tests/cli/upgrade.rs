//! Upgrade: this binary starts on a data directory written by the previous main (commit
//! 4afef9b, before the one Chinese text normalisation; `tests/fixtures/README.md` says how it
//! was made). On its first start it rebuilds the search index (schema and normalisation
//! changed) and re-computes every resident's keyed links under the new normalisation and
//! every row's standard-address links; the data written before stays readable and the audit
//! log stays verifiable across the upgrade.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{self, free_port, serve_dev, wait_ready};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/data-4afef9b.tar.gz"
);
/// The resident the old binary stored as 王強 (its unified id on that binary).
const OLD_ID: &str = "r_dc801c5b044f6e1988cc";

fn token(data: &str, role: &str, dept: Option<&str>) -> String {
    let mut args = vec![
        "token",
        "--data-dir",
        data,
        "--sub",
        "upgrade-test",
        "--role",
        role,
        "--jurisdiction",
        "110105001",
    ];
    if let Some(dept) = dept {
        args.extend(["--dept", dept]);
    }
    let (ok, text) = common::run(&args);
    assert!(ok, "token: {text}");
    text.trim().to_owned()
}

/// A read for `routine_visit`, which must answer 200.
async fn read(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let response = client
        .get(url)
        .bearer_auth(token)
        .header("X-Purpose", "routine_visit")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}

async fn search(client: &reqwest::Client, url: &str, token: &str, q: &str) -> Vec<String> {
    let url = reqwest::Url::parse_with_params(&format!("{url}/v1/residents"), [("q", q)]).unwrap();
    let body = read(client, url.as_str(), token).await;
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

fn stop(mut child: std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "clean shutdown");
}

#[tokio::test]
async fn a_data_directory_of_the_previous_main_is_upgraded_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let unpacked = Command::new("tar")
        .args(["-xzf", FIXTURE, "-C"])
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(unpacked.success());
    let data_path = dir.path().join("old");
    let data = data_path.to_str().unwrap();
    assert!(Path::new(&format!("{data}.master-key")).exists());

    let (ok, before) = common::run(&["keys", "status", "--data-dir", data]);
    assert!(ok, "{before}");
    assert!(
        before.contains("keyed links computed under version 1"),
        "the fixture predates the normalisation version: {before}"
    );

    let port = free_port();
    let server = serve_dev(data, port);
    let url = format!("https://localhost:{port}");
    let client = broker::client::https_client(&data_path.join("dev/tls-cert.pem")).unwrap();
    // Ready only once the index rebuilt from the old store has caught up.
    wait_ready(&client, &url).await;

    let reader = token(data, "street_officer", None);
    for q in ["王强", "王強", "wangqiang", "wq"] {
        let found = search(&client, &url, &reader, q).await;
        assert!(
            found.iter().any(|id| id == OLD_ID),
            "{q} finds the resident stored as 王強 before the upgrade: {found:?}"
        );
    }
    // The profile the old binary stored opens under the new binary.
    let profile = read(&client, &format!("{url}/v1/residents/{OLD_ID}"), &reader).await;
    assert_eq!(profile["fields"]["name"]["value"], "王強", "{profile}");

    // A record of another department published after the upgrade, with the same ID number
    // and the simplified name, joins the same resident.
    let publisher = token(data, "dept_publisher", Some("minzheng"));
    let record = serde_json::json!({
        "kind": "resident", "source_id": "MZ-UPGRADE-1", "version": "1",
        "grid": "110105001001001", "id_number": "110105198003121238", "name": "王强",
    });
    let receipt: Value = client
        .post(format!("{url}/v1/ingest/minzheng"))
        .bearer_auth(&publisher)
        .body(record.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    let by_source = read(
        &client,
        &format!("{url}/v1/residents/by-source/minzheng/MZ-UPGRADE-1"),
        &reader,
    )
    .await;
    assert_eq!(by_source["id"], OLD_ID, "{by_source}");

    // Give the background pass time to walk the few hundred rows.
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The old binary computed no standard-address links; the pass gave the old rows theirs,
    // so a shop published after the upgrade with an address and no grid takes the grid of
    // the only record stored before at that building (the resident above).
    let publisher = token(data, "dept_publisher", Some("chengguan"));
    let shop = serde_json::json!({
        "kind": "organization", "source_id": "CG-UPGRADE-1", "version": "1",
        "name": "测试路便利店", "address": "朝阳区测试路8号院3栋1单元101",
    });
    let receipt: Value = client
        .post(format!("{url}/v1/ingest/chengguan"))
        .bearer_auth(&publisher)
        .body(shop.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            receipt["accepted"].as_u64(),
            receipt["grid_unresolved"].as_u64()
        ),
        (Some(1), Some(0)),
        "{receipt}"
    );
    let shop_id = read(
        &client,
        &format!("{url}/v1/organizations/by-source/chengguan/CG-UPGRADE-1"),
        &reader,
    )
    .await;
    let shop = read(
        &client,
        &format!("{url}/v1/organizations/{}", shop_id["id"].as_str().unwrap()),
        &reader,
    )
    .await;
    assert_eq!(shop["fields"]["grid"]["value"], "110105001001001", "{shop}");
    stop(server);

    let (ok, after) = common::run(&["keys", "status", "--data-dir", data]);
    assert!(ok, "{after}");
    assert!(
        after.contains(&format!(
            "keyed links computed under version {}; this binary's is {}",
            chinese_text::NORMALISATION_VERSION,
            chinese_text::NORMALISATION_VERSION
        )),
        "the first start re-computed the keyed links: {after}"
    );
    assert!(
        after.contains("re-computation done"),
        "the pass finished: {after}"
    );
    let re_keyed: u64 = after
        .split("re-computation done (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the count of re-keyed rows");
    assert!(
        re_keyed > 0,
        "the new normalisation changed some blocking keys: {after}"
    );

    let log = data_path.join("audit");
    let public = log.join("checkpoint-public.key");
    let (ok, verified) = common::run(&[
        "audit",
        "verify",
        "--log-dir",
        log.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert!(ok, "the log verifies across the upgrade: {verified}");
}
