//! The one place where a merged profile is cut down to what the caller may see, after
//! authorization and before serialization.
//!
//! Guarantees: every value of a masked field — the winning value and every conflicting
//! alternative — is masked the same way, so a disagreement between departments never shows
//! what the mask hides. ID numbers are masked for every role, except for a street officer
//! who states `case_investigation`. Health (卫健) and criminal-justice (司法) detail is hidden
//! from grid workers. (The full per-role, per-purpose field policy is the privacy-controls
//! work; this is its first, conservative cut.)

use audit::Decision;
use model::Department;
use serde_json::Value;

use crate::auth::Principal;
use crate::resolve::Profile;

/// Fields that hold ID numbers.
const ID_FIELDS: &[&str] = &["id_number", "owner_id_number"];
/// Departments whose detail is special-category (health, criminal justice).
const SPECIAL_DEPARTMENTS: &[Department] = &[Department::Weijian, Department::Sifa];
/// Tags that reveal special-category data.
const SPECIAL_TAGS: &[&str] = &["慢性病", "孕产妇", "严重精神障碍", "社区矫正", "刑满释放"];

/// What the view did, for the audit record.
#[derive(Debug, Default)]
pub struct ViewOutcome {
    pub fields_clear: Vec<String>,
    pub masked_or_hidden: usize,
}

impl ViewOutcome {
    pub fn decision(&self) -> Decision {
        if self.masked_or_hidden == 0 {
            Decision::Allow
        } else {
            Decision::Masked
        }
    }
}

/// Masks `profile` in place for `principal` reading for `purpose`.
pub fn apply(profile: &mut Profile, principal: &Principal, purpose: &str) -> ViewOutcome {
    let mut outcome = ViewOutcome::default();
    let ids_in_clear = principal.has_role("street_officer") && purpose == "case_investigation";
    let hide_special = !principal.has_role("street_officer") && !principal.has_role("community_officer");
    for (name, field) in profile.fields.iter_mut() {
        // A masked ID hides exactly its birth date, so the birth date is cut to the year
        // whenever the ID is masked (masks are chosen across fields, not one at a time).
        if name == "birth_date" && !ids_in_clear {
            mask_value(&mut field.value, policies::mask::mask_birth_date);
            for alternative in &mut field.conflicts {
                mask_value(&mut alternative.value, policies::mask::mask_birth_date);
            }
            outcome.masked_or_hidden += 1;
        } else if ID_FIELDS.contains(&name.as_str()) && !ids_in_clear {
            mask_value(&mut field.value, policies::mask::mask_id_number);
            for alternative in &mut field.conflicts {
                mask_value(&mut alternative.value, policies::mask::mask_id_number);
            }
            outcome.masked_or_hidden += 1;
        } else {
            outcome.fields_clear.push(name.clone());
        }
    }
    if hide_special {
        // Even the fact that 卫健 or 司法 holds a record is special-category data: drop their
        // values, their conflicts and their source references, not only their tags.
        let fields_before = profile.fields.len();
        profile
            .fields
            .retain(|_, field| !SPECIAL_DEPARTMENTS.contains(&field.source));
        outcome.masked_or_hidden += fields_before - profile.fields.len();
        outcome
            .fields_clear
            .retain(|name| profile.fields.contains_key(name));
        for field in profile.fields.values_mut() {
            field
                .conflicts
                .retain(|alternative| !SPECIAL_DEPARTMENTS.contains(&alternative.source));
        }
        profile
            .sources
            .retain(|source| !SPECIAL_DEPARTMENTS.contains(&source.department));
        for tag in &mut profile.tags {
            tag.sources.retain(|d| !SPECIAL_DEPARTMENTS.contains(d));
        }
        profile.tags.retain(|tag| !tag.sources.is_empty());
        let before = profile.attributes.len() + profile.tags.len();
        profile
            .attributes
            .retain(|department, _| !SPECIAL_DEPARTMENTS.contains(department));
        profile
            .tags
            .retain(|tag| !SPECIAL_TAGS.contains(&tag.tag.as_str()));
        outcome.masked_or_hidden += before - profile.attributes.len() - profile.tags.len();
    }
    outcome
}

fn mask_value(value: &mut Value, mask: fn(&str) -> String) {
    if let Value::String(text) = value {
        *text = mask(text);
    }
}
