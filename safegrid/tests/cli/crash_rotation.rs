//! Kill -9 during a key-rotation pass, with the real `safegrid` binary: a blind-index key
//! rotation over a demo street is re-computed by `safegrid keys reblind`, killed with
//! SIGKILL at growing delays until a run completes; then the pass is finished, the status
//! says so, and a served broker still finds residents by their full ID number and phone
//! (the blind indexes were rewritten under the new key, none lost).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use demo::generate::{DemoConfig, DemoWorld};

use crate::common;
use common::{free_port, BIN};

const RESIDENTS: usize = 1_500;
const SEED: u64 = 91;

fn safegrid(args: &[&str]) -> String {
    let (ok, text) = common::run(args);
    assert!(ok, "safegrid {args:?} failed: {text}");
    text
}

#[tokio::test]
async fn kill_9_during_a_blind_index_rotation_loses_no_link() {
    let root = tempfile::tempdir().expect("temporary directory");
    let data = root.path().join("street");
    let data_text = data.to_str().expect("utf-8 path").to_owned();
    common::demo(&data_text, RESIDENTS, SEED);
    safegrid(&["keys", "rotate-blind-index", "--data-dir", &data_text]);

    // Kill the pass at 20 ms, 40 ms, 80 ms … until one run ends by itself.
    let mut delay = Duration::from_millis(20);
    let mut kills = 0;
    loop {
        let mut child = Command::new(BIN)
            .args(["keys", "reblind", "--data-dir", &data_text])
            .env_remove("SAFEGRID_MASTER_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("reblind starts");
        let started = Instant::now();
        let finished = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if started.elapsed() >= delay {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match finished {
            Some(status) => {
                assert!(status.success(), "reblind failed after {kills} kills");
                break;
            }
            None => {
                child.kill().expect("SIGKILL");
                let _ = child.wait();
                kills += 1;
                // Between kills the store opens and reports progress.
                let status = safegrid(&["keys", "status", "--data-dir", &data_text]);
                assert!(status.contains("blind index:"), "{status}");
            }
        }
        delay *= 2;
        assert!(kills < 20, "the pass never finished");
    }
    let status = safegrid(&["keys", "status", "--data-dir", &data_text]);
    assert!(
        !status.contains("re-computation pending"),
        "after {kills} kills the pass is done: {status}"
    );

    // Served: residents are found by full ID number and by phone under the new key.
    let port = free_port();
    let mut serve = common::serve_dev(&data_text, port);
    let world = DemoWorld::new(DemoConfig {
        residents: RESIDENTS,
        seed: SEED,
        ..DemoConfig::default()
    });
    let street = world.street_code().to_owned();
    let token = safegrid(&[
        "token",
        "--data-dir",
        &data_text,
        "--sub",
        "rotation-check",
        "--role",
        "street_officer",
        "--jurisdiction",
        &street,
    ])
    .trim()
    .to_owned();
    let client =
        broker::client::https_client(&data.join("dev").join("tls-cert.pem")).expect("client");
    let url = format!("https://localhost:{port}");
    common::wait_ready(&client, &url).await;
    let mut found = 0;
    let mut asked = 0;
    let today = policies::minor::today_in_china();
    for i in (0..RESIDENTS).step_by(37) {
        let person = world.person(i);
        // A child's full ID number is seen only masked by a street officer outside child
        // protection, so it finds only adults (policies::minor).
        let adult = model::IdNumber::parse(&person.id_number)
            .is_ok_and(|id| today.years_since(id.birth_date()).is_some_and(|y| y >= 14));
        if !adult {
            continue;
        }
        asked += 1;
        let page: serde_json::Value = client
            .get(format!("{url}/v1/residents?q={}", person.id_number))
            .bearer_auth(&token)
            // A full ID number matches only for a caller who may see it in clear.
            .header("x-purpose", "case_investigation")
            .send()
            .await
            .expect("search")
            .json()
            .await
            .unwrap_or_default();
        if page["total"].as_u64().unwrap_or(0) >= 1 {
            found += 1;
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    // The demo deliberately publishes some bad records (rejected, never stored): nearly
    // every person is found, and none went missing because of the kills.
    assert!(
        found * 10 >= asked * 9,
        "found {found} of {asked} residents by ID number after {kills} kills"
    );
}
