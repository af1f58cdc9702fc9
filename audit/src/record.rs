//! The audit record and its canonical, versioned encoding.
//!
//! Guarantees:
//! - [`AuditRecord::canonical_bytes`] is deterministic: `serde_json` writes the fields in the
//!   order they are declared in [`AuditRecord`] (and [`Actor`]), every field is always
//!   present (`None` is `null`) except [`AuditRecord::cut`], and no map types are used, so
//!   the same record always gives the same bytes. **Never reorder, rename or remove a field
//!   of format version 1**; a change of layout is a new value of [`AuditRecord::v`].
//! - [`AuditRecord::cut`] was added to format version 1 as an optional last field: it is
//!   omitted when `None`, so every record written before it existed decodes and re-encodes
//!   to the same bytes (and the same leaf hash). Builds older than it reject records that
//!   carry it.
//! - The Merkle leaf of a record is `hash_leaf(bytes)` over exactly the bytes stored on disk,
//!   so verification never depends on re-encoding.
//! - A record carries no plaintext identity numbers: `residents` holds the broker's keyed
//!   HMAC references, never ID or phone numbers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cut::RecordCut;

/// The record format version this crate writes and reads.
pub const RECORD_FORMAT_VERSION: u32 = 1;

/// Who acted: the authenticated principal, copied from the verified JWT claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Subject (`sub` claim).
    pub sub: String,
    /// Display name (`name` claim).
    pub name: String,
    /// Roles held at the time of access.
    pub roles: Vec<String>,
    /// Department code, for department principals.
    pub dept: Option<String>,
}

/// What the policy decided for this access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Access granted with the fields the policy allows in clear.
    Allow,
    /// Access refused.
    Deny,
    /// Access granted with some fields masked or hidden.
    Masked,
    /// Emergency access outside the normal policy; `break_glass_reason` is set.
    BreakGlass,
}

/// One access to (or change of) data, as recorded in the tamper-evident log.
///
/// Field order is part of the canonical encoding (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Format version; the log writes [`RECORD_FORMAT_VERSION`].
    pub v: u32,
    /// Position in the log (the Merkle leaf index); assigned by the log on append.
    pub seq: u64,
    /// When the access happened; set by the caller.
    pub time: DateTime<Utc>,
    /// The request id of the HTTP request that caused this record.
    pub request_id: String,
    /// The authenticated principal.
    pub actor: Actor,
    /// Client network address.
    pub client_addr: Option<String>,
    /// SHA-256 (hex) of the client's TLS certificate, for mTLS clients.
    pub client_cert_sha256: Option<String>,
    /// Declared purpose of use (`X-Purpose`).
    pub purpose: Option<String>,
    /// Case reference (`X-Case-Id`).
    pub case_id: Option<String>,
    /// What was done, e.g. `read_resident`, `ingest`, `search`, `policy_change`.
    pub action: String,
    /// The API endpoint (route template, not the raw URL).
    pub endpoint: String,
    /// Keyed HMAC references of the residents concerned (never plaintext ID numbers).
    pub residents: Vec<String>,
    /// Unified entity ids touched.
    pub entities: Vec<String>,
    /// Names of the fields returned in clear.
    pub fields_clear: Vec<String>,
    /// The policy decision.
    pub decision: Decision,
    /// Version of the policy set that decided.
    pub policy_version: Option<String>,
    /// Number of results returned.
    pub result_count: u64,
    /// Outcome, e.g. `ok`, `not_found`, or an error code.
    pub outcome: String,
    /// Why break-glass access was used.
    pub break_glass_reason: Option<String>,
    /// What the log cut to keep the record within its size limits; `None` (and absent from
    /// the encoding) when the record was stored whole. Set by the log, like `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<RecordCut>,
}

impl AuditRecord {
    /// A record with the required fields set, `time` = now, `outcome` = `ok`, and everything
    /// else empty. `seq` is assigned by the log.
    pub fn new(
        request_id: impl Into<String>,
        actor: Actor,
        action: impl Into<String>,
        endpoint: impl Into<String>,
        decision: Decision,
    ) -> Self {
        Self {
            v: RECORD_FORMAT_VERSION,
            seq: 0,
            time: Utc::now(),
            request_id: request_id.into(),
            actor,
            client_addr: None,
            client_cert_sha256: None,
            purpose: None,
            case_id: None,
            action: action.into(),
            endpoint: endpoint.into(),
            residents: Vec::new(),
            entities: Vec::new(),
            fields_clear: Vec::new(),
            decision,
            policy_version: None,
            result_count: 0,
            outcome: "ok".to_owned(),
            break_glass_reason: None,
            cut: None,
        }
    }

    /// The canonical encoding: compact JSON with fields in declaration order.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses canonical bytes; rejects unknown fields and unsupported format versions.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, RecordDecodeError> {
        let record: AuditRecord = serde_json::from_slice(bytes)?;
        if record.v != RECORD_FORMAT_VERSION {
            return Err(RecordDecodeError::UnsupportedVersion(record.v));
        }
        Ok(record)
    }
}

/// Why stored bytes are not a valid record.
#[derive(Debug, thiserror::Error)]
pub enum RecordDecodeError {
    /// Not a well-formed record.
    #[error("malformed record: {0}")]
    Json(#[from] serde_json::Error),
    /// A record format version this build does not know.
    #[error("unsupported record format version {0}")]
    UnsupportedVersion(u32),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn sample() -> AuditRecord {
        let mut r = AuditRecord::new(
            "req-1",
            Actor {
                sub: "u1".into(),
                name: "张三".into(),
                roles: vec!["grid_worker".into()],
                dept: None,
            },
            "read_resident",
            "/v1/residents/{id}",
            Decision::Masked,
        );
        r.time = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
        r
    }

    #[test]
    fn canonical_encoding_is_fixed() {
        let bytes = sample().canonical_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"seq":0,"time":"2026-11-01T08:00:00Z","request_id":"req-1","actor":{"sub":"u1","name":"张三","roles":["grid_worker"],"dept":null},"client_addr":null,"client_cert_sha256":null,"purpose":null,"case_id":null,"action":"read_resident","endpoint":"/v1/residents/{id}","residents":[],"entities":[],"fields_clear":[],"decision":"masked","policy_version":null,"result_count":0,"outcome":"ok","break_glass_reason":null}"#
        );
        let back = AuditRecord::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, sample());
        assert_eq!(back.canonical_bytes().unwrap(), bytes);
    }

    #[test]
    fn cut_is_omitted_when_none_and_encoded_last_when_set() {
        let whole = String::from_utf8(sample().canonical_bytes().unwrap()).unwrap();
        assert!(!whole.contains("cut"));
        let mut r = sample();
        r.cut = Some(RecordCut {
            strings: 1,
            entities: Some(crate::cut::ListCut {
                total: 300,
                sha256: "00ff".into(),
            }),
            ..RecordCut::default()
        });
        let bytes = r.canonical_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let expected = format!(
            r#"{},"cut":{{"strings":1,"entities":{{"total":300,"sha256":"00ff"}}}}}}"#,
            whole.strip_suffix('}').unwrap()
        );
        assert_eq!(text, expected);
        let back = AuditRecord::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.canonical_bytes().unwrap(), bytes);
    }

    #[test]
    fn rejects_unknown_versions_and_fields() {
        let mut r = sample();
        r.v = 2;
        let bytes = r.canonical_bytes().unwrap();
        assert!(matches!(
            AuditRecord::from_canonical_bytes(&bytes),
            Err(RecordDecodeError::UnsupportedVersion(2))
        ));
        let text = String::from_utf8(sample().canonical_bytes().unwrap()).unwrap();
        let extra = text.replacen("{\"v\":1,", "{\"v\":1,\"x\":1,", 1);
        assert!(AuditRecord::from_canonical_bytes(extra.as_bytes()).is_err());
        assert_eq!(
            serde_json::to_string(&Decision::BreakGlass).unwrap(),
            "\"break_glass\""
        );
    }
}
