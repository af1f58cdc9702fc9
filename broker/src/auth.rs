//! Authentication: JWT bearer tokens verified against configured keys, turned into a
//! [`Principal`].
//!
//! Guarantees: only EdDSA, ES256 and RS256 are accepted (never `none` or HMAC with a public
//! key); `exp`, `iss`, `aud` and `nbf` are always checked; a token whose lifetime (`exp` after
//! `iat`, or after now when `iat` is absent) exceeds the configured maximum is refused; a
//! principal's jurisdiction codes and department are parsed into their types, so a token with
//! a malformed one is refused. A token whose roles are all unknown, a reader role without a
//! jurisdiction, and a department role (`dept_analyst`, `dept_publisher`, `dept_subscriber`)
//! without `dept` are
//! refused (401 with a message naming the claim).
//! A verified token is remembered (by its SHA-256, with its `exp`) so that a client sending
//! the same token again is not charged a signature verification per request; a remembered
//! token is still refused once it expires, and a token that failed is never remembered.

use policies::Principal;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use model::{Department, DivisionCode};

/// Issuer and audience of tokens the broker signs itself in dev mode.
pub const DEV_ISSUER: &str = "safegrid-dev";
pub const DEFAULT_AUDIENCE: &str = "safegrid";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <JWT>`")]
    Missing,
    #[error("the token is invalid or expired")]
    Invalid,
    #[error("the token's jurisdiction or dept claim is malformed")]
    BadClaims,
    #[error("the token is valid for longer than this broker accepts; ask the identity provider for a shorter-lived token")]
    TooLong,
    #[error("the token names no role this broker knows")]
    NoKnownRole,
    #[error("the token's reader role needs a jurisdiction claim (division codes)")]
    NoJurisdiction,
    #[error("the token's department role needs a dept claim")]
    NoDepartment,
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

impl AuthError {
    /// A stable code for the audit record of a refused token.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Invalid => "token_invalid",
            AuthError::BadClaims => "token_claims_malformed",
            AuthError::TooLong => "token_lifetime_too_long",
            AuthError::NoKnownRole => "token_roles_unknown",
            AuthError::NoJurisdiction => "token_jurisdiction_missing",
            AuthError::NoDepartment => "token_dept_missing",
            AuthError::KeyFile { .. } => "token_keys_unavailable",
        }
    }
}

/// Claims SafeGrid reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub jurisdiction: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dept: Option<String>,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// Longest token lifetime accepted by default (12 hours).
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Roles that read personal data and so must be bounded by a jurisdiction.
const READER_ROLES: [&str; 5] = [
    "grid_worker",
    "community_officer",
    "street_officer",
    "dept_analyst",
    "dept_subscriber",
];
/// Roles that act for one department and so must carry `dept`.
const DEPARTMENT_ROLES: [&str; 3] = ["dept_analyst", "dept_publisher", "dept_subscriber"];
/// Verified tokens remembered at most; the memory is emptied when it is full.
const VERIFIED_CAPACITY: usize = 10_000;

/// Verifies tokens.
pub struct Authenticator {
    keys: Vec<(Option<String>, DecodingKey, Algorithm)>,
    issuer: String,
    audience: String,
    max_lifetime: Duration,
    /// SHA-256 of a verified token → its principal and `exp`.
    verified: Mutex<HashMap<[u8; 32], (Principal, u64)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

impl Authenticator {
    /// Trusts one Ed25519 public key (dev mode: the instance's own key).
    pub fn ed25519(public_key: &[u8], issuer: &str, audience: &str) -> Authenticator {
        Authenticator {
            keys: vec![(None, DecodingKey::from_ed_der(public_key), Algorithm::EdDSA)],
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            verified: Mutex::default(),
        }
    }

    /// Refuses tokens valid for longer than `max` (from `iat`, or from now without `iat`).
    pub fn with_max_lifetime(mut self, max: Duration) -> Authenticator {
        self.max_lifetime = max;
        self
    }

    /// Trusts the keys of a JWKS file (production).
    pub fn from_jwks_file(
        path: &Path,
        issuer: &str,
        audience: &str,
    ) -> Result<Authenticator, AuthError> {
        let key_error = |reason: String| AuthError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| key_error(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match jwk.common.key_algorithm {
                Some(jsonwebtoken::jwk::KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
                Some(jsonwebtoken::jwk::KeyAlgorithm::ES256) => Algorithm::ES256,
                Some(jsonwebtoken::jwk::KeyAlgorithm::RS256) => Algorithm::RS256,
                _ => match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    _ => {
                        return Err(key_error(
                            "only EdDSA, ES256 and RS256 keys are accepted".into(),
                        ))
                    }
                },
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| key_error(e.to_string()))?;
            keys.push((jwk.common.key_id.clone(), key, algorithm));
        }
        if keys.is_empty() {
            return Err(key_error("the JWKS holds no key".into()));
        }
        Ok(Authenticator {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            verified: Mutex::default(),
        })
    }

    /// Verifies a bearer token and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        let now = jsonwebtoken::get_current_timestamp();
        {
            let mut verified = self.remembered();
            match verified.get(&id) {
                Some((principal, exp)) if now <= exp.saturating_add(LEEWAY_SECONDS) => {
                    return Ok(principal.clone());
                }
                Some(_) => {
                    verified.remove(&id);
                    return Err(AuthError::Invalid);
                }
                None => {}
            }
        }
        let (principal, exp) = self.verify_signature(token)?;
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(id, (principal.clone(), exp));
        Ok(principal)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, u64)>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The full check: signature, algorithm, `exp`, `iss`, `aud`, claims.
    fn verify_signature(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        for (kid, key, algorithm) in &self.keys {
            if header.alg != *algorithm {
                continue;
            }
            if let (Some(want), Some(got)) = (kid, &header.kid) {
                if want != got {
                    continue;
                }
            }
            let mut validation = Validation::new(*algorithm);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_nbf = true;
            if let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, &validation) {
                let exp = data.claims.exp;
                let now = jsonwebtoken::get_current_timestamp();
                // A token "issued" in the future starts its lifetime now.
                let start = match data.claims.iat {
                    0 => now,
                    iat => iat.min(now),
                };
                if exp.saturating_sub(start) > self.max_lifetime.as_secs() + LEEWAY_SECONDS {
                    return Err(AuthError::TooLong);
                }
                return principal(data.claims).map(|p| (p, exp));
            }
        }
        Err(AuthError::Invalid)
    }
}

fn principal(claims: Claims) -> Result<Principal, AuthError> {
    let jurisdiction = claims
        .jurisdiction
        .iter()
        .map(|code| DivisionCode::parse(code))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AuthError::BadClaims)?;
    let dept = claims
        .dept
        .as_deref()
        .map(Department::parse)
        .transpose()
        .map_err(|_| AuthError::BadClaims)?;
    let has = |set: &[&str]| claims.roles.iter().any(|r| set.contains(&r.as_str()));
    if !claims
        .roles
        .iter()
        .any(|r| policies::ROLES.contains(&r.as_str()))
    {
        return Err(AuthError::NoKnownRole);
    }
    if has(&READER_ROLES) && jurisdiction.is_empty() {
        return Err(AuthError::NoJurisdiction);
    }
    if has(&DEPARTMENT_ROLES) && dept.is_none() {
        return Err(AuthError::NoDepartment);
    }
    Ok(Principal {
        sub: claims.sub,
        name: claims.name,
        roles: claims.roles,
        jurisdiction,
        dept,
    })
}

/// Signs tokens with an Ed25519 key (the instance key in dev mode).
pub struct TokenSigner {
    key: EncodingKey,
    public_key: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(<redacted>)")
    }
}

/// What a signed token should say.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub sub: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub jurisdiction: Vec<String>,
    pub dept: Option<String>,
    pub ttl: Duration,
}

impl TokenSigner {
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<TokenSigner, AuthError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| AuthError::KeyFile {
            path: "instance signing key".into(),
            reason: "not an Ed25519 PKCS#8 key".into(),
        })?;
        Ok(TokenSigner {
            key: EncodingKey::from_ed_der(pkcs8),
            public_key: pair.public_key().as_ref().to_vec(),
        })
    }

    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Signs exactly these claims (tests forge edge cases with it: `nbf`, long lifetimes).
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .map_err(|_| AuthError::Invalid)
    }

    pub fn sign(&self, request: &TokenRequest) -> Result<String, AuthError> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let claims = Claims {
            sub: request.sub.clone(),
            name: request.name.clone().unwrap_or_else(|| request.sub.clone()),
            roles: request.roles.clone(),
            jurisdiction: request.jurisdiction.clone(),
            dept: request.dept.clone(),
            iss: DEV_ISSUER.to_owned(),
            aud: DEFAULT_AUDIENCE.to_owned(),
            exp: now + request.ttl.as_secs(),
            iat: now,
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(|_| AuthError::Invalid)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        TokenSigner::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn request() -> TokenRequest {
        TokenRequest {
            sub: "gw-001".into(),
            name: Some("李网格".into()),
            roles: vec!["grid_worker".into()],
            jurisdiction: vec!["110105001001".into()],
            dept: None,
            ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn signed_token_verifies_and_scopes() {
        let signer = signer();
        let auth = Authenticator::ed25519(signer.public_key(), DEV_ISSUER, DEFAULT_AUDIENCE);
        let principal = auth.verify(&signer.sign(&request()).unwrap()).unwrap();
        assert_eq!(principal.sub, "gw-001");
        assert!(principal.covers(&DivisionCode::parse("110105001001003").unwrap()));
        assert!(!principal.covers(&DivisionCode::parse("110105001002003").unwrap()));
    }

    #[test]
    fn foreign_key_wrong_audience_and_garbage_are_refused() {
        let auth = Authenticator::ed25519(signer().public_key(), DEV_ISSUER, DEFAULT_AUDIENCE);
        assert!(auth.verify(&signer().sign(&request()).unwrap()).is_err());
        let own = signer();
        let other_aud = Authenticator::ed25519(own.public_key(), DEV_ISSUER, "elsewhere");
        assert!(other_aud.verify(&own.sign(&request()).unwrap()).is_err());
        assert!(auth.verify("not.a.token").is_err());
        // alg=none
        assert!(auth.verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.").is_err());
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_refused_one_is_not_remembered() {
        let signer = signer();
        let auth = Authenticator::ed25519(signer.public_key(), DEV_ISSUER, DEFAULT_AUDIENCE);
        let token = signer.sign(&request()).unwrap();
        assert_eq!(auth.verify(&token).unwrap().sub, "gw-001");
        assert_eq!(auth.remembered().len(), 1);
        assert_eq!(auth.verify(&token).unwrap().sub, "gw-001", "from memory");
        // The same token, its expiry (plus leeway) now in the past.
        let past = jsonwebtoken::get_current_timestamp() - LEEWAY_SECONDS - 1;
        for (_, exp) in auth.remembered().values_mut() {
            *exp = past;
        }
        assert!(matches!(auth.verify(&token), Err(AuthError::Invalid)));
        assert!(auth.remembered().is_empty(), "the expired entry is dropped");

        let foreign = super::tests::signer().sign(&request()).unwrap();
        assert!(auth.verify(&foreign).is_err());
        assert!(auth.verify(&foreign).is_err());
        assert!(auth.verify("not.a.token").is_err());
        assert!(
            auth.remembered().is_empty(),
            "refused tokens are not remembered"
        );
    }

    #[test]
    fn malformed_jurisdiction_is_refused() {
        let signer = signer();
        let auth = Authenticator::ed25519(signer.public_key(), DEV_ISSUER, DEFAULT_AUDIENCE);
        let mut bad = request();
        bad.jurisdiction = vec!["beijing".into()];
        assert!(matches!(
            auth.verify(&signer.sign(&bad).unwrap()),
            Err(AuthError::BadClaims)
        ));
    }
}
