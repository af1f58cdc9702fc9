//! Signed checkpoints in the C2SP `tlog-checkpoint` / `signed-note` form.
//!
//! A checkpoint commits to the whole log at one size:
//!
//! ```text
//! <origin>\n<size>\n<base64 root>\n
//! \n
//! — <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>\n
//! ```
//!
//! Guarantees:
//! - Notes are byte-compatible with Go's `golang.org/x/mod/sumdb/note` and the
//!   transparency-dev tooling (tested against the Go reference vector): the signature covers
//!   the body including its final newline; key hash = first 4 bytes of
//!   `SHA-256(key name || "\n" || 0x01 || public key)`.
//! - The key name is the log's origin, so a checkpoint names the log it belongs to.
//! - [`SignedCheckpoint::open`] returns a checkpoint only if a signature line by the given
//!   key verifies and the body is a well-formed checkpoint; anything else is an error.
//! - The verifier key (`<name>+<hex key hash>+<base64(0x01 || public key)>`) is what
//!   [`PublicKey`] parses and prints; it is the content of `checkpoint-public.key`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

use crate::merkle::Hash;

/// The signed-note signature type byte of Ed25519.
const ALG_ED25519: u8 = 0x01;
/// The signature line prefix: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// A note larger than this is rejected unread (checkpoints are ~150 bytes).
const MAX_NOTE_BYTES: usize = 64 * 1024;

/// Why a key, a note or a checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The PKCS#8 bytes are not an Ed25519 private key.
    #[error("invalid Ed25519 PKCS#8 private key")]
    InvalidPrivateKey,
    /// The verifier key string is malformed or its key hash does not match.
    #[error("invalid verifier key: {0}")]
    InvalidPublicKey(&'static str),
    /// The key name (the log origin) is empty or contains whitespace or `+`.
    #[error("invalid key name / origin {0:?}: must be non-empty, without spaces or '+'")]
    InvalidKeyName(String),
    /// The note is not a well-formed signed note or checkpoint.
    #[error("malformed checkpoint note: {0}")]
    Malformed(&'static str),
    /// No signature line by the expected key, or the signature does not verify.
    #[error("checkpoint signature does not verify with key {0:?}")]
    BadSignature(String),
}

/// Checks the signed-note key name rules: non-empty, no Unicode space, no `+`.
pub fn validate_key_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(CheckpointError::InvalidKeyName(name.to_owned()));
    }
    Ok(())
}

fn key_hash(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut input = Vec::with_capacity(name.len() + 34);
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(ALG_ED25519);
    input.extend_from_slice(public_key);
    let d = digest(&SHA256, &input);
    let mut out = [0u8; 4];
    out.copy_from_slice(&d.as_ref()[..4]);
    out
}

/// Signs checkpoints with an Ed25519 key. Never printed: `Debug` shows the public key only.
pub struct CheckpointSigner {
    key_pair: Ed25519KeyPair,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("public_key", &hex::encode(self.public_key_bytes()))
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A fresh Ed25519 private key as PKCS#8 v2 bytes (store them wrapped; they are secret).
    pub fn generate_pkcs8() -> Vec<u8> {
        // Invariant: ring's key generation only fails if the OS random source is broken,
        // in which case no secure operation is possible at all.
        #[allow(clippy::expect_used)]
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .expect("the OS random number generator works")
            .as_ref()
            .to_vec()
    }

    /// Loads a signer from PKCS#8 v2 bytes (as made by [`CheckpointSigner::generate_pkcs8`]).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CheckpointError> {
        let key_pair =
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CheckpointError::InvalidPrivateKey)?;
        Ok(Self { key_pair })
    }

    #[cfg(test)]
    pub(crate) fn from_seed(seed: &[u8]) -> Result<Self, CheckpointError> {
        let key_pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| CheckpointError::InvalidPrivateKey)?;
        Ok(Self { key_pair })
    }

    fn public_key_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key_pair.public_key().as_ref());
        out
    }

    /// The verifier key for this signer under `key_name` (the log origin).
    pub fn public_key(&self, key_name: &str) -> Result<PublicKey, CheckpointError> {
        validate_key_name(key_name)?;
        Ok(PublicKey {
            name: key_name.to_owned(),
            key: self.public_key_bytes(),
        })
    }

    /// Signs arbitrary note text (must end with `\n`, no blank line) as `key_name`.
    pub fn sign_note(&self, key_name: &str, text: &str) -> Result<String, CheckpointError> {
        validate_key_name(key_name)?;
        if !text.ends_with('\n') || text.contains("\n\n") {
            return Err(CheckpointError::Malformed(
                "note text must end with a newline and contain no blank line",
            ));
        }
        let hash = key_hash(key_name, &self.public_key_bytes());
        let sig = self.key_pair.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&hash);
        blob.extend_from_slice(sig.as_ref());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{key_name} {}\n",
            BASE64.encode(blob)
        ))
    }

    /// Signs the checkpoint `(origin, size, root)`; the key name is the origin.
    pub fn sign_checkpoint(
        &self,
        origin: &str,
        size: u64,
        root: &Hash,
    ) -> Result<SignedCheckpoint, CheckpointError> {
        let body = checkpoint_body(origin, size, root);
        let note = self.sign_note(origin, &body)?;
        Ok(SignedCheckpoint {
            origin: origin.to_owned(),
            size,
            root: *root,
            note,
        })
    }
}

/// The checkpoint body: origin, size and base64 root, one per line.
pub fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", BASE64.encode(root))
}

/// An Ed25519 verifier key in signed-note form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: [u8; 32],
}

impl PublicKey {
    /// The key name (the log origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The 4-byte key hash that identifies this key in signature lines.
    pub fn key_hash(&self) -> [u8; 4] {
        key_hash(&self.name, &self.key)
    }

    /// Parses `<name>+<hex key hash>+<base64(0x01 || public key)>` (surrounding whitespace,
    /// such as a final newline in a file, is ignored).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(hash_hex), Some(key_b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CheckpointError::InvalidPublicKey(
                "expected <name>+<hash>+<key>",
            ));
        };
        validate_key_name(name).map_err(|_| CheckpointError::InvalidPublicKey("bad key name"))?;
        if hash_hex.len() != 8 {
            return Err(CheckpointError::InvalidPublicKey(
                "key hash must be 8 hex digits",
            ));
        }
        let hash = hex::decode(hash_hex)
            .map_err(|_| CheckpointError::InvalidPublicKey("key hash is not hex"))?;
        let raw = BASE64
            .decode(key_b64)
            .map_err(|_| CheckpointError::InvalidPublicKey("key is not base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(CheckpointError::InvalidPublicKey(
                "not an Ed25519 signed-note key",
            ));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&raw[1..]);
        let pk = PublicKey {
            name: name.to_owned(),
            key,
        };
        if pk.key_hash().as_slice() != hash.as_slice() {
            return Err(CheckpointError::InvalidPublicKey(
                "key hash does not match key",
            ));
        }
        Ok(pk)
    }

    /// Verifies a signed note and returns its text (the signed body).
    ///
    /// The first signature line naming this key (name and key hash) decides; other signers'
    /// lines are ignored.
    pub fn open_note<'a>(&self, note: &'a str) -> Result<&'a str, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::Malformed("note too large"));
        }
        if !note.ends_with('\n') {
            return Err(CheckpointError::Malformed("note must end with a newline"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(CheckpointError::Malformed("no signature block"))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        let my_hash = self.key_hash();
        for line in sigs.lines() {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or(CheckpointError::Malformed("bad signature line"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(CheckpointError::Malformed("bad signature line"))?;
            let blob = BASE64
                .decode(b64)
                .map_err(|_| CheckpointError::Malformed("signature is not base64"))?;
            if blob.len() < 5 {
                return Err(CheckpointError::Malformed("signature too short"));
            }
            if name != self.name || blob[..4] != my_hash {
                continue;
            }
            return UnparsedPublicKey::new(&ED25519, &self.key)
                .verify(text.as_bytes(), &blob[4..])
                .map(|()| text)
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()));
        }
        Err(CheckpointError::BadSignature(self.name.clone()))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(&self.key);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_hash()),
            BASE64.encode(raw)
        )
    }
}

/// A verified (or freshly signed) checkpoint: the log `origin` had `size` records with
/// Merkle root `root`; `note` is the full signed-note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The log's origin line (also the key name).
    pub origin: String,
    /// Number of records committed to.
    pub size: u64,
    /// RFC 6962 root over the first `size` records.
    pub root: Hash,
    /// The complete signed note, as published and stored.
    pub note: String,
}

impl SignedCheckpoint {
    /// Verifies `note` with `key` and parses the checkpoint body. The origin must equal the
    /// key name.
    pub fn open(note: &str, key: &PublicKey) -> Result<Self, CheckpointError> {
        let text = key.open_note(note)?;
        let mut lines = text.lines();
        let origin = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing origin"))?;
        let size_line = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing size"))?;
        let root_line = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing root"))?;
        if origin != key.name() {
            return Err(CheckpointError::Malformed("origin differs from key name"));
        }
        let canonical_number = !size_line.is_empty()
            && size_line.bytes().all(|b| b.is_ascii_digit())
            && (size_line == "0" || !size_line.starts_with('0'));
        if !canonical_number {
            return Err(CheckpointError::Malformed("size is not a decimal number"));
        }
        let size: u64 = size_line
            .parse()
            .map_err(|_| CheckpointError::Malformed("size out of range"))?;
        let root: Hash = BASE64
            .decode(root_line)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed("root is not 32 bytes of base64"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            note: note.to_owned(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Reference vector from golang.org/x/mod/sumdb/note (package doc and note_test.go).
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_reference_vector_signs_and_verifies_byte_for_byte() {
        let vkey = PublicKey::parse(GO_VKEY).unwrap();
        assert_eq!(vkey.to_string(), GO_VKEY);
        assert_eq!(vkey.open_note(GO_NOTE).unwrap(), GO_TEXT);
        let tampered = GO_NOTE.replace("cryptography", "cryptographY");
        assert!(vkey.open_note(&tampered).is_err());

        let skey = BASE64.decode(GO_SKEY_B64).unwrap();
        assert_eq!(skey[0], ALG_ED25519);
        let signer = CheckpointSigner::from_seed(&skey[1..]).unwrap();
        assert_eq!(signer.public_key("PeterNeumann").unwrap(), vkey);
        assert_eq!(signer.sign_note("PeterNeumann", GO_TEXT).unwrap(), GO_NOTE);
    }

    #[test]
    fn checkpoint_round_trip_and_rejections() {
        let signer = CheckpointSigner::from_pkcs8(&CheckpointSigner::generate_pkcs8()).unwrap();
        let key = signer.public_key("safegrid.example/audit").unwrap();
        let root = [7u8; 32];
        let cp = signer
            .sign_checkpoint("safegrid.example/audit", 42, &root)
            .unwrap();
        assert!(cp.note.starts_with("safegrid.example/audit\n42\nBwcH"));
        let opened = SignedCheckpoint::open(&cp.note, &key).unwrap();
        assert_eq!(opened, cp);
        assert_eq!(PublicKey::parse(&format!("{key}\n")).unwrap(), key);

        // Another key, a changed size, a broken signature line.
        let other = CheckpointSigner::from_pkcs8(&CheckpointSigner::generate_pkcs8()).unwrap();
        let other_key = other.public_key("safegrid.example/audit").unwrap();
        assert!(SignedCheckpoint::open(&cp.note, &other_key).is_err());
        let changed = cp.note.replacen("\n42\n", "\n43\n", 1);
        assert!(SignedCheckpoint::open(&changed, &key).is_err());
        assert!(SignedCheckpoint::open(&cp.note.replace('\u{2014}', "-"), &key).is_err());
        for i in 0..cp.note.len() {
            let mut bytes = cp.note.clone().into_bytes();
            bytes[i] ^= 0x01;
            if let Ok(s) = String::from_utf8(bytes) {
                assert!(SignedCheckpoint::open(&s, &key).is_err(), "byte {i}");
            }
        }
        assert!(signer.sign_checkpoint("bad origin", 1, &root).is_err());
        assert!(PublicKey::parse("a+00000000+AQ==").is_err());
        assert!(CheckpointSigner::from_pkcs8(b"nonsense").is_err());
    }
}
