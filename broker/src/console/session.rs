//! Console sessions: a random cookie names a server-side session that holds the staff
//! member's token, a CSRF token and the purpose of use they chose.
//!
//! Guarantees:
//! - The cookie is 32 random bytes (hex) and is `HttpOnly; Secure; SameSite=Strict` with
//!   `Path=/console`; the store keys sessions by the cookie's SHA-256, so the store never holds
//!   a usable cookie value.
//! - A session ends after [`IDLE`] without a request, after [`ABSOLUTE`], on logout, or when the
//!   token it holds stops verifying (the API answers 401); an ended session is gone from the
//!   store.
//! - Every state-changing request must carry the session's CSRF token ([`Sessions::check_csrf`],
//!   compared in constant time); a request a browser marks as cross-site is refused before that.
//! - At most [`MAX_SESSIONS`] live at once: the oldest is dropped for a new one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use policies::Principal;

/// The session cookie's name.
pub const COOKIE: &str = "sg_session";
/// The cookie that binds the login form to the browser that loaded it (login CSRF).
pub const LOGIN_COOKIE: &str = "sg_login";
/// The large-text, high-contrast preference (适老化), kept for a year on the device.
pub const LARGE_COOKIE: &str = "sg_large";
/// A session without a request for this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// No session outlives this, whatever the token says.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;

/// One signed-in staff member.
#[derive(Clone)]
pub struct Session {
    /// The bearer token every API call of this session carries.
    pub token: String,
    pub principal: Principal,
    /// Compared with the `csrf` field of every form.
    pub csrf: String,
    /// The purpose of use chosen on the page; every read carries it.
    pub purpose: Option<String>,
    started: Instant,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    /// The token and the CSRF token stay out of every debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sub", &self.principal.sub)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// The sessions of this broker.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source works");
    hex::encode(bytes)
}

fn key(cookie: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Equality of two secrets of public length, in time that does not depend on where they
/// differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && std::hint::black_box(
            a.bytes()
                .zip(b.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y)),
        ) == 0
}

impl Sessions {
    /// Starts a session for a verified token; returns the cookie value.
    pub fn start(&self, token: String, principal: Principal) -> String {
        let cookie = random_token();
        let now = Instant::now();
        let session = Session {
            token,
            principal,
            csrf: random_token(),
            purpose: None,
            started: now,
            last_seen: now,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| live(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key(&cookie), session);
        cookie
    }

    /// The live session a cookie names (and marks it seen), or `None`.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(cookie);
        match map.get_mut(&k) {
            Some(s) if live(s, now) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Sets the session's purpose of use.
    pub fn set_purpose(&self, cookie: &str, purpose: String) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get_mut(&key(cookie)) {
            s.purpose = Some(purpose);
        }
    }

    /// Ends a session.
    pub fn end(&self, cookie: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&key(cookie));
    }

    /// Sessions alive now.
    pub fn count(&self) -> usize {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|s| live(s, now)).count()
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE && now.duration_since(s.started) < ABSOLUTE
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value for the session cookie (`max_age` 0 clears it).
pub fn session_cookie(value: &str, max_age: Option<u64>) -> String {
    let mut cookie = format!("{COOKIE}={value}; Path=/console; HttpOnly; Secure; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            sub: "gw-1".to_owned(),
            name: "网格员".to_owned(),
            roles: vec!["grid_worker".to_owned()],
            jurisdiction: Vec::new(),
            dept: None,
        }
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only_and_ends_on_logout() {
        let sessions = Sessions::default();
        let cookie = sessions.start("t".to_owned(), principal());
        assert_eq!(cookie.len(), 64);
        assert!(sessions.get(&cookie).is_some());
        assert!(sessions.get(&random_token()).is_none());
        // The store holds the cookie's hash, not the cookie.
        let map = sessions.map.lock().expect("the lock");
        assert!(map.keys().all(|k| hex::encode(k) != cookie));
        drop(map);
        sessions.end(&cookie);
        assert!(sessions.get(&cookie).is_none());
    }

    #[test]
    fn cookies_are_parsed_by_name_and_set_strictly() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "a=1; sg_session=abc; sg_sessionx=zzz"
                .parse()
                .expect("a header value"),
        );
        assert_eq!(cookie_value(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie_value(&headers, "b"), None);
        let set = session_cookie("abc", None);
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
