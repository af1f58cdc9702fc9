//! The binary encoding of a stored source row.
//!
//! Guarantees:
//! - A row written by [`encode`] decodes to the same [`StoredSource`] (tested field by
//!   field), and rows written as JSON by earlier versions still decode: the first byte tells
//!   them apart (`{` for JSON, [`MARKER`] for this encoding), so a store upgrades row by row
//!   as rows are rewritten, with no migration pass.
//! - Decoding never panics and never reads past the input: a truncated or altered row is a
//!   [`StoreError::Corrupt`] naming the row key, never a partial record.
//! - The row key carries the department, kind and source id, so the encoding leaves them
//!   out; sealed fields and the digest are raw bytes (JSON needed base64), and the version
//!   and times are integers.
//!
//! Layout after the marker: flags (bit 0 deleted, bit 1 grid present), version (tag 0 and a
//! varint counter, or tag 1 and a time), entity, grid if present, received time, batch id,
//! digest, the clear fields (count, then name and JSON value), the sealed fields (count,
//! then name and ciphertext), the links (count, then link). Strings and byte strings are a
//! varint length and the bytes; a time is seconds (i64, little-endian) and nanoseconds (u32).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use model::record::Version;
use model::{Department, RecordKind};

use crate::store::{StoreError, StoredSource};

/// First byte of a row in this encoding (a JSON row starts with `{`).
pub const MARKER: u8 = 0xB1;

const DELETED: u8 = 1;
const HAS_GRID: u8 = 2;
const IDENTIFIED: u8 = 4;
/// The link by which rows written before [`StoredSource::identified`] existed said so.
const OLD_IDENTIFIED_LINK: &str = "blind:id_number:";

/// The row's bytes.
pub fn encode(source: &StoredSource) -> Vec<u8> {
    let sealed_len: usize = source.sealed.values().map(|v| v.len() + 16).sum();
    let links_len: usize = source.links.iter().map(|l| l.len() + 2).sum();
    let mut out = Vec::with_capacity(96 + sealed_len + links_len);
    out.push(MARKER);
    let mut flags = 0;
    if source.deleted {
        flags |= DELETED;
    }
    if source.grid.is_some() {
        flags |= HAS_GRID;
    }
    if source.identified {
        flags |= IDENTIFIED;
    }
    out.push(flags);
    match &source.version {
        Version::Counter(n) => {
            out.push(0);
            put_varint(&mut out, *n);
        }
        Version::Time(t) => {
            out.push(1);
            put_time(&mut out, t);
        }
    }
    put_bytes(&mut out, source.entity.as_bytes());
    if let Some(grid) = &source.grid {
        put_bytes(&mut out, grid.as_bytes());
    }
    put_time(&mut out, &source.received_at);
    put_bytes(&mut out, source.batch_id.as_bytes());
    put_bytes(&mut out, &source.digest);
    put_varint(&mut out, source.clear.len() as u64);
    for (name, value) in &source.clear {
        put_bytes(&mut out, name.as_bytes());
        // A `Value` always serialises.
        put_bytes(&mut out, value.to_string().as_bytes());
    }
    put_varint(&mut out, source.sealed.len() as u64);
    for (name, sealed) in &source.sealed {
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, sealed);
    }
    put_varint(&mut out, source.links.len() as u64);
    for link in &source.links {
        put_bytes(&mut out, link.as_bytes());
    }
    out
}

/// The row stored under `key` (`department/kind/source_id`), in either encoding.
pub fn decode(key: &str, bytes: &[u8]) -> Result<StoredSource, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    match bytes.first() {
        Some(b'{') => {
            let mut source: StoredSource =
                serde_json::from_slice(bytes).map_err(|err| corrupt(&err.to_string()))?;
            source.identified = source.identified
                || source
                    .links
                    .iter()
                    .any(|l| l.starts_with(OLD_IDENTIFIED_LINK));
            Ok(source)
        }
        Some(&MARKER) => {
            let (department, kind, source_id) =
                split_key(key).ok_or_else(|| corrupt("row key is not department/kind/id"))?;
            let mut reader = Reader { bytes: &bytes[1..] };
            reader
                .source(department, kind, source_id)
                .ok_or_else(|| corrupt("binary row is truncated or malformed"))
        }
        _ => Err(corrupt("unknown row encoding")),
    }
}

fn split_key(key: &str) -> Option<(Department, RecordKind, &str)> {
    let mut parts = key.splitn(3, '/');
    let department = Department::parse(parts.next()?).ok()?;
    let kind = RecordKind::parse(parts.next()?)?;
    Some((department, kind, parts.next()?))
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_time(out: &mut Vec<u8>, time: &DateTime<Utc>) {
    out.extend_from_slice(&time.timestamp().to_le_bytes());
    out.extend_from_slice(&time.timestamp_subsec_nanos().to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn source(
        &mut self,
        department: Department,
        kind: RecordKind,
        source_id: &str,
    ) -> Option<StoredSource> {
        let flags = self.byte()?;
        if flags & !(DELETED | HAS_GRID | IDENTIFIED) != 0 {
            return None;
        }
        let version = match self.byte()? {
            0 => Version::Counter(self.varint()?),
            1 => Version::Time(self.time()?),
            _ => return None,
        };
        let entity = self.string()?;
        let grid = if flags & HAS_GRID != 0 {
            Some(self.string()?)
        } else {
            None
        };
        let received_at = self.time()?;
        let batch_id = self.string()?;
        let digest = self.bytes()?.to_vec();
        let mut clear = BTreeMap::new();
        for _ in 0..self.count()? {
            let name = self.string()?;
            let value = serde_json::from_slice(self.bytes()?).ok()?;
            clear.insert(name, value);
        }
        let mut sealed = BTreeMap::new();
        for _ in 0..self.count()? {
            let name = self.string()?;
            sealed.insert(name, self.bytes()?.to_vec());
        }
        let count = self.count()?;
        let mut links = Vec::with_capacity(count);
        for _ in 0..count {
            links.push(self.string()?);
        }
        if !self.bytes.is_empty() {
            return None;
        }
        Some(StoredSource {
            kind,
            department,
            source_id: source_id.to_owned(),
            version,
            deleted: flags & DELETED != 0,
            identified: flags & IDENTIFIED != 0,
            entity,
            grid,
            received_at,
            batch_id,
            digest,
            clear,
            sealed,
            links,
        })
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn varint(&mut self) -> Option<u64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    /// A length or count: never more than the bytes left (each item takes at least one).
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.varint()?).ok()?;
        (n <= self.bytes.len()).then_some(n)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.count()?;
        self.take(n)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }

    fn time(&mut self) -> Option<DateTime<Utc>> {
        let secs = i64::from_le_bytes(self.take(8)?.try_into().ok()?);
        let nanos = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        DateTime::from_timestamp(secs, nanos)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(version: Version, grid: Option<&str>, deleted: bool) -> StoredSource {
        StoredSource {
            kind: RecordKind::Resident,
            department: Department::Minzheng,
            source_id: "MZ/2026/0001".to_owned(),
            version,
            deleted,
            identified: !deleted,
            entity: "r_0123456789abcdef0123".to_owned(),
            grid: grid.map(str::to_owned),
            received_at: DateTime::from_timestamp(1_790_000_000, 123_456_789).unwrap(),
            batch_id: "b_42".to_owned(),
            digest: (0..32).collect(),
            clear: BTreeMap::from([
                ("status".to_owned(), json!("open")),
                ("refs".to_owned(), json!({"a": [1, 2.5, null, true]})),
            ]),
            sealed: BTreeMap::from([
                ("name".to_owned(), vec![0, 1, 2, 255]),
                ("id_number".to_owned(), vec![7; 300]),
            ]),
            links: vec![
                "entity:r_0123456789abcdef0123".to_owned(),
                "block:00ff".to_owned(),
            ],
        }
    }

    fn same(a: &StoredSource, b: &StoredSource) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }

    #[test]
    fn every_field_comes_back() {
        let versions = [
            Version::Counter(0),
            Version::Counter(u64::MAX),
            Version::Time(DateTime::from_timestamp(-5, 999_999_999).unwrap()),
            Version::Time(DateTime::from_timestamp(4_000_000_000, 0).unwrap()),
        ];
        for version in versions {
            for (grid, deleted) in [(Some("110105001001003"), false), (None, true)] {
                let source = sample(version.clone(), grid, deleted);
                let bytes = encode(&source);
                assert_eq!(bytes[0], MARKER);
                same(&decode(&source.key(), &bytes).unwrap(), &source);
            }
        }
    }

    #[test]
    fn rows_written_as_json_still_decode() {
        let source = sample(Version::Counter(3), Some("110105001001003"), false);
        let json = serde_json::to_vec(&source).unwrap();
        same(&decode(&source.key(), &json).unwrap(), &source);
    }

    #[test]
    fn an_old_json_row_is_identified_by_its_id_number_link() {
        let mut old = serde_json::to_value(sample(Version::Counter(3), None, false)).unwrap();
        old.as_object_mut().unwrap().remove("identified");
        let key = "minzheng/resident/MZ-1";
        let plain = serde_json::to_vec(&old).unwrap();
        assert!(!decode(key, &plain).unwrap().identified);
        old["links"]
            .as_array_mut()
            .unwrap()
            .push(json!(format!("{OLD_IDENTIFIED_LINK}{}", "ab".repeat(32))));
        let linked = serde_json::to_vec(&old).unwrap();
        assert!(decode(key, &linked).unwrap().identified);
    }

    #[test]
    fn smaller_than_the_json_it_replaces() {
        let source = sample(Version::Counter(3), Some("110105001001003"), false);
        let binary = encode(&source).len();
        let json = serde_json::to_vec(&source).unwrap().len();
        assert!(binary * 10 < json * 7, "binary {binary} B, JSON {json} B");
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error_or_a_row_never_a_panic() {
        let source = sample(Version::Counter(3), Some("110105001001003"), false);
        let key = source.key();
        let bytes = encode(&source);
        for cut in 0..bytes.len() {
            let err = decode(&key, &bytes[..cut]).unwrap_err();
            assert!(err.to_string().contains(&key), "{err}");
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut altered = bytes.clone();
                altered[at] ^= flip;
                let _ = decode(&key, &altered);
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&key, &longer).is_err());
    }

    #[test]
    fn a_huge_length_is_refused_before_any_allocation() {
        let mut bytes = vec![MARKER, 0, 0, 1];
        put_varint(&mut bytes, u64::MAX);
        assert!(decode("minzheng/resident/X", &bytes).is_err());
        let mut bytes = vec![MARKER, 0, 0, 1];
        put_varint(&mut bytes, 1 << 40);
        assert!(decode("minzheng/resident/X", &bytes).is_err());
    }

    #[test]
    fn the_identity_comes_from_the_key() {
        let source = sample(Version::Counter(3), None, false);
        let bytes = encode(&source);
        let moved = decode("gongan/house/H-1", &bytes).unwrap();
        assert_eq!(moved.department, Department::Gongan);
        assert_eq!(moved.kind, RecordKind::House);
        assert_eq!(moved.source_id, "H-1");
        assert!(decode("nowhere/resident/X", &bytes).is_err());
        assert!(decode("gongan/planet/X", &bytes).is_err());
        assert!(decode("gongan", &bytes).is_err());
    }
}
