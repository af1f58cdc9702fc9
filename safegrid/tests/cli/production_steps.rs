//! The production steps of `deploy/README.md`, run as written with the real binary: master key
//! outside the data directory, server TLS certificate, the identity provider's JWKS, a trial
//! department CA and certificate, the example configuration (paths moved under a temporary
//! folder), `config check`, `serve`, `/readyz`, a department publishing over mTLS with an
//! identity-provider token, and a reader on the main listener.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use crate::common;

use common::{free_port, run as safegrid, BIN};

fn line_value<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `{prefix}` in: {text}"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: the graceful path (drain, final checkpoint).
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
    }
}

fn sign(pkcs8: &[u8], claims: Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("idp-1".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8),
    )
    .unwrap()
}

#[tokio::test]
async fn the_deploy_readme_production_steps_work_as_written() {
    broker::tls::install_crypto_provider();
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/safegrid");
    let data = root.path().join("var/lib/safegrid");
    std::fs::create_dir_all(etc.join("tls")).unwrap();

    // 1. Master key, outside the data directory, owner-only.
    let master = etc.join("master.key");
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).unwrap();
    vault::crypto::write_private_file(&master, hex::encode(key).as_bytes()).unwrap();

    // 2. Server TLS certificate and the identity provider's JWKS.
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(etc.join("tls/server.crt"), server.cert.pem()).unwrap();
    std::fs::write(
        etc.join("tls/server.key"),
        server.signing_key.serialize_pem(),
    )
    .unwrap();
    let idp = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let idp_pair = Ed25519KeyPair::from_pkcs8(idp.as_ref()).unwrap();
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
        "kid": "idp-1", "x": URL_SAFE_NO_PAD.encode(idp_pair.public_key().as_ref())}]});
    std::fs::write(etc.join("jwks.json"), jwks.to_string()).unwrap();

    // 3. A trial department CA and gongan's certificate.
    let ca_dir = etc.join("client-ca");
    let ca_dir_text = ca_dir.to_str().unwrap();
    let (ok, text) = safegrid(&["certs", "init-ca", "--dir", ca_dir_text]);
    assert!(ok, "{text}");
    let (ok, text) = safegrid(&[
        "certs",
        "issue",
        "--dir",
        ca_dir_text,
        "--department",
        "gongan",
    ]);
    assert!(ok, "{text}");
    let client_cert = line_value(&text, "certificate:").to_owned();
    let client_key = line_value(&text, "key:").to_owned();

    // The example configuration, with its paths moved under the temporary folder.
    let (port, mtls_port) = (free_port(), free_port());
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/safegrid.example.toml"),
    )
    .unwrap();
    let config_text = example
        .replace("/etc/safegrid", etc.to_str().unwrap())
        .replace("0.0.0.0:8443", &format!("127.0.0.1:{port}"))
        .replace("0.0.0.0:9443", &format!("127.0.0.1:{mtls_port}"))
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{}", free_port()));
    let config = etc.join("safegrid.toml");
    std::fs::write(&config, config_text).unwrap();

    // 4. Check.
    let (ok, text) = safegrid(&[
        "config",
        "check",
        "--config",
        config.to_str().unwrap(),
        "--master-key",
        master.to_str().unwrap(),
    ]);
    assert!(ok && text.contains("OK"), "{text}");
    assert!(
        !text.contains(&hex::encode(key)),
        "config check printed the master key"
    );

    // 5. Serve.
    let child = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--master-key",
            master.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);

    // 6. Ready.
    let reader = broker::client::https_client(&etc.join("tls/server.crt")).unwrap();
    let base = format!("https://localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reader.get(format!("{base}/readyz")).send().await {
            if response.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the broker did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A department publishes through the mTLS listener with its certificate and an IdP token.
    let exp = chrono::Utc::now().timestamp() + 600;
    let publisher = sign(
        idp.as_ref(),
        json!({"sub": "ga-connector", "name": "公安接口", "roles": ["dept_publisher"],
        "dept": "gongan", "jurisdiction": ["110105001"], "iss": "https://idp.example.gov.cn", "aud": "safegrid", "exp": exp}),
    );
    let department = broker::certs::mtls_client(
        &etc.join("tls/server.crt"),
        Path::new(&client_cert),
        Path::new(&client_key),
    )
    .unwrap();
    let record = json!({"kind": "resident", "source_id": "GA-1", "version": "1", "name": "张三",
        "id_number": "11010519491231002X", "grid": "110105001001003"});
    let response = department
        .post(format!("https://localhost:{mtls_port}/v1/ingest/gongan"))
        .bearer_auth(&publisher)
        .body(format!("{record}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["accepted"], 1, "{receipt}");
    // Publishing on the main listener, without a client certificate, is refused.
    let response = reader
        .post(format!("{base}/v1/ingest/gongan"))
        .bearer_auth(&publisher)
        .body(format!("{record}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // A grid worker reads on the main listener with an IdP token.
    let worker = sign(
        idp.as_ref(),
        json!({"sub": "gw-1", "name": "网格员", "roles": ["grid_worker"],
        "jurisdiction": ["110105001001"], "iss": "https://idp.example.gov.cn", "aud": "safegrid", "exp": exp}),
    );
    let response = reader
        .get(format!("{base}/v1/residents/by-source/gongan/GA-1"))
        .bearer_auth(&worker)
        .header("x-purpose", "routine_visit")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A token from anyone else is refused.
    let stranger = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let forged = sign(
        stranger.as_ref(),
        json!({"sub": "x", "roles": ["street_officer"], "jurisdiction": ["110105001"],
        "iss": "https://idp.example.gov.cn", "aud": "safegrid", "exp": exp}),
    );
    let response = reader
        .get(format!("{base}/v1/residents/by-source/gongan/GA-1"))
        .bearer_auth(&forged)
        .header("x-purpose", "routine_visit")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
