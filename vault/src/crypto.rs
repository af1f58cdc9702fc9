//! Envelope encryption of sensitive fields, and blind indexes for exact search on them.
//!
//! Guarantees:
//! - Every sealed field is AES-256-GCM under a data key of its owner department and key
//!   version; the associated data binds the ciphertext to its row, its field, its department
//!   and its key version, so a ciphertext copied to another row or field does not open.
//! - Data keys and the blind-index key are random, and stored only wrapped (AES-256-GCM) by
//!   the master key, which never sits in the data directory.
//! - A blind index is HMAC-SHA256 of a normalised value under its own key: equal values give
//!   equal indexes, and nothing about the value can be read back without the key. The
//!   blind-index key has versions: new indexes are computed under the highest, and while a
//!   rotation re-computes the stored ones, lookups try every version still loaded
//!   ([`KeyRing::blind_indexes`]).
//! - No key material is printed by `Debug`, and every raw key ([`SecretKey`], the master key,
//!   unwrapped secrets) is zeroized when dropped. The expanded forms `ring` builds from them
//!   (AES key schedules, HMAC pads inside [`KeyRing`]) are not: `ring` offers no zeroization
//!   and the workspace forbids `unsafe`; they live only in the serving process's memory for
//!   the key ring's lifetime.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use model::Department;

/// Version byte at the head of every sealed field.
const SEALED_FORMAT: u8 = 1;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Environment variable that may carry the master key (64 hex digits).
pub const MASTER_KEY_ENV: &str = "SAFEGRID_MASTER_KEY";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key file {path}: {reason}")]
    MasterKeyFile { path: String, reason: String },
    #[error("master key: {0}")]
    MasterKeyFormat(&'static str),
    #[error("a sealed field failed to open: wrong row, field, key or tampered data")]
    Open,
    #[error("a wrapped key failed to unwrap: wrong master key or tampered key table")]
    Unwrap,
    #[error("sealed field is malformed")]
    Malformed,
    #[error("no data key for department {department} version {version}")]
    MissingKey { department: String, version: u32 },
    #[error("the system random generator failed")]
    Random,
}

/// A 256-bit secret key. Never printed, zeroized on drop.
#[derive(Clone, Zeroize)]
#[zeroize(drop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    pub fn generate(rng: &SystemRandom) -> Result<SecretKey, CryptoError> {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Ok(SecretKey(bytes))
    }

    fn from_hex(text: &str) -> Result<SecretKey, CryptoError> {
        let text = Zeroizing::new(text.trim().to_owned());
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(text.as_bytes(), &mut bytes)
            .map_err(|_| CryptoError::MasterKeyFormat("expected 64 hexadecimal digits"))?;
        Ok(SecretKey(bytes))
    }

    fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    fn aead(&self) -> LessSafeKey {
        // AES-256 takes exactly KEY_LEN bytes, which a SecretKey always has.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte AES-256 key"))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The key that wraps every other key. Lives outside the data directory.
#[derive(Debug, Clone)]
pub struct MasterKey(SecretKey);

impl MasterKey {
    /// Loads the master key from `SAFEGRID_MASTER_KEY` if set, else from `path`; with
    /// `create_if_missing`, a new random key is written to `path` with mode 0600.
    pub fn load(path: Option<&Path>, create_if_missing: bool) -> Result<MasterKey, CryptoError> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return SecretKey::from_hex(&text).map(MasterKey);
        }
        let Some(path) = path else {
            return Err(CryptoError::MasterKeyFormat(
                "no master key: pass --master-key FILE or set SAFEGRID_MASTER_KEY",
            ));
        };
        let file_error = |reason: String| CryptoError::MasterKeyFile {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => SecretKey::from_hex(&Zeroizing::new(text)).map(MasterKey),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && create_if_missing => {
                let key = SecretKey::generate(&SystemRandom::new())?;
                write_private_file(path, key.to_hex().as_bytes())
                    .map_err(|err| file_error(err.to_string()))?;
                Ok(MasterKey(key))
            }
            Err(err) => Err(file_error(err.to_string())),
        }
    }

    /// Loads a master key from `path` only (ignoring `SAFEGRID_MASTER_KEY`), creating a new
    /// random one there (mode 0600) when `create_if_missing`: the target of a master-key
    /// rotation.
    pub fn from_file(path: &Path, create_if_missing: bool) -> Result<MasterKey, CryptoError> {
        match std::fs::read_to_string(path) {
            Ok(text) => SecretKey::from_hex(&Zeroizing::new(text)).map(MasterKey),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && create_if_missing => {
                let key = SecretKey::generate(&SystemRandom::new())?;
                write_private_file(path, key.to_hex().as_bytes()).map_err(|err| {
                    CryptoError::MasterKeyFile {
                        path: path.display().to_string(),
                        reason: err.to_string(),
                    }
                })?;
                Ok(MasterKey(key))
            }
            Err(err) => Err(CryptoError::MasterKeyFile {
                path: path.display().to_string(),
                reason: err.to_string(),
            }),
        }
    }

    /// A fixed key for tests of this and other crates (feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn for_tests(byte: u8) -> MasterKey {
        MasterKey(SecretKey([byte; KEY_LEN]))
    }

    /// Wraps `key` for storage; `label` names what the key is for and is bound as AAD.
    pub fn wrap(&self, key: &SecretKey, label: &str) -> Result<Vec<u8>, CryptoError> {
        seal_with(
            &self.0.aead(),
            &key.0,
            label.as_bytes(),
            &SystemRandom::new(),
        )
    }

    pub fn unwrap_key(&self, wrapped: &[u8], label: &str) -> Result<SecretKey, CryptoError> {
        let plain = Zeroizing::new(
            open_with(&self.0.aead(), wrapped, label.as_bytes())
                .map_err(|_| CryptoError::Unwrap)?,
        );
        let bytes: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Unwrap)?;
        Ok(SecretKey(bytes))
    }

    /// Bytes of an arbitrary secret (e.g. a signing key) wrapped for storage.
    pub fn wrap_bytes(&self, secret: &[u8], label: &str) -> Result<Vec<u8>, CryptoError> {
        seal_with(
            &self.0.aead(),
            secret,
            label.as_bytes(),
            &SystemRandom::new(),
        )
    }

    pub fn unwrap_bytes(
        &self,
        wrapped: &[u8],
        label: &str,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open_with(&self.0.aead(), wrapped, label.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unwrap)
    }
}

/// Writes a file readable by its owner only.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Where a sealed field belongs; bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct FieldContext<'a> {
    pub department: Department,
    /// The row the field lives in (the source record's key).
    pub row: &'a str,
    pub field: &'a str,
}

impl FieldContext<'_> {
    fn aad(&self, key_version: u32) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.row.len() + self.field.len() + 32);
        aad.extend_from_slice(b"safegrid/field/v1\0");
        aad.extend_from_slice(self.department.code().as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.row.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.field.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&key_version.to_be_bytes());
        aad
    }
}

/// The unwrapped keys a running broker holds: data keys per department and version, the
/// blind-index key and the entity-id key.
pub struct KeyRing {
    data_keys: HashMap<(Department, u32), LessSafeKey>,
    current: HashMap<Department, u32>,
    /// The current blind-index key and its version.
    blind: (u32, hmac::Key),
    /// Older blind-index keys still loaded while a rotation re-computes stored indexes.
    blind_retiring: Vec<(u32, hmac::Key)>,
    entity: hmac::Key,
    audit_subject: hmac::Key,
    rng: SystemRandom,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("data_keys", &self.data_keys.len())
            .field("current", &self.current)
            .field("blind_version", &self.blind.0)
            .finish_non_exhaustive()
    }
}

/// What the key ring needs to be rebuilt: key material, unwrapped.
#[derive(Debug)]
pub struct KeyMaterial {
    /// (department, version, key); the highest version of a department is current.
    pub data_keys: Vec<(Department, u32, SecretKey)>,
    /// (version, key) of the current blind-index key.
    pub blind_index: (u32, SecretKey),
    /// Older blind-index versions a rotation has not finished retiring.
    pub blind_index_retiring: Vec<(u32, SecretKey)>,
    pub entity_id: SecretKey,
    pub audit_subject: SecretKey,
}

impl KeyRing {
    pub fn new(material: KeyMaterial) -> KeyRing {
        let mut data_keys = HashMap::new();
        let mut current: HashMap<Department, u32> = HashMap::new();
        for (department, version, key) in &material.data_keys {
            data_keys.insert((*department, *version), key.aead());
            let entry = current.entry(*department).or_insert(*version);
            *entry = (*entry).max(*version);
        }
        let hmac_key = |key: &SecretKey| hmac::Key::new(hmac::HMAC_SHA256, &key.0);
        let (blind_version, blind_key) = &material.blind_index;
        let mut blind_retiring: Vec<(u32, hmac::Key)> = material
            .blind_index_retiring
            .iter()
            .map(|(version, key)| (*version, hmac_key(key)))
            .collect();
        blind_retiring.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        KeyRing {
            data_keys,
            current,
            blind: (*blind_version, hmac_key(blind_key)),
            blind_retiring,
            entity: hmac::Key::new(hmac::HMAC_SHA256, &material.entity_id.0),
            audit_subject: hmac::Key::new(hmac::HMAC_SHA256, &material.audit_subject.0),
            rng: SystemRandom::new(),
        }
    }

    /// The key version new writes of `department` use.
    pub fn current_version(&self, department: Department) -> Option<u32> {
        self.current.get(&department).copied()
    }

    /// Seals `plaintext` under the department's current data key.
    pub fn seal(&self, ctx: FieldContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let version = self
            .current_version(ctx.department)
            .ok_or(CryptoError::MissingKey {
                department: ctx.department.code().to_owned(),
                version: 0,
            })?;
        let key = self.key(ctx.department, version)?;
        let mut out = Vec::with_capacity(1 + 4 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&seal_with(key, plaintext, &ctx.aad(version), &self.rng)?);
        Ok(out)
    }

    /// Opens a field sealed by [`KeyRing::seal`] for exactly this row and field.
    pub fn open(&self, ctx: FieldContext<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (version, body) = split_sealed(sealed)?;
        let key = self.key(ctx.department, version)?;
        open_with(key, body, &ctx.aad(version))
    }

    /// The key version a sealed field was written with.
    pub fn sealed_version(sealed: &[u8]) -> Result<u32, CryptoError> {
        split_sealed(sealed).map(|(version, _)| version)
    }

    /// Blind index of a normalised value under the current blind-index key; `domain`
    /// separates kinds ("id_number", "phone").
    ///
    pub fn blind_index(&self, domain: &str, normalised: &str) -> [u8; 32] {
        keyed_hash(&self.blind.1, domain, normalised)
    }

    /// The blind index of a value under every loaded blind-index version, current first: what
    /// a lookup must try while a rotation has not yet re-computed every stored index.
    pub fn blind_indexes(&self, domain: &str, normalised: &str) -> Vec<[u8; 32]> {
        std::iter::once(&self.blind)
            .chain(&self.blind_retiring)
            .map(|(_, key)| keyed_hash(key, domain, normalised))
            .collect()
    }

    /// The version new blind indexes are computed under.
    pub fn blind_version(&self) -> u32 {
        self.blind.0
    }

    /// Older blind-index versions still loaded (a rotation is re-computing), newest first.
    pub fn blind_retiring_versions(&self) -> Vec<u32> {
        self.blind_retiring
            .iter()
            .map(|(version, _)| *version)
            .collect()
    }

    /// Keyed hash used to derive stable, non-reversible unified entity ids.
    pub fn entity_hash(&self, domain: &str, value: &str) -> [u8; 32] {
        keyed_hash(&self.entity, domain, value)
    }

    /// Keyed hash that names a resident in the audit log without revealing the ID number.
    pub fn audit_subject(&self, value: &str) -> [u8; 32] {
        keyed_hash(&self.audit_subject, "audit-subject", value)
    }

    fn key(&self, department: Department, version: u32) -> Result<&LessSafeKey, CryptoError> {
        self.data_keys
            .get(&(department, version))
            .ok_or(CryptoError::MissingKey {
                department: department.code().to_owned(),
                version,
            })
    }
}

fn keyed_hash(key: &hmac::Key, domain: &str, value: &str) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(domain.as_bytes());
    ctx.update(&[0]);
    ctx.update(value.as_bytes());
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn split_sealed(sealed: &[u8]) -> Result<(u32, &[u8]), CryptoError> {
    match sealed {
        [SEALED_FORMAT, a, b, c, d, body @ ..] if body.len() >= NONCE_LEN + TAG_LEN => {
            Ok((u32::from_be_bytes([*a, *b, *c, *d]), body))
        }
        _ => Err(CryptoError::Malformed),
    }
}

/// `nonce || ciphertext || tag` with a fresh random nonce.
fn seal_with(
    key: &LessSafeKey,
    plaintext: &[u8],
    aad: &[u8],
    rng: &SystemRandom,
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| CryptoError::Random)?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn open_with(key: &LessSafeKey, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Malformed)?;
    let mut buffer = body.to_vec();
    let plain_len = key
        .open_in_place(nonce, Aad::from(aad), &mut buffer)
        .map_err(|_| CryptoError::Open)?
        .len();
    buffer.truncate(plain_len);
    Ok(buffer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let rng = SystemRandom::new();
        KeyRing::new(KeyMaterial {
            data_keys: vec![
                (Department::Gongan, 1, SecretKey::generate(&rng).unwrap()),
                (Department::Gongan, 2, SecretKey::generate(&rng).unwrap()),
                (Department::Minzheng, 1, SecretKey::generate(&rng).unwrap()),
            ],
            blind_index: (1, SecretKey::generate(&rng).unwrap()),
            blind_index_retiring: Vec::new(),
            entity_id: SecretKey::generate(&rng).unwrap(),
            audit_subject: SecretKey::generate(&rng).unwrap(),
        })
    }

    fn ctx<'a>(row: &'a str, field: &'a str) -> FieldContext<'a> {
        FieldContext {
            department: Department::Gongan,
            row,
            field,
        }
    }

    #[test]
    fn seal_open_round_trip_uses_current_version() {
        let keys = ring();
        let sealed = keys.seal(ctx("row-1", "name"), "张三".as_bytes()).unwrap();
        assert_eq!(KeyRing::sealed_version(&sealed).unwrap(), 2);
        assert_eq!(
            keys.open(ctx("row-1", "name"), &sealed).unwrap(),
            "张三".as_bytes()
        );
        assert!(!sealed.windows(6).any(|w| w == "张三".as_bytes()));
    }

    #[test]
    fn moved_ciphertext_fails_to_open() {
        let keys = ring();
        let sealed = keys.seal(ctx("row-1", "phone"), b"13812345678").unwrap();
        assert!(matches!(
            keys.open(ctx("row-2", "phone"), &sealed),
            Err(CryptoError::Open)
        ));
        assert!(matches!(
            keys.open(ctx("row-1", "name"), &sealed),
            Err(CryptoError::Open)
        ));
        let other_department = FieldContext {
            department: Department::Minzheng,
            ..ctx("row-1", "phone")
        };
        assert!(keys.open(other_department, &sealed).is_err());
    }

    #[test]
    fn any_flipped_byte_fails_to_open() {
        let keys = ring();
        let sealed = keys.seal(ctx("r", "f"), b"secret").unwrap();
        for i in 0..sealed.len() {
            let mut copy = sealed.clone();
            copy[i] ^= 0x01;
            assert!(keys.open(ctx("r", "f"), &copy).is_err(), "byte {i}");
        }
    }

    #[test]
    fn master_key_wraps_and_binds_label() {
        let master = MasterKey::for_tests(7);
        let key = SecretKey::generate(&SystemRandom::new()).unwrap();
        let wrapped = master.wrap(&key, "data/gongan/1").unwrap();
        assert_eq!(
            master.unwrap_key(&wrapped, "data/gongan/1").unwrap().0,
            key.0
        );
        assert!(master.unwrap_key(&wrapped, "data/gongan/2").is_err());
        assert!(MasterKey::for_tests(8)
            .unwrap_key(&wrapped, "data/gongan/1")
            .is_err());
    }

    #[test]
    fn blind_index_is_deterministic_and_domain_separated() {
        let keys = ring();
        let a = keys.blind_index("phone", "13812345678");
        assert_eq!(a, keys.blind_index("phone", "13812345678"));
        assert_ne!(a, keys.blind_index("id_number", "13812345678"));
        assert_ne!(a, ring().blind_index("phone", "13812345678"));
    }

    #[test]
    fn lookups_try_every_loaded_blind_version_current_first() {
        let rng = SystemRandom::new();
        let key = |byte| SecretKey([byte; KEY_LEN]);
        let material = |blind, retiring| KeyMaterial {
            data_keys: vec![(Department::Gongan, 1, SecretKey::generate(&rng).unwrap())],
            blind_index: blind,
            blind_index_retiring: retiring,
            entity_id: key(9),
            audit_subject: key(8),
        };
        let old = KeyRing::new(material((1, key(1)), Vec::new()));
        let rotating = KeyRing::new(material((2, key(2)), vec![(1, key(1))]));
        let new = KeyRing::new(material((2, key(2)), Vec::new()));
        let value = "110105198001010011";
        assert_eq!(rotating.blind_version(), 2);
        assert_eq!(rotating.blind_retiring_versions(), vec![1]);
        assert_eq!(
            rotating.blind_index("id_number", value),
            new.blind_index("id_number", value),
            "new indexes use the new version"
        );
        assert_ne!(
            old.blind_index("id_number", value),
            new.blind_index("id_number", value)
        );
        assert_eq!(
            rotating.blind_indexes("id_number", value),
            vec![
                new.blind_index("id_number", value),
                old.blind_index("id_number", value)
            ]
        );
        assert_eq!(new.blind_indexes("id_number", value).len(), 1);
    }

    #[test]
    fn debug_never_prints_keys() {
        let key = SecretKey([0xAB; KEY_LEN]);
        let text = format!("{:?} {:?}", key, MasterKey(key.clone()));
        assert!(!text.to_lowercase().contains("abab"));
        assert!(format!("{:?}", ring()).contains("KeyRing"));
    }

    #[test]
    fn master_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.key");
        let first = MasterKey::load(Some(&path), true).unwrap();
        let second = MasterKey::load(Some(&path), false).unwrap();
        assert_eq!(first.0 .0, second.0 .0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
