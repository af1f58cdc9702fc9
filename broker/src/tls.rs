//! TLS for the API: rustls with the ring provider, TLS 1.2 and 1.3 only, and the
//! development certificate `serve --dev` creates.
//!
//! Guarantees: the server never negotiates below TLS 1.2 or a cipher suite outside ring's
//! default (AEAD-only, forward-secret) set; a missing or unreadable certificate or key is a
//! start-up error naming the file, never a silent fallback to plain HTTP.
//!
//! mTLS ([`mtls_server_config`]): a client must present a certificate that chains to the
//! configured client CA and is not revoked by any configured CRL; an expired CRL (past its
//! `nextUpdate`) refuses every client rather than trusting stale revocation data.
//! [`ReloadingConfig`] rebuilds the configuration when a certificate, key, CA or CRL file
//! changes; a file that fails to load keeps the previous configuration (and is logged).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a certificate chain and its key live (PEM).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A rustls server configuration for the API.
pub fn server_config(files: &CertFiles) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The files an mTLS listener is built from.
#[derive(Debug, Clone)]
pub struct MtlsFiles {
    pub server: CertFiles,
    /// PEM certificate(s) of the CA that issues department client certificates.
    pub client_ca: PathBuf,
    /// CRLs (PEM or DER) of that CA.
    pub crls: Vec<PathBuf>,
}

impl MtlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![
            self.server.cert.clone(),
            self.server.key.clone(),
            self.client_ca.clone(),
        ];
        paths.extend(self.crls.iter().cloned());
        paths
    }
}

/// A server configuration that requires a client certificate from `files.client_ca`,
/// checked against the CRLs with their expiry enforced.
pub fn mtls_server_config(files: &MtlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let certs = load_certs(&files.server.cert)?;
    let key = load_key(&files.server.key)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in load_certs(&files.client_ca)? {
        roots.add(ca).map_err(|e| TlsError::File {
            path: files.client_ca.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let mut crls = Vec::new();
    for path in &files.crls {
        crls.extend(load_crls(path)?);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .with_crls(crls)
    .enforce_revocation_expiration()
    .build()
    .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// CRLs from a PEM file (`-----BEGIN X509 CRL-----`) or a single DER CRL.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(pem_reason(e)))?;
    if !crls.is_empty() {
        return Ok(crls);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(file_error(
        "no CRL found (expected PEM X509 CRL or DER)".into(),
    ))
}

/// A server configuration that can be swapped while the listener runs.
pub type SharedConfig = Arc<arc_swap::ArcSwap<ServerConfig>>;

/// Rebuilds an mTLS configuration when one of its files changes (polled by mtime and size).
#[derive(Debug)]
pub struct ReloadingConfig {
    files: MtlsFiles,
    shared: SharedConfig,
    stamp: std::sync::Mutex<Vec<Option<(std::time::SystemTime, u64)>>>,
}

impl ReloadingConfig {
    pub fn new(files: MtlsFiles) -> Result<ReloadingConfig, TlsError> {
        let config = mtls_server_config(&files)?;
        let stamp = stamps(&files.paths());
        Ok(ReloadingConfig {
            files,
            shared: Arc::new(arc_swap::ArcSwap::new(config)),
            stamp: std::sync::Mutex::new(stamp),
        })
    }

    /// The handle the accept loop reads for every new connection.
    pub fn shared(&self) -> SharedConfig {
        self.shared.clone()
    }

    /// Rebuilds the configuration if a file changed; true when a new one was swapped in.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.files.paths());
        let mut last = match self.stamp.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *last == now {
            return Ok(false);
        }
        // Remember the attempt either way: a broken file is reported once, not every poll.
        *last = now;
        let config = mtls_server_config(&self.files)?;
        self.shared.store(config);
        Ok(true)
    }

    /// Polls every `interval` until `shutdown` turns true.
    pub fn watch(
        self: Arc<Self>,
        interval: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.changed() => break,
                }
                match self.reload_if_changed() {
                    Ok(true) => tracing::info!(
                        "mTLS configuration reloaded (certificate, CA or CRL changed)"
                    ),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "mTLS files changed but do not load; keeping the previous configuration")
                    }
                }
            }
        })
    }
}

fn stamps(paths: &[PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate found".into()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    // The first PKCS#8, PKCS#1 or SEC1 key in the file, as rustls-pemfile's `private_key` did.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => file_error("no PEM private key found".into()),
        e => file_error(pem_reason(e)),
    })
}

/// A PEM parse error as an operator reads it (the library prints section labels as byte lists).
fn pem_reason(error: pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "PEM section without its \"-----END {}-----\" line",
            String::from_utf8_lossy(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM section start: {}",
            String::from_utf8_lossy(&line)
        ),
        other => other.to_string(),
    }
}

/// Creates a self-signed certificate for `localhost` / 127.0.0.1 / ::1 under `dir`, unless
/// one is there already. Returns where it is.
pub fn ensure_dev_certificate(dir: &Path) -> Result<CertFiles, TlsError> {
    let files = CertFiles {
        cert: dir.join("tls-cert.pem"),
        key: dir.join("tls-key.pem"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Config(e.to_string()))?;
    let write_error = |path: &Path, e: std::io::Error| TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let _ = std::fs::remove_file(&files.key);
    vault::crypto::write_private_file(&files.key, certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| write_error(&files.key, e))?;
    std::fs::write(&files.cert, certified.cert.pem()).map_err(|e| write_error(&files.cert, e))?;
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reason(error: TlsError) -> String {
        match error {
            TlsError::File { reason, .. } => reason,
            other => panic!("not a file error: {other}"),
        }
    }

    #[test]
    fn loads_pem_certificates_keys_and_crls_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure_dev_certificate(dir.path()).unwrap();
        let certs = load_certs(&files.cert).unwrap();
        assert_eq!(certs.len(), 1);
        assert!(matches!(
            load_key(&files.key).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
        // A key and a certificate in one file, with text around them, as operators concatenate.
        let both = dir.path().join("both.pem");
        let text = format!(
            "subject=CN localhost\n{}\n{}",
            std::fs::read_to_string(&files.key).unwrap(),
            std::fs::read_to_string(&files.cert).unwrap()
        );
        std::fs::write(&both, text).unwrap();
        assert_eq!(load_certs(&both).unwrap(), certs);
        assert_eq!(
            load_key(&both).unwrap().secret_der(),
            load_key(&files.key).unwrap().secret_der()
        );

        assert_eq!(
            reason(load_key(&files.cert).unwrap_err()),
            "no PEM private key found"
        );
        assert_eq!(
            reason(load_certs(&files.key).unwrap_err()),
            "no PEM certificate found"
        );
        let cut = dir.path().join("cut.pem");
        let pem = std::fs::read_to_string(&files.cert).unwrap();
        std::fs::write(&cut, &pem[..pem.len() / 2]).unwrap();
        let cut_reason = reason(load_certs(&cut).unwrap_err());
        assert_eq!(
            cut_reason,
            "PEM section without its \"-----END CERTIFICATE-----\" line"
        );
        assert!(
            load_crls(&files.cert).is_err(),
            "a certificate is not a CRL"
        );
        assert!(load_key(&dir.path().join("absent.pem")).is_err());
    }
}
