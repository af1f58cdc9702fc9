//! Department client certificates (mTLS): a small certificate authority for trials
//! (`safegrid certs init-ca | issue | revoke | crl`), and the mapping from a verified client
//! certificate to the department it speaks for.
//!
//! Guarantees:
//! - The CA key is written once with mode 0600 and never printed; `init-ca` refuses to
//!   overwrite an existing CA.
//! - Every issued certificate names its department in the subject (`CN` and `OU` = the
//!   department code), carries a random 128-bit serial and the `clientAuth` usage only.
//! - `revoke` rewrites the CRL atomically (temporary file + rename), so a broker reloading the
//!   CRL never reads half a file; every CRL has a `nextUpdate`, which the broker enforces.
//! - [`identify`] maps a certificate to a department only through the configured subject
//!   table or a department code in the subject; anything else maps to no department.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use ring::rand::SecureRandom;
use time::{Duration, OffsetDateTime};

use model::Department;

/// File names inside a CA directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CRL: &str = "crl.pem";
const ISSUED: &str = "issued.tsv";
const REVOKED: &str = "revoked.tsv";

/// How long a CRL written by `revoke` / `crl` stays valid: the operator re-signs it before.
pub const DEFAULT_CRL_DAYS: i64 = 7;

/// What the accept loop learned from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The department the certificate speaks for, if its subject names one.
    pub department: Option<Department>,
    /// SHA-256 of the DER certificate, hex (recorded in the audit log).
    pub cert_sha256: String,
    /// The subject's common name (a department code or a configured name; not personal).
    pub common_name: Option<String>,
}

/// Maps a client certificate's common name to a department (`[mtls.subjects]`).
pub type SubjectMap = BTreeMap<String, Department>;

/// Identifies a (verified) client certificate: configured subjects first, then a department
/// code in `OU`, then in `CN`.
pub fn identify(der: &[u8], subjects: &SubjectMap) -> ClientIdentity {
    let cert_sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, der));
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return ClientIdentity {
            department: None,
            cert_sha256,
            common_name: None,
        };
    };
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    let unit = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned);
    let department = common_name
        .as_deref()
        .and_then(|cn| subjects.get(cn).copied())
        .or_else(|| unit.as_deref().and_then(|ou| Department::parse(ou).ok()))
        .or_else(|| {
            common_name
                .as_deref()
                .and_then(|cn| Department::parse(cn).ok())
        });
    ClientIdentity {
        department,
        cert_sha256,
        common_name,
    }
}

/// Files of one issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Serial number, lower-case hex (what `revoke --serial` takes).
    pub serial: String,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "SafeGrid department CA");
    name.push(DnType::OrganizationName, "SafeGrid");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

fn random_serial() -> anyhow::Result<(SerialNumber, String)> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    // Positive and without a leading zero byte, so the hex form is canonical.
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

/// Creates a CA (certificate, key, empty CRL) in `dir`.
pub fn init_ca(dir: &Path, days: i64) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert_path = dir.join(CA_CERT);
    if cert_path.exists() || dir.join(CA_KEY).exists() {
        bail!(
            "{} already holds a CA; refusing to overwrite it",
            dir.display()
        );
    }
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = ca_params();
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days.max(1));
    let (serial, _) = random_serial()?;
    params.serial_number = Some(serial);
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;
    vault::crypto::write_private_file(&dir.join(CA_KEY), key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", dir.join(CA_KEY).display()))?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    write_crl(dir, DEFAULT_CRL_DAYS)?;
    Ok(cert_path)
}

fn load_issuer(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key_path = dir.join(CA_KEY);
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?,
    );
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a PEM key", key_path.display()))?;
    let cert_path = dir.join(CA_CERT);
    let cert_pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    Issuer::from_ca_cert_pem(&cert_pem, key)
        .with_context(|| format!("{} is not a CA certificate", cert_path.display()))
}

/// Issues a client certificate for `department`, valid `days`, into `dir`.
pub fn issue(dir: &Path, department: Department, days: i64) -> anyhow::Result<IssuedCertificate> {
    let issuer = load_issuer(dir)?;
    let key = KeyPair::generate().context("generating the client key")?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, department.code());
    name.push(DnType::OrganizationalUnitName, department.code());
    name.push(DnType::OrganizationName, "SafeGrid");
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days.max(1));
    let (serial, serial_hex) = random_serial()?;
    params.serial_number = Some(serial);
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the client certificate")?;
    let stem = format!("{}-{serial_hex}", department.code());
    let issued = IssuedCertificate {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}-key.pem")),
        serial: serial_hex.clone(),
    };
    vault::crypto::write_private_file(&issued.key, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", issued.key.display()))?;
    std::fs::write(&issued.cert, cert.pem())
        .with_context(|| format!("writing {}", issued.cert.display()))?;
    append_line(
        &dir.join(ISSUED),
        &format!(
            "{serial_hex}\t{}\t{}\n",
            department.code(),
            params.not_after.unix_timestamp()
        ),
    )?;
    Ok(issued)
}

/// Revokes the certificate with serial `serial` (hex) and rewrites the CRL.
pub fn revoke(dir: &Path, serial: &str) -> anyhow::Result<PathBuf> {
    let serial = serial.trim().to_ascii_lowercase();
    if serial.is_empty() || serial.len() > 40 || hex::decode(&serial).is_err() {
        bail!("--serial must be the certificate's serial number in hexadecimal");
    }
    let issued = std::fs::read_to_string(dir.join(ISSUED)).unwrap_or_default();
    if !issued
        .lines()
        .any(|l| l.split('\t').next() == Some(serial.as_str()))
    {
        bail!(
            "no certificate with serial {serial} was issued from {}",
            dir.display()
        );
    }
    let revoked = revoked_serials(dir)?;
    if !revoked.iter().any(|(s, _)| *s == serial) {
        append_line(
            &dir.join(REVOKED),
            &format!("{serial}\t{}\n", OffsetDateTime::now_utc().unix_timestamp()),
        )?;
    }
    write_crl(dir, DEFAULT_CRL_DAYS)
}

fn revoked_serials(dir: &Path) -> anyhow::Result<Vec<(String, i64)>> {
    let text = match std::fs::read_to_string(dir.join(REVOKED)) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).context("reading the revocation list"),
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let (serial, at) = line.split_once('\t')?;
            Some((serial.to_owned(), at.trim().parse().ok()?))
        })
        .collect())
}

/// Writes a fresh CRL (all revoked serials, valid `days`) atomically; returns its path.
pub fn write_crl(dir: &Path, days: i64) -> anyhow::Result<PathBuf> {
    let issuer = load_issuer(dir)?;
    let now = OffsetDateTime::now_utc();
    let mut revoked_certs = Vec::new();
    for (serial, at) in revoked_serials(dir)? {
        let bytes =
            hex::decode(&serial).with_context(|| format!("bad serial {serial} in revoked.tsv"))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: OffsetDateTime::from_unix_timestamp(at).unwrap_or(now),
            reason_code: Some(RevocationReason::Unspecified),
            invalidity_date: None,
        });
    }
    let number = u64::try_from(now.unix_timestamp()).unwrap_or(1);
    let crl = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(days.max(1)),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .context("signing the CRL")?;
    let path = dir.join(CRL);
    let temporary = dir.join(format!("{CRL}.tmp"));
    std::fs::write(&temporary, crl.pem().context("encoding the CRL")?)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(path)
}

fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(line.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// An HTTPS client that trusts `server_ca` and presents a client certificate (a department
/// connector talking to the mTLS listener).
pub fn mtls_client(server_ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for root in crate::tls::load_certs(server_ca)? {
        roots.add(root).context("adding a trusted certificate")?;
    }
    let chain = crate::tls::load_certs(cert)?;
    let key = crate::tls::load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the client certificate and key do not match")?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .context("building the HTTPS client")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateRevocationListDer;

    use super::*;

    #[test]
    fn issued_certificate_names_its_department_and_revocation_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), 30).unwrap();
        assert!(
            init_ca(dir.path(), 30).is_err(),
            "a CA is never overwritten"
        );
        let issued = issue(dir.path(), Department::Gongan, 30).unwrap();
        let der = crate::tls::load_certs(&issued.cert).unwrap().remove(0);
        let identity = identify(&der, &SubjectMap::new());
        assert_eq!(identity.department, Some(Department::Gongan));
        assert_eq!(identity.cert_sha256.len(), 64);
        let mapped = identify(
            &der,
            &SubjectMap::from([("gongan".to_owned(), Department::Minzheng)]),
        );
        assert_eq!(mapped.department, Some(Department::Minzheng));

        let crl_path = revoke(dir.path(), &issued.serial).unwrap();
        let pem = std::fs::read(&crl_path).unwrap();
        let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&crls[0]).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![issued.serial.clone()]);
        assert!(
            revoke(dir.path(), "abcdef").is_err(),
            "unknown serials are refused"
        );
    }
}
