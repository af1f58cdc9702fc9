//! `safegrid audit verify` end to end, with the real binary over a log a real broker wrote:
//! it passes after a run, extends a saved checkpoint, proves a real request id, and every
//! single-byte change to a stored segment or checkpoint file makes it fail with the code of
//! that failure kind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::app::{self, ServeOptions};
use broker::auth::TokenRequest;
use broker::config::Config;
use serde_json::json;

const GRID: &str = "110105001001003";

fn verify(log_dir: &Path, extra: &[&str]) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_safegrid"))
        .args(["audit", "verify", "--log-dir"])
        .arg(log_dir)
        .arg("--public-key")
        .arg(log_dir.join("checkpoint-public.key"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("verify runs")
        .code()
        .unwrap_or(-1)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Flips each byte at `offsets` of `file` in turn and returns the offsets where verify did
/// not exit with `expected`.
fn flips_not_caught(
    log_dir: &Path,
    file: &str,
    offsets: &[usize],
    expected: i32,
) -> Vec<(usize, i32)> {
    let path = log_dir.join(file);
    let original = std::fs::read(&path).unwrap();
    let mut wrong = Vec::new();
    for &i in offsets {
        let mut bytes = original.clone();
        bytes[i] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let code = verify(log_dir, &[]);
        if code != expected {
            wrong.push((i, code));
        }
    }
    std::fs::write(&path, &original).unwrap();
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_extends_saved_checkpoints_proves_requests_and_catches_every_flip() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let broker = app::start(ServeOptions {
        data_dir: data.clone(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        config: Config::default(),
        master_key: None,
        dev: true,
        insecure_http: false,
    })
    .await
    .unwrap();
    let client = broker::client::https_client(broker.dev_certificate.as_ref().unwrap()).unwrap();
    let master = vault::keys::load_master_key(&data, None, false).unwrap();
    let signer = app::dev_token_signer(&data, &master).unwrap();
    let token = |role: &str, dept: Option<&str>| {
        signer
            .sign(&TokenRequest {
                sub: format!("verify-{role}"),
                name: None,
                roles: vec![role.to_owned()],
                jurisdiction: vec![GRID.to_owned()],
                dept: dept.map(str::to_owned),
                ttl: Duration::from_secs(600),
            })
            .unwrap()
    };
    let url = broker.url();
    let first17 = "11010519700101003";
    let number = format!(
        "{first17}{}",
        model::id_number_check_digit(first17).unwrap()
    );
    let body = format!(
        "{}\n",
        json!({"kind":"resident","source_id":"GA-V1","version":"1","id_number":number,"name":"测试","grid":GRID})
    );
    let receipt = client
        .post(format!("{url}/v1/ingest/gongan"))
        .bearer_auth(token("dept_publisher", Some("gongan")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(receipt.status(), 200);
    let worker = token("grid_worker", None);
    let read = |path: String| {
        let client = client.clone();
        let worker = worker.clone();
        async move {
            let response = client
                .get(path)
                .bearer_auth(worker)
                .header("x-purpose", "routine_visit")
                .send()
                .await
                .unwrap();
            response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let mut request_ids = Vec::new();
    for _ in 0..4 {
        request_ids.push(read(format!("{url}/v1/residents/by-source/gongan/GA-V1")).await);
    }
    let saved = broker.state.audit.checkpoint_now().await.unwrap();
    let saved_path = root.path().join("saved.checkpoint");
    std::fs::write(&saved_path, &saved.note).unwrap();
    for _ in 0..4 {
        request_ids.push(read(format!("{url}/v1/residents/r_00000000000000000000")).await);
    }
    broker.shutdown().await.unwrap();

    let log_dir = data.join("audit");
    assert_eq!(verify(&log_dir, &[]), 0);
    let saved_arg = saved_path.to_str().unwrap();
    assert_eq!(verify(&log_dir, &["--checkpoint", saved_arg]), 0);
    for id in [&request_ids[0], &request_ids[7]] {
        assert_eq!(verify(&log_dir, &["--request-id", id]), 0);
    }
    assert_eq!(verify(&log_dir, &["--request-id", "no-such-request"]), 6);
    // A saved checkpoint whose size was edited no longer carries a valid signature.
    let forged = root.path().join("forged.checkpoint");
    std::fs::write(
        &forged,
        saved
            .note
            .replacen(&format!("\n{}\n", saved.size), "\n1\n", 1),
    )
    .unwrap();
    assert_eq!(
        verify(&log_dir, &["--checkpoint", forged.to_str().unwrap()]),
        3
    );
    // A wrong public key.
    let elsewhere = root.path().join("elsewhere");
    copy_dir(&log_dir, &elsewhere);
    std::fs::write(
        elsewhere.join("checkpoint-public.key"),
        "safegrid/audit+00000000+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .unwrap();
    assert_ne!(verify(&elsewhere, &[]), 0);

    // Every byte of the header and the first records of the segment, and a sample of the
    // rest: any single flipped byte is a malformed log (exit 2).
    let scratch = root.path().join("scratch");
    copy_dir(&log_dir, &scratch);
    let segment = std::fs::read(scratch.join("segment-000000.log")).unwrap();
    let dense = 1200.min(segment.len());
    let offsets: Vec<usize> = (0..dense)
        .chain((dense..segment.len()).step_by(17))
        .collect();
    let missed = flips_not_caught(&scratch, "segment-000000.log", &offsets, 2);
    assert!(
        missed.is_empty(),
        "flips not reported as exit 2: {missed:?}"
    );
    // Every 5th byte of the checkpoint file: a bad signature (exit 3).
    let checkpoints = std::fs::read(scratch.join("checkpoints.log")).unwrap();
    let offsets: Vec<usize> = (0..checkpoints.len()).step_by(5).collect();
    let missed = flips_not_caught(&scratch, "checkpoints.log", &offsets, 3);
    assert!(
        missed.is_empty(),
        "checkpoint flips not reported as exit 3: {missed:?}"
    );
    // Truncating the last record is caught by strict verification too.
    let path = scratch.join("segment-000000.log");
    std::fs::write(&path, &segment[..segment.len() - 3]).unwrap();
    assert_eq!(verify(&scratch, &[]), 2);
    assert_eq!(verify(&scratch, &["--checkpoint", saved_arg]), 2);
}
