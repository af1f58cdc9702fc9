//! Reading an HTTP response body with a cap, for every client in this crate (REST pulls,
//! the feed sink).
//!
//! Guarantees: at most `limit` bytes are ever held: a larger declared length is refused
//! before reading, and reading stops at the first chunk that would pass the limit. Errors
//! never contain the URL.

use reqwest::Response;

/// Why a body was not read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Longer than the limit (declared or read).
    TooLarge,
    /// The read timed out.
    TimedOut,
    /// The connection broke off; what happened, without the URL.
    Broken(String),
}

/// Reads `response`'s body, holding at most `limit` bytes.
pub(crate) async fn read_capped(response: &mut Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    let declared = response.content_length();
    if declared.is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::with_capacity(usize::try_from(declared.unwrap_or(0)).unwrap_or(0));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (body.len() as u64).saturating_add(chunk.len() as u64) > limit {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(err) if err.is_timeout() => return Err(BodyError::TimedOut),
            Err(err) => return Err(BodyError::Broken(err.without_url().to_string())),
        }
    }
}
