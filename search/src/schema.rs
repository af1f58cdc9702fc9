//! The index schema: which fields exist, which hold plaintext and which blind tokens.
//!
//! Guarantees: plaintext fields are only `id`, `kind`, `scope`, `event_type` (an event's
//! type, or an organization's), `status`, `usage` and `occurred`; every other field holds blind tokens only. [`SCHEMA_VERSION`]
//! changes whenever the schema or the analysis changes, which makes a broker rebuild the
//! index at start.

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STORED,
    STRING,
};

use chinese_text::names::NameFamily;

/// Bump on any change of fields or of how terms are derived.
pub const SCHEMA_VERSION: u32 = 7;

/// A family of blind terms; each is one index field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    NameChars,
    NamePinyin,
    NameShort,
    NameFuzzy,
    IdNumber,
    Phone,
    Address,
    Tag,
    Title,
    Body,
    /// Words of the title as a masked view shows it (PII-redacted, no person names).
    TitleMasked,
    BodyMasked,
    Guard,
    /// An organization's name: words, bigrams, initials and pinyin
    /// ([`chinese_text::organizations`]).
    OrgName,
    /// An organization's unified social credit code.
    Code,
}

impl Family {
    pub const ALL: [Family; 15] = [
        Family::NameChars,
        Family::NamePinyin,
        Family::NameShort,
        Family::NameFuzzy,
        Family::IdNumber,
        Family::Phone,
        Family::Address,
        Family::Tag,
        Family::Title,
        Family::Body,
        Family::TitleMasked,
        Family::BodyMasked,
        Family::Guard,
        Family::OrgName,
        Family::Code,
    ];

    /// The index field's name (also the blind-token domain).
    pub fn name(self) -> &'static str {
        match self {
            Family::NameChars => "name_chars",
            Family::NamePinyin => "name_pinyin",
            Family::NameShort => "name_short",
            Family::NameFuzzy => "name_fuzzy",
            Family::IdNumber => "id_number",
            Family::Phone => "phone",
            Family::Address => "address",
            Family::Tag => "tag",
            Family::Title => "title",
            Family::Body => "body",
            Family::TitleMasked => "title_masked",
            Family::BodyMasked => "body_masked",
            Family::Guard => "guard",
            Family::OrgName => "org_name",
            Family::Code => "code",
        }
    }

    /// Whether matches are ranked by BM25 (free text) rather than a constant per clause.
    pub fn ranked(self) -> bool {
        matches!(
            self,
            Family::Title | Family::Body | Family::TitleMasked | Family::BodyMasked
        )
    }
}

impl From<NameFamily> for Family {
    fn from(family: NameFamily) -> Family {
        match family {
            NameFamily::Chars => Family::NameChars,
            NameFamily::Pinyin => Family::NamePinyin,
            NameFamily::Short => Family::NameShort,
            NameFamily::Fuzzy => Family::NameFuzzy,
        }
    }
}

/// Field handles of the schema.
#[derive(Debug, Clone)]
pub struct IndexFields {
    pub id: Field,
    pub kind: Field,
    pub scope: Field,
    pub event_type: Field,
    pub status: Field,
    pub usage: Field,
    pub occurred: Field,
    blind: Vec<(Family, Field)>,
}

impl IndexFields {
    pub fn get(&self, family: Family) -> Field {
        self.blind
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, field)| *field)
            // Every family is added by `build_schema`; index 0 is never reached.
            .unwrap_or(self.id)
    }
}

/// Builds the schema and its field handles.
pub fn build_schema() -> (Schema, IndexFields) {
    let mut builder = Schema::builder();
    let id = builder.add_text_field("id", STRING | STORED);
    let kind = builder.add_text_field("kind", STRING | STORED);
    let scope = builder.add_text_field("scope", STRING);
    let event_type = builder.add_text_field("event_type", STRING);
    let status = builder.add_text_field("status", STRING);
    let usage = builder.add_text_field("usage", STRING);
    let occurred = builder.add_i64_field(
        "occurred",
        NumericOptions::default().set_indexed().set_fast(),
    );
    let blind = Family::ALL
        .iter()
        .map(|family| {
            let (record, norms) = if family.ranked() {
                (IndexRecordOption::WithFreqs, true)
            } else {
                (IndexRecordOption::Basic, false)
            };
            let indexing = TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(record)
                .set_fieldnorms(norms);
            let options = TextOptions::default().set_indexing_options(indexing);
            (*family, builder.add_text_field(family.name(), options))
        })
        .collect();
    (
        builder.build(),
        IndexFields {
            id,
            kind,
            scope,
            event_type,
            status,
            usage,
            occurred,
            blind,
        },
    )
}
