//! The logs of a real run hold no personal data: the `safegrid` binary publishes generated
//! demo residents, serves them, answers searches by full ID number and phone and profile
//! reads, all with `SAFEGRID_LOG=info`; then its stderr is scanned for every generated ID
//! number (18- and 15-digit) and phone number.

use std::process::{Command, Stdio};
use std::time::Duration;

use demo::generate::{DemoConfig, DemoWorld};

const RESIDENTS: usize = 120;
const SEED: u64 = 77;

use crate::common;
use common::free_port;

#[tokio::test]
async fn logs_of_an_end_to_end_run_hold_no_id_numbers_or_phones() {
    let bin = env!("CARGO_BIN_EXE_safegrid");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let demo_log = root.path().join("demo.log");
    let serve_log = root.path().join("serve.log");

    let status = Command::new(bin)
        .args([
            "demo",
            "--no-serve",
            "--residents",
            &RESIDENTS.to_string(),
            "--seed",
            &SEED.to_string(),
        ])
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("SAFEGRID_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&demo_log).expect("log file"))
        .status()
        .expect("the demo runs");
    assert!(
        status.success(),
        "demo failed: {}",
        std::fs::read_to_string(&demo_log).unwrap_or_default()
    );

    let port = free_port();
    let mut serve = Command::new(bin)
        .args(["serve", "--dev"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SAFEGRID_LOG", "info")
        .env("SAFEGRID_METRICS_LISTEN", "off")
        .env_remove("SAFEGRID_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&serve_log).expect("log file"))
        .spawn()
        .expect("serve starts");

    let world = DemoWorld::new(DemoConfig {
        residents: RESIDENTS,
        seed: SEED,
        ..DemoConfig::default()
    });
    let street = world.street_code().to_owned();
    let issued = Command::new(bin)
        .args([
            "token",
            "--sub",
            "log-scan",
            "--role",
            "street_officer",
            "--jurisdiction",
            &street,
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("token");
    assert!(
        issued.status.success(),
        "safegrid token failed: {}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let token = String::from_utf8(issued.stdout)
        .expect("utf-8 token")
        .trim()
        .to_owned();

    let client =
        broker::client::https_client(&data.join("dev").join("tls-cert.pem")).expect("client");
    let url = format!("https://localhost:{port}");
    // Ready includes the search index having caught up with the store.
    let mut ready = false;
    for _ in 0..300 {
        if client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the broker did not become ready");

    let mut reads = 0;
    let mut answers = std::collections::BTreeMap::new();
    for i in 0..RESIDENTS.min(40) {
        let person = world.person(i);
        let mut queries = vec![person.id_number.clone()];
        queries.extend(person.phone.clone());
        for q in queries {
            let response = client
                .get(format!("{url}/v1/residents?q={q}"))
                .bearer_auth(&token)
                .header("x-purpose", "routine_visit")
                .send()
                .await
                .expect("search");
            *answers.entry(response.status().as_u16()).or_insert(0) += 1;
            let page: serde_json::Value = response.json().await.unwrap_or_default();
            if let Some(id) = page["items"][0]["id"].as_str() {
                let status = client
                    .get(format!("{url}/v1/residents/{id}"))
                    .bearer_auth(&token)
                    .header("x-purpose", "routine_visit")
                    .send()
                    .await
                    .expect("profile")
                    .status();
                if status.is_success() {
                    reads += 1;
                }
            }
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        reads > 0,
        "the run read profiles (search answers by status: {answers:?})"
    );

    let mut logs = std::fs::read(&demo_log).expect("demo log");
    logs.extend(std::fs::read(&serve_log).expect("serve log"));
    let text = String::from_utf8_lossy(&logs);
    assert!(
        text.contains("\"request\""),
        "request log lines were written at info level"
    );
    for i in 0..RESIDENTS {
        let person = world.person(i);
        let mut secrets = vec![person.id_number.clone()];
        secrets.extend(person.legacy_id_number.clone());
        secrets.extend(person.phone.clone());
        for secret in secrets {
            assert!(
                !text.contains(&secret),
                "resident {i}'s ID number or phone appears in the logs"
            );
        }
    }
}
