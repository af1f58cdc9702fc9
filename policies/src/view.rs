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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::mask;
use crate::redact::{redact, NameDirectory};
use crate::Level;
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
}

/// What the view did, for the audit record.
#[derive(Debug, Default)]
pub struct ViewOutcome {
    pub fields_clear: Vec<String>,
    pub masked_or_hidden: usize,
    pub break_glass: bool,
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
        }
    }

    pub fn policy_version(&self) -> &str {
        &self.policy.version
    }

    /// The level of data of `class` published by `owner`: the best of the caller's roles,
    /// each inside its own restriction.
    pub fn level(&self, class: &str, owner: Department) -> Level {
        let cap = self.policy.tables.owner_cap(owner, class);
        self.grants
            .iter()
            .map(|grant| match grant.own_department_only {
                Some(own) if own == Some(owner) => grant.class_level(class),
                Some(_) => Level::Hidden,
                None => grant.class_level(class).min(cap),
            })
            .max()
            .unwrap_or(Level::Hidden)
    }

    /// The best level of a field whatever department published it (before owner
    /// restrictions): what search may match on at most.
    pub fn field_level(&self, kind: RecordKind, field: &str) -> Level {
        match self.policy.tables.field_class(kind.as_str(), field) {
            Some(class) => self
                .grants
                .iter()
                .map(|grant| grant.class_level(class))
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
        profile.history.retain(|m| visible(&m.department));
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
        let mut candidates: Vec<(Level, Value, Department, String)> = vec![(
            self.level(class, field.source),
            field.value,
            field.source,
            field.version,
        )];
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

    /// Related entities obey the department visibility of the records they come from (an
    /// entity known only from departments the caller may not know about is left out), and
    /// their labels follow the same rules as the fields they come from; outside the caller's
    /// jurisdiction a person's name is at most masked and other labels are dropped.
    fn view_related(
        &self,
        profile: &mut Profile,
        names: &[&str],
        directory: Option<&NameDirectory>,
    ) {
        let name_level = self.field_level(RecordKind::Resident, "name");
        let title_level = self.field_level(RecordKind::Event, "title");
        let address_level = self.field_level(RecordKind::House, "address");
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
                    "occupants" | "parties" => (name_level, mask::mask_name(&label)),
                    "events" => (
                        title_level,
                        redact(
                            &label,
                            names,
                            directory,
                            Some(&chinese_text::segment::person_name_spans),
                        ),
                    ),
                    "owner_of" => (address_level, mask::mask_address(&label)),
                    _ => (Level::Hidden, String::new()),
                };
                if !inside {
                    level = match relation.as_str() {
                        "occupants" | "parties" => level.min(Level::Masked),
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
fn mask_field(
    name: &str,
    value: Value,
    names: &[&str],
    directory: Option<&NameDirectory>,
) -> Value {
    let masker: fn(&str) -> String = match name {
        "id_number" | "owner_id_number" => mask::mask_id_number,
        "phone" => mask::mask_phone,
        "name" => mask::mask_name,
        "address" | "hukou_address" => mask::mask_address,
        "birth_date" => mask::mask_birth_date,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::authz::PolicyFiles;
    use model::profile::{EntityRef, SourceRef};

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
}
