//! Crash safety end to end, with the real `safegrid` binary: under concurrent authenticated
//! reads and ingest the process is killed with SIGKILL; a torn write is left at the end of the
//! audit log; after a restart every acknowledged read is in the audit log, every record of
//! every acknowledged batch is readable, and `safegrid audit verify` passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::auth::{TokenRequest, TokenSigner};

use crate::common::{serve_with, Server};
use serde_json::{json, Value};

const GRID: &str = "110105001001003";
const STREET: &str = "110105001";

/// Starts the binary on port 0 (no per-principal rate, no metrics port).
fn serve(data_dir: &Path) -> Server {
    serve_with(data_dir, &[])
}

pub(crate) fn signer(data_dir: &Path) -> TokenSigner {
    let master = vault::keys::load_master_key(data_dir, None, false).expect("master key");
    broker::app::dev_token_signer(data_dir, &master).expect("token signer")
}

pub(crate) fn token(signer: &TokenSigner, role: &str, dept: Option<&str>) -> String {
    signer
        .sign(&TokenRequest {
            sub: format!("crash-{role}"),
            name: None,
            roles: vec![role.to_owned()],
            jurisdiction: vec![STREET.to_owned(), GRID.to_owned()],
            dept: dept.map(str::to_owned),
            ttl: Duration::from_secs(600),
        })
        .expect("token")
}

fn id_number(n: usize) -> String {
    let first17 = format!(
        "1101051975{:02}{:02}{:03}",
        1 + n % 12,
        1 + n % 28,
        n % 1000
    );
    let check = model::id_number_check_digit(&first17).expect("17 digits");
    format!("{first17}{check}")
}

pub(crate) fn batch(sources: &[(String, usize)]) -> String {
    sources
        .iter()
        .map(|(source, n)| {
            format!(
                "{}\n",
                json!({"kind":"resident","source_id":source,"version":"2026-11-01T08:00:00Z",
                    "id_number":id_number(*n),"name":"测试","grid":GRID})
            )
        })
        .collect()
}

pub(crate) async fn publish(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: String,
) -> Result<Value, reqwest::Error> {
    let response = client
        .post(format!("{url}/v1/ingest/gongan"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    response.json().await
}

pub(crate) async fn unified_id(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    source: &str,
) -> Option<String> {
    let response = client
        .get(format!("{url}/v1/residents/by-source/gongan/{source}"))
        .bearer_auth(token)
        .header("x-purpose", "routine_visit")
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["id"].as_str().map(str::to_owned)
}

fn verify(log_dir: &Path, extra: &[&str]) -> i32 {
    Command::new(crate::common::BIN)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_read_or_batch() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let server = serve(&data);
    let signer = signer(&data);
    let client = broker::client::https_client(&server.cert).unwrap();
    let url = server.url.clone();
    let publisher = token(&signer, "dept_publisher", Some("gongan"));
    let officer = token(&signer, "street_officer", None);

    let base: Vec<(String, usize)> = (0..20).map(|i| (format!("GA-BASE-{i}"), i)).collect();
    publish(&client, &url, &publisher, batch(&base))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (source, _) in &base {
        ids.push(
            unified_id(&client, &url, &officer, source)
                .await
                .expect("resolves"),
        );
    }

    // Load: six readers and one publisher until the process is killed.
    let killed = Arc::new(AtomicBool::new(false));
    let acked_reads = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_batches = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (client, url, ids, killed, acked) = (
            client.clone(),
            url.clone(),
            ids.clone(),
            killed.clone(),
            acked_reads.clone(),
        );
        let worker = token(&signer, "grid_worker", None);
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while !killed.load(Ordering::SeqCst) {
                i += 1;
                let sent = client
                    .get(format!("{url}/v1/residents/{}", ids[i % ids.len()]))
                    .bearer_auth(&worker)
                    .header("x-purpose", "routine_visit")
                    .send()
                    .await;
                if let Ok(response) = sent {
                    if response.status() == 200 {
                        if let Some(id) = response.headers().get("x-request-id") {
                            acked.lock().unwrap().push(id.to_str().unwrap().to_owned());
                        }
                    }
                }
            }
        }));
    }
    {
        let (client, url, publisher, killed, acked) = (
            client.clone(),
            url.clone(),
            publisher.clone(),
            killed.clone(),
            acked_batches.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut k = 0;
            while !killed.load(Ordering::SeqCst) {
                let sources: Vec<(String, usize)> = (0..5)
                    .map(|j| (format!("GA-LOAD-{k}-{j}"), 100 + k * 5 + j))
                    .collect();
                if let Ok(receipt) = publish(&client, &url, &publisher, batch(&sources)).await {
                    assert_eq!(receipt["accepted"], 5, "{receipt}");
                    acked
                        .lock()
                        .unwrap()
                        .push(sources.into_iter().map(|(s, _)| s).collect());
                }
                k += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut server = server;
    let child = &mut server.child;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    killed.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let acked_reads = acked_reads.lock().unwrap().clone();
    let acked_batches = acked_batches.lock().unwrap().clone();
    eprintln!(
        "killed under load after {} acknowledged reads and {} acknowledged batches",
        acked_reads.len(),
        acked_batches.len()
    );
    assert!(
        acked_reads.len() > 50,
        "load ran: {} reads",
        acked_reads.len()
    );
    assert!(!acked_batches.is_empty(), "load published");

    // A write torn by the crash, where the writer writes (after the last complete frame, over
    // the zeros it keeps written ahead): a frame header promising more bytes than follow.
    let log_dir = data.join("audit");
    let last_segment = std::fs::read_dir(&log_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("segment-"))
        })
        .max()
        .expect("a segment");
    let bytes = std::fs::read(&last_segment).unwrap();
    let mut end = 20; // the segment header
    while let Some(len) = bytes.get(end..end + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len == 0 || end + 8 + len > bytes.len() {
            break;
        }
        end += 8 + len;
    }
    let mut torn = 300u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[b'{'; 100]);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last_segment)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &torn, end as u64).unwrap();
    drop(file);
    assert_eq!(
        verify(&log_dir, &[]),
        2,
        "strict verification sees the torn tail"
    );

    // Restart: the torn tail is cut, everything acknowledged is there.
    let server = serve(&data);
    let url = server.url.clone();
    let client = broker::client::https_client(&server.cert).unwrap();
    for sources in &acked_batches {
        for source in sources {
            assert!(
                unified_id(&client, &url, &officer, source).await.is_some(),
                "acknowledged record {source} is readable after the crash"
            );
        }
    }
    let compliance = token(&signer, "compliance_officer", None);
    let mut logged = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!(
                "{url}/v1/audit/records?action=read_resident&limit=500{cursor}"
            ))
            .bearer_auth(&compliance)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in page["records"].as_array().expect("records") {
            logged.insert(r["request_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let missing: Vec<&String> = acked_reads
        .iter()
        .filter(|id| !logged.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged reads missing from the audit log",
        missing.len()
    );
    server.stop();

    assert_eq!(verify(&log_dir, &[]), 0);
    let last_read = acked_reads.last().unwrap();
    assert_eq!(verify(&log_dir, &["--request-id", last_read]), 0);
}
