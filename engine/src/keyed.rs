//! The keyed identifiers and lookup links of the engine: unified entity ids (keyed hashes of
//! an ID number, a house or event source, or a stand-alone row), blind-index links of ID
//! numbers and phones, and the linkage blocking links.
//!
//! Guarantees: every value here is a keyed hash (the entity-id key or the blind-index key),
//! never a plaintext identifier; the same input under the same key gives the same id or link
//! in every process, so ids and links can be stored and looked up; [`blind_keyed_links`] is
//! exactly the set a blind-index key rotation or a text-normalisation upgrade re-computes.

use model::{Department, IdNumber, RecordKind, ResidentRecord};
use vault::crypto::KeyRing;
use vault::store::StoredSource;

use crate::linkage::{blocking_keys, LinkRecord};

/// The unified id of the resident with this ID number.
pub fn resident_entity_id(keys: &KeyRing, id: &IdNumber) -> String {
    entity_id(keys, "r", "resident", id.as_str())
}

/// The unified id of the house with this source id.
pub fn house_entity_id(keys: &KeyRing, house_source_id: &str) -> String {
    entity_id(keys, "h", "house", house_source_id)
}

/// The unified id of a resident row that stands alone (no ID number, not linked).
pub fn source_entity_id(keys: &KeyRing, row: &str) -> String {
    entity_id(keys, "r", "resident-source", row)
}

/// The unified id of the event with this row key.
pub fn event_entity_id(keys: &KeyRing, department: Department, source_id: &str) -> String {
    event_row_entity_id(
        keys,
        &StoredSource::row_key(department, RecordKind::Event, source_id),
    )
}

/// The unified id of the event stored under this row key.
pub fn event_row_entity_id(keys: &KeyRing, row: &str) -> String {
    entity_id(keys, "e", "event", row)
}

fn entity_id(keys: &KeyRing, prefix: &str, domain: &str, value: &str) -> String {
    let hash = keys.entity_hash(domain, value);
    format!("{prefix}_{}", hex::encode(&hash[..10]))
}

/// Link key of the blind index of an ID number.
pub fn blind_link(keys: &KeyRing, domain: &str, normalised: &str) -> String {
    format!(
        "blind:{domain}:{}",
        hex::encode(keys.blind_index(domain, normalised))
    )
}

/// The links of a resident that the blind-index key computes: the blind indexes of its ID
/// number and phone and its linkage blocking keys. A blind-index key rotation re-computes
/// exactly these ([`crate::rotation::reblind`]); everything else about a row stays.
pub fn blind_keyed_links(
    keys: &KeyRing,
    department: Department,
    row: &str,
    body: &ResidentRecord,
) -> Vec<String> {
    let mut links = Vec::new();
    if let Some(id) = &body.id_number {
        links.push(blind_link(keys, "id_number", id.as_str()));
    }
    if let Some(phone) = &body.phone {
        links.push(blind_link(keys, "phone", &phone.digits()));
    }
    links.extend(block_links(keys, department, row, body));
    links
}

/// Whether a link is one of [`blind_keyed_links`].
pub fn is_blind_keyed_link(link: &str) -> bool {
    link.starts_with("blind:") || link.starts_with("block:")
}

/// The keyed `block:` links of a resident record.
pub fn block_links(
    keys: &KeyRing,
    department: Department,
    row: &str,
    body: &ResidentRecord,
) -> Vec<String> {
    let record = LinkRecord::from_resident(department, row, body);
    blocking_keys(&record)
        .into_iter()
        .map(|key| block_link(&keys.blind_index(BLOCK_DOMAIN, &key)))
        .collect()
}

/// The `block:` links to look candidates up by: the record's blocking keys under the current
/// blind-index key and, while a rotation is re-computing stored links, under the older ones.
pub fn block_lookup_links(keys: &KeyRing, record: &LinkRecord) -> Vec<String> {
    blocking_keys(record)
        .into_iter()
        .flat_map(|key| keys.blind_indexes(BLOCK_DOMAIN, &key))
        .map(|hash| block_link(&hash))
        .collect()
}

const BLOCK_DOMAIN: &str = "linkage-block";

fn block_link(hash: &[u8; 32]) -> String {
    format!("block:{}", hex::encode(&hash[..16]))
}
