//! The keyed identifiers and lookup links of the engine: unified entity ids (keyed hashes of
//! an ID number, a house or event source, an organization's credit code, or a stand-alone row), blind-index links of ID
//! numbers and phones, and the linkage blocking links.
//!
//! Guarantees: every value here is a keyed hash (the entity-id key or the blind-index key),
//! never a plaintext identifier; the same input under the same key gives the same id or link
//! in every process, so ids and links can be stored and looked up; [`blind_keyed_links`] is
//! exactly the set a blind-index key rotation or a text-normalisation upgrade re-computes.

use model::{Department, IdNumber, RecordKind, ResidentRecord, Uscc};
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

/// The unified id of the organization with this unified social credit code.
pub fn organization_entity_id(keys: &KeyRing, uscc: &Uscc) -> String {
    entity_id(keys, "o", "organization", uscc.as_str())
}

/// The unified id of an organization row without a credit code (it merges with nothing).
pub fn organization_row_entity_id(keys: &KeyRing, row: &str) -> String {
    entity_id(keys, "o", "organization-source", row)
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

/// Link key of the blind index of `normalised` in `domain`.
pub fn blind_link(keys: &KeyRing, domain: &str, normalised: &str) -> String {
    blind_link_of(domain, &keys.blind_index(domain, normalised))
}

fn blind_link_of(domain: &str, hash: &[u8; 32]) -> String {
    format!("blind:{domain}:{}", hex::encode(hash))
}

/// The links of a resident that the blind-index key computes: the blind index of each
/// identity document (`documents[]`, by the document's stable number) and its linkage
/// blocking keys. A blind-index key rotation re-computes exactly these
/// ([`crate::rotation::reblind`]); everything else about a row stays.
///
/// The ID number and the phone have no link: nothing looks a row up by them (a record
/// with an ID number joins the entity its ID names, and search keeps its own blind
/// terms), so such links cost a write per record and the space for nothing. Rows stored
/// with them lose them when their keyed links are next re-computed.
pub fn blind_keyed_links(
    keys: &KeyRing,
    department: Department,
    row: &str,
    body: &ResidentRecord,
) -> Vec<String> {
    blind_keyed_links_of(
        keys,
        body,
        &LinkRecord::from_resident(department, row, body),
    )
}

/// [`blind_keyed_links`] of a resident whose linkage features (`record`, built from `body`)
/// the caller has already.
pub fn blind_keyed_links_of(
    keys: &KeyRing,
    body: &ResidentRecord,
    record: &LinkRecord,
) -> Vec<String> {
    let mut links = Vec::new();
    for document in &body.documents {
        if let Some(key) = document.match_key() {
            links.push(blind_link(keys, "identity_document", &key));
        }
    }
    links.extend(
        blocking_keys(record)
            .into_iter()
            .map(|key| block_link(&keys.blind_index(BLOCK_DOMAIN, &key))),
    );
    links
}

/// The stable numbers of a resident's identity documents (`IdentityDocument::match_key`):
/// what two departments' records of one person share when neither has an ID number.
pub fn document_keys(body: &ResidentRecord) -> Vec<String> {
    body.documents
        .iter()
        .filter_map(model::IdentityDocument::match_key)
        .collect()
}

/// The `blind:identity_document:` links to look a document up by, under the current
/// blind-index key and, while a rotation re-computes stored links, the older ones.
pub fn document_lookup_links(keys: &KeyRing, key: &str) -> Vec<String> {
    keys.blind_indexes("identity_document", key)
        .iter()
        .map(|hash| blind_link_of("identity_document", hash))
        .collect()
}

/// Whether a link is one of [`blind_keyed_links`].
pub fn is_blind_keyed_link(link: &str) -> bool {
    link.starts_with("blind:") || link.starts_with("block:")
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use model::Record;

    fn resident(documents: serde_json::Value) -> ResidentRecord {
        let value = serde_json::json!({"kind":"resident","source_id":"X","version":"1",
            "name":"测试","grid":"110105001001001","documents":documents});
        match Record::from_value(&value).unwrap() {
            Record::Resident { body, .. } => body,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_identity_document_is_blind_indexed_by_its_stable_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = vault::store::open_for_tests(&dir.path().join("s.redb")).unwrap();
        let keys =
            vault::keys::load_key_ring(&store, &vault::crypto::MasterKey::for_tests(5)).unwrap();
        let links = |documents| {
            blind_keyed_links(
                &keys,
                Department::Minzheng,
                "minzheng/resident/X",
                &resident(documents),
            )
            .into_iter()
            .filter(|l| l.starts_with("blind:identity_document:"))
            .collect::<Vec<_>>()
        };
        let one =
            links(serde_json::json!([{"type":"passport","number":"E12345678","country":"CHN"}]));
        assert_eq!(one.len(), 1);
        assert!(!one[0].contains("E12345678"), "keyed, never the number");
        let spaced =
            links(serde_json::json!([{"type":"passport","number":"e1234 5678","country":"CHN"}]));
        assert_eq!(
            one, spaced,
            "the same document written differently is the same link"
        );
        let other =
            links(serde_json::json!([{"type":"passport","number":"E87654321","country":"CHN"}]));
        assert_ne!(one, other);
        assert!(links(serde_json::json!([{"type":"other","number":"ABC1"}])).is_empty());
    }
}
