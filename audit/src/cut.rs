//! Bounding the size of a record before it is stored.
//!
//! Guarantees of the cut that [`AuditLog::append`](crate::AuditLog::append) applies to every
//! record:
//! - The result's canonical bytes, with any `seq`, are at most the byte cap, or the call
//!   fails with [`AuditError::RecordTooLarge`] (impossible for a cap of at least
//!   [`MIN_RECORD_BYTES`], which [`AuditLog::open`](crate::AuditLog::open) enforces).
//! - A record within every [`FieldLimits`] and within the cap is stored unchanged.
//! - A cut string is a prefix of the original, cut on a `char` boundary, followed by
//!   `…[cut sha256:<32 hex digits>]`: the first 16 bytes of the SHA-256 of the full original
//!   UTF-8 value, so whoever holds the original can prove it. It has at most as many `char`s
//!   as its limit.
//! - A shortened list keeps its first entries; [`AuditRecord::cut`] records its original
//!   length and the SHA-256 (first 16 bytes, hex) of the JSON encoding of the full list.
//! - [`AuditRecord::cut`] is set exactly when something was cut (the log owns that field,
//!   like `seq`), so a marker-like text in a record without it was stored as sent.
//! - If the limits alone do not bring the record under the cap, every limit is halved, again
//!   from the original record, until it fits; at the last step every list is empty and
//!   every non-empty string is a bare marker.

use std::io::Write;

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

use crate::log::AuditError;
use crate::record::{AuditRecord, RECORD_FORMAT_VERSION};

/// The smallest byte cap a log accepts: a record with every list emptied and every string
/// cut to a bare marker always fits (checked by a test).
pub const MIN_RECORD_BYTES: usize = 2048;

/// The smallest per-string limit accepted: a marker alone takes [`MARKER_CHARS`].
pub const MIN_FIELD_CHARS: usize = 64;

/// `char`s of the marker that replaces the cut part of a string.
pub const MARKER_CHARS: usize = 1 + "[cut sha256:]".len() + 2 * HASH_BYTES;

/// Bytes of SHA-256 kept in a marker or a [`ListCut`].
const HASH_BYTES: usize = 16;

/// Per-field limits applied to every record before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimits {
    /// Longest text field, in `char`s: `request_id`, `actor.sub`, `actor.name`, `actor.dept`,
    /// `client_addr`, `client_cert_sha256`, `purpose`, `case_id`, `action`, `endpoint`,
    /// `policy_version`, `outcome` and `break_glass_reason`.
    pub text_chars: usize,
    /// Longest entry of `actor.roles`, `residents`, `entities` and `fields_clear`, in `char`s.
    pub item_chars: usize,
    /// Most entries kept in `actor.roles`.
    pub max_roles: usize,
    /// Most entries kept in `residents`.
    pub max_residents: usize,
    /// Most entries kept in `entities`.
    pub max_entities: usize,
    /// Most entries kept in `fields_clear`.
    pub max_fields_clear: usize,
}

impl Default for FieldLimits {
    /// Generous for every record the broker writes today (a search page holds at most 100
    /// results, each one entity id and at most one resident reference).
    fn default() -> Self {
        Self {
            text_chars: 256,
            item_chars: 128,
            max_roles: 32,
            max_residents: 128,
            max_entities: 256,
            max_fields_clear: 64,
        }
    }
}

impl FieldLimits {
    /// `Err` with a reason if a limit is too small for a marker to fit.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.text_chars < MIN_FIELD_CHARS || self.item_chars < MIN_FIELD_CHARS {
            return Err(format!(
                "field_limits.text_chars and item_chars must be at least {MIN_FIELD_CHARS}"
            ));
        }
        Ok(())
    }

    fn halved(&self) -> Self {
        Self {
            text_chars: self.text_chars / 2,
            item_chars: self.item_chars / 2,
            max_roles: self.max_roles / 2,
            max_residents: self.max_residents / 2,
            max_entities: self.max_entities / 2,
            max_fields_clear: self.max_fields_clear / 2,
        }
    }

    fn is_zero(&self) -> bool {
        *self == self.halved()
    }
}

/// What was cut from a stored record. Absent from every record stored whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordCut {
    /// String values (fields or list entries) replaced by a prefix and a marker.
    pub strings: u64,
    /// `actor.roles` was shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<ListCut>,
    /// `residents` was shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residents: Option<ListCut>,
    /// `entities` was shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<ListCut>,
    /// `fields_clear` was shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_clear: Option<ListCut>,
}

/// A list that was shortened to its first entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListCut {
    /// Entries in the full list.
    pub total: u64,
    /// SHA-256 (first 16 bytes, hex) of the JSON encoding of the full list, e.g. `["a","b"]`.
    pub sha256: String,
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&digest(&SHA256, bytes).as_ref()[..HASH_BYTES])
}

/// The value of `s` as stored under a limit of `limit` chars, or `None` if it fits.
pub(crate) fn cut_text(s: &str, limit: usize) -> Option<String> {
    if fits(s, limit) {
        return None;
    }
    let keep = limit.saturating_sub(MARKER_CHARS);
    // `s` has more than `limit >= keep` chars, so the `keep`th char exists.
    let end = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
    Some(format!(
        "{}…[cut sha256:{}]",
        &s[..end],
        short_hash(s.as_bytes())
    ))
}

/// Whether `s` has at most `limit` chars (without counting past the limit).
fn fits(s: &str, limit: usize) -> bool {
    s.len() <= limit || s.char_indices().nth(limit).is_none()
}

/// Counts bytes written, so the encoded size is known without building the encoding.
struct ByteCount(usize);

impl Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of the canonical encoding of `record` with the longest possible `seq`.
fn stored_len(record: &AuditRecord) -> Result<usize, AuditError> {
    let mut count = ByteCount(0);
    serde_json::to_writer(&mut count, record)?;
    let seq_digits = record.seq.to_string().len();
    Ok(count.0 - seq_digits + u64::MAX.to_string().len())
}

fn within_limits(r: &AuditRecord, l: &FieldLimits) -> bool {
    let text = |s: &str| fits(s, l.text_chars);
    let opt = |s: &Option<String>| s.as_deref().is_none_or(text);
    let list = |v: &[String], max: usize| v.len() <= max && v.iter().all(|s| fits(s, l.item_chars));
    text(&r.request_id)
        && text(&r.actor.sub)
        && text(&r.actor.name)
        && opt(&r.actor.dept)
        && list(&r.actor.roles, l.max_roles)
        && opt(&r.client_addr)
        && opt(&r.client_cert_sha256)
        && opt(&r.purpose)
        && opt(&r.case_id)
        && text(&r.action)
        && text(&r.endpoint)
        && list(&r.residents, l.max_residents)
        && list(&r.entities, l.max_entities)
        && list(&r.fields_clear, l.max_fields_clear)
        && opt(&r.policy_version)
        && text(&r.outcome)
        && opt(&r.break_glass_reason)
}

/// The length and hash of each full list, computed once per record that needs cutting.
struct FullLists {
    roles: ListCut,
    residents: ListCut,
    entities: ListCut,
    fields_clear: ListCut,
}

fn describe(list: &[String]) -> Result<ListCut, AuditError> {
    Ok(ListCut {
        total: list.len() as u64,
        sha256: short_hash(&serde_json::to_vec(list)?),
    })
}

/// `original` with every limit of `l` applied.
fn apply(original: &AuditRecord, l: &FieldLimits, full: &FullLists) -> AuditRecord {
    let mut strings = 0u64;
    let mut text = |s: &str, limit: usize| match cut_text(s, limit) {
        Some(cut) => {
            strings += 1;
            cut
        }
        None => s.to_owned(),
    };
    let mut r = AuditRecord {
        v: original.v,
        seq: original.seq,
        time: original.time,
        request_id: text(&original.request_id, l.text_chars),
        actor: crate::record::Actor {
            sub: text(&original.actor.sub, l.text_chars),
            name: text(&original.actor.name, l.text_chars),
            roles: Vec::new(),
            dept: original
                .actor
                .dept
                .as_deref()
                .map(|s| text(s, l.text_chars)),
        },
        client_addr: original
            .client_addr
            .as_deref()
            .map(|s| text(s, l.text_chars)),
        client_cert_sha256: original
            .client_cert_sha256
            .as_deref()
            .map(|s| text(s, l.text_chars)),
        purpose: original.purpose.as_deref().map(|s| text(s, l.text_chars)),
        case_id: original.case_id.as_deref().map(|s| text(s, l.text_chars)),
        action: text(&original.action, l.text_chars),
        endpoint: text(&original.endpoint, l.text_chars),
        residents: Vec::new(),
        entities: Vec::new(),
        fields_clear: Vec::new(),
        decision: original.decision,
        policy_version: original
            .policy_version
            .as_deref()
            .map(|s| text(s, l.text_chars)),
        result_count: original.result_count,
        outcome: text(&original.outcome, l.text_chars),
        break_glass_reason: original
            .break_glass_reason
            .as_deref()
            .map(|s| text(s, l.text_chars)),
        cut: None,
    };
    let mut list = |v: &[String], max: usize| -> Vec<String> {
        v.iter().take(max).map(|s| text(s, l.item_chars)).collect()
    };
    r.actor.roles = list(&original.actor.roles, l.max_roles);
    r.residents = list(&original.residents, l.max_residents);
    r.entities = list(&original.entities, l.max_entities);
    r.fields_clear = list(&original.fields_clear, l.max_fields_clear);
    let shortened = |kept: usize, full: &ListCut| (kept as u64) < full.total;
    let cut = RecordCut {
        strings,
        roles: shortened(r.actor.roles.len(), &full.roles).then(|| full.roles.clone()),
        residents: shortened(r.residents.len(), &full.residents).then(|| full.residents.clone()),
        entities: shortened(r.entities.len(), &full.entities).then(|| full.entities.clone()),
        fields_clear: shortened(r.fields_clear.len(), &full.fields_clear)
            .then(|| full.fields_clear.clone()),
    };
    if cut != RecordCut::default() {
        r.cut = Some(cut);
    }
    r
}

/// `record` as it will be stored: within `limits` and, with any `seq`, within `max_bytes`
/// of canonical encoding (see the module docs). Sets `v`; replaces any `cut` the caller set.
/// Returns whether anything was cut.
pub(crate) fn bound_record(
    mut record: AuditRecord,
    max_bytes: usize,
    limits: &FieldLimits,
) -> Result<(AuditRecord, bool), AuditError> {
    record.v = RECORD_FORMAT_VERSION;
    record.cut = None;
    if within_limits(&record, limits) && stored_len(&record)? <= max_bytes {
        return Ok((record, false));
    }
    let full = FullLists {
        roles: describe(&record.actor.roles)?,
        residents: describe(&record.residents)?,
        entities: describe(&record.entities)?,
        fields_clear: describe(&record.fields_clear)?,
    };
    let mut tier = *limits;
    loop {
        let cut = apply(&record, &tier, &full);
        let len = stored_len(&cut)?;
        if len <= max_bytes {
            return Ok((cut, true));
        }
        if tier.is_zero() {
            return Err(AuditError::RecordTooLarge {
                len,
                max: max_bytes,
            });
        }
        tier = tier.halved();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::{Actor, Decision};
    use proptest::prelude::*;

    fn sha16(s: &str) -> String {
        short_hash(s.as_bytes())
    }

    fn base() -> AuditRecord {
        AuditRecord::new(
            "req-1",
            Actor {
                sub: "u1".into(),
                name: "网格员".into(),
                roles: vec!["grid_worker".into()],
                dept: None,
            },
            "read_resident",
            "/v1/residents/{id}",
            Decision::Deny,
        )
    }

    #[test]
    fn marker_length_constant_matches_the_marker() {
        let cut = cut_text(&"x".repeat(500), 0).unwrap();
        assert_eq!(cut.chars().count(), MARKER_CHARS);
        assert!(cut.starts_with("…[cut sha256:"));
    }

    #[test]
    fn a_record_within_limits_is_unchanged() {
        let mut r = base();
        r.entities = (0..100).map(|i| format!("r_{i:020}")).collect();
        r.residents = (0..100).map(|i| format!("{i:032x}")).collect();
        r.break_glass_reason = Some("紧急".repeat(100));
        let (stored, was_cut) =
            bound_record(r.clone(), 16 * 1024, &FieldLimits::default()).unwrap();
        assert!(!was_cut);
        assert_eq!(stored, r);
    }

    #[test]
    fn long_text_keeps_a_prefix_and_the_hash_of_the_whole() {
        let endpoint = format!("/v1/{}", "a".repeat(10_000));
        let mut r = base();
        r.endpoint = endpoint.clone();
        let (stored, was_cut) = bound_record(r, 4096, &FieldLimits::default()).unwrap();
        assert!(was_cut);
        assert_eq!(stored.endpoint.chars().count(), 256);
        let (prefix, marker) = stored.endpoint.split_once('…').unwrap();
        assert!(endpoint.starts_with(prefix));
        assert_eq!(marker, format!("[cut sha256:{}]", sha16(&endpoint)));
        assert_eq!(stored.cut.as_ref().unwrap().strings, 1);
        assert_eq!(stored.action, "read_resident");
    }

    #[test]
    fn the_floor_record_fits_the_smallest_cap() {
        // Every field as long as it can be and full of characters JSON escapes: the last
        // step (bare markers, empty lists) must still fit MIN_RECORD_BYTES.
        let nasty = "\u{1}\"\\".repeat(5_000);
        let mut r = base();
        r.seq = u64::MAX;
        r.result_count = u64::MAX;
        r.request_id = nasty.clone();
        r.actor = Actor {
            sub: nasty.clone(),
            name: nasty.clone(),
            roles: vec![nasty.clone(); 1000],
            dept: Some(nasty.clone()),
        };
        for field in [
            &mut r.client_addr,
            &mut r.client_cert_sha256,
            &mut r.purpose,
            &mut r.case_id,
            &mut r.policy_version,
            &mut r.break_glass_reason,
        ] {
            *field = Some(nasty.clone());
        }
        r.action = nasty.clone();
        r.endpoint = nasty.clone();
        r.outcome = nasty.clone();
        r.residents = vec![nasty.clone(); 1000];
        r.entities = vec![nasty.clone(); 1000];
        r.fields_clear = vec![nasty.clone(); 1000];
        let full = FullLists {
            roles: describe(&r.actor.roles).unwrap(),
            residents: describe(&r.residents).unwrap(),
            entities: describe(&r.entities).unwrap(),
            fields_clear: describe(&r.fields_clear).unwrap(),
        };
        let zero = FieldLimits {
            text_chars: 0,
            item_chars: 0,
            max_roles: 0,
            max_residents: 0,
            max_entities: 0,
            max_fields_clear: 0,
        };
        let floor = apply(&r, &zero, &full);
        let floor_len = stored_len(&floor).unwrap();
        assert!(floor_len <= MIN_RECORD_BYTES, "floor is {floor_len} bytes");
        assert!(floor.entities.is_empty() && floor.residents.is_empty());

        let (stored, _) = bound_record(r.clone(), MIN_RECORD_BYTES, &FieldLimits::default())
            .expect("the floor record fits MIN_RECORD_BYTES");
        let bytes = stored.canonical_bytes().unwrap();
        assert!(bytes.len() <= MIN_RECORD_BYTES, "{}", bytes.len());
        let cut = stored.cut.unwrap();
        assert_eq!(cut.entities.as_ref().unwrap().total, 1000);
        assert_eq!(
            cut.entities.unwrap().sha256,
            short_hash(&serde_json::to_vec(&r.entities).unwrap())
        );
        // Decodes back: the stored form is a valid record.
        assert_eq!(
            AuditRecord::from_canonical_bytes(&bytes).unwrap().seq,
            u64::MAX
        );
    }

    #[test]
    fn a_cap_below_the_floor_is_an_error_not_a_panic() {
        let mut r = base();
        r.endpoint = "x".repeat(1000);
        assert!(matches!(
            bound_record(r, 10, &FieldLimits::default()),
            Err(AuditError::RecordTooLarge { max: 10, .. })
        ));
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            proptest::collection::vec(any::<char>(), 0..2000).prop_map(String::from_iter),
            "[\u{0}-\u{7f}\u{300}-\u{36f}\u{4e00}-\u{4e20}\u{1f600}-\u{1f64f}]{0,1500}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn cutting_any_text_is_valid_bounded_and_provable(s in any_text(), limit in 0usize..600) {
            match cut_text(&s, limit) {
                None => prop_assert!(s.chars().count() <= limit),
                Some(cut) => {
                    prop_assert!(s.chars().count() > limit);
                    prop_assert!(cut.chars().count() <= limit.max(MARKER_CHARS));
                    let marker = format!("…[cut sha256:{}]", sha16(&s));
                    let prefix = cut.strip_suffix(&marker);
                    prop_assert!(prefix.is_some());
                    prop_assert!(s.starts_with(prefix.unwrap_or_default()));
                }
            }
        }

        #[test]
        fn any_record_is_stored_within_the_cap(
            texts in proptest::collection::vec(any_text(), 6),
            list_len in 0usize..400,
            cap in MIN_RECORD_BYTES..20_000,
        ) {
            let mut r = base();
            r.endpoint = texts[0].clone();
            r.outcome = texts[1].clone();
            r.purpose = Some(texts[2].clone());
            r.actor.name = texts[3].clone();
            r.entities = vec![texts[4].clone(); list_len];
            r.residents = vec![texts[5].clone(); list_len / 2];
            let limits = FieldLimits::default();
            let (mut stored, _) = bound_record(r, cap, &limits).unwrap();
            stored.seq = u64::MAX;
            let bytes = stored.canonical_bytes().unwrap();
            prop_assert!(bytes.len() <= cap);
            let back = AuditRecord::from_canonical_bytes(&bytes).unwrap();
            prop_assert_eq!(&back, &stored);
            prop_assert!(back.endpoint.chars().count() <= limits.text_chars);
            prop_assert!(back.entities.len() <= limits.max_entities);
            prop_assert!(back.entities.iter().all(|e| e.chars().count() <= limits.item_chars));
        }
    }
}
