//! An HTTPS client for talking to a broker (the demo's publishers, tests, `connector run`):
//! rustls with the ring provider, trusting exactly the given certificate(s).
//!
//! Guarantees: the client verifies the server certificate against the given roots only; it
//! never disables verification.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

/// A client that trusts the PEM certificate(s) in `ca_file`.
pub fn https_client(ca_file: &Path) -> anyhow::Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::load_certs(ca_file)? {
        roots.add(cert).context("adding a trusted certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .pool_max_idle_per_host(8)
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .context("building the HTTPS client")
}
