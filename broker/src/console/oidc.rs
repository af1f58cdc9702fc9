//! Console login through the identity provider: the OpenID Connect authorization-code flow
//! with PKCE (RFC 7636, `S256`).
//!
//! Guarantees:
//! - The browser carries only a random `state`, bound to it by a cookie
//!   (`HttpOnly; Secure; SameSite=Lax; Path=/console/login`: the provider's redirect back is a
//!   top-level navigation from another site); the PKCE verifier stays on the broker, so a code
//!   caught in a URL or a log is worthless without it.
//! - A state is used once and lives 10 minutes; at most [`MAX_PENDING`] logins wait at once.
//! - The access token the provider returns is verified by the broker's own authenticator
//!   (issuer, audience, keys, lifetime, roles, jurisdiction) before a session starts, exactly
//!   like a bearer token on the API.
//! - Provider endpoints are https (plain http only on loopback), fetched without following
//!   redirects; the client secret comes from an environment variable, never the file.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use crate::config::ConsoleSection;

/// Logins waiting for the provider at most.
pub const MAX_PENDING: usize = 10_000;
/// How long a started login may take at the provider.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// The cookie binding a started login to its browser.
pub const STATE_COOKIE: &str = "sg_oidc";

/// The provider's endpoints and this broker's client registration.
#[derive(Debug)]
pub struct OidcClient {
    client_id: String,
    client_secret: Option<String>,
    redirect_url: String,
    authorization_endpoint: String,
    token_endpoint: String,
    scope: String,
    http: reqwest::Client,
    pending: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug)]
struct Pending {
    verifier: String,
    started: Instant,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

/// Why a login through the provider failed (each a stable code on the login page).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the login is unknown, used or older than 10 minutes: start again")]
    StateInvalid,
    #[error("the identity provider refused the login: {0}")]
    Denied(String),
    #[error("the identity provider did not issue a token: {0}")]
    TokenFailed(String),
}

impl OidcError {
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::StateInvalid => "oidc_state_invalid",
            OidcError::Denied(_) => "oidc_denied",
            OidcError::TokenFailed(_) => "oidc_token_failed",
        }
    }
}

fn check(url: &str, key: &str) -> anyhow::Result<()> {
    crate::auth::check_provider_url(url).map_err(|reason| anyhow::anyhow!("{key}: {reason}"))
}

impl OidcClient {
    /// The client `[console]` describes, or `None` without `oidc_client_id`. Endpoints not
    /// configured are read from `<issuer>/.well-known/openid-configuration`.
    pub async fn from_config(
        console: &ConsoleSection,
        issuer: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Option<OidcClient>> {
        let Some(client_id) = console.oidc_client_id.clone() else {
            return Ok(None);
        };
        let redirect_url = console.oidc_redirect_url.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "console.oidc_redirect_url is required with console.oidc_client_id: the broker's public https URL of /console/login/callback"
            )
        })?;
        if !redirect_url.starts_with("https://")
            || !redirect_url.ends_with("/console/login/callback")
        {
            anyhow::bail!(
                "console.oidc_redirect_url must be an https URL ending in /console/login/callback"
            );
        }
        let http = crate::auth::provider_client(ca_file)?;
        let (authorization_endpoint, token_endpoint) = match (
            console.oidc_authorization_endpoint.clone(),
            console.oidc_token_endpoint.clone(),
        ) {
            (Some(a), Some(t)) => (a, t),
            _ => {
                let issuer = issuer.ok_or_else(|| {
                    anyhow::anyhow!("console.oidc_client_id needs [auth] issuer, or both console.oidc_authorization_endpoint and console.oidc_token_endpoint")
                })?;
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                check(&url, "auth.issuer")?;
                let discovery: Discovery = http
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?
                    .json()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?;
                if discovery.issuer != issuer {
                    anyhow::bail!(
                        "{url} names issuer {:?}, not the configured {issuer:?}",
                        discovery.issuer
                    );
                }
                (discovery.authorization_endpoint, discovery.token_endpoint)
            }
        };
        check(&authorization_endpoint, "the authorization endpoint")?;
        check(&token_endpoint, "the token endpoint")?;
        let client_secret = match &console.oidc_client_secret_env {
            None => None,
            Some(name) => Some(std::env::var(name).map_err(|_| {
                anyhow::anyhow!("console.oidc_client_secret_env names {name}, which is not set")
            })?),
        };
        Ok(Some(OidcClient {
            client_id,
            client_secret,
            redirect_url,
            authorization_endpoint,
            token_endpoint,
            scope: console
                .oidc_scope
                .clone()
                .unwrap_or_else(|| "openid".to_owned()),
            http,
            pending: Mutex::default(),
        }))
    }

    /// Starts a login: the provider URL to send the browser to, and the state for its cookie.
    pub fn start(&self) -> (String, String) {
        let state = super::session::random_token();
        let verifier = super::session::random_token();
        let challenge = URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| now.duration_since(p.started) < PENDING_TTL);
        if pending.len() >= MAX_PENDING {
            if let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
            {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            state.clone(),
            Pending {
                verifier,
                started: now,
            },
        );
        let separator = if self.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{separator}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&code_challenge={challenge}&code_challenge_method=S256",
            self.authorization_endpoint,
            super::call::encode(&self.client_id),
            super::call::encode(&self.redirect_url),
            super::call::encode(&self.scope),
        );
        (url, state)
    }

    /// Finishes a login: checks the state against the browser's cookie (once), trades the
    /// code for an access token with the PKCE verifier.
    pub async fn finish(
        &self,
        state: &str,
        cookie_state: Option<&str>,
        code: &str,
    ) -> Result<String, OidcError> {
        let bound = cookie_state.is_some_and(|c| super::session::same_secret(c, state));
        let pending = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Taken out whatever happens next: a state is used once.
            pending.remove(state)
        };
        let pending = match pending {
            Some(p) if bound && p.started.elapsed() < PENDING_TTL => p,
            _ => return Err(OidcError::StateInvalid),
        };
        if code.is_empty() || code.len() > 2048 {
            return Err(OidcError::TokenFailed("no authorization code".to_owned()));
        }
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", self.redirect_url.clone()),
            ("client_id", self.client_id.clone()),
            ("code_verifier", pending.verifier),
        ];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.clone()));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", super::call::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .post(&self.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| OidcError::TokenFailed(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(OidcError::TokenFailed(format!(
                "the token endpoint answered {status}"
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| OidcError::TokenFailed(e.without_url().to_string()))?;
        if bytes.len() > 1024 * 1024 {
            return Err(OidcError::TokenFailed("the answer is too large".to_owned()));
        }
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|_| OidcError::TokenFailed("the answer holds no access_token".to_owned()))?;
        Ok(answer.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> OidcClient {
        OidcClient {
            client_id: "safegrid-console".to_owned(),
            client_secret: None,
            redirect_url: "https://broker.example/console/login/callback".to_owned(),
            authorization_endpoint: "https://idp.example/auth".to_owned(),
            token_endpoint: "https://idp.example/token".to_owned(),
            scope: "openid".to_owned(),
            http: crate::auth::provider_client(None).expect("an HTTPS client"),
            pending: Mutex::default(),
        }
    }

    #[test]
    fn a_login_sends_an_s256_challenge_and_never_the_verifier() {
        let client = client();
        let (url, state) = client.start();
        assert!(url
            .starts_with("https://idp.example/auth?response_type=code&client_id=safegrid-console"));
        assert!(url.contains("code_challenge_method=S256"));
        assert!(url.contains(&format!("state={state}")));
        let pending = client.pending.lock().expect("the lock");
        let verifier = &pending[&state].verifier;
        assert!(!url.contains(verifier.as_str()));
        let challenge = URL_SAFE_NO_PAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        assert!(url.contains(&format!("code_challenge={challenge}")));
    }

    #[tokio::test]
    async fn a_state_without_its_cookie_or_used_twice_is_refused() {
        let client = client();
        let (_, state) = client.start();
        // Another browser's cookie: refused, and the state is spent.
        let err = client
            .finish(&state, Some("someone-else"), "code")
            .await
            .expect_err("refused");
        assert_eq!(err.code(), "oidc_state_invalid");
        let err = client
            .finish(&state, Some(&state), "code")
            .await
            .expect_err("refused");
        assert_eq!(err.code(), "oidc_state_invalid");
        let err = client
            .finish("never-issued", Some("never-issued"), "code")
            .await
            .expect_err("refused");
        assert_eq!(err.code(), "oidc_state_invalid");
    }
}
