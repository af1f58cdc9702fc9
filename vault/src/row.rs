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
//! - Rows are written in the second binary layout ([`MARKER`]); rows of the first ([`MARKER_V1`])
//!   still decode. The second spells the same strings and bytes shorter, losslessly: field
//!   names by their place in [`FIELD_NAMES`], identifiers such as `r_` + 20 hex digits as a
//!   letter and their bytes, links as a prefix number of [`LINK_PREFIXES`] and the hash or
//!   identifier they carry as bytes (the row's own `entity:` link as one byte), and a sealed
//!   field's header as a varint key version. Anything not in those shapes is written in full,
//!   so a name or link added later needs no change here (the tables only ever grow at the end).
//!
//! Layout after the marker: flags (bit 0 deleted, bit 1 grid present, bit 2 identified),
//! version (tag 0 and a varint counter, or tag 1 and a time), entity, grid if present, received
//! time, batch id, digest, the clear fields (count, then name and JSON value), the sealed
//! fields (count, then name and ciphertext), the links (count, then link). Strings and byte
//! strings are a varint length and the bytes; a time is seconds (i64, little-endian) and
//! nanoseconds (u32). In the second layout the entity and batch id are identifiers, each name
//! a name, each ciphertext a sealed value and each link a link, as [`Writer`] spells them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use model::record::Version;
use model::{Department, RecordKind};

use crate::store::{StoreError, StoredSource};

/// First byte of a row in the layout written today (a JSON row starts with `{`).
pub const MARKER: u8 = 0xB2;
/// First byte of a row in the first binary layout (read, no longer written).
pub const MARKER_V1: u8 = 0xB1;

/// Field names written as their place in this list (plus one; 0 is a name in full). Only ever
/// append: a row stores the number.
pub const FIELD_NAMES: &[&str] = &[
    "name",
    "gender",
    "birth_date",
    "ethnicity",
    "phone",
    "id_number",
    "hukou_address",
    "address",
    "tags",
    "attributes",
    "documents",
    "house_source_id",
    "usage",
    "owner_id_number",
    "event_type",
    "title",
    "description",
    "occurred_at",
    "status",
    "party_id_numbers",
    "party_entities",
    "routed_to",
    "reported_by",
    "history",
    "uscc",
    "type",
    "legal_rep_id_number",
    "id_number_legacy",
    "grid",
];

/// Link prefixes written as their place in this list. Only ever append. No prefix is the
/// start of another.
pub const LINK_PREFIXES: &[&str] = &[
    "entity:",
    "block:",
    "addr:",
    "addrc:",
    "addrp:",
    "party:",
    "occupant:",
    "owner:",
    "legal-rep:",
    "house-event:",
];

const _: () = assert!(LINK_PREFIXES.len() * 3 < LINK_IN_FULL as usize);

/// A link token: the row's own `entity:` link.
const LINK_OWN_ENTITY: u8 = 0;
/// A link token: the whole link as a string.
const LINK_IN_FULL: u8 = 255;
/// Link token `1 + 3 * prefix + shape`: after the prefix, 32 lowercase hex digits (16 bytes
/// follow) ...
const SHAPE_HASH: u8 = 0;
/// ... an identifier (see [`Writer::id`]) ...
const SHAPE_ID: u8 = 1;
/// ... or any other string.
const SHAPE_TEXT: u8 = 2;
/// The leading byte of a sealed field ([`crate::crypto`]'s format 1: the key version as 4
/// big-endian bytes follows), which the second layout writes as a varint.
const SEALED_FORMAT: u8 = 1;

const DELETED: u8 = 1;
const HAS_GRID: u8 = 2;
const IDENTIFIED: u8 = 4;
/// The link by which rows written before [`StoredSource::identified`] existed said so.
const OLD_IDENTIFIED_LINK: &str = "blind:id_number:";

/// The row's bytes.
pub fn encode(source: &StoredSource) -> Vec<u8> {
    let sealed_len: usize = source.sealed.values().map(|v| v.len() + 4).sum();
    let links_len: usize = source.links.len() * 18;
    let mut out = Writer(Vec::with_capacity(96 + sealed_len + links_len));
    out.0.push(MARKER);
    out.flags_and_version(source);
    out.id(&source.entity);
    if let Some(grid) = &source.grid {
        out.bytes(grid.as_bytes());
    }
    out.time(&source.received_at);
    out.id(&source.batch_id);
    out.bytes(&source.digest);
    out.varint(source.clear.len() as u64);
    for (name, value) in &source.clear {
        out.name(name);
        // A `Value` always serialises.
        out.bytes(value.to_string().as_bytes());
    }
    out.varint(source.sealed.len() as u64);
    for (name, sealed) in &source.sealed {
        out.name(name);
        out.sealed(sealed);
    }
    out.varint(source.links.len() as u64);
    for link in &source.links {
        out.link(link, &source.entity);
    }
    out.0
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
        Some(&marker @ (MARKER | MARKER_V1)) => {
            let (department, kind, source_id) =
                split_key(key).ok_or_else(|| corrupt("row key is not department/kind/id"))?;
            let mut reader = Reader {
                bytes: &bytes[1..],
                compact: marker == MARKER,
            };
            reader
                .source(department, kind, source_id)
                .ok_or_else(|| corrupt("binary row is truncated or malformed"))
        }
        _ => Err(corrupt("unknown row encoding")),
    }
}

/// Whether the row stored under `key` is deleted, and its grid: read from the head of the
/// row without decoding the rest (a JSON row is decoded whole). The same errors as [`decode`]
/// for a head that does not parse; the rest of the row is not checked.
pub fn decode_head(key: &str, bytes: &[u8]) -> Result<(bool, Option<String>), StoreError> {
    let corrupt = || StoreError::Corrupt {
        key: key.to_owned(),
        reason: "binary row is truncated or malformed".to_owned(),
    };
    match bytes.first() {
        Some(&marker @ (MARKER | MARKER_V1)) => {
            let mut reader = Reader {
                bytes: &bytes[1..],
                compact: marker == MARKER,
            };
            reader.head().ok_or_else(corrupt)
        }
        _ => decode(key, bytes).map(|source| (source.deleted, source.grid)),
    }
}

fn split_key(key: &str) -> Option<(Department, RecordKind, &str)> {
    let mut parts = key.splitn(3, '/');
    let department = Department::parse(parts.next()?).ok()?;
    let kind = RecordKind::parse(parts.next()?)?;
    Some((department, kind, parts.next()?))
}

/// The row's bytes as they are written.
struct Writer(Vec<u8>);

impl Writer {
    /// The flags byte and the version, the same in both layouts.
    fn flags_and_version(&mut self, source: &StoredSource) {
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
        self.0.push(flags);
        match &source.version {
            Version::Counter(n) => {
                self.0.push(0);
                self.varint(*n);
            }
            Version::Time(t) => {
                self.0.push(1);
                self.time(t);
            }
        }
    }

    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn time(&mut self, time: &DateTime<Utc>) {
        self.0.extend_from_slice(&time.timestamp().to_le_bytes());
        self.0
            .extend_from_slice(&time.timestamp_subsec_nanos().to_le_bytes());
    }

    /// An identifier: a lowercase letter, `_` and an even number (2 to 64) of lowercase hex
    /// digits (`r_…`, `b_…`) is tag 1, the letter and the digits' bytes; anything else tag 0
    /// and the string.
    fn id(&mut self, id: &str) {
        if let Some((letter, raw)) = id_shape(id) {
            self.0.push(1);
            self.0.push(letter);
            self.bytes(&raw);
        } else {
            self.0.push(0);
            self.bytes(id.as_bytes());
        }
    }

    fn name(&mut self, name: &str) {
        match FIELD_NAMES.iter().position(|n| *n == name) {
            Some(at) => self.varint(at as u64 + 1),
            None => {
                self.varint(0);
                self.bytes(name.as_bytes());
            }
        }
    }

    /// A sealed field: tag 1, the key version as a varint and the rest, when it has the
    /// crypto module's format-1 header; tag 0 and the bytes as they are otherwise.
    fn sealed(&mut self, sealed: &[u8]) {
        match sealed {
            [SEALED_FORMAT, a, b, c, d, body @ ..] => {
                self.0.push(1);
                self.varint(u64::from(u32::from_be_bytes([*a, *b, *c, *d])));
                self.bytes(body);
            }
            _ => {
                self.0.push(0);
                self.bytes(sealed);
            }
        }
    }

    fn link(&mut self, link: &str, entity: &str) {
        if link.strip_prefix("entity:") == Some(entity) {
            self.0.push(LINK_OWN_ENTITY);
            return;
        }
        let Some((at, rest)) = LINK_PREFIXES
            .iter()
            .enumerate()
            .find_map(|(at, prefix)| link.strip_prefix(prefix).map(|rest| (at, rest)))
        else {
            self.0.push(LINK_IN_FULL);
            self.bytes(link.as_bytes());
            return;
        };
        // At most 10 prefixes * 3 shapes: the token stays below `LINK_IN_FULL`.
        let token = 1 + 3 * at as u8;
        let mut hash = [0u8; 16];
        if rest.len() == 32 && is_lower_hex(rest) && hex::decode_to_slice(rest, &mut hash).is_ok() {
            self.0.push(token + SHAPE_HASH);
            self.0.extend_from_slice(&hash);
        } else if id_shape(rest).is_some() {
            self.0.push(token + SHAPE_ID);
            self.id(rest);
        } else {
            self.0.push(token + SHAPE_TEXT);
            self.bytes(rest.as_bytes());
        }
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `x_` + 2 to 64 lowercase hex digits, even in number: the letter and the digits' bytes.
fn id_shape(id: &str) -> Option<(u8, Vec<u8>)> {
    match id.as_bytes() {
        [letter @ b'a'..=b'z', b'_', rest @ ..]
            if !rest.is_empty() && rest.len() % 2 == 0 && rest.len() <= 64 =>
        {
            let digits = &id[2..];
            if !is_lower_hex(digits) {
                return None;
            }
            hex::decode(digits).ok().map(|raw| (*letter, raw))
        }
        _ => None,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// The second layout (identifiers, names, sealed values and links spelled short).
    compact: bool,
}

impl<'a> Reader<'a> {
    /// Flags, version, entity and grid: (deleted, grid).
    fn head(&mut self) -> Option<(bool, Option<String>)> {
        let flags = self.byte()?;
        if flags & !(DELETED | HAS_GRID | IDENTIFIED) != 0 {
            return None;
        }
        match self.byte()? {
            0 => {
                self.varint()?;
            }
            1 => {
                self.time()?;
            }
            _ => return None,
        }
        self.id()?;
        let grid = if flags & HAS_GRID != 0 {
            Some(self.string()?)
        } else {
            None
        };
        Some((flags & DELETED != 0, grid))
    }

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
        let entity = self.id()?;
        let grid = if flags & HAS_GRID != 0 {
            Some(self.string()?)
        } else {
            None
        };
        let received_at = self.time()?;
        let batch_id = self.id()?;
        let digest = self.bytes()?.to_vec();
        let mut clear = BTreeMap::new();
        for _ in 0..self.count()? {
            let name = self.name()?;
            let value = serde_json::from_slice(self.bytes()?).ok()?;
            clear.insert(name, value);
        }
        let mut sealed = BTreeMap::new();
        for _ in 0..self.count()? {
            let name = self.name()?;
            let value = self.sealed()?;
            sealed.insert(name, value);
        }
        let count = self.count()?;
        let mut links = Vec::with_capacity(count);
        for _ in 0..count {
            links.push(self.link(&entity)?);
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

    /// An identifier ([`Writer::id`]); a plain string in the first layout.
    fn id(&mut self) -> Option<String> {
        if !self.compact {
            return self.string();
        }
        match self.byte()? {
            0 => self.string(),
            1 => {
                let letter = self.byte()?;
                if !letter.is_ascii_lowercase() {
                    return None;
                }
                let raw = self.bytes()?;
                if raw.is_empty() || raw.len() > 32 {
                    return None;
                }
                Some(format!("{}_{}", letter as char, hex::encode(raw)))
            }
            _ => None,
        }
    }

    fn name(&mut self) -> Option<String> {
        if !self.compact {
            return self.string();
        }
        match usize::try_from(self.varint()?).ok()? {
            0 => self.string(),
            at => FIELD_NAMES.get(at - 1).map(|n| (*n).to_owned()),
        }
    }

    fn sealed(&mut self) -> Option<Vec<u8>> {
        if !self.compact {
            return self.bytes().map(<[u8]>::to_vec);
        }
        match self.byte()? {
            0 => self.bytes().map(<[u8]>::to_vec),
            1 => {
                let version = u32::try_from(self.varint()?).ok()?;
                let body = self.bytes()?;
                let mut out = Vec::with_capacity(5 + body.len());
                out.push(SEALED_FORMAT);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(body);
                Some(out)
            }
            _ => None,
        }
    }

    fn link(&mut self, entity: &str) -> Option<String> {
        if !self.compact {
            return self.string();
        }
        let token = self.byte()?;
        match token {
            LINK_OWN_ENTITY => return Some(format!("entity:{entity}")),
            LINK_IN_FULL => return self.string(),
            _ => {}
        }
        let prefix = LINK_PREFIXES.get(usize::from((token - 1) / 3))?;
        let rest = match (token - 1) % 3 {
            SHAPE_HASH => {
                let raw = self.take(16)?;
                hex::encode(raw)
            }
            SHAPE_ID => self.id()?,
            _ => self.string()?,
        };
        Some(format!("{prefix}{rest}"))
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
        // The same for the second layout's short spellings.
        let source = typical();
        let bytes = encode(&source);
        for cut in 0..bytes.len() {
            assert!(decode(&key, &bytes[..cut]).is_err());
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut altered = bytes.clone();
                altered[at] ^= flip;
                let _ = decode(&key, &altered);
            }
        }
    }

    #[test]
    fn a_huge_length_is_refused_before_any_allocation() {
        // Flags, version tag, counter, then the entity's length (in the second layout after
        // its tag 0, "a string").
        for head in [vec![MARKER_V1, 0, 0, 1], vec![MARKER, 0, 0, 1, 0]] {
            for huge in [u64::MAX, 1 << 40] {
                let mut bytes = Writer(head.clone());
                bytes.varint(huge);
                assert!(decode("minzheng/resident/X", &bytes.0).is_err());
            }
        }
    }

    /// The first binary layout, as the writer of the previous version spelled it.
    fn encode_v1(source: &StoredSource) -> Vec<u8> {
        let mut out = Writer(vec![MARKER_V1]);
        out.flags_and_version(source);
        out.bytes(source.entity.as_bytes());
        if let Some(grid) = &source.grid {
            out.bytes(grid.as_bytes());
        }
        out.time(&source.received_at);
        out.bytes(source.batch_id.as_bytes());
        out.bytes(&source.digest);
        out.varint(source.clear.len() as u64);
        for (name, value) in &source.clear {
            out.bytes(name.as_bytes());
            out.bytes(value.to_string().as_bytes());
        }
        out.varint(source.sealed.len() as u64);
        for (name, sealed) in &source.sealed {
            out.bytes(name.as_bytes());
            out.bytes(sealed);
        }
        out.varint(source.links.len() as u64);
        for link in &source.links {
            out.bytes(link.as_bytes());
        }
        out.0
    }

    /// A row as the broker writes them: sealed fields with the crypto header, hashed links,
    /// identifiers.
    fn typical() -> StoredSource {
        let mut source = sample(Version::Counter(7), Some("110105001001003"), false);
        let sealed = |len: usize| {
            let mut v = vec![SEALED_FORMAT, 0, 0, 0, 3];
            v.extend((0..len).map(|i| (i * 37) as u8));
            v
        };
        source.batch_id = format!("b_{}", "0a1b2c".repeat(4));
        source.sealed = BTreeMap::from([
            ("name".to_owned(), sealed(34)),
            ("id_number".to_owned(), sealed(48)),
            ("address".to_owned(), sealed(90)),
            ("a_field_added_later".to_owned(), sealed(30)),
        ]);
        source.links = vec![
            format!("entity:{}", source.entity),
            format!("block:{}", "0f".repeat(16)),
            format!("block:{}", "e1".repeat(16)),
            format!("addr:{}", "9a".repeat(16)),
            format!("addrc:{}", "77".repeat(16)),
            "occupant:h_00112233445566778899".to_owned(),
            "party:r_ffeeddccbbaa99887766".to_owned(),
            "house-event:some house".to_owned(),
        ];
        source
    }

    #[test]
    fn the_second_layout_is_much_smaller_and_the_first_still_reads() {
        let source = typical();
        let v1 = encode_v1(&source);
        let v2 = encode(&source);
        assert_eq!(v2[0], MARKER);
        same(&decode(&source.key(), &v1).unwrap(), &source);
        same(&decode(&source.key(), &v2).unwrap(), &source);
        // The links alone are 260 characters in the first layout.
        assert!(
            v2.len() + 200 < v1.len(),
            "v1 {} B, v2 {} B",
            v1.len(),
            v2.len()
        );
    }

    #[test]
    fn shapes_that_look_alike_come_back_exactly() {
        let mut source = typical();
        source.entity = "R_0123".to_owned();
        source.batch_id = "b_0".to_owned();
        source.links = vec![
            // Another entity's `entity:` link, and this one's in full form.
            "entity:r_00".to_owned(),
            "entity:R_0123".to_owned(),
            // Uppercase, 31 and 33 digits, non-hex: not hashes.
            format!("block:{}", "AB".repeat(16)),
            format!("block:{}", "a".repeat(31)),
            format!("block:{}", "a".repeat(33)),
            format!("block:{}g", "a".repeat(31)),
            // Identifiers too long, odd, empty, with an uppercase letter.
            format!("party:r_{}", "00".repeat(33)),
            format!("party:r_{}", "00".repeat(32)),
            "party:r_abc".to_owned(),
            "party:r_".to_owned(),
            "party:R_00".to_owned(),
            // No known prefix, an empty one, a prefix alone, non-ASCII.
            "blind:id_number:00".to_owned(),
            String::new(),
            "addr:".to_owned(),
            "house-event:网格 1".to_owned(),
            "addrp:ab:cd".to_owned(),
        ];
        source.sealed = BTreeMap::from([
            (String::new(), vec![]),
            (
                "name".to_owned(),
                vec![SEALED_FORMAT, 0xff, 0xff, 0xff, 0xff],
            ),
            ("gender".to_owned(), vec![SEALED_FORMAT, 0, 0]),
            ("phone".to_owned(), vec![2, 0, 0, 0, 1, 9, 9]),
        ]);
        source.clear = BTreeMap::from([
            ("status".to_owned(), json!("open")),
            ("状态".to_owned(), json!(null)),
        ]);
        let bytes = encode(&source);
        same(&decode(&source.key(), &bytes).unwrap(), &source);
    }

    proptest::proptest! {
        #[test]
        fn any_row_comes_back(
            entity in "([a-z]_[0-9a-f]{0,66}|.{0,30})",
            batch in "([a-z]_[0-9a-f]{0,30}|.{0,10})",
            links in proptest::collection::vec(
                "(entity|block|addr|addrc|addrp|party|occupant|owner|legal-rep|house-event|blind|x)?:?([0-9a-f]{32}|[a-z]_[0-9a-f]{0,24}|.{0,12})",
                0..12,
            ),
            names in proptest::collection::vec("(name|phone|status|tags|.{0,8})", 0..6),
            sealed in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 0..6),
            own in proptest::prelude::any::<bool>(),
        ) {
            let mut source = typical();
            source.entity = entity;
            source.batch_id = batch;
            source.links = links;
            if own {
                source.links.push(format!("entity:{}", source.entity));
            }
            source.sealed = names.iter().cloned().zip(sealed).collect();
            source.clear = names.into_iter().map(|n| (n, json!(1))).collect();
            let bytes = encode(&source);
            let back = decode(&source.key(), &bytes).unwrap();
            proptest::prop_assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&source).unwrap()
            );
        }
    }

    #[test]
    fn the_head_says_what_the_whole_row_says() {
        for (grid, deleted) in [(Some("110105001001003"), false), (None, true)] {
            let source = sample(Version::Counter(3), grid, deleted);
            let expected = (deleted, grid.map(str::to_owned));
            for bytes in [
                encode(&source),
                encode_v1(&source),
                serde_json::to_vec(&source).unwrap(),
            ] {
                assert_eq!(decode_head(&source.key(), &bytes).unwrap(), expected);
            }
            let bytes = encode(&source);
            assert!(decode_head(&source.key(), &bytes[..4]).is_err());
            assert!(decode_head(&source.key(), &[]).is_err());
        }
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
