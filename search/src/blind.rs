//! Blind tokens: what the search index holds instead of personal data.
//!
//! Guarantees: a token is HMAC-SHA256 under a key derived from the instance's current
//! blind-index key (domain `search-token-key/v1`; a blind-index key rotation changes the
//! key's fingerprint, so the index is rebuilt under the new key), over the index field and
//! the analysed term, truncated to 12 bytes and base32-encoded. Equal (field, term) pairs
//! give equal tokens, so exact-term matching and BM25 work; nothing about the term can be
//! read back from the index without the key; the same term in two fields gives unrelated
//! tokens.

use data_encoding::BASE32_NOPAD;
use ring::hmac;

use vault::crypto::KeyRing;

/// Bytes of the HMAC kept in a token (96 bits: collisions are negligible at 10^9 terms).
const TOKEN_BYTES: usize = 12;

/// Turns analysed terms into blind tokens.
pub struct Blinder {
    key: hmac::Key,
}

impl std::fmt::Debug for Blinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blinder(<redacted>)")
    }
}

impl Blinder {
    pub fn new(keys: &KeyRing) -> Blinder {
        let derived = zeroize::Zeroizing::new(keys.blind_index("search-token-key/v1", ""));
        Blinder {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// The blind token of `term` in index field `field`.
    pub fn token(&self, field: &str, term: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"search-token:");
        ctx.update(field.as_bytes());
        ctx.update(&[0]);
        ctx.update(term.as_bytes());
        let tag = ctx.sign();
        BASE32_NOPAD.encode(&tag.as_ref()[..TOKEN_BYTES])
    }

    /// Names the key without revealing it: an index built under another key is rebuilt.
    pub fn fingerprint(&self) -> String {
        let tag = hmac::sign(&self.key, b"search-index-key-fingerprint");
        hex::encode(&tag.as_ref()[..8])
    }
}
