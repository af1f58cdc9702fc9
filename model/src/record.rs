//! The unified record format that every department publishes, parsed into typed records.
//!
//! Guarantees: [`Record::parse`] accepts exactly the unified format of the API contract (one
//! JSON object per record) and returns either a fully typed record, whose identifiers are
//! valid, or a [`RecordError`] with a stable code, the offending field and a message that says
//! what to fix. A message never repeats the rejected value: values are personal data.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    parse_date, parse_timestamp, DivisionCode, Gender, IdNumber, IdentityDocument, Phone, Uscc,
};

/// Longest accepted free-text field, in characters.
const MAX_TEXT_CHARS: usize = 10_000;
/// Longest accepted short field (names, source ids, codes), in characters.
const MAX_SHORT_CHARS: usize = 200;
/// Most tags one record may carry.
const MAX_TAGS: usize = 64;
/// Largest accepted record, as compact JSON (256 KiB).
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// Largest accepted `attributes` object, as compact JSON (64 KiB).
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;
/// Most parties one event may name.
pub const MAX_PARTIES: usize = 50;
/// Most identity documents one resident record may list.
pub const MAX_DOCUMENTS: usize = 16;

/// The length of `value` as compact JSON, counting only up to `limit + 1` bytes.
fn json_len_up_to(value: &Value, limit: usize) -> usize {
    struct Counter {
        count: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.count += buf.len();
            if self.count > self.limit {
                // Stop walking a huge value as soon as it is known to be too large.
                return Err(std::io::Error::other("limit passed"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { count: 0, limit };
    let _ = serde_json::to_writer(&mut counter, value);
    counter.count
}

/// Which unified entity a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Resident,
    House,
    Event,
    /// 实有单位: a shop, company, school or other organization at an address.
    Organization,
}

impl RecordKind {
    pub const ALL: [RecordKind; 4] = [
        RecordKind::Resident,
        RecordKind::House,
        RecordKind::Event,
        RecordKind::Organization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Resident => "resident",
            RecordKind::House => "house",
            RecordKind::Event => "event",
            RecordKind::Organization => "organization",
        }
    }

    pub fn parse(input: &str) -> Option<RecordKind> {
        match input.trim() {
            "resident" => Some(RecordKind::Resident),
            "house" => Some(RecordKind::House),
            "event" => Some(RecordKind::Event),
            "organization" => Some(RecordKind::Organization),
            _ => None,
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record's version as the department states it: a timestamp (RFC 3339 or a Chinese date
/// form) or a plain counter. Versions of one source record are compared to make re-delivery
/// idempotent; a counter always sorts before a timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Counter(u64),
    Time(DateTime<Utc>),
}

impl Version {
    pub fn parse(input: &str) -> Result<Version, RecordError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(RecordError::new(
                "version_missing",
                "version",
                "every record needs a version (an RFC 3339 timestamp or a counter)",
            ));
        }
        if let Ok(time) = parse_timestamp(trimmed) {
            return Ok(Version::Time(time));
        }
        // An all-digit string that is not a date (`20261101` is) is a counter.
        trimmed.parse::<u64>().map(Version::Counter).map_err(|_| {
            RecordError::new(
                "version_format",
                "version",
                "version must be an RFC 3339 timestamp (2026-11-01T08:00:00Z) or a non-negative integer",
            )
        })
    }

    fn from_value(value: &Value) -> Result<Version, RecordError> {
        match value {
            Value::String(s) => Version::parse(s),
            Value::Number(n) => n.as_u64().map(Version::Counter).ok_or_else(|| {
                RecordError::new(
                    "version_format",
                    "version",
                    "a numeric version must be a non-negative integer",
                )
            }),
            _ => Err(RecordError::new(
                "version_format",
                "version",
                "version must be a string or a non-negative integer",
            )),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Version::Counter(a), Version::Counter(b)) => a.cmp(b),
            (Version::Time(a), Version::Time(b)) => a.cmp(b),
            (Version::Counter(_), Version::Time(_)) => Ordering::Less,
            (Version::Time(_), Version::Counter(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Counter(n) => write!(f, "{n}"),
            Version::Time(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Version::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Identity of one source record: which department's record, which version, and whether it
/// is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMeta {
    pub source_id: String,
    pub version: Version,
    #[serde(default)]
    pub deleted: bool,
}

/// A person as one department knows them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResidentRecord {
    pub id_number: Option<IdNumber>,
    /// The department sent the old 15-digit form; `id_number` holds the upgraded one.
    #[serde(default)]
    pub id_number_legacy: bool,
    pub name: Option<String>,
    pub gender: Option<Gender>,
    pub birth_date: Option<NaiveDate>,
    pub ethnicity: Option<String>,
    pub phone: Option<Phone>,
    pub hukou_address: Option<String>,
    pub address: Option<String>,
    pub house_source_id: Option<String>,
    pub grid: Option<DivisionCode>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Identity documents without a GB 11643 check (passport, travel permits, …), each once;
    /// left out of the serialised form when there are none, so a record without documents
    /// serialises exactly as before the field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<IdentityDocument>,
}

/// A dwelling as one department knows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HouseRecord {
    pub address: Option<String>,
    pub grid: Option<DivisionCode>,
    pub usage: Option<String>,
    pub owner_id_number: Option<IdNumber>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// An event (dispute, hazard, visit …) as one department reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_type: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub address: Option<String>,
    pub house_source_id: Option<String>,
    pub grid: Option<DivisionCode>,
    pub status: Option<String>,
    #[serde(default)]
    pub party_id_numbers: Vec<IdNumber>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
    // What follows is written only by the broker, for an event a grid worker or an officer
    // records (`POST /v1/reports`, `POST /v1/visits`): none of it is in `EVENT_FIELDS`, so a
    // department's published JSON can never set it. Each is left out of the serialised form
    // when empty, so a published event serialises (and digests) exactly as before these
    // fields existed.
    /// Parties by unified resident id (`r_…`), never by ID number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub party_entities: Vec<String>,
    /// Departments the event was routed to when it was recorded (`routing.csv`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routed_to: Vec<crate::Department>,
    /// Who recorded it (the token's `sub`). An event with a reporter is one the broker
    /// recorded, and only such an event moves through the lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<String>,
    /// Its lifecycle so far, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::profile::EventTransition>,
}

/// An organization (实有单位: a shop, company, school, one of the 九小场所 a grid worker
/// inspects) as one department knows it. Organizations with a unified social credit code
/// merge on it across departments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrganizationRecord {
    pub name: Option<String>,
    pub uscc: Option<Uscc>,
    /// What kind of organization (e.g. `shop`, `restaurant`, `school`), the department's word.
    #[serde(rename = "type")]
    pub organization_type: Option<String>,
    pub address: Option<String>,
    pub grid: Option<DivisionCode>,
    /// The legal representative's (法定代表人, or the operator's) ID number: links the
    /// organization to the resident.
    pub legal_rep_id_number: Option<IdNumber>,
    pub phone: Option<Phone>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// One parsed record of the unified format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Resident {
        #[serde(flatten)]
        meta: SourceMeta,
        #[serde(flatten)]
        body: ResidentRecord,
    },
    House {
        #[serde(flatten)]
        meta: SourceMeta,
        #[serde(flatten)]
        body: HouseRecord,
    },
    Event {
        #[serde(flatten)]
        meta: SourceMeta,
        #[serde(flatten)]
        body: EventRecord,
    },
    Organization {
        #[serde(flatten)]
        meta: SourceMeta,
        #[serde(flatten)]
        body: OrganizationRecord,
    },
}

/// Why one record was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RecordError {
    code: &'static str,
    field: String,
    message: String,
}

impl RecordError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        RecordError {
            code,
            field: field.into(),
            message: message.into(),
        }
    }

    /// Stable snake_case code, part of the API contract.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The field the error is about (empty when it is about the whole record).
    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error about a key inside the list entry at `path` (`documents[0]`).
    fn within(self, path: &str) -> RecordError {
        RecordError {
            field: format!("{path}.{}", self.field),
            ..self
        }
    }
}

const COMMON_FIELDS: &[&str] = &["kind", "source_id", "version", "deleted"];
const RESIDENT_FIELDS: &[&str] = &[
    "id_number",
    "name",
    "gender",
    "birth_date",
    "ethnicity",
    "phone",
    "hukou_address",
    "address",
    "house_source_id",
    "grid",
    "tags",
    "attributes",
    "documents",
];
const HOUSE_FIELDS: &[&str] = &["address", "grid", "usage", "owner_id_number", "attributes"];
const ORGANIZATION_FIELDS: &[&str] = &[
    "name",
    "uscc",
    "type",
    "address",
    "grid",
    "legal_rep_id_number",
    "phone",
    "tags",
    "attributes",
];
/// The keys of one entry of a resident's `documents`.
const DOCUMENT_FIELDS: &[&str] = &["type", "number", "country"];
const EVENT_FIELDS: &[&str] = &[
    "type",
    "title",
    "description",
    "occurred_at",
    "address",
    "house_source_id",
    "grid",
    "status",
    "party_id_numbers",
    "attributes",
];

impl Record {
    /// Parses one record of the unified format from its JSON text.
    pub fn parse_json(text: &str) -> Result<Record, RecordError> {
        let value: Value = serde_json::from_str(text).map_err(|err| {
            RecordError::new(
                "json_syntax",
                "",
                format!(
                    "not valid JSON at column {}: {}",
                    err.column(),
                    json_error_kind(&err)
                ),
            )
        })?;
        Record::from_value(&value)
    }

    /// Parses one record of the unified format from a JSON value.
    pub fn from_value(value: &Value) -> Result<Record, RecordError> {
        let object = value.as_object().ok_or_else(|| {
            RecordError::new("record_not_object", "", "each record must be a JSON object")
        })?;
        if json_len_up_to(value, MAX_RECORD_BYTES) > MAX_RECORD_BYTES {
            return Err(RecordError::new(
                "record_too_large",
                "",
                format!("a record may be at most {} KiB as JSON; move bulky detail out of the record (attachments stay in the department's system)", MAX_RECORD_BYTES / 1024),
            ));
        }
        let kind_text = object.get("kind").and_then(Value::as_str).ok_or_else(|| {
            RecordError::new(
                "kind_missing",
                "kind",
                "kind must be one of resident, house, event, organization",
            )
        })?;
        let kind = RecordKind::parse(kind_text).ok_or_else(|| {
            RecordError::new(
                "kind_unknown",
                "kind",
                "kind must be one of resident, house, event, organization",
            )
        })?;
        let allowed = match kind {
            RecordKind::Resident => RESIDENT_FIELDS,
            RecordKind::House => HOUSE_FIELDS,
            RecordKind::Event => EVENT_FIELDS,
            RecordKind::Organization => ORGANIZATION_FIELDS,
        };
        for key in object.keys() {
            if !COMMON_FIELDS.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
                return Err(RecordError::new(
                    "field_unknown",
                    truncate_chars(key, 64),
                    format!(
                        "{kind} records have no such field; put department-specific data under \"attributes\""
                    ),
                ));
            }
        }
        let fields = Fields(object);
        let meta = SourceMeta {
            source_id: fields.required_short("source_id")?,
            version: match object.get("version") {
                Some(v) if !v.is_null() => Version::from_value(v)?,
                _ => {
                    return Err(RecordError::new(
                        "version_missing",
                        "version",
                        "every record needs a version (an RFC 3339 timestamp or a counter)",
                    ))
                }
            },
            deleted: fields.bool("deleted")?,
        };
        if meta.deleted {
            // A tombstone needs nothing but its identity.
            return Ok(match kind {
                RecordKind::Resident => Record::Resident {
                    meta,
                    body: ResidentRecord::default(),
                },
                RecordKind::House => Record::House {
                    meta,
                    body: HouseRecord::default(),
                },
                RecordKind::Event => Record::Event {
                    meta,
                    body: EventRecord::default(),
                },
                RecordKind::Organization => Record::Organization {
                    meta,
                    body: OrganizationRecord::default(),
                },
            });
        }
        Ok(match kind {
            RecordKind::Resident => Record::Resident {
                meta,
                body: parse_resident(&fields)?,
            },
            RecordKind::House => Record::House {
                meta,
                body: parse_house(&fields)?,
            },
            RecordKind::Event => Record::Event {
                meta,
                body: parse_event(&fields)?,
            },
            RecordKind::Organization => Record::Organization {
                meta,
                body: parse_organization(&fields)?,
            },
        })
    }

    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Resident { .. } => RecordKind::Resident,
            Record::House { .. } => RecordKind::House,
            Record::Event { .. } => RecordKind::Event,
            Record::Organization { .. } => RecordKind::Organization,
        }
    }

    pub fn meta(&self) -> &SourceMeta {
        match self {
            Record::Resident { meta, .. }
            | Record::House { meta, .. }
            | Record::Event { meta, .. }
            | Record::Organization { meta, .. } => meta,
        }
    }

    /// The address the record states, if any.
    pub fn address(&self) -> Option<&str> {
        match self {
            Record::Resident { body, .. } => body.address.as_deref(),
            Record::House { body, .. } => body.address.as_deref(),
            Record::Event { body, .. } => body.address.as_deref(),
            Record::Organization { body, .. } => body.address.as_deref(),
        }
    }

    /// The grid the record places its entity in, if it says.
    pub fn grid(&self) -> Option<&DivisionCode> {
        match self {
            Record::Resident { body, .. } => body.grid.as_ref(),
            Record::House { body, .. } => body.grid.as_ref(),
            Record::Event { body, .. } => body.grid.as_ref(),
            Record::Organization { body, .. } => body.grid.as_ref(),
        }
    }
}

fn parse_resident(fields: &Fields<'_>) -> Result<ResidentRecord, RecordError> {
    let id_text = fields.optional_text("id_number", MAX_SHORT_CHARS)?;
    let id_number = id_text
        .as_deref()
        .map(IdNumber::parse)
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "id_number", err.to_string()))?;
    let id_number_legacy = id_text
        .as_deref()
        .map(|t| t.trim().chars().count() == 15)
        .unwrap_or(false);
    let name = fields.optional_text("name", MAX_SHORT_CHARS)?;
    if name.is_none() && id_number.is_none() {
        return Err(RecordError::new(
            "resident_unidentified",
            "name",
            "a resident needs at least a name or an id_number",
        ));
    }
    let gender = fields
        .optional_text("gender", MAX_SHORT_CHARS)?
        .map(|g| Gender::parse(&g))
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "gender", err.to_string()))?
        .or_else(|| id_number.as_ref().map(IdNumber::gender));
    let birth_date = fields
        .optional_text("birth_date", MAX_SHORT_CHARS)?
        .map(|d| parse_date(&d))
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "birth_date", err.to_string()))?
        .or_else(|| id_number.as_ref().map(IdNumber::birth_date));
    let phone = fields
        .optional_text("phone", MAX_SHORT_CHARS)?
        .map(|p| Phone::parse(&p))
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "phone", err.to_string()))?;
    Ok(ResidentRecord {
        id_number,
        id_number_legacy,
        name,
        gender,
        birth_date,
        ethnicity: fields.optional_text("ethnicity", MAX_SHORT_CHARS)?,
        phone,
        hukou_address: fields.optional_text("hukou_address", MAX_SHORT_CHARS)?,
        address: fields.optional_text("address", MAX_SHORT_CHARS)?,
        house_source_id: fields.optional_text("house_source_id", MAX_SHORT_CHARS)?,
        grid: fields.required_grid()?,
        tags: fields.tags()?,
        attributes: fields.attributes()?,
        documents: fields.documents()?,
    })
}

fn parse_house(fields: &Fields<'_>) -> Result<HouseRecord, RecordError> {
    let address = fields.optional_text("address", MAX_SHORT_CHARS)?;
    if address.is_none() {
        return Err(RecordError::new(
            "address_missing",
            "address",
            "a house needs its standard address",
        ));
    }
    let owner_id_number = fields
        .optional_text("owner_id_number", MAX_SHORT_CHARS)?
        .map(|t| IdNumber::parse(&t))
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "owner_id_number", err.to_string()))?;
    Ok(HouseRecord {
        address,
        grid: fields.required_grid()?,
        usage: fields.optional_text("usage", MAX_SHORT_CHARS)?,
        owner_id_number,
        attributes: fields.attributes()?,
    })
}

fn parse_event(fields: &Fields<'_>) -> Result<EventRecord, RecordError> {
    let event_type = fields.optional_text("type", MAX_SHORT_CHARS)?;
    if event_type.is_none() {
        return Err(RecordError::new(
            "event_type_missing",
            "type",
            "an event needs a type (e.g. dispute, e_bike_charging)",
        ));
    }
    let title = fields.optional_text("title", MAX_SHORT_CHARS)?;
    let description = fields.optional_text("description", MAX_TEXT_CHARS)?;
    if title.is_none() && description.is_none() {
        return Err(RecordError::new(
            "event_text_missing",
            "title",
            "an event needs a title or a description",
        ));
    }
    let occurred_at = fields
        .optional_text("occurred_at", MAX_SHORT_CHARS)?
        .map(|t| parse_timestamp(&t))
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "occurred_at", err.to_string()))?;
    let mut party_id_numbers = Vec::new();
    if let Some(value) = fields.0.get("party_id_numbers").filter(|v| !v.is_null()) {
        let list = value.as_array().ok_or_else(|| {
            RecordError::new(
                "field_type",
                "party_id_numbers",
                "party_id_numbers must be a list of ID numbers",
            )
        })?;
        if list.len() > MAX_PARTIES {
            return Err(RecordError::new(
                "too_many_parties",
                "party_id_numbers",
                format!("an event may name at most {MAX_PARTIES} parties; record a larger incident as several events or list the rest in the description"),
            ));
        }
        for (position, item) in list.iter().enumerate() {
            let text = item.as_str().ok_or_else(|| {
                RecordError::new(
                    "field_type",
                    format!("party_id_numbers[{position}]"),
                    "each party must be an ID number string",
                )
            })?;
            let id = IdNumber::parse(text).map_err(|err| {
                RecordError::new(
                    err.code(),
                    format!("party_id_numbers[{position}]"),
                    err.to_string(),
                )
            })?;
            if !party_id_numbers.contains(&id) {
                party_id_numbers.push(id);
            }
        }
    }
    Ok(EventRecord {
        event_type,
        title,
        description,
        occurred_at,
        address: fields.optional_text("address", MAX_SHORT_CHARS)?,
        house_source_id: fields.optional_text("house_source_id", MAX_SHORT_CHARS)?,
        grid: fields.required_grid()?,
        status: fields.optional_text("status", MAX_SHORT_CHARS)?,
        party_id_numbers,
        attributes: fields.attributes()?,
        // The fields only the broker writes are never read from published JSON.
        ..EventRecord::default()
    })
}

fn parse_organization(fields: &Fields<'_>) -> Result<OrganizationRecord, RecordError> {
    let name = fields.optional_text("name", MAX_SHORT_CHARS)?;
    let uscc = fields
        .optional_text("uscc", MAX_SHORT_CHARS)?
        .map(|t| Uscc::parse(&t))
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "uscc", err.to_string()))?;
    if name.is_none() && uscc.is_none() {
        return Err(RecordError::new(
            "organization_unidentified",
            "name",
            "an organization needs at least a name or a uscc (统一社会信用代码)",
        ));
    }
    let legal_rep_id_number = fields
        .optional_text("legal_rep_id_number", MAX_SHORT_CHARS)?
        .map(|t| IdNumber::parse(&t))
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "legal_rep_id_number", err.to_string()))?;
    let phone = fields
        .optional_text("phone", MAX_SHORT_CHARS)?
        .map(|p| Phone::parse(&p))
        .transpose()
        .map_err(|err| RecordError::new(err.code(), "phone", err.to_string()))?;
    Ok(OrganizationRecord {
        name,
        uscc,
        organization_type: fields.optional_text("type", MAX_SHORT_CHARS)?,
        address: fields.optional_text("address", MAX_SHORT_CHARS)?,
        grid: fields.required_grid()?,
        legal_rep_id_number,
        phone,
        tags: fields.tags()?,
        attributes: fields.attributes()?,
    })
}

/// Typed access to the fields of one JSON object, with errors that name the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// A string field; empty or whitespace-only counts as absent. Numbers are accepted as text
    /// because spreadsheets turn codes into numbers.
    fn optional_text(&self, field: &str, max_chars: usize) -> Result<Option<String>, RecordError> {
        let text = match self.0.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(RecordError::new("field_type", field, "must be a string")),
        };
        if text.is_empty() {
            return Ok(None);
        }
        if text.chars().count() > max_chars {
            return Err(RecordError::new(
                "field_too_long",
                field,
                format!("longer than {max_chars} characters"),
            ));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(RecordError::new(
                "field_control_characters",
                field,
                "contains control characters; send plain text",
            ));
        }
        Ok(Some(text))
    }

    fn required_short(&self, field: &str) -> Result<String, RecordError> {
        self.optional_text(field, MAX_SHORT_CHARS)?.ok_or_else(|| {
            RecordError::new(
                format_missing_code(field),
                field,
                "required field is missing or empty",
            )
        })
    }

    /// The grid, when the record states one: departments know addresses rather than the
    /// street's grid codes, and the broker derives a missing grid from the address or the
    /// person (`grid_unresolved` when it cannot). A stated grid must be a valid code.
    fn required_grid(&self) -> Result<Option<DivisionCode>, RecordError> {
        let Some(text) = self.optional_text("grid", MAX_SHORT_CHARS)? else {
            return Ok(None);
        };
        let code = DivisionCode::parse(&text)
            .map_err(|err| RecordError::new(err.code(), "grid", err.to_string()))?;
        Ok(Some(code))
    }

    fn bool(&self, field: &str) -> Result<bool, RecordError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(RecordError::new(
                "field_type",
                field,
                "must be true or false",
            )),
        }
    }

    fn tags(&self) -> Result<Vec<String>, RecordError> {
        let Some(value) = self.0.get("tags").filter(|v| !v.is_null()) else {
            return Ok(Vec::new());
        };
        let list = value.as_array().ok_or_else(|| {
            RecordError::new("field_type", "tags", "tags must be a list of strings")
        })?;
        if list.len() > MAX_TAGS {
            return Err(RecordError::new(
                "field_too_long",
                "tags",
                format!("at most {MAX_TAGS} tags per record"),
            ));
        }
        let mut tags: Vec<String> = Vec::with_capacity(list.len());
        for item in list {
            let tag = item
                .as_str()
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.chars().count() <= MAX_SHORT_CHARS)
                .ok_or_else(|| {
                    RecordError::new(
                        "field_type",
                        "tags",
                        "each tag must be a non-empty string of at most 200 characters",
                    )
                })?;
            if !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
        }
        Ok(tags)
    }

    /// The `documents` list: each entry an object `{"type", "number", "country"}`; errors
    /// name the entry and its key (`documents[1].number`). A document listed twice is kept once.
    fn documents(&self) -> Result<Vec<IdentityDocument>, RecordError> {
        const EXAMPLE: &str = r#"{"type": "passport", "number": "…", "country": "CHN"}"#;
        let Some(value) = self.0.get("documents").filter(|v| !v.is_null()) else {
            return Ok(Vec::new());
        };
        let list = value.as_array().ok_or_else(|| {
            RecordError::new(
                "field_type",
                "documents",
                format!("documents must be a list of objects like {EXAMPLE}"),
            )
        })?;
        if list.len() > MAX_DOCUMENTS {
            return Err(RecordError::new(
                "too_many_documents",
                "documents",
                format!("a resident record may list at most {MAX_DOCUMENTS} documents; send the ones in use"),
            ));
        }
        let mut documents: Vec<IdentityDocument> = Vec::with_capacity(list.len());
        for (position, item) in list.iter().enumerate() {
            let path = format!("documents[{position}]");
            let object = item.as_object().ok_or_else(|| {
                RecordError::new(
                    "field_type",
                    path.as_str(),
                    format!("each document must be an object like {EXAMPLE}"),
                )
            })?;
            for key in object.keys() {
                if !DOCUMENT_FIELDS.contains(&key.as_str()) {
                    return Err(RecordError::new(
                        "field_unknown",
                        format!("{path}.{}", truncate_chars(key, 64)),
                        "a document has only type, number and country",
                    ));
                }
            }
            let entry = Fields(object);
            let text = |key: &str| {
                entry
                    .optional_text(key, MAX_SHORT_CHARS)
                    .map_err(|err| err.within(&path))
            };
            let document_type = text("type")?;
            let number = text("number")?;
            let country = text("country")?;
            let document = IdentityDocument::parse(
                document_type.as_deref().unwrap_or_default(),
                number.as_deref().unwrap_or_default(),
                country.as_deref(),
            )
            .map_err(|err| {
                RecordError::new(
                    err.code(),
                    format!("{path}.{}", err.field()),
                    err.to_string(),
                )
            })?;
            if !documents.contains(&document) {
                documents.push(document);
            }
        }
        Ok(documents)
    }

    fn attributes(&self) -> Result<Map<String, Value>, RecordError> {
        match self.0.get("attributes") {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(value @ Value::Object(map)) => {
                if json_len_up_to(value, MAX_ATTRIBUTES_BYTES) > MAX_ATTRIBUTES_BYTES {
                    return Err(RecordError::new(
                        "attributes_too_large",
                        "attributes",
                        format!("attributes may be at most {} KiB as JSON; keep only what other departments need", MAX_ATTRIBUTES_BYTES / 1024),
                    ));
                }
                Ok(map.clone())
            }
            Some(_) => Err(RecordError::new(
                "field_type",
                "attributes",
                "attributes must be a JSON object",
            )),
        }
    }
}

fn format_missing_code(field: &str) -> &'static str {
    match field {
        "source_id" => "source_id_missing",
        _ => "field_missing",
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The category of a JSON error, without the excerpt of input serde_json may quote.
fn json_error_kind(err: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match err.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected value",
        Category::Eof => "unexpected end of input",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "11010519491231002X";

    fn resident() -> Value {
        json!({"kind":"resident","source_id":"GA-000123","version":"2026-11-01T08:00:00Z",
            "id_number":ID,"name":"张三","gender":"male","birth_date":"1949-12-31",
            "ethnicity":"汉族","phone":"13812345678","address":"北京市朝阳区望京街道幸福里小区3号楼2单元501",
            "house_source_id":"ZJ-55","grid":"110105001001003","tags":["独居老人"],"attributes":{}})
    }

    #[test]
    fn parses_the_contract_example() {
        let record = Record::from_value(&resident()).unwrap();
        let Record::Resident { meta, body } = record else {
            panic!("not a resident")
        };
        assert_eq!(meta.source_id, "GA-000123");
        assert_eq!(body.id_number.unwrap().as_str(), ID);
        assert_eq!(body.phone.unwrap().as_str(), "13812345678");
        assert_eq!(body.grid.unwrap().as_str(), "110105001001003");
        assert_eq!(body.tags, vec!["独居老人".to_owned()]);
    }

    #[test]
    fn oversized_records_attributes_and_party_lists_are_refused_with_their_codes() {
        let mut value = resident();
        value["attributes"] = json!({"blob": "x".repeat(MAX_ATTRIBUTES_BYTES)});
        assert_eq!(
            Record::from_value(&value).unwrap_err().code(),
            "attributes_too_large"
        );
        let mut value = resident();
        value["attributes"] = json!({"blob": "x".repeat(MAX_ATTRIBUTES_BYTES - 100)});
        assert!(Record::from_value(&value).is_ok(), "just under the cap");
        let mut value = resident();
        value["description"] = json!("x".repeat(MAX_RECORD_BYTES));
        assert_eq!(
            Record::from_value(&value).unwrap_err().code(),
            "record_too_large"
        );
        let parties: Vec<String> = (0..=MAX_PARTIES)
            .map(|i| {
                let first17 = format!("11010519800101{i:03}");
                let check = crate::id_number_check_digit(&first17).unwrap();
                format!("{first17}{check}")
            })
            .collect();
        let event = |parties: &[String]| {
            json!({"kind":"event","source_id":"WG-1","version":"1","type":"dispute",
                "title":"纠纷","grid":"110105001001003","party_id_numbers":parties})
        };
        assert_eq!(
            Record::from_value(&event(&parties)).unwrap_err().code(),
            "too_many_parties"
        );
        assert!(Record::from_value(&event(&parties[..MAX_PARTIES])).is_ok());
    }

    #[test]
    fn bad_checksum_names_field_and_hides_value() {
        let mut value = resident();
        value["id_number"] = json!("110105194912310021");
        let err = Record::from_value(&value).unwrap_err();
        assert_eq!(err.code(), "id_number_checksum");
        assert_eq!(err.field(), "id_number");
        assert!(!err.to_string().contains("110105194912310021"));
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let mut value = resident();
        value["phone_number"] = json!("13812345678");
        let err = Record::from_value(&value).unwrap_err();
        assert_eq!(err.code(), "field_unknown");
        assert_eq!(err.field(), "phone_number");
    }

    #[test]
    fn a_missing_grid_is_left_to_the_broker_but_a_bad_one_and_a_missing_version_have_codes() {
        let mut value = resident();
        value.as_object_mut().unwrap().remove("grid");
        assert!(Record::from_value(&value).unwrap().grid().is_none());
        let mut value = resident();
        value["grid"] = json!("1101");
        assert!(Record::from_value(&value).is_err());
        let mut value = resident();
        value.as_object_mut().unwrap().remove("version");
        assert_eq!(
            Record::from_value(&value).unwrap_err().code(),
            "version_missing"
        );
    }

    #[test]
    fn tombstone_needs_only_identity() {
        let value = json!({"kind":"resident","source_id":"GA-1","version":7,"deleted":true});
        let record = Record::from_value(&value).unwrap();
        assert!(record.meta().deleted);
        assert_eq!(record.meta().version, Version::Counter(7));
    }

    #[test]
    fn legacy_id_is_upgraded_and_flagged() {
        let mut value = resident();
        value["id_number"] = json!("110105491231002");
        let Record::Resident { body, .. } = Record::from_value(&value).unwrap() else {
            panic!("not a resident")
        };
        assert!(body.id_number_legacy);
        assert_eq!(body.id_number.unwrap().as_str().len(), 18);
    }

    #[test]
    fn versions_order_by_time_then_counter() {
        let a = Version::parse("2026-11-01T08:00:00Z").unwrap();
        let b = Version::parse("2026-11-01T08:00:01+00:00").unwrap();
        assert!(a < b);
        assert!(Version::parse("12").unwrap() < a);
        assert_eq!(a.to_string(), "2026-11-01T08:00:00Z");
    }

    #[test]
    fn event_requires_type_and_valid_parties() {
        let value = json!({"kind":"event","source_id":"WG-9","version":"2026-11-01T08:00:00Z",
            "type":"dispute","title":"邻里纠纷","grid":"110105001001003","party_id_numbers":[ID, "123"]});
        let err = Record::from_value(&value).unwrap_err();
        assert_eq!(err.field(), "party_id_numbers[1]");
    }

    fn resident_body(value: &Value) -> ResidentRecord {
        let Record::Resident { body, .. } = Record::from_value(value).unwrap() else {
            panic!("not a resident")
        };
        body
    }

    #[test]
    fn every_id_number_document_is_accepted_as_id_number() {
        for (number, birth) in [
            ("810000199408230021", "1994-08-23"),
            ("830000199201300022", "1992-01-30"),
            ("932682198501010017", "1985-01-01"),
        ] {
            let mut value = resident();
            value["id_number"] = json!(number);
            value.as_object_mut().unwrap().remove("birth_date");
            let body = resident_body(&value);
            assert_eq!(body.id_number.as_ref().unwrap().as_str(), number);
            assert!(!body.id_number_legacy);
            assert_eq!(
                body.birth_date.map(|d| d.to_string()).as_deref(),
                Some(birth)
            );
        }
        let mut value = resident();
        value["id_number"] = json!("811000199408230025");
        let err = Record::from_value(&value).unwrap_err();
        assert_eq!(err.code(), "id_number_permit_region");
        assert_eq!(err.field(), "id_number");
        assert!(!err.to_string().contains("811000199408230025"));
    }

    #[test]
    fn documents_parse_normalise_and_deduplicate() {
        let mut value = resident();
        value["documents"] = json!([
            {"type": "passport", "number": "e 1234 5678", "country": "chn"},
            {"type": "hong_kong_macao_travel_permit", "number": "H1234567801"},
            {"type": "PASSPORT", "number": "E12345678", "country": "CHN"},
            {"type": "taiwan_travel_permit", "number": 12345678},
            {"type": "other", "number": "C668668E", "country": null}
        ]);
        let body = resident_body(&value);
        let shown: Vec<(&str, &str, Option<&str>)> = body
            .documents
            .iter()
            .map(|d| {
                (
                    d.document_type().as_str(),
                    d.number(),
                    d.country().map(|c| c.as_str()),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                ("passport", "E12345678", Some("CHN")),
                ("hong_kong_macao_travel_permit", "H1234567801", Some("CHN")),
                ("taiwan_travel_permit", "12345678", Some("CHN")),
                ("other", "C668668E", None),
            ]
        );
    }

    #[test]
    fn documents_round_trip_through_serde() {
        let mut value = resident();
        value["documents"] = json!([
            {"type": "passport", "number": "E12345678", "country": "CHN"},
            {"type": "military_id", "number": "南字第1234567号"}
        ]);
        let record = Record::from_value(&value).unwrap();
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json["documents"],
            json!([
                {"type": "passport", "number": "E12345678", "country": "CHN"},
                {"type": "military_id", "number": "南字第1234567号", "country": "CHN"}
            ])
        );
        let back: Record = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, record);
        // The body alone, as the engine seals and re-reads it.
        let Record::Resident { body, .. } = &record else {
            panic!("not a resident")
        };
        let fields = serde_json::to_value(body).unwrap();
        let reread: ResidentRecord = serde_json::from_value(fields).unwrap();
        assert_eq!(&reread, body);
    }

    #[test]
    fn a_record_without_documents_serialises_as_before() {
        let record = Record::from_value(&resident()).unwrap();
        let json = serde_json::to_value(&record).unwrap();
        assert!(json.get("documents").is_none(), "{json}");
        let Record::Resident { body, .. } = &record else {
            panic!("not a resident")
        };
        assert!(body.documents.is_empty());
        let mut stored = serde_json::to_value(body).unwrap();
        assert!(stored.get("documents").is_none());
        // Sealed fields stored before the field existed still read back.
        stored.as_object_mut().unwrap().remove("documents");
        let reread: ResidentRecord = serde_json::from_value(stored).unwrap();
        assert!(reread.documents.is_empty());
        let mut value = resident();
        value["documents"] = json!([]);
        assert_eq!(Record::from_value(&value).unwrap(), record);
        value["documents"] = Value::Null;
        assert_eq!(Record::from_value(&value).unwrap(), record);
    }

    #[test]
    fn document_errors_name_the_entry_and_key_and_hide_the_value() {
        let long = "9".repeat(MAX_SHORT_CHARS + 1);
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!("E12345678"), "field_type", "documents"),
            (json!({"type": "passport"}), "field_type", "documents"),
            (json!(["E12345678"]), "field_type", "documents[0]"),
            (
                json!([{"type": "passport", "number": "E12345678", "country": "CHN", "expiry": "2030"}]),
                "field_unknown",
                "documents[0].expiry",
            ),
            (
                json!([{"number": "E12345678", "country": "CHN"}]),
                "document_type_missing",
                "documents[0].type",
            ),
            (
                json!([{"type": "id_card", "number": "E12345678"}]),
                "document_type_unknown",
                "documents[0].type",
            ),
            (
                json!([{"type": "passport", "country": "CHN"}]),
                "document_number_missing",
                "documents[0].number",
            ),
            (
                json!([{"type": "other", "number": "ABC"}, {"type": "passport", "number": "E1234-5678", "country": "CHN"}]),
                "document_number_format",
                "documents[1].number",
            ),
            (
                json!([{"type": "passport", "number": "E1234567", "country": "CHN"}]),
                "document_number_length",
                "documents[0].number",
            ),
            (
                json!([{"type": "passport", "number": "E12345678"}]),
                "document_country_missing",
                "documents[0].country",
            ),
            (
                json!([{"type": "passport", "number": "E12345678", "country": "ZZZ"}]),
                "document_country_unknown",
                "documents[0].country",
            ),
            (
                json!([{"type": "taiwan_travel_permit", "number": "12345678", "country": "TWN"}]),
                "document_country_mismatch",
                "documents[0].country",
            ),
            (
                json!([{"type": "foreign_permanent_resident_legacy", "number": "QQQ110012345678"}]),
                "document_number_nationality",
                "documents[0].number",
            ),
            (
                json!([{"type": "passport", "number": ["E12345678"], "country": "CHN"}]),
                "field_type",
                "documents[0].number",
            ),
            (
                json!([{"type": "other", "number": long}]),
                "field_too_long",
                "documents[0].number",
            ),
            (
                json!([{"type": "other", "number": "AB\u{7}C"}]),
                "field_control_characters",
                "documents[0].number",
            ),
        ];
        for (documents, code, field) in cases {
            let mut value = resident();
            value["documents"] = documents.clone();
            let err = Record::from_value(&value).unwrap_err();
            assert_eq!((err.code(), err.field()), (code, field), "{documents}");
            for secret in [
                "E12345678",
                "E1234-5678",
                "E1234567",
                "QQQ110012345678",
                "ZZZ",
            ] {
                assert!(!err.to_string().contains(secret), "{err}");
            }
        }
        let too_many: Vec<Value> = (0..=MAX_DOCUMENTS)
            .map(|i| json!({"type": "taiwan_travel_permit", "number": format!("{:08}", i)}))
            .collect();
        let mut value = resident();
        value["documents"] = json!(too_many);
        assert_eq!(
            Record::from_value(&value).unwrap_err().code(),
            "too_many_documents"
        );
        value["documents"] = json!(too_many[..MAX_DOCUMENTS]);
        assert_eq!(resident_body(&value).documents.len(), MAX_DOCUMENTS);
    }

    #[test]
    fn debug_of_a_resident_hides_document_numbers() {
        let mut value = resident();
        value["documents"] = json!([
            {"type": "passport", "number": "E12345678", "country": "CHN"},
            {"type": "hong_kong_macao_travel_permit", "number": "H1234567801"}
        ]);
        value["id_number"] = json!("932682198501010017");
        let shown = format!("{:?}", Record::from_value(&value).unwrap());
        for secret in [
            "E12345678",
            "H1234567801",
            "H12345678",
            "932682198501010017",
            "682",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn syntax_error_does_not_echo_input() {
        let err = Record::parse_json("{\"id_number\": 11010519491231002X").unwrap_err();
        assert_eq!(err.code(), "json_syntax");
        assert!(!err.message().contains("11010519491231002X"));
    }

    fn organization() -> Value {
        json!({"kind":"organization","source_id":"CG-SHOP-7","version":"2026-11-01T08:00:00Z",
            "name":"晨光便利店","uscc":"91330100799655058B","type":"shop",
            "address":"北京市朝阳区望京街道幸福里小区3号楼底商102","legal_rep_id_number":ID,
            "phone":"010-64701234","tags":["九小场所"],"attributes":{"fire_extinguishers":2}})
    }

    #[test]
    fn an_organization_parses_with_its_code_type_and_legal_representative() {
        let record = Record::from_value(&organization()).unwrap();
        assert_eq!(record.kind(), RecordKind::Organization);
        assert!(
            record.grid().is_none(),
            "the grid is derived from the address"
        );
        let Record::Organization { meta, body } = record else {
            panic!("not an organization")
        };
        assert_eq!(meta.source_id, "CG-SHOP-7");
        assert_eq!(body.uscc.unwrap().as_str(), "91330100799655058B");
        assert_eq!(body.organization_type.as_deref(), Some("shop"));
        assert_eq!(body.legal_rep_id_number.unwrap().as_str(), ID);
        assert_eq!(body.phone.unwrap().as_str(), "010-64701234");
        // Stored and shown as `type`, as departments send it.
        let stored = serde_json::to_value(Record::from_value(&organization()).unwrap()).unwrap();
        assert_eq!(stored["type"], "shop");
        assert_eq!(stored["kind"], "organization");
    }

    #[test]
    fn a_bad_organization_is_refused_with_the_field_that_is_wrong() {
        let cases = [
            ("uscc", json!("91330100799655058C"), "uscc_check", "uscc"),
            ("uscc", json!("9133010079965505"), "uscc_length", "uscc"),
            (
                "legal_rep_id_number",
                json!("110105194912310021"),
                "id_number_checksum",
                "legal_rep_id_number",
            ),
            ("phone", json!("12345"), "phone_length", "phone"),
            (
                "owner_id_number",
                json!(ID),
                "field_unknown",
                "owner_id_number",
            ),
        ];
        for (field, value, code, named) in cases {
            let mut record = organization();
            record[field] = value;
            let err = Record::from_value(&record).unwrap_err();
            assert_eq!((err.code(), err.field()), (code, named), "{field}");
            assert!(!err.message().contains("9133010079"), "{err}");
        }
        let mut nameless = organization();
        nameless["name"] = Value::Null;
        nameless["uscc"] = Value::Null;
        assert_eq!(
            Record::from_value(&nameless).unwrap_err().code(),
            "organization_unidentified"
        );
        // A sole trader known only by its code is an organization.
        nameless["uscc"] = json!("9144030071526726XG");
        assert!(Record::from_value(&nameless).is_ok());
        let mut tombstone = json!({"kind":"organization","source_id":"CG-SHOP-7",
            "version":"2026-11-02T08:00:00Z","deleted":true});
        assert!(Record::from_value(&tombstone).unwrap().meta().deleted);
        tombstone["kind"] = json!("organisation");
        assert_eq!(
            Record::from_value(&tombstone).unwrap_err().code(),
            "kind_unknown"
        );
    }
}
