//! The one place where a merged profile is cut down to what the caller may see: after
//! authorization, before serialization.
//!
//! Guarantees:
//! - Every field, tag, attribute group and conflicting alternative gets the level its class
//!   has for the caller's roles and purpose ([`ViewPlan`]), capped by the owner department's
//!   restrictions; a value without a class is hidden.
//! - Masks are chosen across fields, not one at a time: whenever the ID number is not shown in
//!   clear, the birth date is cut to the year (a masked ID hides exactly the birth date).
//! - Free text shown masked passes through PII redaction (identifiers by pattern; names of
//!   the residents involved, of the name directory, and those the segmenter tags as person
//!   names), so a description never reveals what the fields hide.
//! - A caller who may not see a department's sensitive class at all does not learn that the
//!   department holds a record about the resident (its sources, values and tags are removed).
//! - Roles combine per field, each inside its own restriction: a department analyst's levels
//!   apply only to its own department's data (and to none without `dept`); the other roles'
//!   levels are capped by the owner department's restrictions. Break-glass adds a role's
//!   `break_glass` levels, never above an owner restriction.
//! - Related lists (events, parties, occupants) obey the same department visibility as the
//!   record itself; related people outside the caller's jurisdiction are named masked.
//! - On the profile of a resident under 14 on the day of the read ([`crate::minor`]), every
//!   value of a class other than `public` and `internal` — each field (name, ID number,
//!   phone, addresses, gender, ethnicity, birth date, age …) and conflicting value, tag,
//!   attribute group and related entity's label — and the department visibility get, per
//!   role, the lower of the class's level and that role's `minor` level (hidden without a
//!   line), and never more than an owner restriction on `minor` allows. Break-glass lifts the
//!   `minor` level only where the policy has a `break_glass` line for it. The age is decided
//!   from the profile as resolved for the caller. Not covered: a child named as a related
//!   person (a house's occupant, an event's party) is named like an adult, since a related
//!   entity ([`model::profile::EntityRef`]) does not carry its birth date.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::mask;
use crate::minor::{is_capped, is_minor, is_minor_by_dates, today_in_china, MINOR_CLASS};
use crate::redact::{redact, NameDirectory};
use crate::Level;
use chrono::NaiveDate;
use model::{Department, RecordKind};
use serde_json::Value;

use model::DivisionCode;

use crate::authz::{Permission, PolicySet};
use crate::principal::Principal;
use model::profile::{MergedField, MergedTag, Profile};

/// The levels one of the caller's roles grants, inside that role's own restriction.
#[derive(Debug, Clone)]
struct RoleGrant {
    /// Level per data class (the stated purpose's, raised by break-glass where the role may
    /// break the glass).
    levels: HashMap<&'static str, Level>,
    /// A department analyst reads only its own department's data, at its own levels; every
    /// other role reads every department's data capped by the owner's restrictions.
    own_department_only: Option<Option<Department>>,
}

impl RoleGrant {
    fn class_level(&self, class: &str) -> Level {
        self.levels.get(class).copied().unwrap_or(Level::Hidden)
    }

    /// The class's level, on a minor's profile no higher than this role's `minor` level.
    fn subject_level(&self, class: &str, minor: bool) -> Level {
        let level = self.class_level(class);
        if minor && is_capped(class) {
            level.min(self.class_level(MINOR_CLASS))
        } else {
            level
        }
    }
}

/// What the caller may see, for one request.
#[derive(Debug, Clone)]
pub struct ViewPlan {
    policy: Arc<PolicySet>,
    /// One grant per role of the caller that may read personal data. Roles combine per
    /// field by the best grant, each grant inside its own restriction — never one role's
    /// levels over another role's scope.
    grants: Vec<RoleGrant>,
    break_glass: bool,
    /// Where the caller's jurisdiction ends: related people outside it are named masked,
    /// other related entities outside it lose their labels.
    jurisdiction: Vec<DivisionCode>,
    /// The day of the read (in China): who is under 14 is decided on it.
    today: NaiveDate,
}

/// What the view did, for the audit record.
#[derive(Debug, Default)]
pub struct ViewOutcome {
    pub fields_clear: Vec<String>,
    pub masked_or_hidden: usize,
    pub break_glass: bool,
    /// The profile was a minor's: the `minor` class capped its personal values.
    pub minor: bool,
}

impl ViewPlan {
    /// The plan for `principal` reading for `purpose`. With `break_glass` (the caller checked
    /// that some role may use it), each role that may break the glass adds its levels for the
    /// policy's `break_glass` purpose; owner restrictions still apply.
    pub fn new(
        policy: Arc<PolicySet>,
        principal: &Principal,
        purpose: &str,
        break_glass: bool,
    ) -> ViewPlan {
        let grants = principal
            .roles
            .iter()
            .filter(|role| policy.role_allows(role, Permission::ReadPersonalData))
            .map(|role| {
                let lifted = break_glass && policy.role_allows(role, Permission::UseBreakGlass);
                let levels = crate::CLASSES
                    .iter()
                    .map(|class| {
                        let mut level = policy.role_level(role, purpose, class);
                        if lifted {
                            level = level.max(policy.role_level(
                                role,
                                crate::BREAK_GLASS_PURPOSE,
                                class,
                            ));
                        }
                        (*class, level)
                    })
                    .collect();
                RoleGrant {
                    levels,
                    own_department_only: (role == "dept_analyst").then_some(principal.dept),
                }
            })
            .collect();
        ViewPlan {
            policy,
            grants,
            break_glass,
            jurisdiction: principal.jurisdiction.clone(),
            today: today_in_china(),
        }
    }

    /// The plan of a department receiving data under a sharing agreement (a subscription's
    /// delivery or feed): the agreement's levels per class for `receiver`, `kind` (of
    /// `event_type`) and `purpose`, capped by every owner department's restrictions like any
    /// reader's; `None` when no agreement covers it. On a child's profile the agreement's
    /// `minor` line caps personal values (none: hidden).
    pub fn for_agreement(
        policy: Arc<PolicySet>,
        receiver: Department,
        jurisdiction: Vec<DivisionCode>,
        kind: RecordKind,
        event_type: Option<&str>,
        purpose: &str,
    ) -> Option<ViewPlan> {
        let levels = policy
            .exchange
            .agreement(receiver, kind, event_type, purpose)?;
        Some(ViewPlan {
            policy,
            grants: vec![RoleGrant {
                levels,
                own_department_only: None,
            }],
            break_glass: false,
            jurisdiction,
            today: today_in_china(),
        })
    }

    pub fn policy_version(&self) -> &str {
        &self.policy.version
    }

    /// The day of the read (in China), on which the plan decides who is under 14.
    pub fn today(&self) -> NaiveDate {
        self.today
    }

    /// The level of data of `class` published by `owner`: the best of the caller's roles,
    /// each inside its own restriction.
    pub fn level(&self, class: &str, owner: Department) -> Level {
        self.subject_level(class, owner, false)
    }

    /// [`Self::level`] on the profile of a child under 14: each role's level no higher than
    /// its `minor` level, and within the owner's restriction on `minor` too.
    pub fn minor_level(&self, class: &str, owner: Department) -> Level {
        self.subject_level(class, owner, true)
    }

    fn subject_level(&self, class: &str, owner: Department, minor: bool) -> Level {
        let tables = &self.policy.tables;
        let mut cap = tables.owner_cap(owner, class);
        if minor && is_capped(class) {
            cap = cap.min(tables.owner_cap(owner, MINOR_CLASS));
        }
        self.grants
            .iter()
            .map(|grant| match grant.own_department_only {
                Some(own) if own == Some(owner) => grant.subject_level(class, minor),
                Some(_) => Level::Hidden,
                None => grant.subject_level(class, minor).min(cap),
            })
            .max()
            .unwrap_or(Level::Hidden)
    }

    /// The best level of a field whatever department published it (before owner
    /// restrictions): what search may match on at most.
    pub fn field_level(&self, kind: RecordKind, field: &str) -> Level {
        self.subject_field_level(kind, field, false)
    }

    /// [`Self::field_level`] on the profile of a child under 14.
    pub fn minor_field_level(&self, kind: RecordKind, field: &str) -> Level {
        self.subject_field_level(kind, field, true)
    }

    fn subject_field_level(&self, kind: RecordKind, field: &str, minor: bool) -> Level {
        match self.policy.tables.field_class(kind.as_str(), field) {
            Some(class) => self
                .grants
                .iter()
                .map(|grant| grant.subject_level(class, minor))
                .max()
                .unwrap_or(Level::Hidden),
            None => Level::Hidden,
        }
    }

    /// Whether `code` lies inside the caller's jurisdiction.
    pub fn covers(&self, code: &DivisionCode) -> bool {
        self.jurisdiction.iter().any(|j| j.contains(code))
    }

    /// Whether the caller may learn that `department` holds a record about a resident.
    pub fn department_visible(&self, department: Department) -> bool {
        self.department_visible_for(department, false)
    }

    fn department_visible_for(&self, department: Department, minor: bool) -> bool {
        let class = self.policy.tables.visibility_class(department);
        self.subject_level(class, department, minor) > Level::Hidden
    }

    /// Masks `profile` in place. `names` are names to redact from free text besides the
    /// directory's (e.g. the parties of an event).
    pub fn apply(
        &self,
        profile: &mut Profile,
        names: &[String],
        directory: Option<&NameDirectory>,
    ) -> ViewOutcome {
        // Decided on every birth date the profile holds, before anything is cut from it.
        let minor = is_minor(profile, self.today);
        let mut outcome = ViewOutcome {
            break_glass: self.break_glass,
            minor,
            ..ViewOutcome::default()
        };
        let kind = profile.kind;
        if kind == RecordKind::Resident {
            self.drop_invisible_departments(profile, minor, &mut outcome);
            add_age(profile, self.today);
        }
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let fields = std::mem::take(&mut profile.fields);
        for (name, field) in fields {
            let Some(class) = self.policy.tables.field_class(kind.as_str(), &name) else {
                outcome.masked_or_hidden += 1;
                continue;
            };
            match self.view_field(&name, class, minor, field, &name_refs, directory) {
                Some((field, level)) => {
                    if level == Level::Clear {
                        outcome.fields_clear.push(name.clone());
                    } else {
                        outcome.masked_or_hidden += 1;
                    }
                    profile.fields.insert(name, field);
                }
                None => outcome.masked_or_hidden += 1,
            }
        }
        self.cut_birth_date(profile, minor, &mut outcome);
        self.view_tags(profile, minor, &mut outcome);
        self.view_attributes(profile, minor, &mut outcome);
        self.view_related(profile, minor, &name_refs, directory);
        outcome
    }

    fn drop_invisible_departments(
        &self,
        profile: &mut Profile,
        minor: bool,
        outcome: &mut ViewOutcome,
    ) {
        let visible = |d: &Department| self.department_visible_for(*d, minor);
        let before = profile.sources.len();
        profile.sources.retain(|s| visible(&s.department));
        if profile.sources.len() < before {
            outcome.masked_or_hidden += before - profile.sources.len();
        }
        profile.fields.retain(|_, f| visible(&f.source));
        for field in profile.fields.values_mut() {
            field.conflicts.retain(|a| visible(&a.source));
        }
        for tag in &mut profile.tags {
            tag.sources.retain(visible);
        }
        profile.tags.retain(|t| !t.sources.is_empty());
        profile.attributes.retain(|d, _| visible(d));
        profile.history.retain(|m| visible(&m.department));
    }

    /// One field at its level; `None` when hidden. A hidden winner yields to the best visible
    /// alternative (its owner may allow more).
    fn view_field(
        &self,
        name: &str,
        class: &str,
        minor: bool,
        field: MergedField,
        names: &[&str],
        directory: Option<&NameDirectory>,
    ) -> Option<(MergedField, Level)> {
        let mut candidates: Vec<(Level, Value, Department, String)> = vec![(
            self.subject_level(class, field.source, minor),
            field.value,
            field.source,
            field.version,
        )];
        for alternative in field.conflicts {
            candidates.push((
                self.subject_level(class, alternative.source, minor),
                alternative.value,
                alternative.source,
                alternative.version,
            ));
        }
        let mut visible = candidates
            .into_iter()
            .filter(|(level, ..)| *level > Level::Hidden)
            .map(|(level, value, source, version)| {
                let value = if level == Level::Masked {
                    mask_field(name, value, names, directory)
                } else {
                    value
                };
                (level, value, source, version)
            });
        let (level, value, source, version) = visible.next()?;
        let mut conflicts = Vec::new();
        for (_, other, source, version) in visible {
            if other != value
                && !conflicts
                    .iter()
                    .any(|c: &model::profile::Alternative| c.value == other)
            {
                conflicts.push(model::profile::Alternative {
                    value: other,
                    source,
                    version,
                });
            }
        }
        Some((
            MergedField {
                value,
                source,
                version,
                conflicts,
            },
            level,
        ))
    }

    fn cut_birth_date(&self, profile: &mut Profile, minor: bool, outcome: &mut ViewOutcome) {
        let id_in_clear = profile
            .fields
            .get("id_number")
            .map(|f| self.subject_level("identifier", f.source, minor) == Level::Clear)
            .unwrap_or(false);
        if id_in_clear {
            return;
        }
        if let Some(field) = profile.fields.get_mut("birth_date") {
            let was_clear = field.value.as_str().is_some_and(|v| v.len() > 4);
            mask_in_place(&mut field.value, mask::mask_birth_date);
            for alternative in &mut field.conflicts {
                mask_in_place(&mut alternative.value, mask::mask_birth_date);
            }
            field.conflicts.dedup_by(|a, b| a.value == b.value);
            let value = field.value.clone();
            field.conflicts.retain(|a| a.value != value);
            if was_clear {
                outcome.fields_clear.retain(|f| f != "birth_date");
                outcome.masked_or_hidden += 1;
            }
        }
    }

    fn view_tags(&self, profile: &mut Profile, minor: bool, outcome: &mut ViewOutcome) {
        let tables = &self.policy.tables;
        let mut shown: BTreeMap<String, Vec<Department>> = BTreeMap::new();
        for tag in std::mem::take(&mut profile.tags) {
            let mut best = Level::Hidden;
            let mut class_of_best = "personal";
            let mut sources = Vec::new();
            for source in &tag.sources {
                let class = tables.tag_class(&tag.tag, *source);
                let level = self.subject_level(class, *source, minor);
                if level > Level::Hidden {
                    sources.push(*source);
                }
                if level > best {
                    best = level;
                    class_of_best = class;
                }
            }
            let label = match best {
                Level::Hidden => {
                    outcome.masked_or_hidden += 1;
                    continue;
                }
                Level::Masked => {
                    outcome.masked_or_hidden += 1;
                    tables.masked_label(class_of_best).to_owned()
                }
                Level::Clear => tag.tag,
            };
            let entry = shown.entry(label).or_default();
            for source in sources {
                if !entry.contains(&source) {
                    entry.push(source);
                }
            }
        }
        profile.tags = shown
            .into_iter()
            .map(|(tag, mut sources)| {
                sources.sort();
                MergedTag { tag, sources }
            })
            .collect();
    }

    fn view_attributes(&self, profile: &mut Profile, minor: bool, outcome: &mut ViewOutcome) {
        let tables = &self.policy.tables;
        let attributes = std::mem::take(&mut profile.attributes);
        for (department, mut map) in attributes {
            match self.subject_level(tables.attribute_class(department), department, minor) {
                Level::Clear => {
                    profile.attributes.insert(department, map);
                }
                Level::Masked => {
                    for value in map.values_mut() {
                        *value = Value::String("***".to_owned());
                    }
                    outcome.masked_or_hidden += 1;
                    profile.attributes.insert(department, map);
                }
                Level::Hidden => outcome.masked_or_hidden += 1,
            }
        }
    }

    /// Related entities obey the department visibility of the records they come from (an
    /// entity known only from departments the caller may not know about is left out), and
    /// their labels follow the same rules as the fields they come from; outside the caller's
    /// jurisdiction a person's name is at most masked and other labels are dropped. On a
    /// minor's profile the labels (its events' titles, the addresses it owns) are capped like
    /// its own fields.
    fn view_related(
        &self,
        profile: &mut Profile,
        minor: bool,
        names: &[&str],
        directory: Option<&NameDirectory>,
    ) {
        let name_level = self.subject_field_level(RecordKind::Resident, "name", minor);
        let child_name_level = self.subject_field_level(RecordKind::Resident, "name", true);
        let title_level = self.subject_field_level(RecordKind::Event, "title", minor);
        let address_level = self.subject_field_level(RecordKind::House, "address", minor);
        let organization_level = self.subject_field_level(RecordKind::Organization, "name", minor);
        for (relation, refs) in profile.related.iter_mut() {
            refs.retain(|entity| {
                entity.departments.is_empty()
                    || entity
                        .departments
                        .iter()
                        .any(|d| self.department_visible(*d))
            });
            for entity in refs.iter_mut() {
                let Some(label) = entity.label.take() else {
                    continue;
                };
                let inside = entity
                    .grid
                    .as_deref()
                    .and_then(|g| DivisionCode::parse(g).ok())
                    .is_some_and(|g| self.covers(&g));
                let (mut level, masked) = match relation.as_str() {
                    "occupants" | "parties" | "legal_representative" => {
                        let child = is_minor_by_dates(&entity.birth_dates, self.today);
                        let level = if child {
                            name_level.min(child_name_level)
                        } else {
                            name_level
                        };
                        (level, mask::mask_name(&label))
                    }
                    "events" => (
                        title_level,
                        redact(
                            &label,
                            names,
                            directory,
                            Some(&chinese_text::segment::person_name_spans),
                        ),
                    ),
                    "owner_of" | "premises" => (address_level, mask::mask_address(&label)),
                    "organizations" => (organization_level, mask::mask_name(&label)),
                    _ => (Level::Hidden, String::new()),
                };
                if !inside {
                    level = match relation.as_str() {
                        "occupants" | "parties" | "legal_representative" => {
                            level.min(Level::Masked)
                        }
                        _ => Level::Hidden,
                    };
                }
                entity.label = match level {
                    Level::Clear => Some(label),
                    Level::Masked => Some(masked),
                    Level::Hidden => None,
                };
            }
        }
    }
}

/// `age` (whole years on `today`) beside the birth date, so a masked birth date still tells
/// the age.
fn add_age(profile: &mut Profile, today: NaiveDate) {
    let Some(field) = profile.fields.get("birth_date") else {
        return;
    };
    let Some(birth) = field
        .value
        .as_str()
        .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    else {
        return;
    };
    let age = today.years_since(birth).unwrap_or(0);
    let age_field = MergedField {
        value: Value::from(age),
        source: field.source,
        version: field.version.clone(),
        conflicts: Vec::new(),
    };
    profile.fields.insert("age".to_owned(), age_field);
}

fn mask_in_place(value: &mut Value, mask: fn(&str) -> String) {
    if let Value::String(text) = value {
        *text = mask(text);
    }
}

/// The masked form of one field's value.
fn mask_field(
    name: &str,
    value: Value,
    names: &[&str],
    directory: Option<&NameDirectory>,
) -> Value {
    let masker: fn(&str) -> String = match name {
        "id_number" | "owner_id_number" | "legal_rep_id_number" | "uscc" => mask::mask_id_number,
        "phone" => mask::mask_phone,
        "name" => mask::mask_name,
        "address" | "hukou_address" => mask::mask_address,
        "birth_date" => mask::mask_birth_date,
        "documents" => return mask_documents(value),
        "history" => return mask_history(value, names, directory),
        "title" | "description" => {
            return match value {
                Value::String(text) => Value::String(redact(
                    &text,
                    names,
                    directory,
                    Some(&chinese_text::segment::person_name_spans),
                )),
                _ => Value::String("***".to_owned()),
            }
        }
        _ => |_: &str| "***".to_owned(),
    };
    match value {
        Value::String(text) => Value::String(masker(&text)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Value::String(masker(&text)),
                    _ => Value::String("***".to_owned()),
                })
                .collect(),
        ),
        _ => Value::String("***".to_owned()),
    }
}

/// An event's lifecycle history masked: each step keeps when it happened, the states it left
/// and entered and who moved it; its note and assignee, free text that may name people, are
/// redacted like a description; anything else in the list is hidden.
fn mask_history(value: Value, names: &[&str], directory: Option<&NameDirectory>) -> Value {
    let Value::Array(items) = value else {
        return Value::String("***".to_owned());
    };
    let masked = items
        .into_iter()
        .map(|item| {
            let Value::Object(fields) = item else {
                return Value::String("***".to_owned());
            };
            let mut out = serde_json::Map::new();
            for key in ["at", "from", "to", "actor"] {
                if let Some(v) = fields.get(key).filter(|v| v.is_string()) {
                    out.insert(key.to_owned(), v.clone());
                }
            }
            for key in ["note", "assignee"] {
                if let Some(text) = fields.get(key).and_then(Value::as_str) {
                    let redacted = redact(
                        text,
                        names,
                        directory,
                        Some(&chinese_text::segment::person_name_spans),
                    );
                    out.insert(key.to_owned(), Value::String(redacted));
                }
            }
            Value::Object(out)
        })
        .collect();
    Value::Array(masked)
}

/// Identity documents masked: each keeps its type and country, and its number only its last
/// four characters (`*****5678`); anything else in the list is hidden.
fn mask_documents(value: Value) -> Value {
    let Value::Array(items) = value else {
        return Value::String("***".to_owned());
    };
    let masked = items
        .into_iter()
        .map(|item| {
            let Value::Object(fields) = item else {
                return Value::String("***".to_owned());
            };
            let mut out = serde_json::Map::new();
            for key in ["type", "country"] {
                if let Some(v) = fields.get(key).filter(|v| v.is_string()) {
                    out.insert(key.to_owned(), v.clone());
                }
            }
            let number = fields.get("number").and_then(Value::as_str).unwrap_or("");
            let chars: Vec<char> = number.chars().collect();
            let masked = if chars.len() > 6 {
                let tail: String = chars[chars.len() - 4..].iter().collect();
                format!("{}{tail}", "*".repeat(chars.len() - 4))
            } else {
                "*".repeat(chars.len().max(1))
            };
            out.insert("number".to_owned(), Value::String(masked));
            Value::Object(out)
        })
        .collect();
    Value::Array(masked)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::authz::PolicyFiles;
    use model::profile::{EntityRef, SourceRef};

    /// Compiles a variant of the policy for the default purposes.
    fn compile(files: PolicyFiles) -> Arc<PolicySet> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let purposes: Vec<String> = crate::DEFAULT_PURPOSES
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        Arc::new(
            runtime
                .block_on(PolicySet::compile(&files, &purposes))
                .unwrap(),
        )
    }

    /// The default policy, and a variant where grid workers see personal data masked.
    fn policies() -> &'static (Arc<PolicySet>, Arc<PolicySet>) {
        static SETS: OnceLock<(Arc<PolicySet>, Arc<PolicySet>)> = OnceLock::new();
        SETS.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let purposes: Vec<String> = crate::DEFAULT_PURPOSES
                .iter()
                .map(|p| (*p).to_owned())
                .collect();
            let default = runtime
                .block_on(PolicySet::compile(&PolicyFiles::defaults(), &purposes))
                .unwrap();
            let strict_text = crate::DEFAULT_POLICY.replace(
                "p, grid_worker, *, field:personal, clear",
                "p, grid_worker, *, field:personal, masked",
            );
            let strict_files = PolicyFiles::defaults()
                .with_file("policy.csv", strict_text)
                .unwrap();
            let strict = runtime
                .block_on(PolicySet::compile(&strict_files, &purposes))
                .unwrap();
            (Arc::new(default), Arc::new(strict))
        })
    }

    fn principal(role: &str) -> Principal {
        Principal {
            sub: "t".into(),
            name: "t".into(),
            roles: vec![role.into()],
            jurisdiction: vec![],
            dept: None,
        }
    }

    fn field(value: Value, source: Department) -> MergedField {
        MergedField {
            value,
            source,
            version: "1".into(),
            conflicts: vec![],
        }
    }

    fn profile(id: &str, phone: &str, name: &str, other_phone: &str) -> Profile {
        let mut fields = BTreeMap::new();
        fields.insert(
            "id_number".into(),
            field(Value::from(id), Department::Gongan),
        );
        let mut phone_field = field(Value::from(phone), Department::Gongan);
        phone_field.conflicts.push(model::profile::Alternative {
            value: Value::from(other_phone),
            source: Department::Minzheng,
            version: "2".into(),
        });
        fields.insert("phone".into(), phone_field);
        fields.insert("name".into(), field(Value::from(name), Department::Gongan));
        fields.insert(
            "birth_date".into(),
            field(
                Value::from(format!("{}-{}-{}", &id[6..10], &id[10..12], &id[12..14])),
                Department::Gongan,
            ),
        );
        fields.insert(
            "grid".into(),
            field(Value::from("110105001001003"), Department::Gongan),
        );
        let mut related = BTreeMap::new();
        related.insert(
            "events".to_owned(),
            vec![EntityRef {
                label: Some(format!("{name}({id},{phone})来电")),
                departments: vec![Department::Wangge],
                grid: Some("110105001001003".into()),
                ..EntityRef::bare("e_1".into())
            }],
        );
        Profile {
            id: "r_1".into(),
            kind: RecordKind::Resident,
            grid: Some("110105001001003".into()),
            fields,
            tags: vec![],
            attributes: BTreeMap::new(),
            related,
            sources: vec![SourceRef {
                department: Department::Gongan,
                source_id: "GA-1".into(),
                version: "1".into(),
                received_at: chrono::Utc::now(),
            }],
            history: vec![],
        }
    }

    #[test]
    fn a_department_receives_exactly_what_its_agreement_allows() {
        let (default, _) = policies();
        let grid = vec![DivisionCode::parse("110105001").unwrap()];
        let plan = |receiver, kind, event_type, purpose| {
            ViewPlan::for_agreement(
                default.clone(),
                receiver,
                grid.clone(),
                kind,
                event_type,
                purpose,
            )
        };
        // No agreement, no plan: another purpose, another type, another department.
        assert!(plan(
            Department::Sifa,
            RecordKind::Event,
            Some("dispute"),
            "routine_visit"
        )
        .is_none());
        assert!(plan(
            Department::Sifa,
            RecordKind::Event,
            Some("fire_hazard"),
            "dispute_mediation"
        )
        .is_none());
        assert!(plan(
            Department::Weijian,
            RecordKind::Event,
            Some("dispute"),
            "dispute_mediation"
        )
        .is_none());
        let sifa = plan(
            Department::Sifa,
            RecordKind::Event,
            Some("dispute"),
            "dispute_mediation",
        )
        .expect("the justice office's agreement");
        assert_eq!(sifa.field_level(RecordKind::Event, "title"), Level::Clear);
        assert_eq!(
            sifa.field_level(RecordKind::Event, "party_id_numbers"),
            Level::Masked
        );
        assert_eq!(sifa.field_level(RecordKind::Resident, "name"), Level::Clear);
        // The police get the same dispute masked, and no class the agreement does not name.
        let gongan = plan(
            Department::Gongan,
            RecordKind::Event,
            Some("dispute"),
            "routine_visit",
        )
        .expect("the police station's agreement");
        assert_eq!(
            gongan.field_level(RecordKind::Event, "title"),
            Level::Masked
        );
        assert_eq!(
            gongan.field_level(RecordKind::Event, "party_id_numbers"),
            Level::Hidden
        );
        // An owner restriction caps an agreement like any reader: civil affairs gets health
        // tags masked, never 卫健's details.
        let minzheng = plan(
            Department::Minzheng,
            RecordKind::Resident,
            None,
            "elderly_care",
        )
        .expect("civil affairs' agreement");
        assert_eq!(minzheng.level("health", Department::Weijian), Level::Masked);
        assert_eq!(
            minzheng.level("health_detail", Department::Weijian),
            Level::Hidden
        );
        assert_eq!(
            minzheng.level("criminal_justice", Department::Sifa),
            Level::Hidden
        );
        let mut child = profile("110105201601010012", "13812345678", "王小明", "13900000000");
        minzheng.apply(&mut child, &[], None);
        assert!(
            !child.fields.contains_key("name"),
            "no minor line: a child's name is hidden: {child:?}"
        );
    }

    prop_compose! {
        fn resident()(region in 110101u32..659999, year in 1920u32..2020, month in 1u32..13, day in 1u32..29,
                      seq in 0u32..1000, phone in 13_000_000_000u64..19_999_999_999,
                      other in 13_000_000_000u64..19_999_999_999,
                      surname in prop::sample::select(vec!["张", "王", "欧阳", "单", "李"]),
                      given in "[\u{4e00}-\u{4fff}]{1,2}") -> (String, String, String, String) {
            let first17 = format!("{region:06}{year:04}{month:02}{day:02}{seq:03}");
            let check = model::id_number_check_digit(&first17).unwrap();
            (format!("{first17}{check}"), phone.to_string(), format!("{surname}{given}"), other.to_string())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// A masked response never holds the full value of a masked field anywhere in its body,
        /// free text included.
        #[test]
        fn masked_values_never_appear_anywhere((id, phone, name, other) in resident()) {
            let (default, strict) = policies();
            for (policy, role, purpose) in [
                (default, "grid_worker", "routine_visit"),
                (default, "community_officer", "elderly_care"),
                (default, "street_officer", "routine_visit"),
                (strict, "grid_worker", "routine_visit"),
            ] {
                let plan = ViewPlan::new(policy.clone(), &principal(role), purpose, false);
                let mut view = profile(&id, &phone, &name, &other);
                let names = vec![name.clone()];
                plan.apply(&mut view, &names, None);
                // Every value the profile holds, whether or not it would be serialized.
                let body = format!("{view:?}");
                let id_level = plan.field_level(RecordKind::Resident, "id_number");
                let personal = plan.field_level(RecordKind::Resident, "phone");
                if id_level != Level::Clear {
                    prop_assert!(!body.contains(&id), "{role}: {body}");
                    prop_assert!(!body.contains(&id[6..14]), "birth date beside masked id: {body}");
                }
                if personal != Level::Clear {
                    prop_assert!(!body.contains(&phone), "{role}: {body}");
                    prop_assert!(!body.contains(&other), "{role}: {body}");
                    prop_assert!(!body.contains(&name), "{role}: {body}");
                }
            }
        }
    }

    fn principal_with(roles: &[&str], dept: Option<Department>) -> Principal {
        Principal {
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            dept,
            jurisdiction: vec![model::DivisionCode::parse("110105001001").unwrap()],
            ..principal("t")
        }
    }

    #[test]
    fn roles_combine_each_inside_its_own_restriction() {
        let (default, _) = policies();
        // An analyst of 司法 who is also a grid worker: the analyst's clear levels apply to
        // 司法's data only; 卫健's health data stays at the grid worker's level (hidden).
        let both = principal_with(&["grid_worker", "dept_analyst"], Some(Department::Sifa));
        let plan = ViewPlan::new(default.clone(), &both, "routine_visit", false);
        assert_eq!(
            plan.level("criminal_justice", Department::Sifa),
            Level::Clear
        );
        assert_eq!(plan.level("health", Department::Weijian), Level::Hidden);
        assert_eq!(
            plan.level("health_detail", Department::Weijian),
            Level::Hidden
        );
        assert_eq!(plan.level("personal", Department::Gongan), Level::Clear);
        assert!(!plan.department_visible(Department::Weijian));
        // An analyst without a department sees nothing at all.
        let nobody = principal_with(&["dept_analyst"], None);
        let plan = ViewPlan::new(default.clone(), &nobody, "routine_visit", false);
        for department in Department::ALL {
            for class in crate::CLASSES {
                assert_eq!(plan.level(class, department), Level::Hidden, "{class}");
            }
        }
    }

    #[test]
    fn break_glass_lifts_a_role_but_never_above_the_owner_restriction() {
        let (default, _) = policies();
        let officer = principal_with(&["community_officer"], None);
        let normal = ViewPlan::new(default.clone(), &officer, "emergency", false);
        let glass = ViewPlan::new(default.clone(), &officer, "emergency", true);
        assert_eq!(normal.level("health", Department::Weijian), Level::Masked);
        assert_eq!(glass.level("health", Department::Weijian), Level::Clear);
        // 卫健 never shares the diagnosis; the community officer never sees full IDs.
        assert_eq!(
            glass.level("health_detail", Department::Weijian),
            Level::Hidden
        );
        assert_eq!(glass.level("identifier", Department::Gongan), Level::Masked);
        // A grid worker cannot break the glass: its levels stay.
        let worker = principal_with(&["grid_worker"], None);
        let plan = ViewPlan::new(default.clone(), &worker, "routine_visit", true);
        assert_eq!(plan.level("health", Department::Weijian), Level::Hidden);
    }

    #[test]
    fn clear_purpose_shows_the_id_and_the_birth_date() {
        let (default, _) = policies();
        let plan = ViewPlan::new(
            default.clone(),
            &principal("street_officer"),
            "case_investigation",
            false,
        );
        let mut view = profile("11010519491231002X", "13812345678", "张三", "13912345678");
        let outcome = plan.apply(&mut view, &[], None);
        assert_eq!(view.fields["id_number"].value, "11010519491231002X");
        assert_eq!(view.fields["birth_date"].value, "1949-12-31");
        assert_eq!(
            view.fields["age"].value.as_u64().map(|a| a > 70),
            Some(true)
        );
        assert!(outcome.fields_clear.contains(&"id_number".to_owned()));
        assert_eq!(outcome.masked_or_hidden, 0);
        assert!(!outcome.break_glass);
    }

    // -----------------------------------------------------------------------------------
    // Minors: personal information of a child under 14 (PIPL arts. 28, 31).

    const CHILD: &str = "王小明";
    const CHILD_PHONE: &str = "13800001111";
    const GUARDIAN: &str = "祖母";
    const DIAGNOSIS: &str = "哮喘";

    /// A resident born `years` years and `days_later` days after `today` minus `years`, as
    /// four departments publish it: the household register, civil affairs (a child-welfare
    /// tag and detail), health (a tag and a diagnosis), and a grid event naming the person.
    fn resident_born(today: NaiveDate, years: u32, days_later: i64) -> (Profile, String) {
        let birth = today
            .checked_sub_months(chrono::Months::new(12 * years))
            .unwrap()
            + chrono::TimeDelta::days(days_later);
        let first17 = format!("110105{}003", birth.format("%Y%m%d"));
        let id = format!(
            "{first17}{}",
            model::id_number_check_digit(&first17).unwrap()
        );
        let mut view = profile(&id, CHILD_PHONE, CHILD, "13900002222");
        view.fields.insert(
            "birth_date".into(),
            field(
                Value::from(birth.format("%Y-%m-%d").to_string()),
                Department::Gongan,
            ),
        );
        view.fields.insert(
            "address".into(),
            field(
                Value::from("北京市朝阳区望京街道幸福里小区3号楼2单元501"),
                Department::Gongan,
            ),
        );
        view.fields.insert(
            "house_source_id".into(),
            field(Value::from("ZJ-55"), Department::Zhujian),
        );
        view.tags = vec![
            MergedTag {
                tag: "户籍人口".into(),
                sources: vec![Department::Gongan],
            },
            MergedTag {
                tag: "留守儿童".into(),
                sources: vec![Department::Minzheng],
            },
            MergedTag {
                tag: "慢性病".into(),
                sources: vec![Department::Weijian],
            },
        ];
        let detail = |k: &str, v: &str| {
            let mut map = serde_json::Map::new();
            map.insert(k.to_owned(), Value::from(v));
            map
        };
        view.attributes
            .insert(Department::Minzheng, detail("guardian", GUARDIAN));
        view.attributes
            .insert(Department::Weijian, detail("diagnosis", DIAGNOSIS));
        view.related.insert(
            "events".to_owned(),
            vec![EntityRef {
                label: Some(format!("{CHILD}走失求助")),
                departments: vec![Department::Wangge],
                grid: Some("110105001001003".into()),
                ..EntityRef::bare("e_1".into())
            }],
        );
        for department in [Department::Minzheng, Department::Weijian] {
            view.sources.push(SourceRef {
                department,
                source_id: format!("{}-1", department.code()),
                version: "1".into(),
                received_at: chrono::Utc::now(),
            });
        }
        (view, id)
    }

    fn text_of(view: &Profile, name: &str) -> Option<String> {
        view.fields
            .get(name)
            .and_then(|f| f.value.as_str())
            .map(str::to_owned)
    }

    fn tag_labels(view: &Profile) -> Vec<&str> {
        view.tags.iter().map(|t| t.tag.as_str()).collect()
    }

    fn plan_for(
        policy: &Arc<PolicySet>,
        roles: &[&str],
        dept: Option<Department>,
        purpose: &str,
        glass: bool,
    ) -> ViewPlan {
        ViewPlan::new(policy.clone(), &principal_with(roles, dept), purpose, glass)
    }

    /// A 10-year-old read by every default role, for a routine visit and for child
    /// protection: only community and street officers doing child protection read the name,
    /// phone and welfare detail in clear; everyone else masked at most; roles that read no
    /// personal data nothing. The adult of the same record is the control.
    #[test]
    fn a_child_is_read_at_each_roles_minor_level() {
        let (default, _) = policies();
        for role in crate::ROLES {
            for purpose in ["routine_visit", "child_protection"] {
                let expected = match (role, purpose) {
                    ("community_officer" | "street_officer", "child_protection") => Level::Clear,
                    (
                        "grid_worker" | "community_officer" | "street_officer" | "dept_analyst",
                        _,
                    ) => Level::Masked,
                    _ => Level::Hidden,
                };
                let plan = plan_for(default, &[role], Some(Department::Gongan), purpose, false);
                let (mut view, id) = resident_born(plan.today(), 10, 0);
                let outcome = plan.apply(&mut view, &[CHILD.to_owned()], None);
                let body = format!("{view:?}");
                let case = format!("{role} {purpose}: {body}");
                assert!(outcome.minor, "{case}");
                assert_eq!(
                    plan.minor_field_level(RecordKind::Resident, "name"),
                    expected,
                    "{case}"
                );
                let (name, phone) = match expected {
                    Level::Clear => (Some(CHILD.to_owned()), Some(CHILD_PHONE.to_owned())),
                    Level::Masked => (Some("王**".to_owned()), Some("138****1111".to_owned())),
                    Level::Hidden => (None, None),
                };
                assert_eq!(text_of(&view, "name"), name, "{case}");
                assert_eq!(text_of(&view, "phone"), phone, "{case}");
                assert_eq!(
                    text_of(&view, "id_number"),
                    (expected > Level::Hidden).then(|| mask::mask_id_number(&id)),
                    "{case}"
                );
                assert_eq!(
                    text_of(&view, "birth_date"),
                    (expected > Level::Hidden).then(|| id[6..10].to_owned()),
                    "{case}"
                );
                // Nobody reads the full ID, the full birth date or the diagnosis; the name,
                // the phone and the child-welfare detail only in clear.
                assert!(!body.contains(&id) && !body.contains(&id[6..14]), "{case}");
                assert!(!body.contains(DIAGNOSIS), "{case}");
                assert_eq!(body.contains(CHILD), expected == Level::Clear, "{case}");
                assert_eq!(
                    body.contains(CHILD_PHONE),
                    expected == Level::Clear,
                    "{case}"
                );
                assert_eq!(body.contains(GUARDIAN), expected == Level::Clear, "{case}");
                assert_eq!(
                    body.contains("留守儿童"),
                    expected == Level::Clear,
                    "{case}"
                );
                if expected == Level::Masked {
                    assert!(
                        outcome
                            .fields_clear
                            .iter()
                            .all(|f| f == "grid" || f == "house_source_id"),
                        "{case}: {:?}",
                        outcome.fields_clear
                    );
                    assert_eq!(
                        text_of(&view, "address").as_deref(),
                        Some("北京市朝阳区望京街道幸福里小区3号楼****"),
                        "{case}"
                    );
                    assert!(tag_labels(&view).contains(&"***"), "{case}");
                }
                if expected > Level::Hidden {
                    // Where the child is (public) and which house (internal) stay readable.
                    assert_eq!(
                        text_of(&view, "grid").as_deref(),
                        Some("110105001001003"),
                        "{case}"
                    );
                }
            }
        }
        // The control: the same record of an adult is read in clear by a grid worker.
        let plan = plan_for(default, &["grid_worker"], None, "routine_visit", false);
        let (mut adult, _) = resident_born(plan.today(), 40, 0);
        let outcome = plan.apply(&mut adult, &[CHILD.to_owned()], None);
        assert!(!outcome.minor);
        assert_eq!(text_of(&adult, "name").as_deref(), Some(CHILD));
        assert_eq!(text_of(&adult, "phone").as_deref(), Some(CHILD_PHONE));
        assert!(tag_labels(&adult).contains(&"户籍人口"), "{adult:?}");
    }

    #[test]
    fn fourteen_today_is_read_as_an_adult_and_fourteen_tomorrow_as_a_child() {
        let (default, _) = policies();
        let plan = plan_for(default, &["grid_worker"], None, "routine_visit", false);
        let (mut fourteen, _) = resident_born(plan.today(), 14, 0);
        let outcome = plan.apply(&mut fourteen, &[], None);
        assert!(!outcome.minor);
        assert_eq!(text_of(&fourteen, "name").as_deref(), Some(CHILD));
        assert_eq!(fourteen.fields["age"].value, 14);
        let (mut thirteen, _) = resident_born(plan.today(), 14, 1);
        let outcome = plan.apply(&mut thirteen, &[], None);
        assert!(outcome.minor);
        assert_eq!(text_of(&thirteen, "name").as_deref(), Some("王**"));
        // The age is personal too: masked with the rest.
        assert_eq!(thirteen.fields["age"].value, "***");
    }

    #[test]
    fn the_id_number_tells_a_child_when_the_birth_date_is_missing() {
        let (default, _) = policies();
        let plan = plan_for(default, &["grid_worker"], None, "routine_visit", false);
        for (years, minor) in [(10, true), (40, false)] {
            let (mut view, _) = resident_born(plan.today(), years, 0);
            view.fields.remove("birth_date");
            let outcome = plan.apply(&mut view, &[], None);
            assert_eq!(outcome.minor, minor, "{years}");
            let name = if minor { "王**" } else { CHILD };
            assert_eq!(text_of(&view, "name").as_deref(), Some(name), "{years}");
        }
        // Without an ID number or a birth date nobody is a minor (the rule cannot know).
        let (mut unknown, _) = resident_born(plan.today(), 10, 0);
        unknown.fields.remove("birth_date");
        unknown.fields.remove("id_number");
        assert!(!plan.apply(&mut unknown, &[], None).minor);
        assert_eq!(text_of(&unknown, "name").as_deref(), Some(CHILD));
    }

    #[test]
    fn break_glass_never_lifts_a_child_above_the_minor_level_unless_the_policy_grants_it() {
        let (default, _) = policies();
        // Break-glass shows an adult's health tag and a street officer's full ID number …
        for role in ["community_officer", "street_officer"] {
            let plan = plan_for(default, &[role], None, "emergency", true);
            let (mut adult, adult_id) = resident_born(plan.today(), 40, 0);
            plan.apply(&mut adult, &[], None);
            assert!(tag_labels(&adult).contains(&"慢性病"), "{role}: {adult:?}");
            let (mut child, child_id) = resident_born(plan.today(), 10, 0);
            let outcome = plan.apply(&mut child, &[], None);
            assert!(outcome.break_glass && outcome.minor);
            // … never a child's: masked, as the minor level allows.
            assert!(!tag_labels(&child).contains(&"慢性病"), "{role}: {child:?}");
            assert!(
                tag_labels(&child).contains(&"健康关注"),
                "{role}: {child:?}"
            );
            assert_eq!(text_of(&child, "name").as_deref(), Some("王**"), "{role}");
            assert!(!format!("{child:?}").contains(&child_id), "{role}");
            if role == "street_officer" {
                assert_eq!(text_of(&adult, "id_number"), Some(adult_id), "{role}");
            }
        }
        // A policy that lets street officers break the glass for children does lift it —
        // still never above an owner restriction (卫健's diagnosis stays out).
        let granted = crate::DEFAULT_POLICY.replace(
            "p, street_officer, child_protection, field:minor, clear",
            "p, street_officer, child_protection, field:minor, clear\np, street_officer, break_glass, field:minor, clear",
        );
        let granted = compile(
            PolicyFiles::defaults()
                .with_file("policy.csv", granted)
                .unwrap(),
        );
        let glass = plan_for(&granted, &["street_officer"], None, "emergency", true);
        let (mut child, child_id) = resident_born(glass.today(), 10, 0);
        glass.apply(&mut child, &[], None);
        assert_eq!(text_of(&child, "id_number"), Some(child_id.clone()));
        assert!(tag_labels(&child).contains(&"慢性病"), "{child:?}");
        assert!(!format!("{child:?}").contains(DIAGNOSIS));
        // Without the glass, the same policy keeps the child masked for an emergency.
        let normal = plan_for(&granted, &["street_officer"], None, "emergency", false);
        let (mut child, _) = resident_born(normal.today(), 10, 0);
        normal.apply(&mut child, &[], None);
        assert_eq!(text_of(&child, "name").as_deref(), Some("王**"));
        assert!(!format!("{child:?}").contains(&child_id));
    }

    /// Each role's `minor` level caps that role's own levels: an analyst's clear health data
    /// does not borrow a street officer's child-protection level.
    #[test]
    fn the_minor_cap_applies_inside_each_role() {
        let (default, _) = policies();
        let plan = plan_for(
            default,
            &["street_officer", "dept_analyst"],
            Some(Department::Weijian),
            "child_protection",
            false,
        );
        assert_eq!(
            plan.level("health_detail", Department::Weijian),
            Level::Clear
        );
        assert_eq!(
            plan.minor_level(MINOR_CLASS, Department::Weijian),
            Level::Clear
        );
        assert_eq!(
            plan.minor_level("health_detail", Department::Weijian),
            Level::Masked
        );
        let (mut child, _) = resident_born(plan.today(), 10, 0);
        plan.apply(&mut child, &[], None);
        assert!(!format!("{child:?}").contains(DIAGNOSIS), "{child:?}");
        assert_eq!(
            child.attributes[&Department::Weijian]["diagnosis"],
            "***",
            "{child:?}"
        );
        // The street officer's own child-protection level still shows the name.
        assert_eq!(text_of(&child, "name").as_deref(), Some(CHILD));
    }

    /// A minor level of hidden hides every personal value and which departments hold
    /// records; an owner restriction on `minor` caps that department's data about children.
    #[test]
    fn a_hidden_minor_level_and_an_owner_restriction_on_minor() {
        let hidden = crate::DEFAULT_POLICY.replace("p, grid_worker, *, field:minor, masked\n", "");
        let hidden = compile(
            PolicyFiles::defaults()
                .with_file("policy.csv", hidden)
                .unwrap(),
        );
        let plan = plan_for(&hidden, &["grid_worker"], None, "routine_visit", false);
        let (mut child, _) = resident_born(plan.today(), 10, 0);
        plan.apply(&mut child, &[CHILD.to_owned()], None);
        // Not even the grid field: the departments that hold it are not to be known.
        assert!(child.fields.is_empty(), "{child:?}");
        assert!(
            child.sources.is_empty() && child.tags.is_empty(),
            "{child:?}"
        );
        assert!(child.attributes.is_empty(), "{child:?}");
        assert_eq!(child.related["events"][0].label, None);
        let (mut adult, _) = resident_born(plan.today(), 40, 0);
        plan.apply(&mut adult, &[], None);
        assert_eq!(text_of(&adult, "name").as_deref(), Some(CHILD));

        let mut files = PolicyFiles::defaults();
        files
            .tables
            .owner_restrictions
            .push_str("minzheng, minor, masked\n");
        let restricted = compile(files);
        let plan = plan_for(
            &restricted,
            &["community_officer"],
            None,
            "child_protection",
            false,
        );
        let (mut child, _) = resident_born(plan.today(), 10, 0);
        plan.apply(&mut child, &[], None);
        assert_eq!(text_of(&child, "name").as_deref(), Some(CHILD));
        assert!(tag_labels(&child).contains(&"民政关注"), "{child:?}");
        assert_eq!(child.attributes[&Department::Minzheng]["guardian"], "***");
        let (mut adult, _) = resident_born(plan.today(), 40, 0);
        plan.apply(&mut adult, &[], None);
        assert!(tag_labels(&adult).contains(&"留守儿童"), "{adult:?}");
    }

    #[test]
    fn a_childs_related_labels_are_capped_like_its_fields() {
        let (default, _) = policies();
        // A street officer investigating a case reads event titles in clear …
        let plan = plan_for(
            default,
            &["street_officer"],
            None,
            "case_investigation",
            false,
        );
        let names = [CHILD.to_owned()];
        let (mut adult, _) = resident_born(plan.today(), 40, 0);
        plan.apply(&mut adult, &names, None);
        assert_eq!(
            adult.related["events"][0].label.as_deref(),
            Some("王小明走失求助")
        );
        // … but a child's only as the minor level allows: redacted.
        let (mut child, _) = resident_born(plan.today(), 10, 0);
        plan.apply(&mut child, &names, None);
        let label = child.related["events"][0].label.clone().unwrap_or_default();
        assert!(
            !label.contains(CHILD) && label.contains("走失求助"),
            "{label}"
        );
    }

    #[test]
    fn identity_documents_are_masked_keeping_type_country_and_the_last_four() {
        let masked = mask_field(
            "documents",
            serde_json::json!([{"type":"passport","number":"E12345678","country":"CHN"},
                {"type":"military_id","number":"12345"}, "odd"]),
            &[],
            None,
        );
        assert_eq!(
            masked,
            serde_json::json!([{"type":"passport","country":"CHN","number":"*****5678"},
                {"type":"military_id","number":"*****"}, "***"])
        );
    }
}
