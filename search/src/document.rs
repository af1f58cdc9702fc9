//! One merged profile turned into one index document.
//!
//! Guarantees: every personal value becomes blind tokens only ([`super::blind`]); the
//! plaintext in a document is limited to the unified id, kind, grid scope codes, event or
//! organization type, event status, house usage and the event time. Each personal field also yields a blind
//! *source guard* token naming the department its value came from, so a query can be limited
//! to values whose source the caller may see (see [`super::query`]). A resident's document
//! also says, as a blind guard, whether the resident was an adult when indexed
//! ([`ADULT_GUARD`]).

use tantivy::TantivyDocument;

use model::{Department, IdNumber, Phone, RecordKind};

use super::schema::{Family, IndexFields};
use chinese_text::{address, names, segment as text};
use model::profile::Profile;

use super::blind::Blinder;

/// Personal profile fields the index reads, per kind.
pub fn profile_field(kind: RecordKind, family: Family) -> Option<&'static str> {
    use Family::*;
    match (kind, family) {
        (RecordKind::Resident, NameChars | NamePinyin | NameShort | NameFuzzy) => Some("name"),
        (RecordKind::Resident, IdNumber) => Some("id_number"),
        (RecordKind::House, IdNumber) => Some("owner_id_number"),
        (RecordKind::Organization, IdNumber) => Some("legal_rep_id_number"),
        (RecordKind::Organization, OrgName) => Some("name"),
        (RecordKind::Organization, Code) => Some("uscc"),
        (RecordKind::Organization, Phone) => Some("phone"),
        (RecordKind::Organization, Tag) => Some("tags"),
        (RecordKind::Resident, Phone) => Some("phone"),
        (_, Address) => Some("address"),
        (RecordKind::Resident, Tag) => Some("tags"),
        (RecordKind::Event, Title | TitleMasked) => Some("title"),
        (RecordKind::Event, Body | BodyMasked) => Some("description"),
        _ => None,
    }
}

/// The source-record fields a document of `kind` is built from (as stored, so `event_type`
/// rather than the merged `type`); the index resolves only these.
pub fn source_fields(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        // `birth_date` only decides whether the resident is a child ([`ADULT_GUARD`]).
        RecordKind::Resident => &[
            "name",
            "id_number",
            "phone",
            "address",
            "tags",
            "birth_date",
        ],
        RecordKind::House => &["address", "owner_id_number", "usage"],
        RecordKind::Event => &[
            "title",
            "description",
            "address",
            "event_type",
            "status",
            "occurred_at",
            // Only its guard ("my events", [`reporter_guard`]).
            "reported_by",
        ],
        RecordKind::Organization => &[
            "name",
            "uscc",
            "type",
            "address",
            "legal_rep_id_number",
            "phone",
            "tags",
        ],
    }
}

/// Blind tokens with a bounded memo: during a rebuild many terms repeat (surnames, pinyin
/// syllables, address parts, guards), and each is computed by [`Blinder::token`] once per
/// memo. The memo lives in memory only, for one indexing pass.
pub struct Tokens<'a> {
    blinder: &'a Blinder,
    memo: std::collections::HashMap<(Family, String), String>,
    capacity: usize,
}

impl std::fmt::Debug for Tokens<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The memo's keys are plaintext terms: never printed.
        f.debug_struct("Tokens")
            .field("remembered", &self.memo.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Tokens<'a> {
    /// A memo of at most `capacity` terms (0: no memo).
    pub fn new(blinder: &'a Blinder, capacity: usize) -> Tokens<'a> {
        Tokens {
            blinder,
            memo: std::collections::HashMap::new(),
            capacity,
        }
    }

    /// [`Blinder::token`] of `term` in `family`'s field.
    pub fn token(&mut self, family: Family, term: &str) -> String {
        if self.capacity == 0 {
            return self.blinder.token(family.name(), term);
        }
        if let Some(token) = self.memo.get(&(family, term.to_owned())) {
            return token.clone();
        }
        let token = self.blinder.token(family.name(), term);
        if self.memo.len() >= self.capacity {
            // Bounded: start again rather than grow (frequent terms come back quickly).
            self.memo.clear();
        }
        self.memo.insert((family, term.to_owned()), token.clone());
        token
    }
}

/// The guard term that says `field`'s value came from `department`.
pub fn source_guard(field: &str, department: Department) -> String {
    format!("src:{field}|{}", department.code())
}

/// The guard term that says `department` holds a record of the entity.
pub fn department_guard(department: Department) -> String {
    format!("dept:{}", department.code())
}

/// The guard term a resident's document carries when the resident was 14 or older (or of
/// unknown age) when it was indexed. A clause that needs more of a personal field than the
/// caller may see of a child's requires it ([`super::query`]), so a child is never found by
/// what the caller sees only masked on a child's profile. A child who turns 14 keeps lacking
/// it until the document is rebuilt: only ever stricter, never looser.
pub const ADULT_GUARD: &str = "age:adult";

/// The guard term an event recorded through the broker (a report or a visit) carries for its
/// reporter (the staff member's token `sub`, not a resident's data): "my events".
pub fn reporter_guard(sub: &str) -> String {
    format!("by:{sub}")
}

/// The guard term that says `department` asserts `tag`.
pub fn tag_guard(tag: &str, department: Department) -> String {
    format!("tag:{tag}|{}", department.code())
}

/// Every prefix of a grid code that is a division level (district, street, community, grid).
pub fn scope_terms(grid: &str) -> Vec<&str> {
    [6, 9, 12, 15]
        .into_iter()
        .filter(|n| grid.len() >= *n && grid.is_ascii())
        .filter_map(|n| grid.get(..n))
        .collect()
}

/// Builds the document of `profile` (unmasked, as resolved).
pub fn build(
    profile: &Profile,
    fields: &IndexFields,
    blinder: &Blinder,
    directory: Option<&policies::redact::NameDirectory>,
) -> TantivyDocument {
    build_with(profile, fields, &mut Tokens::new(blinder, 0), directory)
}

/// [`build`] with a token memo.
pub fn build_with(
    profile: &Profile,
    fields: &IndexFields,
    tokens: &mut Tokens<'_>,
    directory: Option<&policies::redact::NameDirectory>,
) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(fields.id, &profile.id);
    doc.add_text(fields.kind, profile.kind.as_str());
    if let Some(grid) = &profile.grid {
        for scope in scope_terms(grid) {
            doc.add_text(fields.scope, scope);
        }
    }
    let kind = profile.kind;
    let mut add = |family: Family, term: &str| {
        doc.add_text(fields.get(family), tokens.token(family, term));
    };
    let mut guards: Vec<String> = Vec::new();
    let value_of = |field: &str| {
        profile
            .fields
            .get(field)
            .and_then(|f| f.value.as_str().map(|v| (v.to_owned(), f.source)))
    };
    let guarded = |field: &str, guards: &mut Vec<String>| {
        let found = value_of(field);
        if let Some((_, source)) = &found {
            guards.push(source_guard(field, *source));
        }
        found.map(|(v, _)| v)
    };
    match kind {
        RecordKind::Resident => {
            if let Some(name) = guarded("name", &mut guards) {
                for (family, term) in names::name_terms(&name) {
                    add(Family::from(family), &term);
                }
            }
            if let Some(id) = guarded("id_number", &mut guards) {
                for term in id_terms(&id) {
                    add(Family::IdNumber, &term);
                }
            }
            if let Some(phone) = guarded("phone", &mut guards) {
                for term in phone_terms(&phone) {
                    add(Family::Phone, &term);
                }
            }
            if let Some(addr) = guarded("address", &mut guards) {
                for term in address::index_terms(&addr) {
                    add(Family::Address, &term);
                }
            }
            for tag in &profile.tags {
                add(Family::Tag, &format!("t:{}", tag.tag));
                for department in &tag.sources {
                    guards.push(tag_guard(&tag.tag, *department));
                }
            }
        }
        RecordKind::House => {
            if let Some(addr) = guarded("address", &mut guards) {
                for term in address::index_terms(&addr) {
                    add(Family::Address, &term);
                }
            }
            if let Some(id) = guarded("owner_id_number", &mut guards) {
                for term in id_terms(&id) {
                    add(Family::IdNumber, &term);
                }
            }
        }
        RecordKind::Organization => {
            if let Some(name) = guarded("name", &mut guards) {
                for term in chinese_text::organizations::index_terms(&name) {
                    add(Family::OrgName, &term);
                }
            }
            if let Some(code) = guarded("uscc", &mut guards) {
                if let Ok(code) = model::Uscc::parse(&code) {
                    add(Family::Code, &format!("u:{}", code.as_str()));
                }
            }
            if let Some(id) = guarded("legal_rep_id_number", &mut guards) {
                for term in id_terms(&id) {
                    add(Family::IdNumber, &term);
                }
            }
            if let Some(phone) = guarded("phone", &mut guards) {
                for term in phone_terms(&phone) {
                    add(Family::Phone, &term);
                }
            }
            if let Some(addr) = guarded("address", &mut guards) {
                for term in address::index_terms(&addr) {
                    add(Family::Address, &term);
                }
            }
            for tag in &profile.tags {
                add(Family::Tag, &format!("t:{}", tag.tag));
                for department in &tag.sources {
                    guards.push(tag_guard(&tag.tag, *department));
                }
            }
        }
        RecordKind::Event => {
            // Names of the people involved, as the masked view redacts them.
            let names: Vec<String> = profile
                .related
                .values()
                .flatten()
                .filter_map(|r| r.label.clone())
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            for (field, clear, masked) in [
                ("title", Family::Title, Family::TitleMasked),
                ("description", Family::Body, Family::BodyMasked),
            ] {
                if let Some(value) = guarded(field, &mut guards) {
                    for term in text::index_terms(&value) {
                        add(clear, &term);
                    }
                    let redacted = policies::redact::redact(&value, &names, directory, None);
                    for term in text::masked_terms(&redacted) {
                        add(masked, &term);
                    }
                }
            }
            if let Some(addr) = guarded("address", &mut guards) {
                for term in address::index_terms(&addr) {
                    add(Family::Address, &term);
                }
            }
        }
    }
    if kind == RecordKind::Event {
        if let Some(by) = profile
            .fields
            .get("reported_by")
            .and_then(|f| f.value.as_str())
        {
            guards.push(reporter_guard(by));
        }
    }
    if kind == RecordKind::Resident {
        for source in &profile.sources {
            guards.push(department_guard(source.department));
        }
        if !policies::minor::is_minor(profile, policies::minor::today_in_china()) {
            guards.push(ADULT_GUARD.to_owned());
        }
    }
    guards.sort();
    guards.dedup();
    for guard in guards {
        add(Family::Guard, &guard);
    }
    let plain = |field: &str| profile.fields.get(field).and_then(|f| f.value.as_str());
    match kind {
        RecordKind::Event => {
            if let Some(t) = plain("type") {
                doc.add_text(fields.event_type, t);
            }
            if let Some(s) = plain("status") {
                doc.add_text(fields.status, s);
            }
            if let Some(at) =
                plain("occurred_at").and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                doc.add_i64(fields.occurred, at.timestamp());
            }
        }
        RecordKind::House => {
            if let Some(u) = plain("usage") {
                doc.add_text(fields.usage, u);
            }
        }
        RecordKind::Organization => {
            if let Some(t) = plain("type") {
                doc.add_text(fields.event_type, t);
            }
        }
        RecordKind::Resident => {}
    }
    doc
}

/// ID number terms: exact (normalised 18 digits), last 6, last 4.
pub fn id_terms(raw: &str) -> Vec<String> {
    let Ok(id) = IdNumber::parse(raw) else {
        return Vec::new();
    };
    let s = id.as_str();
    let mut out = vec![format!("x:{s}")];
    for n in [6, 4] {
        if let Some(tail) = s.len().checked_sub(n).and_then(|start| s.get(start..)) {
            out.push(format!("l{n}:{tail}"));
        }
    }
    out
}

/// Phone terms: every digit (`t:`), last 4 of the subscriber number (`t4:`).
pub fn phone_terms(raw: &str) -> Vec<String> {
    let Ok(phone) = Phone::parse(raw) else {
        return Vec::new();
    };
    vec![
        format!("t:{}", phone.digits()),
        format!("t4:{}", phone.last_digits(4)),
    ]
}
