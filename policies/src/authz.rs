//! The authorization policy: casbin files (the authoring format and source of truth) compiled
//! into tables the request path reads without calling casbin. Reading the files and reloading
//! them is the broker's (`policy_folder`): this crate does no I/O.
//!
//! Guarantees:
//! - [`PolicySet`] answers exactly what the casbin enforcer answers for every known role,
//!   purpose, permission and field class (a test checks the whole matrix), and is immutable:
//!   a request never waits on casbin or on a lock held by it.
//! - Every set carries a version (a digest of its files), so every decision knows the policy
//!   version it used.

use std::collections::{HashMap, HashSet};

use crate::{FieldTables, Level, TableFiles};
use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("casbin policy is invalid: {0}")]
    Casbin(String),
    #[error(transparent)]
    Table(#[from] crate::TableError),
}

/// A permission the broker checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadPersonalData,
    IngestOwnDepartment,
    ReadOwnReceipts,
    ReadAuditLog,
    WritePolicy,
    ReadOperations,
    PreviewPolicy,
    UseBreakGlass,
    /// Tag a read with `X-Case-Id` (deferred in the resident's report).
    OpenCase,
    /// Create, list and delete its department's subscriptions, and pull their feeds.
    ManageSubscriptions,
    /// Record events and visits (`POST /v1/reports`, `/v1/visits`).
    ReportEvents,
    /// Read the sharing statistics (no personal data).
    ReadSharingStats,
}

impl Permission {
    pub const ALL: [Permission; 12] = [
        Permission::ReadPersonalData,
        Permission::IngestOwnDepartment,
        Permission::ReadOwnReceipts,
        Permission::ReadAuditLog,
        Permission::WritePolicy,
        Permission::ReadOperations,
        Permission::PreviewPolicy,
        Permission::UseBreakGlass,
        Permission::OpenCase,
        Permission::ManageSubscriptions,
        Permission::ReportEvents,
        Permission::ReadSharingStats,
    ];

    /// The (action, object) pair the casbin policy names it by.
    pub fn casbin_pair(self) -> (&'static str, &'static str) {
        let index = Permission::ALL
            .iter()
            .position(|p| *p == self)
            .unwrap_or_default();
        crate::PERMISSIONS[index]
    }
}

/// The text of every policy file.
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    pub model: String,
    pub policy: String,
    pub tables: TableFiles,
}

impl PolicyFiles {
    pub fn defaults() -> PolicyFiles {
        PolicyFiles {
            model: crate::DEFAULT_MODEL.to_owned(),
            policy: crate::DEFAULT_POLICY.to_owned(),
            tables: TableFiles::defaults(),
        }
    }

    /// Every file name a policy folder holds.
    pub fn names() -> Vec<&'static str> {
        let mut names = vec!["model.conf", "policy.csv"];
        names.extend(TableFiles::NAMES);
        names
    }

    /// Replaces one file by name (for validation before writing it).
    pub fn with_file(mut self, name: &str, text: String) -> Option<PolicyFiles> {
        match name {
            "model.conf" => self.model = text,
            "policy.csv" => self.policy = text,
            "field_classes.csv" => self.tables.field_classes = text,
            "tag_classes.csv" => self.tables.tag_classes = text,
            "department_classes.csv" => self.tables.department_classes = text,
            "owner_restrictions.csv" => self.tables.owner_restrictions = text,
            "masked_labels.csv" => self.tables.masked_labels = text,
            "sharing.csv" => self.tables.sharing = text,
            "routing.csv" => self.tables.routing = text,
            _ => return None,
        }
        Some(self)
    }

    /// A digest of every file: the version of the set compiled from them.
    pub fn digest(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            &self.model,
            &self.policy,
            &self.tables.field_classes,
            &self.tables.tag_classes,
            &self.tables.department_classes,
            &self.tables.owner_restrictions,
            &self.tables.masked_labels,
            &self.tables.sharing,
            &self.tables.routing,
        ] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        format!("sha256:{}", hex::encode(&ctx.finish().as_ref()[..8]))
    }
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Digest of the files this set was compiled from.
    pub version: String,
    granted: HashSet<(String, Permission)>,
    /// role -> purpose -> level per class (indexed like `crate::CLASSES`).
    levels: HashMap<String, HashMap<String, [Level; crate::CLASSES.len()]>>,
    pub tables: FieldTables,
    /// Sharing agreements and the routing of reports.
    pub exchange: crate::exchange::ExchangeTables,
    /// (role, state) pairs: which role may move an event to which lifecycle state.
    transitions: HashSet<(String, String)>,
    pub purposes: Vec<String>,
}

impl PolicySet {
    pub async fn compile(
        files: &PolicyFiles,
        purposes: &[String],
    ) -> Result<PolicySet, PolicyError> {
        let tables = FieldTables::parse(&files.tables)?;
        let exchange =
            crate::exchange::ExchangeTables::parse(&files.tables.sharing, &files.tables.routing)?;
        let enforcer = enforcer(&files.model, &files.policy).await?;
        let check = |role: &str, purpose: &str, obj: &str, act: &str| {
            enforcer
                .enforce((role, purpose, obj, act))
                .map_err(|err| PolicyError::Casbin(err.to_string()))
        };
        let mut granted = HashSet::new();
        for role in crate::ROLES {
            for permission in Permission::ALL {
                let (act, obj) = permission.casbin_pair();
                if check(role, "*", obj, act)? {
                    granted.insert((role.to_owned(), permission));
                }
            }
        }
        let mut transitions = HashSet::new();
        for role in crate::ROLES {
            for state in crate::EVENT_STATES {
                if check(role, "*", &format!("event:{state}"), "transition")? {
                    transitions.insert((role.to_owned(), state.to_owned()));
                }
            }
        }
        let mut levels: HashMap<String, HashMap<String, [Level; crate::CLASSES.len()]>> =
            HashMap::new();
        let with_break_glass = purposes
            .iter()
            .map(String::as_str)
            .chain([crate::BREAK_GLASS_PURPOSE]);
        for role in crate::ROLES {
            for purpose in with_break_glass.clone() {
                let mut row = [Level::Hidden; crate::CLASSES.len()];
                for (slot, class) in row.iter_mut().zip(crate::CLASSES) {
                    let object = format!("field:{class}");
                    *slot = if check(role, purpose, &object, "clear")? {
                        Level::Clear
                    } else if check(role, purpose, &object, "masked")? {
                        Level::Masked
                    } else {
                        Level::Hidden
                    };
                }
                levels
                    .entry(role.to_owned())
                    .or_default()
                    .insert(purpose.to_owned(), row);
            }
        }
        Ok(PolicySet {
            version: files.digest(),
            granted,
            levels,
            tables,
            exchange,
            transitions,
            purposes: purposes.to_vec(),
        })
    }

    /// Whether any of `roles` holds `permission`.
    pub fn allows(&self, roles: &[String], permission: Permission) -> bool {
        roles
            .iter()
            .any(|role| self.granted.contains(&(role.clone(), permission)))
    }

    /// The best level any of `roles` has for `class` under `purpose`, each role taken
    /// without its own restrictions (the policy preview's view). Reads combine roles through
    /// [`crate::view::ViewPlan`], which keeps each role inside its own restriction.
    pub fn level(&self, roles: &[String], purpose: &str, class: &str) -> Level {
        roles
            .iter()
            .map(|role| self.role_level(role, purpose, class))
            .max()
            .unwrap_or(Level::Hidden)
    }

    /// The level one role has for `class` under `purpose` (hidden for unknown ones).
    pub fn role_level(&self, role: &str, purpose: &str, class: &str) -> Level {
        let Some(index) = crate::CLASSES.iter().position(|c| *c == class) else {
            return Level::Hidden;
        };
        self.levels
            .get(role)
            .and_then(|by_purpose| by_purpose.get(purpose))
            .map_or(Level::Hidden, |row| row[index])
    }

    /// Whether any of `roles` may move an event to lifecycle state `to`
    /// ([`crate::EVENT_STATES`]; policy lines `p, role, *, event:<state>, transition`).
    pub fn may_transition(&self, roles: &[String], to: &str) -> bool {
        roles
            .iter()
            .any(|role| self.transitions.contains(&(role.clone(), to.to_owned())))
    }

    /// Whether one role holds `permission`.
    pub fn role_allows(&self, role: &str, permission: Permission) -> bool {
        self.granted.contains(&(role.to_owned(), permission))
    }
}

pub async fn enforcer(model: &str, policy: &str) -> Result<Enforcer, PolicyError> {
    let model = DefaultModel::from_str(model)
        .await
        .map_err(|err| PolicyError::Casbin(err.to_string()))?;
    let policy: String = policy
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    Enforcer::new(model, StringAdapter::new(policy))
        .await
        .map_err(|err| PolicyError::Casbin(err.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn purposes() -> Vec<String> {
        crate::DEFAULT_PURPOSES
            .iter()
            .map(|p| (*p).to_owned())
            .collect()
    }

    #[tokio::test]
    async fn event_transitions_and_exchange_permissions_follow_the_policy() {
        let set = PolicySet::compile(&PolicyFiles::defaults(), &purposes())
            .await
            .unwrap();
        let roles = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(set.may_transition(&roles(&["community_officer"]), "accepted"));
        assert!(set.may_transition(&roles(&["grid_worker"]), "resolved"));
        assert!(!set.may_transition(&roles(&["grid_worker"]), "closed"));
        assert!(!set.may_transition(&roles(&["grid_worker"]), "accepted"));
        assert!(!set.may_transition(&roles(&["dept_subscriber"]), "closed"));
        assert!(!set.may_transition(&roles(&["compliance_officer"]), "resolved"));
        assert!(!set.may_transition(&roles(&["street_officer"]), "no_such_state"));
        assert!(set.allows(
            &roles(&["dept_subscriber"]),
            Permission::ManageSubscriptions
        ));
        assert!(!set.allows(&roles(&["dept_publisher"]), Permission::ManageSubscriptions));
        assert!(!set.allows(&roles(&["dept_subscriber"]), Permission::ReadPersonalData));
        assert!(set.allows(&roles(&["grid_worker"]), Permission::ReportEvents));
        assert!(!set.allows(&roles(&["dept_subscriber"]), Permission::ReportEvents));
        assert!(set.allows(&roles(&["street_officer"]), Permission::ReadSharingStats));
        assert!(!set.allows(&roles(&["grid_worker"]), Permission::ReadSharingStats));
    }

    #[tokio::test]
    async fn compiled_set_matches_casbin_over_the_whole_matrix() {
        // The matrix covers the minors' class and purpose, and the break-glass levels.
        assert!(crate::CLASSES.contains(&"minor"));
        assert!(purposes().contains(&"child_protection".to_owned()));
        let files = PolicyFiles::defaults();
        let set = PolicySet::compile(&files, &purposes()).await.unwrap();
        let enforcer = enforcer(&files.model, &files.policy).await.unwrap();
        for role in crate::ROLES.iter().chain(["unknown_role"].iter()) {
            let roles = [(*role).to_owned()];
            for permission in Permission::ALL {
                let (act, obj) = permission.casbin_pair();
                assert_eq!(
                    set.allows(&roles, permission),
                    enforcer.enforce((*role, "*", obj, act)).unwrap(),
                    "{role} {permission:?}"
                );
            }
            for purpose in purposes()
                .into_iter()
                .chain([crate::BREAK_GLASS_PURPOSE.to_owned()])
            {
                for class in crate::CLASSES {
                    let object = format!("field:{class}");
                    let expected = if enforcer
                        .enforce((*role, purpose.as_str(), object.as_str(), "clear"))
                        .unwrap()
                    {
                        Level::Clear
                    } else if enforcer
                        .enforce((*role, purpose.as_str(), object.as_str(), "masked"))
                        .unwrap()
                    {
                        Level::Masked
                    } else {
                        Level::Hidden
                    };
                    assert_eq!(
                        set.level(&roles, &purpose, class),
                        expected,
                        "{role} {purpose} {class}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn separation_of_duties_holds_in_the_default_policy() {
        let set = PolicySet::compile(&PolicyFiles::defaults(), &purposes())
            .await
            .unwrap();
        let has = |role: &str, p| set.allows(&[role.to_owned()], p);
        assert!(has("grid_worker", Permission::ReadPersonalData));
        assert!(!has("grid_worker", Permission::IngestOwnDepartment));
        assert!(has("dept_publisher", Permission::IngestOwnDepartment));
        assert!(!has("dept_publisher", Permission::ReadPersonalData));
        for admin in ["compliance_officer", "security_admin", "system_admin"] {
            assert!(!has(admin, Permission::ReadPersonalData), "{admin}");
        }
        assert!(!has("compliance_officer", Permission::WritePolicy));
        assert!(has("security_admin", Permission::WritePolicy));
        assert!(!has("security_admin", Permission::ReadAuditLog));
        assert!(!has("system_admin", Permission::ReadAuditLog));
    }

    #[tokio::test]
    async fn purposes_unlock_more() {
        let set = PolicySet::compile(&PolicyFiles::defaults(), &purposes())
            .await
            .unwrap();
        let gw = ["grid_worker".to_owned()];
        assert_eq!(set.level(&gw, "routine_visit", "elderly"), Level::Masked);
        assert_eq!(set.level(&gw, "elderly_care", "elderly"), Level::Clear);
        assert_eq!(set.level(&gw, "routine_visit", "health"), Level::Hidden);
        assert_eq!(set.level(&gw, "emergency", "health"), Level::Clear);
        assert_eq!(set.level(&gw, "emergency", "health_detail"), Level::Hidden);
        let so = ["street_officer".to_owned()];
        assert_eq!(set.level(&so, "routine_visit", "identifier"), Level::Masked);
        assert_eq!(
            set.level(&so, "case_investigation", "identifier"),
            Level::Clear
        );
    }

    /// The minors' class in the default policy: masked for every reading role, clear only
    /// for community and street officers doing child protection, never lifted by
    /// break-glass, nothing for the roles that read no personal data.
    #[tokio::test]
    async fn minors_are_masked_unless_child_protection_unlocks_them() {
        let set = PolicySet::compile(&PolicyFiles::defaults(), &purposes())
            .await
            .unwrap();
        for role in crate::ROLES {
            let roles = [role.to_owned()];
            let reads = set.allows(&roles, Permission::ReadPersonalData);
            for purpose in purposes() {
                let expected = match (role, purpose.as_str()) {
                    _ if !reads => Level::Hidden,
                    ("community_officer" | "street_officer", "child_protection") => Level::Clear,
                    _ => Level::Masked,
                };
                assert_eq!(
                    set.level(&roles, &purpose, "minor"),
                    expected,
                    "{role} {purpose}"
                );
                // Break-glass adds its purpose's levels: for minors nothing above these.
                let glass = set.role_level(role, crate::BREAK_GLASS_PURPOSE, "minor");
                assert!(glass <= expected.min(Level::Masked), "{role} {purpose}");
            }
        }
    }
}
