//! The merged view of one unified entity, as the engine builds it and the policies cut it:
//! every field with the department and version it came from, the values other departments
//! hold, tags, department detail, related entities and the history of scope moves.
//!
//! Guarantees: [`Profile`] and its parts are not `Serialize`. A profile holds personal data
//! in the clear; it reaches a client only through the broker's disclosure gate, which turns
//! it into a disclosable view after the view plan has cut it. ([`ScopeMove`] is serialisable:
//! it names only entities, a department and community codes, and the engine stores it.)

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Department, RecordKind};

/// One merged field with its provenance.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct MergedField {
    pub value: Value,
    /// Department the value came from.
    #[schema(value_type = String)]
    pub source: Department,
    /// Version of the source record it came from.
    pub version: String,
    /// Values other departments hold for this field, when they disagree (absent when none).
    #[schema(required = false)]
    pub conflicts: Vec<Alternative>,
}

#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct Alternative {
    pub value: Value,
    #[schema(value_type = String)]
    pub source: Department,
    pub version: String,
}

/// A tag and the departments that assert it.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct MergedTag {
    pub tag: String,
    #[schema(value_type = Vec<String>)]
    pub sources: Vec<Department>,
}

/// A source record that contributes to an entity.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct SourceRef {
    #[schema(value_type = String)]
    pub department: Department,
    pub source_id: String,
    pub version: String,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// A reference to another entity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, utoipa::ToSchema)]
pub struct EntityRef {
    pub id: String,
    /// Display label (a name for occupants, a title for events), when known.
    pub label: Option<String>,
    /// Departments whose records form the related entity (empty when not read): the view
    /// leaves it out when the caller may know none of them.
    #[schema(ignore)]
    pub departments: Vec<Department>,
    /// The related entity's grid, when known: the view checks it against the caller's
    /// jurisdiction.
    #[schema(ignore)]
    pub grid: Option<String>,
    /// For a related person: every birth date known for them (stated, or in an ID number),
    /// so the view can tell a child under 14 and name them at the `minor` level.
    #[schema(ignore)]
    pub birth_dates: Vec<chrono::NaiveDate>,
}

impl EntityRef {
    /// A reference known only by its id.
    pub fn bare(id: String) -> EntityRef {
        EntityRef {
            id,
            label: None,
            departments: Vec::new(),
            grid: None,
            birth_dates: Vec::new(),
        }
    }
}

/// The merged view of one entity of any kind.
#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct Profile {
    pub id: String,
    #[schema(value_type = String)]
    pub kind: RecordKind,
    /// Grid the entity lies in (by the authority order).
    pub grid: Option<String>,
    pub fields: BTreeMap<String, MergedField>,
    /// Tags with the departments that assert them (absent when none).
    #[schema(required = false)]
    pub tags: Vec<MergedTag>,
    /// Department-specific detail, per department (absent when none).
    #[schema(value_type = Object, required = false)]
    pub attributes: BTreeMap<Department, Map<String, Value>>,
    /// Related entities: `house`, `occupants`, `events`, `parties`, `owner_of`.
    pub related: BTreeMap<String, Vec<EntityRef>>,
    pub sources: Vec<SourceRef>,
    /// Records that moved the resident into another community, oldest first (absent when
    /// none).
    #[schema(value_type = Vec<Object>, required = false)]
    pub history: Vec<ScopeMove>,
}

/// A resident record that places the person in another community than the entity's other
/// records (or the record's own previous version) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeMove {
    pub entity: String,
    pub department: Department,
    pub at: DateTime<Utc>,
    /// The community (12-digit code) the person was in.
    pub from: String,
    /// The community the record places the person in.
    pub to: String,
}

/// One move of an event through its lifecycle (上报 reported -> 受理 accepted -> 分拨
/// dispatched -> 处置 in progress -> 办结 resolved -> 核查 verified -> 结案 closed, or 驳回
/// rejected), kept with the event's record: the broker appends one with every transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventTransition {
    /// When the event moved.
    pub at: DateTime<Utc>,
    /// The state it left.
    pub from: String,
    /// The state it entered.
    pub to: String,
    /// Who moved it (the token's `sub`).
    pub actor: String,
    /// What the actor wrote (free text: it may name people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// To whom the work was given (a staff member, a team or a department, as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
}
