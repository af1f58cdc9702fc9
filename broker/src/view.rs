//! The one place where a merged profile is cut down to what the caller may see: after
//! authorization, before serialization.
//!
//! Guarantees:
//! - Every field, tag, attribute group and conflicting alternative gets the level its class
//!   has for the caller's roles and purpose ([`ViewPlan`]), capped by the owner department's
//!   restrictions; a value without a class is hidden.
//! - Masks are chosen across fields, not one at a time: whenever the ID number is not shown in
//!   clear, the birth date is cut to the year (a masked ID hides exactly the birth date).
//! - Free text shown masked passes through PII redaction (identifiers by pattern, names of
//!   the residents involved and of the name directory), so a description never reveals what
//!   the fields hide.
//! - A caller who may not see a department's sensitive class at all does not learn that the
//!   department holds a record about the resident (its sources, values and tags are removed).
//! - A department analyst sees only their own department's data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use audit::Decision;
use model::{Department, RecordKind};
use policies::mask;
use policies::redact::{redact, NameDirectory};
use policies::Level;
use serde_json::Value;

use crate::auth::Principal;
use crate::authz::PolicySet;
use crate::resolve::{MergedField, MergedTag, Profile};

/// Roles that read personal data besides the department analyst.
const READER_ROLES: [&str; 3] = ["grid_worker", "community_officer", "street_officer"];

/// What the caller may see, for one request.
#[derive(Debug, Clone)]
pub struct ViewPlan {
    policy: Arc<PolicySet>,
    base: HashMap<&'static str, Level>,
    /// Set when the caller reads only as a department analyst: other departments are hidden.
    analyst_of: Option<Department>,
    break_glass: bool,
}

/// What the view did, for the audit record.
#[derive(Debug, Default)]
pub struct ViewOutcome {
    pub fields_clear: Vec<String>,
    pub masked_or_hidden: usize,
    pub break_glass: bool,
}

impl ViewOutcome {
    pub fn decision(&self) -> Decision {
        if self.break_glass {
            Decision::BreakGlass
        } else if self.masked_or_hidden == 0 {
            Decision::Allow
        } else {
            Decision::Masked
        }
    }
}

impl ViewPlan {
    /// The plan for `principal` reading for `purpose`; `break_glass` shows everything in
    /// clear (the caller checked the role may use it).
    pub fn new(policy: Arc<PolicySet>, principal: &Principal, purpose: &str, break_glass: bool) -> ViewPlan {
        let base = policies::CLASSES
            .iter()
            .map(|class| (*class, policy.level(&principal.roles, purpose, class)))
            .collect();
        let analyst_only = principal.has_role("dept_analyst")
            && !READER_ROLES.iter().any(|r| principal.has_role(r));
        ViewPlan {
            policy,
            base,
            analyst_of: if analyst_only { principal.dept } else { None },
            break_glass,
        }
    }

    pub fn policy_version(&self) -> &str {
        &self.policy.version
    }

    /// The level of data of `class` published by `owner`.
    pub fn level(&self, class: &str, owner: Department) -> Level {
        if let Some(own) = self.analyst_of {
            if own != owner {
                return Level::Hidden;
            }
        }
        if self.break_glass {
            return Level::Clear;
        }
        let base = self.base.get(class).copied().unwrap_or(Level::Hidden);
        if self.analyst_of == Some(owner) {
            return base;
        }
        base.min(self.policy.tables.owner_cap(owner, class))
    }

    /// The level of a field whatever department published it (before owner restrictions):
    /// what search may match on.
    pub fn field_level(&self, kind: RecordKind, field: &str) -> Level {
        match self.policy.tables.field_class(kind.as_str(), field) {
            Some(class) if self.break_glass => {
                let _ = class;
                Level::Clear
            }
            Some(class) => self.base.get(class).copied().unwrap_or(Level::Hidden),
            None => Level::Hidden,
        }
    }

    /// Whether the caller may learn that `department` holds a record about a resident.
    pub fn department_visible(&self, department: Department) -> bool {
        let class = self.policy.tables.visibility_class(department);
        self.level(class, department) > Level::Hidden
    }

    /// Masks `profile` in place. `names` are names to redact from free text besides the
    /// directory's (e.g. the parties of an event).
    pub fn apply(
        &self,
        profile: &mut Profile,
        names: &[String],
        directory: Option<&NameDirectory>,
    ) -> ViewOutcome {
        let mut outcome = ViewOutcome {
            break_glass: self.break_glass,
            ..ViewOutcome::default()
        };
        let kind = profile.kind;
        if kind == RecordKind::Resident {
            self.drop_invisible_departments(profile, &mut outcome);
            add_age(profile);
        }
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let fields = std::mem::take(&mut profile.fields);
        for (name, field) in fields {
            let Some(class) = self.policy.tables.field_class(kind.as_str(), &name) else {
                outcome.masked_or_hidden += 1;
                continue;
            };
            match self.view_field(&name, class, field, &name_refs, directory) {
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
        self.cut_birth_date(profile, &mut outcome);
        self.view_tags(profile, &mut outcome);
        self.view_attributes(profile, &mut outcome);
        self.view_related(profile, &name_refs, directory);
        outcome
    }

    fn drop_invisible_departments(&self, profile: &mut Profile, outcome: &mut ViewOutcome) {
        let visible = |d: &Department| self.department_visible(*d);
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
    }

    /// One field at its level; `None` when hidden. A hidden winner yields to the best visible
    /// alternative (its owner may allow more).
    fn view_field(
        &self,
        name: &str,
        class: &str,
        field: MergedField,
        names: &[&str],
        directory: Option<&NameDirectory>,
    ) -> Option<(MergedField, Level)> {
        let mut candidates: Vec<(Level, Value, Department, String)> =
            vec![(self.level(class, field.source), field.value, field.source, field.version)];
        for alternative in field.conflicts {
            candidates.push((
                self.level(class, alternative.source),
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
            if other != value && !conflicts.iter().any(|c: &crate::resolve::Alternative| c.value == other) {
                conflicts.push(crate::resolve::Alternative {
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

    fn cut_birth_date(&self, profile: &mut Profile, outcome: &mut ViewOutcome) {
        let id_in_clear = profile
            .fields
            .get("id_number")
            .map(|f| self.level("identifier", f.source) == Level::Clear)
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

    fn view_tags(&self, profile: &mut Profile, outcome: &mut ViewOutcome) {
        let tables = &self.policy.tables;
        let mut shown: BTreeMap<String, Vec<Department>> = BTreeMap::new();
        for tag in std::mem::take(&mut profile.tags) {
            let mut best = Level::Hidden;
            let mut class_of_best = "personal";
            let mut sources = Vec::new();
            for source in &tag.sources {
                let class = tables.tag_class(&tag.tag, *source);
                let level = self.level(class, *source);
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

    fn view_attributes(&self, profile: &mut Profile, outcome: &mut ViewOutcome) {
        let tables = &self.policy.tables;
        let attributes = std::mem::take(&mut profile.attributes);
        for (department, mut map) in attributes {
            match self.level(tables.attribute_class(department), department) {
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

    /// Labels of related entities follow the same rules as the fields they come from.
    fn view_related(&self, profile: &mut Profile, names: &[&str], directory: Option<&NameDirectory>) {
        let name_level = self.field_level(RecordKind::Resident, "name");
        let title_level = self.field_level(RecordKind::Event, "title");
        let address_level = self.field_level(RecordKind::House, "address");
        for (relation, refs) in profile.related.iter_mut() {
            for entity in refs.iter_mut() {
                let Some(label) = entity.label.take() else {
                    continue;
                };
                let (level, masked) = match relation.as_str() {
                    "occupants" | "parties" => (name_level, mask::mask_name(&label)),
                    "events" => (title_level, redact(&label, names, directory, None)),
                    "owner_of" => (address_level, mask::mask_address(&label)),
                    _ => (Level::Hidden, String::new()),
                };
                entity.label = match level {
                    Level::Clear => Some(label),
                    Level::Masked => Some(masked),
                    Level::Hidden => None,
                };
            }
        }
    }
}

/// `age` (whole years) beside the birth date, so a masked birth date still tells the age.
fn add_age(profile: &mut Profile) {
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
    let today = chrono::Utc::now().date_naive();
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
fn mask_field(name: &str, value: Value, names: &[&str], directory: Option<&NameDirectory>) -> Value {
    let masker: fn(&str) -> String = match name {
        "id_number" | "owner_id_number" => mask::mask_id_number,
        "phone" => mask::mask_phone,
        "name" => mask::mask_name,
        "address" | "hukou_address" => mask::mask_address,
        "birth_date" => mask::mask_birth_date,
        "title" | "description" => {
            return match value {
                Value::String(text) => Value::String(redact(&text, names, directory, None)),
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
