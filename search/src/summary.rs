//! What a search hit shows of an entity, and what is resolved for it: a hit is a summary of
//! the viewed profile, resolved from a few source fields instead of the whole profile.
//!
//! Guarantees: [`summary_sources`] holds every source field each of [`summary_fields`] is
//! derived from, so a summary resolved from them equals the same fields of the full profile
//! under the same view (a test compares the two over a generated street).

use model::RecordKind;

/// Fields of the masked profile shown in a hit.
pub fn summary_fields(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::Resident => &[
            "name",
            "gender",
            "age",
            "birth_date",
            "id_number",
            "phone",
            "address",
        ],
        RecordKind::House => &["address", "usage"],
        RecordKind::Event => &["title", "type", "status", "occurred_at", "address"],
        RecordKind::Organization => &["name", "type", "uscc", "address", "phone"],
    }
}

/// The source-record fields a hit's summary is resolved from: the summary's fields as stored
/// (`event_type` for `type`), with `birth_date` for the age the view derives from it and
/// `id_number`, which decides how the view masks the birth date.
pub fn summary_sources(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::Resident => &[
            "name",
            "gender",
            "birth_date",
            "id_number",
            "phone",
            "address",
        ],
        RecordKind::House => &["address", "usage"],
        RecordKind::Event => &["title", "event_type", "status", "occurred_at", "address"],
        RecordKind::Organization => &["name", "type", "uscc", "address", "phone"],
    }
}
