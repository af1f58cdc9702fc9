//! mTLS for departments, end to end: the department listener refuses at the TLS layer a
//! client without a certificate, with a certificate from another CA, and with a revoked
//! certificate (the CRL is reloaded without a restart); a department certificate cannot
//! publish for another department; the audit record names the certificate.

use std::path::Path;
use std::time::Duration;

use broker::certs::{self, IssuedCertificate};
use broker::config::{Config, MtlsSection};
use e2e_tests::{contains_bytes, files_under, TestApp, GRID};
use model::Department;
use serde_json::{json, Value};

fn record(source_id: &str) -> String {
    format!(
        "{}\n",
        json!({"kind":"house","source_id":source_id,"version":"1",
            "address":"北京市朝阳区望京街道幸福里小区3号楼","grid":GRID,"usage":"own"})
    )
}

struct Mtls {
    app: TestApp,
    url: String,
    server_ca: std::path::PathBuf,
}

async fn spawn(ca_dir: &Path) -> Mtls {
    let config = Config {
        mtls: Some(MtlsSection {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            client_ca_file: ca_dir.join(certs::CA_CERT),
            crl_files: vec![ca_dir.join(certs::CRL)],
            require_for_ingest: true,
            reload_seconds: 1,
            subjects: Default::default(),
        }),
        ..Config::default()
    };
    let app = TestApp::spawn_with(config).await;
    let broker = app.broker.as_ref().expect("running");
    let port = broker.mtls_addr.expect("the mTLS listener is bound").port();
    let server_ca = broker.dev_certificate.clone().expect("dev certificate");
    Mtls {
        url: format!("https://localhost:{port}"),
        app,
        server_ca,
    }
}

impl Mtls {
    fn client(&self, cert: &IssuedCertificate) -> reqwest::Client {
        certs::mtls_client(&self.server_ca, &cert.cert, &cert.key).expect("an mTLS client")
    }

    /// POST one record; Ok((status, body)) for an HTTP answer, Err for a transport failure.
    async fn publish(
        &self,
        client: &reqwest::Client,
        token_dept: &str,
        path_dept: &str,
        source_id: &str,
    ) -> Result<(u16, Value), reqwest::Error> {
        let response = client
            .post(format!("{}/v1/ingest/{path_dept}", self.url))
            .bearer_auth(self.app.publisher(token_dept))
            .header("content-type", "application/x-ndjson")
            .body(record(source_id))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

#[tokio::test]
async fn department_listener_refuses_bad_certificates_at_the_tls_layer() {
    let ca = tempfile::tempdir().expect("tempdir");
    let other_ca = tempfile::tempdir().expect("tempdir");
    certs::init_ca(ca.path(), 30).expect("CA");
    certs::init_ca(other_ca.path(), 30).expect("other CA");
    let good = certs::issue(ca.path(), Department::Zhujian, 30).expect("issue");
    let to_revoke = certs::issue(ca.path(), Department::Zhujian, 30).expect("issue");
    let foreign = certs::issue(other_ca.path(), Department::Zhujian, 30).expect("issue");
    let mtls = spawn(ca.path()).await;

    // A good certificate publishes for its own department, and the audit names it.
    let (status, body) = mtls
        .publish(&mtls.client(&good), "zhujian", "zhujian", "ZJ-1")
        .await
        .expect("an HTTP answer");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    let der = broker::tls::load_certs(&good.cert).expect("cert").remove(0);
    let sha = certs::identify(&der, &Default::default()).cert_sha256;
    let audit_has_sha = files_under(&mtls.app.data_dir.join("audit"))
        .iter()
        .any(|f| contains_bytes(&std::fs::read(f).unwrap_or_default(), sha.as_bytes()));
    assert!(
        audit_has_sha,
        "the ingest audit record carries client_cert_sha256"
    );

    // No client certificate: refused in the handshake, no HTTP response.
    let plain = broker::client::https_client(&mtls.server_ca).expect("client");
    let refused = plain
        .post(format!("{}/v1/ingest/zhujian", mtls.url))
        .bearer_auth(mtls.app.publisher("zhujian"))
        .body(record("ZJ-2"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "no certificate must fail at TLS, got {refused:?}"
    );

    // A certificate from another CA: refused at TLS.
    let refused = mtls
        .publish(&mtls.client(&foreign), "zhujian", "zhujian", "ZJ-3")
        .await;
    assert!(
        refused.is_err(),
        "a foreign CA must fail at TLS, got {refused:?}"
    );

    // Works before revocation, refused after the CRL is rewritten (reloaded, no restart).
    let (status, _) = mtls
        .publish(&mtls.client(&to_revoke), "zhujian", "zhujian", "ZJ-4")
        .await
        .expect("accepted before revocation");
    assert_eq!(status, 200);
    certs::revoke(ca.path(), &to_revoke.serial).expect("revoke");
    let mut refused_after_reload = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if mtls
            .publish(&mtls.client(&to_revoke), "zhujian", "zhujian", "ZJ-5")
            .await
            .is_err()
        {
            refused_after_reload = true;
            break;
        }
    }
    assert!(
        refused_after_reload,
        "a revoked certificate must fail at TLS after the CRL reload"
    );
    // The good certificate still works after the reload.
    let (status, _) = mtls
        .publish(&mtls.client(&good), "zhujian", "zhujian", "ZJ-6")
        .await
        .expect("still accepted");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_department_certificate_cannot_publish_for_another_department() {
    let ca = tempfile::tempdir().expect("tempdir");
    certs::init_ca(ca.path(), 30).expect("CA");
    let zhujian = certs::issue(ca.path(), Department::Zhujian, 30).expect("issue");
    let mtls = spawn(ca.path()).await;
    let client = mtls.client(&zhujian);

    // Token and path for minzheng, certificate of zhujian.
    let (status, body) = mtls
        .publish(&client, "minzheng", "minzheng", "MZ-1")
        .await
        .expect("an HTTP answer");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "certificate_department_mismatch");

    // Token of zhujian, path of minzheng: the token check refuses it too.
    let (status, body) = mtls
        .publish(&client, "zhujian", "minzheng", "MZ-2")
        .await
        .expect("an HTTP answer");
    assert_eq!(status, 403, "{body}");

    // The main listener refuses publishing without a client certificate.
    let response = mtls
        .app
        .ingest_as(&mtls.app.publisher("zhujian"), "zhujian", record("ZJ-9"))
        .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "client_certificate_required");
}
